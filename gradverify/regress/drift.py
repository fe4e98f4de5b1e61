"""How far an array moved from its baseline: relative drift and drift in ulps.

The gate is bit-for-bit-ish: a rerun on the same machine reproduces every bit,
so the default tolerance is a few units in the last place (ulps) of the
array's own dtype, enough for a harmless reassociation and far below a real
change (a relative change of 1e-6 is 4.5e9 to 9e9 ulps in float64 and 8 to 17
ulps in float32).

Entries are compared one by one when the baseline holds the whole array.  For
a large array the baseline holds a digest and random projections instead (see
:mod:`gradverify.regress.baseline`); the drift is then the relative change of
the projections against the array's 2-norm, an estimate of the relative
2-norm drift ``|new - old| / |new|`` accurate to a small factor (exact for a
change confined to one entry).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .options import DEFAULT_ATOL, DEFAULT_ULPS


@dataclass(frozen=True)
class Tolerance:
    """An entry holds when it moved by at most ``ulps`` ulps or by at most ``atol`` in absolute value."""

    ulps: float = DEFAULT_ULPS
    atol: float = DEFAULT_ATOL

    def __post_init__(self):
        for name in ("ulps", "atol"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and np.isfinite(value) and value >= 0):
                raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")

    def to_dict(self) -> dict:
        return {"ulps": float(self.ulps), "atol": float(self.atol)}

    def __str__(self):
        return f"{self.ulps:g} ulps" + (f" or atol {self.atol:g}" if self.atol else "")


@dataclass(frozen=True)
class ArrayDrift:
    """The drift of one array (the value or one gradient) of a case.

    ``max_rel`` and ``max_ulps`` are the largest relative drift and drift in
    ulps over the entries; ``worst`` is the index of the entry with the
    largest drift in ulps (None when the array was compared by projections or
    did not move), with its ``baseline`` and ``current`` values.
    ``estimated`` marks a drift measured by projections.
    """

    name: str
    max_rel: float
    max_ulps: float
    exceeded: bool
    worst: tuple | None = None
    baseline: float | None = None
    current: float | None = None
    estimated: bool = False
    note: str = ""

    @property
    def where(self) -> str:
        """The drifting entry, e.g. ``grad[1][2, 0]``; the array's name for a 0-d array or when no entry is known."""
        if not self.worst:
            return self.name
        return f"{self.name}[{', '.join(str(i) for i in self.worst)}]"

    def describe(self, tolerance: Tolerance) -> str:
        """One line saying what moved and by how much."""
        if self.note:
            return f"{self.where}: {self.note}"
        if self.estimated:
            return (
                f"{self.name}: relative 2-norm drift ~{self.max_rel:.3g} (~{self.max_ulps:.3g} ulps, "
                f"estimated from random projections) vs tolerance {tolerance}"
            )
        return (
            f"{self.where} = {self.current!r} (baseline {self.baseline!r}): relative drift {self.max_rel:.3g} "
            f"= {self.max_ulps:.3g} ulps vs tolerance {tolerance}"
        )


def unchanged(name: str) -> ArrayDrift:
    """The drift of an array whose bits did not change."""
    return ArrayDrift(name, 0.0, 0.0, exceeded=False)


def changed_shape(name: str, baseline_shape, baseline_dtype, current: np.ndarray) -> ArrayDrift:
    """The drift of an array whose shape or dtype differs from the baseline's: always a failure."""
    note = f"shape {current.shape} dtype {current.dtype}, baseline shape {tuple(baseline_shape)} dtype {baseline_dtype}"
    return ArrayDrift(name, np.inf, np.inf, exceeded=True, note=note)


def entrywise_drift(name: str, baseline: np.ndarray, current: np.ndarray, tolerance: Tolerance) -> ArrayDrift:
    """Compare two arrays of the same shape and dtype entry by entry.

    NaN matches NaN and an infinity matches the same infinity (a baseline
    records what the code did, so an unchanged NaN is no drift); any other
    change involving a non-finite value is an infinite drift.
    """
    old = baseline.astype(np.float64)
    new = current.astype(np.float64)
    same = (old == new) | (np.isnan(old) & np.isnan(new))
    if same.all():
        return unchanged(name)
    with np.errstate(invalid="ignore", over="ignore"):
        abs_drift = np.where(same, 0.0, np.abs(new - old))
        scale = np.maximum(np.abs(old), np.abs(new))
        rel = np.where(same, 0.0, abs_drift / scale)
        # An ulp of the larger of the two magnitudes, in the array's own dtype.
        ulp = np.spacing(scale.astype(baseline.dtype)).astype(np.float64)
        ulps = np.where(same, 0.0, abs_drift / ulp)
    rel = np.nan_to_num(rel, nan=np.inf)
    ulps = np.nan_to_num(ulps, nan=np.inf)
    bad = (ulps > tolerance.ulps) & ~(abs_drift <= tolerance.atol)
    worst = np.unravel_index(int(np.argmax(ulps)), ulps.shape)
    return ArrayDrift(
        name,
        float(rel.max()),
        float(ulps.max()),
        exceeded=bool(bad.any()),
        worst=tuple(int(i) for i in worst),
        baseline=baseline[worst].item(),
        current=current[worst].item(),
    )


def projected_drift(
    name: str, baseline_projections: np.ndarray, norm: float, current_projections: np.ndarray, dtype,
    tolerance: Tolerance,
) -> ArrayDrift:
    """Drift of a large array whose digest changed, from its random projections.

    ``max |p_new - p_old| / norm`` over the projections, with ``norm`` the
    current array's 2-norm, estimates the relative 2-norm drift; it is judged against ``ulps`` ulps of the dtype's
    machine epsilon (``atol`` does not apply: no single entry is known).
    """
    with np.errstate(all="ignore"):
        moved = np.abs(current_projections - baseline_projections)
        moved[np.isnan(current_projections) & np.isnan(baseline_projections)] = 0.0
        largest = moved.max()
        rel = largest / norm if norm else (0.0 if largest == 0 else np.inf)
    rel = float(np.nan_to_num(rel, nan=np.inf))
    ulps = rel / float(np.finfo(dtype).eps)
    return ArrayDrift(name, rel, ulps, exceeded=ulps > tolerance.ulps, estimated=True)
