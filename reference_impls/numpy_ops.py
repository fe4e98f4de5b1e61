"""Plain-numpy counterparts of the table's ops, complex-step ready.

Every op that is analytic where it is differentiable accepts complex input:
piecewise ops (relu, abs, clip, maximum, amax ...) choose their branch by the
real part, so ``f(x + i h).imag / h`` is the derivative (complex-step
differentiation).  Real input gives the real forward.
"""
from __future__ import annotations

import numpy as np

from gradverify.ops import sum_to_forward


def _analytic_abs(x):
    """|x| as x * sign(re x): equal to abs on the reals, analytic off the kink."""
    return x * np.sign(x.real)


def _choose(take_x, x, y):
    """``where(take_x, x, y)`` in the common dtype of ``x`` and ``y`` (a constant branch keeps ``x``'s dtype)."""
    x, y = np.asarray(x), np.asarray(y)
    return np.where(take_x, x, y).astype(np.result_type(x, y), copy=False)


neg = np.negative
exp = np.exp
log = np.log
log1p = np.log1p
sqrt = np.sqrt
sin = np.sin
cos = np.cos
tanh = np.tanh


def sigmoid(x):
    # exp(-|x|) never overflows; each branch is accurate on its side.
    e = np.exp(-_analytic_abs(x))
    return np.where(x.real >= 0, 1 / (1 + e), e / (1 + e))


def sigmoid_backward(g, x):
    e = np.exp(-_analytic_abs(x))
    return g * (e / (1 + e) ** 2)


def tanh_backward(g, x):
    e = np.exp(-2 * _analytic_abs(x))
    return g * (4 * e / (1 + e) ** 2)


def softplus(x):
    return relu(x) + np.log1p(np.exp(-_analytic_abs(x)))


def relu(x):
    return _choose(x.real > 0, x, x.dtype.type(0))


def abs(x):  # noqa: A001  (the op's name)
    return _analytic_abs(x)


def pow_scalar(x, exponent):
    return np.power(x, exponent)


def clip(x, lo, hi):
    low, high = x.dtype.type(lo), x.dtype.type(hi)
    return _choose(x.real < lo, low, _choose(x.real > hi, high, x))


def astype(x, dtype):
    dtype = np.dtype(dtype)
    if np.iscomplexobj(x):
        # Keep the imaginary part: the complex step must survive a precision change.
        dtype = np.result_type(dtype, np.complex64)
    return x.astype(dtype)


add = np.add
sub = np.subtract
mul = np.multiply
div = np.true_divide
pow = np.power  # noqa: A001  (the op's name)


def maximum(x, y):
    return _choose(np.real(x) >= np.real(y), x, y)


def minimum(x, y):
    return _choose(np.real(x) <= np.real(y), x, y)


def where(cond, x, y):
    return _choose(np.asarray(cond).astype(bool), x, y)


matmul = np.matmul


def linear(x, weight, bias):
    return np.matmul(x, weight.T) + bias


def sum(x, axis=None, keepdims=False):  # noqa: A001  (the op's name)
    return np.sum(x, axis=axis, keepdims=keepdims)


def mean(x, axis=None, keepdims=False):
    return np.mean(x, axis=axis, keepdims=keepdims)


def _extremum(x, axis, keepdims, arg_pick):
    """The entry of each reduced group picked by ``arg_pick`` on the real parts."""
    x = np.asarray(x)
    axes = tuple(range(x.ndim)) if axis is None else tuple(np.atleast_1d(axis) % max(x.ndim, 1))
    moved = np.moveaxis(x, axes, tuple(range(-len(axes), 0)))
    flat = moved.reshape(moved.shape[: moved.ndim - len(axes)] + (-1,))
    picked = np.take_along_axis(flat, arg_pick(flat.real, axis=-1)[..., None], axis=-1)[..., 0]
    if keepdims:
        picked = picked.reshape(tuple(1 if i in axes else n for i, n in enumerate(x.shape)))
    return picked


def amax(x, axis=None, keepdims=False):
    return _extremum(x, axis, keepdims, np.argmax)


def amin(x, axis=None, keepdims=False):
    return _extremum(x, axis, keepdims, np.argmin)


def logsumexp(x, axis=None, keepdims=False):
    shift = amax(x, axis=axis, keepdims=True)
    out = np.log(np.sum(np.exp(x - shift), axis=axis, keepdims=True)) + shift
    return out if keepdims else np.squeeze(out, axis=axis)


def reshape(x, shape):
    return np.reshape(x, shape)


def permute(x, axes):
    return np.transpose(x, axes)


def broadcast_to(x, shape):
    return np.broadcast_to(x, shape)


def sum_to(x, shape):
    return sum_to_forward(x, shape)


def unsqueeze(x, axis):
    return np.expand_dims(x, axis)


def squeeze(x, axis=None):
    return np.squeeze(x, axis=axis)


def getitem(x, index):
    return np.asarray(x[index])


def scatter_add(x, index, shape):
    out = np.zeros(shape, dtype=x.dtype)
    np.add.at(out, index, x)
    return out


def concatenate(*xs, axis=0):
    return np.concatenate(xs, axis=axis)


def stack(*xs, axis=0):
    return np.stack(xs, axis=axis)


def log_softmax(x, axis=-1):
    return x - logsumexp(x, axis=axis, keepdims=True)


def softmax(x, axis=-1):
    return np.exp(log_softmax(x, axis=axis))


def layer_norm(x, weight, bias, normalized_shape, eps=1e-5):
    # The mean of the squared deviations, which complex input (for the complex step) needs unconjugated.
    axes = tuple(range(x.ndim - len(normalized_shape), x.ndim))
    centred = x - np.mean(x, axis=axes, keepdims=True)
    return centred / np.sqrt(np.mean(centred * centred, axis=axes, keepdims=True) + eps) * weight + bias


def cross_entropy(logits, target):
    logp = log_softmax(logits, axis=1)
    return -np.mean(logp[np.arange(logits.shape[0]), target])


def cross_entropy_backward(g, logits, target):
    hot = np.eye(logits.shape[1])[target]
    return g * (softmax(logits, axis=1) - hot) / logits.shape[0]


def mse_loss(x, y):
    return np.mean(np.square(x - y))
