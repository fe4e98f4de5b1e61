"""What check_grad differentiates, as each framework defines it.

The oracles and comparisons work on real arrays.  A :class:`View` maps a function's inputs and outputs onto
that real problem the way torch.autograd.gradcheck and JAX define derivatives:

non-differentiable outputs
    outputs torch gives no gradient (``requires_grad=False``: no grad_fn, ``ctx.mark_non_differentiable``,
    native_layer_norm's mean and rstd) and integer or boolean outputs (JAX's float0 cotangents) are skipped
    with a note, as torch's gradcheck skips them; ``strict=True`` checks the floating ones too, against
    their declared derivative, zero.  When no output is differentiable, the floating ones are checked for a
    zero derivative, as torch's gradcheck does.
complex values
    a complex array is seen as its real and imaginary parts (a trailing axis of 2, as
    ``torch.view_as_real``).  Along a real cotangent ``(a, b)`` on ``w = u + iv``, the real loss is
    ``L = a u + b v``.  torch's VJP takes ``g = a + ib`` and returns ``dL/dx + i dL/dy`` for ``z = x + iy``
    (the conjugate Wirtinger derivative times 2, which torch's gradcheck checks); JAX's takes ``a - ib`` and
    returns ``dL/dx - i dL/dy`` (its grad of ``|z|^2`` is ``2 conj(z)``).  Forward mode is the directional
    derivative in both.  The function is not analytic in this view, so no complex step is taken.
infinite input entries
    ±inf entries (masks in attention) are held fixed; only the finite entries are differentiated.
non-finite output entries
    an output entry that is NaN or ±inf at the point has no derivative to compare: it is left out with a
    note, and a function with no finite output entry is inconclusive.
"""
from __future__ import annotations

import numpy as np

from .backends import Backend, is_real_floating_dtype


class _Slot:
    """One input or output: its real view (finite entries only, complex as real/imaginary pairs)."""

    def __init__(self, array, free=None):
        self.shape = array.shape
        self.complex = array.dtype.kind == "c"
        self.free = None if free is None or free.all() else free
        entries = self.shape if self.free is None else (int(self.free.sum()),)
        self.view_shape = entries + ((2,) if self.complex else ())

    @property
    def identity(self):
        return self.free is None and not self.complex

    def to_real(self, full, batch=0):
        """The real view of ``full`` (with ``batch`` leading axes)."""
        full = np.asarray(full)
        if self.free is not None:
            full = full[(slice(None),) * batch + (self.free,)]
        if self.complex:
            full = np.stack([full.real, full.imag], axis=-1)
        elif full.dtype.kind == "c":
            full = full.real
        return full

    def from_real(self, real, fill, batch=0):
        """The full array whose real view is ``real``; entries outside the view are ``fill``'s."""
        real = np.asarray(real)
        values = real[..., 0] + 1j * real[..., 1] if self.complex else real
        if self.free is None:
            return values
        full = np.array(np.broadcast_to(fill, real.shape[:batch] + self.shape), dtype=values.dtype)
        full[(slice(None),) * batch + (self.free,)] = values
        return full

    def element(self, flat):
        """``"[i, j]"`` of entry ``flat`` of the view in the original array (with ``re``/``im`` if complex)."""
        index = np.unravel_index(int(flat), self.view_shape)
        part = ""
        if self.complex:
            index, part = index[:-1], (" re", " im")[int(index[-1])]
        if self.free is not None:
            index = tuple(np.argwhere(self.free)[int(index[0])])
        return "[" + ", ".join(str(int(v)) for v in index) + part + "]"


class View:
    """The real problem of a function: free input entries in, checked output entries out.

    ``arrays`` are the inputs and ``outputs`` the outputs at the point (numpy);
    ``differentiable`` says per output whether the framework differentiates it;
    ``conjugate`` is the backend's complex convention (True: torch's, False: JAX's).
    """

    def __init__(self, arrays, outputs, differentiable, conjugate, strict=False):
        self.templates = [np.array(a, copy=True) for a in arrays]
        self.inputs = [_Slot(a, np.isfinite(a)) for a in arrays]
        self.conjugate = conjugate
        self.notes = []
        floating = [y.dtype.kind in "fc" or is_real_floating_dtype(y.dtype) for y in outputs]
        if strict:
            checked = floating
        elif any(differentiable):
            checked = list(differentiable)
        else:
            checked = floating
            if any(floating):
                self.notes.append("fn has no differentiable output: its floating outputs are checked for a zero "
                                  "derivative, as torch's gradcheck does")
        skipped = [k for k, (c, f) in enumerate(zip(checked, floating)) if f and not c]
        if skipped:
            self.notes.append(f"output{'s' * (len(skipped) > 1)} {', '.join(map(str, skipped))} not "
                              "differentiable (the framework gives no gradient): skipped; strict=True checks "
                              f"{'them' if len(skipped) > 1 else 'it'} against a zero derivative")
        integers = [k for k, f in enumerate(floating) if not f]
        if integers:
            self.notes.append(f"output{'s' * (len(integers) > 1)} {', '.join(map(str, integers))} of integer or "
                              "boolean dtype: no derivative (JAX's float0), skipped")
        self.n_outputs = len(outputs)
        self.checked, self.outputs, self.dropped = [], [], []
        for k, (y, check) in enumerate(zip(outputs, checked)):
            if not check:
                continue
            finite = np.isfinite(y)
            if not finite.all():
                self.notes.append(f"output {k}: {int((~finite).sum())} of {y.size} entries are NaN or infinite at "
                                  "the point; a non-finite value has no derivative to compare, so they are left out")
            if finite.any() or y.size == 0:
                self.checked.append(k)
                self.outputs.append(_Slot(y, finite))
            else:
                self.dropped.append(k)
        fixed = [int(np.sum(~np.isfinite(a))) for a in arrays]
        for k, count in enumerate(fixed):
            if count:
                self.notes.append(f"input {k}: {count} infinite entries are held fixed (as masks are); the "
                                  "finite ones are differentiated")
        self.no_floating_output = not any(floating)

    @property
    def identity(self):
        """Whether the view changes nothing (every output checked, real and finite)."""
        return (all(s.identity for s in self.inputs + self.outputs)
                and self.checked == list(range(self.n_outputs)))

    def output_sizes_of(self, flat):
        """``|flat|`` (a vector over the checked outputs' real view), where both parts of a complex entry get
        the number's modulus: complex arithmetic mixes the parts, so each carries the rounding of both (the
        tangent of a real eigenvalue's imaginary part is rounding of the real parts' terms)."""
        sizes, start = np.abs(np.asarray(flat, dtype=np.float64)), 0
        for slot in self.outputs:
            size = int(np.prod(slot.view_shape))
            if slot.complex:
                pairs = sizes[start:start + size].reshape(-1, 2)
                pairs[:] = np.hypot(pairs[:, :1], pairs[:, 1:])
            start += size
        return sizes

    def real_inputs(self, arrays, batch=0):
        return [s.to_real(a, batch) for s, a in zip(self.inputs, arrays)]

    def full_inputs(self, real, batch=0):
        """The function's inputs at the real point ``real`` (infinite entries restored)."""
        return [s.from_real(r, t, batch) for s, r, t in zip(self.inputs, real, self.templates)]

    def full_tangents(self, real):
        return [s.from_real(r, 0.0) for s, r in zip(self.inputs, real)]

    def selected(self, fn):
        """``fn`` returning only the checked outputs: the others never enter a derivative (a NaN output's
        zero cotangent would still make NaN gradients, JAX would want float0 cotangents for integers)."""
        checked = tuple(self.checked)

        def checked_outputs(*inputs):
            outputs = fn(*inputs)
            outputs = list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]
            return tuple(outputs[k] for k in checked)

        return checked_outputs

    def real_outputs(self, outputs, batch=0, selected=True):
        """The real views of the checked outputs (of all of fn's outputs unless ``selected``); output
        tangents too."""
        if not selected:
            outputs = [outputs[k] for k in self.checked]
        return [s.to_real(y, batch) for s, y in zip(self.outputs, outputs)]

    def full_cotangents(self, real):
        """The cotangents of the checked outputs whose real views are ``real``, in the backend's convention."""
        full = [s.from_real(r, 0.0) for s, r in zip(self.outputs, real)]
        return full if self.conjugate else [np.conj(c) for c in full]

    def real_gradients(self, grads):
        return [s.to_real(g if self.conjugate else np.conj(g)) for s, g in zip(self.inputs, grads)]

    def input_element(self, k, flat):
        return self.inputs[k].element(flat)

    def output_element(self, i, flat):
        """Name of entry ``flat`` of checked output ``i``: ``"k[...]"`` with ``k`` the function's output number."""
        return f"{self.checked[i]}{self.outputs[i].element(flat)}"


class ViewedBackend(Backend):
    """``inner``'s values and derivatives of a function, seen through a :class:`View` (numpy in and out)."""

    def __init__(self, inner, view):
        self.inner, self.view = inner, view
        self.name, self.has_jvp = inner.name, inner.has_jvp

    def to_numpy(self, x):
        return np.array(x, copy=True)

    def _to_native(self, array):
        return array

    def evaluate(self, fn, arrays):
        return self.view.real_outputs(self.inner.evaluate(self.view.selected(fn), self.view.full_inputs(arrays)))

    def evaluate_batch(self, fn, stacked):
        outputs = self.inner.evaluate_batch(self.view.selected(fn), self.view.full_inputs(stacked, batch=1))
        return self.view.real_outputs(outputs, batch=1)

    def pullback(self, fn, arrays):
        outputs, pull = self.inner.pullback(self.view.selected(fn), self.view.full_inputs(arrays))
        return self.view.real_outputs(outputs), lambda cotangents, retain: self.view.real_gradients(
            pull(self.view.full_cotangents(cotangents), retain))

    def jvp(self, fn, arrays, tangents):
        outputs, tangent_outputs = self.inner.jvp(self.view.selected(fn), self.view.full_inputs(arrays),
                                                  self.view.full_tangents(tangents))
        return self.view.real_outputs(outputs), self.view.real_outputs(tangent_outputs)
