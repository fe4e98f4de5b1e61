"""Fuzz campaigns: many random graphs through every oracle, failures shrunk to runnable reproducers.

:func:`run_campaign` drives :func:`gradverify.strategies.cases` with
hypothesis (a fixed seed, generation only) and records every graph's
:class:`~gradverify.fuzz.oracles.Outcome`.  When the engine failed, a second
hypothesis run with the same seed stops at the first failure and shrinks it
to the smallest graph that still fails; :func:`reproducer_script` turns that
graph into a standalone Python script which fails on its own.

The graphs a seed yields are fixed for given versions of hypothesis and of
this code base: besides the seed, hypothesis mixes in constants it finds in
the project's loaded modules.  An unfocused campaign then trades a few of
its graphs for focused ones, so that every op of the table is checked
(:func:`cover_every_op`).  Every :data:`PROGRAM_EVERY`-th graph of a campaign on
the engine is a stateful program instead (:mod:`gradverify.fuzz.programs`:
training steps, in-place updates, retained graphs, hooks, judged against
PyTorch's run of the same program).
"""
from __future__ import annotations

import functools
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed

from gradverify.distributed import Journal, run_items
from gradverify.fuzz import adapters, jax_cache
from gradverify.fuzz.graph import literal
from gradverify.fuzz import programs as stateful
from gradverify.fuzz.oracles import (ORACLES, Finding, Outcome, check_case, check_kinks, check_saturation,
                                     reference_libraries)
from gradverify.fuzz.programs import Program
from gradverify.ops import TABLE
from gradverify.strategies import API_CHOICES, cases, programs

PROGRAM_EVERY = 10
"""In a campaign on the engine, graph k is a stateful program when k + 1 is a multiple of this."""
PROGRAM_FOCUS = "program."
"""``focus`` prefix of a campaign of programs only: ``program.<one of gradverify.fuzz.programs.FOCUSES>``."""


@dataclass(frozen=True)
class Shard:
    """Part ``index`` (0-based) of ``count`` independent parts of a campaign."""

    index: int = 0
    count: int = 1

    def __post_init__(self):
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard: expected 0 <= index < count, got index {self.index} of {self.count}")

    @classmethod
    def parse(cls, text: str) -> "Shard":
        """``"i/n"`` with 1 <= i <= n (as written on a command line) -> Shard(i - 1, n)."""
        try:
            number, count = (int(part) for part in text.split("/"))
        except ValueError:
            raise ValueError(f"shard: expected i/n such as 2/4, got {text!r}") from None
        if not 1 <= number <= count:
            raise ValueError(f"shard: expected 1 <= i <= n in i/n, got {text!r}")
        return cls(number - 1, count)

    def graphs(self, total: int) -> int:
        """How many of ``total`` graphs this shard runs (the shards' counts add up to ``total``)."""
        return total // self.count + (1 if self.index < total % self.count else 0)

    def seed(self, campaign_seed: int) -> int:
        """The hypothesis seed of this shard: the campaign's seed itself when unsharded."""
        return campaign_seed if self.count == 1 else campaign_seed * 1_000_003 + self.index


@dataclass
class Failure:
    """An engine failure: the graph's position in the campaign, the findings, and a reproducer script."""

    graph_index: Optional[int]
    findings: list
    reproducer: str = ""

    def to_dict(self) -> dict:
        return {
            "graph": self.graph_index,
            "oracles": sorted({f.oracle for f in self.findings}),
            "findings": [str(f) for f in self.findings],
            "reproducer": self.reproducer,
        }


@dataclass
class CampaignResult:
    """Everything a campaign measured; :meth:`to_dict` is the JSON report."""

    seed: int
    shard: Shard
    max_nodes: int
    target: str = "engine"
    graphs: int = 0
    seconds: float = 0.0
    """Time spent drawing and checking the graphs (start-up, kink probes and shrinking excluded)."""
    startup_seconds: float = 0.0
    """Time spent starting workers and importing the libraries before the first graph."""
    ops_covered: Counter = field(default_factory=Counter)
    program_features: Counter = field(default_factory=Counter)
    """Of the stateful programs among the graphs: how many exercise each of :data:`programs.FOCUSES`."""
    programs: int = 0
    failures: list = field(default_factory=list)
    reference_defects: list = field(default_factory=list)
    fired: Counter = field(default_factory=Counter)
    inconclusive: Counter = field(default_factory=Counter)

    @property
    def graphs_per_second(self) -> float:
        return self.graphs / self.seconds if self.seconds > 0 else 0.0

    @property
    def passed(self) -> bool:
        return not self.failures

    def failures_by_oracle(self) -> dict:
        """Oracle -> number of failures it caught (a failure may be caught by several)."""
        return dict(self.fired)

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "graphs": self.graphs,
            "seed": self.seed,
            "shard": f"{self.shard.index + 1}/{self.shard.count}",
            "max_nodes": self.max_nodes,
            "seconds": round(self.seconds, 3),
            "startup_seconds": round(self.startup_seconds, 3),
            "graphs_per_second": round(self.graphs_per_second, 2),
            "passed": self.passed,
            "failures": [f.to_dict() for f in self.failures],
            "failures_by_oracle": self.failures_by_oracle(),
            "oracles": {name: {"fired": self.fired.get(name, 0), "inconclusive": self.inconclusive.get(name, 0)}
                        for name in ORACLES if name != self.target},
            "ops_covered": dict(sorted(self.ops_covered.items())),
            "programs": {"count": self.programs, "features": dict(sorted(self.program_features.items()))},
            "reference_defects": [str(f) for f in self.reference_defects],
        }


class EngineFailure(AssertionError):
    """Raised inside the shrinking run: carries the case and its outcome out of hypothesis."""

    def __init__(self, case, outcome):
        super().__init__("; ".join(str(f) for f in outcome.engine_failures))
        self.case = case
        self.outcome = outcome


def _settings(examples, shrink):
    return settings(
        max_examples=examples,
        database=None,
        deadline=None,
        derandomize=False,
        phases=[Phase.generate, Phase.shrink] if shrink else [Phase.generate],
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
        print_blob=False,
    )


def check(case, references=None, target="engine"):
    """All oracles on one drawn :class:`~gradverify.strategies.Case`, ``target`` under test.

    ``references``: the built-in libraries compared with it (default: all but the target).  A drawn
    :class:`~gradverify.fuzz.programs.Program` is judged against PyTorch's run of it.
    """
    if isinstance(case, Program):
        return stateful.check_program(case, target)
    graph = case.graph
    if references is None:
        references = reference_libraries(target)
    return check_case(graph.compile(), case.inputs, case.cotangent, case.tangents, len(graph), graph.precision,
                      references, target)


def draw_cases(strategy, seed: int, examples: int) -> list:
    """The first ``examples`` cases hypothesis draws from ``strategy`` with ``seed`` (generation only)."""
    drawn = []

    @_settings(examples, shrink=False)
    @hypothesis_seed(seed)
    @given(strategy)
    def collect(case):
        drawn.append(case)

    collect()
    return drawn


COVERAGE_TRIES = 16
"""Focused draws tried for an op that a campaign's graphs leave out, before it is left uncovered."""


def cover_every_op(drawn: list, seed: int, max_nodes: int) -> list:
    """``drawn`` with graphs that only repeat covered ops swapped for focused graphs of the ops none uses.

    Ops and API functions (``api.<name>``) are drawn uniformly, but those
    that need operands of a particular shape or sign (linear, pow, squeeze
    ...) are often left out of a few hundred graphs.  Each missing one gets
    the first of :data:`COVERAGE_TRIES` focused draws that uses it, in place
    of the last graph whose ops all appear in other graphs (so none is
    lost); the count stays the same.
    """
    uses = Counter(op for case in drawn for op in case.graph.ops_covered())
    replaceable = list(range(len(drawn) - 1, -1, -1))
    result = list(drawn)
    for op in (*TABLE, *API_CHOICES):
        if uses[op]:
            continue
        found = next((case for case in draw_cases(cases(max_nodes=max_nodes, focus=op), seed, COVERAGE_TRIES)
                      if op in case.graph.ops_covered()), None)
        slot = next((i for i in replaceable if all(uses[o] > 1 for o in result[i].graph.ops_covered())), None)
        if found is None or slot is None:
            continue
        replaceable.remove(slot)
        uses.subtract(result[slot].graph.ops_covered())
        uses.update(found.graph.ops_covered())
        result[slot] = found
    return result


def _warm_up(target="engine", graphs=True):
    """Import every library and run each oracle once, so that timing measures graphs, not start-up.

    ``graphs``: False for a campaign of stateful programs only (no graph oracle runs).
    """
    if graphs:
        check(draw_cases(cases(max_nodes=2), 0, 1)[0], target=target)
    if target == "engine":
        check(draw_cases(programs(), 0, 1)[0])


def _start_worker(target="engine", graphs=True):
    warnings.simplefilter("ignore")  # a worker's warnings would interleave with the progress bar
    jax_cache.enable()
    _warm_up(target, graphs)


def outcome_to_json(outcome: Outcome) -> dict:
    """``outcome`` as JSON-serialisable data (a journal line, a result sent back by a Ray worker)."""
    return {"target": outcome.target,
            "findings": [[f.oracle, f.quantity, f.blamed, f.detail] for f in outcome.findings],
            "inconclusive": [[f.oracle, f.quantity, f.blamed, f.detail] for f in outcome.inconclusive]}


def outcome_from_json(data: dict) -> Outcome:
    """The :class:`Outcome` that :func:`outcome_to_json` wrote."""
    return Outcome([Finding(*f) for f in data["findings"]], [Finding(*f) for f in data["inconclusive"]],
                   data["target"])


def _check_to_json(item):
    case, references, target = item
    return outcome_to_json(check(case, references, target))


def run_campaign(
    graphs: int,
    seed: int,
    max_nodes: int = 8,
    shard: Shard = Shard(),
    focus: Optional[str] = None,
    shrink: bool = True,
    preamble: str = "",
    on_graph: Optional[Callable] = None,
    references=None,
    jax_every: int = 1,
    workers: int = 1,
    target: str = "engine",
    ray: Optional[str] = None,
    journal=None,
) -> CampaignResult:
    """Check ``shard``'s share of ``graphs`` random graphs drawn with ``seed``.

    ``focus`` aims every graph at one table op (see :func:`cases`), or
    makes every graph a stateful program of one part (``program.<part>``,
    see :func:`~gradverify.strategies.programs`; ``program.`` alone: any);
    ``preamble`` is Python source placed before the graph in reproducers
    (e.g. the line that re-applies a mutant); ``on_graph(index, outcome)`` is
    called after each graph (progress bars); ``target`` is the library under
    test (``engine``, ``torch``, ``jax`` or ``module:Class``, see
    :mod:`gradverify.fuzz.adapters`); ``references`` are the built-in
    libraries compared with it besides the numerical oracles (default: all
    but the target), JAX on every ``jax_every``-th graph only; ``workers``
    processes check graphs in parallel (the graphs drawn do not depend on
    it; worker processes import the engine afresh, so in-process patches
    such as an active mutant apply only with ``workers=1``); ``ray`` runs
    them on ``workers`` Ray actors at that address (``"local"``: a local Ray,
    see :mod:`gradverify.distributed`); ``journal`` is a path where each
    graph's outcome is kept as it arrives, so that a killed run given the
    same journal checks only the graphs it had not finished.
    """
    if graphs < 1:
        raise ValueError(f"graphs: expected a positive number of graphs, got {graphs}")
    if jax_every < 1 or workers < 1:
        raise ValueError(f"jax_every and workers: expected positive numbers, got {jax_every} and {workers}")
    name = adapters.load(target).name
    if references is None:
        references = reference_libraries(target)
    result = CampaignResult(seed, shard, max_nodes, name)
    only_programs = focus is not None and focus.startswith(PROGRAM_FOCUS)
    examples = shard.graphs(graphs)
    program_strategy = programs(focus=(focus[len(PROGRAM_FOCUS):] or None) if only_programs else None)
    strategy = None if only_programs else cases(max_nodes=max_nodes, focus=focus)
    # Programs exercise the engine's own torch-shaped API: no other target has one.
    program_count = examples if only_programs else (examples // PROGRAM_EVERY if name == "engine" and focus is None
                                                    else 0)
    # The kink probes check the table's conventions, which only the in-house engine follows; the probes
    # check table ops, which a campaign of programs only does not aim at.
    probes = check_kinks(seed) if name == "engine" and not only_programs else []
    for finding in probes + ([] if only_programs else check_saturation(seed, target)):
        result.failures.append(Failure(None, [finding]))
        result.fired[finding.oracle] += 1
    if examples == 0:
        return result
    book = None if journal is None else Journal(journal, {
        "campaign": "fuzz", "graphs": graphs, "seed": seed, "shard": f"{shard.index + 1}/{shard.count}",
        "max_nodes": max_nodes, "focus": focus, "target": target, "references": list(references),
        "jax_every": jax_every})
    done = {} if book is None else book.results
    per_graph = [tuple(r for r in references if r != "jax" or i % jax_every == 0) for i in range(examples)]
    # Drawn before any worker starts, so that the graphs do not depend on the number of workers.
    drawing = time.perf_counter()
    drawn = [] if only_programs else draw_cases(strategy, shard.seed(seed), examples - program_count)
    if focus is None:
        drawn = cover_every_op(drawn, shard.seed(seed), max_nodes)
    drawn = _interleave(drawn, draw_cases(program_strategy, shard.seed(seed), program_count) if program_count else [])
    drawn_at = started = time.perf_counter()
    defects = {}

    def arrived(index, data):
        outcome = outcome_from_json(data)
        defects[index] = _record(result, index, drawn[index], outcome, preamble, target)
        if on_graph is not None:
            on_graph(index, outcome)

    for index in sorted(done):
        arrived(index, done[index])

    def on_start():
        nonlocal started
        started = time.perf_counter()

    # Worker processes import the engine afresh: in-process patches (an active mutant) apply with one worker only.
    setup = functools.partial(_warm_up if ray is None and workers == 1 else _start_worker, target, not only_programs)
    run_items(_check_to_json, {i: (drawn[i], per_graph[i], target) for i in range(examples)}, ray, book, workers,
              setup, arrived, on_start)
    result.startup_seconds = started - drawn_at
    result.seconds = time.perf_counter() - started + (drawn_at - drawing)
    # Merged as they arrived; listed in the graphs' order, whatever the order of arrival.
    result.reference_defects = [finding for index in sorted(defects) for finding in defects[index]]
    result.failures.sort(key=lambda f: -1 if f.graph_index is None else f.graph_index)
    graph_failures = [f for f in result.failures if f.graph_index is not None]
    if shrink and graph_failures:
        # The ground truth decides every engine failure, so shrinking needs no JAX compilations.
        first_is_program = isinstance(drawn[graph_failures[0].graph_index], Program)
        shrunk = shrink_failure(program_strategy if first_is_program else strategy, shard.seed(seed),
                                program_count if first_is_program else examples - program_count, preamble,
                                tuple(r for r in references if r != "jax")[:1], target)
        if shrunk is not None:
            graph_failures[0].reproducer = shrunk
    return result


def _interleave(graph_cases: list, program_cases: list) -> list:
    """The graphs with a program at every :data:`PROGRAM_EVERY`-th place (the programs left over at the end)."""
    graph_cases, program_cases, drawn = graph_cases[::-1], program_cases[::-1], []
    while graph_cases or program_cases:
        program_turn = len(drawn) % PROGRAM_EVERY == PROGRAM_EVERY - 1 or not graph_cases
        drawn.append((program_cases if program_turn and program_cases else graph_cases).pop())
    return drawn


def _record(result, index, case, outcome, preamble, target="engine") -> list:
    """Add one graph's outcome to ``result``; returns its reference defects (listed in graph order at the end)."""
    result.graphs += 1
    if isinstance(case, Program):
        result.programs += 1
        result.program_features.update(case.features)
    else:
        result.ops_covered.update(case.graph.ops_covered())
    for oracle in {f.oracle for f in outcome.inconclusive}:
        result.inconclusive[oracle] += 1
    if outcome.engine_failures:
        reproducer = reproducer_script(case, outcome, preamble, target)
        result.failures.append(Failure(index, outcome.engine_failures, reproducer))
        result.fired.update(outcome.fired)
    return outcome.reference_defects


def shrink_failure(strategy, seed: int, examples: int, preamble: str = "", references=None,
                   target="engine") -> Optional[str]:
    """The reproducer of the smallest failing graph hypothesis finds from ``seed`` (None if none fails)."""

    @_settings(examples, shrink=True)
    @hypothesis_seed(seed)
    @given(strategy)
    def failing(case):
        outcome = check(case, references, target)
        if outcome.engine_failures:
            raise EngineFailure(case, outcome)

    try:
        failing()
    except EngineFailure as failure:
        return reproducer_script(failure.case, failure.outcome, preamble, target)
    return None


def reproducer_script(case, outcome, preamble: str = "", target: str = "engine") -> str:
    """A standalone script that runs every oracle on ``case``'s graph and exits 1 while ``target`` fails."""
    if isinstance(case, Program):
        return stateful.reproducer_script(case, outcome, preamble)
    findings = "\n".join(f"    {finding}" for finding in outcome.engine_failures)
    inputs = ",\n    ".join(literal(np.asarray(x)) for x in case.inputs)
    tangents = ",\n    ".join(literal(np.asarray(u)) for u in case.tangents)
    lines = [
        '"""Reproducer written by gradverify fuzz: the engine fails on this graph.',
        "",
        findings,
        "",
        "Run it: `python <this file>` exits 1 while the engine is wrong, 0 once it is fixed.",
        '"""',
        "import numpy as np",
        "",
        "from gradverify.fuzz.oracles import reproduce",
    ]
    if preamble:
        lines += ["", preamble.rstrip()]
    lines += [
        "",
        "",
        case.graph.to_python().rstrip(),
        "",
        "",
        f"inputs = [\n    {inputs},\n]",
        f"cotangent = {literal(np.asarray(case.cotangent))}",
        f"tangents = [\n    {tangents},\n]",
        "",
        'if __name__ == "__main__":',
        f"    raise SystemExit(reproduce(f, inputs, cotangent, tangents, depth={len(case.graph)}, "
        f"precision={case.graph.precision!r}{'' if target == 'engine' else f', target={target!r}'}))",
    ]
    return "\n".join(lines) + "\n"
