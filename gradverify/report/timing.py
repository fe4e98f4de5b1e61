"""Timings that hold: interleaved rounds repeated until every spread is small or the time budget is spent.

Every run is sampled once per round, round-robin, so that all see the same
machine state; rounds continue until each run's relative interquartile range
(IQR / median) is under :data:`RELATIVE_IQR_LIMIT` or the budget runs out, and
a run still above it is reported as noisy.  Ratios are taken round by round
(a sample over the baseline's sample of the same round), so a load change
between rounds moves both alike.  The machine's load is sampled around each
section of the report (:class:`LoadLog`).
"""
from __future__ import annotations

import gc
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd

RELATIVE_IQR_LIMIT = 0.10
"""A timing whose IQR exceeds this fraction of its median when the budget runs out is marked noisy."""
MIN_SAMPLE_SECONDS = 0.02
"""Calls are repeated inside one sample until it lasts this long: several scheduler time slices, so one
preemption by another process moves a sample by a few percent, not by its whole length."""


@dataclass(frozen=True)
class Budget:
    """How long a timing may take: at least ``min_rounds``, then until stable or ``seconds`` have passed."""

    seconds: float
    min_rounds: int = 5
    max_rounds: int = 200


def relative_iqr(samples) -> float:
    """(p75 - p25) / median of ``samples``."""
    p25, median, p75 = np.percentile(samples, [25, 50, 75])
    return float((p75 - p25) / median) if median > 0 else float("inf")


def calls_per_sample(run, call_seconds: float | None = None) -> int:
    """How many calls of ``run`` make one sample of at least MIN_SAMPLE_SECONDS.

    A run known (``call_seconds``) to last that long takes one call; others are
    called for a quarter of a sample to count, since a single call's time is too coarse.
    """
    if call_seconds is not None and call_seconds >= MIN_SAMPLE_SECONDS:
        return 1
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < MIN_SAMPLE_SECONDS / 4:
        run()
        calls += 1
    return max(1, round(calls * MIN_SAMPLE_SECONDS / elapsed))


def time_until_stable(runs: dict, budget: Budget, call_seconds: dict | None = None) -> dict:
    """Per-call seconds of each (warmed-up) run, one sample per run and round: ``{name: array of samples}``.

    ``call_seconds`` (one earlier call of each, default: none) spares the
    runs known to be slow the count of calls per sample.  Rounds stop once every run's relative IQR is under
    :data:`RELATIVE_IQR_LIMIT` (after ``budget.min_rounds``) or ``budget.seconds`` have passed.
    """
    calls = {name: calls_per_sample(run, (call_seconds or {}).get(name)) for name, run in runs.items()}
    samples = {name: [] for name in runs}
    began = time.perf_counter()
    # As timeit does, no collection inside a sample: one between rounds, over the objects made since the
    # start only (a full collection over torch's and JAX's heaps takes a quarter of a second).
    gc.freeze()
    try:
        for round_number in range(budget.max_rounds):
            gc.collect()
            for name, run in runs.items():
                gc.disable()
                try:
                    start = time.perf_counter()
                    for _ in range(calls[name]):
                        run()
                    samples[name].append((time.perf_counter() - start) / calls[name])
                finally:
                    gc.enable()
            if round_number + 1 >= budget.min_rounds and (
                time.perf_counter() - began > budget.seconds
                or all(relative_iqr(s) <= RELATIVE_IQR_LIMIT for s in samples.values())
            ):
                break
    finally:
        gc.unfreeze()
    return {name: np.asarray(s) for name, s in samples.items()}


def summarize(samples: np.ndarray, baseline: np.ndarray | None = None) -> dict:
    """Median, quartiles, relative IQR, the noisy flag and (given a baseline) the round-by-round ratio."""
    p25, median, p75 = np.percentile(samples, [25, 50, 75])
    summary = {"median_s": float(median), "p25_s": float(p25), "p75_s": float(p75), "samples": len(samples),
               "relative_iqr": relative_iqr(samples)}
    summary["noisy"] = bool(summary["relative_iqr"] > RELATIVE_IQR_LIMIT)
    if baseline is not None:  # else no ratio keys, so callers may default them
        ratios = samples / baseline
        summary.update(ratio_to_baseline=float(np.median(ratios)),
                       ratio_p25=float(np.percentile(ratios, 25)), ratio_p75=float(np.percentile(ratios, 75)))
    return summary


class LoadLog:
    """The 1-minute load average before and after each section of the report, and the section's wall time."""

    def __init__(self):
        self.rows = []

    @contextmanager
    def section(self, name: str):
        before, start = os.getloadavg()[0], time.perf_counter()
        try:
            yield
        finally:
            self.rows.append({"section": name, "load_before": before, "load_after": os.getloadavg()[0],
                              "seconds": time.perf_counter() - start})

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=["section", "load_before", "load_after", "seconds"])
