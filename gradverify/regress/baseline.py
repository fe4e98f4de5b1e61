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

Writes are atomic: the ``.npz`` is named after a digest of its contents and
written first, then the JSON replaces the old one with :func:`os.replace`, so an
interrupted record leaves the previous baseline whole (a stale ``.npz`` is
removed by the next record).  Arrays are read with ``allow_pickle=False``.
"""
from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import pathlib
import platform
import re
from dataclasses import dataclass, field

import numpy as np

from .._files import atomic_write
from .drift import Tolerance

FORMAT = "gradverify-baseline"
FORMAT_VERSION = 1
FULL_LIMIT = 10_000
SKETCH_PROJECTIONS = 16
SKETCH_SEED = 0
TRACKED_PACKAGES = ("gradverify", "numpy", "torch", "jax", "jaxlib")


class BaselineError(Exception):
    """The baseline is missing, corrupt or of an unknown format version (the message says which)."""


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


def write(baseline: Baseline, path) -> pathlib.Path:
    """Write ``baseline`` atomically to ``path`` (``NAME.json`` plus ``NAME.<digest>.npz``); returns the JSON path."""
    target = json_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
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
    # An .npz holding these very arrays is kept: rewriting would change its bytes (zip timestamps) for nothing.
    if not _holds(arrays_path, arrays):
        atomic_write(arrays_path, lambda f: np.savez_compressed(f, **arrays))
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
    atomic_write(target, lambda f: f.write(text.encode()))
    stale = re.compile(re.escape(target.stem) + r"\.[0-9a-f]{12}\.npz")
    for old in target.parent.iterdir():
        if old.name != arrays_name and stale.fullmatch(old.name):
            old.unlink(missing_ok=True)
    return target


def _holds(arrays_path: pathlib.Path, arrays: dict) -> bool:
    """True when ``arrays_path`` is a readable .npz holding exactly ``arrays``."""
    try:
        with np.load(arrays_path, allow_pickle=False) as npz:
            return set(npz.files) == set(arrays) and all(digest(npz[k]) == digest(arrays[k]) for k in arrays)
    except Exception:  # missing or unreadable: numpy raises many types (OSError, BadZipFile, ValueError...)
        return False


def read(path) -> Baseline:
    """Load and validate a baseline; raises :class:`BaselineError` saying what is wrong."""
    target = json_path(path)
    if not target.exists():
        raise BaselineError(f"baseline {target} is missing: record one with `gradverify regress record --out {target}`")
    try:
        document = json.loads(target.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BaselineError(f"baseline {target} is corrupt (not valid JSON, truncated?): {err}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise BaselineError(f"{target} is not a gradverify baseline (no \"format\": \"{FORMAT}\")")
    version = document.get("format_version")
    if version != FORMAT_VERSION:
        raise BaselineError(
            f"baseline {target} has format version {version!r}; this gradverify reads version {FORMAT_VERSION}: "
            "re-record it, or use the gradverify version that wrote it"
        )
    try:
        return _parse(document, target)
    except (KeyError, TypeError, ValueError) as err:
        raise BaselineError(f"baseline {target} is corrupt: {type(err).__name__}: {err}") from None


def _parse(document: dict, target: pathlib.Path) -> Baseline:
    arrays_path = target.with_name(document["arrays_file"])
    if not arrays_path.exists():
        raise BaselineError(f"baseline {target} is incomplete: its arrays file {arrays_path.name} is missing")
    try:
        with np.load(arrays_path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except Exception as err:  # numpy raises many types (zipfile.BadZipFile, ValueError, EOFError...) for bad files
        raise BaselineError(f"baseline arrays file {arrays_path} is corrupt: {type(err).__name__}: {err}") from None
    sketch = document["sketch"]
    if (sketch["seed"], sketch["projections"]) != (SKETCH_SEED, SKETCH_PROJECTIONS):
        raise BaselineError(f"baseline {target} is corrupt: format version {FORMAT_VERSION} sketches use seed "
                            f"{SKETCH_SEED} and {SKETCH_PROJECTIONS} projections, it says {sketch}")
    cases = {}
    for name, case in document["cases"].items():
        cases[name] = CaseRecord(
            backend=case["backend"], dtype=case["dtype"], inputs_sha256=case["inputs"]["sha256"],
            input_shapes=[tuple(s) for s in case["inputs"]["shapes"]], cotangent_seed=case["cotangent_seed"],
            deterministic=bool(case["deterministic"]), timing=dict(case["timing"]),
            outputs=[_stored(y, arrays, arrays_path) for y in case["outputs"]],
            gradients=[_stored(g, arrays, arrays_path) for g in case["gradients"]],
        )
    return Baseline(cases, Tolerance(**document["tolerance"]), document["environment"], document["created"],
                    int(sketch["full_limit"]))


def _stored(meta: dict, arrays: dict, arrays_path: pathlib.Path) -> StoredArray:
    key = meta["key"]
    if key not in arrays:
        raise BaselineError(f"baseline arrays file {arrays_path} is corrupt: array {key!r} is missing")
    data = arrays[key]
    sketched = meta["storage"] == "sketch"
    if not sketched and digest(data) != meta["sha256"]:
        raise BaselineError(f"baseline arrays file {arrays_path} is corrupt: array {key!r} does not match its digest")
    return StoredArray(tuple(meta["shape"]), meta["dtype"], meta["sha256"], data, sketched, meta.get("norm"))
