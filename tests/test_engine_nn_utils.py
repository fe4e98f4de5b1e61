"""ge.nn.utils, BatchNorm1d and F.pad against torch: values, shapes, gradients and state."""
import math

import numpy as np
import pytest
import torch

import gradverify.engine as ge
import gradverify.engine.nn.utils as ge_utils

TOL = dict(rtol=1e-12, atol=1e-12)


def _grad_pairs(seed, shapes):
    """Engine and torch parameter lists holding the same float64 values and gradients."""
    rng = np.random.default_rng(seed)
    ours, theirs = [], []
    for shape in shapes:
        value, grad = rng.standard_normal(shape), rng.standard_normal(shape)
        p = ge.nn.Parameter(value)
        p.grad = ge.tensor(grad)
        q = torch.nn.Parameter(torch.tensor(value))
        q.grad = torch.tensor(grad)
        ours.append(p)
        theirs.append(q)
    return ours, theirs


SHAPES = [(3, 4), (5,), (2, 2, 2)]


@pytest.mark.parametrize("max_norm", [0.5, 3.0, 100.0])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf, 0.0])
def test_clip_grad_norm_matches_torch(max_norm, norm_type):
    ours, theirs = _grad_pairs(0, SHAPES)
    held = ours[0].grad
    total = ge_utils.clip_grad_norm_(ours, max_norm, norm_type)
    expected = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    assert total.shape == () and total.dtype == np.float64
    np.testing.assert_allclose(total.numpy(), expected.numpy(), **TOL)
    for p, q in zip(ours, theirs):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), **TOL)
    assert ours[0].grad is held  # scaled in place


def test_clip_grad_norm_single_tensor_and_no_grads():
    ours, theirs = _grad_pairs(1, [(4, 3)])
    total = ge_utils.clip_grad_norm_(ours[0], 1.0)
    np.testing.assert_allclose(total.numpy(), torch.nn.utils.clip_grad_norm_(theirs[0], 1.0).numpy(), **TOL)
    np.testing.assert_allclose(ours[0].grad.numpy(), theirs[0].grad.numpy(), **TOL)
    assert ge_utils.clip_grad_norm_([ge.nn.Parameter(np.ones(2))], 1.0).item() == 0.0


def test_clip_grad_norm_nonfinite_raises_when_asked():
    ours, _ = _grad_pairs(2, [(3,)])
    ours[0].grad.data[0] = np.inf
    with pytest.raises(RuntimeError, match="non-finite"):
        ge_utils.clip_grad_norm_(ours, 1.0, error_if_nonfinite=True)


@pytest.mark.parametrize("clip_value", [0.1, 0.7, 5.0])
def test_clip_grad_value_matches_torch(clip_value):
    ours, theirs = _grad_pairs(3, SHAPES)
    ge_utils.clip_grad_value_(ours, clip_value)
    torch.nn.utils.clip_grad_value_(theirs, clip_value)
    for p, q in zip(ours, theirs):
        np.testing.assert_array_equal(p.grad.numpy(), q.grad.numpy())


def test_parameters_to_vector_values_and_gradient():
    ours, theirs = _grad_pairs(4, SHAPES)
    for p in ours + theirs:
        p.grad = None
    vec = ge_utils.parameters_to_vector(ours)
    expected = torch.nn.utils.parameters_to_vector(theirs)
    assert vec.shape == tuple(expected.shape)
    np.testing.assert_array_equal(vec.detach().numpy(), expected.detach().numpy())
    weights = np.arange(vec.shape[0], dtype=np.float64)
    (vec * ge.tensor(weights)).sum().backward()
    (expected * torch.tensor(weights)).sum().backward()
    for p, q in zip(ours, theirs):
        np.testing.assert_array_equal(p.grad.numpy(), q.grad.numpy())


def test_vector_to_parameters_matches_torch():
    ours, theirs = _grad_pairs(5, SHAPES)
    values = np.linspace(-1.0, 1.0, sum(int(np.prod(s)) for s in SHAPES))
    ge_utils.vector_to_parameters(ge.tensor(values), ours)
    torch.nn.utils.vector_to_parameters(torch.tensor(values), theirs)
    for p, q in zip(ours, theirs):
        assert p.shape == tuple(q.shape)
        np.testing.assert_array_equal(p.detach().numpy(), q.detach().numpy())


@pytest.mark.parametrize("call, error, match", [
    (lambda ps: ge_utils.vector_to_parameters(np.zeros(3), ps), TypeError, "vec"),
    (lambda ps: ge_utils.vector_to_parameters(ge.zeros(3), ps), ValueError, "vec"),
    (lambda ps: ge_utils.clip_grad_norm_([np.zeros(2)], 1.0), TypeError, "parameters"),
])
def test_utils_bad_input_names_the_argument(call, error, match):
    ours, _ = _grad_pairs(6, SHAPES)
    with pytest.raises(error, match=match):
        call(ours)


def test_nn_utils_reachable_from_the_engine():
    assert ge.nn.utils is ge_utils
