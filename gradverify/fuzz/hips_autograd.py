"""Example adapter: HIPS autograd (``pip install autograd``), a numpy-based engine, under test.

``python -m gradverify fuzz --target gradverify.fuzz.hips_autograd:HipsAutogradAdapter``
puts autograd's derivatives under every oracle of the campaign.  Each op of
the table is written with ``autograd.numpy`` (the forward is numpy's, the
derivatives are autograd's own rules); ``scatter_add``, which autograd
cannot differentiate (``np.add.at`` writes in place), is declared as an
autograd primitive with its two rules, as autograd's docs describe.
"""
from __future__ import annotations

import autograd.numpy as anp
import numpy as np
from autograd import make_vjp
from autograd.core import make_jvp
from autograd.extend import defjvp, defvjp, primitive
from autograd.scipy.special import logsumexp as _logsumexp
from autograd.tracer import getval

from gradverify.fuzz.adapters import Adapter
from gradverify.fuzz.surface import ArraySurface


@primitive
def scatter_add(x, index, shape):
    out = np.zeros(shape, dtype=x.dtype)
    np.add.at(out, index, x)
    return out


defvjp(scatter_add, lambda ans, x, index, shape: lambda g: g[index])
defjvp(scatter_add, lambda t, ans, x, index, shape: scatter_add(t, index, shape))


def _sum_to(x, shape):
    shape = tuple(shape)
    lead = anp.ndim(x) - len(shape)
    summed = anp.sum(x, axis=tuple(range(lead))) if lead else x
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and anp.shape(summed)[i] != 1)
    return anp.sum(summed, axis=axes, keepdims=True) if axes else summed


def _log_softmax(x, axis=-1):
    return x - _logsumexp(x, axis=axis, keepdims=True)


def _sigmoid(x):
    e = anp.exp(-anp.abs(x))
    return anp.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _where(cond, x, y):
    shape = np.broadcast_shapes(anp.shape(cond), anp.shape(x), anp.shape(y))
    return anp.where(cond, anp.broadcast_to(x, shape), anp.broadcast_to(y, shape))


def _cross_entropy(logits, target):
    return -anp.mean(_log_softmax(logits, axis=1)[np.arange(anp.shape(logits)[0]), target])


OPS = {
    "neg": anp.negative, "exp": anp.exp, "log": anp.log, "log1p": anp.log1p, "sqrt": anp.sqrt, "sin": anp.sin,
    "cos": anp.cos, "tanh": anp.tanh, "sigmoid": _sigmoid, "abs": anp.abs,
    "sigmoid_backward": lambda g, x: g * _sigmoid(x) * _sigmoid(-x),
    "tanh_backward": lambda g, x: g * (1 - anp.tanh(x) ** 2),
    "softplus": lambda x: anp.maximum(x, 0) + anp.log1p(anp.exp(-anp.abs(x))),
    "relu": lambda x: anp.where(x > 0, x, anp.zeros_like(x)),
    "pow_scalar": lambda x, exponent: x ** exponent,
    "clip": lambda x, lo, hi: anp.clip(x, lo, hi),
    "astype": lambda x, dtype: x.astype(np.dtype(dtype)),
    "add": anp.add, "sub": anp.subtract, "mul": anp.multiply, "div": anp.true_divide, "pow": anp.power,
    "maximum": anp.maximum, "minimum": anp.minimum, "where": _where, "matmul": anp.matmul,
    "linear": lambda x, weight, bias: anp.matmul(x, anp.transpose(weight)) + bias,
    "sum": lambda x, axis=None, keepdims=False: anp.sum(x, axis=axis, keepdims=keepdims),
    "mean": lambda x, axis=None, keepdims=False: anp.mean(x, axis=axis, keepdims=keepdims),
    "amax": lambda x, axis=None, keepdims=False: anp.max(x, axis=axis, keepdims=keepdims),
    "amin": lambda x, axis=None, keepdims=False: anp.min(x, axis=axis, keepdims=keepdims),
    "logsumexp": lambda x, axis=None, keepdims=False: _logsumexp(x, axis=axis, keepdims=keepdims),
    "reshape": lambda x, shape: anp.reshape(x, shape),
    "permute": lambda x, axes: anp.transpose(x, axes),
    "broadcast_to": lambda x, shape: anp.broadcast_to(x, shape),
    "sum_to": _sum_to,
    "unsqueeze": lambda x, axis: anp.expand_dims(x, axis),
    "squeeze": lambda x, axis=None: anp.squeeze(x, axis=axis),
    "getitem": lambda x, index: x[index],
    "scatter_add": scatter_add,
    "concatenate": lambda *xs, axis=0: anp.concatenate(xs, axis=axis),
    "stack": lambda *xs, axis=0: anp.stack(xs, axis=axis),
    "log_softmax": _log_softmax,
    "softmax": lambda x, axis=-1: anp.exp(_log_softmax(x, axis=axis)),
    "cross_entropy": _cross_entropy,
    "cross_entropy_backward": lambda g, logits, target: g * (
        anp.exp(_log_softmax(logits, axis=1)) - np.eye(anp.shape(logits)[1])[target]) / anp.shape(logits)[0],
    "mse_loss": lambda x, y: anp.mean((x - y) ** 2),
    "layer_norm": lambda x, weight, bias, normalized_shape, eps=1e-5: _SURFACE.layer_norm(
        x, normalized_shape, weight, bias, eps),
}
"""Every op of the table in ``autograd.numpy`` (same names and signatures as the table's forwards)."""


def _autograd_surface():
    """The public-API functions (var, cumsum, layer_norm ...) written over ``autograd.numpy``."""
    surface = ArraySurface("numpy")
    surface.xp = anp
    for name in ("exp", "log", "log1p", "expm1", "sqrt"):
        setattr(surface, f"_{name}", getattr(anp, name))
    return surface


_SURFACE = _autograd_surface()


class HipsAutogradAdapter(Adapter):
    """HIPS autograd: reverse mode (``make_vjp``), forward mode (``make_jvp``), and both nested for ``H u``."""

    name = "autograd"
    second_order = True

    def op(self, name):
        try:
            return OPS[name]
        except KeyError:
            raise NotImplementedError(f"the autograd adapter has no rule for op {name!r}") from None

    def const(self, array):
        return np.asarray(array)

    def surface(self):
        return _SURFACE

    def value(self, x):
        return float(getval(x))

    def vjp(self, fn, inputs, cotangent):
        pullback, value = make_vjp(lambda xs: fn(*xs))(tuple(inputs))
        return value, list(pullback(np.asarray(cotangent, dtype=np.result_type(getval(value)))))

    def jvp(self, fn, inputs, tangents):
        value, tangent_output = make_jvp(lambda xs: fn(*xs), tuple(inputs))(tuple(tangents))
        return value, tangent_output

    def hvp(self, fn, inputs, cotangent, tangents, forward=False):
        def gradient(xs):
            pullback, value = make_vjp(lambda ys: fn(*ys))(xs)
            return pullback(anp.asarray(cotangent, dtype=np.result_type(getval(value))))

        if forward:
            return list(make_jvp(gradient, tuple(inputs))(tuple(tangents))[1])
        return list(make_vjp(gradient)(tuple(inputs))[0](tuple(tangents)))

