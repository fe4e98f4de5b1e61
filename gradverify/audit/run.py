"""Planning and running an audit: the units of a framework's ops, a shard of them, resumable.

Every finished unit is appended as one JSON line to the results file (a
:class:`gradverify.distributed.Journal` keyed by the unit) the moment it
finishes, so an interrupted run continues where it stopped (``resume=True``)
and shards can be run anywhere and their files concatenated.  The units run
in this process, on worker processes or on Ray, through :func:`gradverify.distributed.run_items`
(the fuzz campaign's mechanism); :func:`audit_unit` is the only work done
per unit and the report lists the results in plan order, so the findings do
not depend on where or in which order the units ran.
"""
from __future__ import annotations

import functools
import json
import pathlib
import time
from dataclasses import dataclass

from gradverify.distributed import Journal, run_items
from gradverify.fuzz.campaign import Shard

from .sources import source
from .unit import Unit, UnitResult, audit_unit


def plan(framework, ops, dtypes, orders, shard=Shard(), max_elements=None) -> list:
    """Every (op, sample, dtype, order) unit of ``ops`` in the dtypes each op supports; of those, every
    ``shard.count``-th from ``shard.index`` (a :class:`gradverify.fuzz.campaign.Shard`).

    With ``max_elements``, samples whose floating tensors hold more elements are left out (see :func:`oversized`).
    """
    src = source(framework)
    units = [Unit(framework, op, index, dtype, order)
             for op in ops for dtype in src.dtypes(op) if dtype in dtypes
             for index in range(src.count(op, dtype))
             if max_elements is None or src.elements(op, index, dtype) <= max_elements
             for order in orders]
    return units[shard.index::shard.count]


def oversized(framework, ops, dtypes, max_elements) -> int:
    """How many samples of ``ops`` in ``dtypes`` hold more than ``max_elements`` floating elements."""
    src = source(framework)
    return sum(src.elements(op, index, dtype) > max_elements
               for op in ops for dtype in src.dtypes(op) if dtype in dtypes for index in range(src.count(op, dtype)))


def _audit_json(unit: Unit) -> dict:
    # JSON data, whichever process ran the unit: a fresh, a resumed and a Ray run load the same values.
    return json.loads(json.dumps(audit_unit(unit).to_dict(), default=str))


def execute(units, results_path, resume=False, on_result=None, ray=None, workers=None) -> tuple:
    """Audit ``units``, appending each result to ``results_path`` as it arrives; returns (results in plan
    order, :class:`Timing`).

    With ``resume``, units already in the file are not run again; without it the file is started afresh.
    ``ray`` runs the units on ``workers`` Ray actors at that address (``"local"`` starts a local Ray), else
    ``workers`` > 1 runs them on as many processes (see :func:`gradverify.distributed.run_items`);
    ``on_result(result)`` is called for every unit, the resumed ones first, the others as they finish.
    """
    results_path = pathlib.Path(results_path)
    if not resume:
        results_path.unlink(missing_ok=True)
    journal = Journal(results_path, None)
    timing = Timing(time.perf_counter())
    done = {key: UnitResult.from_dict(data) for key, data in journal.results.items()}
    if on_result is not None:
        for unit in units:
            if unit.key in done:
                on_result(done[unit.key])

    def arrived(key, data):
        done[key] = UnitResult.from_dict(data)
        timing.audited += 1
        if on_result is not None:
            on_result(done[key])

    frameworks = sorted({unit.framework for unit in units})
    setup = functools.partial(_import_sources, frameworks)
    run_items(_audit_json, {unit.key: unit for unit in units}, ray, journal, workers, setup, arrived,
              on_start=lambda: setattr(timing, "started", time.perf_counter()))
    timing.finished = time.perf_counter()
    if not timing.audited:
        timing.started = timing.finished
    return [done[unit.key] for unit in units], timing


def _import_sources(frameworks):
    for framework in frameworks:
        source(framework).select(None)  # loads the op registry (torch's op_db: seconds) before the first unit


@dataclass
class Timing:
    """When an execution began, had its workers ready (imports, Ray) and ended; how many units it audited."""

    began: float
    started: float = 0.0
    finished: float = 0.0
    audited: int = 0

    @property
    def startup_seconds(self) -> float:
        return self.started - self.began

    @property
    def units_per_second(self) -> float:
        """Units audited per second of wall clock once the workers were ready (0 when none was audited)."""
        return self.audited / (self.finished - self.started) if self.audited else 0.0
