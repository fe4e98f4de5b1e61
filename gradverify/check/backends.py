"""One interface over the array libraries whose gradients the checker verifies.

A :class:`Backend` moves numpy arrays in and out of a library and asks the
library for values, reverse-mode products (VJP) and forward-mode products
(JVP).  Every method takes and returns numpy arrays, so the checker and the
numerical oracles never touch library types.  Arrays passed to ``evaluate``,
``vjp`` and ``jvp`` keep their numpy dtype inside the library: a float32
function can be evaluated on float64 copies of its inputs (the oracle's
reference evaluation) and on complex copies (complex-step differentiation).

``backend_for(inputs)`` picks the backend from the inputs' types:

========  ==============================================  ===================
name      inputs                                          derivatives from
========  ==============================================  ===================
engine    ``gradverify.engine.Tensor``                    the engine
torch     ``torch.Tensor`` (custom autograd.Function ok)  torch.autograd
jax       ``jax.Array`` (custom_vjp / custom_jvp ok)      jax.vjp / jax.jvp
numpy     ``numpy.ndarray``                               a user-supplied gradient
========  ==============================================  ===================

Functions may return one tensor or a tuple/list of tensors.
"""
from __future__ import annotations

import contextlib
import sys

import numpy as np
from ml_dtypes import bfloat16

BFLOAT16 = np.dtype(bfloat16)
"""numpy's bfloat16 (from ml_dtypes, as JAX uses): bfloat16 tensors of any library move through numpy in it."""
BACKEND_NAMES = ("engine", "torch", "jax", "numpy")
VMAP_MIN_BATCH = 32
"""Smaller batches are evaluated point by point: vmap's tracing overhead exceeds what it saves."""


def _as_list(outputs):
    return list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]


def is_real_floating_dtype(dtype) -> bool:
    """True for numpy's float16/32/64 and bfloat16."""
    dtype = np.dtype(dtype)
    return dtype.kind == "f" or dtype == BFLOAT16


def _dtype_kind(x, kind) -> str:
    """numpy's kind letter of a native tensor's dtype ("f" floating, bfloat16 included; "c" complex ...)."""
    if kind == "torch":
        return "f" if x.is_floating_point() else "c" if x.is_complex() else "i"
    return "f" if is_real_floating_dtype(x.dtype) else np.dtype(x.dtype).kind


class Backend:
    """Values and derivatives of a function of native tensors, in numpy.

    Subclasses implement :meth:`_to_native`, :meth:`to_numpy`, :meth:`call`,
    :meth:`pullback` and, where the library has forward mode, :meth:`jvp`; where
    it has vmap, :meth:`_vmapped` (then :meth:`evaluate_batch` evaluates many
    points in one call).  ``has_jvp`` says whether :meth:`jvp` is available
    at all (a function may still refuse forward mode, e.g. a custom
    autograd.Function without a ``jvp``; then :meth:`jvp` raises
    NotImplementedError).
    """

    name = "abstract"
    has_jvp = False
    conjugate = None
    """The library's complex convention (see :mod:`gradverify.check.semantics`): True when a gradient is
    ``dL/dx + i dL/dy`` (torch), False when it is ``dL/dx - i dL/dy`` (JAX), None without complex support."""
    _vmap_ok = False
    """None: vmap not tried yet; True: it works for the function; False: unavailable or failed."""

    def to_numpy(self, x) -> np.ndarray:
        """A numpy copy of the native tensor ``x``."""
        raise NotImplementedError

    def from_numpy(self, array, like):
        """A native tensor holding ``array`` with the dtype of the native tensor ``like``.

        A complex ``array`` keeps its imaginary part: the result takes the
        complex dtype of ``like``'s precision.
        """
        array = np.asarray(array)
        dtype = np.dtype(self.to_numpy(like).dtype)
        if array.dtype.kind == "c" and dtype.kind == "f":
            dtype = np.result_type(dtype, np.complex64)
        return self._to_native(array.astype(dtype))

    def _to_native(self, array: np.ndarray):
        """A native tensor holding a copy of ``array``, of the same dtype."""
        raise NotImplementedError

    def native_inputs(self, arrays):
        """Fresh native copies of ``arrays`` (a function may write into them without harm)."""
        return [self._to_native(np.array(a, copy=True)) for a in arrays]

    def evaluate(self, fn, arrays) -> list:
        """``fn``'s outputs at ``arrays``, as a list of numpy arrays."""
        with self.precision(arrays):
            outputs = self.call(fn, self.native_inputs(arrays))
        return [self.to_numpy(y) for y in _as_list(outputs)]

    def call(self, fn, natives):
        """``fn`` applied to native tensors, without recording a graph; its raw native result."""
        return fn(*natives)

    def evaluate_many(self, fn, points) -> list:
        """``[evaluate(fn, p) for p in points]``; each point is a list of arrays (one per input)."""
        stacked = self.evaluate_batch(fn, [np.stack(column) for column in zip(*points)])
        return [[y[b] for y in stacked] for b in range(len(points))]

    def evaluate_batch(self, fn, stacked) -> list:
        """fn's outputs at a batch of points: inputs and outputs carry a leading batch axis.

        Uses the library's vmap where it works.  A function vmap cannot trace
        (Python control flow on values, ``.item()``, randomness, a custom
        autograd.Function without vmap support) is evaluated point by point.
        """
        size = len(stacked[0])
        if self._vmap_ok is not False and size >= VMAP_MIN_BATCH:
            try:
                with self.precision(stacked):
                    outputs = _as_list(self._vmapped(fn)(*self.native_inputs(stacked)))
                self._vmap_ok = True
                return [self.to_numpy(y) for y in outputs]
            except Exception:  # noqa: BLE001  (any tracing failure means: evaluate one point at a time)
                self._vmap_ok = False
        per_point = [self.evaluate(fn, [x[b] for x in stacked]) for b in range(size)]
        return [np.stack(column) for column in zip(*per_point)]

    def _vmapped(self, fn):
        """``fn`` vectorised over a leading batch axis of every input."""
        raise NotImplementedError

    def vjp(self, fn, arrays, cotangents):
        """``(outputs, grads)``: fn's outputs and the cotangents' pullback, one gradient per input."""
        outputs, pull = self.pullback(fn, arrays)
        return outputs, pull(cotangents, False)

    def vjp_twice(self, fn, arrays, cotangents):
        """``(outputs, grads, again)``: as :meth:`vjp`, with the graph kept so that ``again()`` runs a second
        backward pass through it with the same cotangents (a correct backward gives the same gradients)."""
        outputs, pull = self.pullback(fn, arrays)
        grads = pull(cotangents, True)
        return outputs, grads, lambda: pull(cotangents, False)

    def pullback(self, fn, arrays):
        """``(outputs, pull)``: fn's outputs at ``arrays`` and ``pull(cotangents, retain)``, the gradients (one
        per input) of a backward pass through the graph recorded once, kept for another pass when ``retain``."""
        raise NotImplementedError

    def jvp(self, fn, arrays, tangents):
        """``(outputs, tangent_outputs)``: fn's outputs and J · tangents, per output."""
        raise NotImplementedError(f"the {self.name} backend has no forward mode")

    def differentiable_outputs(self, fn, arrays, outputs) -> list:
        """Per output (numpy ``outputs`` of ``fn`` at ``arrays``): whether the library differentiates it.

        Floating and complex outputs by default; libraries that track which
        outputs have a gradient (torch's requires_grad) say so themselves.
        """
        return [y.dtype.kind in "fc" or is_real_floating_dtype(y.dtype) for y in outputs]

    def derivative_function(self, fn, cotangents):
        """A native function ``x -> J(x)^T cotangents`` that the backend can differentiate again.

        Used for ``order=2``: the checker verifies the derivatives of this
        function like those of any other.
        """
        raise NotImplementedError(f"the {self.name} backend cannot differentiate its own gradients")

    def precision(self, arrays):
        """Context in which the library computes at the arrays' precision."""
        return contextlib.nullcontext()

    def __repr__(self):
        return f"<gradverify {self.name} backend>"


def _fill_missing(grads, arrays):
    """Zeros for the inputs an output does not depend on (libraries return None for them)."""
    return [np.zeros_like(a) if g is None else g for g, a in zip(grads, arrays)]


class EngineBackend(Backend):
    """gradverify's own engine."""

    name = "engine"
    has_jvp = True

    def __init__(self):
        import gradverify.engine as ge

        self.ge = ge

    def to_numpy(self, x):
        return np.array(x.data, copy=True)

    def _to_native(self, array):
        return self.ge.Tensor(array)

    def call(self, fn, natives):
        with self.ge.no_grad():
            return fn(*natives)

    def differentiable_outputs(self, fn, arrays, outputs):
        ge = self.ge
        leaves = [ge.Tensor(np.array(a, copy=True), requires_grad=True) for a in arrays]
        with ge.enable_grad():
            return [bool(y.requires_grad) for y in _as_list(fn(*leaves))]

    def pullback(self, fn, arrays):
        ge = self.ge
        leaves = [ge.Tensor(np.array(a, copy=True), requires_grad=True) for a in arrays]
        with ge.enable_grad():
            outputs = _as_list(fn(*leaves))

        def pull(cotangents, retain):
            used = [(y, c) for y, c in zip(outputs, cotangents) if y.requires_grad]
            grads = [None] * len(leaves)
            if used:
                grads = ge.autograd.grad(
                    [y for y, _ in used], leaves, [ge.Tensor(np.asarray(c, dtype=y.dtype)) for y, c in used],
                    retain_graph=retain, allow_unused=True,
                )
            return _fill_missing([None if g is None else self.to_numpy(g) for g in grads], arrays)

        return [self.to_numpy(y) for y in outputs], pull

    def jvp(self, fn, arrays, tangents):
        ge = self.ge
        primals = self.native_inputs(arrays)
        native_tangents = [ge.Tensor(np.asarray(t, dtype=a.dtype)) for t, a in zip(tangents, arrays)]
        n_outputs = len(self.evaluate(fn, arrays))
        outputs, tangent_outputs = [], []
        # ge.func.jvp follows one output; a tuple-valued fn is followed output by output.
        for k in range(n_outputs):
            y, ty = ge.func.jvp(lambda *xs, k=k: _as_list(fn(*xs))[k], primals, native_tangents)
            outputs.append(self.to_numpy(y))
            tangent_outputs.append(self.to_numpy(ty))
        return outputs, tangent_outputs

    def derivative_function(self, fn, cotangents):
        ge = self.ge
        fixed = [np.array(c, copy=True) for c in cotangents]

        def gradient(*xs):
            outputs, pullback = ge.func.vjp(lambda *ys: tuple(_as_list(fn(*ys))), *xs)
            return tuple(pullback(tuple(ge.Tensor(c.astype(y.dtype)) for c, y in zip(fixed, outputs))))

        return gradient


def import_torch():
    """``torch``, with its forward-mode decompositions imported up front without their 18 warnings.

    torch scripts them on the first forward-mode call, each with a DeprecationWarning about
    ``torch.jit.script`` that the user did not write; the user's own calls still warn.
    """
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", DeprecationWarning)
        import torch._decomp.decompositions_for_jvp  # noqa: F401
    return torch


class TorchBackend(Backend):
    """PyTorch, including custom ``torch.autograd.Function`` subclasses."""

    name = "torch"
    has_jvp = True
    conjugate = True

    def __init__(self, device="cpu"):
        self.torch = import_torch()
        self.device = self.torch.device(device)
        self.device_dtypes = set()
        """numpy dtypes whose tensors go to ``device`` (the inputs' own); others stay on the CPU."""

    def to_numpy(self, x):
        x = x.detach().cpu().resolve_conj().resolve_neg()
        if x.dtype == self.torch.bfloat16:
            return x.float().numpy().astype(BFLOAT16)
        return x.numpy(force=True).copy()

    def _to_native(self, array):
        """A tensor on the inputs' device in their dtypes; on the CPU otherwise (the float64 reference)."""
        array = np.ascontiguousarray(array).reshape(np.shape(array))
        if array.dtype == BFLOAT16:
            native = self.torch.from_numpy(array.astype(np.float32)).to(self.torch.bfloat16)
        else:
            native = self.torch.from_numpy(array)
        return native.to(self.device) if array.dtype in self.device_dtypes else native

    _vmap_ok = None

    def call(self, fn, natives):
        with self.torch.no_grad():
            return fn(*natives)

    def _vmapped(self, fn):
        vmapped = self.torch.func.vmap(fn)

        def call(*xs):
            with self.torch.no_grad():
                return vmapped(*xs)

        return call

    def differentiable_outputs(self, fn, arrays, outputs):
        """As torch's gradcheck: outputs with requires_grad (no grad_fn or mark_non_differentiable: none)."""
        torch = self.torch
        with torch.enable_grad():
            results = _as_list(fn(*[t.requires_grad_() for t in self.native_inputs(arrays)]))
        return [bool(y.requires_grad) and (y.is_floating_point() or y.is_complex()) for y in results]

    def pullback(self, fn, arrays):
        torch = self.torch
        leaves = [t.requires_grad_() for t in self.native_inputs(arrays)]
        with torch.enable_grad():
            outputs = _as_list(fn(*leaves))

        def pull(cotangents, retain):
            used = [(y, c) for y, c in zip(outputs, cotangents) if y.requires_grad]
            grads = [None] * len(leaves)
            if used:
                grads = torch.autograd.grad(
                    [y for y, _ in used], leaves,
                    [self._to_native(np.asarray(c)).to(y.device, y.dtype) for y, c in used],
                    retain_graph=retain, allow_unused=True,
                )
            return _fill_missing([None if g is None else self.to_numpy(g) for g in grads], arrays)

        return [self.to_numpy(y) for y in outputs], pull

    def jvp(self, fn, arrays, tangents):
        import torch.autograd.forward_ad as fwAD

        primals = self.native_inputs(arrays)
        with fwAD.dual_level():
            duals = [fwAD.make_dual(p, self._to_native(np.asarray(t, dtype=a.dtype)))
                     for p, t, a in zip(primals, tangents, arrays)]
            try:
                outputs = _as_list(fn(*duals))
            except RuntimeError as error:
                if not any(word in str(error) for word in ("forward AD", "forward-mode", "jvp")):
                    raise
                raise NotImplementedError(f"torch forward mode is not available for this function: {error}") from None
            unpacked = [fwAD.unpack_dual(y) for y in outputs]
        values = [self.to_numpy(u.primal) for u in unpacked]
        tangent_outputs = [np.zeros_like(v) if u.tangent is None else self.to_numpy(u.tangent)
                           for u, v in zip(unpacked, values)]
        return values, tangent_outputs

    def derivative_function(self, fn, cotangents):
        torch = self.torch
        fixed = [self._to_native(np.array(c, copy=True)) for c in cotangents]

        def gradient(*xs):
            with torch.enable_grad():
                leaves = [x if x.requires_grad else x.clone().requires_grad_() for x in xs]
                outputs = _as_list(fn(*leaves))
                used = [(y, c.to(y.device, y.dtype)) for y, c in zip(outputs, fixed) if y.requires_grad]
                grads = torch.autograd.grad(
                    [y for y, _ in used], leaves, [c for _, c in used], create_graph=True, allow_unused=True
                )
            return tuple(torch.zeros_like(x) if g is None else g for g, x in zip(grads, leaves))

        return gradient


class JaxBackend(Backend):
    """JAX, including ``jax.custom_vjp`` and ``jax.custom_jvp`` functions.

    Evaluations on float64 arrays run under ``jax.enable_x64(True)`` so the
    float64 reference of a float32 function is really computed in float64.
    """

    name = "jax"
    has_jvp = True
    conjugate = False

    def __init__(self):
        import jax
        import jax.numpy as jnp

        self.jax, self.jnp = jax, jnp

    def to_numpy(self, x):
        return np.array(x, copy=True)

    def _to_native(self, array):
        with self.precision([array]):
            return self.jnp.asarray(array)

    _vmap_ok = None

    def _vmapped(self, fn):
        return self.jax.vmap(fn)

    def precision(self, arrays):
        wide = any(np.asarray(a).dtype in (np.float64, np.complex128) for a in arrays)
        return self.jax.enable_x64(True) if wide else contextlib.nullcontext()

    def pullback(self, fn, arrays):
        with self.precision(arrays):
            outputs, pullback = self.jax.vjp(fn, *self.native_inputs(arrays))
        outs = _as_list(outputs)

        def pull(cotangents, retain):
            with self.precision(arrays):
                cots = [self.jnp.asarray(np.asarray(c), dtype=y.dtype) for c, y in zip(cotangents, outs)]
                grads = pullback(type(outputs)(cots) if isinstance(outputs, (tuple, list)) else cots[0])
                return [self.to_numpy(g) for g in grads]

        return [self.to_numpy(y) for y in outs], pull

    def jvp(self, fn, arrays, tangents):
        with self.precision(arrays):
            natives = self.native_inputs(arrays)
            native_tangents = [self.jnp.asarray(np.asarray(t, dtype=a.dtype)) for t, a in zip(tangents, arrays)]
            try:
                outputs, tangent_outputs = self.jax.jvp(fn, tuple(natives), tuple(native_tangents))
            except TypeError as error:
                if "forward-mode" not in str(error):
                    raise
                raise NotImplementedError(f"jax forward mode is not available for this function: {error}") from None
            return ([self.to_numpy(y) for y in _as_list(outputs)],
                    [self.to_numpy(t) for t in _as_list(tangent_outputs)])

    def derivative_function(self, fn, cotangents):
        jax, jnp = self.jax, self.jnp
        fixed = [np.array(c, copy=True) for c in cotangents]

        def gradient(*xs):
            outputs, pullback = jax.vjp(fn, *xs)
            outs = _as_list(outputs)
            cots = [jnp.asarray(c, dtype=y.dtype) for c, y in zip(fixed, outs)]
            grads = pullback(type(outputs)(cots) if isinstance(outputs, (tuple, list)) else cots[0])
            # JAX's complex gradient is dL/dx - i dL/dy: conjugated, its real view is the real gradient, whose
            # Jacobian (a Hessian) is symmetric, as the order-2 symmetry check needs.
            return tuple(jnp.conj(g) if jnp.iscomplexobj(g) else g for g in grads)

        return gradient


class NumpyBackend(Backend):
    """Plain numpy functions whose derivative the user supplies.

    ``grad_fn(*inputs)`` returns the gradient (one array per input, or a
    single array for one input) of a function with one scalar output;
    ``vjp_fn(cotangents, *inputs)`` returns one array per input for any
    function (``cotangents`` is a list, one per output); ``jvp_fn(tangents,
    *inputs)`` optionally gives forward mode (one array per output).
    """

    name = "numpy"

    def __init__(self, grad_fn=None, vjp_fn=None, jvp_fn=None):
        for argname, value in (("grad_fn", grad_fn), ("vjp_fn", vjp_fn), ("jvp_fn", jvp_fn)):
            if value is not None and not callable(value):
                raise TypeError(f"{argname}: expected a callable, got {type(value).__name__}")
        if grad_fn is None and vjp_fn is None:
            raise TypeError(
                "numpy inputs carry no derivatives: pass grad_fn=(inputs -> gradients) for a scalar "
                "function or vjp_fn=(cotangents, *inputs -> gradients), or use torch, jax or engine tensors"
            )
        self.grad_fn, self.vjp_fn, self.jvp_fn = grad_fn, vjp_fn, jvp_fn
        self.has_jvp = jvp_fn is not None

    def to_numpy(self, x):
        return np.array(x, copy=True)

    def _to_native(self, array):
        return array

    def call(self, fn, natives):
        outputs = fn(*natives)
        return [np.asarray(y) for y in outputs] if isinstance(outputs, (tuple, list)) else np.asarray(outputs)

    def pullback(self, fn, arrays):
        outputs = self.evaluate(fn, arrays)
        shapes = [a.shape for a in arrays]

        def pull(cotangents, retain):
            inputs = self.native_inputs(arrays)
            if self.vjp_fn is not None:
                return _user_arrays(self.vjp_fn(list(cotangents), *inputs), shapes, "vjp_fn", "input")
            if len(outputs) != 1 or outputs[0].size != 1:
                raise ValueError(
                    f"grad_fn needs a function with one scalar output; this one returns shapes "
                    f"{[y.shape for y in outputs]}: pass vjp_fn instead"
                )
            scale = np.asarray(cotangents[0]).reshape(())
            return [scale * g for g in _user_arrays(self.grad_fn(*inputs), shapes, "grad_fn", "input")]

        return outputs, pull

    def jvp(self, fn, arrays, tangents):
        if self.jvp_fn is None:
            raise NotImplementedError("forward mode needs jvp_fn=(tangents, *inputs -> output tangents)")
        outputs = self.evaluate(fn, arrays)
        tangent_outputs = self.jvp_fn(list(tangents), *self.native_inputs(arrays))
        return outputs, _user_arrays(tangent_outputs, [y.shape for y in outputs], "jvp_fn", "output")


def _user_arrays(values, shapes, argname, per):
    """What a user's derivative function returned, as real arrays of ``shapes`` (one per input or output).

    Raises ValueError naming ``argname`` for anything else (None, a string, a wrong count or shape).
    """
    values = _as_list(values)
    kind = "gradient" if per == "input" else "tangent"
    if len(values) != len(shapes):
        raise ValueError(f"{argname} returned {len(values)} {kind}s for {len(shapes)} {per}s")
    arrays = []
    for i, (value, shape) in enumerate(zip(values, shapes)):
        if value is None:
            raise ValueError(f"{argname} returned None for {per} {i}; expected an array of shape {shape}")
        array = np.asarray(value)
        if array.dtype.kind not in "biuf":
            raise ValueError(f"{argname} returned a {type(value).__name__} for {per} {i}; expected a real array "
                             f"of shape {shape}")
        if array.shape != shape:
            raise ValueError(f"{argname} returned a {kind} of shape {array.shape} for {per} {i} of shape {shape}")
        arrays.append(array)
    return arrays


def native_kind(x) -> str | None:
    """The backend name for one input value, or None when it is not an array of a supported library."""
    engine = sys.modules.get("gradverify.engine.core")
    if engine is not None and isinstance(x, engine.Tensor):
        return "engine"
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(x, torch.Tensor):
        return "torch"
    jax = sys.modules.get("jax")
    if jax is not None and isinstance(x, jax.Array):
        return "jax"
    if isinstance(x, np.ndarray):
        return "numpy"
    return None


def backend_for(inputs, backend="auto", grad_fn=None, vjp_fn=None, jvp_fn=None) -> Backend:
    """The backend for ``inputs`` (a sequence of native tensors).

    ``backend="auto"`` infers it from the inputs' types, which must all come
    from one library; numpy inputs need ``grad_fn`` or ``vjp_fn`` (see
    :class:`NumpyBackend`).  Raises TypeError naming the offending input.
    """
    if isinstance(backend, Backend):
        return backend
    if backend != "auto" and backend not in BACKEND_NAMES:
        raise ValueError(f"backend: expected 'auto' or one of {BACKEND_NAMES}, got {backend!r}")
    if not inputs:
        raise TypeError("check_grad needs at least one input to differentiate with respect to")
    kinds = []
    for i, x in enumerate(inputs):
        kind = native_kind(x)
        if kind is None:
            raise TypeError(
                f"inputs[{i}]: expected an engine, torch or jax tensor or a numpy array, got {type(x).__name__}"
            )
        dtype_kind = _dtype_kind(x, kind)
        if dtype_kind == "c" and kind in ("engine", "numpy"):
            raise TypeError(f"inputs[{i}] is complex ({x.dtype}): complex derivatives follow a library's "
                            "convention; use torch or jax tensors")
        if dtype_kind not in "fc":
            raise TypeError(f"inputs[{i}]: gradients need a floating-point or complex dtype, got {x.dtype}")
        kinds.append(kind)
    if len(set(kinds)) > 1:
        listing = ", ".join(f"inputs[{i}] is {k}" for i, k in enumerate(kinds))
        raise TypeError(f"all inputs must come from one library; {listing}")
    kind = kinds[0] if backend == "auto" else backend
    if kind != kinds[0]:
        raise TypeError(f"backend={backend!r} but the inputs are {kinds[0]} arrays")
    if kind == "numpy":
        return NumpyBackend(grad_fn=grad_fn, vjp_fn=vjp_fn, jvp_fn=jvp_fn)
    if grad_fn is not None or vjp_fn is not None:
        raise TypeError(f"grad_fn/vjp_fn are for numpy functions; {kind} functions are differentiated by {kind}")
    if kind == "torch":
        devices = {str(x.device) for x in inputs}
        if len(devices) > 1:
            raise TypeError(f"all inputs must be on one device; got {', '.join(sorted(devices))}")
        # Computations in the inputs' dtypes run on their device; the float64 reference runs on the CPU.
        backend = TorchBackend(inputs[0].device)
        backend.device_dtypes = {backend.to_numpy(x.detach().reshape(-1)[:0]).dtype for x in inputs}
        return backend
    return {"engine": EngineBackend, "jax": JaxBackend}[kind]()
