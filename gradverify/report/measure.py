"""The report's measurements: gradient accuracy against the mpmath ground truth, interleaved timings,
the SimpleNet training runs, and the worked trace of example 1.  Everything is measured when called.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import mpmath
import numpy as np
import pandas as pd

from gradverify.examples import SEED, train_simplenet
from gradverify.ops import TABLE
from reference_impls import from_mp, to_mp
from reference_impls.examples import (
    GROUND_TRUTH_DPS,
    ground_truth,
    loss_function,
    train_simplenet_jax,
    train_simplenet_torch,
)

from . import numerical
from .environment import NOT_AVAILABLE, NOT_INSTALLED, backend_available
from .timing import Budget, summarize, time_until_stable
from .ways import BASELINE, BASELINE_DTYPE

CALIBRATE_BELOW_SECONDS = 0.1
"""A first call faster than this is repeated once to count calls per sample (first calls pay one-off costs)."""


CAMPAIGN = {"seed": 0, "max_nodes": 6}
"""The random-graph campaign's settings (``python -m gradverify fuzz`` runs bigger campaigns)."""


@dataclass(frozen=True)
class Plan:
    """How much work each part of the report does (``quick`` or full)."""

    speed: Budget  # per example, both dtypes interleaved
    training: Budget
    checker: Budget
    sweep_points: int
    campaign_graphs: int  # 0 skips the random-graph campaign

    @classmethod
    def make(cls, quick: bool) -> "Plan":
        """The full report's plan, or ``quick``'s: the same measurements on smaller budgets."""
        if quick:
            return cls(speed=Budget(1.0, min_rounds=3), training=Budget(1.0, min_rounds=3),
                       checker=Budget(1.0, min_rounds=3), sweep_points=17, campaign_graphs=0)
        return cls(speed=Budget(30.0, min_rounds=7), training=Budget(15.0, min_rounds=5),
                   checker=Budget(30.0, min_rounds=5), sweep_points=49, campaign_graphs=60)


def gradient_errors(grad, truth, dtype) -> dict:
    """Max absolute and relative error and max error in ulps of ``dtype`` of ``grad`` against ``truth``.

    The differences are taken in mpmath, so float64 errors far below an ulp are
    still resolved.  Relative error and ulps skip entries whose true value is
    exactly zero (they count in the absolute error).  Also: the largest true
    entry, the size of the entry with the most ulps, and the largest error in
    ulps of the largest entry (the gradient's own scale, which cancellation
    inside one small entry does not inflate).
    """
    computed = np.asarray(grad, dtype=np.float64).reshape(-1)
    exact = np.asarray(truth, dtype=object).reshape(-1)
    if computed.size != exact.size:
        raise ValueError(f"a gradient of {computed.size} entries for a parameter of {exact.size}")
    with mpmath.workdps(GROUND_TRUTH_DPS):
        error = np.array([float(abs(mpmath.mpf(float(g)) - t)) for g, t in zip(computed, exact)])
    if not np.all(np.isfinite(computed)):
        error[~np.isfinite(computed)] = np.inf
    magnitude = np.abs(from_mp(exact))
    nonzero = magnitude > 0
    ulp = np.spacing(magnitude.astype(dtype)).astype(np.float64)
    ulps = np.where(nonzero, error / np.where(nonzero, ulp, 1.0), 0.0)
    largest = float(magnitude.max())
    return {
        "max_abs_error": float(error.max()),
        "max_rel_error": float((error[nonzero] / magnitude[nonzero]).max()) if nonzero.any() else 0.0,
        "max_ulps": float(ulps.max()),
        "largest_entry": largest,
        "worst_ulps_entry": float(magnitude[int(np.argmax(ulps))]),
        "ulps_of_largest": float(error.max() / np.spacing(np.asarray(largest, dtype=dtype))) if largest > 0 else 0.0,
    }


def _timed(run):
    start = time.perf_counter()
    result = run()
    return result, time.perf_counter() - start


def _first_calls(way, example, dtype, truth) -> dict:
    """Prepare ``way`` and call it: its status, gradients, errors, and the call and its time for timing.

    A way whose library is missing gets the status "not installed"; a way
    that raises gets the error's text (a finding to report, not a crash).
    """
    if way.backend in ("torch", "jax") and not backend_available(way.backend):
        return {"status": NOT_INSTALLED}
    try:
        run = way.prepare(example, dtype)
        grads, seconds = _timed(run)
        if len(grads) != len(truth):
            raise ValueError(f"{len(grads)} gradients for {len(truth)} parameters")
        errors = [gradient_errors(g, t, dtype) for g, t in zip(grads, truth)]
        if way.compiles or seconds < CALIBRATE_BELOW_SECONDS:
            _, seconds = _timed(run)
    except Exception as err:
        return {"status": f"error: {type(err).__name__}: {err}"}
    return {"status": "ok", "grads": grads, "errors": errors, "run": run, "seconds": seconds}


def differentiate_all(examples, dtypes, ways, plan: Plan, tick) -> tuple:
    """Accuracy of every way on every example, parameter and dtype, and the interleaved timings.

    Returns ``(accuracy, speed)`` DataFrames with a ``status`` column ("ok",
    "not installed" or the error of a way that failed).  Both dtypes of an
    example are timed in one session, with ratios to its PyTorch reverse float32.
    """
    accuracy, speed = [], []
    for example in examples:
        runs, call_seconds = {}, {}
        for dtype in map(np.dtype, dtypes):
            stage = f"{example.name} {dtype.name}"
            tick(stage, "ground truth")
            _, truth = ground_truth(example, dtype)
            for way in ways:
                tick(stage, way.name)
                result = _first_calls(way, example, dtype, truth)
                if result["status"] == "ok":
                    runs[way.name, dtype.name], call_seconds[way.name, dtype.name] = result["run"], result["seconds"]
                for k, name in enumerate(example.param_names):
                    row = {"example": example.name, "dtype": dtype.name, "parameter": name, "way": way.name,
                           "status": result["status"], "kind": way.kind}
                    if result["status"] == "ok":
                        row.update(result["errors"][k])
                        if np.size(result["grads"][k]) == 1:
                            row["gradient"] = float(np.asarray(result["grads"][k]))
                    accuracy.append(row)
        tick(f"{example.name} timing", f"{len(runs)} runs interleaved")
        samples = time_until_stable(runs, plan.speed, call_seconds)
        speed.extend(_speed_rows(example.name, dtypes, ways, samples))
    return pd.DataFrame(accuracy), pd.DataFrame(speed)


def _speed_rows(example, dtypes, ways, samples):
    baseline = samples.get((BASELINE, BASELINE_DTYPE))
    rows = []
    for dtype in dtypes:
        for way in ways:
            row = {"example": example, "dtype": dtype, "way": way.name, "kind": way.kind}
            if (way.name, dtype) not in samples:
                row["status"] = NOT_INSTALLED if not backend_available(way.backend) else "failed"
            else:
                row.update({"status": "ok", "ratio_to_baseline": np.nan, "ratio_p25": np.nan, "ratio_p75": np.nan,
                            **summarize(samples[way.name, dtype], baseline)})
            rows.append(row)
    return rows


TRAINERS = {
    "gradverify engine": ("engine", train_simplenet),
    "PyTorch": ("torch", train_simplenet_torch),
    "JAX (jit)": ("jax", train_simplenet_jax),
}


def training(dtypes, plan: Plan, tick) -> tuple:
    """SimpleNet's 100 epochs by each engine in each dtype, timed interleaved in one session.

    Returns ``(losses, summary)``: the loss of every epoch per engine and
    dtype, and per engine the timing summary, the final loss and the largest
    per-epoch loss difference from PyTorch.
    """
    available = {name: train for name, (backend, train) in TRAINERS.items() if backend_available(backend)}
    trajectories, runs = {}, {}
    for dtype in map(np.dtype, dtypes):
        for name, train in available.items():
            tick(f"SimpleNet {dtype.name}", name)
            trajectories[name, dtype.name] = train(dtype)

            def run(train=train, key=(name, dtype.name), dtype=dtype):
                trajectories[key] = train(dtype)

            runs[name, dtype.name] = run
    tick("SimpleNet timing", f"{len(runs)} runs interleaved")
    samples = time_until_stable(runs, plan.training)
    loss_rows, summary = [], []
    for dtype in map(np.dtype, dtypes):
        reference = trajectories.get(("PyTorch", dtype.name))
        for name in TRAINERS:
            row = {"dtype": dtype.name, "engine": name}
            if name not in available:
                summary.append({**row, "status": NOT_INSTALLED})
                continue
            losses = trajectories[name, dtype.name]
            drift = np.abs(losses - reference) if reference is not None else np.full(len(losses), np.nan)
            summary.append({**row, "status": "ok", **summarize(samples[name, dtype.name]),
                            "first_loss": float(losses[0]), "final_loss": float(losses[-1]),
                            "max_drift_vs_pytorch": float(np.max(drift))})
            loss_rows.extend({**row, "epoch": e + 1, "loss": float(v), "drift_vs_pytorch": float(d)}
                             for e, (v, d) in enumerate(zip(losses, drift)))
    return pd.DataFrame(loss_rows), pd.DataFrame(summary)


def square_of_sum_trace() -> pd.DataFrame:
    """Example 1 as the document works it: values, forward-mode tangents (dx = 1) and reverse-mode adjoints.

    Every entry is computed by the engine in float64: the adjoint of the
    intermediate u by ``ge.autograd.grad``, the tangents by ``ge.func.jvp``.
    """
    import gradverify.engine as ge

    x = ge.tensor(2.0, dtype=ge.float64, requires_grad=True)
    y = ge.tensor(3.0, dtype=ge.float64, requires_grad=True)
    u = x + y
    f = u**2
    adjoints = ge.autograd.grad(f, (x, y, u))
    seed = (ge.tensor(1.0, dtype=ge.float64), ge.tensor(0.0, dtype=ge.float64))
    _, du = ge.func.jvp(lambda a, b: a + b, (x.detach(), y.detach()), seed)
    _, df = ge.func.jvp(lambda a, b: (a + b) ** 2, (x.detach(), y.detach()), seed)
    return pd.DataFrame(
        {
            "node": ["x", "y", "u = x + y", "f = u^2"],
            "value": [x.item(), y.item(), u.item(), f.item()],
            "tangent (forward, dx = 1, dy = 0)": [1.0, 0.0, du.item(), df.item()],
            "adjoint (reverse, df/dnode)": [adjoints[0].item(), adjoints[1].item(), adjoints[2].item(), 1.0],
        }
    )


def step_sweep(example, dtypes, plan: Plan, tick) -> pd.DataFrame:
    """Error of each scheme's derivative of ``example`` along one seeded random unit direction, per step.

    The truth is the mpmath gradient projected on the direction; the steps
    run from 1 down to 1e-16 (absolute, the parameters being of order 1).
    """
    rows = []
    rng = np.random.default_rng(SEED)
    direction = [rng.standard_normal(np.shape(p)) for p in example.params.values()]
    norm = np.sqrt(sum(float(np.sum(d * d)) for d in direction))
    direction = [d / norm for d in direction]
    for dtype in map(np.dtype, dtypes):
        tick("step sweep", f"{example.name} {dtype.name}")
        fn, params = loss_function(example, "numpy", dtype)
        point = [np.asarray(p, dtype=np.float64) for p in params]
        _, truth = ground_truth(example, dtype)
        with mpmath.workdps(GROUND_TRUTH_DPS):
            exact = float(sum(to_mp(u).reshape(-1) @ g.reshape(-1) for u, g in zip(direction, truth)))
        for h in np.logspace(0, -16, plan.sweep_points):
            for scheme in numerical.SCHEMES:
                value, _ = numerical.derivative_along(fn, point, direction, dtype, scheme, float(h))
                rows.append({"dtype": dtype.name, "scheme": scheme, "step": float(h), "abs_error": abs(value - exact)})
    return pd.DataFrame(rows)


def checker_comparison(quick: bool, plan: Plan, tick) -> tuple:
    """``(sensitivity, cost)`` from :mod:`gradverify.check.benchmarks`, or a status text instead of each.

    Sensitivity: which tool flags a backward wrong by a factor (1+δ); cost: the
    tools' wall time on the document's MLP.  Both drive PyTorch's own
    gradcheck, so they need torch; without JAX its column is left out.
    """
    if not backend_available("torch"):
        return NOT_INSTALLED, NOT_INSTALLED
    try:
        from gradverify.check import benchmarks
    except ImportError:
        return NOT_AVAILABLE, NOT_AVAILABLE
    tools = None if backend_available("jax") else [
        "gradverify full", "gradverify fast", "torch gradcheck", "torch gradcheck fast"
    ]
    tick("checker", "sensitivity")
    sensitivity = benchmarks.sensitivity_table(quick=quick, tools=tools)
    tick("checker", "cost")
    samples = {}

    def timer(runs):
        samples.update(time_until_stable(runs, plan.checker))
        return samples

    cost = benchmarks.cost_table(timer=timer)
    for key, times in samples.items():
        for column, value in summarize(times).items():
            cost.loc[key, column] = value
    return sensitivity, cost


def campaign_summary(plan: Plan, tick) -> tuple:
    """``(summary, oracles)`` of a seeded random-graph campaign (:mod:`gradverify.fuzz`), or a status text.

    The campaign compares the engine with PyTorch, JAX and the numerical
    oracles, so it needs both libraries; ``--quick`` skips it (it takes about
    a minute).
    """
    if plan.campaign_graphs == 0:
        status = "skipped with --quick (run the full report, or `python -m gradverify fuzz`)"
        return status, status
    if not (backend_available("torch") and backend_available("jax")):
        status = "needs PyTorch and JAX, " + NOT_INSTALLED
        return status, status
    try:
        from gradverify.fuzz.campaign import run_campaign
    except ImportError:
        return NOT_AVAILABLE, NOT_AVAILABLE
    graphs = plan.campaign_graphs
    result = run_campaign(graphs, CAMPAIGN["seed"], CAMPAIGN["max_nodes"],
                          on_graph=lambda index, outcome: tick("random graphs", f"{index + 1}/{graphs}"))
    report = result.to_dict()
    summary = pd.DataFrame([{
        "graphs": report["graphs"], "seed": report["seed"], "max_nodes": report["max_nodes"],
        "graphs_per_second": report["graphs_per_second"], "ops_covered": len(TABLE.keys() & result.ops_covered.keys()),
        "ops_in_table": len(TABLE), "failures": len(report["failures"]), "passed": report["passed"],
        "reference_defects": len(report["reference_defects"]),
    }])
    oracles = pd.DataFrame([{"oracle": name, **counts} for name, counts in report["oracles"].items()])
    return summary, oracles
