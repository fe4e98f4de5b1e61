"""``ge.nn.utils``: gradient clipping and flattening parameters to one vector, as ``torch.nn.utils``."""
from __future__ import annotations

import math

import numpy as np

from .. import api
from ..core import Tensor, mark_modified


def _tensor_list(parameters, argname):
    """``parameters`` (one tensor or an iterable of them) as a list, refusing anything that is not a tensor."""
    tensors = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    for t in tensors:
        if not isinstance(t, Tensor):
            raise TypeError(f"{argname}: expected tensors, got {type(t).__name__}")
    return tensors


def _grads(parameters):
    return [p.grad for p in _tensor_list(parameters, "parameters") if p.grad is not None]


def _vector_norm(array, norm_type):
    magnitudes = np.abs(array)
    if norm_type == math.inf:
        return magnitudes.max(initial=0.0)
    if norm_type == -math.inf:
        return magnitudes.min(initial=math.inf)
    if norm_type == 0:
        return np.count_nonzero(magnitudes).astype(array.dtype)
    return np.sum(magnitudes ** norm_type) ** (1.0 / norm_type)


def _scale_in_place(grad, factor):
    grad.array *= factor  # in place, as torch: a reference to .grad sees the clipped values
    mark_modified(grad)


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """Scale the gradients of ``parameters`` in place so that their joint ``norm_type``-norm is at most ``max_norm``.

    The norm is that of the per-tensor norms; the factor is ``max_norm / (total + 1e-6)`` clamped to 1, as
    torch.  Returns the total norm (before clipping) as a 0-d tensor; ``foreach`` is accepted and ignored.
    """
    norm_type = float(norm_type)
    grads = _grads(parameters)
    if not grads:
        return api.tensor(0.0)
    dtype = np.result_type(*(g.array.dtype for g in grads))
    per_tensor = np.array([_vector_norm(g.array, norm_type) for g in grads], dtype=dtype)
    total = np.asarray(_vector_norm(per_tensor, norm_type), dtype=dtype)
    if error_if_nonfinite and not np.isfinite(total):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, so it cannot be "
            "clipped. To disable this error and scale the gradients by the non-finite norm anyway, set "
            "`error_if_nonfinite=False`"
        )
    factor = np.minimum(np.asarray(max_norm, dtype) / (total + dtype.type(1e-6)), dtype.type(1.0))
    for g in grads:
        _scale_in_place(g, factor.astype(g.array.dtype))
    return Tensor(total)


def clip_grad_value_(parameters, clip_value, foreach=None):
    """Clamp every gradient of ``parameters`` into ``[-clip_value, clip_value]`` in place."""
    clip_value = float(clip_value)
    for g in _grads(parameters):
        np.clip(g.array, -clip_value, clip_value, out=g.array)
        mark_modified(g)


def parameters_to_vector(parameters):
    """The parameters flattened and joined into one differentiable 1-d tensor."""
    return api.cat([api.reshape(p, -1) for p in _tensor_list(parameters, "parameters")])


def vector_to_parameters(vec, parameters):
    """Make each parameter's values the next slice of the 1-d ``vec`` (sharing its memory, as torch)."""
    if not isinstance(vec, Tensor):
        raise TypeError(f"vec: expected a Tensor, got {type(vec).__name__}")
    parameters = _tensor_list(parameters, "parameters")
    needed = sum(p.array.size for p in parameters)
    if vec.ndim != 1 or vec.shape[0] != needed:
        raise ValueError(f"vec: expected a 1-d tensor of {needed} elements, got shape {tuple(vec.shape)}")
    start = 0
    for p in parameters:
        p.array = vec.array[start:start + p.array.size].reshape(p.array.shape)
        start += p.array.size
