"""``ge.save`` and ``ge.load``: tensors and containers of them, in a file that loads without pickle.

A file is a zip archive laid out as numpy's ``.npz`` (``np.load`` opens it too): ``object.json`` describes the
saved object, and each storage (the memory that one or more tensors view) is a one-dimensional
``storage_<k>.npy``.  Tensors keep their dtype, shape, ``requires_grad`` and whether they are Parameters;
tensors that shared memory share it again after loading, as views at their offsets and strides (so tied
parameters stay tied), and a tensor saved in two places loads as one object, as torch's pickle memo does.
Arrays are read with ``allow_pickle=False`` and the JSON only names data, so loading runs nothing from the file.
"""
from __future__ import annotations

import json
import os
import zipfile
import zlib
from collections import OrderedDict

import numpy as np

from .._files import atomic_write, read_member, read_npy_member
from .nn.module import Parameter
from .core import Tensor

FORMAT = "gradverify.engine.save"
VERSION = 1
_OBJECT = "object.json"
_CONTAINERS = {dict: "dict", OrderedDict: "OrderedDict", list: "list", tuple: "tuple"}
_EXPECTED = "a file written by ge.save (a zip archive of object.json and storage_<k>.npy arrays)"


def save(obj, f):
    """Save ``obj`` to ``f`` (a path, written atomically, or a binary file object), as torch.save.

    ``obj`` is a tensor, a number, a string, None, or a dict, OrderedDict, list or tuple of those, nested
    to any depth: a model's or an optimizer's ``state_dict()`` (whose keys may be ints) and checkpoints
    made of them.  Anything else raises TypeError before anything is written.
    """
    writer = _Writer()
    description = {"format": FORMAT, "version": VERSION, "object": writer.encode(obj, "obj")}
    description["tensors"] = writer.tensors
    text = json.dumps(description).encode()

    def write_to(file):
        with zipfile.ZipFile(file, "w", zipfile.ZIP_STORED) as archive:
            archive.writestr(_OBJECT, text)
            for k, storage in enumerate(writer.storages):
                with archive.open(f"storage_{k}.npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, storage, allow_pickle=False)

    if isinstance(f, (str, os.PathLike)):
        atomic_write(f, write_to)
    else:
        write_to(f)


def load(f, map_location=None, weights_only=True, *, allow_large=False):
    """The object :func:`save` wrote to ``f`` (a path or a binary file object), as torch.load.

    Tensors come back as leaves on the CPU (``map_location`` may only name the CPU: 'cpu', a
    ``ge.device`` or a dict of them).  ``weights_only`` is accepted for torch's signature: the format
    holds only data, so loading never unpickles, whatever its value.  A file that is not one
    :func:`save` wrote, or that holds a pickle, raises ValueError naming the file.

    Memory stays bounded by the file: an array declaring more than max(16 MiB, 64 x its stored bytes),
    or more bytes than its member holds, raises ValueError before anything is allocated (``allow_large=True``
    lifts the first limit for honest compressed files), and a tensor may view no more elements than its
    storage holds (no stride tricks: ge.save never writes them).
    """
    _check_cpu(map_location)
    name = os.fspath(f) if isinstance(f, (str, os.PathLike)) else getattr(f, "name", f"<{type(f).__name__}>")
    try:
        with zipfile.ZipFile(f) as archive:
            members = set(archive.namelist())
            if _OBJECT not in members:
                pickled = sorted(m for m in members if m.endswith(".pkl"))
                found = f"a pickle ({pickled[0]}), which ge.load never runs" if pickled else f"no {_OBJECT}"
                raise _Unreadable(f"it holds {found}")
            description = json.loads(read_member(archive, _OBJECT, allow_large))
            if not isinstance(description, dict) or description.get("format") != FORMAT:
                raise _Unreadable(f"its {_OBJECT} does not describe a {FORMAT} file")
            if description.get("version") != VERSION:
                version = description.get("version")
                raise _Unreadable(f"it has format version {version!r}, this gradverify reads {VERSION}")
            tensors = _Reader(archive, members, allow_large).tensors(description.get("tensors"))
            return _decode(description.get("object"), tensors)
    except (zipfile.BadZipFile, _Unreadable, ValueError, TypeError, KeyError, IndexError, BufferError,
            RecursionError, EOFError, zlib.error, NotImplementedError) as err:
        reason = "it is not a zip archive" if isinstance(err, zipfile.BadZipFile) else str(err)
        raise ValueError(f"ge.load: cannot read {name}: {reason}; expected {_EXPECTED}") from err


class _Unreadable(Exception):
    """What is wrong with a file :func:`load` was given (it becomes the reason of a ValueError)."""


def _check_cpu(map_location):
    places = map_location.values() if isinstance(map_location, dict) else [map_location]
    for place in places:
        if place is not None and str(place).split(":")[0] != "cpu":
            raise ValueError(f"map_location: the engine holds every tensor on the CPU, got {place!r}")


class _Writer:
    """Turns an object into JSON-ready data, collecting its tensors and the storages they view."""

    def __init__(self):
        self.tensors, self.storages = [], []
        self._tensor_index, self._storage_index = {}, {}

    def encode(self, value, path):
        if value is None or (isinstance(value, (bool, int, float, str)) and not isinstance(value, np.generic)):
            return value
        if type(value) in (Tensor, Parameter):
            return {"tensor": self._tensor(value, path)}
        kind = _CONTAINERS.get(type(value))
        if kind in ("dict", "OrderedDict"):
            return {kind: [[self.encode(k, f"{path} key {k!r}"), self.encode(v, f"{path}[{k!r}]")]
                           for k, v in value.items()]}
        if kind is not None:
            return {kind: [self.encode(item, f"{path}[{i}]") for i, item in enumerate(value)]}
        raise TypeError(
            f"save: {path} is a {type(value).__module__}.{type(value).__qualname__}, which ge.save cannot store: it "
            "stores tensors, Python numbers, strings, None, and dicts, OrderedDicts, lists and tuples of them"
        )

    def _tensor(self, t, path):
        if id(t) in self._tensor_index:
            return self._tensor_index[id(t)]
        if t.array.dtype.kind not in "biufc":
            raise TypeError(f"save: {path} is a tensor of dtype {t.array.dtype}, which ge.save cannot store")
        array, owner, offset = _in_owner(t.array)
        k = self._storage_index.setdefault(id(owner), len(self.storages))
        if k == len(self.storages):
            self.storages.append(owner.ravel(order="K"))  # a view in memory order, which the offsets count
        self.tensors.append({
            "storage": k, "offset": offset, "dtype": array.dtype.str, "shape": list(array.shape),
            "strides": list(array.strides), "requires_grad": t.requires_grad, "parameter": isinstance(t, Parameter),
        })
        return self._tensor_index.setdefault(id(t), len(self.tensors) - 1)


def _in_owner(array):
    """``(array, owner, offset)``: the array owning the memory that ``array`` views, and its byte offset there.

    An array without elements, without a contiguous owner, or with more elements than its owner (a
    broadcast view) is replaced by a copy that is its own owner.
    """
    owner = array
    while isinstance(owner.base, np.ndarray):
        owner = owner.base
    if array.size == 0 or array.size > owner.size or not (owner.flags.c_contiguous or owner.flags.f_contiguous):
        array = owner = array.copy()
    return array, owner, array.__array_interface__["data"][0] - owner.__array_interface__["data"][0]


class _Reader:
    """Rebuilds the tensors of an archive, each storage read once, so tensors that shared memory share it again."""

    def __init__(self, archive, members, allow_large):
        self.archive, self.members, self.allow_large, self.storages = archive, members, allow_large, {}

    def tensors(self, records):
        if not isinstance(records, list):
            raise _Unreadable(f"its {_OBJECT} has no list of tensors")
        return [self._tensor(record, i) for i, record in enumerate(records)]

    def _tensor(self, record, i):
        fields = ("storage", "offset", "dtype", "shape", "strides", "requires_grad", "parameter")
        if not isinstance(record, dict) or set(record) != set(fields):
            raise _Unreadable(f"tensor {i} is described by {record!r}, not by the fields {', '.join(fields)}")
        dtype = np.dtype(record["dtype"])
        if dtype.kind not in "biufc":
            raise _Unreadable(f"tensor {i} has dtype {dtype}, not a number type")
        storage = self._storage(record["storage"])
        elements = int(np.prod(record["shape"], dtype=object)) if isinstance(record["shape"], list) else None
        if elements is None or elements * dtype.itemsize > storage.nbytes:
            raise _Unreadable(f"tensor {i} of shape {record['shape']} views more memory than its storage's "
                              f"{storage.nbytes} bytes: a stride trick, which ge.save never writes")
        array = np.ndarray(tuple(record["shape"]), dtype, buffer=storage, offset=record["offset"],
                           strides=tuple(record["strides"]))
        if record["parameter"]:
            # Parameter() would copy the array and break the sharing.
            t = Parameter.__new__(Parameter)
            Tensor.__init__(t, array, requires_grad=record["requires_grad"])
            return t
        return Tensor(array, requires_grad=record["requires_grad"])

    def _storage(self, k):
        if k not in self.storages:
            name = f"storage_{k}.npy"
            if name not in self.members:
                raise _Unreadable(f"it has no member {name}")
            try:
                self.storages[k] = read_npy_member(self.archive, name, self.allow_large)
            except ValueError as err:
                raise _Unreadable(f"its {name} cannot be read: {err}") from err
        return self.storages[k]


def _decode(node, tensors):
    """The object described by ``node`` (JSON data: a number, string, None, or a one-entry tagged dict)."""
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if isinstance(node, dict) and len(node) == 1:
        ((tag, body),) = node.items()
        if tag == "tensor" and type(body) is int and 0 <= body < len(tensors):
            return tensors[body]
        if tag in ("list", "tuple") and isinstance(body, list):
            items = [_decode(item, tensors) for item in body]
            return items if tag == "list" else tuple(items)
        if tag in ("dict", "OrderedDict") and isinstance(body, list) and all(
            isinstance(pair, list) and len(pair) == 2 for pair in body
        ):
            kind = dict if tag == "dict" else OrderedDict
            return kind((_decode(key, tensors), _decode(value, tensors)) for key, value in body)
    raise _Unreadable(f"{str(node)[:80]!r} in its {_OBJECT} is not a value ge.save writes")
