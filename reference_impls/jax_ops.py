"""JAX counterparts of the table's ops: jax arrays in and out, differentiable by ``jax.grad``/``jax.jvp``.

Importing this module enables float64 in JAX (``jax_enable_x64``): without it
JAX silently computes float64 inputs in float32, which would make it useless
as a float64 reference.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp as _jax_logsumexp

from gradverify.ops import flat_indices, sum_to_axes

jax.config.update("jax_enable_x64", True)


def _positions(shape, index):
    return jnp.asarray(flat_indices(tuple(shape), index))


neg = jnp.negative
exp = jnp.exp
log = jnp.log
log1p = jnp.log1p
sqrt = jnp.sqrt
sin = jnp.sin
cos = jnp.cos
tanh = jnp.tanh
sigmoid = jax.nn.sigmoid


def tanh_backward(g, x):
    return g * (4 * jax.nn.sigmoid(2 * x) * jax.nn.sigmoid(-2 * x))


def sigmoid_backward(g, x):
    return g * (jax.nn.sigmoid(x) * jax.nn.sigmoid(-x))
softplus = jax.nn.softplus
relu = jax.nn.relu


def abs(x):  # noqa: A001  (the op's name)
    # jnp.abs has abs'(0) = 1; x * sign(x) has the table's (and PyTorch's) abs'(0) = 0.
    return x * jnp.sign(x)


def pow_scalar(x, exponent):
    return jnp.power(x, exponent)


def clip(x, lo, hi):
    # jnp.clip gives 1/2 at x == lo or hi (maximum splits ties); the table passes the
    # gradient on the closed interval, as PyTorch does.
    return jnp.where((x >= lo) & (x <= hi), x, jnp.clip(x, lo, hi))


def astype(x, dtype):
    return x.astype(np.dtype(dtype))


add = jnp.add
sub = jnp.subtract
mul = jnp.multiply
div = jnp.true_divide
pow = jnp.power  # noqa: A001  (the op's name)
maximum = jnp.maximum
minimum = jnp.minimum
matmul = jnp.matmul


def linear(x, weight, bias):
    return jnp.matmul(x, weight.T) + bias


def where(cond, x, y):
    return jnp.where(jnp.asarray(cond).astype(bool), x, y)


def sum(x, axis=None, keepdims=False):  # noqa: A001  (the op's name)
    return jnp.sum(x, axis=axis, keepdims=keepdims)


def mean(x, axis=None, keepdims=False):
    return jnp.mean(x, axis=axis, keepdims=keepdims)


def amax(x, axis=None, keepdims=False):
    return jnp.max(x, axis=axis, keepdims=keepdims)


def amin(x, axis=None, keepdims=False):
    return jnp.min(x, axis=axis, keepdims=keepdims)


def logsumexp(x, axis=None, keepdims=False):
    return _jax_logsumexp(x, axis=axis, keepdims=keepdims)


def reshape(x, shape):
    return jnp.reshape(x, tuple(shape))


def permute(x, axes):
    return jnp.transpose(x, tuple(axes))


def broadcast_to(x, shape):
    return jnp.broadcast_to(x, tuple(shape))


def sum_to(x, shape):
    return jnp.sum(x, axis=sum_to_axes(x.shape, tuple(shape)), keepdims=True).reshape(tuple(shape))


def unsqueeze(x, axis):
    return jnp.expand_dims(x, axis)


def squeeze(x, axis=None):
    return jnp.squeeze(x, axis=axis)


def getitem(x, index):
    return jnp.reshape(x, (-1,))[_positions(x.shape, index)]


def scatter_add(x, index, shape):
    positions = _positions(shape, index)
    flat = jnp.zeros(int(np.prod(shape, dtype=np.int64)), dtype=x.dtype)
    return flat.at[positions].add(x).reshape(tuple(shape))


def concatenate(*xs, axis=0):
    return jnp.concatenate(xs, axis=axis)


def stack(*xs, axis=0):
    return jnp.stack(xs, axis=axis)


def softmax(x, axis=-1):
    return jax.nn.softmax(x, axis=axis)


def log_softmax(x, axis=-1):
    return jax.nn.log_softmax(x, axis=axis)


def layer_norm(x, weight, bias, normalized_shape, eps=1e-5):
    axes = tuple(range(x.ndim - len(normalized_shape), x.ndim))
    return (x - jnp.mean(x, axis=axes, keepdims=True)) * jax.lax.rsqrt(
        jnp.var(x, axis=axes, keepdims=True) + eps) * weight + bias


def cross_entropy(logits, target):
    logp = jax.nn.log_softmax(logits, axis=1)
    picked = jnp.take_along_axis(logp, jnp.asarray(target)[:, None], axis=1)
    return -jnp.mean(picked)


def cross_entropy_backward(g, logits, target):
    hot = jax.nn.one_hot(jnp.asarray(target), logits.shape[1], dtype=logits.dtype)
    return g * (jax.nn.softmax(logits, axis=1) - hot) / logits.shape[0]


def mse_loss(x, y):
    return jnp.mean(jnp.square(x - y))
