"""``ge.nn.init``: torch.nn.init's initialisers, filling a tensor in place (outside the graph) and returning it.

They draw as torch's do (``generator=`` or the default generator, seeded by ``ge.manual_seed``),
so a source that repeats torch's numbers (:func:`gradverify.engine.random.use_source`) gives torch's values.
"""
from __future__ import annotations

import math

import numpy as np

from .. import api
from ..random import generator_arg


def calculate_gain(nonlinearity, param=None):
    """The recommended gain for ``nonlinearity``, as torch.nn.init.calculate_gain."""
    if nonlinearity in ("linear", "sigmoid", "conv1d", "conv2d", "conv3d"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        return math.sqrt(2.0 / (1 + slope**2))
    raise ValueError(f"nonlinearity: unsupported {nonlinearity!r}; expected linear, sigmoid, tanh, relu or leaky_relu")


def _fans(tensor):
    if tensor.ndim < 2:
        raise ValueError(f"fan in and fan out need a tensor with at least 2 dimensions, got shape {tensor.shape}")
    receptive = int(np.prod(tensor.shape[2:]))
    return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def _fill(tensor, values):
    with api.no_grad():
        return tensor.copy_(api.tensor(values, dtype=tensor.dtype))


def uniform_(tensor, a=0.0, b=1.0, generator=None):
    return _fill(tensor, generator_arg(generator).source.uniform(tensor.shape, a, b, tensor.dtype))


def normal_(tensor, mean=0.0, std=1.0, generator=None):
    return _fill(tensor, generator_arg(generator).source.normal(tensor.shape, mean, std, tensor.dtype))


def constant_(tensor, val):
    return _fill(tensor, np.full(tensor.shape, val))


def zeros_(tensor):
    return constant_(tensor, 0.0)


def ones_(tensor):
    return constant_(tensor, 1.0)


def xavier_uniform_(tensor, gain=1.0, generator=None):
    fan_in, fan_out = _fans(tensor)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    bound = math.sqrt(3.0) * std  # torch's arithmetic, so that the bound rounds as torch's
    return uniform_(tensor, -bound, bound, generator)


def xavier_normal_(tensor, gain=1.0, generator=None):
    fan_in, fan_out = _fans(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / float(fan_in + fan_out)), generator)


def _kaiming_std(tensor, a, mode, nonlinearity):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode: expected 'fan_in' or 'fan_out', got {mode!r}")
    fan = _fans(tensor)[0 if mode == "fan_in" else 1]
    return calculate_gain(nonlinearity, a) / math.sqrt(fan)


def kaiming_uniform_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    if 0 in tensor.shape:
        return tensor  # torch leaves an empty tensor as it is
    bound = math.sqrt(3.0) * _kaiming_std(tensor, a, mode, nonlinearity)
    return uniform_(tensor, -bound, bound, generator)


def kaiming_normal_(tensor, a=0.0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    if 0 in tensor.shape:
        return tensor
    return normal_(tensor, 0.0, _kaiming_std(tensor, a, mode, nonlinearity), generator)
