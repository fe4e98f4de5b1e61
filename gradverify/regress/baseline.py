"""The baseline format: one JSON file plus one ``.npz`` file of arrays.

``NAME.json`` (format version 1)::

    {
      "format": "gradverify-baseline",
      "format_version": 1,
      "created": "2026-11-26T10:40:00+00:00",
      "environment": {"python": "3.12.3", "platform": "...", "packages": {"numpy": "2.4.0", ...}},
      "tolerance": {"ulps": 4.0, "atol": 0.0},
      "sketch": {"seed": 0, "projections": 16, "full_limit": 10000},
      "arrays_file": "NAME.3f9a1c2b7e4d.npz",
      "cases": {
        "CASE": {
          "backend": "engine", "dtype": "float64",
          "inputs": {"sha256": "...", "shapes": [[2], [3, 2]]},
          "cotangent_seed": null,
          "deterministic": true,
          "timing": {"repeats": 5, "best_s": 0.00012, "median_s": 0.00013},
          "outputs": [ARRAY, ...],
          "gradients": [ARRAY, ...]
        }
      }
    }

where ``ARRAY`` is ``{"shape": [...], "dtype": "<f8", "sha256": "...",
"storage": "full" | "sketch", "key": "c0_grad1", "norm": 2-norm (sketch only)}``
(``dtype`` is numpy's byte-order-explicit ``dtype.str``).
``key`` names the array in the ``.npz``: the array itself when it has at most
``full_limit`` entries, otherwise its ``projections`` random projections on
Rademacher (+-1) vectors drawn from ``seed`` (seed and count are fixed by the
format version).  The SHA-256 digest covers dtype,
shape and bytes, so any change is detected; the projections say how large it
is.  ``cotangent_seed`` is set when the case's output is not a scalar: its
gradients are then those of ``<c, f(x)>`` for a standard normal ``c`` drawn
from that seed.

The JSON is validated against :data:`SCHEMA` (JSON Schema, checked with
``jsonschema``) and then for consistency (one gradient per input, each array's
key, shape, dtype and digest), so a malformed field is a :class:`BaselineError`
naming the field, never a crash or a pass.

Writers hold a lock (``filelock``, on ``.NAME.json.lock`` beside the baseline)
while they write: the ``.npz`` is named after a digest of its contents and
written first, then the JSON replaces the old one with :func:`os.replace`, then
stale ``.npz`` files are removed.  Any number of concurrent writers leave one
of them's whole baseline, and a writer killed at any point leaves the previous
one whole.  Readers take no lock: one that finds its ``.npz`` gone re-reads the
JSON, which then names the new one.  Arrays are read with ``allow_pickle=False``,
only those the JSON refers to, each after checking its declared size
(:func:`gradverify._files.read_npy_member`).
"""
from __future__ import annotations

import datetime
import glob
import hashlib
import importlib.metadata
import json
import pathlib
import platform
import re
import stat
import time
import zipfile
from dataclasses import dataclass, field
from zlib import error as zlib_error

import filelock
import jsonschema
import numpy as np

from .._files import atomic_write, read_npy_member, remove_leftovers
from .drift import Tolerance

FORMAT = "gradverify-baseline"
FORMAT_VERSION = 1
FULL_LIMIT = 10_000
SKETCH_PROJECTIONS = 16
SKETCH_SEED = 0
TRACKED_PACKAGES = ("gradverify", "numpy", "torch", "jax", "jaxlib")


LOCK_TIMEOUT_S = 600
READ_ATTEMPTS = 10

_DIGEST = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_SIZE = {"type": "integer", "minimum": 0}
_ARRAY = {
    "type": "object",
    "required": ["shape", "dtype", "sha256", "storage", "key"],
    "additionalProperties": False,
    "properties": {
        "shape": {"type": "array", "items": _SIZE},
        "dtype": {"type": "string", "pattern": "^[<>|=][a-zA-Z][0-9]+$"},
        "sha256": _DIGEST,
        "storage": {"enum": ["full", "sketch"]},
        "key": {"type": "string", "pattern": "^c[0-9]+_(output|grad)[0-9]+$"},
        "norm": {"type": "number", "minimum": 0},
    },
    "if": {"properties": {"storage": {"const": "sketch"}}},
    "then": {"required": ["norm"]},
    "else": {"not": {"required": ["norm"]}},
}
_CASE = {
    "type": "object",
    "required": ["backend", "dtype", "inputs", "cotangent_seed", "deterministic", "timing", "outputs", "gradients"],
    "additionalProperties": False,
    "properties": {
        "backend": {"enum": ["engine", "torch", "jax", "numpy"]},
        "dtype": {"type": "string", "minLength": 1},
        "inputs": {
            "type": "object", "required": ["sha256", "shapes"], "additionalProperties": False,
            "properties": {"sha256": _DIGEST, "shapes": {"type": "array", "items": {"type": "array", "items": _SIZE}}},
        },
        "cotangent_seed": {"type": ["integer", "null"], "minimum": 0},
        "deterministic": {"type": "boolean"},
        "timing": {
            "type": "object", "required": ["repeats", "best_s", "median_s"], "additionalProperties": False,
            "properties": {"repeats": {"type": "integer", "minimum": 1}, "best_s": {"type": "number", "minimum": 0},
                           "median_s": {"type": "number", "minimum": 0}},
        },
        "outputs": {"type": "array", "minItems": 1, "items": _ARRAY},
        "gradients": {"type": "array", "items": _ARRAY},
    },
}
SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": f"{FORMAT} version {FORMAT_VERSION}",
    "type": "object",
    "required": ["format", "format_version", "created", "environment", "tolerance", "sketch", "arrays_file", "cases"],
    "additionalProperties": False,
    "properties": {
        "format": {"const": FORMAT},
        "format_version": {"const": FORMAT_VERSION},
        "created": {"type": "string"},
        "environment": {
            "type": "object",
            "properties": {key: {"type": ["string", "null"]} for key in ("python", "platform", "machine")}
            | {"packages": {"type": "object", "additionalProperties": {"type": ["string", "null"]}}},
        },
        "tolerance": {
            "type": "object", "required": ["ulps", "atol"], "additionalProperties": False,
            "properties": {"ulps": {"type": "number", "minimum": 0}, "atol": {"type": "number", "minimum": 0}},
        },
        "sketch": {
            "type": "object", "required": ["seed", "projections", "full_limit"], "additionalProperties": False,
            "properties": {"seed": {"const": SKETCH_SEED}, "projections": {"const": SKETCH_PROJECTIONS},
                           "full_limit": _SIZE},
        },
        "arrays_file": {"type": "string", "pattern": "^[^/\\\\]+\\.[0-9a-f]{12}\\.npz$"},
        "cases": {"type": "object", "minProperties": 1, "additionalProperties": _CASE},
    },
}
"""The JSON Schema of format version 1 (non-finite numbers are refused before it applies)."""
_VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)


class BaselineError(Exception):
    """The baseline is missing, corrupt, malformed or of an unknown format version (the message says which)."""


class BaselineExists(BaselineError):
    """Writing would replace a baseline without leave to (``--update``, ``--force-regen``) or one marked read-only."""


def digest(array: np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and bytes."""
    h = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
    h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def combined_digest(arrays) -> str:
    """SHA-256 over the digests of several arrays, in order."""
    h = hashlib.sha256()
    for array in arrays:
        h.update(digest(np.asarray(array)).encode())
    return h.hexdigest()


def rademacher_projections(array: np.ndarray, seed: int = SKETCH_SEED, count: int = SKETCH_PROJECTIONS) -> np.ndarray:
    """``count`` projections of ``array`` on +-1 vectors drawn from ``seed`` (float64)."""
    flat = array.astype(np.float64).ravel()
    rng = np.random.default_rng(seed)
    return np.array([np.dot(rng.choice((-1.0, 1.0), flat.size), flat) for _ in range(count)])


@dataclass(frozen=True)
class StoredArray:
    """One array of a baseline: the whole array, or its digest and projections when it is large."""

    shape: tuple
    dtype: str
    sha256: str
    data: np.ndarray
    sketched: bool = False
    norm: float | None = None

    @classmethod
    def of(cls, array: np.ndarray, full_limit: int = FULL_LIMIT) -> "StoredArray":
        """Store ``array`` whole when it has at most ``full_limit`` entries, else as a sketch."""
        array = np.asarray(array)
        if array.size <= full_limit:
            return cls(array.shape, array.dtype.str, digest(array), array.copy())
        norm = float(np.linalg.norm(array.astype(np.float64).ravel()))
        return cls(array.shape, array.dtype.str, digest(array), rademacher_projections(array), True, norm)

    def meta(self, key: str) -> dict:
        entry = {"shape": list(self.shape), "dtype": self.dtype, "sha256": self.sha256,
                 "storage": "sketch" if self.sketched else "full", "key": key}
        if self.sketched:
            entry["norm"] = self.norm
        return entry


@dataclass
class CaseRecord:
    """What a baseline holds for one case."""

    backend: str
    dtype: str
    inputs_sha256: str
    input_shapes: list
    cotangent_seed: int | None
    deterministic: bool
    timing: dict
    outputs: list
    gradients: list


@dataclass
class Baseline:
    """A whole baseline: environment, tolerance and one :class:`CaseRecord` per case."""

    cases: dict
    tolerance: Tolerance = field(default_factory=Tolerance)
    environment: dict = field(default_factory=dict)
    created: str = ""
    full_limit: int = FULL_LIMIT


def environment() -> dict:
    """Python, platform and versions of the packages whose upgrades can change gradients."""
    packages = {}
    for name in TRACKED_PACKAGES:
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            packages[name] = None
    return {"python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine(),
            "packages": packages}


def json_path(path) -> pathlib.Path:
    """The JSON file of a baseline given as ``NAME`` or ``NAME.json``."""
    path = pathlib.Path(path)
    return path if path.suffix == ".json" else path.with_name(path.name + ".json")


def lock(path) -> filelock.FileLock:
    """The lock writers of the baseline at ``path`` hold (an flock, released by the OS if the writer dies)."""
    target = json_path(path)
    return filelock.FileLock(target.with_name(f".{target.name}.lock"), timeout=LOCK_TIMEOUT_S)


def write(baseline: Baseline, path, replace: bool = False) -> pathlib.Path:
    """Write ``baseline`` atomically to ``path`` (``NAME.json`` plus ``NAME.<digest>.npz``); returns the JSON path.

    An existing baseline is replaced only when ``replace`` is true and its JSON is not marked read-only
    (no write permission bit); otherwise :class:`BaselineExists`.  I/O failures raise OSError naming the path.
    """
    target = json_path(path)
    arrays, cases = {}, {}
    for index, (name, case) in enumerate(baseline.cases.items()):
        entries = {}
        for kind, stored_arrays in (("output", case.outputs), ("grad", case.gradients)):
            entries[kind] = []
            for i, stored in enumerate(stored_arrays):
                key = f"c{index}_{kind}{i}"
                arrays[key] = stored.data
                entries[kind].append(stored.meta(key))
        cases[name] = {
            "backend": case.backend, "dtype": case.dtype,
            "inputs": {"sha256": case.inputs_sha256, "shapes": [list(s) for s in case.input_shapes]},
            "cotangent_seed": case.cotangent_seed, "deterministic": case.deterministic, "timing": case.timing,
            "outputs": entries["output"], "gradients": entries["grad"],
        }
    contents = hashlib.sha256()
    for key in sorted(arrays):
        contents.update(f"{key}={digest(arrays[key])};".encode())
    arrays_name = f"{target.stem}.{contents.hexdigest()[:12]}.npz"
    arrays_path = target.with_name(arrays_name)
    document = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "created": baseline.created or datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "environment": baseline.environment or environment(),
        "tolerance": baseline.tolerance.to_dict(),
        "sketch": {"seed": SKETCH_SEED, "projections": SKETCH_PROJECTIONS, "full_limit": baseline.full_limit},
        "arrays_file": arrays_name,
        "cases": cases,
    }
    text = json.dumps(document, indent=1, allow_nan=False) + "\n"
    target.parent.mkdir(parents=True, exist_ok=True)
    with lock(target):
        check_replaceable(target, replace)
        # Killed writers of this baseline left temporary files of .npz files of any digest: all are older.
        remove_leftovers(target.parent, f".{target.stem}.", time.time())
        # An .npz holding these very arrays is kept: rewriting would change its bytes (zip timestamps) for nothing.
        if not _holds(arrays_path, arrays):
            atomic_write(arrays_path, lambda f: np.savez_compressed(f, **arrays))
        atomic_write(target, lambda f: f.write(text.encode()))
        for old in target.parent.glob(f"{glob.escape(target.stem)}.*.npz"):
            if old.name != arrays_name and _ARRAYS_NAME.fullmatch(old.name[len(target.stem):]):
                old.unlink(missing_ok=True)
    return target


_ARRAYS_NAME = re.compile(r"\.[0-9a-f]{12}\.npz")


def check_replaceable(target: pathlib.Path, replace: bool) -> None:
    """Raise :class:`BaselineExists` when writing ``target`` would replace a baseline it may not."""
    try:
        mode = target.stat().st_mode
    except FileNotFoundError:
        return
    if not replace:
        raise BaselineExists(f"baseline {target} exists: pass --update to replace it")
    if not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        raise BaselineExists(f"baseline {target} is marked read-only: make it writable (chmod u+w) to replace it")


def _holds(arrays_path: pathlib.Path, arrays: dict) -> bool:
    """True when ``arrays_path`` is a readable .npz holding exactly ``arrays``."""
    try:
        with np.load(arrays_path, allow_pickle=False) as npz:
            return set(npz.files) == set(arrays) and all(digest(npz[k]) == digest(arrays[k]) for k in arrays)
    except Exception:  # missing or unreadable: numpy raises many types (OSError, BadZipFile, ValueError...)
        return False


def read(path, allow_large: bool = False) -> Baseline:
    """Load and validate a baseline; raises :class:`BaselineError` saying what is wrong, and which field.

    ``allow_large`` reads arrays past the size limit of :func:`gradverify._files.read_npy_member`.
    """
    target = json_path(path)
    for _ in range(READ_ATTEMPTS):
        document = _document(target)
        arrays_path = target.with_name(document["arrays_file"])
        try:
            archive = zipfile.ZipFile(arrays_path)
        except FileNotFoundError:
            if _document(target)["arrays_file"] != document["arrays_file"]:
                continue  # a writer replaced the baseline meanwhile: read the new one
            raise BaselineError(f"baseline {target} is incomplete: its arrays file {arrays_path.name} is missing") \
                from None
        except (OSError, zipfile.BadZipFile, ValueError) as err:
            raise BaselineError(f"baseline arrays file {arrays_path} is corrupt or unreadable: {_cause(err)}") from None
        with archive:
            return _parse(document, target, _ArrayReader(archive, arrays_path, allow_large))
    raise BaselineError(f"baseline {target} kept changing while it was read ({READ_ATTEMPTS} attempts)")


def _cause(err: Exception) -> str:
    return err.strerror if isinstance(err, OSError) and err.strerror else f"{type(err).__name__}: {err}"


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not np.isfinite(value):
        raise ValueError(f"{text} is out of the range of a float64")
    return value


def _document(target: pathlib.Path) -> dict:
    """The baseline's JSON, parsed and validated against :data:`SCHEMA`."""
    try:
        data = target.read_bytes()
    except FileNotFoundError:
        raise BaselineError(f"baseline {target} is missing: record one with "
                            f"`gradverify regress record --out {target}`") from None
    except OSError as err:
        raise BaselineError(f"baseline {target} cannot be read: {_cause(err)}") from None
    try:
        document = json.loads(data, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise BaselineError(f"baseline {target} is corrupt: its JSON is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as err:
        raise BaselineError(f"baseline {target} is corrupt (not valid JSON, truncated?): {err}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise BaselineError(f"{target} is not a gradverify baseline (no \"format\": \"{FORMAT}\")")
    version = document.get("format_version")
    if version != FORMAT_VERSION:
        raise BaselineError(
            f"baseline {target} has format version {version!r}; this gradverify reads version {FORMAT_VERSION}: "
            "re-record it, or use the gradverify version that wrote it"
        )
    error = jsonschema.exceptions.best_match(_VALIDATOR.iter_errors(document))
    if error is not None:
        raise _malformed(target, list(error.absolute_path), _short(error.message))
    expected = re.compile(re.escape(target.stem) + _ARRAYS_NAME.pattern)
    if not expected.fullmatch(document["arrays_file"]):
        raise _malformed(target, ["arrays_file"], f"expected {target.stem}.<12 hex digits>.npz beside the JSON, "
                                                  f"got {document['arrays_file']!r}")
    return document


def _short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def field_name(path: list) -> str:
    """``cases['f[float64]'].gradients[0].dtype``: a JSON path as the error messages write it."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if re.fullmatch(r"\w+", str(part))
                                                           else f"[{str(part)!r}]")
    return text.lstrip(".") or "the document"


def _malformed(target: pathlib.Path, path: list, problem: str) -> BaselineError:
    return BaselineError(f"baseline {target} is malformed: field {field_name(path)}: {problem}")


class _ArrayReader:
    """The arrays of a baseline's ``.npz``, each read when first referred to (never those nothing refers to)."""

    def __init__(self, archive: zipfile.ZipFile, path: pathlib.Path, allow_large: bool):
        self.archive, self.path, self.allow_large = archive, path, allow_large
        self.members = set(archive.namelist())

    def __getitem__(self, key: str) -> np.ndarray:
        if f"{key}.npy" not in self.members:
            raise BaselineError(f"baseline arrays file {self.path} is corrupt: array {key!r} is missing")
        try:
            return read_npy_member(self.archive, f"{key}.npy", self.allow_large)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib_error) as err:
            raise BaselineError(f"baseline arrays file {self.path} is corrupt: array {key!r}: {_cause(err)}") \
                from None


def _parse(document: dict, target: pathlib.Path, arrays: _ArrayReader) -> Baseline:
    cases = {}
    for index, (name, case) in enumerate(document["cases"].items()):
        where = ["cases", name]
        shapes = case["inputs"]["shapes"]
        if len(case["gradients"]) != len(shapes):
            raise _malformed(target, [*where, "gradients"], f"{len(case['gradients'])} gradients for "
                                                            f"{len(shapes)} inputs")
        stored = {}
        for kind, field_ in (("output", "outputs"), ("grad", "gradients")):
            stored[kind] = [_stored(meta, f"c{index}_{kind}{i}", arrays, target, [*where, field_, i])
                            for i, meta in enumerate(case[field_])]
        cases[name] = CaseRecord(
            backend=case["backend"], dtype=case["dtype"], inputs_sha256=case["inputs"]["sha256"],
            input_shapes=[tuple(s) for s in shapes], cotangent_seed=case["cotangent_seed"],
            deterministic=case["deterministic"], timing=dict(case["timing"]),
            outputs=stored["output"], gradients=stored["grad"],
        )
    return Baseline(cases, Tolerance(**document["tolerance"]), document["environment"], document["created"],
                    document["sketch"]["full_limit"])


def _stored(meta: dict, key: str, arrays: _ArrayReader, target: pathlib.Path, where: list) -> StoredArray:
    if meta["key"] != key:
        raise _malformed(target, [*where, "key"], f"expected {key!r} (arrays are keyed by position), got "
                                                  f"{meta['key']!r}")
    try:
        dtype = np.dtype(meta["dtype"])
    except TypeError as err:
        raise _malformed(target, [*where, "dtype"], f"not a numpy dtype: {err}") from None
    if dtype.str != meta["dtype"] or dtype.kind not in "biufc":
        raise _malformed(target, [*where, "dtype"], f"expected a numeric dtype as numpy spells it, got "
                                                    f"{meta['dtype']!r}")
    data = arrays[key]
    sketched = meta["storage"] == "sketch"
    if sketched:
        if data.shape != (SKETCH_PROJECTIONS,) or data.dtype != np.float64:
            raise BaselineError(f"baseline arrays file {arrays.path} is corrupt: sketch {key!r} is {data.dtype} "
                                f"{data.shape}, expected float64 ({SKETCH_PROJECTIONS},)")
    elif list(data.shape) != meta["shape"] or data.dtype.str != meta["dtype"] or digest(data) != meta["sha256"]:
        raise BaselineError(f"baseline {target}: field {field_name(where)} does not describe array {key!r} of "
                            f"{arrays.path.name} (shape, dtype or digest differ): one of them is corrupt")
    return StoredArray(tuple(meta["shape"]), meta["dtype"], meta["sha256"], data, sketched, meta.get("norm"))
