"""Functions that make tensors: from data, filled, ranges, and random draws (``ge.tensor``, ``ge.zeros``, ``ge.randn`` ...).

They take torch's arguments: ``dtype``, ``device`` (the CPU only, see :mod:`.devices`),
``requires_grad``, and ``generator`` where torch has it (see :mod:`.random`).
"""
from __future__ import annotations

import builtins
import numbers

import numpy as np

from .devices import check_device
from .random import generator_arg
from .core import MODE, Tensor

__all__ = [
    "float32", "float64", "double", "int64", "long", "int32", "bool_", "tensor", "as_tensor", "from_numpy",
    "LongTensor", "set_default_dtype", "get_default_dtype", "zeros", "ones", "empty", "full", "eye", "arange",
    "linspace", "zeros_like", "ones_like", "empty_like", "full_like", "randn", "rand", "randint", "randperm",
    "randn_like", "rand_like", "normal", "multinomial",
]

float32 = np.dtype(np.float32)
float64 = np.dtype(np.float64)
int64 = np.dtype(np.int64)
long = int64
int32 = np.dtype(np.int32)
bool_ = np.dtype(np.bool_)
double = float64


def dtype_arg(dtype, argname="dtype"):
    """``dtype`` as a numpy dtype (None stays None)."""
    if dtype is None:
        return None
    try:
        return np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{argname}: expected a dtype such as ge.float32 or ge.float64, got {dtype!r}") from None


def _made(array, device, requires_grad):
    check_device(device)
    return Tensor(array, requires_grad=requires_grad)


def tensor(data, dtype=None, device=None, requires_grad=False, pin_memory=False):
    """A new leaf tensor holding a copy of ``data`` (like ``torch.tensor``).

    Python floats take the default dtype (float32 unless changed with
    :func:`set_default_dtype`); numpy arrays keep theirs.
    """
    dtype = dtype_arg(dtype)
    if isinstance(data, Tensor):
        data = data.array
    array = np.array(data, dtype=dtype, copy=True)
    if dtype is None and array.dtype == np.float64 and not _holds_numpy_float64(data):
        array = array.astype(MODE.default_dtype)
    if array.dtype.kind not in "biuf":
        raise TypeError(
            f"data: expected numbers (bool, integer or float), got {type(data).__name__} of dtype {array.dtype}"
        )
    return _made(array, device, requires_grad)


def LongTensor(data):  # noqa: N802  (torch's name)
    """An int64 tensor holding ``data``, a list or tuple of integers (torch's legacy ``torch.LongTensor(data)``).

    The legacy form taking sizes (``torch.LongTensor(2, 3)``, uninitialized memory) is refused.
    """
    if not isinstance(data, (list, tuple)):
        raise TypeError(f"data: expected a list or tuple of integers, got {type(data).__name__}")
    return tensor(data, dtype=int64)


def _holds_numpy_float64(data):
    """Whether ``data`` is or contains a numpy float64 (array or scalar), which torch keeps as float64."""
    if isinstance(data, (list, tuple)):
        return builtins.any(_holds_numpy_float64(item) for item in data)
    return isinstance(data, (np.ndarray, np.generic)) and data.dtype == np.float64


def as_tensor(data, dtype=None, device=None):
    """``data`` as a tensor, sharing memory with a tensor or numpy array that already has ``dtype`` (torch.as_tensor).

    Anything else (a list, another dtype) is copied as :func:`tensor` copies it.
    """
    check_device(device)
    dtype = dtype_arg(dtype)
    same_dtype = dtype is None or dtype == getattr(data, "dtype", None)
    if isinstance(data, Tensor) and same_dtype:
        return data
    if isinstance(data, np.ndarray) and same_dtype and data.dtype.kind in "biuf":
        return Tensor(data)
    return tensor(data, dtype=dtype)


def from_numpy(array):
    """A tensor sharing memory with a numpy array."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"array: expected a numpy.ndarray, got {type(array).__name__}")
    return Tensor(array)


def set_default_dtype(dtype):
    """Set the dtype of tensors made from Python floats (float32 or float64)."""
    dtype = dtype_arg(dtype)
    if dtype not in (float32, float64):
        raise TypeError(f"dtype: the default dtype must be ge.float32 or ge.float64, got {dtype}")
    MODE.default_dtype = dtype


def get_default_dtype():
    return MODE.default_dtype


def size_arg(size, argname="size"):
    """``size`` given as ``f(2, 3)``, ``f((2, 3))`` or ``f([2, 3])``, as a tuple of ints."""
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    if not builtins.all(isinstance(n, numbers.Integral) for n in size):
        raise TypeError(f"{argname}: expected integers, got {size!r}")
    return tuple(int(n) for n in size)


def _float_dtype(dtype, name):
    dtype = dtype_arg(dtype) or MODE.default_dtype
    if dtype.kind != "f":
        raise NotImplementedError(f"{name}: expected a floating dtype, got {dtype} (torch has no such kernel either)")
    return dtype


def zeros(*size, dtype=None, device=None, requires_grad=False):
    return _made(np.zeros(size_arg(size), dtype_arg(dtype) or MODE.default_dtype), device, requires_grad)


def ones(*size, dtype=None, device=None, requires_grad=False):
    return _made(np.ones(size_arg(size), dtype_arg(dtype) or MODE.default_dtype), device, requires_grad)


# zeros: numpy's uninitialised memory would make runs irreproducible
empty = zeros


def randn(*size, generator=None, dtype=None, device=None, requires_grad=False):
    """Standard normal draws (torch's ``normal_(0, 1)``) of the default or given floating dtype."""
    dtype = _float_dtype(dtype, "randn")
    return _made(generator_arg(generator).source.normal(size_arg(size), 0.0, 1.0, dtype), device, requires_grad)


def rand(*size, generator=None, dtype=None, device=None, requires_grad=False):
    """Uniform draws on [0, 1) (torch's ``uniform_(0, 1)``) of the default or given floating dtype."""
    dtype = _float_dtype(dtype, "rand")
    return _made(generator_arg(generator).source.uniform(size_arg(size), 0.0, 1.0, dtype), device, requires_grad)


def zeros_like(x, dtype=None, device=None, requires_grad=False):
    return zeros(x.shape, dtype=dtype or x.dtype, device=device, requires_grad=requires_grad)


def ones_like(x, dtype=None, device=None, requires_grad=False):
    return ones(x.shape, dtype=dtype or x.dtype, device=device, requires_grad=requires_grad)


def randn_like(x, dtype=None, device=None, requires_grad=False):
    return randn(x.shape, dtype=dtype or x.dtype, device=device, requires_grad=requires_grad)


def rand_like(x, dtype=None, device=None, requires_grad=False):
    return rand(x.shape, dtype=dtype or x.dtype, device=device, requires_grad=requires_grad)


def full(size, fill_value, dtype=None, device=None, requires_grad=False):
    """A tensor of ``size`` filled with ``fill_value`` (the default dtype for a Python float, as torch)."""
    if dtype is None:
        dtype = MODE.default_dtype if isinstance(fill_value, float) else np.asarray(fill_value).dtype
    return _made(np.full(size_arg((size,)), fill_value, dtype=dtype_arg(dtype)), device, requires_grad)


def full_like(x, fill_value, dtype=None, device=None, requires_grad=False):
    """A tensor of ``x``'s shape filled with ``fill_value``, of ``x``'s dtype unless ``dtype`` is given."""
    return full(x.shape, fill_value, dtype=dtype or x.dtype, device=device, requires_grad=requires_grad)


def empty_like(x, dtype=None, device=None, requires_grad=False):
    """A tensor of ``x``'s shape (zeros, as :func:`empty`)."""
    return zeros(x.shape, dtype=dtype or x.dtype, device=device, requires_grad=requires_grad)


def arange(*args, dtype=None, device=None, requires_grad=False):
    """``start, start + step, ...`` below ``end``: int64 for integer arguments, else the default dtype (as torch)."""
    values = np.arange(*args)
    dtype = dtype_arg(dtype) or (MODE.default_dtype if values.dtype.kind == "f" else values.dtype)
    return _made(values.astype(dtype), device, requires_grad)


def eye(n, m=None, dtype=None, device=None, requires_grad=False):
    """The n x m identity matrix."""
    return _made(np.eye(n, m, dtype=dtype_arg(dtype) or MODE.default_dtype), device, requires_grad)


def linspace(start, end, steps, dtype=None, device=None, requires_grad=False):
    """``steps`` evenly spaced values from ``start`` to ``end`` inclusive."""
    values = np.linspace(start, end, steps).astype(dtype_arg(dtype) or MODE.default_dtype)
    return _made(values, device, requires_grad)


def randint(*args, size=None, generator=None, dtype=None, device=None, requires_grad=False):
    """Random integers in ``[low, high)``: ``randint(high, size)`` or ``randint(low, high, size)``; int64 by default."""
    if size is None and args and isinstance(args[-1], (tuple, list)):
        *args, size = args
    if size is None or len(args) not in (1, 2):
        raise TypeError(f"randint: expected (high, size) or (low, high, size), got {args!r} and size={size!r}")
    low, high = (0, args[0]) if len(args) == 1 else args
    if not low < high:
        raise RuntimeError(f"randint: expected low < high, got low={low} and high={high}")
    values = generator_arg(generator).source.integers(int(low), int(high), size_arg((size,)))
    return _made(values.astype(dtype_arg(dtype) or int64), device, requires_grad)


def randperm(n, generator=None, dtype=None, device=None, requires_grad=False):
    """A random permutation of ``0 .. n-1`` (int64 by default)."""
    values = generator_arg(generator).source.permutation(int(n))
    return _made(values.astype(dtype_arg(dtype) or int64), device, requires_grad)


def normal(mean, std=1.0, size=None, *, generator=None, dtype=None, device=None, requires_grad=False):
    """Normal draws, as torch.normal: ``normal(mean, std, size)`` of numbers, or elementwise where ``mean``
    or ``std`` is a tensor (then ``std * z + mean`` of standard normal draws ``z``, as torch computes it)."""
    check_device(device)
    source = generator_arg(generator).source
    if not isinstance(mean, Tensor) and not isinstance(std, Tensor):
        if size is None:
            raise TypeError("normal: with a number mean and std, size is required")
        draws = source.normal(size_arg((size,)), float(mean), float(std), _float_dtype(dtype, "normal"))
        return Tensor(draws, requires_grad=requires_grad)
    if size is not None:
        raise TypeError("normal: size is taken only with a number mean and std; tensors give the shape")
    if isinstance(std, Tensor) and np.any(std.array < 0):
        raise RuntimeError("normal: expected all elements of std >= 0.0")
    mean_array = mean.array if isinstance(mean, Tensor) else mean
    std_array = std.array if isinstance(std, Tensor) else std
    like = mean if isinstance(mean, Tensor) else std
    shape = np.broadcast_shapes(np.shape(mean_array), np.shape(std_array))
    # torch's three cases, so that its draws and roundings are repeated exactly.
    if isinstance(std, Tensor):
        draws = source.normal(shape, 0.0, 1.0, like.dtype) * std_array + mean_array
    else:
        draws = source.normal(shape, 0.0, float(std), like.dtype) + mean_array
    return Tensor(draws.astype(like.dtype, copy=False))

def multinomial(input, num_samples, replacement=False, *, generator=None):
    """Indices drawn from the rows of ``input`` (non-negative weights), as torch.multinomial: int64 of shape
    ``(num_samples,)`` for a vector, ``(rows, num_samples)`` for a matrix."""
    if not isinstance(input, Tensor) or input.ndim not in (1, 2) or input.dtype.kind != "f":
        raise RuntimeError(f"multinomial: input must be a 1-d or 2-d floating tensor, got "
                           f"{getattr(input, 'shape', type(input).__name__)}")
    weights = np.atleast_2d(input.array)
    if num_samples <= 0:
        raise RuntimeError(f"multinomial: num_samples must be positive, got {num_samples}")
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise RuntimeError("multinomial: probability tensor contains either inf, nan or element < 0")
    if np.any(weights.sum(axis=1) <= 0):
        raise RuntimeError("multinomial: invalid multinomial distribution (sum of probabilities <= 0)")
    if not replacement and num_samples > weights.shape[1]:
        raise RuntimeError(f"multinomial: cannot sample {num_samples} samples without replacement from "
                           f"{weights.shape[1]} categories")
    drawn = generator_arg(generator).source.multinomial(weights, int(num_samples), bool(replacement))
    return Tensor(drawn.reshape(input.shape[:-1] + (num_samples,)))
