"""``ge.nn.functional``: the torch.nn.functional subset built on the op table."""
from __future__ import annotations

import warnings

import numpy as np

from .. import api
from .. import functional as _ops
from ..tensor import Tensor

relu = api.relu
sigmoid = api.sigmoid
tanh = api.tanh
softplus = api.softplus


def _implicit_softmax_dim(name, ndim):
    """PyTorch's deprecated choice of dim when none is given: 0 for 0-, 1- and 3-D input, else 1."""
    warnings.warn(
        f"Implicit dimension choice for {name} has been deprecated. Change the call to include dim=X as an argument.",
        UserWarning,
        stacklevel=4,
    )
    return 0 if ndim in (0, 1, 3) else 1


def softmax(input, dim=None):
    """Softmax along ``dim``; without it, PyTorch's deprecated implicit dim (with its warning)."""
    return api.softmax(input, dim=_implicit_softmax_dim("softmax", input.ndim) if dim is None else dim)


def log_softmax(input, dim=None):
    """Log-softmax along ``dim``; without it, PyTorch's deprecated implicit dim (with its warning)."""
    return api.log_softmax(input, dim=_implicit_softmax_dim("log_softmax", input.ndim) if dim is None else dim)


def linear(input, weight, bias=None):
    """``input @ weight.T + bias`` (one op of the table with a bias, a matmul without)."""
    if bias is None:
        return input @ weight.T
    return _ops.linear(input, weight, bias)


def _reduce(loss_mean, count, reduction, argname="reduction"):
    if reduction == "mean":
        return loss_mean
    if reduction == "sum":
        return loss_mean * float(count)
    raise ValueError(f"{argname}: expected 'mean' or 'sum', got {reduction!r}")


def mse_loss(input, target, reduction="mean"):
    """Mean (or summed) squared error; the shapes must match."""
    if not isinstance(target, Tensor):
        target = api.tensor(target, dtype=input.dtype)
    if input.shape != target.shape:
        raise ValueError(f"mse_loss: input has shape {input.shape} but target has shape {target.shape}")
    return _reduce(_ops.mse_loss(input, target), input.data.size, reduction)


def _class_indices(name, input, target, scores):
    """``target`` as an array of class indices for (N, C) ``input``, checked like torch checks it."""
    target_data = target.data if isinstance(target, Tensor) else np.asarray(target)
    if input.ndim != 2:
        raise ValueError(f"{name}: input must be (N, C) {scores}, got shape {input.shape}")
    if target_data.shape != input.shape[:1] or target_data.dtype.kind not in "iu":
        raise ValueError(
            f"{name}: target must hold {input.shape[0]} integer class indices, "
            f"got shape {target_data.shape} and dtype {target_data.dtype}"
        )
    if target_data.size and (target_data.min() < 0 or target_data.max() >= input.shape[1]):
        raise ValueError(f"{name}: class indices must lie in [0, {input.shape[1]}), got {target_data}")
    return target_data


def cross_entropy(input, target, reduction="mean"):
    """Cross-entropy of (N, C) logits against (N,) integer class indices."""
    target_data = _class_indices("cross_entropy", input, target, "logits")
    target = target if isinstance(target, Tensor) else Tensor(target_data)
    return _reduce(_ops.cross_entropy(input, target), input.shape[0], reduction)


def nll_loss(input, target, reduction="mean"):
    """Negative log-likelihood of (N, C) log-probabilities at (N,) class indices (after log_softmax)."""
    target_data = _class_indices("nll_loss", input, target, "log-probabilities")
    picked = input[np.arange(input.shape[0]), target_data]
    return _reduce(-api.mean(picked), input.shape[0], reduction)


def leaky_relu(input, negative_slope=0.01):
    """x where x > 0, else negative_slope * x (the slope at 0 is negative_slope, as torch)."""
    return api.where(input > 0, input, input * negative_slope)


def dropout(input, p=0.5, training=True):
    """Zero each element with probability ``p`` and scale the others by 1 / (1 - p) (identity unless training)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout: p must lie in [0, 1], got {p}")
    if not training or p == 0.0:
        return input
    keep = api.generator().random(input.shape) >= p
    scale = np.zeros(input.shape) if p == 1.0 else keep / (1.0 - p)
    return input * Tensor(scale.astype(input.dtype))

