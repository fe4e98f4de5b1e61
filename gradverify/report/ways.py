"""The ways of differentiating the report compares, each as "prepare once, then call".

``way.prepare(example, dtype)`` builds the function and its inputs in the
way's library (outside any timing) and returns ``run``: a call computing the
gradient of the example's loss with respect to every parameter and returning
it as numpy arrays.  Converting to numpy also waits for JAX's asynchronous
dispatch, so timing ``run`` times the whole computation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from gradverify.examples import engine_case
from reference_impls.examples import loss_function

from . import numerical


@dataclass(frozen=True)
class Way:
    """One way of differentiating: its name, the library it needs, and its ``prepare``."""

    name: str
    backend: str
    prepare: Callable
    kind: str  # "AD" (exact up to rounding) or "numerical" (truncation error as well)
    compiles: bool = False  # the first call traces and compiles, so it says nothing about speed


def _all(inputs):
    return tuple(range(len(inputs)))


def _engine_reverse(example, dtype):
    import gradverify.engine as ge

    fn, inputs = engine_case(example, dtype)
    grad = ge.func.grad(fn, argnums=_all(inputs))
    return lambda: tuple(g.array for g in grad(*inputs))


def _engine_forward(example, dtype):
    import gradverify.engine as ge

    fn, inputs = engine_case(example, dtype)
    jacobian = ge.func.jacfwd(fn, argnums=_all(inputs))
    return lambda: tuple(j.array for j in jacobian(*inputs))


def _torch_reverse(example, dtype):
    import torch

    fn, params = loss_function(example, "torch", dtype)

    def run():
        leaves = [p.detach().requires_grad_() for p in params]
        return tuple(g.numpy() for g in torch.autograd.grad(fn(*leaves), leaves))

    return run


def _torch_forward(example, dtype):
    from gradverify.check.backends import import_torch

    torch = import_torch()

    fn, params = loss_function(example, "torch", dtype)
    jacobian = torch.func.jacfwd(fn, argnums=_all(params))
    return lambda: tuple(j.numpy() for j in jacobian(*params))


def _jax(transform, jit):
    def prepare(example, dtype):
        import jax

        fn, params = loss_function(example, "jax", dtype)
        derivative = transform(jax)(fn, argnums=_all(params))
        if jit:
            derivative = jax.jit(derivative)
        return lambda: tuple(np.asarray(g) for g in derivative(*params))

    return prepare


def _numerical(scheme):
    def prepare(example, dtype):
        fn, params = loss_function(example, "numpy", dtype)
        return lambda: numerical.gradient(fn, params, scheme)

    return prepare


WAYS = (
    Way("engine reverse", "engine", _engine_reverse, "AD"),
    Way("engine forward", "engine", _engine_forward, "AD"),
    Way("PyTorch reverse", "torch", _torch_reverse, "AD"),
    Way("PyTorch forward (torch.func)", "torch", _torch_forward, "AD"),
    Way("JAX reverse", "jax", _jax(lambda jax: jax.grad, jit=False), "AD"),
    Way("JAX reverse, jit", "jax", _jax(lambda jax: jax.grad, jit=True), "AD", compiles=True),
    Way("JAX forward", "jax", _jax(lambda jax: jax.jacfwd, jit=False), "AD"),
    Way("JAX forward, jit", "jax", _jax(lambda jax: jax.jacfwd, jit=True), "AD", compiles=True),
    Way("central difference", "numpy", _numerical("central"), "numerical"),
    Way("Richardson extrapolation", "numpy", _numerical("richardson"), "numerical"),
    Way("complex step", "numpy", _numerical("complex_step"), "numerical"),
)
BASELINE = "PyTorch reverse"
BASELINE_DTYPE = "float32"
"""Speed ratios of both dtypes are to this one way (PyTorch eager reverse mode in its default dtype, what the
document uses), timed in the same session."""
