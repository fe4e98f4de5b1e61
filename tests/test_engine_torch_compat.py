"""The engine answers as PyTorch does where a differential audit found it did not.

Most cases are written once against a library argument and run with both
``gradverify.engine`` and ``torch``: the results must agree in type, dtype,
shape and values.
"""
import numpy as np
import pytest

import gradverify.engine as ge

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")


def _summary(value):
    """What a result is, in terms both libraries share: kind, dtype, shape and values."""
    if isinstance(value, (tuple, list)):
        return [_summary(v) for v in value]
    if isinstance(value, (ge.Tensor, torch.Tensor)):
        array = value.detach().numpy()
        return "tensor", str(value.dtype).removeprefix("torch."), tuple(array.shape), array.tolist()
    return type(value).__name__, value


def _assert_same(engine_value, torch_value):
    engine_summary, torch_summary = _summary(engine_value), _summary(torch_value)
    np.testing.assert_equal(engine_summary, torch_summary)


def _run_both(case):
    return case(ge), case(torch)


# ------------------------------------------------------------------ A11: .grad accumulates in place
def _grad_kept_across_backwards(lib):
    x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
    (x * x).sum().backward()
    first = x.grad
    (x * 3).sum().backward()
    return first, x.grad, first is x.grad


def _grad_assigned_by_user(lib):
    x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
    assigned = lib.tensor([10.0, 10.0], dtype=lib.float64)
    x.grad = assigned
    (x * x).sum().backward()
    return assigned, x.grad is assigned


def _grad_of_view_of_seed_with_create_graph_then_again(lib):
    x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
    seed = lib.tensor([[1.0, 1.0]], dtype=lib.float64)
    x.reshape(1, 2).backward(seed, create_graph=True)
    first = x.grad
    x.reshape(1, 2).backward(seed)
    return seed, first, x.grad, first is x.grad


def _grad_with_create_graph_is_out_of_place(lib):
    x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
    (x * x).sum().backward()
    first = x.grad
    (x * x).sum().backward(create_graph=True)
    second = x.grad
    (x * 3).sum().backward()
    return first, second, x.grad, first is x.grad, second is x.grad, x.grad.requires_grad


def _two_leaves_fed_one_cotangent(lib):
    x = lib.tensor([1.0, 2.0], dtype=lib.float64, requires_grad=True)
    w = lib.tensor([3.0, 4.0], dtype=lib.float64, requires_grad=True)
    for _ in range(2):
        (x + w).sum().backward()
    return x.grad, w.grad


@pytest.mark.parametrize(
    "case",
    [
        _grad_kept_across_backwards,
        _grad_assigned_by_user,
        _grad_of_view_of_seed_with_create_graph_then_again,
        _grad_with_create_graph_is_out_of_place,
        _two_leaves_fed_one_cotangent,
    ],
)
def test_grad_accumulates_as_torch(case):
    _assert_same(*_run_both(case))


def test_grad_changed_in_place_breaks_a_graph_that_saved_it():
    """As torch's version counter: a product that saved x.grad cannot be differentiated after it changed."""
    for lib in (ge, torch):
        x = lib.tensor([1.0, 2.0], requires_grad=True)
        w = lib.tensor([1.0, 2.0], requires_grad=True)
        (x * x).sum().backward()
        product = (w * x.grad).sum()
        (x * x).sum().backward()
        with pytest.raises(RuntimeError, match="in-place|inplace"):
            product.backward()


def test_accumulating_never_writes_into_the_seed():
    """Here the engine keeps the user's seed intact; torch keeps a view of it as x.grad and adds into it."""
    x = ge.tensor([1.0, 2.0], dtype=ge.float64, requires_grad=True)
    seed = ge.tensor([[1.0, 1.0]], dtype=ge.float64)
    for _ in range(2):
        x.reshape(1, 2).backward(seed)
    assert seed.tolist() == [[1.0, 1.0]]
    assert x.grad.tolist() == [2.0, 2.0]


# ------------------------------------------------------------------ A13: as_tensor / from_numpy share memory
@pytest.mark.parametrize(
    "convert",
    [
        lambda lib, array: lib.as_tensor(array),
        lambda lib, array: lib.as_tensor(array, dtype=lib.float64),
        lambda lib, array: lib.as_tensor(array, dtype=lib.float32),
        lambda lib, array: lib.as_tensor(array.tolist()),
        lambda lib, array: lib.from_numpy(array),
    ],
    ids=["as_tensor", "as_tensor-same-dtype", "as_tensor-other-dtype", "as_tensor-list", "from_numpy"],
)
def test_conversion_from_numpy_shares_memory_as_torch(convert):
    def case(lib):
        array = np.ones(3)
        converted = convert(lib, array)
        converted.add_(1.0)
        return array.tolist(), converted

    _assert_same(*_run_both(case))
