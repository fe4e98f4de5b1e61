"""``python -m gradverify audit torch|jax``: audit a framework's own gradients, op by op, sample by sample.

Writes into ``--out`` (default ``audit-<framework>/``): ``results.jsonl`` (one
line per unit, what ``--resume`` continues from), ``findings.md`` and one
reproducer script per finding under ``reproducers/``; ``--json FILE`` writes
the report for machines.  ``--ray ADDRESS`` audits the units on a Ray
cluster (:func:`gradverify.distributed.run_items`), with the same report.
Exit 0 when every finding is in the known-defects file, 1 when there is a
new one, 2 on bad arguments.
"""
from __future__ import annotations

import collections
import pathlib
import sys
import time

from gradverify.cli import EXIT_FAILED, EXIT_OK, UsageError
from gradverify.distributed import RAY_MISSING, ray_installed

from . import findings, reproducer
from .run import Shard, execute, oversized, plan
from .sources import FRAMEWORKS, source
from .unit import ORDERS

DTYPE_NAMES = ("float64", "float32", "bfloat16")


def configure(parser):
    """Declare the audit command's arguments."""
    parser.add_argument("framework", choices=sorted(FRAMEWORKS), help="whose gradients to audit")
    parser.add_argument("--ops", default=None, metavar="NAMES",
                        help="comma-separated OpInfo names or ids (torch) / JAX function or OpInfo names (jax), "
                             "e.g. nn.functional.hardsigmoid,sin (default: every differentiable op)")
    parser.add_argument("--dtypes", default="float64,float32", metavar="DTYPES",
                        help="comma-separated, of float64, float32, bfloat16 (default float64,float32); each op "
                             "runs in those it supports")
    parser.add_argument("--orders", default="1,2", metavar="ORDERS",
                        help="1 (reverse, forward and their consistency), 2 (derivatives of derivatives, Hessian "
                             "symmetry) or 1,2 (default)")
    parser.add_argument("--max-elements", type=int, default=None, metavar="N",
                        help="leave out samples whose floating tensors hold more than N elements (default: none; "
                             "OpInfo has samples of millions, which take minutes each)")
    parser.add_argument("--shard", default="1/1", help="run part i of n of the units, written i/n (default 1/1)")
    parser.add_argument("--resume", action="store_true", help="skip units already in OUT/results.jsonl")
    parser.add_argument("--ray", metavar="ADDRESS", default=None,
                        help="audit the units on a Ray cluster at ADDRESS, one actor per --workers ('local' starts "
                             "a local Ray; needs gradverify[ray]); results.jsonl is written as units finish")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="processes auditing units in parallel, or Ray actors with --ray (default: this process "
                             "alone; with --ray the cluster's CPUs, for 'local' this machine's)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="directory of results.jsonl, findings.md and reproducers/ (default audit-FRAMEWORK)")
    parser.add_argument("--json", metavar="FILE", default=None, help="write the JSON report to FILE")
    parser.add_argument("--known", metavar="FILE", default=None,
                        help="known-defects file (default: the one shipped for the framework)")
    parser.add_argument("--update-known", action="store_true",
                        help="add this run's findings to the known-defects file (existing notes are kept)")


def _arguments(args):
    def listing(text, flag, allowed):
        items = [item.strip() for item in text.split(",") if item.strip()]
        bad = [item for item in items if item not in allowed]
        if not items or bad:
            raise UsageError(f"{flag}: expected a comma-separated list of {', '.join(map(str, allowed))}, "
                             f"got {text!r}")
        return items

    dtypes = listing(args.dtypes, "--dtypes", DTYPE_NAMES)
    orders = [int(o) for o in listing(args.orders, "--orders", [str(o) for o in ORDERS])]
    try:
        shard = Shard.parse(args.shard)
        ops = source(args.framework).select(None if args.ops is None else
                                            [n.strip() for n in args.ops.split(",") if n.strip()])
        known = findings.load_known(args.known or findings.KNOWN_DEFECTS[args.framework])
    except ValueError as error:
        raise UsageError(f"{'--' if str(error).startswith('shard') else ''}{error}") from None
    if args.known and not pathlib.Path(args.known).exists():
        raise UsageError(f"--known: no such file: {args.known}")
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers: expected a positive number, got {args.workers}")
    if args.ray is not None and not ray_installed():
        raise UsageError(f"--ray: {RAY_MISSING}")
    if args.max_elements is not None and args.max_elements < 1:
        raise UsageError(f"--max-elements: expected a positive number, got {args.max_elements}")
    out = pathlib.Path(args.out or f"audit-{args.framework}")
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out: {out} exists and is not a directory")
    return dtypes, orders, shard, ops, known, out


def run(args) -> int:
    """Run the audit described by ``args``; 0 when no new finding, else 1."""
    dtypes, orders, shard, ops, known, out = _arguments(args)
    started = time.perf_counter()
    stage = _Stages()
    stage.say(f"audit {args.framework}: planning {len(ops)} ops ({', '.join(dtypes)}; orders "
              f"{', '.join(map(str, orders))}; shard {args.shard})")
    units = plan(args.framework, ops, dtypes, orders, shard, args.max_elements)
    left_out = 0 if args.max_elements is None else oversized(args.framework, ops, dtypes, args.max_elements)
    stage.say(f"audit {args.framework}: {len(units)} units planned"
              + (f"; {left_out} samples over --max-elements {args.max_elements} left out" if left_out else ""))
    (out / "reproducers").mkdir(parents=True, exist_ok=True)
    try:
        results, timing = stage.execute(units, out / "results.jsonl", args.resume, args.ray, args.workers)
    except ValueError as error:
        if not str(error).startswith("journal:"):
            raise
        raise UsageError(f"--resume: {error} (written by another version? rerun without --resume)") from None
    report = build_report(args.framework, results, time.perf_counter() - started, args.shard, known, out)
    report["summary"].update(samples_over_max_elements=left_out, units_audited=timing.audited,
                             startup_seconds=round(timing.startup_seconds, 1),
                             units_per_second=round(timing.units_per_second, 2))
    _write(out / "findings.md", findings.to_markdown(report))
    if args.json:
        _write(pathlib.Path(args.json), findings.to_json(report))
    _print_summary(report, out)
    if args.update_known:
        path = pathlib.Path(args.known or findings.KNOWN_DEFECTS[args.framework])
        _write(path, findings.updated_known(args.framework, known, report["findings"]))
        print(f"known defects written to {path}")
        return EXIT_OK
    return EXIT_FAILED if any(not f["known"] for f in report["findings"]) else EXIT_OK


def build_report(framework, results, seconds, shard, known, out) -> dict:
    """The JSON-able report, with one reproducer written per finding into ``out/reproducers``."""
    src = source(framework)
    report = {"summary": findings.summary(framework, results, seconds, shard),
              **findings.collect(results, known, src)}
    for finding in report["findings"]:
        code = src.reproducer_call(finding["op"], finding["sample"], finding["dtype"])
        path = out / "reproducers" / finding["reproducer"]
        _write(path, reproducer.script(finding, code))
        finding["reproducer"] = str(path)
    return report


def _write(path, text):
    from gradverify._files import atomic_write

    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


class _Stages:
    """Progress: a rich bar on a terminal, else a line per op."""

    def __init__(self):
        self.tty = sys.stdout.isatty()

    def say(self, line):
        print(line, flush=True)

    def execute(self, units, path, resume, ray, workers):
        planned = collections.Counter(unit.op for unit in units)
        per_op = collections.defaultdict(lambda: {"units": 0, "failing": 0})
        counts = {"failing": 0, "done": 0}
        if self.tty:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            progress = Progress(TextColumn("audit {task.fields[op]}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[failing]} failing"), TimeElapsedColumn(), transient=True)
        with (progress if self.tty else _Nothing()):
            task = progress.add_task("audit", total=len(units), op="", failing=0) if self.tty else None

            def on_result(result):
                # Units finish in any order on Ray: an op's line is printed when its last unit is in.
                op = per_op[result.unit.op]
                failing = result.status == "fail"
                counts["done"] += 1
                counts["failing"] += failing
                op["units"] += 1
                op["failing"] += failing
                if self.tty:
                    progress.update(task, advance=1, op=result.unit.op, failing=counts["failing"])
                elif op["units"] == planned[result.unit.op]:
                    self.say(f"  {result.unit.op}: {op['units']} units, {op['failing']} failing "
                             f"({counts['done']}/{len(units)})")

            return execute(units, path, resume, on_result, ray, workers)


class _Nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _print_summary(report, out):
    from rich.console import Console
    from rich.table import Table

    console = Console()
    s = report["summary"]
    console.print(f"audit {s['framework']}: {s['ops']} ops, {s['samples']} samples, {s['units']} units in "
                  f"{s['seconds']} s ({s['units_audited']} audited in this run, {s['units_per_second']} units/s "
                  f"after {s['startup_seconds']} s of start-up); "
                  + ", ".join(f"{k} {v}" for k, v in s["statuses"].items()))
    table = Table(title=f"findings ({len(report['findings'])}; unconfirmed disagreements: "
                        f"{len(report['unconfirmed'])})")
    for column in ("op", "mode", "dtype", "ulps", "oracles agreeing", "known", "reproducer"):
        table.add_column(column)
    for f in report["findings"]:
        table.add_row(f["op"], f["mode"], f["dtype"], f"{f['ulps']:.3g}", ", ".join(f["oracles_agreeing"]),
                      "yes" if f["known"] else "NEW", pathlib.Path(f["reproducer"]).name)
    console.print(table)
    console.print(f"details: {out / 'findings.md'}")
