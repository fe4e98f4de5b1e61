"""PyTorch counterparts of the table's ops: torch tensors in and out, torch ops only.

Each function has the signature of the table's forward, so it can be
differentiated by ``torch.autograd`` and ``torch.func.jvp`` and compared entry
by entry with the engine.  PyTorch's own conventions (relu'(0) = 0, clamp
passing the gradient on [lo, hi], maximum/amax splitting ties) are the table's.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as tnf

from gradverify.ops import flat_indices, sum_to_axes

from . import result_shape


def _dims(axis, ndim):
    """A numpy ``axis`` (None, int or tuple) as a tuple of torch dims."""
    if axis is None:
        return tuple(range(ndim))
    return (axis,) if isinstance(axis, int) else tuple(axis)


def _positions(shape, index):
    return torch.as_tensor(np.array(flat_indices(tuple(shape), index), order="C"), dtype=torch.long)


def _torch_dtype(dtype):
    return getattr(torch, np.dtype(dtype).name)


neg = torch.neg
exp = torch.exp
log = torch.log
log1p = torch.log1p
sqrt = torch.sqrt
sin = torch.sin
cos = torch.cos
tanh = torch.tanh
sigmoid = torch.sigmoid


def tanh_backward(g, x):
    return g * (4 * torch.sigmoid(2 * x) * torch.sigmoid(-2 * x))


def sigmoid_backward(g, x):
    return g * (torch.sigmoid(x) * torch.sigmoid(-x))
relu = torch.relu
abs = torch.abs  # noqa: A001  (the op's name)


def softplus(x):
    # logaddexp(x, 0) is accurate everywhere; F.softplus switches to x above a threshold.
    return torch.logaddexp(x, torch.zeros_like(x))


def pow_scalar(x, exponent):
    return torch.pow(x, exponent)


def clip(x, lo, hi):
    return torch.clamp(x, lo, hi)


def astype(x, dtype):
    return x.to(_torch_dtype(dtype))


add = torch.add
sub = torch.sub
mul = torch.mul
div = torch.div
pow = torch.pow  # noqa: A001  (the op's name)
maximum = torch.maximum
minimum = torch.minimum
matmul = torch.matmul
linear = tnf.linear


def where(cond, x, y):
    return torch.where(cond.bool(), x, y)


def _reduce(torch_fn, x, axis, keepdims):
    dims = _dims(axis, x.ndim)
    # torch reads dim=() as "all dims"; numpy (and the table) as "no dims": the identity.
    return torch_fn(x, dim=dims, keepdim=keepdims) if dims else x


def sum(x, axis=None, keepdims=False):  # noqa: A001  (the op's name)
    return _reduce(torch.sum, x, axis, keepdims)


def mean(x, axis=None, keepdims=False):
    return _reduce(torch.mean, x, axis, keepdims)


def amax(x, axis=None, keepdims=False):
    return _reduce(torch.amax, x, axis, keepdims)


def amin(x, axis=None, keepdims=False):
    return _reduce(torch.amin, x, axis, keepdims)


def logsumexp(x, axis=None, keepdims=False):
    return _reduce(torch.logsumexp, x, axis, keepdims)


def reshape(x, shape):
    return torch.reshape(x, tuple(shape))


def permute(x, axes):
    return torch.permute(x, tuple(axes))


def broadcast_to(x, shape):
    return torch.broadcast_to(x, tuple(shape))


def sum_to(x, shape):
    return _reduce(torch.sum, x, sum_to_axes(tuple(x.shape), tuple(shape)), True).reshape(tuple(shape))


def unsqueeze(x, axis):
    return torch.reshape(x, result_shape(np.expand_dims, tuple(x.shape), axis))


def squeeze(x, axis=None):
    return torch.reshape(x, result_shape(np.squeeze, tuple(x.shape), axis))


def getitem(x, index):
    return torch.reshape(x, (-1,))[_positions(x.shape, index)]


def scatter_add(x, index, shape):
    positions = _positions(shape, index)
    values = torch.broadcast_to(x, tuple(positions.shape)).reshape(-1)
    flat = torch.zeros(int(np.prod(shape, dtype=np.int64)), dtype=x.dtype)
    return flat.index_add(0, positions.reshape(-1), values).reshape(tuple(shape))


def concatenate(*xs, axis=0):
    return torch.cat(xs, dim=axis)


def stack(*xs, axis=0):
    return torch.stack(xs, dim=axis)


def softmax(x, axis=-1):
    return torch.softmax(x, dim=axis)


def log_softmax(x, axis=-1):
    return torch.log_softmax(x, dim=axis)


def layer_norm(x, weight, bias, normalized_shape, eps=1e-5):
    return tnf.layer_norm(x, tuple(normalized_shape), weight, bias, eps)


def cross_entropy(logits, target):
    return tnf.cross_entropy(logits, target.long())


def cross_entropy_backward(g, logits, target):
    hot = tnf.one_hot(target.long(), logits.shape[1]).to(logits.dtype)
    return g * (torch.softmax(logits, dim=1) - hot) / logits.shape[0]


def mse_loss(x, y):
    return tnf.mse_loss(x, y)
