"""The cases a baseline covers, and measuring them: value, gradients and timings.

A case is ``name -> (fn, inputs)`` with ``fn`` a function of torch, JAX or
engine tensors (as :func:`gradverify.check_grad` accepts).  Its gradients are
those of the output for a one-element output, otherwise those of
``<c, fn(inputs)>`` for a fixed standard normal cotangent ``c`` (so every
entry of the Jacobian contributes).
"""
from __future__ import annotations

import collections.abc
import importlib
import importlib.util
import pathlib
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np

from gradverify.check.backends import backend_for

from .baseline import CaseRecord, StoredArray, combined_digest

COTANGENT_SEED = 0
DOCUMENT_DTYPES = ("float64", "float32")
DEFAULT_REPEATS = 5


USER_CODE_ERRORS = (Exception, SystemExit)
"""What running the user's cases may raise: any error, and sys.exit (which must not end the gate with its code)."""


class CasesError(Exception):
    """The cases could not be loaded (the message says why)."""


def document_cases() -> dict:
    """The document's examples in float64 and float32, named ``example[dtype]``."""
    from gradverify.examples import document_cases as cases_of_dtype

    return {f"{name}[{dtype}]": case for dtype in DOCUMENT_DTYPES for name, case in cases_of_dtype(dtype).items()}


def load_cases(source: str | None = None) -> dict:
    """The cases of ``source``, a Python file or an importable module defining ``CASES``; the document's by default."""
    if source is None:
        return document_cases()
    path = pathlib.Path(source)
    try:
        from_file = path.suffix == ".py" or path.exists()
        if from_file and not path.is_file():
            raise CasesError(f"--cases {source}: no such file")
    except OSError as err:
        raise CasesError(f"--cases {source}: {err.strerror}") from None
    try:
        module = _import_file(path) if from_file else importlib.import_module(source)
    except USER_CODE_ERRORS as err:
        raise CasesError(f"--cases {source}: could not load it: {type(err).__name__}: {err}") from err
    cases = getattr(module, "CASES", None)
    if not isinstance(cases, collections.abc.Mapping):
        raise CasesError(f"--cases {source}: expected a module-level CASES mapping name -> (fn, inputs), "
                         f"found {type(cases).__name__}")
    return _validated(cases, f"--cases {source}")


def _import_file(path: pathlib.Path):
    spec = importlib.util.spec_from_file_location(f"_gradverify_cases_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    # Registered before running, as an import would: dataclasses and pickling look classes up in sys.modules.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _validated(cases, origin: str) -> dict:
    """``cases`` as a dict after checking each entry is ``(callable, sequence of tensors)``."""
    checked = {}
    for name, entry in cases.items():
        if not isinstance(name, str):
            raise CasesError(f"{origin}: case names must be strings, got {name!r}")
        if not (isinstance(entry, (tuple, list)) and len(entry) == 2 and callable(entry[0])
                and isinstance(entry[1], (tuple, list))):
            raise CasesError(f"{origin}: case {name!r} must be (fn, inputs) with fn callable and inputs a tuple "
                             f"of tensors, got {type(entry).__name__}")
        checked[name] = (entry[0], tuple(entry[1]))
    if not checked:
        raise CasesError(f"{origin}: no cases defined")
    return checked


@dataclass
class Measurement:
    """One case measured now: outputs, gradients and the wall time of each forward+backward run."""

    backend: str
    dtype: str
    inputs_sha256: str
    input_shapes: list
    cotangent_seed: int | None
    outputs: list
    gradients: list
    seconds: list
    deterministic: bool

    @property
    def timing(self) -> dict:
        return {"repeats": len(self.seconds), "best_s": min(self.seconds), "median_s": statistics.median(self.seconds)}

    def record(self, full_limit: int) -> CaseRecord:
        """The baseline entry for this measurement."""
        return CaseRecord(
            self.backend, self.dtype, self.inputs_sha256, self.input_shapes, self.cotangent_seed, self.deterministic,
            self.timing, [StoredArray.of(y, full_limit) for y in self.outputs],
            [StoredArray.of(g, full_limit) for g in self.gradients],
        )


def cotangents_for(outputs) -> tuple[list, int | None]:
    """Cotangents for ``outputs`` and the seed they came from (None: a single one-element output, seeded by 1)."""
    if len(outputs) == 1 and outputs[0].size == 1:
        return [np.ones_like(outputs[0])], None
    rng = np.random.default_rng(COTANGENT_SEED)
    return [rng.standard_normal(y.shape).astype(y.dtype) for y in outputs], COTANGENT_SEED


def measure(fn, inputs, repeats: int = DEFAULT_REPEATS) -> Measurement:
    """Evaluate ``fn`` and its gradients at ``inputs``, then time ``repeats`` more runs.

    The timed runs are also compared bit for bit with the first: a case whose
    runs differ is flagged non-deterministic (its baseline cannot be exact).
    """
    if repeats < 1:
        raise ValueError(f"repeats: expected at least 1, got {repeats}")
    backend = backend_for(inputs)
    arrays = [backend.to_numpy(x) for x in inputs]
    cotangents, seed = cotangents_for(backend.evaluate(fn, arrays))
    outputs, grads = backend.vjp(fn, arrays, cotangents)
    first = combined_digest([*outputs, *grads])
    seconds, deterministic = [], True
    for _ in range(repeats):
        start = time.perf_counter()
        again_outputs, again_grads = backend.vjp(fn, arrays, cotangents)
        seconds.append(time.perf_counter() - start)
        deterministic &= combined_digest([*again_outputs, *again_grads]) == first
    return Measurement(
        backend.name, ",".join(sorted({str(a.dtype) for a in arrays})), combined_digest(arrays),
        [a.shape for a in arrays], seed, [np.asarray(y) for y in outputs], [np.asarray(g) for g in grads], seconds,
        deterministic,
    )
