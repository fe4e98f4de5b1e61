"""Shape and indexing functions (``ge.reshape``, ``ge.cat``, ``ge.gather``, ``ge.flip``, ``ge.sort`` ...), torch-shaped.

They take torch's ``dim`` arguments and check them, then run the table's shape, join and index ops
(``F.reshape``, ``F.concatenate``, ``F.getitem`` ...), so every one is differentiable.
"""
from __future__ import annotations

from collections import namedtuple

import numpy as np

from . import functional as F
from .core import Tensor, promote_all

__all__ = [
    "reshape", "permute", "transpose", "broadcast_to", "unsqueeze", "squeeze", "flatten", "cat", "concatenate", "stack",
    "hstack", "vstack", "swapaxes", "movedim", "flip", "gather", "index_select", "roll", "unbind", "split", "chunk",
    "masked_fill", "tril", "triu", "sort", "argsort", "topk",
]

MaxResult = namedtuple("MaxResult", ["values", "indices"])
SortResult = MaxResult  # the same (values, indices) pair, of max, min, sort and topk


def check_dims(x, dims):
    """Raise unless every dim of ``dims`` names an axis of ``x``; a 0-d tensor has dim 0 (and -1), as in torch."""
    rank = max(x.ndim, 1)
    if not all(-rank <= d < rank for d in np.atleast_1d(dims)):
        raise IndexError(f"dim: expected dims in [{-rank}, {rank}) for a tensor of shape {x.shape}, got {dims!r}")


def along_axis(indices, dim):
    """The integer-array index that picks ``indices`` (with keepdim's shape) along ``dim``, as takealong_axis."""
    grids = list(np.ogrid[tuple(slice(n) for n in indices.shape)])
    grids[dim] = indices
    return tuple(grids)


# ------------------------------------------------------------------ shape ops
def shape_arg(shape, x):
    """A shape given as sizes (``view(2, 3)``) or as one sequence (``view((2, 3))``), as a tuple of ints."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return tuple(int(s) for s in shape)


def reshape(x, *shape):
    return F.reshape(x, shape=shape_arg(shape, x))


def permute(x, *dims):
    return F.permute(x, axes=shape_arg(dims, x))


def transpose(x, dim0, dim1):
    return F.swapaxes(x, dim0, dim1)


def broadcast_to(x, shape):
    """``x`` broadcast to ``shape``; a -1 entry keeps that dim's size, as torch."""
    shape = tuple(int(s) for s in shape)
    lead = len(shape) - x.ndim
    for i, size in enumerate(shape[:lead]):
        if size == -1:
            raise ValueError(f"shape: -1 is not allowed in a new leading dim ({i}) of {shape}")
    return F.broadcast_to(x, shape=tuple(x.shape[i - lead] if s == -1 else s for i, s in enumerate(shape)))


def unsqueeze(x, dim):
    return F.unsqueeze(x, dim)


def squeeze(x, dim=None):
    """Remove the size-1 axes: all of them, or those among ``dim`` (an int or a tuple); other dims stay, as torch."""
    if dim is None:
        return F.squeeze(x, None)
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    check_dims(x, dims)
    if x.ndim == 0:
        return F.squeeze(x, None)
    return F.squeeze(x, tuple(d for d in dims if x.shape[d] == 1))


def flatten(x, start_dim=0, end_dim=-1):
    """Merge axes ``start_dim`` .. ``end_dim`` into one."""
    if x.ndim == 0:
        return F.reshape(x, shape=(1,))
    start, end = start_dim % x.ndim, end_dim % x.ndim
    shape = x.shape[:start] + (-1,) + x.shape[end + 1 :]
    return F.reshape(x, shape=shape)


def _joined(tensors, name):
    """The tensors a join takes, cast to one dtype as torch casts them."""
    tensors = list(tensors)
    if not tensors or not all(isinstance(t, Tensor) for t in tensors):
        raise TypeError(f"{name}: tensors must be a non-empty sequence of Tensors, got {tensors!r}")
    return promote_all(tensors)


def cat(tensors, dim=0):
    """Concatenate a sequence of tensors along ``dim``.

    As torch, legacy empty 1-D tensors (shape ``(0,)``) take part in dtype promotion but are
    skipped when the others have more dims.
    """
    joined = _joined(tensors, "cat")
    kept = [t for t in joined if t.shape != (0,)]
    if kept and any(t.ndim > 1 for t in kept):
        joined = kept
    return F.concatenate(*joined, axis=dim)


concatenate = cat


def stack(tensors, dim=0):
    """Stack a sequence of same-shape tensors along a new axis ``dim``."""
    return F.stack(*_joined(tensors, "stack"), axis=dim)


def hstack(tensors):
    """Concatenate along dim 1 (dim 0 for vectors)."""
    tensors = _joined(tensors, "hstack")
    return F.concatenate(*tensors, axis=0 if tensors[0].ndim == 1 else 1)


def vstack(tensors):
    """Concatenate along dim 0, vectors taken as rows."""
    tensors = [F.reshape(t, shape=(1, -1)) if t.ndim < 2 else t for t in _joined(tensors, "vstack")]
    return F.concatenate(*tensors, axis=0)


def swapaxes(x, axis0, axis1):
    """Exchange two axes."""
    return F.swapaxes(x, axis0, axis1)


def movedim(x, source, destination):
    """Move axes ``source`` to positions ``destination`` (ints or sequences of ints), the others keeping their order."""
    sources, destinations = np.atleast_1d(source), np.atleast_1d(destination)
    if len(sources) != len(destinations):
        raise ValueError(f"movedim: source and destination must name as many dims, got {source!r} and {destination!r}")
    check_dims(x, sources)
    check_dims(x, destinations)
    rank = max(x.ndim, 1)
    sources, destinations = [int(d) % rank for d in sources], [int(d) % rank for d in destinations]
    order = [axis for axis in range(x.ndim) if axis not in sources]
    for position, axis in sorted(zip(destinations, sources)):
        order.insert(position, axis)
    return F.permute(x, axes=tuple(order))


# ------------------------------------------------------ selections and pieces
def _dim_index(x, dim, index):
    """The getitem index that applies ``index`` along ``dim`` and takes every other axis whole."""
    check_dims(x, dim)
    return (slice(None),) * (dim % x.ndim) + (index,)


def _index_array(index, argname):
    array = index.array if isinstance(index, Tensor) else np.asarray(index)
    if array.dtype.kind not in "iu":
        raise TypeError(f"{argname}: expected an integer tensor, got dtype {array.dtype}")
    return array


def flip(x, dims):
    """``x`` reversed along each of ``dims``."""
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    check_dims(x, dims)
    index = [slice(None)] * x.ndim
    for d in dims:
        index[d] = slice(None, None, -1)
    return F.getitem(x, index=tuple(index))


def gather(x, dim, index):
    """``out[i][j][k] = x[index[i][j][k]][j][k]`` for dim 0 (and so on), as torch.gather."""
    indices = _index_array(index, "index")
    if indices.ndim != x.ndim:
        raise ValueError(f"gather: index must have as many dims as the input ({x.ndim}), got shape {indices.shape}")
    check_dims(x, dim)
    return F.getitem(x, index=along_axis(indices, dim))


def index_select(x, dim, index):
    """The entries of ``x`` at the positions ``index`` (a vector) along ``dim``."""
    indices = _index_array(index, "index")
    if indices.ndim > 1:
        raise ValueError(f"index_select: index must be a vector, got shape {indices.shape}")
    return F.getitem(x, index=_dim_index(x, dim, indices.reshape(-1)))


def roll(x, shifts, dims=None):
    """``x`` with its entries shifted by ``shifts`` along ``dims``, wrapping around, as torch.roll.

    With ``dims`` None the flattened tensor rolls and keeps its shape.
    """
    shifts = (shifts,) if isinstance(shifts, int) else tuple(shifts)
    if dims is None:
        if len(shifts) != 1:
            raise ValueError(f"shifts: expected one shift when dims is None, got {shifts}")
        return F.reshape(roll(flatten(x), shifts, 0), shape=x.shape)
    dims = (dims,) if isinstance(dims, int) else tuple(dims)
    if len(shifts) != len(dims):
        raise ValueError(f"shifts: expected one shift per dim, got {len(shifts)} shifts for dims {dims}")
    for shift, dim in zip(shifts, dims):
        size = x.shape[dim]
        if size:
            x = index_select(x, dim, (np.arange(size) - shift) % size)
    return x


def unbind(x, dim=0):
    """The slices of ``x`` along ``dim``, as a tuple."""
    return tuple(F.getitem(x, index=_dim_index(x, dim, i)) for i in range(x.shape[dim]))


def split(x, split_size_or_sections, dim=0):
    """Pieces of ``x`` along ``dim``: of ``split_size`` each (the last may be shorter), or of the listed sizes."""
    check_dims(x, dim)
    length = x.shape[dim]
    if isinstance(split_size_or_sections, (int, np.integer)):
        if split_size_or_sections <= 0:
            raise ValueError(f"split_size_or_sections: expected a positive size, got {split_size_or_sections}")
        sizes = [min(split_size_or_sections, length - start)
                 for start in range(0, length, int(split_size_or_sections))] or [0]
    else:
        sizes = [int(s) for s in split_size_or_sections]
        if sum(sizes) != length:
            raise ValueError(f"split_size_or_sections: the sizes {sizes} must add up to {length}, the size of dim {dim}")
    ends = np.cumsum(sizes)
    return tuple(F.getitem(x, index=_dim_index(x, dim, slice(int(end - size), int(end))))
                 for size, end in zip(sizes, ends))


def chunk(x, chunks, dim=0):
    """``x`` split along ``dim`` into at most ``chunks`` pieces of ceil(size / chunks) each."""
    if not isinstance(chunks, (int, np.integer)) or chunks <= 0:
        raise ValueError(f"chunks: expected a positive number of pieces, got {chunks!r}")
    check_dims(x, dim)
    return split(x, max(-(-x.shape[dim] // chunks), 1), dim)


def masked_fill(x, mask, value):
    """``x`` with ``value`` (a number or a 0-d tensor) where the bool ``mask`` is true; keeps ``x``'s dtype."""
    value = F.astype(value, dtype=x.dtype) if isinstance(value, Tensor) and value.dtype != x.dtype else value
    if not isinstance(value, Tensor):
        value = Tensor(np.asarray(value, dtype=x.dtype))
    condition = mask.array if isinstance(mask, Tensor) else np.asarray(mask)
    if condition.dtype != np.bool_:
        raise TypeError(f"mask: expected a bool tensor, got dtype {condition.dtype}")
    if np.broadcast_shapes(condition.shape, x.shape) != x.shape:
        raise ValueError(f"mask: shape {condition.shape} does not broadcast to the input's {x.shape}")
    return F.where(condition, value, x)


def _triangle(keep_lower):
    def triangle(x, diagonal=0):
        if x.ndim < 2:
            raise ValueError(f"x: expected a tensor of at least 2 dims, got shape {x.shape}")
        lower = np.tri(*x.shape[-2:], k=diagonal if keep_lower else diagonal - 1, dtype=bool)
        return F.where(lower if keep_lower else ~lower, x, Tensor(np.zeros((), dtype=x.dtype)))

    side = "on and below" if keep_lower else "on and above"
    triangle.__doc__ = f"The last two dims of ``x`` with zeros except {side} the ``diagonal``-th diagonal."
    return triangle


tril = _triangle(True)
triu = _triangle(False)


def sort(x, dim=-1, descending=False, stable=False):
    """(values, indices) along ``dim``, ascending unless ``descending``; the values are differentiable."""
    indices = argsort(x, dim, descending, stable).array
    if x.ndim == 0:
        return SortResult(x, Tensor(indices))
    return SortResult(F.getitem(x, index=along_axis(indices, dim)), Tensor(indices))


def argsort(x, dim=-1, descending=False, stable=False):
    """The indices that sort ``x`` along ``dim`` (ties in order of position, or reversed when ``descending``)."""
    check_dims(x, dim)
    if x.ndim == 0:
        return Tensor(np.zeros((), dtype=np.int64))
    indices = np.argsort(x.array, axis=dim, kind="stable")
    return Tensor(np.flip(indices, dim).copy() if descending else indices)


def topk(x, k, dim=-1, largest=True, sorted=True):
    """The ``k`` largest (or smallest) entries along ``dim`` and their indices, largest first."""
    check_dims(x, dim)
    length = x.shape[dim] if x.ndim else 1
    if not 0 <= k <= length:
        raise ValueError(f"k: expected 0 <= k <= {length}, the size of dim {dim}, got {k}")
    values, indices = sort(x, dim, descending=largest)
    if x.ndim == 0:
        return SortResult(values, indices)
    first = _dim_index(x, dim, slice(0, k))
    return SortResult(F.getitem(values, index=first), Tensor(indices.array[first]))


def repeat(x, *sizes):
    """``x`` tiled ``sizes[i]`` times along each dim (leading sizes add dims), as torch.Tensor.repeat."""
    sizes = shape_arg(sizes, x)
    if len(sizes) < x.ndim:
        raise ValueError(f"sizes: expected at least {x.ndim} repeats (one per dim), got {sizes}")
    shape = (1,) * (len(sizes) - x.ndim) + x.shape
    interleaved = tuple(n for size in shape for n in (1, size))
    tiled = tuple(n for repeats, size in zip(sizes, shape) for n in (repeats, size))
    spread = F.broadcast_to(F.reshape(x, shape=interleaved), shape=tiled)
    return F.reshape(spread, shape=tuple(r * s for r, s in zip(sizes, shape)))
