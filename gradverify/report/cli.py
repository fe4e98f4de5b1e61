"""``python -m gradverify report``: accuracy and speed of every way of differentiating the document's examples."""
from __future__ import annotations

import shlex
import time
from pathlib import Path

from gradverify._files import check_output, describe
from gradverify.cli import EXIT_OK, UsageError

DEFAULT_OUT = Path("reports", "latest")


def configure(parser) -> None:
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"output folder (default: {DEFAULT_OUT}/, git-ignored; the committed report is "
                             "refreshed with --out reports)")
    parser.add_argument("--quick", action="store_true",
                        help="the same timings on smaller budgets, smaller checker tables, no random-graph "
                             "campaign: a few minutes")
    parser.add_argument("--threads", type=int, default=1,
                        help="PyTorch intra-op threads during the run (default 1; the header states every setting)")
    parser.add_argument("--readme", type=Path, default=None,
                        help="also copy the headline tables into this README's '## Report' section")


def run(args) -> int:
    """Build the report, showing progress (a bar on a terminal, a line per stage otherwise); print where it went."""
    from rich.console import Console

    from gradverify.progress import progress

    from . import build, measure
    from .environment import backend_available
    from .readme import update_readme

    if args.threads < 1:
        raise UsageError(f"--threads: expected a positive number of threads, got {args.threads}")
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out: {args.out} exists and is not a folder")
    try:  # before the work: a finished report must have somewhere to go
        args.out.mkdir(parents=True, exist_ok=True)
        check_output(args.out / "report.md")
    except OSError as err:
        raise UsageError(describe(err, "--out")) from None
    if args.readme is not None and not args.readme.is_file():
        raise UsageError(f"--readme: {args.readme} is not a file")
    if backend_available("torch"):
        import torch

        torch.set_num_threads(args.threads)
    command = " ".join(["python -m gradverify report", *(["--quick"] if args.quick else []), "--out",
                        shlex.quote(str(args.out)), "--threads", str(args.threads)])
    console = Console(stderr=True)
    started = time.perf_counter()
    with progress("report", build.step_count(measure.Plan.make(args.quick)), console=console) as step:
        written = build.build_report(args.out, args.quick, command, step)
    if args.readme is not None:
        update_readme(args.out / "report.md", args.readme)
        written.append(args.readme)
    console.print(f"report written in {time.perf_counter() - started:.0f} s:")
    for path in written:
        console.print(f"  {path}")
    return EXIT_OK
