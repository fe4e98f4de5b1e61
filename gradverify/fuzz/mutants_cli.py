"""``python -m gradverify mutants``: does the fuzzer catch deliberately broken engine rules?

Installs each mutation operator of :mod:`gradverify.fuzz.mutants` in turn,
runs a fixed-budget campaign against it, and prints the kill matrix (mutant
x oracle: on how many graphs each oracle caught it).  ``--json PATH`` writes
``killed``, ``total``, ``survivors`` and the matrix.  Exit 1 if a mutant survives.
"""
from __future__ import annotations

import json

import pandas as pd

from gradverify._files import check_output, write_text
from gradverify.cli import EXIT_FAILED, EXIT_OK, UsageError
from gradverify.fuzz import jax_cache


def configure(parser):
    """Declare the mutants command's arguments."""
    parser.add_argument("--graphs", type=int, default=40, help="graphs per mutant campaign (default 40)")
    parser.add_argument("--seed", type=int, default=0, help="campaign seed (default 0)")
    parser.add_argument("--only", nargs="+", metavar="MUTANT", default=None, help="run only these mutants")
    parser.add_argument("--json", metavar="PATH", default=None, help="write the JSON report to PATH")


def kill_frame(results) -> pd.DataFrame:
    """The kill matrix: one row per mutant, one column per oracle that caught any, plus ``killed``."""
    from gradverify.fuzz.oracles import ORACLES

    rows = {r.mutant.name: {oracle: r.caught_by.get(oracle, 0) for oracle in ORACLES} for r in results}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame = frame.loc[:, (frame != 0).any(axis=0)]
    frame["killed"] = [r.killed for r in results]
    return frame


def report(results) -> dict:
    """The JSON report of a kill matrix run."""
    survivors = [r.mutant.name for r in results if not r.killed]
    return {
        "killed": len(results) - len(survivors),
        "total": len(results),
        "survivors": survivors,
        "graphs_per_mutant": results[0].graphs if results else 0,
        "matrix": {
            r.mutant.name: {"description": r.mutant.description, "caught_by": r.caught_by, "reproducer": r.reproducer}
            for r in results
        },
    }


def run(args) -> int:
    """Run the kill matrix; 0 when every mutant was killed, else 1."""
    from gradverify.fuzz import mutants

    if args.graphs < 1:
        raise UsageError(f"--graphs: expected a positive number, got {args.graphs}")
    if not 0 <= args.seed < 2**32:
        raise UsageError(f"--seed: expected a number in 0..{2**32 - 1}, got {args.seed}")
    if args.json is not None:
        check_output(args.json)  # before the work: a finished run must not lose its report
    unknown = [name for name in args.only or () if name not in mutants.BY_NAME]
    if unknown:
        raise UsageError(f"--only: unknown mutants {', '.join(unknown)}; known: {', '.join(mutants.BY_NAME)}")
    jax_cache.enable()
    from rich.console import Console
    from rich.progress import Progress

    console = Console()
    chosen = args.only or [m.name for m in mutants.MUTANTS]
    with Progress(console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("mutants", total=len(chosen))
        results = mutants.kill_matrix(args.graphs, args.seed, chosen, on_mutant=lambda r: progress.advance(task))
    console.print(kill_frame(results).to_string(), markup=False, highlight=False, soft_wrap=True)
    summary = report(results)
    console.print(f"killed {summary['killed']}/{summary['total']}"
                  + (f"; survivors: {', '.join(summary['survivors'])}" if summary["survivors"] else ""))
    if args.json:
        write_text(args.json, json.dumps(summary, indent=2))
    return EXIT_OK if not summary["survivors"] else EXIT_FAILED
