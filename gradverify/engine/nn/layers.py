"""Layers and losses of ``ge.nn``, torch-compatible in parameter layout and initialisation."""
from __future__ import annotations

import math
import operator
from collections import OrderedDict

import numpy as np

from .. import api
from ..devices import check_device
from ..core import Tensor, mark_modified
from . import functional as F
from . import init
from .module import Module, Parameter


class Linear(Module):
    """``y = x W^T + b`` with ``W`` of shape (out_features, in_features), initialised as torch does.

    torch's default is kaiming_uniform(a=sqrt(5)) for the weight, which is
    U(-1/sqrt(in), 1/sqrt(in)), and the same bound for the bias.
    """

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__()
        check_device(device)
        self.in_features, self.out_features = in_features, out_features
        dtype = dtype or api.get_default_dtype()
        self.weight = Parameter(np.zeros((out_features, in_features), dtype))
        self.bias = Parameter(np.zeros((out_features,), dtype)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        """torch's initialisation, drawn as torch draws it (the weight first, then the bias)."""
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features) if self.in_features > 0 else 0
            init.uniform_(self.bias, -bound, bound)

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

    def __init__(self, size_average=None, reduce=None, reduction="mean"):
        super().__init__()
        self.reduction = F.legacy_reduction(size_average, reduce, reduction)

    def forward(self, input, target):
        return F.mse_loss(input, target, reduction=self.reduction)


class NLLLoss(Module):
    """Negative log-likelihood of log-probabilities at class indices; see ``functional.nll_loss``."""

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean"):
        super().__init__()
        self.weight, self.ignore_index = weight, ignore_index
        self.reduction = F.legacy_reduction(size_average, reduce, reduction)

    def forward(self, input, target):
        return F.nll_loss(input, target, self.weight, ignore_index=self.ignore_index, reduction=self.reduction)


class CrossEntropyLoss(Module):
    """Cross-entropy of logits against class indices or probabilities; see ``functional.cross_entropy``."""

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean",
                 label_smoothing=0.0):
        super().__init__()
        self.weight, self.ignore_index = weight, ignore_index
        self.reduction = F.legacy_reduction(size_average, reduce, reduction)
        self.label_smoothing = label_smoothing

    def forward(self, input, target):
        return F.cross_entropy(input, target, self.weight, ignore_index=self.ignore_index, reduction=self.reduction,
                               label_smoothing=self.label_smoothing)


SiLU = _activation("SiLU", F.silu)


class Identity(Module):
    """Returns its input unchanged (any constructor arguments are ignored, as torch)."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, x):
        return x


class Flatten(Module):
    """Merges axes ``start_dim`` .. ``end_dim`` (by default all but the batch axis) into one."""

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, x):
        return api.flatten(x, self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class GELU(Module):
    """Applies gelu: exact (``approximate='none'``) or torch's tanh approximation."""

    def __init__(self, approximate="none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"approximate: expected 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        return F.gelu(x, self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class ELU(Module):
    """Applies elu with ``alpha``."""

    def __init__(self, alpha=1.0):
        super().__init__()
        self.alpha = alpha

    def forward(self, x):
        return F.elu(x, self.alpha)

    def extra_repr(self):
        return f"alpha={self.alpha}"


class Embedding(Module):
    """A lookup table of ``num_embeddings`` rows of size ``embedding_dim``, initialised N(0, 1) as torch;
    the ``padding_idx`` row starts at zero and gets no gradient."""

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, device=None, dtype=None):
        super().__init__()
        check_device(device)
        if padding_idx is not None:
            if not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(f"padding_idx: must lie in [-{num_embeddings}, {num_embeddings}), got {padding_idx}")
            padding_idx %= num_embeddings
        self.num_embeddings, self.embedding_dim, self.padding_idx = num_embeddings, embedding_dim, padding_idx
        self.weight = Parameter(np.zeros((num_embeddings, embedding_dim), dtype or api.get_default_dtype()))
        init.normal_(self.weight)
        if padding_idx is not None:
            self.weight.array[padding_idx] = 0.0

    def forward(self, input):
        return F.embedding(input, self.weight, self.padding_idx)

    def extra_repr(self):
        padding = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return f"{self.num_embeddings}, {self.embedding_dim}{padding}"


class LayerNorm(Module):
    """Layer normalisation over the trailing ``normalized_shape`` axes, with a weight of ones and a bias of
    zeros when ``elementwise_affine``."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, device=None, dtype=None):
        super().__init__()
        check_device(device)
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.normalized_shape, self.eps, self.elementwise_affine = shape, eps, elementwise_affine
        dtype = dtype or api.get_default_dtype()
        self.register_parameter("weight", Parameter(np.ones(shape, dtype)) if elementwise_affine else None)
        self.register_parameter("bias", Parameter(np.zeros(shape, dtype)) if elementwise_affine and bias else None)

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class BatchNorm1d(Module):
    """Batch normalisation of (N, C) or (N, C, L) input per channel, as ``torch.nn.BatchNorm1d``.

    Training normalises by the batch's statistics and, when ``track_running_stats``, blends them into the
    ``running_mean`` and ``running_var`` buffers by ``momentum`` (None: a cumulative average over
    ``num_batches_tracked``); eval normalises by the running statistics.
    """

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, device=None, dtype=None):
        super().__init__()
        check_device(device)
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        dtype = dtype or api.get_default_dtype()
        self.register_parameter("weight", Parameter(np.ones(num_features, dtype)) if affine else None)
        self.register_parameter("bias", Parameter(np.zeros(num_features, dtype)) if affine else None)
        tracked = track_running_stats
        self.register_buffer("running_mean", Tensor(np.zeros(num_features, dtype)) if tracked else None)
        self.register_buffer("running_var", Tensor(np.ones(num_features, dtype)) if tracked else None)
        self.register_buffer("num_batches_tracked", Tensor(np.array(0, np.int64)) if tracked else None)

    def forward(self, x):
        if x.ndim not in (2, 3) or x.shape[1] != self.num_features:
            raise ValueError(f"input: expected shape (N, {self.num_features}) or (N, {self.num_features}, L), "
                             f"got {tuple(x.shape)}")
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.num_batches_tracked is not None:
            self.num_batches_tracked.array[...] += 1
            mark_modified(self.num_batches_tracked)
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked.array)
        batch_statistics = self.training or self.running_mean is None
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, batch_statistics,
                            momentum, self.eps)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


def _checked_index(index, size, kind):
    index = operator.index(index)
    if not -size <= index < size:
        raise IndexError(f"index {index} is out of range for a {kind} of {size} entries")
    return index % size


class _NumberedList(Module):
    """Entries registered as "0", "1", ... in the store ``_store`` names; ``_put`` registers one."""

    _store = ""

    def __init__(self, entries=None):
        super().__init__()
        self.extend(entries or ())

    def _put(self, name, value):
        raise NotImplementedError

    def _entries(self):
        return getattr(self, self._store)

    def _name_of(self, index):
        return str(_checked_index(index, len(self), type(self).__name__))

    def __getitem__(self, index):
        if isinstance(index, slice):
            return type(self)(list(self._entries().values())[index])
        return self._entries()[self._name_of(index)]

    def __setitem__(self, index, value):
        self._put(self._name_of(index), value)

    def __len__(self):
        return len(self._entries())

    def __iter__(self):
        return iter(self._entries().values())

    def __iadd__(self, values):
        return self.extend(values)

    def append(self, value):
        """Add ``value`` at the end and return this list."""
        self._put(str(len(self)), value)
        return self

    def extend(self, values):
        """Append each of ``values`` and return this list."""
        for value in list(values):
            self.append(value)
        return self


class ModuleList(_NumberedList):
    """A list of modules, registered as children "0", "1", ... so their parameters are found."""

    _store = "_modules"

    def _put(self, name, module):
        self.add_module(name, module)

    def __delitem__(self, index):
        modules = list(self._modules.values())
        del modules[index if isinstance(index, slice) else _checked_index(index, len(self), type(self).__name__)]
        self._renumber(modules)

    def _renumber(self, modules):
        """Hold exactly ``modules``, named "0", "1", ... again (as torch keeps a ModuleList's names)."""
        for name in list(self._modules):
            delattr(self, name)
        self.extend(modules)

    def extend(self, modules):
        """Append each of ``modules`` and return this list."""
        if isinstance(modules, Module) and not isinstance(modules, (ModuleList, Sequential)):
            raise TypeError(f"modules: expected an iterable of modules, got a single {type(modules).__name__}")
        return super().extend(modules)

    def insert(self, index, module):
        """Insert ``module`` before position ``index``."""
        modules = list(self._modules.values())
        modules.insert(index, module)
        self._renumber(modules)

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ModuleList has no forward(); iterate over it and call its modules")


class ModuleDict(Module):
    """A dict of modules (insertion-ordered), each registered as a child under its key."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __getitem__(self, key):
        return self._modules[key]

    def __setitem__(self, key, module):
        self.add_module(key, module)

    def __delitem__(self, key):
        if key not in self._modules:
            raise KeyError(key)
        delattr(self, key)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def __contains__(self, key):
        return key in self._modules

    def keys(self):
        return self._modules.keys()

    def items(self):
        return self._modules.items()

    def values(self):
        return self._modules.values()

    def pop(self, key):
        """Remove the module under ``key`` and return it."""
        module = self[key]
        del self[key]
        return module

    def clear(self):
        for key in list(self._modules):
            del self[key]

    def update(self, modules):
        """Add the modules of a mapping or of ``(key, module)`` pairs."""
        for key, module in (modules.items() if hasattr(modules, "items") else modules):
            self[key] = module

    def forward(self, *args, **kwargs):
        raise NotImplementedError("ModuleDict has no forward(); index it and call its modules")


class ParameterList(_NumberedList):
    """A list of parameters, registered as "0", "1", ...; tensors that are not Parameters are wrapped in one."""

    _store = "_parameters"

    def _put(self, name, value):
        self.register_parameter(name, _as_parameter(value))


def _as_parameter(value):
    if isinstance(value, Parameter):
        return value
    if isinstance(value, Tensor):
        return Parameter(value)
    raise TypeError(f"value: expected a Parameter or Tensor, got {type(value).__name__}")


class L1Loss(Module):
    """Absolute error, reduced by ``reduction``; see ``functional.l1_loss``."""

    def __init__(self, size_average=None, reduce=None, reduction="mean"):
        super().__init__()
        self.reduction = F.legacy_reduction(size_average, reduce, reduction)

    def forward(self, input, target):
        return F.l1_loss(input, target, reduction=self.reduction)


class SmoothL1Loss(Module):
    """Squared error below ``beta``, absolute error above; see ``functional.smooth_l1_loss``."""

    def __init__(self, size_average=None, reduce=None, reduction="mean", beta=1.0):
        super().__init__()
        self.reduction, self.beta = F.legacy_reduction(size_average, reduce, reduction), beta

    def forward(self, input, target):
        return F.smooth_l1_loss(input, target, reduction=self.reduction, beta=self.beta)


class BCELoss(Module):
    """Binary cross-entropy of probabilities; see ``functional.binary_cross_entropy``."""

    def __init__(self, weight=None, size_average=None, reduce=None, reduction="mean"):
        super().__init__()
        self.weight, self.reduction = weight, F.legacy_reduction(size_average, reduce, reduction)

    def forward(self, input, target):
        return F.binary_cross_entropy(input, target, self.weight, reduction=self.reduction)


class BCEWithLogitsLoss(Module):
    """Binary cross-entropy of logits (stable form); see ``functional.binary_cross_entropy_with_logits``."""

    def __init__(self, weight=None, size_average=None, reduce=None, reduction="mean", pos_weight=None):
        super().__init__()
        self.weight, self.pos_weight = weight, pos_weight
        self.reduction = F.legacy_reduction(size_average, reduce, reduction)

    def forward(self, input, target):
        return F.binary_cross_entropy_with_logits(input, target, self.weight, reduction=self.reduction,
                                                  pos_weight=self.pos_weight)
