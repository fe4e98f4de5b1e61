"""Operators and torch-shaped methods of :class:`Tensor` (``x + y``, ``x.sum(dim=1)``, ``x.T`` ...)."""
from __future__ import annotations

import numpy as np

from gradverify.ops import TABLE

from . import api, shapes
from . import functional as F
from .devices import CPU, check_device
from .factories import dtype_arg
from .inplace import IN_PLACE, SET_ITEM
from .random import generator_arg
from .core import Tensor, apply, lift, mark_modified, promote

_ADD, _SUB, _MUL, _DIV = TABLE["add"], TABLE["sub"], TABLE["mul"], TABLE["div"]
_NEG, _GETITEM = TABLE["neg"], TABLE["getitem"]


def _binary(op, reflected=False):
    run = getattr(F, op.name)  # for the elementwise ops, fast_function's: the operator is the engine function
    if reflected:

        def method(self, other):
            return run(other, self)

        return method
    return run


def _pow(self, exponent):
    return api.pow(self, exponent)


def _rpow(self, base):
    return api.pow(lift(base, self), self)


def _index_arg(index):
    """Tensors inside an index become numpy arrays (integer or boolean)."""
    if isinstance(index, Tensor):
        return index.array
    if isinstance(index, tuple):
        return tuple(i.array if isinstance(i, Tensor) else i for i in index)
    if isinstance(index, list):
        return np.asarray(index)
    return index


def _getitem(self, index):
    return apply(_GETITEM, (self,), {"index": _index_arg(index)})


def _compare(ufunc):
    def method(self, other):
        other = other.array if isinstance(other, Tensor) else other
        return Tensor(ufunc(self.array, other))

    return method


_DEVICES = ("cpu", "cuda", "mps", "meta", "xpu")


def _bitwise(ufunc, reflected=False):
    def method(self, other):
        left, right = promote(self, lift(other, self))
        if reflected:
            left, right = right, left
        if left.array.dtype.kind not in "biu" or right.array.dtype.kind not in "biu":
            raise TypeError(f"{ufunc.__name__}: expected bool or integer tensors, got dtypes "
                            f"{left.array.dtype} and {right.array.dtype}")
        return Tensor(ufunc(left.array, right.array))

    return method


def _invert(self):
    if self.array.dtype.kind not in "biu":
        raise TypeError(f"~ (bitwise not): expected a bool or integer tensor, got dtype {self.array.dtype}")
    return Tensor(np.invert(self.array))


def _floordiv(self, other):
    return api.div(self, other, rounding_mode="floor")


def _rfloordiv(self, other):
    return api.div(other, self, rounding_mode="floor")


def _remainder(self, divisor):
    """``self - divisor * floor(self / divisor)`` (sign of the divisor), as torch.remainder.

    The values are numpy's remainder; the gradient is torch's (1 for self,
    -floor(self / divisor) for the divisor), carried by a term that adds exactly 0.
    """
    dividend, divisor = promote(self, lift(divisor, self))
    values = Tensor(np.remainder(dividend.array, divisor.array))
    if values.array.dtype.kind != "f" or not (dividend.requires_grad or divisor.requires_grad):
        return values
    differentiable = dividend - divisor * np.floor_divide(dividend.array, divisor.array)
    return values + (differentiable - differentiable.detach())


def _t(self):
    if self.ndim > 2:
        raise ValueError(f"t: expected a tensor of at most 2 dims, got shape {self.shape}")
    return F.swapaxes(self, 0, -1) if self.ndim == 2 else self


def _new(factory):
    def method(self, *size, dtype=None, requires_grad=False):
        return factory(*size, dtype=dtype or self.dtype, requires_grad=requires_grad)

    method.__doc__ = f"As ge.{factory.__name__}, of this tensor's dtype unless ``dtype`` is given."
    return method


def _new_full(self, size, fill_value, dtype=None, requires_grad=False):
    return api.full(size, fill_value, dtype=dtype or self.dtype, requires_grad=requires_grad)


def _new_tensor(self, data, dtype=None, requires_grad=False):
    return api.tensor(data, dtype=dtype or self.dtype, requires_grad=requires_grad)


def _to(self, *args, device=None, dtype=None, non_blocking=False, copy=False):
    """Convert the dtype as torch.Tensor.to: ``to(dtype)``, ``to(device, dtype)``, ``to(other)`` or by keyword.

    The result is the tensor itself when nothing changes, unless ``copy``; the
    engine runs on numpy, so the only device is 'cpu' (another raises, naming it).
    """
    if args and isinstance(args[0], Tensor):
        dtype, args = args[0].dtype, args[1:]
    elif args and _names_device(args[0]):
        device, args = args[0], args[1:]
    if args and not isinstance(args[0], bool):
        dtype, args = args[0], args[1:]
    if len(args) > 2:
        raise TypeError(f"to: expected at most non_blocking and copy after the device and dtype, got {args!r}")
    copy = args[1] if len(args) == 2 else copy
    check_device(device)
    target = dtype_arg(dtype)
    if target is not None and target != self.dtype:
        return F.astype(self, dtype=target)
    return self.clone() if copy else self


def _names_device(value):
    """Whether a positional argument of ``to`` is a device (a device, or a name such as 'cpu' or 'cuda:0')."""
    return isinstance(value, api.device) or (isinstance(value, str) and value.split(":")[0] in _DEVICES)


def _cuda(self, device=None, non_blocking=False):
    """Raises, naming the device, as torch does without CUDA: the engine has none."""
    check_device("cuda" if device is None else f"cuda:{device}" if isinstance(device, int) else device)


def _format(self, spec):
    """As torch: a one-element 0-d tensor formats as its value (``f"{loss:.4f}"``), any other as its repr."""
    if self.ndim == 0:
        return format(self.item(), spec)
    return object.__format__(self, spec)


def _uniform_(self, low=0.0, high=1.0, *, generator=None):
    """Fill with uniform draws on [low, high), as torch.Tensor.uniform_."""
    return _fill_with(self, "uniform_", generator_arg(generator).source.uniform(self.shape, low, high, self.dtype))


def _normal_(self, mean=0.0, std=1.0, *, generator=None):
    """Fill with normal draws, as torch.Tensor.normal_."""
    return _fill_with(self, "normal_", generator_arg(generator).source.normal(self.shape, mean, std, self.dtype))


def _bernoulli_(self, p=0.5, *, generator=None):
    """Fill with 1 (probability ``p``) or 0, as torch.Tensor.bernoulli_ with a number ``p``."""
    return _fill_with(self, "bernoulli_", generator_arg(generator).source.bernoulli(p, self.shape, self.dtype))


def _fill_with(self, name, values):
    if self.requires_grad and self.is_leaf and api.is_grad_enabled():
        raise RuntimeError(f"{name}: a leaf tensor that requires grad cannot be filled in place while gradients "
                           "are recorded; fill it under `with ge.no_grad():`")
    np.copyto(self.array, values, casting="unsafe")
    mark_modified(self)
    return self


def _integer_value(self):
    """The value of a one-element integer or boolean tensor, for int() and indexing (as torch's __index__)."""
    if self.array.dtype.kind not in "biu":
        raise TypeError(f"only integer tensors of a single element can be used as an index; this one has dtype "
                        f"{self.array.dtype}")
    return int(self.item())


def _view(self, *shape):
    """``view(*shape)`` reshapes; ``view(dtype)`` reinterprets the bits (the last dim scales with the
    itemsize), cut from the graph as torch's."""
    if len(shape) == 1 and not isinstance(shape[0], (int, np.integer, tuple, list)):
        return Tensor(self.array.view(dtype_arg(shape[0])))
    return api.reshape(self, *shape)


# torch's legacy tensor-type names, as Tensor.type() gives and takes them.
_LEGACY_TYPE_NAMES = {
    np.dtype(np.float64): "torch.DoubleTensor", np.dtype(np.float32): "torch.FloatTensor",
    np.dtype(np.float16): "torch.HalfTensor", np.dtype(np.int64): "torch.LongTensor",
    np.dtype(np.int32): "torch.IntTensor", np.dtype(np.int16): "torch.ShortTensor",
    np.dtype(np.int8): "torch.CharTensor", np.dtype(np.uint8): "torch.ByteTensor",
    np.dtype(np.bool_): "torch.BoolTensor",
}
_DTYPES_BY_LEGACY_NAME = {name: dtype for dtype, name in _LEGACY_TYPE_NAMES.items()}


def _type(self, dtype=None):
    """With no argument, torch's type name ('torch.FloatTensor' ...); else this tensor as ``dtype``,
    a dtype or a legacy type name such as 'torch.DoubleTensor'."""
    if dtype is None:
        return _LEGACY_TYPE_NAMES[self.array.dtype]
    if isinstance(dtype, str):
        if dtype not in _DTYPES_BY_LEGACY_NAME:
            raise ValueError(f"dtype: expected a dtype or a type name such as 'torch.FloatTensor', got {dtype!r}")
        dtype = _DTYPES_BY_LEGACY_NAME[dtype]
    return _to(self, dtype)


def _size(self, dim=None):
    return self.shape if dim is None else self.shape[dim]


def _expand(self, *sizes):
    return api.broadcast_to(self, shapes.shape_arg(sizes, self))


METHODS = {
    "__add__": _binary(_ADD),
    "__radd__": _binary(_ADD, reflected=True),
    "__sub__": _binary(_SUB),
    "__rsub__": _binary(_SUB, reflected=True),
    "__mul__": _binary(_MUL),
    "__rmul__": _binary(_MUL, reflected=True),
    "__truediv__": _binary(_DIV),
    "__rtruediv__": _binary(_DIV, reflected=True),
    "__matmul__": api.matmul,
    "__rmatmul__": lambda self, other: api.matmul(other, self),
    "__neg__": lambda self: apply(_NEG, (self,)),
    "__pos__": lambda self: self,
    "__pow__": _pow,
    "__rpow__": _rpow,
    "__getitem__": _getitem,
    "__setitem__": lambda self, index, value: SET_ITEM(self, _index_arg(index), value),
    "__lt__": _compare(np.less),
    "__le__": _compare(np.less_equal),
    "__gt__": _compare(np.greater),
    "__ge__": _compare(np.greater_equal),
    "__eq__": _compare(np.equal),
    "__ne__": _compare(np.not_equal),
    "__abs__": lambda self: api.abs(self),
    "T": property(lambda self: F.permute(self, axes=tuple(reversed(range(self.ndim))))),
    "mT": property(lambda self: F.swapaxes(self, -1, -2)),
    "to": _to,
    "__int__": lambda self: int(self.item()),
    "__index__": _integer_value,
    "double": lambda self: _to(self, api.float64),
    "float": lambda self: _to(self, api.float32),
    "long": lambda self: _to(self, api.int64),
    "int": lambda self: _to(self, api.int32),
    "bool": lambda self: _to(self, api.bool_),
    "type": _type,
    "size": _size,
    "dim": lambda self: self.ndim,
    "numel": lambda self: int(self.array.size),
    "nelement": lambda self: int(self.array.size),
    "__format__": _format,
    "uniform_": _uniform_,
    "normal_": _normal_,
    "bernoulli_": _bernoulli_,
    "multinomial": api.multinomial,
    "cuda": _cuda,
    "view": _view,
    "reshape": _view,
    "expand": _expand,
    "expand_as": lambda self, other: F.broadcast_to(self, shape=other.shape),
    "mm": api.mm,
    "clamp": api.clamp,
    "where": lambda self, condition, other: api.where(condition, self, other),
    "max": api.max,
    "min": api.min,
    "transpose": api.transpose,
    "flatten": api.flatten,
    "any": api.any,
    "all": api.all,
    "__invert__": _invert,
    "__and__": _bitwise(np.bitwise_and),
    "__rand__": _bitwise(np.bitwise_and, reflected=True),
    "__or__": _bitwise(np.bitwise_or),
    "__ror__": _bitwise(np.bitwise_or, reflected=True),
    "__xor__": _bitwise(np.bitwise_xor),
    "__rxor__": _bitwise(np.bitwise_xor, reflected=True),
    "__floordiv__": _floordiv,
    "__rfloordiv__": _rfloordiv,
    "__mod__": _remainder,
    # number % tensor: torch has no derivative for it (its backward raises), so a constant.
    "__rmod__": lambda self, other: Tensor(np.remainder(*(t.array for t in promote(lift(other, self), self)))),
    "remainder": _remainder,
    "cpu": lambda self: self,
    "contiguous": lambda self: self,
    "t": _t,
    "is_floating_point": lambda self: self.array.dtype.kind == "f",
    "element_size": lambda self: self.array.dtype.itemsize,
    "device": property(lambda self: CPU),
    "new_zeros": _new(api.zeros),
    "new_ones": _new(api.ones),
    "new_empty": _new(api.empty),
    "new_full": _new_full,
    "new_tensor": _new_tensor,
    "repeat": shapes.repeat,
    "gather": api.gather,
    "index_select": api.index_select,
    "roll": api.roll,
    "masked_fill": api.masked_fill,
    "split": api.split,
    "chunk": api.chunk,
    "unbind": api.unbind,
    "swapaxes": api.swapaxes,
    "movedim": api.movedim,
    "cumsum": api.cumsum,
    "prod": api.prod,
    "sort": api.sort,
    "argsort": api.argsort,
    "topk": api.topk,
    "tril": api.tril,
    "triu": api.triu,
    "flip": lambda self, *dims: api.flip(self, shapes.shape_arg(dims, self)),
}
# Each public op of the table is a method of its name, as in torch (a join takes a sequence of tensors: not one).
for _name in api.PUBLIC_OPS:
    if TABLE[_name].kind != "join":
        METHODS.setdefault(_name, getattr(api, _name))
for _name in ("argmax", "argmin", "square", "var", "std", "norm", "sign", "floor", "ceil", "round", "tan", "sinh",
              "cosh", "expm1", "rsqrt", "reciprocal", "log2", "log10", "isnan", "isfinite", "logical_not", "erf"):
    METHODS[_name] = getattr(api, _name)

for _name in ("eq", "ne", "gt", "ge", "lt", "le"):
    METHODS[_name] = METHODS[f"__{_name}__"]

METHODS.update(IN_PLACE)

for _name, _method in METHODS.items():
    setattr(Tensor, _name, _method)
