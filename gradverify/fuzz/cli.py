"""``python -m gradverify fuzz``: a random-graph differential testing campaign.

Prints a progress bar, then a summary (graphs, ops covered, failures by
oracle, graphs per second) and the shrunk reproducer of the first failure;
``--json PATH`` writes the full report.  Exit 1 when the engine failed.
"""
from __future__ import annotations

import json
import os

from gradverify._files import check_output, write_text
from gradverify.cli import EXIT_FAILED, EXIT_OK, UsageError
from gradverify.fuzz import jax_cache
from gradverify.fuzz.programs import FOCUSES
from gradverify.ops import TABLE

JAX_EVERY = 4
MAX_NODES_LIMIT = 64
"""Graphs grow in evaluation time and in the size of their oracles' ladders with their nodes: past this a single
graph can take minutes."""


# Measured on 2 cores: 2 workers check about 1.5x the graphs per second of one; more workers
# than cores only add start-up and compilation.
DEFAULT_WORKERS = max(1, min(2, len(os.sched_getaffinity(0))))


def configure(parser):
    """Declare the fuzz command's arguments."""
    parser.add_argument("--graphs", type=int, default=200, help="number of random graphs (default 200)")
    parser.add_argument("--seed", type=int, default=0, help="campaign seed (default 0)")
    parser.add_argument("--max-nodes", type=int, default=8,
                        help=f"largest graph, in nodes (default 8, at most {MAX_NODES_LIMIT})")
    parser.add_argument("--shard", default="1/1", help="run part i of n of the campaign, written i/n (default 1/1)")
    parser.add_argument("--focus", default=None,
                        help="table op every graph must use, or program.<part> for stateful programs only, part "
                             f"one of {', '.join(FOCUSES)} (default: none)")
    parser.add_argument("--target", default="engine", metavar="ENGINE",
                        help="the engine under test: engine, torch, jax or module:Class, an adapter of "
                             "gradverify.fuzz.adapters (default engine; the other libraries stay oracles)")
    parser.add_argument("--no-shrink", action="store_true", help="do not shrink the first failure")
    parser.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                        help=f"processes checking graphs in parallel (default {DEFAULT_WORKERS}, the cores this "
                             "process may use, at most 2: each new process pays the imports and JAX's "
                             "compilations again)")
    parser.add_argument("--jax-every", type=int, default=JAX_EVERY, metavar="K",
                        help=f"compare with JAX on every K-th graph (default {JAX_EVERY}; each new shape costs "
                             "JAX an XLA compilation)")
    parser.add_argument("--ray", metavar="ADDRESS", default=None,
                        help="check the graphs on a Ray cluster at ADDRESS, one actor per --workers "
                             "('local' starts a local Ray; needs gradverify[ray])")
    parser.add_argument("--journal", metavar="PATH", default=None,
                        help="keep each graph's outcome in PATH as it arrives; rerun with the same PATH to resume "
                             "a killed campaign without checking its finished graphs again")
    parser.add_argument("--json", metavar="PATH", default=None, help="write the JSON report to PATH")


def _arguments(args):
    from gradverify.fuzz.campaign import Shard

    if args.graphs < 1:
        raise UsageError(f"--graphs: expected a positive number, got {args.graphs}")
    for flag, value in (("--max-nodes", args.max_nodes), ("--workers", args.workers), ("--jax-every", args.jax_every)):
        if value < 1:
            raise UsageError(f"{flag}: expected a positive number, got {value}")
    if not 0 <= args.seed < 2**32:
        raise UsageError(f"--seed: expected a number in 0..{2**32 - 1}, got {args.seed}")
    if args.max_nodes > MAX_NODES_LIMIT:
        raise UsageError(f"--max-nodes: at most {MAX_NODES_LIMIT} (larger graphs can take minutes each), "
                         f"got {args.max_nodes}")
    for path in (args.json, args.journal):
        if path is not None:
            check_output(path)  # before the work: a finished run must not lose its report
    from gradverify.fuzz import adapters

    try:
        adapters.load(args.target)
    except ValueError as error:
        raise UsageError(f"--{error}") from None
    from gradverify.distributed import RAY_MISSING, ray_installed

    if args.ray is not None and not ray_installed():
        raise UsageError(f"--ray: {RAY_MISSING}")
    from gradverify.fuzz.campaign import PROGRAM_FOCUS

    programs = [f"{PROGRAM_FOCUS}{name}" for name in FOCUSES]
    if args.focus is not None and args.focus not in TABLE and args.focus not in programs:
        raise UsageError(f"--focus: {args.focus!r} is not an op of the table nor {', '.join(programs)}; "
                         f"known ops: {', '.join(TABLE)}")
    try:
        return Shard.parse(args.shard)
    except ValueError as error:
        raise UsageError(f"--{error}") from None


def run(args) -> int:
    """Run the campaign described by ``args``; 0 when the engine passed every oracle, else 1."""
    shard = _arguments(args)
    jax_cache.enable()
    from gradverify.fuzz.campaign import run_campaign
    from gradverify.progress import progress

    total = shard.graphs(args.graphs)
    failing = [0]
    with progress("fuzz", total, every=max(1, total // 20)) as step:
        def advance(index, outcome):
            failing[0] += bool(outcome.engine_failures)
            step("graphs", f"{failing[0]} failing")

        try:
            result = run_campaign(args.graphs, args.seed, args.max_nodes, shard, focus=args.focus,
                                  shrink=not args.no_shrink, on_graph=advance, jax_every=args.jax_every,
                                  workers=args.workers, target=args.target, ray=args.ray, journal=args.journal)
        except ValueError as error:
            if not str(error).startswith("journal:"):
                raise
            raise UsageError(f"--{error}") from None
    print_summary(result)
    if args.json:
        write_text(args.json, json.dumps(result.to_dict(), indent=2))
    return EXIT_OK if result.passed else EXIT_FAILED


def print_summary(result):
    """The campaign's summary as a rich table, and the first failure's reproducer."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"gradverify fuzz, seed {result.seed}, shard {result.shard.index + 1}/{result.shard.count}")
    table.add_column("oracle")
    table.add_column(f"caught {result.target}", justify="right")
    table.add_column("inconclusive", justify="right")
    report = result.to_dict()
    for name, counts in report["oracles"].items():
        table.add_row(name, str(counts["fired"]), str(counts["inconclusive"]))
    console.print(table)
    console.print(
        f"graphs: {result.graphs}   ops covered: {len(result.ops_covered)}/{len(TABLE)}   "
        f"failing graphs: {sum(f.graph_index is not None for f in result.failures)}   "
        f"graphs/s: {result.graphs_per_second:.1f} (after {result.startup_seconds:.1f} s of start-up)"
    )
    if result.programs:
        features = ", ".join(f"{name} {count}" for name, count in sorted(result.program_features.items()))
        console.print(f"stateful programs: {result.programs} ({features})")
    missing = sorted(set(TABLE) - set(result.ops_covered))
    if missing and result.graphs > result.programs:
        console.print(f"ops not reached: {', '.join(missing)}")
    if result.reference_defects:
        console.print(f"reference libraries missing the ground truth: {len(result.reference_defects)}")
        for finding in result.reference_defects[:5]:
            console.print(f"  {finding}", markup=False, soft_wrap=True)
    for failure in result.failures[:5]:
        where = "kink probe" if failure.graph_index is None else f"graph {failure.graph_index}"
        for finding in failure.findings[:3]:
            console.print(f"FAIL {where}: {finding}", markup=False, soft_wrap=True)
    first = next((f for f in result.failures if f.reproducer), None)
    if first is not None:
        console.print("reproducer of the first failure (shrunk):")
        console.print(first.reproducer, markup=False, highlight=False, soft_wrap=True)
    console.print("PASSED" if result.passed else "FAILED")
