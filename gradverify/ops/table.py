"""The op table: every op of the engine, declared once.

Each entry gives the numpy forward, the VJP rule, the JVP rule unless it
follows from the VJP (elementwise ops) or the op is linear, the domain of
each input, where the op is not smooth, and (by ``ref``, defaulting to the
op's name) its counterparts in ``reference_impls`` for PyTorch, JAX, numpy
and mpmath.  Rules are written with engine ops (``F.*`` and tensor operators),
never raw arrays, so the engine can differentiate them again.

Reading a rule::

    exp:  vjp = lambda g, out, x: (g * out,)        # d/dx exp(x) = exp(x); the JVP, t * out, follows
    mul:  jvp = (lambda t, out, x, y: t * y,        # one term per input: the engine skips the
                 lambda t, out, x, y: x * t)        # inputs without a tangent and adds the rest
    sum:  jvp = LINEAR                              # the tangent is the sum of the tangent

Conventions shared with PyTorch, so the two can be compared entry by entry:
relu'(0) = 0, abs'(0) = 0, clip passes the gradient on the closed interval
[lo, hi], and maximum/minimum/amax/amin split the gradient evenly among ties.
"""
from __future__ import annotations

import functools
import math
import re
import warnings

import numpy as np

from .spec import CLASS_INDEX, CONDITION, LINEAR, NONZERO, POSITIVE, REAL, Domain, OpDef


class _EngineFunctions:
    """The engine's functional namespace, resolved on first use.

    The engine is built from this table, so the table cannot import the
    engine at import time.
    """

    def __getattr__(self, name):
        from gradverify.engine import functional

        value = getattr(functional, name)
        setattr(self, name, value)
        return value


F = _EngineFunctions()

TABLE: dict[str, OpDef] = {}


def op(name, forward, vjp, domains, kind, **extra):
    """Register an op in the table and return its definition."""
    if name in TABLE:
        raise ValueError(f"op {name!r} is declared twice")
    TABLE[name] = OpDef(name, forward, vjp, tuple(domains), kind, **extra)
    return TABLE[name]


def _mask(condition, like):
    """A constant 0/1 tensor: the derivative of a piecewise-constant choice."""
    return F.constant(condition.astype(like.array.dtype))


def _pass_where(condition, g):
    """``g`` where ``condition`` holds and 0 elsewhere: the derivative of an op that lets its input through.

    A select, not ``g * mask``, so an infinite cotangent gives 0 where the input is cut off
    (sqrt(relu(x)) at x = 0), as PyTorch's threshold_backward and clamp_backward do.
    """
    return F.where(F.constant(condition), g, _zero(g.array.dtype))


@functools.lru_cache(maxsize=None)
def _zero(dtype):
    """A constant 0-d zero of ``dtype``, made once: the rules select against it on every backward."""
    return F.constant(np.zeros((), dtype))


# ---------------------------------------------------------------- elementwise
def _exp_minus_abs(x):
    """exp(-|x|) in one fresh buffer (never overflows); reusing it matters on a large batch."""
    e = np.abs(x, out=np.empty_like(x))
    np.negative(e, out=e)
    return np.exp(e, out=e)


def _stable_sigmoid(x):
    # 1 / (1 + e) for x >= 0 and e / (1 + e) for x < 0, with e = exp(-|x|): nothing overflows and
    # both sides keep full relative accuracy.  The numerator is max(e, x >= 0) (e <= 1), one pass
    # where a second exp would cost four; the buffers are reused, as a large batch's fresh ones
    # cost more than the arithmetic.
    denominator = _exp_minus_abs(x)
    out = np.maximum(denominator, x >= 0)
    denominator += 1.0
    out /= denominator
    return out


def _stable_softplus(x):
    return (np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))).astype(x.dtype, copy=False)


def _sigmoid_backward_forward(g, x):
    # sigmoid'(x) as e / (1 + e)^2 with e = exp(-|x|), which equals s(x) s(-x); unlike y (1 - y)
    # it keeps full relative accuracy where y rounds to 1 (large x), instead of becoming exactly 0.
    # In reused buffers, as in _stable_sigmoid (3x faster on a large float64 batch).
    e = _exp_minus_abs(x)
    denominator = np.add(e, 1.0, out=np.empty_like(e))
    np.multiply(denominator, denominator, out=denominator)
    e /= denominator
    if g.shape != e.shape:
        return g * e
    e *= g
    return e


def _tanh_backward_forward(g, x):
    # tanh'(x) = 1 - tanh(x)^2 as 1 / cosh(x)^2: no cancellation, so full relative accuracy in the
    # tails where tanh rounds to ±1.  Dividing twice never overflows, where cosh(x)^2 would.  Where
    # cosh(x) overflows (|x| > 89 in float32), sech^2 has long underflowed to 0, which dividing by
    # inf gives; the engine's backward and jvp run with numpy's overflow warnings off, so no clamp
    # (two passes fewer, a tenth of W4's time).
    cosh = np.cosh(x)
    out = g / cosh
    out /= cosh
    return out


# The same overflow outside a backward (a random graph evaluating this op forward) is as expected:
# a filter on this module costs nothing per call, where np.errstate would cost more than the op.
warnings.filterwarnings("ignore", "overflow encountered in cosh", RuntimeWarning, module=re.escape(__name__) + "$")


def _unary(name, forward, derivative, domain=REAL, floating_result=True, **extra):
    """An elementwise unary op given its derivative f'(x) (as engine ops of x and out).

    Its result is floating, so integer input is taken in the default dtype (as torch.exp of an
    integer tensor), unless ``floating_result`` is false (relu and abs keep integers).
    """
    return op(name, forward, lambda g, out, x: (g * derivative(x, out),), (domain,), "unary",
              floating_result=floating_result, **extra)


op("neg", np.negative, lambda g, out, x: (-g,), (REAL,), "unary")
_unary("exp", np.exp, lambda x, out: out, Domain(sample=(-3.0, 3.0)), saves_output=True)
_unary("log", np.log, lambda x, out: 1.0 / x, POSITIVE)
_unary("log1p", np.log1p, lambda x, out: 1.0 / (1.0 + x), Domain(low=-1.0, sample=(-0.7, 3.0)))
_unary("sqrt", np.sqrt, lambda x, out: 0.5 / out, POSITIVE, saves_output=True)
_unary("sin", np.sin, lambda x, out: F.cos(x))
_unary("cos", np.cos, lambda x, out: -F.sin(x))


def _activation(name, forward, backward, backward_forward, second, backward_doc):
    """An activation whose backward ``g * f'(x)`` is an op of its own (as PyTorch's tanh_backward).

    One accurate pass in the activation's backward instead of two ops, and the
    backward op is differentiable again for higher order: ``second(x, out)`` is
    d out / d x of ``out = g * f'(x)``.
    """
    op(name, forward, lambda g, out, x: (getattr(F, backward)(g, x),), (REAL,), "unary", floating_result=True,
       saves_output=True)
    op(
        backward,
        backward_forward,
        lambda g, out, gy, x: (
            getattr(F, backward)(g, x) if F.needs_cotangent(gy) else None,
            g * second(x, out) if F.needs_cotangent(x) else None,
        ),
        (REAL, REAL),
        "binary",
        jvp=(lambda t, out, gy, x: getattr(F, backward)(t, x), lambda t, out, gy, x: t * second(x, out)),
        broadcasts=True,
        doc=backward_doc,
    )


# tanh'' = -2 tanh' tanh and sigmoid'' = -sigmoid' tanh(x / 2), so d(g f'(x))/dx is out times those factors.
_activation("tanh", np.tanh, "tanh_backward", _tanh_backward_forward, lambda x, out: -2.0 * out * F.tanh(x),
            "g * (1 - tanh(x)^2), the backward of tanh; accurate where tanh(x) rounds to ±1.  Beyond cosh's range "
            "(|x| > 89 in float32) it is 0, with numpy's overflow warning outside the engine's backward and jvp.")
_activation("sigmoid", _stable_sigmoid, "sigmoid_backward", _sigmoid_backward_forward,
            lambda x, out: -out * F.tanh(0.5 * x),
            "g * sigmoid(x) (1 - sigmoid(x)), the backward of sigmoid; accurate where sigmoid(x) rounds to 1.")
_unary("softplus", _stable_softplus, lambda x, out: F.sigmoid(x))
op(
    "relu",
    lambda x: np.maximum(x, 0).astype(x.dtype, copy=False),
    lambda g, out, x: (_pass_where(x.array > 0, g),),
    (REAL,),
    "unary",
    kink_gap=lambda x: x,
    kink_convention="relu'(0) = 0",
    saves_output=True,
)
_unary(
    "abs",
    np.abs,
    lambda x, out: _mask(np.sign(x.array), x),
    floating_result=False,
    kink_gap=lambda x: x,
    kink_convention="abs'(0) = 0",
)


def _pow_scalar_derivative(x, exponent):
    if exponent == 0:
        return F.zeros_like(x)
    return exponent * F.pow_scalar(x, exponent=exponent - 1)


op(
    "pow_scalar",
    lambda x, exponent: np.power(x, np.asarray(exponent, dtype=x.dtype)),
    lambda g, out, x, exponent: (g * _pow_scalar_derivative(x, exponent),),
    (POSITIVE,),
    "unary",
    attrs={"exponent": 2.0},
    doc="x ** c for a Python number c; for non-integer c the domain is x > 0.",
)


def _clip_forward(x, lo, hi):
    return np.clip(x, lo, hi).astype(x.dtype, copy=False)


def _inside(x, lo, hi):
    return (x.array >= lo) & (x.array <= hi)


op(
    "clip",
    _clip_forward,
    lambda g, out, x, lo, hi: (_pass_where(_inside(x, lo, hi), g),),
    (REAL,),
    "unary",
    kink_gap=lambda x, lo, hi: np.minimum(np.abs(x - lo), np.abs(x - hi)),
    kink_convention="gradient passes on the closed interval [lo, hi]",
    attrs={"lo": -1.0, "hi": 1.0},
)

op(
    "astype",
    lambda x, dtype: x.astype(dtype),
    lambda g, out, x, dtype: (F.astype(g, dtype=x.dtype),),
    (REAL,),
    "unary",
    jvp=LINEAR,
    attrs={"dtype": "float64"},
    doc="Change the floating dtype; the cotangent returns to the input's dtype.",
)

# --------------------------------------------------------------------- binary
op("add", np.add, lambda g, out, x, y: (g, g), (REAL, REAL), "binary", broadcasts=True)
op("sub", np.subtract, lambda g, out, x, y: (g, -g), (REAL, REAL), "binary", broadcasts=True,
   jvp=(lambda t, out, x, y: t, lambda t, out, x, y: -t))
op(
    "mul",
    np.multiply,
    lambda g, out, x, y: (g * y if F.needs_cotangent(x) else None, g * x if F.needs_cotangent(y) else None),
    (REAL, REAL),
    "binary",
    jvp=(lambda t, out, x, y: t * y, lambda t, out, x, y: x * t),
    broadcasts=True,
)
op(
    "div",
    np.true_divide,
    lambda g, out, x, y: (g / y if F.needs_cotangent(x) else None, -g * out / y if F.needs_cotangent(y) else None),
    (REAL, NONZERO),
    "binary",
    jvp=(lambda t, out, x, y: t / y, lambda t, out, x, y: -t * out / y),
    broadcasts=True,
    floating_result=True,
)
def _pow_dbase(x, y):
    # y x^(y-1), and 0 at x = y = 0, where x^-1 is infinite.  Only there: PyTorch's pow_backward_self selects 0
    # wherever y = 0, which zeroes the derivative of y x^(y-1) in y there (x^-1), and its Hessian is asymmetric.
    return F.where((y.array != 0) | (x.array != 0), y * F.pow(x, y - 1.0), 0.0)


def _pow_dexponent(out, x, y):
    # x^y log x, and 0 at x = 0 for y >= 0 (the limit; 0 * log 0 would be NaN), as PyTorch's pow_backward_exponent.
    return F.where((x.array == 0) & (y.array >= 0), 0.0, out * F.log(x))


op(
    "pow",
    np.power,
    lambda g, out, x, y: (
        g * _pow_dbase(x, y) if F.needs_cotangent(x) else None,
        g * _pow_dexponent(out, x, y) if F.needs_cotangent(y) else None,
    ),
    (POSITIVE, Domain(sample=(-2.0, 2.0))),
    "binary",
    jvp=(lambda t, out, x, y: t * _pow_dbase(x, y), lambda t, out, x, y: t * _pow_dexponent(out, x, y)),
    broadcasts=True,
    saves_output=True,
    doc="x ** y with both tensors; the domain is x > 0.",
)


def _select_weights(x, y, pick_x):
    """Weights (w_x, w_y) of maximum/minimum: 1 for the chosen side, 1/2 each at ties."""
    xd, yd = np.broadcast_arrays(x.array, y.array)
    wx = np.where(pick_x(xd, yd), 1.0, np.where(xd == yd, 0.5, 0.0)).astype(np.result_type(xd, yd))
    return wx, 1.0 - wx


def _weighted(g, weight):
    """``g * weight``, and 0 where the weight is 0 even when ``g`` is infinite (the side that lost)."""
    return _pass_where(weight != 0, g * F.constant(weight))


def _minmax(name, forward, pick_x):
    def vjp(g, out, x, y):
        wx, wy = _select_weights(x, y, pick_x)
        return _weighted(g, wx), _weighted(g, wy)

    op(
        name,
        forward,
        vjp,
        (REAL, REAL),
        "binary",
        jvp=(lambda t, out, x, y: _weighted(t, _select_weights(x, y, pick_x)[0]),
             lambda t, out, x, y: _weighted(t, _select_weights(x, y, pick_x)[1])),
        broadcasts=True,
        kink_gap=lambda x, y: x - y,
        kink_convention="ties split the gradient evenly",
    )


_minmax("maximum", np.maximum, np.greater)
_minmax("minimum", np.minimum, np.less)


_SAME_WIDTH_INTEGER = {np.dtype(np.float32): np.dtype(np.int32), np.dtype(np.float64): np.dtype(np.int64)}


def _where_forward(condition, x, y):
    # np.where branches per element: on an unpredictable mask (a relu's) it is 20x slower than a
    # multiply.  Selecting between an array and a zero of its dtype is a bitwise AND with an
    # all-ones / all-zeros mask instead: the same bits, without branches.
    for kept, zero, condition_kept in ((x, y, condition), (y, x, None)):
        integer = _SAME_WIDTH_INTEGER.get(kept.dtype)
        if (
            integer is not None
            and zero.ndim == 0
            and zero.dtype == kept.dtype
            and condition.dtype == np.bool_
            and kept.shape == condition.shape
            and zero.view(integer).item() == 0  # +0.0 only: -0.0 has its sign bit set
        ):
            mask = condition.astype(integer)
            np.negative(mask, out=mask)
            if condition_kept is None:
                np.invert(mask, out=mask)
            return np.bitwise_and(kept.view(integer), mask, out=mask).view(kept.dtype)
    return np.where(condition, x, y)


def _where_vjp(g, out, cond, x, y):
    zero = _zero(g.array.dtype)
    return None, F.where(cond, g, zero), F.where(cond, zero, g)


op(
    "where",
    _where_forward,
    _where_vjp,
    (CONDITION, REAL, REAL),
    "select",
    jvp=LINEAR,
    nondiff=(0,),
    broadcasts=True,
)

# --------------------------------------------------------------------- matmul
def _is_transposed(t):
    flags = t.array.flags
    return flags.f_contiguous and not flags.c_contiguous


def _matmul_vjp(g, out, a, b):
    # A cotangent the backward pass would drop is not computed (for x @ W.T, the costly x side).
    a2 = F.unsqueeze(a, 0) if a.ndim == 1 else a
    b2 = F.unsqueeze(b, -1) if b.ndim == 1 else b
    # Restore the axes numpy's matmul dropped for 1-D operands, the trailing one first
    # (for vector @ vector, g is 0-d and has no axis -2 until then).
    g2 = g
    if b.ndim == 1:
        g2 = F.unsqueeze(g2, -1)
    if a.ndim == 1:
        g2 = F.unsqueeze(g2, -2)
    ga = gb = None
    if F.needs_cotangent(a):
        ga = F.matmul(g2, F.swapaxes(b2, -1, -2))
        ga = F.sum_to(F.squeeze(ga, -2) if a.ndim == 1 else ga, shape=a.shape)
    if F.needs_cotangent(b):
        if a2.ndim == b2.ndim == 2 and _is_transposed(b2):
            # b is a transposed view (x @ W.T): (g^T a)^T gives W a C-contiguous cotangent, no copy needed.
            gb = F.swapaxes(F.matmul(F.swapaxes(g2, -1, -2), a2), -1, -2)
        else:
            gb = F.matmul(F.swapaxes(a2, -1, -2), g2)
        gb = F.sum_to(F.squeeze(gb, -1) if b.ndim == 1 else gb, shape=b.shape)
    return ga, gb


op(
    "matmul",
    np.matmul,
    _matmul_vjp,
    (REAL, REAL),
    "matmul",
    jvp=(lambda t, out, a, b: F.matmul(t, b), lambda t, out, a, b: F.matmul(a, t)),
    doc="numpy.matmul semantics: batched, with the 1-D cases as numpy treats them.",
)



def _linear_forward(x, weight, bias):
    if weight.ndim != 2 or bias.shape != weight.shape[:1] or x.ndim == 0 or x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"expected x (..., in), weight (out, in) and bias (out,); got {x.shape}, {weight.shape} and {bias.shape}"
        )
    out = np.matmul(x, weight.T)
    # The bias goes into the product's fresh buffer unless that would round it to a narrower dtype.
    return np.add(out, bias, out=out) if np.result_type(out, bias) == out.dtype else out + bias


def _linear_vjp(g, out, x, weight, bias):
    gx = F.matmul(g, weight) if F.needs_cotangent(x) else None
    gw = None
    if F.needs_cotangent(weight):
        # The weight's cotangent sums over every leading axis of x: one (out, N) @ (N, in) product.
        g2 = g if g.ndim == 2 else F.reshape(g, shape=(-1, weight.shape[0]))
        x2 = x if x.ndim == 2 else F.reshape(x, shape=(-1, weight.shape[1]))
        gw = F.matmul(F.swapaxes(g2, 0, 1), x2)
    # The bias's cotangent is g summed over the leading axes, which the engine does for any broadcast input.
    return gx, gw, g


op(
    "linear",
    _linear_forward,
    _linear_vjp,
    (REAL, REAL, REAL),
    "linear",
    jvp=(
        lambda t, out, x, weight, bias: F.matmul(t, F.swapaxes(weight, 0, 1)),
        lambda t, out, x, weight, bias: F.matmul(x, F.swapaxes(t, 0, 1)),
        lambda t, out, x, weight, bias: t,
    ),
    doc="x @ weight.T + bias, as torch.nn.functional.linear: x (..., in), weight (out, in), bias (out,).",
)

# ----------------------------------------------------------------- reductions
def _normalize_axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    return tuple(sorted(a % ndim for a in axes)) if ndim else ()


def _keep(tensor, x, axis, keepdims):
    """Restore the reduced axes of ``tensor`` (a reduction of ``x``) as size-1 axes.

    A reduction over all axes is 0-d, which already broadcasts against ``x``: it is returned as it is.
    """
    if keepdims or axis is None or x.ndim == 0:
        return tensor
    shape = list(x.shape)
    for a in _normalize_axes(axis, x.ndim):
        shape[a] = 1
    return F.reshape(tensor, shape=tuple(shape))


def _count(x, axis):
    """How many entries of ``x`` (array or tensor) each reduction over ``axis`` combines."""
    return math.prod(x.shape[a] for a in _normalize_axes(axis, x.ndim))


REDUCE_ATTRS = {"axis": None, "keepdims": False}


def _mean_forward(x, axis=None, keepdims=False):
    # What np.mean computes (a pairwise sum in x's dtype, then one division), without its Python layers.
    return np.add.reduce(x, axis=axis, keepdims=keepdims) / _count(x, axis)


op(
    "sum",
    lambda x, axis=None, keepdims=False: np.add.reduce(x, axis=axis, keepdims=keepdims),
    lambda g, out, x, axis=None, keepdims=False: (F.broadcast_to(_keep(g, x, axis, keepdims), shape=x.shape),),
    (REAL,),
    "reduction",
    jvp=LINEAR,
    attrs=REDUCE_ATTRS,
)
op(
    "mean",
    _mean_forward,
    lambda g, out, x, axis=None, keepdims=False: (
        # (No entries: an empty gradient, whatever the factor.)
        F.broadcast_to(_keep(g, x, axis, keepdims), shape=x.shape) * (1.0 / (_count(x, axis) or 1)),
    ),
    (REAL,),
    "reduction",
    jvp=LINEAR,
    attrs=REDUCE_ATTRS,
    floating_result=True,
)


def _extremum_weights(out, x, axis, keepdims):
    """Gradient weights of amax/amin: 1/k on each of the k entries that attain the extremum."""
    hit = (x.array == _keep(out, x, axis, keepdims).array).astype(x.array.dtype)
    return F.constant(hit / np.sum(hit, axis=_normalize_axes(axis, x.ndim), keepdims=True))


def _extremum_gap(x, axis=None, keepdims=False, largest=True):
    """Distance between the best and second-best entry of each reduced group (0 at ties)."""
    axes = _normalize_axes(axis, np.ndim(x))
    moved = np.moveaxis(np.asarray(x), axes, tuple(range(-len(axes), 0)))
    flat = moved.reshape(moved.shape[: moved.ndim - len(axes)] + (-1,))
    if flat.shape[-1] < 2:
        return np.full(flat.shape[:-1], np.inf)
    top = np.sort(flat, axis=-1)
    return top[..., -1] - top[..., -2] if largest else top[..., 1] - top[..., 0]


def _extremum(name, forward, largest):
    op(
        name,
        lambda x, axis=None, keepdims=False: forward(x, axis=axis, keepdims=keepdims),
        lambda g, out, x, axis=None, keepdims=False: (
            F.broadcast_to(_keep(g, x, axis, keepdims), shape=x.shape) * _extremum_weights(out, x, axis, keepdims),
        ),
        (REAL,),
        "reduction",
        jvp=(lambda t, out, x, axis=None, keepdims=False: F.sum(
            t * _extremum_weights(out, x, axis, keepdims), axis=axis, keepdims=keepdims),),
        attrs=REDUCE_ATTRS,
        kink_gap=lambda x, axis=None, keepdims=False: _extremum_gap(x, axis, keepdims, largest),
        kink_convention="ties split the gradient evenly",
        saves_output=True,
    )


_extremum("amax", np.maximum.reduce, True)
_extremum("amin", np.minimum.reduce, False)


def _kept_max(x, axis):
    """The max over ``axis``, kept as a size-1 axis; -inf for an empty group."""
    if x.ndim == 2 and axis in (1, -1) and 0 < x.shape[1] <= 32 <= x.shape[0]:
        # numpy reduces a short last axis one row at a time (43 us for 1024 rows of 10 classes);
        # a transposed copy is reduced a whole column at a time (7 us, and 2.0 against 3.6 at 64 rows).
        return np.maximum.reduce(np.ascontiguousarray(x.T), axis=0)[:, None]
    return np.maximum.reduce(x, axis=axis, keepdims=True, initial=-np.inf)


def _max_shift(x, axis):
    """The max over ``axis`` (kept), 0 where it is not finite: exp(x - shift) never overflows."""
    m = _kept_max(x, axis)
    # One finite sum means every max is finite (an overflowing sum only takes the slower exact path).
    if math.isfinite(np.add.reduce(m, axis=None)):
        return m
    return np.where(np.isfinite(m), m, 0)


def _logsumexp_forward(x, axis=None, keepdims=False):
    # An all -inf group stays -inf.
    m = _max_shift(x, axis)
    out = np.log(np.add.reduce(np.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else out.squeeze(axis)


def _softmax_of(x, axis):
    """softmax over ``axis`` (any axes) as engine ops of ``x``.

    exp(x - c) / sum with the max c held constant: the value does not depend on c,
    and unlike exp(x - out) it does not inherit the rounding of out (about |x| ulps).
    """
    e = F.exp(x - F.constant(_max_shift(x.array, axis)))
    return e / F.sum(e, axis=axis, keepdims=True)


op(
    "logsumexp",
    _logsumexp_forward,
    lambda g, out, x, axis=None, keepdims=False: (_keep(g, x, axis, keepdims) * _softmax_of(x, axis),),
    (Domain(sample=(-5.0, 5.0)),),
    "reduction",
    jvp=(lambda t, out, x, axis=None, keepdims=False: F.sum(t * _softmax_of(x, axis), axis=axis, keepdims=keepdims),),
    attrs=REDUCE_ATTRS,
    floating_result=True,
    saves_output=True,
)

# ------------------------------------------------------------------ shape ops
op(
    "reshape",
    lambda x, shape: x.reshape(shape),
    lambda g, out, x, shape: (F.reshape(g, shape=x.shape),),
    (REAL,),
    "shape",
    jvp=LINEAR,
)
@functools.lru_cache(maxsize=256)
def _inverse_permutation(axes):
    # Cached: every backward through x.T asks for the same few permutations.  Axes may be negative,
    # as in torch's x.permute(-1, 0, 1), so they are taken modulo the rank before inverting.
    return tuple(int(a) for a in np.argsort([a % len(axes) for a in axes]))


op(
    "permute",
    lambda x, axes: x.transpose(axes),
    lambda g, out, x, axes: (F.permute(g, axes=_inverse_permutation(tuple(axes))),),
    (REAL,),
    "shape",
    jvp=LINEAR,
)
op(
    "broadcast_to",
    lambda x, shape: np.broadcast_to(x, shape),
    lambda g, out, x, shape: (F.sum_to(g, shape=x.shape),),
    (REAL,),
    "shape",
    jvp=LINEAR,
)


def sum_to_axes(shape, target):
    """The axes to sum (keeping dims) so that an array of ``shape`` becomes ``target``.

    Leading extra axes, and axes where ``target`` has size 1 but ``shape`` does not:
    the inverse of numpy broadcasting.
    """
    lead = len(shape) - len(target)
    return tuple(range(lead)) + tuple(i + lead for i, n in enumerate(target) if n == 1 and shape[i + lead] != 1)


def sum_to_forward(x, shape):
    """Sum ``x`` over its broadcast axes so that it has ``shape`` (the inverse of broadcasting)."""
    shape = tuple(shape)
    if x.shape == shape:
        return x
    axes = sum_to_axes(x.shape, shape)
    if shape and len(axes) == x.ndim - len(shape):  # leading axes only (a bias's gradient): the sum has the shape
        return np.add.reduce(x, axis=axes)
    return np.add.reduce(x, axis=axes, keepdims=True).reshape(shape)


op(
    "sum_to",
    sum_to_forward,
    lambda g, out, x, shape: (F.broadcast_to(g, shape=x.shape),),
    (REAL,),
    "shape",
    jvp=LINEAR,
    doc="Reduce a broadcast cotangent to an input's shape.",
)
op(
    "unsqueeze",
    lambda x, axis: np.expand_dims(x, axis),
    lambda g, out, x, axis: (F.reshape(g, shape=x.shape),),
    (REAL,),
    "shape",
    jvp=LINEAR,
)
op(
    "squeeze",
    lambda x, axis=None: x.squeeze(axis),
    lambda g, out, x, axis=None: (F.reshape(g, shape=x.shape),),
    (REAL,),
    "shape",
    jvp=LINEAR,
)


def flat_indices(shape, index):
    """The flat positions that ``zeros(shape)[index]`` selects (duplicates kept)."""
    return np.arange(int(np.prod(shape, dtype=np.int64))).reshape(shape)[index]


def _scatter_add_forward(g, index, shape):
    out = np.zeros(shape, dtype=g.dtype)
    np.add.at(out, index, g)
    return out


op(
    "getitem",
    lambda x, index: np.asarray(x[index]),
    lambda g, out, x, index: (F.scatter_add(g, index=index, shape=x.shape),),
    (REAL,),
    "index",
    jvp=LINEAR,
    doc="Basic and integer-array indexing, as numpy; repeated indices accumulate in the VJP.",
)
op(
    "scatter_add",
    _scatter_add_forward,
    lambda g, out, x, index, shape: (F.getitem(g, index=index),),
    (REAL,),
    "index",
    jvp=LINEAR,
    doc="zeros(shape) with x added at index (repeats accumulate): the VJP of getitem.",
)


def _split_along(g, sizes, axis):
    pieces, start = [], 0
    for size in sizes:
        index = [slice(None)] * g.ndim
        index[axis] = slice(start, start + size)
        pieces.append(F.getitem(g, index=tuple(index)))
        start += size
    return tuple(pieces)


op(
    "concatenate",
    lambda *xs, axis=0: np.concatenate(xs, axis=axis),
    lambda g, out, *xs, axis=0: _split_along(g, [x.shape[axis] for x in xs], axis % g.ndim),
    (REAL,),
    "join",
    jvp=LINEAR,
    variadic=True,
    attrs={"axis": 0},
)


def _unstack(g, n, axis):
    axis = axis % g.ndim
    return tuple(F.getitem(g, index=(slice(None),) * axis + (i,)) for i in range(n))


op(
    "stack",
    lambda *xs, axis=0: np.stack(xs, axis=axis),
    lambda g, out, *xs, axis=0: _unstack(g, len(xs), axis),
    (REAL,),
    "join",
    jvp=LINEAR,
    variadic=True,
    attrs={"axis": 0},
)

# ------------------------------------------------------ softmax and the losses
# softmax and log_softmax never form logsumexp(x) itself: it rounds to about |x| ulps,
# which exp(x - logsumexp) would turn into a relative error of |x| ulps in every entry.
def _softmax_forward(x, axis=-1):
    e = np.exp(x - _max_shift(x, axis))
    return e / np.add.reduce(e, axis=axis, keepdims=True)


def _log_softmax_forward(x, axis=-1):
    shifted = x - _max_shift(x, axis)
    return shifted - np.log(np.add.reduce(np.exp(shifted), axis=axis, keepdims=True))


def _first_max_mask(x, axis):
    """A constant 0/1 tensor marking the first largest entry of ``x`` along ``axis`` (a 0-d ``x``: itself)."""
    if x.ndim == 0:
        return F.constant(np.ones_like(x.array))
    mask = np.zeros_like(x.array)
    if mask.size:
        first = np.expand_dims(np.argmax(x.array, axis=axis), axis)
        np.put_along_axis(mask, first, 1.0, axis=axis)
    return F.constant(mask)


def _softmax_vjp(g, out, x, axis=-1):
    # g - sum(g * out) == d - sum(d * out) for d = g - g[argmax]: when one out rounds to 1,
    # the plain form cancels g[argmax] against itself and keeps only its rounding error.
    d = g - F.sum(g * _first_max_mask(x, axis), axis=axis, keepdims=True)
    return (out * (d - F.sum(d * out, axis=axis, keepdims=True)),)


op(
    "softmax",
    _softmax_forward,
    _softmax_vjp,
    (Domain(sample=(-5.0, 5.0)),),
    "normalize",
    attrs={"axis": -1},
    floating_result=True,
    saves_output=True,
)
def _log_softmax_vjp(g, out, x, axis=-1):
    # g - p * sum(g) with p = exp(out).  At the largest entry p rounds to 1 and that form cancels;
    # there it is (1 - p) sum(g) - (sum of the other g), with 1 - p the sum of the other (small) p.
    p, top = F.exp(out), _first_max_mask(x, axis)
    rest = F.constant(1.0 - top.array)
    total = F.sum(g, axis=axis, keepdims=True)
    at_top = F.sum(p * rest, axis=axis, keepdims=True) * total - F.sum(g * rest, axis=axis, keepdims=True)
    return (rest * (g - p * total) + top * at_top,)


def _log_softmax_jvp(t, out, x, axis=-1):
    # t - sum(p t) == d - sum(p d) for d = t - t[argmax]: no cancellation where p rounds to 1.
    d = t - F.sum(t * _first_max_mask(x, axis), axis=axis, keepdims=True)
    return d - F.sum(F.exp(out) * d, axis=axis, keepdims=True)


op(
    "log_softmax",
    _log_softmax_forward,
    _log_softmax_vjp,
    (Domain(sample=(-5.0, 5.0)),),
    "normalize",
    jvp=(_log_softmax_jvp,),
    attrs={"axis": -1},
    floating_result=True,
    saves_output=True,
)


# layer_norm is one op, not mean/var/sqrt composed: for two entries (or any tangent along the centred input)
# d/s - c mean(c d)/s^3 cancels to eps/var of its terms' size and keeps their rounding (issue 16: 1.4e-7).
def _trailing(x, normalized_shape):
    """The axes of ``x`` (array or tensor) that ``normalized_shape`` names: its trailing ones."""
    count = len(normalized_shape)
    if count == 0 or tuple(x.shape[x.ndim - count:]) != tuple(normalized_shape):
        raise ValueError(f"normalized_shape: expected the trailing axes of the input, of shape {x.shape}, "
                         f"got {tuple(normalized_shape)}")
    return tuple(range(x.ndim - count, x.ndim))


def _centred(x, mean):
    """``x`` minus its ``mean``, centred a second time: the second pass takes out the first's rounding (the
    corrected two-pass algorithm), so two entries come out exactly opposite and later terms cancel exactly."""
    centred = x - mean(x)
    return centred - mean(centred)


def _layer_norm_forward(x, weight, bias, normalized_shape, eps=1e-5):
    mean = functools.partial(_mean_forward, axis=_trailing(x, normalized_shape), keepdims=True)
    centred = _centred(x, mean)
    return centred / np.sqrt(mean(centred * centred) + eps) * weight + bias


def _layer_norm_parts(x, normalized_shape, eps):
    """(mean over the normalised axes, x centred, its variance, sqrt(variance + eps)) as engine ops of ``x``."""
    mean = functools.partial(F.mean, axis=_trailing(x, normalized_shape), keepdims=True)
    centred = _centred(x, mean)
    variance = mean(centred * centred)
    return mean, centred, variance, F.sqrt(variance + eps)


def _through_normalization(u, eps, mean, centred, variance, sd):
    """The derivative of (x - mean) / sd in x applied to ``u`` (the Jacobian is symmetric: J u = J^T u).

    d / sd - c mean(c d) / sd^3 with d = u centred, as (var r + eps d) / sd^3 with r the part of d
    orthogonal to c (Gram-Schmidt twice): no cancellation where d runs along c.
    """
    d = _centred(u, mean)
    scale = F.where(variance.array == 0, 1.0, variance)  # a constant row: c = 0, nothing to take out
    r = d - centred * (mean(centred * d) / scale)
    r = r - centred * (mean(centred * r) / scale)
    return (variance * r + eps * d) / (sd * sd * sd)


def _normalized(x, normalized_shape, eps):
    _, centred, _, sd = _layer_norm_parts(x, normalized_shape, eps)
    return centred / sd


def _layer_norm_vjp(g, out, x, weight, bias, normalized_shape, eps=1e-5):
    mean, centred, variance, sd = _layer_norm_parts(x, normalized_shape, eps)
    return (
        _through_normalization(g * weight, eps, mean, centred, variance, sd) if F.needs_cotangent(x) else None,
        g * (centred / sd) if F.needs_cotangent(weight) else None,
        g,
    )


op(
    "layer_norm",
    _layer_norm_forward,
    _layer_norm_vjp,
    (REAL, Domain(sample=(0.5, 2.0)), REAL),
    "normalize",
    jvp=(lambda t, out, x, weight, bias, normalized_shape, eps=1e-5: _through_normalization(
            t, eps, *_layer_norm_parts(x, normalized_shape, eps)) * weight,
         lambda t, out, x, weight, bias, normalized_shape, eps=1e-5: t * _normalized(x, normalized_shape, eps),
         lambda t, out, x, weight, bias, normalized_shape, eps=1e-5: t),
    attrs={"normalized_shape": (5,), "eps": 1e-5},  # (5,): the first sample's, (3, 5)
    doc="(x - mean) / sqrt(var + eps) * weight + bias over the trailing normalized_shape axes (biased variance), "
    "as torch's layer_norm; weight and bias have normalized_shape (F.layer_norm passes ones and zeros for None).",
)


def _cross_entropy_forward(logits, target):
    # The mean of logsumexp(row) - row[target], with the row's max taken out of both terms.
    shifted = logits - _max_shift(logits, 1)
    total = np.log(np.add.reduce(np.exp(shifted), axis=1))
    return np.add.reduce(total - shifted[np.arange(logits.shape[0]), target]) / logits.shape[0]


op(
    "cross_entropy",
    _cross_entropy_forward,
    lambda g, out, logits, target: (F.cross_entropy_backward(g, logits, target), None),
    (Domain(sample=(-5.0, 5.0)), CLASS_INDEX),
    "loss",
    jvp=(lambda t, out, logits, target: F.sum(t * _dlogits(logits, target)), None),
    nondiff=(1,),
    doc="Mean cross-entropy of (N, C) logits against (N,) class indices.",
)


def _cross_entropy_backward_forward(g, logits, target):
    # g (softmax - one_hot) / N in one pass.  The target entry p - 1 is minus the sum of the other
    # probabilities, summed without the target's term: where p rounds to 1, p - 1 cancels to 0 and
    # keeps only rounding error (as PyTorch's does).
    n = logits.shape[0]
    rows = np.arange(n)
    e = np.exp(logits - _max_shift(logits, 1))
    at_target = e[rows, target]
    e[rows, target] = 0.0
    others = np.add.reduce(e, axis=1)
    scale = g / (n * (others + at_target))
    e *= scale[:, None]
    e[rows, target] = -others * scale
    return e


def _dlogits(logits, target):
    """d cross_entropy / d logits, which is cross_entropy_backward(1, logits, target): its derivative in g."""
    return F.cross_entropy_backward(F.constant(np.ones((), dtype=logits.array.dtype)), logits, target)


def _through_logits(u, g, logits):
    """The derivative in the logits applied to ``u``: g / N times softmax's Jacobian (symmetric: VJP = JVP)."""
    return _softmax_vjp(u, F.softmax(logits, axis=1), logits, axis=1)[0] * (g / logits.shape[0])


def _cross_entropy_backward_vjp(u, out, g, logits, target):
    return (
        F.sum(u * _dlogits(logits, target)) if F.needs_cotangent(g) else None,
        _through_logits(u, g, logits) if F.needs_cotangent(logits) else None,
        None,
    )


op(
    "cross_entropy_backward",
    _cross_entropy_backward_forward,
    _cross_entropy_backward_vjp,
    (REAL, Domain(sample=(-5.0, 5.0)), CLASS_INDEX),
    "loss",
    jvp=(lambda t, out, g, logits, target: t * _dlogits(logits, target),
         lambda t, out, g, logits, target: _through_logits(t, g, logits), None),
    nondiff=(2,),
    doc="g (softmax(logits) - one_hot(target)) / N, the backward of cross_entropy (g: the loss's cotangent); "
    "accurate where the target's probability rounds to 1.",
)


def _mse_dinput(x, y):
    return (x - y) * (2.0 / _count(x, None))


op(
    "mse_loss",
    lambda x, y: _mean_forward(np.square(x - y)),
    lambda g, out, x, y: (g * _mse_dinput(x, y), -g * _mse_dinput(x, y)),
    (REAL, REAL),
    "loss",
    jvp=(lambda t, out, x, y: F.sum(t * _mse_dinput(x, y)), lambda t, out, x, y: -F.sum(t * _mse_dinput(x, y))),
    doc="Mean squared error of two tensors of the same shape.",
)
