"""The document's examples: engine cases, their counterparts in every backend, and the ground truth."""
import mpmath
import numpy as np
import pytest

import gradverify.engine as ge
from gradverify.examples import MLP_SIZES, document_cases, examples, train_simplenet
from reference_impls import from_mp, to_mp
from reference_impls.examples import GROUND_TRUTH_DPS, ground_truth, loss_function

EXAMPLES = examples()


def engine_value_and_grad(name, dtype):
    fn, inputs = document_cases(dtype)[name]
    value, grads = ge.func.value_and_grad(fn, argnums=tuple(range(len(inputs))))(*inputs)
    return value.item(), [g.array for g in grads]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_square_of_sum_matches_the_document_exactly(dtype):
    value, (dx, dy) = engine_value_and_grad("square_of_sum", dtype)
    assert value == 25.0
    assert (dx, dy) == (10.0, 10.0)
    assert dx.dtype == dtype


def test_document_cases_have_the_issue_sizes_and_dtype():
    fn, (W1, b1, W2, b2) = document_cases(np.float32)["mlp"]
    assert (W1.shape, b1.shape, W2.shape, b2.shape) == ((64, 10), (64,), (5, 64), (5,))
    assert sum(p.array.size for p in (W1, b1, W2, b2)) == 1029
    assert {p.dtype for p in (W1, b1, W2, b2)} == {np.dtype(np.float32)}
    assert fn(W1, b1, W2, b2).shape == ()


def test_examples_are_deterministic():
    first, second = examples(), examples()
    for name in first:
        for a, b in zip(first[name].arrays(np.float64)[0], second[name].arrays(np.float64)[0]):
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(examples(seed=1)["mlp"].params["W1"], first["mlp"].params["W1"])


def test_mlp_targets_are_one_hot_classes():
    onehot = EXAMPLES["mlp"].constants["onehot"]
    assert onehot.shape == (MLP_SIZES["batch"], MLP_SIZES["classes"])
    np.testing.assert_array_equal(onehot.sum(axis=1), 1.0)


@pytest.mark.parametrize("backend", ["torch", "jax", "numpy", "mpmath"])
@pytest.mark.parametrize("name", list(EXAMPLES))
def test_every_backend_computes_the_engine_loss(backend, name):
    if backend in ("torch", "jax"):
        pytest.importorskip(backend)
    fn, params = loss_function(EXAMPLES[name], backend, np.float64)
    value = float(fn(*params))
    engine_value, _ = engine_value_and_grad(name, np.float64)
    assert value == pytest.approx(engine_value, rel=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(EXAMPLES))
def test_engine_gradient_is_close_to_the_ground_truth(name, dtype):
    _, truth = ground_truth(EXAMPLES[name], dtype)
    _, grads = engine_value_and_grad(name, dtype)
    # A few roundings per entry, of the size of the largest gradient entry.
    bound = 64 * np.finfo(dtype).eps * max(np.abs(from_mp(t)).max() for t in truth)
    for g, t in zip(grads, truth):
        np.testing.assert_allclose(g, from_mp(t), rtol=0, atol=bound)


@pytest.mark.parametrize("name, entries", [("mlp", [(0, (3, 7)), (1, (10,)), (2, (4, 63)), (3, (0,))]),
                                           ("simplenet", [(0, (0, 0)), (1, (5,)), (2, (2, 17)), (3, (4,))])])
def test_ground_truth_agrees_with_mpmath_numerical_differentiation(name, entries):
    example = EXAMPLES[name]
    _, truth = ground_truth(example, np.float64)
    fn, params = loss_function(example, "mpmath", np.float64)
    for which, index in entries:
        def along(t, which=which, index=index):
            moved = [p.copy() for p in params]
            moved[which][index] = moved[which][index] + t
            return fn(*moved)

        with mpmath.workdps(GROUND_TRUTH_DPS):
            numerical = mpmath.diff(along, 0)
            assert abs(numerical - truth[which][index]) <= mpmath.mpf(10) ** (-25) * max(1, abs(numerical))


def test_to_mp_round_trip_is_exact_for_float32_inputs():
    values = EXAMPLES["mlp"].arrays(np.float32)[0][0]
    np.testing.assert_array_equal(from_mp(to_mp(values), np.float32), values)


def test_engine_training_matches_pytorch_and_loss_decreases():
    pytest.importorskip("torch")
    from reference_impls.examples import train_simplenet_torch

    engine = train_simplenet(np.float64)
    torch_losses = train_simplenet_torch(np.float64)
    assert engine.shape == (100,)
    np.testing.assert_allclose(engine, torch_losses, rtol=1e-12)
    assert engine[-1] < engine[0]
