"""Finite-difference and complex-step gradients for the report, on the checker's oracles.

The schemes come from :mod:`gradverify.check.oracles` (Richardson extrapolation,
complex step, the ``Line`` they differentiate along).  Two things are added
for the report, which runs the schemes *in* each dtype (float32 finite
differences are part of the comparison, not only float64 references):

* :class:`RoundedLine` rounds every point ``x + t·d`` to the dtype before the
  function sees it, so ``Line.displacement`` is the step really taken and the
  oracles' effective direction accounts for float32 rounding of the step;
* :func:`central_difference`, the plain one-step scheme (the oracles start
  Richardson at two stages).
"""
from __future__ import annotations

import numpy as np

from gradverify.check.oracles import Line, complex_step, richardson

SCHEMES = ("central", "richardson", "complex_step")
COMPLEX_STEP = 1e-20
"""Step of the complex-step scheme: no cancellation, so any tiny step works (and none is better)."""


def step_for(scheme: str, dtype, x: float) -> float:
    """The step for an input entry of value ``x``: balances truncation against rounding error in ``dtype``.

    Central differences err by h^2 + eps/h, so h = eps^(1/3); two-stage
    Richardson by h^4 + eps/h, so h = eps^(1/5); both times max(|x|, 1), since a
    step relative to a tiny |x| would drown in rounding.  The complex step has
    no rounding term.
    """
    if scheme == "complex_step":
        return COMPLEX_STEP
    eps = float(np.finfo(dtype).eps)
    return eps ** (1 / 3 if scheme == "central" else 1 / 5) * max(abs(x), 1.0)


def complex_dtype(dtype) -> np.dtype:
    """The complex dtype whose parts are ``dtype`` (complex64 for float32)."""
    return np.result_type(np.dtype(dtype), np.complex64)


class RoundedLine(Line):
    """A :class:`~gradverify.check.oracles.Line` whose points are rounded to ``dtype`` before evaluation."""

    def __init__(self, evaluate_many, point, direction, dtype):
        super().__init__(evaluate_many, point, direction)
        self.dtype = np.dtype(dtype)

    def at(self, t):
        points = super().at(t)
        dtype = complex_dtype(self.dtype) if np.iscomplexobj(points[0]) else self.dtype
        return [p.astype(dtype) for p in points]


def central_difference(line: Line, h: float) -> tuple:
    """``(value, coefficients)``: the one-step central difference and the effective direction it is along."""
    plus, minus = line(h), line(-h)
    direction = [(p - m) / (2 * h) for p, m in zip(line.displacement(h), line.displacement(-h))]
    return (plus - minus) / (2 * h), direction


def _evaluate_many(fn, dtype):
    """``fn`` on each point's inputs cast to ``dtype`` (or its complex counterpart), as ``Line`` expects."""

    def cast(x):
        return x.astype(complex_dtype(dtype) if np.iscomplexobj(x) else dtype)

    return lambda points: [[np.asarray(fn(*map(cast, inputs)))] for inputs in points]


def derivative_along(fn, point, direction, dtype, scheme: str, h: float) -> tuple:
    """``(value, effective_direction)``: the derivative of scalar ``fn`` at ``point`` along ``direction``.

    ``h`` is the absolute step; the value is a derivative along the returned
    direction (``direction`` up to the rounding of the step in ``dtype``).
    """
    evaluate = _evaluate_many(fn, dtype)
    if scheme == "complex_step":
        estimate = complex_step(evaluate, point, direction, h)
        return float(estimate.value[0]), estimate.direction
    line = RoundedLine(evaluate, point, direction, dtype)
    if scheme == "central":
        value, effective = central_difference(line, h)
        return float(value[0]), effective
    if scheme == "richardson":
        estimate = richardson(line, h, stages=2)
        return float(estimate.value[0]), estimate.direction
    raise ValueError(f"scheme: expected one of {', '.join(SCHEMES)}, got {scheme!r}")


def gradient(fn, params, scheme: str) -> tuple:
    """The gradient of scalar ``fn`` entry by entry, each a derivative along a unit vector.

    The arithmetic runs in the params' dtype, with steps from :func:`step_for`.
    Dividing by the effective direction's entry undoes the rounding of the step.
    """
    dtype = np.result_type(*params)
    point = [np.asarray(p, dtype=np.float64) for p in params]
    grads = []
    for k, p in enumerate(point):
        g = np.empty(p.size)
        for j in range(p.size):
            direction = [np.zeros_like(q) for q in point]
            direction[k].reshape(-1)[j] = 1.0
            h = step_for(scheme, dtype, float(p.reshape(-1)[j]))
            value, effective = derivative_along(fn, point, direction, dtype, scheme, h)
            g[j] = value / effective[k].reshape(-1)[j]
        grads.append(g.reshape(p.shape).astype(dtype))
    return tuple(grads)
