"""Where audited ops come from: one module per framework, all with the same functions.

A source module provides ``select(names)`` (op ids, in order), ``dtypes(op)``,
``count(op, dtype)`` (samples), ``elements(op,
index, dtype)`` (the sample's floating elements), ``case(op, index, dtype)`` -> :class:`Case`,
``describe(op, index, dtype)``, ``mpmath_function(op, index, dtype, case)``,
``other_framework(op, index, dtype, case)``, ``native_confirmation(fn,
leaves, mode, check)`` (the framework's own checker, in float64 at the leaves), ``native_checker`` (its name),
``expected_failure(op, mode, dtypes)``
(the framework's own tests already expect that mode to fail) and ``reproducer_call(op,
index, dtype)`` (the code of the call, see :mod:`gradverify.audit.reproducer`).
"""
from __future__ import annotations

import importlib
from collections import namedtuple

FRAMEWORKS = {"torch": "gradverify.audit.torch_source", "jax": "gradverify.audit.jax_source"}

Case = namedtuple("Case", "fn leaves forward gradgrad")
"""A sample as a function: ``fn(*leaves)`` returns a tuple of outputs; ``forward``/``gradgrad`` say whether the
op declares forward-mode and second-order support."""


class Skip(Exception):
    """This sample has nothing check_grad can differentiate; the message says why."""


def source(framework):
    """The source module of ``framework`` ("torch" or "jax")."""
    if framework not in FRAMEWORKS:
        raise ValueError(f"framework: expected one of {', '.join(FRAMEWORKS)}, got {framework!r}")
    return importlib.import_module(FRAMEWORKS[framework])


def forward_over_reverse(check) -> bool:
    """Is check_grad's order-2 row ``check`` one of forward mode over the reverse-mode derivative?"""
    return "forward" in check or "consistency" in check
