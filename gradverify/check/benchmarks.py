"""Measurements of the checker against torch.autograd.gradcheck and jax.test_util.check_grads.

``sensitivity_table()`` injects a relative error δ into a backward pass
(the correct VJP multiplied by 1+δ, either on every entry or on one entry)
and records which checker flags it.  ``cost_table()`` times the checkers on
the document's two-layer MLP (float64, W1 64×10, b1, W2 5×64, b2: 1029
parameters, batch 8, sigmoid, softmax, cross-entropy), interleaving the
tools in every repetition so that machine load hits them alike.

Both return pandas DataFrames; ``benchmarks/bench_check.py`` prints them and
the report (``gradverify.report``) embeds them.  ``quick=True`` gives a
smaller run for tests and previews.
"""
from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd

from .checker import check_grad

DELTAS = tuple(10.0**-k for k in range(2, 10))
"""δ = 1e-2 ... 1e-9."""
SENSITIVITY_SIZE = 1000
"""Input size of the sensitivity functions (the fast-mode claim is made on 1000 elements)."""


def _corruption(delta, where, size, index=None):
    """Multiplier applied to a correct gradient: 1+δ everywhere ("spread") or at one entry ("one").

    The one entry is ``index`` (default: a third of the way in).
    """
    if where not in ("spread", "one"):
        raise ValueError(f"where: expected 'spread' or 'one', got {where!r}")
    factor = np.ones(size)
    if where == "spread":
        factor[:] += delta
    else:
        factor[size // 3 if index is None else index] += delta
    return factor


def _problem(size, seed=0):
    """The test function's point and matrix: f(x) = A · tanh(x) with 3 outputs."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal(size), rng.standard_normal((3, size))


def torch_corrupted(delta, where, size=SENSITIVITY_SIZE, seed=0, index=None):
    """(fn, x): a torch function whose custom backward is wrong by the factor (1+δ) (spread or at entry ``index``)."""
    import torch

    x0, a0 = _problem(size, seed)
    matrix = torch.from_numpy(a0)
    factor = torch.from_numpy(_corruption(delta, where, size, index))

    class Corrupted(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return matrix @ torch.tanh(x)

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return (matrix.T @ grad) * (1 - torch.tanh(x) ** 2) * factor

    return Corrupted.apply, torch.from_numpy(x0.copy())


def jax_corrupted(delta, where, size=SENSITIVITY_SIZE, seed=0, index=None):
    """(fn, x): the same function in JAX with a ``jax.custom_vjp`` backward wrong by (1+δ)."""
    import jax
    import jax.numpy as jnp

    x0, a0 = _problem(size, seed)
    with jax.enable_x64(True):
        matrix, factor = jnp.asarray(a0), jnp.asarray(_corruption(delta, where, size, index))

        @jax.custom_vjp
        def corrupted(x):
            return matrix @ jnp.tanh(x)

        def forward(x):
            return corrupted(x), x

        def backward(x, grad):
            return ((matrix.T @ grad) * (1 - jnp.tanh(x) ** 2) * factor,)

        corrupted.defvjp(forward, backward)
        return corrupted, jnp.asarray(x0)


def _torch_flags(fn, x, fast_mode):
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        passed = torch.autograd.gradcheck(fn, (x.clone().requires_grad_(),), fast_mode=fast_mode,
                                          raise_exception=False)
    return not passed


def _jax_flags(fn, x):
    import jax
    from jax.test_util import check_grads

    with jax.enable_x64(True):
        try:
            check_grads(fn, (x,), order=1, modes=("rev",))
        except AssertionError:
            return True
    return False


def sensitivity_table(deltas=DELTAS, size=SENSITIVITY_SIZE, quick=False, tools=None) -> pd.DataFrame:
    """Which checker flags a backward wrong by the factor (1+δ): one row per δ, one column per tool and error kind.

    Columns are ``"<tool> (spread)"`` and ``"<tool> (one entry)"`` for the
    tools gradverify full, gradverify fast, torch gradcheck, torch gradcheck
    fast and jax check_grads; True means the error was flagged.  ``quick``
    uses a 200-element input and four values of δ.
    """
    if quick:
        deltas, size = (1e-2, 1e-4, 1e-6, 1e-8), 200
    runners = {
        "gradverify full": lambda fn, x, jfn, jx: not check_grad(fn, x, mode="full").passed,
        "gradverify fast": lambda fn, x, jfn, jx: not check_grad(fn, x, mode="fast").passed,
        "torch gradcheck": lambda fn, x, jfn, jx: _torch_flags(fn, x, fast_mode=False),
        "torch gradcheck fast": lambda fn, x, jfn, jx: _torch_flags(fn, x, fast_mode=True),
        "jax check_grads": lambda fn, x, jfn, jx: _jax_flags(jfn, jx),
    }
    tools = list(runners) if tools is None else list(tools)
    records = []
    for delta in deltas:
        row = {"delta": delta}
        for where, label in (("spread", "spread"), ("one", "one entry")):
            fn, x = torch_corrupted(delta, where, size)
            jfn, jx = jax_corrupted(delta, where, size) if "jax check_grads" in tools else (None, None)
            for tool in tools:
                row[f"{tool} ({label})"] = bool(runners[tool](fn, x, jfn, jx))
        records.append(row)
    return pd.DataFrame(records).set_index("delta")


def document_mlp(seed=0, dtype="float64"):
    """(loss, parameters): the document's two-layer MLP as a torch function of (W1, b1, W2, b2).

    The batch (8 inputs of 10 features, 5 classes) is fixed inside ``loss``
    and follows the parameters' dtype, so a float32 MLP can be evaluated in
    float64 by the checker's oracle.
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    inputs = torch.randn(8, 10, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, 5, (8,), generator=generator)
    params = tuple(
        (torch.randn(*shape, generator=generator, dtype=torch.float64) * spread).to(getattr(torch, dtype))
        for shape, spread in (((64, 10), 0.3), ((64,), 0.1), ((5, 64), 0.3), ((5,), 0.1))
    )

    def loss(w1, b1, w2, b2):
        hidden = torch.sigmoid(inputs.to(w1.dtype) @ w1.T + b1)
        logits = hidden @ w2.T + b2
        return torch.nn.functional.cross_entropy(logits, labels)

    return loss, params


def cost_table(repeats=5, quick=False, timer=None) -> pd.DataFrame:
    """Median wall time of each checker on the document's MLP, tools interleaved in every repetition.

    Rows: gradverify full / fast, torch gradcheck (slow) / fast; columns:
    ``seconds`` (median), ``verdict``, and ``ratio`` (gradverify over torch in
    the same mode).  ``quick`` runs two repetitions.  Torch runs on one
    thread meanwhile.  ``timer(runs) -> {key: seconds per call}``, given,
    replaces the ``repeats`` rounds (the report times until the spread is small).
    """
    import torch

    loss, params = document_mlp()
    repeats = 2 if quick else repeats

    def ours(mode):
        return check_grad(loss, *params, mode=mode).verdict

    def theirs(fast_mode):
        leaves = [p.clone().requires_grad_() for p in params]
        return "pass" if torch.autograd.gradcheck(loss, leaves, fast_mode=fast_mode, raise_exception=False) \
            else "fail"

    verdicts = {}
    checks = {
        ("gradverify", "full"): lambda: ours("full"),
        ("torch gradcheck", "full"): lambda: theirs(False),
        ("gradverify", "fast"): lambda: ours("fast"),
        ("torch gradcheck", "fast"): lambda: theirs(True),
    }
    runs = {key: (lambda key=key, check=check: verdicts.__setitem__(key, check())) for key, check in checks.items()}
    times = {key: [] for key in runs}
    threads = torch.get_num_threads()
    # One thread: on a shared machine, thread oversubscription would blur the comparison.
    torch.set_num_threads(1)
    try:
        for run in runs.values():
            run()  # warm-up: first calls pay imports and kernel set-up
        if timer is not None:
            times = timer(runs)
        for _ in range(0 if timer is not None else repeats):
            for key, run in runs.items():
                start = time.perf_counter()
                run()
                times[key].append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    records = [{"tool": tool, "mode": mode, "seconds": float(np.median(times[(tool, mode)])),
                "verdict": verdicts[(tool, mode)]} for tool, mode in runs]
    frame = pd.DataFrame(records).set_index(["tool", "mode"])
    for mode in ("full", "fast"):
        frame.loc[("gradverify", mode), "ratio"] = (frame.loc[("gradverify", mode), "seconds"]
                                                    / frame.loc[("torch gradcheck", mode), "seconds"])
    return frame
