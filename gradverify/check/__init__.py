"""Gradient checking: is the analytical derivative of a function right?

``check_grad(fn, *inputs)`` compares the derivatives an AD system computes
(engine, PyTorch, JAX, or a numpy function with a user-supplied gradient)
with error-bounded numerical oracles (:mod:`gradverify.check.oracles`) and
returns a :class:`CheckResult` whose verdict is "pass", "fail" or
"inconclusive", with the worst entries and the bound each was judged against.
``assert_grad`` raises :class:`GradientMismatch` (an AssertionError) unless
the verdict is "pass".
"""
from .backends import Backend, backend_for
from .checker import CheckResult, assert_grad, check_grad
from .errors import GradientMismatch, MutatedInput, NondeterministicFunction, UncheckableFunction

__all__ = [
    "check_grad", "assert_grad", "CheckResult", "GradientMismatch", "UncheckableFunction",
    "NondeterministicFunction", "MutatedInput", "Backend", "backend_for",
]
