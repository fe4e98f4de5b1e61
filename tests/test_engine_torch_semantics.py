"""Torch semantics that programs rely on: ``.data``, devices, generators, refusals, and small gaps of the surface."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import gradverify.engine as ge
from gradverify.engine.torch_random import TorchSource

VALUES = np.random.default_rng(3).standard_normal(1000).astype(np.float32)


# ------------------------------------------------------------------ .data
def test_data_is_a_detached_tensor_sharing_memory():
    w = ge.tensor([1.0, 2.0], requires_grad=True)
    (w * w).sum().backward()
    data = w.data
    assert isinstance(data, ge.Tensor) and not data.requires_grad and data.grad_fn is None
    assert np.shares_memory(data.array, w.array)


@pytest.mark.parametrize("lib", [ge, torch], ids=["engine", "torch"])
def test_in_place_updates_through_data_change_the_parameter_without_recording(lib):
    w = lib.tensor([1.0, 2.0], requires_grad=True)
    (w * w).sum().backward()
    w.data += -0.1 * w.grad  # the manual SGD step of many tutorials
    w.data.add_(1.0)
    assert w.is_leaf and w.grad_fn is None and w.requires_grad
    np.testing.assert_allclose(np.asarray(w.detach().numpy()), [1.8, 2.6], rtol=1e-6)
    (w * 3).sum().backward()  # the next backward runs and accumulates
    np.testing.assert_allclose(np.asarray(w.grad.numpy()), [5.0, 7.0])


def test_data_std_is_torchs_unbiased_std():
    engine, reference = ge.tensor(VALUES, requires_grad=True), torch.tensor(VALUES, requires_grad=True)
    assert engine.data.std().item() == pytest.approx(reference.data.std().item(), rel=1e-6)
    assert engine.data.std().item() != pytest.approx(float(np.std(VALUES)), rel=1e-6)  # not numpy's population std


def test_assigning_data_takes_the_other_tensors_values():
    w, other = ge.zeros(3, requires_grad=True), ge.tensor([[1.0, 2.0]])
    w.data = other
    assert w.shape == (1, 2) and w.requires_grad and np.shares_memory(w.array, other.array)
    with pytest.raises(TypeError, match="data: expected a Tensor"):
        w.data = np.zeros(2)


# ---------------------------------------------------------------- devices
FACTORIES = {
    "tensor": lambda device: ge.tensor([1.0], device=device),
    "as_tensor": lambda device: ge.as_tensor([1.0], device=device),
    "zeros": lambda device: ge.zeros(2, device=device),
    "ones": lambda device: ge.ones(2, device=device),
    "empty": lambda device: ge.empty(2, device=device),
    "full": lambda device: ge.full((2,), 1.5, device=device),
    "arange": lambda device: ge.arange(3, device=device),
    "linspace": lambda device: ge.linspace(0, 1, 3, device=device),
    "eye": lambda device: ge.eye(2, device=device),
    "randn": lambda device: ge.randn(2, device=device),
    "rand": lambda device: ge.rand(2, device=device),
    "randint": lambda device: ge.randint(0, 5, (2,), device=device),
    "randperm": lambda device: ge.randperm(3, device=device),
    "normal": lambda device: ge.normal(0.0, 1.0, (2,), device=device),
    "zeros_like": lambda device: ge.zeros_like(ge.ones(2), device=device),
    "full_like": lambda device: ge.full_like(ge.ones(2), 3.0, device=device),
    "Tensor.to": lambda device: ge.ones(2).to(device),
    "Module.to": lambda device: ge.nn.Linear(2, 2).to(device),
    "Linear": lambda device: ge.nn.Linear(2, 2, device=device),
    "Embedding": lambda device: ge.nn.Embedding(3, 2, device=device),
    "set_default_device": lambda device: ge.set_default_device(device),
}


@pytest.mark.parametrize("device", ["cpu", "cpu:0", ge.device("cpu"), None])
@pytest.mark.parametrize("make", FACTORIES.values(), ids=FACTORIES.keys())
def test_the_cpu_is_accepted_wherever_torch_takes_a_device(make, device):
    make(device)


@pytest.mark.parametrize("device", ["cuda", "mps", "cuda:1", ge.device("cuda", 0)])
@pytest.mark.parametrize("make", FACTORIES.values(), ids=FACTORIES.keys())
def test_another_device_raises_naming_it(make, device):
    with pytest.raises(RuntimeError, match=f"it has no device '{device}'"):
        make(device)


def test_cuda_queries_say_there_is_none():
    assert ge.cuda.is_available() is False and ge.cuda.device_count() == 0 and not ge.backends.mps.is_available()
    with pytest.raises(RuntimeError, match="no device 'cuda'"):
        ge.ones(2).cuda()
    with pytest.raises(RuntimeError, match="no device 'cuda:1'"):
        ge.nn.Linear(2, 2).cuda(1)
    assert ge.ones(2).device == ge.device("cpu") and ge.get_default_device() == "cpu"


# -------------------------------------------------------------- generators
DRAWS = {
    "randn": lambda lib, g: lib.randn(2, 3, generator=g),
    "rand": lambda lib, g: lib.rand(4, generator=g, dtype=lib.float64),
    "randint": lambda lib, g: lib.randint(0, 10, (5,), generator=g),
    "randperm": lambda lib, g: lib.randperm(7, generator=g),
    "normal numbers": lambda lib, g: lib.normal(2.0, 3.0, (4,), generator=g),
    "normal tensor mean": lambda lib, g: lib.normal(lib.ones(4), 2.0, generator=g),
    "normal tensors": lambda lib, g: lib.normal(lib.ones(4), lib.full((4,), 2.0), generator=g),
    "multinomial": lambda lib, g: lib.multinomial(lib.tensor([[0.1, 0.5, 0.4], [1.0, 0.0, 0.0]]), 3, True, generator=g),
    "multinomial without replacement": lambda lib, g: lib.multinomial(lib.tensor([0.1, 0.5, 0.4]), 3, generator=g),
    "uniform_": lambda lib, g: lib.empty(3).uniform_(-1, 1, generator=g),
    "normal_": lambda lib, g: lib.empty(3).normal_(0, 2, generator=g),
    "init.kaiming_uniform_": lambda lib, g: lib.nn.init.kaiming_uniform_(lib.empty(3, 4), generator=g),
}


@pytest.mark.parametrize("draw", DRAWS.values(), ids=DRAWS.keys())
def test_seeded_generators_give_reproducible_streams(draw):
    first = draw(ge, ge.Generator().manual_seed(7))
    again, other = draw(ge, ge.Generator().manual_seed(7)), draw(ge, ge.Generator().manual_seed(8))
    np.testing.assert_array_equal(first.array, again.array)
    assert first.shape == draw(torch, torch.Generator().manual_seed(7)).shape
    assert not np.array_equal(first.array, other.array) or first.array.dtype.kind in "iu"


def test_a_generator_leaves_the_default_stream_alone():
    ge.manual_seed(3)
    expected = ge.randn(5).array
    ge.manual_seed(3)
    ge.randn(10, generator=ge.Generator().manual_seed(1))
    np.testing.assert_array_equal(ge.randn(5).array, expected)
    assert ge.manual_seed(3).initial_seed() == 3 == ge.initial_seed()


@pytest.mark.parametrize("draw", DRAWS.values(), ids=DRAWS.keys())
def test_with_torchs_source_the_draws_are_torchs(draw):
    with ge.random.use_source(TorchSource):
        ours = draw(ge, ge.Generator().manual_seed(11))
    theirs = draw(torch, torch.Generator().manual_seed(11))
    np.testing.assert_array_equal(ours.array, theirs.numpy())


def test_with_torchs_source_layers_start_from_torchs_values():
    with ge.random.use_source(TorchSource):
        ge.manual_seed(5)
        ours = [ge.nn.Linear(4, 3), ge.nn.Embedding(5, 2)]
        mask = ge.nn.functional.dropout(ge.ones(6, 6), 0.3)
    torch.manual_seed(5)
    theirs = [torch.nn.Linear(4, 3), torch.nn.Embedding(5, 2)]
    expected_mask = torch.nn.functional.dropout(torch.ones(6, 6), 0.3)
    for our_layer, their_layer in zip(ours, theirs):
        for name, value in their_layer.state_dict().items():
            np.testing.assert_array_equal(our_layer.state_dict()[name].array, value.numpy())
    np.testing.assert_array_equal(mask.array, expected_mask.numpy())


MULTINOMIAL_ERRORS = {
    "negative": (lambda lib: lib.multinomial(lib.tensor([0.5, -0.1]), 1), "element < 0"),
    "zero sum": (lambda lib: lib.multinomial(lib.tensor([0.0, 0.0]), 1), "sum of probabilities <= 0"),
    "too many": (lambda lib: lib.multinomial(lib.tensor([0.5, 0.0, 0.5]), 4), "without replacement"),
}


@pytest.mark.parametrize("call, message", MULTINOMIAL_ERRORS.values(), ids=MULTINOMIAL_ERRORS.keys())
def test_multinomial_refuses_what_torch_refuses(call, message):
    with pytest.raises(RuntimeError):
        call(torch)
    with pytest.raises(RuntimeError, match=message):
        call(ge)


# ---------------------------------------------------------- small surface
def test_log10_nelement_format_and_variable_follow_torch():
    x = ge.tensor([1.0, 10.0, 1000.0, 0.5], dtype=ge.float64, requires_grad=True)
    y = x.log10()
    np.testing.assert_array_equal(y.array, torch.tensor(x.array).log10().numpy())
    y.sum().backward()
    np.testing.assert_allclose(x.grad.array, 1 / (x.array * np.log(10)), rtol=1e-15)
    assert x.nelement() == 4 and f"{ge.tensor(1.23456):.3f}" == f"{torch.tensor(1.23456):.3f}" == "1.235"
    with pytest.raises(TypeError):
        f"{ge.ones(2):.3f}"
    v = ge.autograd.Variable(ge.tensor([2.0]), requires_grad=True)
    assert v.requires_grad and v.is_leaf


@pytest.mark.parametrize("size_average, reduce", [(False, None), (True, None), (None, False), (False, True)])
@pytest.mark.parametrize("loss", ["MSELoss", "L1Loss", "CrossEntropyLoss"])
def test_legacy_reduction_arguments_reduce_as_torchs(loss, size_average, reduce):
    logits = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    target = np.array([0, 2, 1, 1]) if loss == "CrossEntropyLoss" else np.ones((4, 3), np.float32)
    results = []
    for lib in (ge, torch):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            criterion = getattr(lib.nn, loss)(size_average=size_average, reduce=reduce)
        assert any("size_average and reduce args will be deprecated" in str(w.message) for w in caught)
        results.append(np.asarray(criterion(lib.tensor(logits), lib.tensor(target))))
    np.testing.assert_allclose(*results, rtol=1e-6)


# ---------------------------------------------------------------- refusals
REFUSED = {
    "mean of int64": lambda lib: lib.tensor([1, 2]).mean(),
    "mean of bool": lambda lib: lib.tensor([True, False]).mean(),
    "std of int64": lambda lib: lib.tensor([1, 2]).std(),
    "var of int64": lambda lib: lib.tensor([1, 2]).var(),
    "norm of int64": lambda lib: lib.norm(lib.tensor([1, 2])),
    "softmax of int64": lambda lib: lib.softmax(lib.tensor([1, 2]), 0),
    "log_softmax of int64": lambda lib: lib.log_softmax(lib.tensor([1, 2]), 0),
    "mse_loss of int64": lambda lib: lib.nn.functional.mse_loss(lib.tensor([1, 2]), lib.tensor([1, 2])),
    "cross_entropy of int64": lambda lib: lib.nn.functional.cross_entropy(lib.tensor([[1, 2]]), lib.tensor([0])),
    "layer_norm of int64": lambda lib: lib.nn.functional.layer_norm(lib.tensor([1, 2]), (2,)),
    "randn of int64": lambda lib: lib.randn(2, dtype=lib.int64),
    "requires_grad of int64": lambda lib: lib.tensor([1, 2], requires_grad=True),
    "matmul float32 float64": lambda lib: lib.ones(2, 2) @ lib.ones(2, 2, dtype=lib.float64),
    "matmul int64 float32": lambda lib: lib.matmul(lib.tensor([[1, 2]]), lib.ones(2, 1)),
    "mm float64 float32": lambda lib: lib.mm(lib.ones(2, 2, dtype=lib.float64), lib.ones(2, 2)),
    "linear mixed": lambda lib: lib.nn.functional.linear(lib.ones(1, 2, dtype=lib.float64), lib.ones(3, 2)),
}


@pytest.mark.parametrize("call", REFUSED.values(), ids=REFUSED.keys())
def test_the_engine_refuses_what_torch_refuses_with_its_kind_of_error(call):
    with pytest.raises(Exception) as theirs:
        call(torch)
    with pytest.raises(RuntimeError) as ours:
        call(ge)
    assert isinstance(ours.value, type(theirs.value)), (ours.value, theirs.value)


ALLOWED = {
    "exp of int64": lambda lib: lib.exp(lib.tensor([1, 2])),
    "sum of int64": lambda lib: lib.tensor([1, 2]).sum(),
    "mean of int64 with dtype": lambda lib: lib.tensor([1, 2]).mean(dtype=lib.float32),
    "matmul int64": lambda lib: lib.tensor([[1, 2]]) @ lib.tensor([[3], [4]]),
    "softmax of int64 with dtype": lambda lib: lib.softmax(lib.tensor([1, 2]), 0, dtype=lib.float64),
}


@pytest.mark.parametrize("call", ALLOWED.values(), ids=ALLOWED.keys())
def test_what_torch_allows_on_integers_runs(call):
    ours, theirs = call(ge), call(torch)
    np.testing.assert_allclose(ours.array, theirs.numpy(), rtol=1e-6)
    assert str(ours.dtype) == str(theirs.dtype).removeprefix("torch.")


# ------------------------------------------------------ higher order of linear
def test_second_derivatives_of_linear_functions_are_zeros_as_torch_func():
    x = [1.0, 2.0]
    hessian = ge.func.hessian(lambda v: (2 * v).sum())(ge.tensor(x))
    np.testing.assert_array_equal(hessian.array, torch.func.hessian(lambda v: (2 * v).sum())(torch.tensor(x)).numpy())
    assert hessian.shape == (2, 2) and not hessian.array.any()
    second = ge.func.grad(ge.func.grad(lambda v: 2 * v))(ge.tensor(1.0))
    assert second.item() == torch.func.grad(torch.func.grad(lambda v: 2 * v))(torch.tensor(1.0)).item() == 0.0


@pytest.mark.parametrize("lib", [ge, torch], ids=["engine", "torch"])
def test_long_tensor_from_a_list_is_int64(lib):
    t = lib.LongTensor([3, 1])
    assert str(t.dtype).removeprefix("torch.") == "int64" and not t.requires_grad
    np.testing.assert_array_equal(np.asarray(t.numpy()), [3, 1])


@pytest.mark.parametrize("default", ["float32", "float64"])
@pytest.mark.parametrize("data", [[6.8813735870195432, 2], (1, 0), [[True, 2.5]]], ids=["floats", "ints", "nested"])
def test_tensor_from_a_list_takes_the_default_float_dtype_as_torch(data, default):
    """torch.Tensor(list), the legacy constructor: rounded to float32 by default (`torch.Tensor([x]).double()`)."""
    engine_default, torch_default = ge.get_default_dtype(), torch.get_default_dtype()
    ge.set_default_dtype(getattr(ge, default))
    torch.set_default_dtype(getattr(torch, default))
    try:
        ours, theirs = ge.Tensor(data), torch.Tensor(data)
    finally:
        ge.set_default_dtype(engine_default)
        torch.set_default_dtype(torch_default)
    assert str(ours.dtype) == str(theirs.dtype).removeprefix("torch.") == default
    np.testing.assert_array_equal(ours.double().array, theirs.double().numpy())


def test_long_tensor_refuses_sizes():
    with pytest.raises(TypeError, match="data: expected a list or tuple"):
        ge.LongTensor(2)


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", "int32", "bool"])
def test_repr_names_the_dtype_where_torch_does(dtype):
    shown = "dtype=" in repr(torch.tensor([1, 0], dtype=getattr(torch, dtype)))
    assert ("dtype=" in repr(ge.tensor([1, 0], dtype=np.dtype(dtype)))) == shown


# ------------------------------------------------------ Python-number operands
CALLS_WITH_A_NUMBER = {"mul": lambda x, n: x * n, "radd": lambda x, n: n + x, "rsub": lambda x, n: n - x,
                       "div": lambda x, n: x / n}


@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", "bool"])
def test_python_numbers_beside_a_tensor_take_torchs_dtype_and_value(dtype):
    # Twice each: the second use of a number finds the constant made by the first.
    for number in [1.01, -0.0, 0.0, 3, -1, float("nan")] * 2:
        for name, call in CALLS_WITH_A_NUMBER.items():
            if dtype == "bool" and name == "rsub":
                continue  # torch refuses subtraction with a bool tensor
            ours, theirs = (call(lib.tensor([1.5, -2.0, 0.0], dtype=getattr(lib, dtype)), number) for lib in (ge, torch))
            assert str(ours.dtype) == str(theirs.dtype).removeprefix("torch."), (name, number)
            np.testing.assert_array_equal(np.signbit(ours.array), np.signbit(theirs.numpy()), err_msg=name)
            np.testing.assert_allclose(ours.array, theirs.numpy(), rtol=1e-7, err_msg=name)


def test_a_python_number_gives_the_same_gradient_each_time_it_is_used():
    x = ge.tensor([0.5, -1.0], dtype=ge.float64, requires_grad=True)
    for _ in range(2):
        x.grad = None
        y = x
        for _ in range(3):
            y = ge.tanh(y) * 1.01 + 0.1
        y.sum().backward()
        reference = torch.tensor([0.5, -1.0], dtype=torch.float64, requires_grad=True)
        z = reference
        for _ in range(3):
            z = torch.tanh(z) * 1.01 + 0.1
        z.sum().backward()
        np.testing.assert_allclose(x.grad.array, reference.grad.numpy(), rtol=1e-14)
