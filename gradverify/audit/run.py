"""Planning and running an audit: the units of a framework's ops, a shard of them, resumable.

Every finished unit is appended as one JSON line to the results file, so an
interrupted run continues where it stopped (``resume=True``) and shards can
be run anywhere and their files concatenated.  :func:`audit_unit` is the only
work done per unit, so any executor that maps it over units can replace
:func:`execute`'s loop.
"""
from __future__ import annotations

import json
import pathlib
import time

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


def load_results(path) -> dict:
    """{unit key: UnitResult} from a results file; a line cut short by an interruption is ignored."""
    path = pathlib.Path(path)
    results = {}
    if not path.exists():
        return results
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            result = UnitResult.from_dict(json.loads(line))
        except (ValueError, KeyError, TypeError):
            continue
        results[result.unit.key] = result
    return results


def execute(units, results_path, resume=False, on_result=None) -> tuple:
    """Audit ``units``, appending each result to ``results_path``; returns (results in plan order, seconds).

    With ``resume``, units already in the file are not run again; without it the file is started afresh.
    """
    results_path = pathlib.Path(results_path)
    done = load_results(results_path) if resume else {}
    if not resume:
        results_path.write_text("", encoding="utf-8")
    start = time.perf_counter()
    with results_path.open("a", encoding="utf-8") as handle:
        for unit in units:
            result = done.get(unit.key)
            if result is None:
                result = audit_unit(unit)
                handle.write(json.dumps(result.to_dict(), default=str) + "\n")
                handle.flush()
                done[unit.key] = result
            if on_result is not None:
                on_result(result)
    return [done[unit.key] for unit in units], time.perf_counter() - start
