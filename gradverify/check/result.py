"""The outcome of a check: compared entries, their status, the verdict and :class:`CheckResult`.

pandas is imported only when a frame is asked for (:attr:`CheckResult.entries`, :meth:`CheckResult.to_frame`).
"""
from __future__ import annotations

import functools
import math
from collections import namedtuple
from dataclasses import dataclass, field

import numpy as np

REPORT_ROWS = 10
"""Worst entries kept per check for the report, besides every entry that did not pass."""
REPEATED_BACKWARD = "(second pass through one graph)"
"""Suffix of the check comparing two backward passes: its two values are both analytical."""
CHECK_COLUMNS = ["check", "output", "input", "element", "analytical", "numerical", "error", "bound", "status", "note"]
Entry = namedtuple("Entry", CHECK_COLUMNS)
"""One compared value: what was compared, both values, their difference and the bound it was judged against."""


@dataclass
class CheckResult:
    """The outcome of :func:`check_grad`.

    ``verdict`` is "pass", "fail" or "inconclusive"; ``reason`` says why in
    one sentence; :meth:`to_frame` lists the worst entries with the bound each
    was judged against.
    """

    verdict: str
    reason: str
    records: list
    mode: str
    order: int
    backend: str
    dtype: str
    evaluations: int
    checks: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    @functools.cached_property
    def entries(self):
        """The compared values kept for the report (every one that did not pass, the worst that did), a DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.records, columns=CHECK_COLUMNS)

    def to_frame(self):
        """The worst entries first (largest error/bound), one row per compared value."""
        frame = self.entries.copy()
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = frame["error"] / frame["bound"]
        ratio = ratio.where(frame["status"] == "pass", np.inf)
        return frame.assign(_r=ratio.fillna(np.inf)).sort_values("_r", ascending=False).drop(columns="_r")\
            .reset_index(drop=True)

    def to_dict(self) -> dict:
        """A JSON-able summary, the worst entries included."""
        rows = self.to_frame().astype(object).where(lambda f: f.notna(), None).to_dict(orient="records")
        for row in rows:
            for key, value in row.items():
                if isinstance(value, float) and not math.isfinite(value):
                    row[key] = str(value)
        return {
            "verdict": self.verdict, "passed": self.passed, "reason": self.reason, "mode": self.mode,
            "order": self.order, "backend": self.backend, "dtype": self.dtype, "evaluations": self.evaluations,
            "checks": list(self.checks), "notes": list(self.notes), "entries": rows,
        }

    def __str__(self) -> str:
        head = (f"check_grad: {self.verdict.upper()} ({self.mode} mode, order {self.order}, {self.backend} "
                f"{self.dtype}, {self.evaluations} evaluations; checked: {', '.join(self.checks)})")
        lines = [head, self.reason]
        lines += [f"note: {n}" for n in self.notes]
        frame = self.to_frame().head(REPORT_ROWS)
        if len(frame):
            import pandas as pd

            with pd.option_context("display.width", 200, "display.max_colwidth", 60, "display.precision", 10):
                lines.append(frame.to_string(index=False))
        return "\n".join(lines)


def entry_status(analytical, numerical, bound):
    """Elementwise status: pass / fail / nan-both (NaN or Inf on both sides) / numerical-nonfinite."""
    analytical, numerical = np.asarray(analytical, np.float64), np.asarray(numerical, np.float64)
    a_ok, n_ok = np.isfinite(analytical), np.isfinite(numerical)
    with np.errstate(invalid="ignore"):
        within = np.abs(analytical - numerical) <= bound
    status = np.where(within & a_ok & n_ok, "pass", "fail").astype(object)
    status[~a_ok & ~n_ok] = "nan-both"
    status[a_ok & ~n_ok] = "numerical-nonfinite"
    return status


class Rows:
    """Collects compared values; keeps every entry that did not pass and the worst passing ones per check.

    ``names(indices)`` gives the (output, input, element) labels of the kept
    entries, so labels are only built for the rows that are reported.
    """

    def __init__(self):
        self.records = []
        self.checks = []

    def add(self, check, analytical, numerical, bound, status, names, notes=None):
        analytical = np.atleast_1d(np.asarray(analytical, dtype=np.float64))
        numerical = np.atleast_1d(np.asarray(numerical, dtype=np.float64))
        bound = np.broadcast_to(np.asarray(bound, dtype=np.float64), analytical.shape)
        status = np.atleast_1d(np.asarray(status, dtype=object))
        notes = np.full(status.shape, "", dtype=object) if notes is None else np.atleast_1d(notes)
        with np.errstate(invalid="ignore", divide="ignore"):
            error = np.abs(analytical - numerical)
            ratio = np.where(status == "pass", error / bound, -np.inf)
        passing = np.flatnonzero(status == "pass")
        worst = passing[np.argsort(ratio[passing])[::-1][:REPORT_ROWS]]
        keep = np.sort(np.concatenate([np.flatnonzero(status != "pass"), worst]))
        for i, (output, input_number, element) in zip(keep, names(keep)):
            self.records.append(Entry(check, output, input_number, element, float(analytical[i]),
                                      float(numerical[i]), float(error[i]), float(bound[i]), status[i], notes[i]))
        if check not in self.checks:
            self.checks.append(check)


def constant_names(output, input_number, element):
    return lambda indices: [(output, input_number, element)] * len(indices)


_INCONCLUSIVE = {"kink": "is at a kink", "nan-both": "has a NaN/Inf in both the analytical and the numerical "
                 "derivative (never counted as agreement)",
                 "unresolved": "cannot be resolved by finite differences: the function varies faster than the "
                 "smallest step (ill-conditioned?)",
                 "numerical-nonfinite": "has a non-finite numerical derivative (the function is not finite "
                 "near the point)",
                 "singular": "is NaN at a singular point (an infinite derivative in the same input, or "
                 "non-finite values of fn): AD's 0 * inf"}


def _ratio(row):
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.float64(row.error) / np.float64(row.bound)
    return ratio if np.isfinite(ratio) else np.inf


def _describe(row):
    where = f"the projection {row.output}" if row.output.startswith("<") else f"output {row.output}"
    at = str(row.element) if row.input in ("all", "u", "u, v") else f"input {row.input} element {row.element}"
    return f"{row.check}: {where} w.r.t. {at}"


def verdict_of(rows):
    """(verdict, reason) from the compared entries: any failure fails; kinks and NaNs make it inconclusive."""
    failing = [r for r in rows if r.status == "fail"]
    if failing:
        localised = [r for r in failing if r.check.endswith("reverse (localised)")]
        row = max(localised or failing, key=_ratio)
        kind = "is NaN/Inf while the numerical derivative is finite" if not np.isfinite(row.analytical) else (
            f"differs: analytical {row.analytical:.12g}, numerical {row.numerical:.12g}, error {row.error:.3g} "
            f"> bound {row.bound:.3g}")
        if row.check.endswith(REPEATED_BACKWARD):
            kind = f"differs between two backward passes: first {row.analytical:.12g}, second {row.numerical:.12g}"
        return "fail", f"{_describe(row)} {kind}" + (f" ({row.note})" if row.note else "")
    unsure = [r for r in rows if r.status in _INCONCLUSIVE]
    if unsure:
        row = unsure[0]
        reason = f"{_describe(row)} {_INCONCLUSIVE[row.status]}"
        if row.status in ("kink", "unresolved"):
            reason += f": {row.note} (analytical {row.analytical:.10g})"
        return "inconclusive", reason
    worst = max((_ratio(r) for r in rows if r.status == "pass"), default=0.0)
    subgradients = sum(r.status == "subgradient" for r in rows)
    extra = f"; {subgradients} entries at kinks take a valid subgradient" if subgradients else ""
    return "pass", f"every compared value is within its error bound (worst error/bound {worst:.3g}){extra}"
