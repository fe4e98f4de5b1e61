"""The table's layer_norm: first and second order against PyTorch (float64), and accurate where the composed
formula cancels (issue 16)."""
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import gradverify.engine as ge
from gradverify.fuzz.oracles import check_case
from gradverify.fuzz.surface import surface

EPS = 1e-5


def _derivatives(lib, x, weight, bias, normalized, cotangent, tangents):
    """Output, the VJP of every input, the JVP and the Hessian-vector product of <cotangent, output>."""
    def layer_norm(x, weight, bias):
        return lib.nn.functional.layer_norm(x, normalized, weight, bias, eps=EPS)

    leaves = [lib.tensor(a, dtype=lib.float64, requires_grad=True) for a in (x, weight, bias)]
    out = layer_norm(*leaves)
    vjp = lib.autograd.grad((out * lib.tensor(cotangent)).sum(), leaves, create_graph=True)
    hvp = lib.autograd.grad(sum((g * lib.tensor(t)).sum() for g, t in zip(vjp, tangents)), leaves, allow_unused=True)
    hvp = [lib.zeros_like(leaf) if h is None else h for h, leaf in zip(hvp, leaves)]  # the bias's (none in both)
    primals, directions = ([lib.tensor(a, dtype=lib.float64) for a in arrays] for arrays in ((x, weight, bias), tangents))
    jvp = (lib.func.jvp if lib is torch else ge.func.jvp)(layer_norm, tuple(primals), tuple(directions))[1]
    return [t.detach().numpy() for t in (out, *vjp, *hvp, jvp)]


@given(st.sampled_from([((4, 5), (5,)), ((2, 3, 4), (3, 4)), ((3, 2), (2,)), ((6,), (6,))]),
       st.sampled_from([(1.0, 0.0), (1e-2, 0.0), (1.0, 1e3)]), st.integers(0, 2**32 - 1))
def test_first_and_second_order_match_torch(shapes, scale_offset, seed):
    shape, normalized = shapes
    scale, offset = scale_offset
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * scale + offset
    weight, bias = rng.uniform(0.5, 2.0, normalized), rng.standard_normal(normalized)
    cotangent = rng.standard_normal(shape)
    tangents = [rng.standard_normal(shape), rng.standard_normal(normalized), rng.standard_normal(normalized)]
    ours = _derivatives(ge, x, weight, bias, normalized, cotangent, tangents)
    theirs = _derivatives(torch, x, weight, bias, normalized, cotangent, tangents)
    # Two entries normalised, or a mean far above the spread, cancel in torch's own formulas: the digits it loses
    # (measured: 3e-11 and 9e-13 of the largest entry, 1.6e-8 together; 1.5e-15 elsewhere) bound the agreement.
    rtol = 1e-13 * (1e4 if offset else 1.0) * (1e4 if normalized == (2,) else 1.0)
    for name, a, b in zip(["out", "vjp x", "vjp w", "vjp b", "hvp x", "hvp w", "hvp b", "jvp"], ours, theirs):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.max(np.abs(b)), err_msg=name)


def _graph(normalized, weight, bias):
    def f(ops, x):
        constants = [ops.const(np.asarray(a, dtype=np.float64)) for a in (weight, bias)]
        return surface(ops).F.layer_norm(x, normalized, *constants)

    return f


@pytest.mark.parametrize("x, weight, bias", [
    ([[104.0, -110.05]], [1.0, 1.0], [1.0, 1.0]),  # issue 16's graph: the composed JVP was 1.4e-7 off
    ([[3.0e3, 3.0e3 + 0.25, 3.0e3 - 0.5]], [0.7, 1.3, 2.0], [0.0, 0.1, -0.2]),  # the mean far above the spread
    ([[-7.5, 12.25], [0.125, 0.5]], [2.0, 0.5], [0.0, 0.0]),
])
def test_every_oracle_agrees_where_the_composed_formula_cancels(x, weight, bias):
    x = np.asarray(x)
    rng = np.random.default_rng(16)
    cotangent, tangent = rng.standard_normal(x.shape), rng.standard_normal(x.shape)
    outcome = check_case(_graph((x.shape[-1],), weight, bias), [x], cotangent, [tangent], depth=1)
    assert outcome.engine_failures == [], [str(f) for f in outcome.findings]


def test_a_constant_row_normalises_to_the_bias_with_a_finite_gradient_as_in_torch():
    x = np.array([[1.0, 3.0], [5.0, 5.0]])
    results = []
    for lib in (ge, torch):
        leaf = lib.tensor(x, requires_grad=True)
        out = lib.nn.functional.layer_norm(leaf, (2,), bias=lib.tensor([0.5, 0.25], dtype=lib.float64))
        (out * lib.tensor([[1.0, 2.0], [3.0, -1.0]], dtype=lib.float64)).sum().backward()
        results.append((out.detach().numpy(), leaf.grad.numpy()))
    (out, grad), (torch_out, torch_grad) = results
    assert out[1].tolist() == [0.5, 0.25] and np.all(np.isfinite(grad))
    np.testing.assert_allclose(out, torch_out, rtol=1e-15)
    np.testing.assert_allclose(grad, torch_grad, rtol=0, atol=1e-12 * np.max(np.abs(torch_grad)))  # torch's cancels
