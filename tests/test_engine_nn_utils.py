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
    ours[0].grad.array[0] = np.inf
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


def _batch_norm_pair(kwargs):
    ours = ge.nn.BatchNorm1d(3, **kwargs).double()
    theirs = torch.nn.BatchNorm1d(3, **kwargs).double()
    if ours.weight is not None:
        rng = np.random.default_rng(7)
        weight, bias = rng.standard_normal(3), rng.standard_normal(3)
        ours.load_state_dict({"weight": weight, "bias": bias}, strict=False)
        theirs.load_state_dict({"weight": torch.tensor(weight), "bias": torch.tensor(bias)}, strict=False)
    return ours, theirs


BATCH_NORM_CASES = [
    ((6, 3), {}),
    ((4, 3, 5), {}),
    ((4, 3, 5), {"momentum": 0.3, "eps": 1e-3}),
    ((5, 3), {"momentum": None}),
    ((4, 3, 2), {"affine": False}),
    ((4, 3, 2), {"track_running_stats": False}),
]


@pytest.mark.parametrize("shape, kwargs", BATCH_NORM_CASES)
def test_batch_norm1d_training_steps_then_eval_match_torch(shape, kwargs):
    ours, theirs = _batch_norm_pair(kwargs)
    rng = np.random.default_rng(8)
    for _ in range(3):
        data, upstream = 2.0 + 3.0 * rng.standard_normal(shape), rng.standard_normal(shape)
        x, y = ge.tensor(data, requires_grad=True), torch.tensor(data, requires_grad=True)
        out, expected = ours(x), theirs(y)
        assert out.shape == tuple(expected.shape)
        np.testing.assert_allclose(out.detach().numpy(), expected.detach().numpy(), **TOL)
        (out * ge.tensor(upstream)).sum().backward()
        (expected * torch.tensor(upstream)).sum().backward()
        np.testing.assert_allclose(x.grad.numpy(), y.grad.numpy(), **TOL)
    for (name, p), (torch_name, q) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert name == torch_name
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), **TOL)
    ours_state, torch_state = ours.state_dict(), theirs.state_dict()
    assert list(ours_state) == list(torch_state)
    for name in ours_state:
        assert ours_state[name].dtype == np.dtype(str(torch_state[name].dtype).removeprefix("torch."))
        np.testing.assert_allclose(ours_state[name].numpy(), torch_state[name].numpy(), **TOL)
    ours.eval()
    theirs.eval()
    data = rng.standard_normal(shape)
    x, y = ge.tensor(data, requires_grad=True), torch.tensor(data, requires_grad=True)
    out, expected = ours(x), theirs(y)
    np.testing.assert_allclose(out.detach().numpy(), expected.detach().numpy(), **TOL)
    out.sum().backward()
    expected.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), y.grad.numpy(), **TOL)


def test_batch_norm1d_state_dict_round_trips_into_torch():
    ours, theirs = _batch_norm_pair({})
    ours(ge.tensor(np.random.default_rng(9).standard_normal((5, 3))))
    theirs.load_state_dict({k: torch.tensor(v.numpy()) for k, v in ours.state_dict().items()})
    assert int(theirs.num_batches_tracked) == 1
    np.testing.assert_array_equal(theirs.running_var.numpy(), ours.running_var.numpy())


@pytest.mark.parametrize("training", [True, False])
def test_functional_batch_norm_matches_torch(training):
    rng = np.random.default_rng(10)
    data, mean, var = rng.standard_normal((4, 3, 2)), rng.standard_normal(3), 1.0 + rng.random(3)
    weight, bias = rng.standard_normal(3), rng.standard_normal(3)
    ours_stats, torch_stats = [ge.tensor(mean), ge.tensor(var)], [torch.tensor(mean), torch.tensor(var)]
    x, y = ge.tensor(data, requires_grad=True), torch.tensor(data, requires_grad=True)
    out = ge.nn.functional.batch_norm(x, *ours_stats, ge.tensor(weight), ge.tensor(bias), training, 0.2, 1e-4)
    expected = torch.nn.functional.batch_norm(y, *torch_stats, torch.tensor(weight), torch.tensor(bias), training,
                                              0.2, 1e-4)
    np.testing.assert_allclose(out.detach().numpy(), expected.detach().numpy(), **TOL)
    (out * out).sum().backward()
    (expected * expected).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), y.grad.numpy(), **TOL)
    for ours_stat, torch_stat in zip(ours_stats, torch_stats):
        np.testing.assert_allclose(ours_stat.numpy(), torch_stat.numpy(), **TOL)


@pytest.mark.parametrize("shape, match", [((4, 2), "input"), ((4, 3, 2, 2), "input"), ((1, 3), "per channel")])
def test_batch_norm1d_bad_input_names_the_argument(shape, match):
    with pytest.raises(ValueError, match=match):
        ge.nn.BatchNorm1d(3)(ge.zeros(shape))


PAD_CASES = [
    ((2, 3), (1, 2), 0.0),
    ((2, 3), (0, 0, 2, 1), 1.5),
    ((2, 3, 4), (-1, 2), 0.0),
    ((2, 3, 4), (1, -2, -1, 0, 1, 1), -3.0),
    ((2, 3, 4), (-2, -2), 0.0),
    ((3,), (0, 0), 0.0),
    ((2, 3), (), 0.0),
]


@pytest.mark.parametrize("shape, sizes, value", PAD_CASES)
def test_pad_constant_values_and_gradient_match_torch(shape, sizes, value):
    rng = np.random.default_rng(11)
    data = rng.standard_normal(shape)
    x, y = ge.tensor(data, requires_grad=True), torch.tensor(data, requires_grad=True)
    out = ge.nn.functional.pad(x, sizes, value=value)
    expected = torch.nn.functional.pad(y, sizes, value=value)
    assert out.shape == tuple(expected.shape)
    np.testing.assert_array_equal(out.detach().numpy(), expected.detach().numpy())
    upstream = rng.standard_normal(tuple(expected.shape))
    (out * ge.tensor(upstream)).sum().backward()
    (expected * torch.tensor(upstream)).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), y.grad.numpy())
    np.testing.assert_array_equal(x.detach().numpy(), data)


@pytest.mark.parametrize("sizes, mode, error, match", [
    ((1,), "constant", ValueError, "pad"),
    ((1, 1, 1, 1, 1, 1), "constant", ValueError, "pad"),
    ((-3, -2), "constant", ValueError, "pad"),
    ((1, 1), "reflect", NotImplementedError, "mode"),
    ((1.5, 1), "constant", TypeError, "pad"),
])
def test_pad_bad_input_names_the_argument(sizes, mode, error, match):
    with pytest.raises(error, match=match):
        ge.nn.functional.pad(ge.zeros(2, 4), sizes, mode=mode)
