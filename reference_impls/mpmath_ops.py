"""High-precision counterparts of the table's ops on numpy object arrays of ``mpmath.mpf``.

Inputs come from :func:`reference_impls.to_mp`; the working precision is the
caller's (``with mpmath.workdps(30): ...``).  mpmath's exponent range is
unbounded, so the plain textbook formulas are used: no stabilising shifts.
Outputs are object arrays (0-d for scalars).
"""
from __future__ import annotations

import mpmath
import numpy as np

from gradverify.ops import sum_to_forward

# Moving entries around is exact and numpy does it on object arrays as on floats.
from .numpy_ops import broadcast_to, concatenate, permute, reshape, squeeze, stack, unsqueeze  # noqa: F401


def _objects(value):
    """``value`` as a numpy object array (numpy reductions return bare mpf scalars)."""
    return np.asarray(value, dtype=object)


def _elementwise(fn, arity=1):
    """``fn`` of mpf scalars applied entry by entry, with numpy broadcasting."""
    ufunc = np.frompyfunc(fn, arity, 1)
    return lambda *arrays: _objects(ufunc(*arrays))


def _zeros(shape):
    out = np.empty(shape, dtype=object)
    out.reshape(-1)[:] = [mpmath.mpf(0)] * out.size
    return out


neg = _elementwise(lambda v: -v)
exp = _elementwise(mpmath.exp)
log = _elementwise(mpmath.log)
log1p = _elementwise(mpmath.log1p)
sqrt = _elementwise(mpmath.sqrt)
sin = _elementwise(mpmath.sin)
cos = _elementwise(mpmath.cos)
tanh = _elementwise(mpmath.tanh)
sigmoid = _elementwise(lambda v: 1 / (1 + mpmath.exp(-v)))
tanh_backward = _elementwise(lambda g, v: g * mpmath.sech(v) ** 2, 2)
sigmoid_backward = _elementwise(lambda g, v: g * mpmath.exp(-v) / (1 + mpmath.exp(-v)) ** 2, 2)
# log1p keeps the relative accuracy of log(1 + e^v) when e^v is tiny.
softplus = _elementwise(lambda v: mpmath.log1p(mpmath.exp(v)))
relu = _elementwise(lambda v: v if v > 0 else mpmath.mpf(0))
abs = _elementwise(mpmath.fabs)  # noqa: A001  (the op's name)


def pow_scalar(x, exponent):
    return _elementwise(lambda v: mpmath.power(v, exponent))(x)


def clip(x, lo, hi):
    return _elementwise(lambda v: min(max(v, mpmath.mpf(lo)), mpmath.mpf(hi)))(x)


def astype(x, dtype):
    """The identity: mpmath values have no storage dtype."""
    return _objects(x).copy()


add = _elementwise(lambda a, b: a + b, 2)
sub = _elementwise(lambda a, b: a - b, 2)
mul = _elementwise(lambda a, b: a * b, 2)
div = _elementwise(lambda a, b: a / b, 2)
pow = _elementwise(mpmath.power, 2)  # noqa: A001  (the op's name)
maximum = _elementwise(lambda a, b: a if a >= b else b, 2)
minimum = _elementwise(lambda a, b: a if a <= b else b, 2)


def where(cond, x, y):
    return _objects(np.where(np.asarray(cond).astype(bool), x, y))


def matmul(a, b):
    return _objects(np.matmul(a, b))


def linear(x, weight, bias):
    return _objects(np.matmul(x, np.asarray(weight).T) + bias)


def _count(x, axis):
    axes = range(x.ndim) if axis is None else np.atleast_1d(axis)
    return int(np.prod([x.shape[a] for a in axes], dtype=np.int64))


def sum(x, axis=None, keepdims=False):  # noqa: A001  (the op's name)
    return _objects(np.sum(x, axis=axis, keepdims=keepdims))


def mean(x, axis=None, keepdims=False):
    return _objects(sum(x, axis=axis, keepdims=keepdims) / _count(x, axis))


def amax(x, axis=None, keepdims=False):
    return _objects(np.amax(x, axis=axis, keepdims=keepdims))


def amin(x, axis=None, keepdims=False):
    return _objects(np.amin(x, axis=axis, keepdims=keepdims))


def logsumexp(x, axis=None, keepdims=False):
    return log(sum(exp(x), axis=axis, keepdims=keepdims))


def sum_to(x, shape):
    return _objects(sum_to_forward(x, shape))


def getitem(x, index):
    return _objects(x[index])


def scatter_add(x, index, shape):
    out = _zeros(shape)
    np.add.at(out, index, x)
    return out


def log_softmax(x, axis=-1):
    return sub(x, logsumexp(x, axis=axis, keepdims=True))


def softmax(x, axis=-1):
    e = exp(x)
    return div(e, sum(e, axis=axis, keepdims=True))


def layer_norm(x, weight, bias, normalized_shape, eps=1e-5):
    axes = tuple(range(x.ndim - len(normalized_shape), x.ndim))
    centred = sub(x, mean(x, axis=axes, keepdims=True))
    scale = sqrt(add(mean(mul(centred, centred), axis=axes, keepdims=True), mpmath.mpf(eps)))
    return add(mul(div(centred, scale), weight), bias)


def cross_entropy(logits, target):
    logp = log_softmax(logits, axis=1)
    return neg(mean(logp[np.arange(logits.shape[0]), target]))


def cross_entropy_backward(g, logits, target):
    hot = _zeros(logits.shape)
    hot[np.arange(logits.shape[0]), target] = mpmath.mpf(1)
    return div(mul(g, sub(softmax(logits, axis=1), hot)), mpmath.mpf(logits.shape[0]))


def mse_loss(x, y):
    d = sub(x, y)
    return mean(mul(d, d))
