"""The torch-shaped public functions of the engine (``ge.exp``, ``ge.sum(x, dim=...)``, ``ge.tensor`` ...), gathered.

Each role has its module: :mod:`.factories` and :mod:`.random` make tensors, :mod:`.composite` is the math,
:mod:`.shapes` the shape and indexing functions, :mod:`.grad_mode` the recording switches.  The op table's
elementwise ops and reductions are public from the table itself (:data:`TABLE_FUNCTIONS`): an op added to the
table becomes ``ge.<name>`` and a Tensor method without a list to edit.
"""
from __future__ import annotations

import numpy as np

from gradverify.ops import TABLE

from . import composite, devices, factories, grad_mode, shapes
from . import functional as F
from .composite import *  # noqa: F401,F403
from .composite import reduction
from .core import Tensor
from .devices import *  # noqa: F401,F403
from .factories import *  # noqa: F401,F403
from .grad_mode import *  # noqa: F401,F403
from .random import Generator, initial_seed, manual_seed, seed  # noqa: F401
from .shapes import *  # noqa: F401,F403


def _table_functions():
    """The public function of each table op that no role module writes out: an elementwise op's engine function
    as it is, a reduction taking torch's ``dim`` and ``keepdim``.

    An op named ``*_backward`` is another's derivative, internal as torch's aten ops of that name; ops of
    other kinds take numpy's attributes (``axis``), so a role module gives them torch's signature.
    """
    written = set(composite.__all__) | set(shapes.__all__)
    functions = {}
    for name, op in TABLE.items():
        if name in written or name.endswith("_backward"):
            continue
        if op.kind in ("unary", "binary") and not op.attrs:
            functions[name] = getattr(F, name)
        elif op.kind == "reduction":
            functions[name] = reduction(name)
    return functions


TABLE_FUNCTIONS = _table_functions()
globals().update(TABLE_FUNCTIONS)


def allclose(a, b, rtol=1e-05, atol=1e-08, equal_nan=False):
    """Whether every element of ``a`` is within ``atol + rtol * |b|`` of ``b`` (torch.allclose)."""
    return bool(np.allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol, equal_nan=equal_nan))


def is_tensor(obj):
    """Whether ``obj`` is an engine tensor."""
    return isinstance(obj, Tensor)


def numel(x):
    """The number of elements of ``x``."""
    return int(x.array.size)


def clone(x):
    """A differentiable copy of ``x``."""
    return x.clone()


def detach(x):
    """``x``'s values cut from the graph (shared memory)."""
    return x.detach()


# Last: serialization builds on this module (through nn), which must be complete when it is imported.
from .serialization import load, save  # noqa: E402

__all__ = [
    *factories.__all__, *devices.__all__, *composite.__all__, *shapes.__all__, *grad_mode.__all__, *TABLE_FUNCTIONS,
    "Generator", "seed", "initial_seed", "manual_seed", "allclose", "is_tensor", "numel", "clone", "detach", "save",
    "load",
]
#: The table's ops that are public functions, generated above or written out by a role module.
PUBLIC_OPS = tuple(name for name in TABLE if name in __all__)
