"""Second oracles for a failed check: derivatives from a source independent of the one that failed.

check_grad's finite differences (or its FD-free identities) are the first
oracle.  A disagreement becomes a finding only when one of these agrees:

mpmath
    for elementwise ops with a high-precision counterpart (:data:`MPMATH`):
    the exact derivative (``mpmath.diff`` at 40 digits) and the exact value,
    entry by entry;
float64
    for float32/bfloat16 samples: the framework's own AD of the same function
    on the same inputs, evaluated in float64;
reverse AD
    for forward-mode failures: the framework's reverse mode, where check_grad
    found it right;
the other framework
    JAX for a torch op and torch for a JAX function, where the counterpart
    computes the same values (see :mod:`gradverify.audit.jax_source`);
the framework's own checker
    torch's gradcheck / gradgradcheck, jax's check_grads (float64 only).

Comparisons use the checker's :func:`~gradverify.check.oracles.compare_gradients`
with an allowance of ``CONFIRM_ULPS`` of the audited dtype, relative to each
entry for elementwise ops (whose entries share no rounding) and to the largest
entry of each output/input block otherwise.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import mpmath
import numpy as np

from gradverify.check import backend_for
from gradverify.check.oracles import compare_gradients

CONFIRM_ULPS = 256
"""Rounding an AD result may carry before a second oracle calls it wrong: library kernels lose tens to a few
hundred ulps (the checker allows an AD result as much); the defects the audit finds are 1e5 ulps and more."""
VALUE_ULPS = 1024
"""A value this many ulps off the mpmath truth is a wrong forward value (special.ndtr below -5 is 1e13 ulps off)."""
LOW_PRECISION_CONFIRM_ULPS = 16
"""Both allowances for 16-bit dtypes: twice the checker's 8 ulps (12.5% in bfloat16), where 256 would be 200%."""
JACOBIAN_LIMIT = 512
"""Largest number of input (or output) elements for which second oracles build whole Jacobians."""
TRUTH_DPS = 40


def _sigmoid(v):
    return 1 / (1 + mpmath.exp(-v))


def _entr(v):
    return -v * mpmath.log(v) if v > 0 else (mpmath.mpf(0) if v == 0 else -mpmath.inf)


def _sinc(v):
    return mpmath.mpf(1) if v == 0 else mpmath.sin(mpmath.pi * v) / (mpmath.pi * v)


def _bessel_scaled(order):
    return lambda v: mpmath.exp(-abs(v)) * mpmath.besseli(order, v)


MPMATH = {
    "sin": mpmath.sin, "cos": mpmath.cos, "tan": mpmath.tan, "sinh": mpmath.sinh, "cosh": mpmath.cosh,
    "tanh": mpmath.tanh, "asin": mpmath.asin, "acos": mpmath.acos, "atan": mpmath.atan, "asinh": mpmath.asinh,
    "acosh": mpmath.acosh, "atanh": mpmath.atanh, "exp": mpmath.exp, "exp2": lambda v: mpmath.power(2, v),
    "expm1": mpmath.expm1, "log": mpmath.log, "log2": lambda v: mpmath.log(v, 2), "log10": mpmath.log10,
    "log1p": mpmath.log1p, "sqrt": mpmath.sqrt, "rsqrt": lambda v: 1 / mpmath.sqrt(v),
    "reciprocal": lambda v: 1 / v, "sigmoid": _sigmoid, "special.expit": _sigmoid,
    "erf": mpmath.erf, "erfc": mpmath.erfc, "erfinv": mpmath.erfinv, "special.erfcx": lambda v: mpmath.exp(v * v) * mpmath.erfc(v),
    "lgamma": lambda v: mpmath.log(abs(mpmath.gamma(v))), "digamma": lambda v: mpmath.psi(0, v),
    "mvlgamma": lambda v, p: p * (p - 1) / 4 * mpmath.log(mpmath.pi) + sum(mpmath.loggamma(v - mpmath.mpf(i) / 2)
                                                                          for i in range(p)),
    "polygamma": lambda v, n: mpmath.psi(n, v), "special.polygamma": lambda v, n: mpmath.psi(n, v),
    "special.ndtr": mpmath.ncdf, "special.log_ndtr": lambda v: mpmath.log(mpmath.ncdf(v)),
    "special.ndtri": lambda v: mpmath.sqrt(2) * mpmath.erfinv(2 * v - 1),
    "i0": lambda v: mpmath.besseli(0, v), "special.i0e": _bessel_scaled(0), "special.i1": lambda v: mpmath.besseli(1, v),
    "special.i1e": _bessel_scaled(1), "sinc": _sinc, "special.entr": _entr,
    "nn.functional.hardsigmoid": lambda v: min(max(v / 6 + mpmath.mpf(1) / 2, mpmath.mpf(0)), mpmath.mpf(1)),
    "nn.functional.silu": lambda v: v * _sigmoid(v),
    "nn.functional.mish": lambda v: v * mpmath.tanh(mpmath.log1p(mpmath.exp(v))),
    "nn.functional.logsigmoid": lambda v: -mpmath.log1p(mpmath.exp(-v)),
    "nn.functional.softsign": lambda v: v / (1 + abs(v)), "nn.functional.tanhshrink": lambda v: v - mpmath.tanh(v),
}
"""OpInfo name -> the op on one mpmath number (extra positional arguments as the OpInfo sample passes them).

The engine's own ops have counterparts in ``reference_impls/mpmath_ops.py``; these are the framework ops the
engine does not have."""


LOSSES = {
    "nn.functional.binary_cross_entropy": lambda v, t, w=1: -w * (t * mpmath.log(v) + (1 - t) * mpmath.log1p(-v)),
}
"""OpInfo name -> a loss on mpmath numbers: (input, the tensor arguments' elements, the weight's) -> loss."""
REDUCTIONS = ("none", "sum", "mean")


@dataclass(frozen=True)
class Elementwise:
    """An op elementwise in its first input: ``fn(v, *p)`` on mpmath numbers, where ``p`` holds the other
    inputs' elements at the same index (then ``weight``'s), summed or averaged over elements by ``reduction``."""

    fn: Callable
    reduction: str = "none"
    weight: np.ndarray | None = None


def mpmath_counterpart(name, args, kwargs) -> Elementwise | None:
    """The op ``name`` on mpmath numbers, called with these arguments (tensor arguments are the sample's other
    inputs, a tensor ``weight`` a numpy array), or None."""
    fn = MPMATH.get(name)
    if fn is not None and not kwargs and all(isinstance(a, (int, float)) for a in args):
        return Elementwise(lambda v: fn(v, *args))
    loss = LOSSES.get(name)
    if loss is None or set(kwargs) - {"reduction", "weight"} or kwargs.get("reduction", "mean") not in REDUCTIONS:
        return None
    return Elementwise(loss, kwargs.get("reduction", "mean"), kwargs.get("weight"))


def _with_precision(fn, point, derivative, params=()):
    with mpmath.workdps(TRUTH_DPS):
        x, p = mpmath.mpf(float(point)), [mpmath.mpf(float(v)) for v in params]
        try:
            value = mpmath.diff(lambda v: fn(v, *p), x, derivative) if derivative else fn(x, *p)
            return float(value)
        except (ValueError, ZeroDivisionError, OverflowError):
            return math.nan


def mpmath_truth(fn, points, derivative, params=()) -> np.ndarray:
    """``fn``'s value (derivative 0) or its first or second derivative at each point, rounded to float64;
    ``params`` are arrays of the points' shape whose elements are fn's further arguments."""
    flat = [np.ravel(np.broadcast_to(p, np.shape(points))) for p in params]
    return np.array([_with_precision(fn, x, derivative, [p[k] for p in flat])
                     for k, x in enumerate(np.ravel(points))]).reshape(np.shape(points))


def _one_hot(size, k):
    unit = np.zeros(size)
    unit[k] = 1.0
    return unit


def jacobian(backend, fn, arrays, mode):
    """The whole Jacobian of ``fn`` at ``arrays`` from ``mode`` ("reverse" or "forward") AD, as blocks [i][j].

    None when it is too large to build (see JACOBIAN_LIMIT), the mode is unavailable, or ``fn`` refuses
    ``arrays`` (a float64 copy of the differentiated inputs beside an argument the sample holds in float32).
    """
    try:
        values = backend.evaluate(fn, arrays)
    except (RuntimeError, TypeError):
        return None
    out_sizes, in_sizes = [v.size for v in values], [a.size for a in arrays]
    if sum(out_sizes) > JACOBIAN_LIMIT or sum(in_sizes) > JACOBIAN_LIMIT:
        return None
    blocks = [[np.zeros((o, n)) for n in in_sizes] for o in out_sizes]
    try:
        if mode == "reverse":
            for i, v in enumerate(values):
                for k in range(v.size):
                    cotangents = [(_one_hot(v.size, k) if m == i else np.zeros(w.size)).reshape(w.shape).astype(w.dtype)
                                  for m, w in enumerate(values)]
                    for j, grad in enumerate(backend.vjp(fn, arrays, cotangents)[1]):
                        blocks[i][j][k] = np.ravel(grad)
        else:
            for j, a in enumerate(arrays):
                for k in range(a.size):
                    tangents = [(_one_hot(a.size, k) if m == j else np.zeros(b.size)).reshape(b.shape).astype(b.dtype)
                                for m, b in enumerate(arrays)]
                    for i, out in enumerate(backend.jvp(fn, arrays, tangents)[1]):
                        blocks[i][j][:, k] = np.ravel(out)
    except NotImplementedError:
        return None
    return blocks


def worst_disagreement(observed, truth, dtype, per_entry=False):
    """The worst entry where ``observed`` blocks disagree with ``truth`` blocks, or None when all agree.

    Returns a dict: output, input (indices), out_element, in_element (flat indices into them), observed,
    truth, ulps, allowance.
    """
    worst = None
    rtol = _allowance(CONFIRM_ULPS, dtype)
    for i, row in enumerate(truth):
        for j, block in enumerate(row):
            seen = np.asarray(observed[i][j], dtype=np.float64)
            if block.size == 0:
                continue
            finite = np.abs(block[np.isfinite(block)])
            magnitude = np.abs(block) if per_entry else finite.max(initial=0.0)
            agree, bound = compare_gradients(seen, block, dtype, magnitude=magnitude, rtol=rtol)
            agree |= ~np.isfinite(block)  # an oracle that cannot say claims nothing
            if agree.all():
                continue
            with np.errstate(divide="ignore", invalid="ignore"):
                excess = np.where(agree, 0.0, np.abs(seen - block) / bound)
            flat = int(np.nanargmax(np.where(np.isnan(excess), np.inf, excess)))
            if worst is None or excess.flat[flat] > worst["_excess"]:
                out_element, in_element = divmod(flat, block.shape[1])
                worst = dict(output=i, input=j, out_element=out_element, in_element=in_element,
                             observed=float(seen.flat[flat]), truth=float(block.flat[flat]),
                             ulps=ulps(seen.flat[flat], block.flat[flat], dtype), allowance=float(bound.flat[flat]),
                             _excess=float(excess.flat[flat]))
    if worst is not None:
        worst.pop("_excess")
    return worst


def _allowance(ulps_of_wide_dtypes, dtype) -> float:
    eps = float(np.finfo(dtype).eps)
    return (LOW_PRECISION_CONFIRM_ULPS if np.dtype(dtype).itemsize <= 2 else ulps_of_wide_dtypes) * eps


def ulps(observed, truth, dtype) -> float:
    """|observed - truth| in units of the dtype's epsilon times the larger of |observed| and |truth|."""
    info = np.finfo(dtype)
    scale = max(abs(float(truth)), abs(float(observed)), float(info.tiny)) * float(info.eps)
    difference = abs(float(observed) - float(truth))
    return float(difference / scale) if math.isfinite(difference) else math.inf


def elementwise_truths(fn, leaves, counterpart, dtype, modes):
    """Confirmations from mpmath for an op elementwise in its first input (see :class:`Elementwise`):
    {mode: worst disagreement or None}; forward mode of a reduced op is not covered."""
    backend = backend_for(leaves)
    arrays = [backend.to_numpy(x) for x in leaves]
    point, reduced = arrays[0], counterpart.reduction != "none"
    values = backend.evaluate(fn, arrays)
    if len(values) != 1 or values[0].shape != (() if reduced else point.shape):
        return {}
    params = [a.astype(np.float64) for a in arrays[1:]]
    if counterpart.weight is not None:
        params.append(np.asarray(counterpart.weight, dtype=np.float64))
    scale = 1.0 / point.size if counterpart.reduction == "mean" else 1.0
    ones = [np.ones_like(values[0])]
    first_only = [np.ones_like(point)] + [np.zeros_like(a) for a in arrays[1:]]
    found = {}
    for mode in modes:
        if mode == "value":
            observed, derivative = values[0], 0
        elif mode == "reverse":
            observed, derivative = backend.vjp(fn, arrays, ones)[1][0], 1
        elif mode == "forward":
            if reduced:
                continue
            observed, derivative = backend.jvp(fn, arrays, first_only)[1][0], 1
        else:  # the Hessian in the first input is diagonal: the VJP of its gradient with unit weights
            observed, derivative = backend.vjp(backend.derivative_function(fn, ones), arrays, first_only)[1][0], 2
        truth = scale * mpmath_truth(counterpart.fn, point.astype(np.float64), derivative, params)
        if mode == "value":
            truth = np.asarray(truth.sum()) if reduced else truth
            rtol = _allowance(VALUE_ULPS, dtype)
            agree, bound = compare_gradients(observed, truth, dtype, magnitude=np.abs(truth), rtol=rtol)
            agree |= ~np.isfinite(truth)
            worst = None if agree.all() else _entry(observed, truth, dtype, agree, bound)
        else:
            worst = worst_disagreement([[observed.reshape(-1, 1)]], [[truth.reshape(-1, 1)]], dtype, per_entry=True)
            if worst is not None:  # output element k (0 when reduced) depends on input element k
                worst["in_element"] = worst["out_element"]
                worst["out_element"] = 0 if reduced else worst["out_element"]
        found[mode] = worst
    return found


def _entry(observed, truth, dtype, agree, bound):
    seen, truth = np.ravel(observed).astype(np.float64), np.ravel(truth)
    flat = int(np.argmax(np.where(agree, -1.0, np.abs(seen - truth))))
    return dict(output=0, input=0, out_element=flat, in_element=flat, observed=float(seen[flat]),
                truth=float(truth[flat]), ulps=ulps(seen[flat], truth[flat], dtype),
                allowance=float(np.ravel(bound)[flat]))
