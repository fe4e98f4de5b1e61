"""The torch-shaped math of the engine: arithmetic with torch's options (``ge.add(alpha=)``, ``ge.div(rounding_mode=)``),
reductions with ``dim`` and ``keepdim``, and the functions composed of table ops (``var``, ``std``, ``norm``, ``erf``,
``expm1``, ``log2``, ``cumsum``, ``einsum`` ...), differentiable to any order as their ops are.
"""
from __future__ import annotations

import builtins
import functools
import math

import mpmath
import numpy as np

from . import functional as F
from .core import MODE, Tensor, _scalar_dtype, lift, promote
from .factories import bool_, dtype_arg, int64
from .shapes import MaxResult, along_axis, check_dims, unbind

__all__ = [
    "matmul", "relu", "softplus", "add", "sub", "div", "pow", "where", "clamp", "clip", "sum", "mean", "amax", "amin",
    "argmax", "argmin", "max", "min", "square", "any", "all", "var", "std", "norm", "softmax", "log_softmax", "isnan",
    "isfinite", "logical_not", "sign", "floor", "ceil", "round", "tan", "expm1", "sinh", "cosh", "rsqrt", "reciprocal",
    "log2", "log10", "erf", "mm", "bmm", "dot", "outer", "cumsum", "prod", "einsum",
]


# ---------------------------------------------------------------- elementwise
def matmul(input, other):
    """The matrix product (numpy.matmul's cases, as torch.matmul); operands of different dtypes are refused as torch
    refuses them."""
    if isinstance(input, Tensor) and isinstance(other, Tensor) and input.array.dtype != other.array.dtype:
        raise RuntimeError(f"matmul: expected both operands to have the same dtype, got {input.array.dtype} and "
                           f"{other.array.dtype}; convert one with .to(dtype)")
    return F.matmul(input, other)


def floating_only(x, name, error=RuntimeError):
    """``x``, which must be a floating tensor: torch refuses ``name`` on bool and integer tensors, with a
    RuntimeError (a NotImplementedError, its subclass, where torch has no kernel for them)."""
    if x.array.dtype.kind != "f":
        raise error(f"{name}: expected a floating-point tensor, got dtype {x.array.dtype} (torch refuses it too); "
                    "convert it first, e.g. with .float()")
    return x


def _as_dtype(x, dtype):
    """``x`` cast to ``dtype`` first, as torch's ``dtype=`` options do (None: as it is)."""
    dtype = dtype_arg(dtype)
    return x if dtype is None or dtype == x.dtype else F.astype(x, dtype=dtype)


def relu(x, inplace=False):
    """max(x, 0); with ``inplace``, written into x (``x.relu_()``) and returned, as torch."""
    return x.relu_() if inplace else F.relu(x)


def softplus(x, beta=1.0, threshold=None):
    """log(1 + exp(beta x)) / beta, and x itself where beta x > ``threshold``.

    torch switches at threshold 20 by default; the engine's default None keeps
    the exact value everywhere (they differ by less than exp(-20) relative).
    """
    scaled = x if beta == 1 else x * beta
    out = F.softplus(scaled) if beta == 1 else F.softplus(scaled) / beta
    return out if threshold is None else where(scaled > threshold, x, out)


def _scaled_second(op, doc):
    def combine(input, other, *, alpha=1):
        return op(input, other if alpha == 1 else other * alpha)

    combine.__doc__ = doc
    return combine


add = _scaled_second(F.add, "``input + alpha * other``.")
sub = _scaled_second(F.sub, "``input - alpha * other``.")


def div(input, other, *, rounding_mode=None):
    """``input / other``; with ``rounding_mode`` 'trunc' or 'floor' the quotient rounded toward 0 or down, as torch.

    The rounded quotient keeps the operands' promoted dtype and is not
    differentiable (torch gives it a zero gradient).
    """
    if rounding_mode is None:
        return F.div(input, other)
    if rounding_mode not in ("trunc", "floor"):
        raise ValueError(f"rounding_mode: expected None, 'trunc' or 'floor', got {rounding_mode!r}")
    like = input if isinstance(input, Tensor) else other
    dividend, divisor = (t.array for t in promote(lift(input, like), lift(other, like)))
    if dividend.dtype.kind != "f" and not np.all(divisor):
        raise ZeroDivisionError("div: integer division by zero")
    quotient = np.floor_divide(dividend, divisor)
    if rounding_mode == "trunc":
        if dividend.dtype.kind == "f":
            quotient = np.trunc(np.true_divide(dividend, divisor))
        else:
            # Below zero, an inexact floored quotient is one less than the truncated one.
            quotient = quotient + ((quotient < 0) & (quotient * divisor != dividend))
    return Tensor(quotient.astype(dividend.dtype, copy=False))


def pow(x, exponent):
    """``x ** exponent`` for a tensor or Python-number exponent.

    Integer tensors to negative integer tensor powers give torch's integers (the power truncated
    toward zero: 2 ** -1 is 0, -1 ** -1 is -1) where numpy raises.
    """
    if isinstance(exponent, Tensor):
        base, power = promote(lift(x, exponent), exponent)
        if base.array.dtype.kind in "iu" and np.any(power.array < 0):
            return Tensor(_integer_power(base.array, power.array))
        return F.pow(x, exponent)
    if not isinstance(x, Tensor):
        raise TypeError(f"pow: the base must be a Tensor when the exponent is a number, got {type(x).__name__}")
    if x.array.dtype.kind != "f":
        # The result has torch's dtype for tensor op number: int ** 0.5 is floating, bool ** 2 is int64.
        dtype = _scalar_dtype(exponent, x.array.dtype)
        if dtype.kind == "b":
            # bool ** bool: numpy has no boolean power (it gives int8), so through int64 and back.
            return F.astype(F.pow_scalar(F.astype(x, dtype=int64), exponent=int(exponent)), dtype=bool_)
        x = _as_dtype(x, dtype)
    return F.pow_scalar(x, exponent=exponent)


def _integer_power(base, power):
    """``base ** power`` for integer arrays, negative powers truncated toward zero (not differentiable)."""
    negative = power < 0
    result = np.power(base, np.where(negative, 0, power))
    at_negative = np.where(base == 1, 1, np.where(base == -1, np.where(power % 2 == 0, 1, -1), 0))
    return np.where(negative, at_negative, result).astype(result.dtype, copy=False)


def where(condition, input, other):
    """Elementwise ``input if condition else other``."""
    cond = condition.array if isinstance(condition, Tensor) else np.asarray(condition)
    if cond.dtype != np.bool_:
        raise TypeError(f"where: condition must be a boolean tensor, got dtype {cond.dtype}")
    # Promoted as a binary op's operands: a number or a 0-d tensor does not widen a tensor of its kind.
    like = input if isinstance(input, Tensor) else other if isinstance(other, Tensor) else Tensor(cond)
    return F.where(cond, *promote(lift(input, like), lift(other, like)))


def clamp(x, min=None, max=None):
    """Clip into ``[min, max]`` (either bound may be None, a number or a tensor), as torch.clamp.

    The input gets the gradient where it lies in the closed interval, a tensor bound where it
    replaced the input; with ``min > max`` the result is ``max``.  An integer tensor clamped to a
    float bound is floating.
    """
    if min is None and max is None:
        raise ValueError("clamp: at least one of min and max must be given")
    if x.array.dtype.kind != "f" and builtins.any(isinstance(b, (float, np.floating)) for b in (min, max)):
        x = F.astype(x, dtype=MODE.default_dtype)
    if isinstance(min, Tensor) or isinstance(max, Tensor):
        return _clamp_to_tensors(x, min, max)
    lo = -np.inf if min is None else min
    hi = np.inf if max is None else max
    return F.clip(x, lo=lo, hi=hi)


def _clamp_to_tensors(x, min, max):
    # Two selects give torch's clamp_backward_min_max: the input's gradient on [min, max], a bound's
    # where it was taken (and `max` everywhere when min > max).  `x < min` keeps a NaN input NaN.
    if min is not None:
        x = where(x.array < _array_of(min), min, x)
    if max is not None:
        x = where(x.array > _array_of(max), max, x)
    return x


def _array_of(bound):
    return bound.array if isinstance(bound, Tensor) else bound


clip = clamp


# ----------------------------------------------------------------- reductions
def _axis(dim, axis):
    if dim is not None and axis is not None:
        raise TypeError("pass dim or axis, not both")
    value = dim if dim is not None else axis
    if isinstance(value, (list, tuple)):
        # torch reads an empty dim list as every dim (numpy's axis=() reduces none).
        return tuple(value) or None
    return value


def reduction(name):
    """The torch-shaped function of the table's reduction ``name``: over ``dim`` (an int, a sequence, or None for
    every axis), keeping the reduced axes with ``keepdim`` (numpy's ``axis`` and ``keepdims`` also accepted)."""
    engine_op = getattr(F, name)

    @functools.wraps(engine_op)
    def reduce(x, dim=None, keepdim=False, *, axis=None, keepdims=None):
        keep = keepdim if keepdims is None else keepdims
        return engine_op(x, axis=_axis(dim, axis), keepdims=bool(keep))

    reduce.__doc__ = f"{name} over ``dim`` (all axes when None), keeping it with ``keepdim``."
    return reduce


def _casting_first(reduce):
    @functools.wraps(reduce)
    def cast_then_reduce(x, *args, dtype=None, **options):
        return reduce(_as_dtype(x, dtype), *args, **options)

    cast_then_reduce.__doc__ = reduce.__doc__ + "  ``dtype``: cast x to it first."
    return cast_then_reduce


sum = _casting_first(reduction("sum"))
_mean = _casting_first(reduction("mean"))


@functools.wraps(_mean)
def mean(x, *args, dtype=None, **options):
    return _mean(x if dtype is not None else floating_only(x, "mean"), *args, dtype=dtype, **options)


amax = reduction("amax")
amin = reduction("amin")


def _arg_extreme(numpy_arg):
    def arg(x, dim=None, keepdim=False):
        if x.ndim == 0:
            check_dims(x, () if dim is None else dim)
            return Tensor(np.zeros((), dtype=np.int64))
        return Tensor(np.asarray(numpy_arg(x.array, axis=dim, keepdims=bool(keepdim)), dtype=np.int64))

    arg.__doc__ = (
        "Index of the first extreme over ``dim`` (of the flattened tensor when None, then ``keepdim`` keeps every "
        "axis as size 1, as torch 2); not differentiable."
    )
    return arg


argmax = _arg_extreme(np.argmax)
argmin = _arg_extreme(np.argmin)


def _extreme(reducer, arg, elementwise):
    def pick(x, dim=None, keepdim=False):
        if isinstance(dim, Tensor):
            return elementwise(x, dim)
        if dim is None:
            return reducer(x)
        if x.ndim == 0:
            return MaxResult(reducer(x, dim, keepdim), arg(x, dim, keepdim))
        indices = arg(x, dim, True).array
        # The values are gathered at the returned indices, so on ties the gradient goes to the
        # index reported, as in torch (amax would split it).
        values = F.getitem(x, index=along_axis(indices, dim))
        if not keepdim:
            indices = np.squeeze(indices, dim)
            values = F.reshape(values, shape=indices.shape)
        return MaxResult(values, Tensor(indices))

    pick.__doc__ = (
        "With ``dim``: (values, indices), as torch; with a tensor ``other`` in its place: the elementwise extreme; "
        "with neither: the overall extreme (ties share its gradient)."
    )
    return pick


max = _extreme(amax, argmax, F.maximum)
min = _extreme(amin, argmin, F.minimum)


def square(x):
    """``x * x`` (booleans square to int64, as torch's)."""
    if x.array.dtype.kind == "b":
        x = F.astype(x, dtype=int64)
    return x * x


def _truth_reduction(numpy_reduce, doc):
    def reduce(x, dim=None, keepdim=False):
        return Tensor(numpy_reduce(x.array, axis=_axis(dim, None), keepdims=bool(keepdim)))

    reduce.__doc__ = doc
    return reduce


any = _truth_reduction(np.any, "Whether any element over ``dim`` (all axes when None) is true, as a bool tensor.")
all = _truth_reduction(np.all, "Whether every element over ``dim`` (all axes when None) is true, as a bool tensor.")


def var(x, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """Variance over ``dim`` (all axes when None) with Bessel's correction by default, as torch.var."""
    if unbiased is not None and correction is not None:
        raise TypeError("var: pass unbiased or correction, not both")
    floating_only(x, "std and var")
    correction = (1 if unbiased is None or unbiased else 0) if correction is None else correction
    axis = _axis(dim, None)
    check_dims(x, () if axis is None else axis)
    count = x.array.size if axis is None or x.ndim == 0 else math.prod(x.shape[a] for a in np.atleast_1d(axis))
    centred = x - F.mean(x, axis=axis, keepdims=True)
    # As torch: no fewer than 0 degrees of freedom, so too few entries give inf or nan.
    # (max, min, sum and abs are the engine's in this module: plain arithmetic here.)
    return F.sum(centred * centred, axis=axis, keepdims=bool(keepdim)) / float(builtins.max(count - correction, 0))


def std(x, dim=None, unbiased=None, keepdim=False, *, correction=None):
    """Standard deviation: the square root of :func:`var` (gradient 0 where it is 0, as torch)."""
    return _sqrt_of_square_sum(var(x, dim, unbiased, keepdim, correction=correction))


def _sqrt_of_square_sum(s):
    # sqrt(s) for a sum of squares s >= 0, whose gradient is 0 where s = 0 (torch's norm and std
    # backward), not 0 * inf = NaN: the select sends no cotangent into sqrt's pole.  (A NaN s, the
    # variance of nothing, stays NaN.)
    zero = s.array == 0
    return F.where(zero, 0.0, F.sqrt(F.where(zero, 1.0, s)))


def norm(x, p=2, dim=None, keepdim=False):
    """The p-norm over ``dim`` (all elements when None) for p = 1 or 2, as torch.norm / torch.linalg.vector_norm."""
    floating_only(x, "norm")
    axis = _axis(dim, None)
    if p == 1:
        return F.sum(F.abs(x), axis=axis, keepdims=bool(keepdim))
    if p == 2:
        return _sqrt_of_square_sum(F.sum(x * x, axis=axis, keepdims=bool(keepdim)))
    raise ValueError(f"norm: p must be 1 or 2, got {p!r}")


def softmax(x, dim=-1, dtype=None):
    """softmax over ``dim`` (of x cast to ``dtype`` first when given)."""
    x = floating_only(x, "softmax", NotImplementedError) if dtype is None else _as_dtype(x, dtype)
    return F.softmax(x, axis=dim)


def log_softmax(x, dim=-1, dtype=None):
    """log_softmax over ``dim`` (of x cast to ``dtype`` first when given)."""
    x = floating_only(x, "log_softmax", NotImplementedError) if dtype is None else _as_dtype(x, dtype)
    return F.log_softmax(x, axis=dim)


# ----------------------------------------------------------- more elementwise
def _constant_result(numpy_function, doc):
    def function(x):
        return Tensor(numpy_function(x.array))

    function.__doc__ = doc
    return function


isnan = _constant_result(np.isnan, "Where ``x`` is NaN, as a bool tensor.")
isfinite = _constant_result(np.isfinite, "Where ``x`` is neither infinite nor NaN, as a bool tensor.")
logical_not = _constant_result(np.logical_not, "Where ``x`` is zero (false), as a bool tensor.")


def _zero_gradient(numpy_function, doc):
    def function(x):
        values = Tensor(numpy_function(x.array).astype(x.dtype, copy=False))
        if not (x.requires_grad or x._tangent is not None):
            return values
        # Selected entirely from the constant: recorded, with a zero derivative, as torch's.
        return F.where(np.ones(x.shape, dtype=bool), values, x)

    function.__doc__ = doc
    return function


sign = _zero_gradient(lambda a: a.copy() if a.dtype.kind == "b" else np.sign(a),
                      "-1, 0 or 1 by the sign of ``x`` (a bool is its own sign; zero gradient, as torch).")
floor = _zero_gradient(np.floor, "``x`` rounded down (zero gradient, as torch).")
ceil = _zero_gradient(np.ceil, "``x`` rounded up (zero gradient, as torch).")
round = _zero_gradient(np.round, "``x`` rounded to the nearest integer, halves to even (zero gradient, as torch).")


def _floating(x):
    """``x`` itself if floating, else cast to the default dtype (as torch's unary float functions)."""
    return x if x.array.dtype.kind == "f" else F.astype(x, dtype=MODE.default_dtype)


def tan(x):
    """sin(x) / cos(x)."""
    x = _floating(x)
    return F.sin(x) / F.cos(x)


def _near_zero_or_not(x, bound, near, far):
    """``near(x)`` where ``|x| < bound``, else ``far(x)``; each is fed a harmless value where it is not used.

    (Where a branch is not taken its cotangent is 0, but a 0 times an infinite
    derivative would still be NaN.)
    """
    small = np.abs(x.array) < bound
    return F.where(small, near(F.where(small, x, 0.0)), far(F.where(small, bound, x)))


def expm1(x):
    """exp(x) - 1, accurate near 0: 2t / (1 - t) with t = tanh(x / 2) there, exp(x) - 1 elsewhere."""
    x = _floating(x)

    def near_zero(v):
        half_tanh = F.tanh(v * 0.5)
        return 2.0 * half_tanh / (1.0 - half_tanh)

    return _near_zero_or_not(x, 0.5, near_zero, lambda v: F.exp(v) - 1.0)


def sinh(x):
    """(exp(x) - exp(-x)) / 2, accurate near 0: 2t / (1 - t^2) with t = tanh(x / 2) there."""
    x = _floating(x)

    def near_zero(v):
        half_tanh = F.tanh(v * 0.5)
        return 2.0 * half_tanh / (1.0 - half_tanh * half_tanh)

    return _near_zero_or_not(x, 1.0, near_zero, lambda v: (F.exp(v) - F.exp(-v)) * 0.5)


def cosh(x):
    """1 + 2 sinh(x / 2)^2: (exp(x) + exp(-x)) / 2 with a derivative accurate near 0."""
    half_sinh = sinh(_floating(x) * 0.5)
    return 1.0 + 2.0 * half_sinh * half_sinh


def rsqrt(x):
    """1 / sqrt(x)."""
    return 1.0 / F.sqrt(_floating(x))


def reciprocal(x):
    """1 / x (floating for an integer x, as torch)."""
    return 1.0 / _floating(x)


def log2(x):
    """log(x) / log(2), exact at powers of two: x = m 2^e with m in [0.5, 1), so log2 x = e + log(m) / log(2)."""
    x = _floating(x)
    _, exponent = np.frexp(x.array)
    mantissa = x * np.ldexp(np.ones((), x.dtype), -exponent)
    return F.log(mantissa) / math.log(2) + exponent.astype(x.dtype)


def log10(x):
    """Base-10 logarithm: numpy's values (exact at powers of ten), log's gradient divided by ln 10."""
    x = _floating(x)
    values = Tensor(np.log10(x.array))
    if not (x.requires_grad or x._tangent is not None):
        return values
    differentiable = F.log(x) / math.log(10)
    # Adds exactly 0 to the values and carries the gradient (as remainder does).
    return values + (differentiable - differentiable.detach())


_ERFC_DEGREE = 26
# Beyond |x| = 40, erfc underflows (below 1e-600) in every dtype: the input is clamped there, so an infinite x
# gives erf = ±1 with gradient 0, not NaN.
_ERF_SATURATION = 40.0
# erf(x) = 2 / sqrt(pi) * x * sum_n (-1)^n x^(2n) / (n! (2n + 1)); 13 terms reach 1e-17 relative for |x| < 0.5.
_ERF_SERIES = tuple((-1) ** n / (math.factorial(n) * (2 * n + 1)) for n in range(13))


@functools.cache
def _erfc_chebyshev_coefficients():
    """Chebyshev coefficients in ``y = (2 - z) / (2 + z)`` of ``log(erfc(z) / t) + z^2``, ``t = 2 / (2 + z)``,
    interpolated from mpmath at 40 digits (the Numerical Recipes form of erfc for z >= 0; smooth on [-1, 1])."""
    with mpmath.workdps(40):
        def exponent(y):
            t = (mpmath.mpf(y) + 1) / 2
            z = 2 / t - 2
            return builtins.float(mpmath.log(mpmath.erfc(z) / t) + z * z)

        nodes = np.cos(np.pi * (np.arange(_ERFC_DEGREE + 1) + 0.5) / (_ERFC_DEGREE + 1))
        return np.polynomial.chebyshev.chebfit(nodes, [exponent(y) for y in nodes], _ERFC_DEGREE).tolist()


def _erfc_of_nonnegative(z):
    """erfc(z) for z >= 0, to about 1e-15 relative, composed of differentiable engine ops (Clenshaw's recurrence)."""
    y = (2 - z) / (2 + z)
    coefficients = _erfc_chebyshev_coefficients()
    later, latest = 0.0, 0.0
    for c in reversed(coefficients[1:]):
        later, latest = latest, c + 2 * y * latest - later
    exponent = coefficients[0] + y * latest - later
    return 2 / (2 + z) * F.exp(exponent - z * z)


def erf(x):
    """The error function ``2 / sqrt(pi) * integral of exp(-t^2) from 0 to x``, as torch.erf (floating for integers).

    Composed of table ops (the table has no erf), so it differentiates to any order in both modes: a Maclaurin
    series for ``|x| < 0.5`` (exact at 0, accurate relative to a tiny x), ``±(1 - erfc(|x|))`` elsewhere.
    """
    return _near_zero_or_not(_floating(x), 0.5, _erf_series, _erf_beyond_half)


def _erf_series(x):
    square = x * x
    total = _ERF_SERIES[-1]
    for coefficient in reversed(_ERF_SERIES[:-1]):
        total = total * square + coefficient
    return (2 / math.sqrt(math.pi)) * x * total


def _erf_beyond_half(x):
    complement = _erfc_of_nonnegative(clamp(F.abs(x), max=_ERF_SATURATION))
    return F.where(x.array >= 0, 1 - complement, complement - 1)


# ------------------------------------------------------------------- products
def _check_rank(x, rank, name, argname):
    if not isinstance(x, Tensor) or x.ndim != rank:
        got = f"shape {x.shape}" if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name}: {argname} must be a {rank}-d tensor, got {got}")


def _product_of_ranks(name, rank):
    def product(input, other):
        _check_rank(input, rank, name, "input")
        _check_rank(other, rank, name, "other")
        return matmul(input, other)

    product.__name__ = name
    product.__doc__ = f"The product of two {rank}-d tensors (as torch.{name})."
    return product


mm = _product_of_ranks("mm", 2)
bmm = _product_of_ranks("bmm", 3)
dot = _product_of_ranks("dot", 1)


def outer(input, vec2):
    """The outer product of two vectors: ``input[i] * vec2[j]``."""
    _check_rank(input, 1, "outer", "input")
    _check_rank(vec2, 1, "outer", "vec2")
    return F.unsqueeze(input, 1) * F.unsqueeze(vec2, 0)


def _summing_dtype(x, dtype):
    """As torch's sum-like ops: ``dtype`` if given, else integers and bools widen to int64."""
    x = _as_dtype(x, dtype)
    return F.astype(x, dtype=int64) if x.array.dtype.kind in "biu" and x.array.dtype != int64 else x


def cumsum(x, dim, dtype=None):
    """Running sums along ``dim``: a product with the constant upper-triangular matrix of ones."""
    x = _summing_dtype(x, dtype)
    if x.ndim == 0:
        check_dims(x, dim)
        return x
    moved = F.swapaxes(x, dim, -1)
    upper = Tensor(np.triu(np.ones((x.shape[dim],) * 2, dtype=x.dtype)))
    return F.swapaxes(F.matmul(moved, upper), dim, -1)


def prod(x, dim=None, keepdim=False, dtype=None):
    """The product over ``dim`` (all elements when None), as a chain of multiplications (right at zeros)."""
    x = _summing_dtype(x, dtype)
    if dim is None:
        x, dim = F.reshape(x, shape=(-1,)), 0
    if x.ndim == 0:
        check_dims(x, dim)
        return x
    factors = unbind(x, dim)
    out = functools.reduce(lambda a, b: a * b, factors) if factors else Tensor(
        np.ones(x.shape[:dim % x.ndim] + x.shape[dim % x.ndim + 1:], dtype=x.dtype))
    return F.unsqueeze(out, dim % x.ndim) if keepdim else out


def einsum(equation, *operands):
    """Einstein summation, as torch.einsum (``'ij,jk->ik'``; without ``->`` the letters seen once, in order).

    Composed as the broadcast product of the operands summed over the letters
    not kept, so it holds every combination of letters at once (memory as the
    product of all sizes).  Each letter names one axis of an operand: no
    ``...`` and no letter twice in one operand (diagonals).
    """
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    inputs, arrow, output = equation.replace(" ", "").partition("->")
    terms = inputs.split(",")
    if len(terms) != len(operands) or not builtins.all(isinstance(x, Tensor) for x in operands):
        raise ValueError(f"operands: the equation {equation!r} names {len(terms)} tensors, got {len(operands)} operands")
    for term, x in zip(terms, operands):
        if not (term.isalpha() or term == "") or len(set(term)) != len(term) or len(term) != x.ndim:
            raise ValueError(f"equation: {term!r} must give each of the {x.ndim} axes of its operand (shape {x.shape}) "
                             "a distinct letter ('...' and repeated letters are not supported)")
    seen = "".join(terms)
    if not arrow:
        output = "".join(sorted(letter for letter in set(seen) if seen.count(letter) == 1))
    if len(set(output)) != len(output) or not set(output) <= set(seen):
        raise ValueError(f"equation: the output {output!r} must name distinct letters of the inputs")
    letters = output + "".join(sorted(set(seen) - set(output)))
    aligned = []
    for term, x in zip(terms, operands):
        present = sorted(term, key=letters.index)
        moved = F.permute(x, axes=tuple(term.index(letter) for letter in present)) if term else x
        shape = tuple(x.shape[term.index(letter)] if letter in term else 1 for letter in letters)
        aligned.append(F.reshape(moved, shape=shape))
    product = functools.reduce(lambda a, b: a * b, aligned)
    summed = tuple(range(len(output), len(letters)))
    return F.sum(product, axis=summed) if summed else product
