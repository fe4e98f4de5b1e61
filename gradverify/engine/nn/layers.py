"""Layers and losses of ``ge.nn``, torch-compatible in parameter layout and initialisation."""
from __future__ import annotations

import math
import operator
from collections import OrderedDict

from .. import api
from . import functional as F
from .module import Module, Parameter


class Linear(Module):
    """``y = x W^T + b`` with ``W`` of shape (out_features, in_features), initialised as torch does.

    torch's default is kaiming_uniform(a=sqrt(5)) for the weight, which is
    U(-1/sqrt(in), 1/sqrt(in)), and the same bound for the bias.
    """

    def __init__(self, in_features, out_features, bias=True, dtype=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        bound = 1.0 / math.sqrt(in_features) if in_features > 0 else 0.0
        dtype = dtype or api.get_default_dtype()
        rng = api.generator()
        self.weight = Parameter(rng.uniform(-bound, bound, (out_features, in_features)).astype(dtype))
        self.bias = Parameter(rng.uniform(-bound, bound, (out_features,)).astype(dtype)) if bias else None

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def _activation(name, fn):
    class Activation(Module):
        def forward(self, x):
            return fn(x)

    Activation.__name__ = Activation.__qualname__ = name
    Activation.__doc__ = f"Applies {fn.__name__} elementwise."
    return Activation


Sigmoid = _activation("Sigmoid", F.sigmoid)
Tanh = _activation("Tanh", F.tanh)
Softplus = _activation("Softplus", F.softplus)


class ReLU(Module):
    """Applies relu elementwise; with ``inplace`` the input itself is changed (recorded in the graph), as torch."""

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace

    def forward(self, x):
        return F.relu(x, self.inplace)


class LeakyReLU(Module):
    """Applies leaky_relu with ``negative_slope``."""

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)


class Dropout(Module):
    """Zeroes elements with probability ``p`` while training (see ``train()``/``eval()``)."""

    def __init__(self, p=0.5):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p: dropout probability must lie in [0, 1], got {p}")
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)


class Softmax(Module):
    """Softmax along ``dim``; without ``dim``, PyTorch's deprecated implicit choice (with its warning)."""

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return F.softmax(x, dim=self.dim)


class LogSoftmax(Softmax):
    """Log-softmax along ``dim``; without ``dim``, PyTorch's deprecated implicit choice (with its warning)."""

    def forward(self, x):
        return F.log_softmax(x, dim=self.dim)


class Sequential(Module):
    """Modules applied in order; children are named "0", "1", ... as in torch, or by an OrderedDict's keys."""

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            for name, m in modules[0].items():
                setattr(self, name, m)
        else:
            for i, m in enumerate(modules):
                setattr(self, str(i), m)

    def forward(self, x):
        for m in self._modules.values():
            x = m(x)
        return x

    def __getitem__(self, index):
        """The module at ``index`` (negative counts from the end), or a Sequential of a slice (names kept)."""
        if isinstance(index, slice):
            return type(self)(OrderedDict(list(self._modules.items())[index]))
        size = len(self)
        index = operator.index(index)
        if not -size <= index < size:
            raise IndexError(f"index {index} is out of range for a Sequential of {size} modules")
        return list(self._modules.values())[index]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def append(self, module):
        """Add ``module`` at the end (named by its position) and return this Sequential."""
        setattr(self, str(len(self)), module)
        return self


class MSELoss(Module):
    """Squared error, reduced by ``reduction`` ("mean", "sum" or "none"); see ``functional.mse_loss``."""

    def __init__(self, reduction="mean"):
        super().__init__()
        self.reduction = reduction

    def forward(self, input, target):
        return F.mse_loss(input, target, reduction=self.reduction)


class NLLLoss(Module):
    """Negative log-likelihood of log-probabilities at class indices; see ``functional.nll_loss``."""

    def __init__(self, weight=None, ignore_index=-100, reduction="mean"):
        super().__init__()
        self.weight, self.ignore_index, self.reduction = weight, ignore_index, reduction

    def forward(self, input, target):
        return F.nll_loss(input, target, self.weight, self.ignore_index, self.reduction)


class CrossEntropyLoss(Module):
    """Cross-entropy of logits against class indices or probabilities; see ``functional.cross_entropy``."""

    def __init__(self, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        super().__init__()
        self.weight, self.ignore_index, self.reduction = weight, ignore_index, reduction
        self.label_smoothing = label_smoothing

    def forward(self, input, target):
        return F.cross_entropy(input, target, self.weight, self.ignore_index, self.reduction, self.label_smoothing)
