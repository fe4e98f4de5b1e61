"""The record every op in the table is declared with.

An :class:`OpDef` is the single source of truth for an op: the engine runs its
``forward`` and its derivative rules, the graph generator samples from its
``domains`` and steers away from its ``kink_gap``, and the checker and tests
look up its counterparts in ``reference_impls`` by ``ref``.

Rule conventions (the table's header explains them with examples):

``forward(*arrays, **attrs) -> ndarray``
    numpy in, numpy out; never writes to its inputs.
``vjp(g, out, *inputs, **attrs) -> tuple``
    one cotangent per positional input (``None`` where the input is not
    differentiable or the cotangent is structurally zero).  ``g``, ``out`` and
    ``inputs`` are engine tensors and the rule uses engine ops only, so that
    derivatives of derivatives work.  Cotangents may have the broadcast output
    shape: the engine reduces them to each input's shape.
``jvp``: the op's tangent, declared one of three ways.  The engine drops the inputs
    without a tangent and sums the terms of the others (JAX's ``standard_jvp``), so a rule
    never sees a missing tangent; terms may have the broadcast output shape.

    - omitted (:data:`FROM_VJP`): input i's term is the VJP's i-th cotangent with its tangent
      for ``g``, right where the derivative in each input is its own transpose: an elementwise
      op's ``t * f'(x)`` where its VJP is ``g * f'(x)`` (PyTorch's ``auto_element_wise``),
      softmax.  Each term costs a whole VJP: ops of several inputs say their terms instead;
    - :data:`LINEAR`: the op applied to the tangents (zeros for the missing ones, a ``nondiff``
      input as it is), for an op linear in its differentiable inputs: sum, reshape,
      concatenate, where (PyTorch's ``auto_linear``);
    - a tuple of one function ``(t, out, *inputs, **attrs) -> term`` per input (``None`` for an
      input without derivative), ``t`` that input's tangent, as autograd's ``defjvp``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional


@dataclass(frozen=True)
class Domain:
    """Where an input may take values.

    ``low``/``high`` bound the mathematical domain (open bounds: the op is
    undefined or not differentiable at the bound itself, e.g. ``log`` at 0).
    ``sample`` is the range generators draw typical values from; it lies
    inside the domain and keeps values away from overflow.
    """

    low: float = -math.inf
    high: float = math.inf
    sample: tuple = (-3.0, 3.0)
    exclude_zero: bool = False
    integer: bool = False

    def contains(self, x) -> "object":
        """Elementwise mask of the values of ``x`` inside the domain."""
        import numpy as np

        x = np.asarray(x)
        ok = (x > self.low) & (x < self.high)
        if self.exclude_zero:
            ok &= x != 0
        return ok

    def max_step(self, x):
        """Largest symmetric step that keeps ``x ± h`` inside the domain."""
        import numpy as np

        x = np.asarray(x, dtype=np.float64)
        room = np.minimum(x - self.low, self.high - x)
        if self.exclude_zero:
            room = np.minimum(room, np.abs(x))
        return room


REAL = Domain()
POSITIVE = Domain(low=0.0, sample=(0.2, 4.0))
NONZERO = Domain(sample=(0.5, 3.0), exclude_zero=True)
CLASS_INDEX = Domain(low=-0.5, sample=(0, 4), integer=True)
CONDITION = Domain(sample=(0, 1), integer=True)


#: ``OpDef.jvp`` markers (see the module docstring).
FROM_VJP = "from_vjp"
LINEAR = "linear"


@dataclass(frozen=True)
class OpDef:
    """One op of the table.  See the module docstring for the rule conventions."""

    name: str
    forward: Callable
    vjp: Callable
    domains: tuple
    kind: str
    jvp: object = FROM_VJP
    nondiff: tuple = ()
    kink_gap: Optional[Callable] = None
    kink_convention: str = ""
    ref: str = ""
    variadic: bool = False
    broadcasts: bool = False
    #: Integer inputs give a floating result (true division, exp, softmax, mean ...); the engine casts them to its
    #: default dtype first, as PyTorch does.
    floating_result: bool = False
    #: PyTorch's backward of the op reads the op's output (it saves its result), so a backward after the output was
    #: changed in place is refused, as PyTorch's version counters refuse it (exp, sigmoid, softmax ...).
    saves_output: bool = False
    doc: str = ""
    attrs: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.ref:
            object.__setattr__(self, "ref", self.name)

    @property
    def smooth(self) -> bool:
        """True when the op is differentiable everywhere inside its domain."""
        return self.kink_gap is None

    def __repr__(self) -> str:
        return f"OpDef({self.name!r})"
