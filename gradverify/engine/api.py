"""The torch-shaped functions of the engine (``ge.exp``, ``ge.sum(x, dim=...)``, ``ge.tensor`` ...)."""
from __future__ import annotations

import builtins
import contextlib
import functools
import math
from collections import namedtuple

import mpmath
import numpy as np

from . import functional as F
from .devices import CPU, backends, check_device, cuda, device, get_default_device, set_default_device  # noqa: F401
from .factories import (  # noqa: F401
    arange, as_tensor, bool_, double, dtype_arg, empty, empty_like, eye, float32, float64, from_numpy, full, full_like,
    LongTensor, get_default_dtype, int32, int64, linspace, long, multinomial, normal, ones, ones_like, rand, rand_like, randint,
    randn, randn_like, randperm, set_default_dtype, size_arg, tensor, zeros, zeros_like,
)
from .random import Generator, initial_seed, manual_seed, seed  # noqa: F401
from .core import MODE, Tensor, _scalar_dtype, lift, promote, promote_all

__all__ = [
    "float32", "float64", "double", "int64", "long", "int32", "bool_", "tensor", "as_tensor", "from_numpy", "set_default_dtype",
    "get_default_dtype", "manual_seed", "zeros", "ones", "randn", "rand", "zeros_like", "ones_like", "randn_like",
    "arange", "empty", "full", "eye", "linspace", "argmax", "argmin", "any", "all", "allclose", "square", "var", "std", "norm", "is_grad_enabled", "no_grad", "enable_grad", "exp", "log", "log1p", "sqrt", "sin", "cos", "tanh",
    "sigmoid", "relu", "abs", "neg", "softplus", "maximum", "minimum", "matmul", "add", "sub", "mul", "div", "pow",
    "where", "clamp", "clip", "sum", "mean", "amax", "amin", "logsumexp", "max", "min", "reshape", "permute",
    "transpose", "broadcast_to", "unsqueeze", "squeeze", "flatten", "cat", "concatenate", "stack", "softmax",
    "log_softmax", "is_tensor", "numel", "clone", "detach", "set_grad_enabled", "inference_mode", "full_like",
    "empty_like", "randint", "randperm", "isnan", "isfinite", "logical_not", "sign", "floor", "ceil", "round", "tan",
    "expm1", "sinh", "cosh", "rsqrt", "reciprocal", "log2", "mm", "bmm", "dot", "outer", "hstack", "vstack",
    "swapaxes", "movedim", "flip", "gather", "index_select", "unbind", "split", "chunk", "masked_fill", "roll", "tril", "triu",
    "cumsum", "prod", "sort", "argsort", "topk", "device", "einsum", "erf", "save", "load", "Generator", "seed",
    "initial_seed", "normal", "multinomial", "rand_like", "cuda", "backends", "set_default_device", "get_default_device",
    "log10", "LongTensor",
]

MaxResult = namedtuple("MaxResult", ["values", "indices"])


def allclose(a, b, rtol=1e-05, atol=1e-08, equal_nan=False):
    """Whether every element of ``a`` is within ``atol + rtol * |b|`` of ``b`` (torch.allclose)."""
    return bool(np.allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol, equal_nan=equal_nan))


def is_grad_enabled():
    return MODE.grad_enabled


class _GradMode(contextlib.ContextDecorator):
    def __init__(self, enabled):
        self.enabled = enabled

    def __enter__(self):
        self.saved = MODE.grad_enabled
        MODE.grad_enabled = self.enabled

    def __exit__(self, *exc):
        MODE.grad_enabled = self.saved
        return False


def no_grad():
    """Context manager and decorator: ops inside record no graph."""
    return _GradMode(False)


def enable_grad():
    """Context manager and decorator: re-enable graph recording."""
    return _GradMode(True)


# ---------------------------------------------------------------- elementwise
exp, log, log1p, sqrt = F.exp, F.log, F.log1p, F.sqrt
sin, cos, tanh, sigmoid, abs, neg = F.sin, F.cos, F.tanh, F.sigmoid, F.abs, F.neg
maximum, minimum, mul = F.maximum, F.minimum, F.mul


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


def _reduction(name):
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


sum = _casting_first(_reduction("sum"))
_mean = _casting_first(_reduction("mean"))


@functools.wraps(_mean)
def mean(x, *args, dtype=None, **options):
    return _mean(x if dtype is not None else floating_only(x, "mean"), *args, dtype=dtype, **options)
amax = _reduction("amax")
amin = _reduction("amin")
logsumexp = _reduction("logsumexp")


def _check_dims(x, dims):
    """Raise unless every dim of ``dims`` names an axis of ``x``; a 0-d tensor has dim 0 (and -1), as in torch."""
    rank = builtins.max(x.ndim, 1)
    if not builtins.all(-rank <= d < rank for d in np.atleast_1d(dims)):
        raise IndexError(f"dim: expected dims in [{-rank}, {rank}) for a tensor of shape {x.shape}, got {dims!r}")


def _arg_extreme(numpy_arg):
    def arg(x, dim=None, keepdim=False):
        if x.ndim == 0:
            _check_dims(x, () if dim is None else dim)
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
        values = F.getitem(x, index=_along_axis(indices, dim))
        if not keepdim:
            indices = np.squeeze(indices, dim)
            values = F.reshape(values, shape=indices.shape)
        return MaxResult(values, Tensor(indices))

    pick.__doc__ = (
        "With ``dim``: (values, indices), as torch; with a tensor ``other`` in its place: the elementwise extreme; "
        "with neither: the overall extreme (ties share its gradient)."
    )
    return pick


def _along_axis(indices, dim):
    """The integer-array index that picks ``indices`` (with keepdim's shape) along ``dim``, as take_along_axis."""
    grids = list(np.ogrid[tuple(slice(n) for n in indices.shape)])
    grids[dim] = indices
    return tuple(grids)


max = _extreme(amax, argmax, maximum)
min = _extreme(amin, argmin, minimum)


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
    _check_dims(x, () if axis is None else axis)
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


# ------------------------------------------------------------------ shape ops
def _shape_arg(shape, x):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return tuple(int(s) for s in shape)


def reshape(x, *shape):
    return F.reshape(x, shape=_shape_arg(shape, x))


def permute(x, *dims):
    return F.permute(x, axes=_shape_arg(dims, x))


def transpose(x, dim0, dim1):
    return F.swapaxes(x, dim0, dim1)


def broadcast_to(x, shape):
    """``x`` broadcast to ``shape``; a -1 entry keeps that dim's size, as torch."""
    shape = tuple(int(s) for s in shape)
    lead = len(shape) - x.ndim
    for i, size in enumerate(shape[:lead]):
        if size == -1:
            raise ValueError(f"shape: -1 is not allowed in a new leading dim ({i}) of {shape}")
    return F.broadcast_to(x, shape=tuple(x.shape[i - lead] if s == -1 else s for i, s in enumerate(shape)))


def unsqueeze(x, dim):
    return F.unsqueeze(x, dim)


def squeeze(x, dim=None):
    """Remove the size-1 axes: all of them, or those among ``dim`` (an int or a tuple); other dims stay, as torch."""
    if dim is None:
        return F.squeeze(x, None)
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    _check_dims(x, dims)
    if x.ndim == 0:
        return F.squeeze(x, None)
    return F.squeeze(x, tuple(d for d in dims if x.shape[d] == 1))


def flatten(x, start_dim=0, end_dim=-1):
    """Merge axes ``start_dim`` .. ``end_dim`` into one."""
    if x.ndim == 0:
        return F.reshape(x, shape=(1,))
    start, end = start_dim % x.ndim, end_dim % x.ndim
    shape = x.shape[:start] + (-1,) + x.shape[end + 1 :]
    return F.reshape(x, shape=shape)


def _joined(tensors, name):
    """The tensors a join takes, cast to one dtype as torch casts them."""
    tensors = list(tensors)
    if not tensors or not builtins.all(isinstance(t, Tensor) for t in tensors):
        raise TypeError(f"{name}: tensors must be a non-empty sequence of Tensors, got {tensors!r}")
    return promote_all(tensors)


def cat(tensors, dim=0):
    """Concatenate a sequence of tensors along ``dim``.

    As torch, legacy empty 1-D tensors (shape ``(0,)``) take part in dtype promotion but are
    skipped when the others have more dims.
    """
    joined = _joined(tensors, "cat")
    kept = [t for t in joined if t.shape != (0,)]
    if kept and builtins.any(t.ndim > 1 for t in kept):
        joined = kept
    return F.concatenate(*joined, axis=dim)


concatenate = cat


def stack(tensors, dim=0):
    """Stack a sequence of same-shape tensors along a new axis ``dim``."""
    return F.stack(*_joined(tensors, "stack"), axis=dim)


def softmax(x, dim=-1, dtype=None):
    """softmax over ``dim`` (of x cast to ``dtype`` first when given)."""
    x = floating_only(x, "softmax", NotImplementedError) if dtype is None else _as_dtype(x, dtype)
    return F.softmax(x, axis=dim)


def log_softmax(x, dim=-1, dtype=None):
    """log_softmax over ``dim`` (of x cast to ``dtype`` first when given)."""
    x = floating_only(x, "log_softmax", NotImplementedError) if dtype is None else _as_dtype(x, dtype)
    return F.log_softmax(x, axis=dim)


# ------------------------------------------------------- tensors and switches
def is_tensor(obj):
    """Whether ``obj`` is an engine tensor."""
    return isinstance(obj, Tensor)


def numel(x):
    """The number of elements of ``x``."""
    return int(x.array.size)


def clone(x):
    """A differentiable copy of ``x``."""
    return x.clone()


def detach(x):
    """``x``'s values cut from the graph (shared memory)."""
    return x.detach()


class set_grad_enabled(_GradMode):
    """Switch graph recording on or off: at once when called, for a block as a context manager, or for a function.

    As torch: the call itself sets the mode; leaving the block (or the
    decorated function) restores the mode from before.
    """

    def __init__(self, mode):
        if not isinstance(mode, (bool, np.bool_)):
            raise TypeError(f"mode: expected True or False, got {mode!r}")
        super().__init__(bool(mode))
        self.saved = MODE.grad_enabled
        MODE.grad_enabled = self.enabled

    def __enter__(self):
        MODE.grad_enabled = self.enabled

    def __call__(self, function):
        # Decorating is no switch: the mode goes back, and each call of the function switches anew.
        MODE.grad_enabled = self.saved
        return super().__call__(function)

    def _recreate_cm(self):
        return set_grad_enabled(self.enabled)


def inference_mode(mode=True):
    """As :func:`no_grad` (with ``mode=False``: no change); the engine has no separate inference tensors."""
    return _GradMode(False if mode else MODE.grad_enabled)


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


Tensor.erf = erf


# ------------------------------------------------------------ products, joins
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


def hstack(tensors):
    """Concatenate along dim 1 (dim 0 for vectors)."""
    tensors = _joined(tensors, "hstack")
    return F.concatenate(*tensors, axis=0 if tensors[0].ndim == 1 else 1)


def vstack(tensors):
    """Concatenate along dim 0, vectors taken as rows."""
    tensors = [F.reshape(t, shape=(1, -1)) if t.ndim < 2 else t for t in _joined(tensors, "vstack")]
    return F.concatenate(*tensors, axis=0)


def swapaxes(x, axis0, axis1):
    """Exchange two axes."""
    return F.swapaxes(x, axis0, axis1)


def movedim(x, source, destination):
    """Move axes ``source`` to positions ``destination`` (ints or sequences of ints), the others keeping their order."""
    sources, destinations = np.atleast_1d(source), np.atleast_1d(destination)
    if len(sources) != len(destinations):
        raise ValueError(f"movedim: source and destination must name as many dims, got {source!r} and {destination!r}")
    _check_dims(x, sources)
    _check_dims(x, destinations)
    rank = builtins.max(x.ndim, 1)
    sources, destinations = [int(d) % rank for d in sources], [int(d) % rank for d in destinations]
    order = [axis for axis in range(x.ndim) if axis not in sources]
    for position, axis in sorted(zip(destinations, sources)):
        order.insert(position, axis)
    return F.permute(x, axes=tuple(order))


# ------------------------------------------------------ selections and pieces
def _dim_index(x, dim, index):
    """The getitem index that applies ``index`` along ``dim`` and takes every other axis whole."""
    _check_dims(x, dim)
    return (slice(None),) * (dim % x.ndim) + (index,)


def _index_array(index, argname):
    array = index.array if isinstance(index, Tensor) else np.asarray(index)
    if array.dtype.kind not in "iu":
        raise TypeError(f"{argname}: expected an integer tensor, got dtype {array.dtype}")
    return array


def flip(x, dims):
    """``x`` reversed along each of ``dims``."""
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    _check_dims(x, dims)
    index = [slice(None)] * x.ndim
    for d in dims:
        index[d] = slice(None, None, -1)
    return F.getitem(x, index=tuple(index))


def gather(x, dim, index):
    """``out[i][j][k] = x[index[i][j][k]][j][k]`` for dim 0 (and so on), as torch.gather."""
    indices = _index_array(index, "index")
    if indices.ndim != x.ndim:
        raise ValueError(f"gather: index must have as many dims as the input ({x.ndim}), got shape {indices.shape}")
    _check_dims(x, dim)
    return F.getitem(x, index=_along_axis(indices, dim))


def index_select(x, dim, index):
    """The entries of ``x`` at the positions ``index`` (a vector) along ``dim``."""
    indices = _index_array(index, "index")
    if indices.ndim > 1:
        raise ValueError(f"index_select: index must be a vector, got shape {indices.shape}")
    return F.getitem(x, index=_dim_index(x, dim, indices.reshape(-1)))


def roll(x, shifts, dims=None):
    """``x`` with its entries shifted by ``shifts`` along ``dims``, wrapping around, as torch.roll.

    With ``dims`` None the flattened tensor rolls and keeps its shape.
    """
    shifts = (shifts,) if isinstance(shifts, int) else tuple(shifts)
    if dims is None:
        if len(shifts) != 1:
            raise ValueError(f"shifts: expected one shift when dims is None, got {shifts}")
        return F.reshape(roll(flatten(x), shifts, 0), shape=x.shape)
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    if len(shifts) != len(dims):
        raise ValueError(f"shifts: expected one shift per dim, got {len(shifts)} shifts for dims {dims}")
    for shift, dim in zip(shifts, dims):
        size = x.shape[dim]
        if size:
            x = index_select(x, dim, (np.arange(size) - shift) % size)
    return x


def unbind(x, dim=0):
    """The slices of ``x`` along ``dim``, as a tuple."""
    return tuple(F.getitem(x, index=_dim_index(x, dim, i)) for i in range(x.shape[dim]))


def split(x, split_size_or_sections, dim=0):
    """Pieces of ``x`` along ``dim``: of ``split_size`` each (the last may be shorter), or of the listed sizes."""
    _check_dims(x, dim)
    length = x.shape[dim]
    if isinstance(split_size_or_sections, (int, np.integer)):
        if split_size_or_sections <= 0:
            raise ValueError(f"split_size_or_sections: expected a positive size, got {split_size_or_sections}")
        sizes = [builtins.min(split_size_or_sections, length - start)
                 for start in range(0, length, int(split_size_or_sections))] or [0]
    else:
        sizes = [int(s) for s in split_size_or_sections]
        if builtins.sum(sizes) != length:
            raise ValueError(f"split_size_or_sections: the sizes {sizes} must add up to {length}, the size of dim {dim}")
    ends = np.cumsum(sizes)
    return tuple(F.getitem(x, index=_dim_index(x, dim, slice(int(end - size), int(end))))
                 for size, end in zip(sizes, ends))


def chunk(x, chunks, dim=0):
    """``x`` split along ``dim`` into at most ``chunks`` pieces of ceil(size / chunks) each."""
    if not isinstance(chunks, (int, np.integer)) or chunks <= 0:
        raise ValueError(f"chunks: expected a positive number of pieces, got {chunks!r}")
    _check_dims(x, dim)
    return split(x, builtins.max(-(-x.shape[dim] // chunks), 1), dim)


def masked_fill(x, mask, value):
    """``x`` with ``value`` (a number or a 0-d tensor) where the bool ``mask`` is true; keeps ``x``'s dtype."""
    value = F.astype(value, dtype=x.dtype) if isinstance(value, Tensor) and value.dtype != x.dtype else value
    if not isinstance(value, Tensor):
        value = Tensor(np.asarray(value, dtype=x.dtype))
    condition = mask.array if isinstance(mask, Tensor) else np.asarray(mask)
    if condition.dtype != np.bool_:
        raise TypeError(f"mask: expected a bool tensor, got dtype {condition.dtype}")
    if np.broadcast_shapes(condition.shape, x.shape) != x.shape:
        raise ValueError(f"mask: shape {condition.shape} does not broadcast to the input's {x.shape}")
    return F.where(condition, value, x)


def _triangle(keep_lower):
    def triangle(x, diagonal=0):
        if x.ndim < 2:
            raise ValueError(f"x: expected a tensor of at least 2 dims, got shape {x.shape}")
        lower = np.tri(*x.shape[-2:], k=diagonal if keep_lower else diagonal - 1, dtype=bool)
        return F.where(lower if keep_lower else ~lower, x, Tensor(np.zeros((), dtype=x.dtype)))

    side = "on and below" if keep_lower else "on and above"
    triangle.__doc__ = f"The last two dims of ``x`` with zeros except {side} the ``diagonal``-th diagonal."
    return triangle


tril = _triangle(True)
triu = _triangle(False)


def _summing_dtype(x, dtype):
    """As torch's sum-like ops: ``dtype`` if given, else integers and bools widen to int64."""
    x = _as_dtype(x, dtype)
    return F.astype(x, dtype=int64) if x.array.dtype.kind in "biu" and x.array.dtype != int64 else x


def cumsum(x, dim, dtype=None):
    """Running sums along ``dim``: a product with the constant upper-triangular matrix of ones."""
    x = _summing_dtype(x, dtype)
    if x.ndim == 0:
        _check_dims(x, dim)
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
        _check_dims(x, dim)
        return x
    factors = unbind(x, dim)
    out = functools.reduce(lambda a, b: a * b, factors) if factors else Tensor(
        np.ones(x.shape[:dim % x.ndim] + x.shape[dim % x.ndim + 1:], dtype=x.dtype))
    return F.unsqueeze(out, dim % x.ndim) if keepdim else out


SortResult = MaxResult  # the same (values, indices) pair


def sort(x, dim=-1, descending=False, stable=False):
    """(values, indices) along ``dim``, ascending unless ``descending``; the values are differentiable."""
    indices = argsort(x, dim, descending, stable).array
    if x.ndim == 0:
        return SortResult(x, Tensor(indices))
    return SortResult(F.getitem(x, index=_along_axis(indices, dim)), Tensor(indices))


def argsort(x, dim=-1, descending=False, stable=False):
    """The indices that sort ``x`` along ``dim`` (ties in order of position, or reversed when ``descending``)."""
    _check_dims(x, dim)
    if x.ndim == 0:
        return Tensor(np.zeros((), dtype=np.int64))
    indices = np.argsort(x.array, axis=dim, kind="stable")
    return Tensor(np.flip(indices, dim).copy() if descending else indices)


def topk(x, k, dim=-1, largest=True, sorted=True):
    """The ``k`` largest (or smallest) entries along ``dim`` and their indices, largest first."""
    _check_dims(x, dim)
    length = x.shape[dim] if x.ndim else 1
    if not 0 <= k <= length:
        raise ValueError(f"k: expected 0 <= k <= {length}, the size of dim {dim}, got {k}")
    values, indices = sort(x, dim, descending=largest)
    if x.ndim == 0:
        return SortResult(values, indices)
    first = _dim_index(x, dim, slice(0, k))
    return SortResult(F.getitem(values, index=first), Tensor(indices.array[first]))


def repeat(x, *sizes):
    """``x`` tiled ``sizes[i]`` times along each dim (leading sizes add dims), as torch.Tensor.repeat."""
    sizes = _shape_arg(sizes, x)
    if len(sizes) < x.ndim:
        raise ValueError(f"sizes: expected at least {x.ndim} repeats (one per dim), got {sizes}")
    shape = (1,) * (len(sizes) - x.ndim) + x.shape
    interleaved = tuple(n for size in shape for n in (1, size))
    tiled = tuple(n for repeats, size in zip(sizes, shape) for n in (repeats, size))
    spread = F.broadcast_to(F.reshape(x, shape=interleaved), shape=tiled)
    return F.reshape(spread, shape=tuple(r * s for r, s in zip(sizes, shape)))


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


# Last: serialization builds on this module (through nn), which must be complete when it is imported.
from .serialization import load, save  # noqa: E402
