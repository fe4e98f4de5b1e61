"""The engine's public torch-shaped API as fuzz graph nodes: the same call on the engine, PyTorch, JAX, numpy, mpmath.

A graph node may call a composed function of the public surface
(``surface(ops).var(v0, dim=1, correction=0)``) instead of a table op.  The
engine and PyTorch run the call as written (the engine is torch-shaped);
JAX, numpy and mpmath run :class:`ArraySurface`, the mathematical function
written once over an array module, so the mpmath ground truth judges the
engine's composition (a variance centred on a detached mean, ``log1p`` as
``log(1 + x)``, a ``correction=`` ignored) as it judges table ops.

:data:`FUNCTIONS` lists the callable names (``F.`` for
``torch.nn.functional``); :data:`SELECTIONS` are those whose result only
selects input entries (they round nothing).
"""
from __future__ import annotations

import functools
import math
from collections import namedtuple

import numpy as np

FUNCTIONS = (
    "var", "std", "cumsum", "prod", "topk", "einsum", "log1p", "expm1", "logsumexp",
    "F.softplus", "F.layer_norm", "F.binary_cross_entropy_with_logits", "F.smooth_l1_loss", "F.mse_loss",
)
SELECTIONS = frozenset({"topk"})
TopK = namedtuple("TopK", "values indices")


def surface(ops):
    """The API namespace matching the op namespace ``ops`` (engine, torch, jax, numpy or mpmath)."""
    own = vars(ops).get("surface")  # a namespace may bring its own (a perturbed one, say)
    return own if own is not None else for_backend(ops.name.split()[0])


@functools.lru_cache(maxsize=None)
def for_backend(backend: str):
    """``backend``'s surface: the engine or torch module itself (with ``.F``), else an :class:`ArraySurface`."""
    if backend == "engine":
        import gradverify.engine as module
    elif backend == "torch":
        import torch as module
    else:
        return ArraySurface(backend)
    return _Module(module)


class _Module:
    """A torch-shaped module with ``F`` for its ``nn.functional``."""

    def __init__(self, module):
        self._module, self.F = module, module.nn.functional

    def __getattr__(self, name):
        return getattr(self._module, name)


def _elementwise(backend):
    if backend == "mpmath":
        import mpmath

        return {name: np.frompyfunc(getattr(mpmath, name), 1, 1) for name in ("exp", "log", "log1p", "expm1", "sqrt")}
    if backend == "jax":
        import jax.numpy as jnp

        return {name: getattr(jnp, name) for name in ("exp", "log", "log1p", "expm1", "sqrt")}
    return {name: getattr(np, name) for name in ("exp", "log", "log1p", "expm1", "sqrt")}


def _axes(dim, ndim):
    if dim is None:
        return tuple(range(ndim))
    return tuple(d % ndim for d in (dim if isinstance(dim, (tuple, list)) else (dim,)))


def _arrays(method):
    """``method`` returning mpmath results as object arrays (0-d too), as the table's mpmath ops expect them."""

    @functools.wraps(method)
    def wrapped(self, *args, **kwargs):
        out = method(self, *args, **kwargs)
        if self.backend != "mpmath":
            return out
        if isinstance(out, TopK):
            return TopK(np.asarray(out.values, dtype=object), out.indices)
        return np.asarray(out, dtype=object)

    return wrapped


class ArraySurface:
    """The surface's functions, as mathematics over numpy (float, complex or mpmath object arrays) or jax.numpy.

    Where torch switches formulas (softplus's ``threshold``) the switch is
    kept; comparisons use the real part, so the complex step passes through.
    """

    def __init__(self, backend):
        if backend == "jax":
            import jax.numpy as xp
        else:
            xp = np
        self.xp, self.backend, self.F = xp, backend, self
        for name, fn in _elementwise(backend).items():
            setattr(self, f"_{name}", fn)

    def _real(self, x):
        return np.asarray(x).astype(float) if self.backend == "mpmath" else self.xp.real(x)

    def _abs(self, x):  # analytic where it is used (away from 0): the complex step stays valid
        return x * self.xp.sign(self._real(x))

    @_arrays
    def var(self, x, dim=None, keepdim=False, correction=1):
        count = math.prod(np.shape(x)[a] for a in _axes(dim, np.ndim(x)))
        axis = _axes(dim, np.ndim(x))
        centred = x - self.xp.sum(x, axis=axis, keepdims=True) / count
        return self.xp.sum(centred * centred, axis=axis, keepdims=keepdim) / (count - correction)

    @_arrays
    def std(self, x, dim=None, keepdim=False, correction=1):
        return self._sqrt(self.var(x, dim, keepdim, correction=correction))

    @_arrays
    def cumsum(self, x, dim):
        return self.xp.cumsum(x, axis=dim)

    @_arrays
    def prod(self, x, dim=None, keepdim=False):
        return self.xp.prod(x, axis=dim, keepdims=keepdim)

    @_arrays
    def topk(self, x, k, dim=-1, largest=True):
        order = self.xp.argsort(self._real(x), axis=dim)
        if largest:
            order = self.xp.flip(order, axis=dim)
        first = self.xp.take(order, self.xp.arange(k), axis=dim)
        return TopK(self.xp.take_along_axis(x, first, axis=dim), first)

    @_arrays
    def einsum(self, equation, *operands):
        return self.xp.einsum(equation, *operands)

    @_arrays
    def log1p(self, x):
        return self._log1p(x)

    @_arrays
    def expm1(self, x):
        return self._expm1(x)

    @_arrays
    def logsumexp(self, x, dim, keepdim=False):
        # Shifted by the largest entry: exp alone overflows float32 beyond 88.7 (JAX runs the graph's dtype).
        shift = self.xp.max(self._real(x), axis=dim, keepdims=True)
        out = self._log(self.xp.sum(self._exp(x - shift), axis=dim, keepdims=True)) + shift
        return out if keepdim else self.xp.squeeze(out, axis=dim)

    def _softplus(self, z):
        """log(1 + exp(z)) without overflow: max(z, 0) + log1p(exp(-|z|))."""
        return self.xp.where(self._real(z) > 0, z, 0 * z) + self._log1p(self._exp(-self._abs(z)))

    @_arrays
    def softplus(self, x, beta=1.0, threshold=20.0):
        return self.xp.where(self._real(x) * beta > threshold, x, self._softplus(beta * x) / beta)

    @_arrays
    def layer_norm(self, x, normalized_shape, weight=None, bias=None, eps=1e-5):
        axis = tuple(range(np.ndim(x) - len(normalized_shape), np.ndim(x)))
        count = math.prod(normalized_shape)
        centred = x - self.xp.sum(x, axis=axis, keepdims=True) / count
        variance = self.xp.sum(centred * centred, axis=axis, keepdims=True) / count
        out = centred / self._sqrt(variance + eps)
        out = out if weight is None else out * weight
        return out if bias is None else out + bias

    def _reduce(self, losses, reduction):
        if reduction == "none":
            return losses
        total = self.xp.sum(losses)
        return total if reduction == "sum" else total / np.size(losses)

    @_arrays
    def binary_cross_entropy_with_logits(self, input, target, reduction="mean", pos_weight=None):
        positive = target if pos_weight is None else pos_weight * target  # the engine's cancellation-free form
        losses = (1 - target) * self._softplus(input) + positive * self._softplus(-input)
        return self._reduce(losses, reduction)

    @_arrays
    def smooth_l1_loss(self, input, target, reduction="mean", beta=1.0):
        gap = input - target
        inside = self._real(self._abs(gap)) < beta
        return self._reduce(self.xp.where(inside, 0.5 * gap * gap / beta, self._abs(gap) - 0.5 * beta), reduction)

    @_arrays
    def mse_loss(self, input, target, reduction="mean"):
        gap = input - target
        return self._reduce(gap * gap, reduction)
