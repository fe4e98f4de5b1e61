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


COLUMNS = {
    "mpmath": "value or derivative off the 80-digit mpmath ground truth",
    "torch": "disagrees with PyTorch (the ground truth blaming the engine)",
    "jax": "disagrees with JAX (the ground truth blaming the engine)",
    "finite_difference": "off the Richardson finite difference beyond its error bound",
    "complex_step": "off the complex-step derivative",
    "forward_reverse": "<v, J u> from forward mode differs from <J^T v, u> from reverse mode",
    "second_order": "Hessian-vector product, reverse-over-reverse vs forward-over-reverse",
    "structure": "gradient of the wrong dtype or shape",
    "exception": "the engine raised",
    "kink_convention": "at a kink, not PyTorch's one-sided choice",
    "saturation": "in an op's saturated tail, entry by entry against the ground truth",
    "program_loss": "a stateful program's losses differ from PyTorch's run of it",
    "program_grad": "a stateful program's .grad (or what a hook saw) differs from PyTorch's",
    "program_params": "a stateful program's parameters after a step differ from PyTorch's",
    "program_buffers": "a stateful program's buffers (BatchNorm's running statistics) differ from PyTorch's",
    "program_lr": "a stateful program's learning rate after a scheduler step differs from PyTorch's",
    "program_activation": "what a stateful program's observing layer hook saw differs from PyTorch's",
    "program_error": "a stateful program raised where PyTorch did not, or not where it did (error kinds)",
    "caught": "graphs on which at least one oracle caught the mutant (op probes aside)",
    "killed": "caught by at least one oracle",
}
"""What each column of the kill matrix counts (an oracle's column: graphs of the mutant's campaign it caught)."""


def legend(frame: pd.DataFrame, graphs: int) -> str:
    """One line per column of ``frame``: what it counts."""
    lines = [f"Each oracle column counts the graphs (of {graphs} per mutant) and op probes on which it "
             "caught the mutant:"]
    lines += [f"  {column}: {COLUMNS.get(column, 'an oracle of gradverify.fuzz.oracles')}" for column in frame.columns]
    return "\n".join(lines)


def kill_frame(results) -> pd.DataFrame:
    """The kill matrix: one row per mutant, one column per oracle that caught any, plus ``caught`` and ``killed``."""
    from gradverify.fuzz.oracles import ORACLES

    rows = {r.mutant.name: {oracle: r.caught_by.get(oracle, 0) for oracle in ORACLES} for r in results}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame = frame.loc[:, (frame != 0).any(axis=0)]
    frame["caught"] = [r.caught for r in results]
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
            r.mutant.name: {"description": r.mutant.description, "caught_by": r.caught_by, "caught": r.caught,
                            "reproducer": r.reproducer}
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

    from gradverify.progress import progress

    console = Console()
    chosen = args.only or [m.name for m in mutants.MUTANTS]
    with progress("mutants", len(chosen), every=1) as step:
        results = mutants.kill_matrix(args.graphs, args.seed, chosen,
                                      on_mutant=lambda r: step(r.mutant.name, "killed" if r.killed else "SURVIVED"))
    frame = kill_frame(results)
    console.print(frame.to_string(), markup=False, highlight=False, soft_wrap=True)
    console.print(legend(frame, args.graphs), markup=False, highlight=False, soft_wrap=True)
    summary = report(results)
    console.print(f"killed {summary['killed']}/{summary['total']}"
                  + (f"; survivors: {', '.join(summary['survivors'])}" if summary["survivors"] else ""))
    if args.json:
        write_text(args.json, json.dumps(summary, indent=2))
    return EXIT_OK if not summary["survivors"] else EXIT_FAILED
