"""Bad input to the engine fails with an error that names the problem (and ops never change their inputs)."""
import numpy as np
import pytest

import gradverify.engine as ge


def test_shapes_that_do_not_broadcast():
    with pytest.raises(ValueError, match=r"add: .*broadcast.*\(input shapes \(2, 2\), \(3,\)\)"):
        ge.tensor([[1.0, 2.0], [3.0, 4.0]]) + ge.tensor([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"^matmul: .*mismatch.*\(input shapes \(2, 3\), \(2, 3\)\)"):
        ge.ones(2, 3) @ ge.ones(2, 3)
    with pytest.raises(ValueError, match=r"reshape: cannot reshape array of size 2 into shape \(3,\)"):
        ge.tensor([1.0, 2.0]).reshape(3)
    with pytest.raises(ValueError, match=r"mse_loss: input has shape \(1, 3\) but target has shape \(2,\)"):
        ge.nn.functional.mse_loss(ge.ones(1, 3), ge.ones(2))


def test_backward_on_a_non_scalar_needs_a_gradient():
    x = ge.tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match=r"only for scalar outputs; this output has shape \(2,\), so pass gradient="):
        (x * 2).backward()
    with pytest.raises(RuntimeError, match=r"gradient has shape \(3,\) but the output has shape \(2,\)"):
        (x * 2).backward(gradient=ge.ones(3))
    with pytest.raises(RuntimeError, match=r"grad_outputs\[0\] has shape \(2,\) but the output has shape \(\)"):
        ge.autograd.grad((x * 2).sum(), x, grad_outputs=ge.ones(2))
    (x * 2).backward(gradient=ge.tensor([1.0, 10.0]))
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 20.0])


def test_second_backward_after_the_graph_was_freed():
    x = ge.tensor([1.0, 2.0], requires_grad=True)
    y = ge.exp(x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match=r"backward through the graph a second time \(at 'sum'\).*retain_graph=True"):
        y.backward()
    z = ge.exp(x).sum()
    ge.autograd.grad(z, x)
    with pytest.raises(RuntimeError, match="a second time"):
        ge.autograd.grad(z, x)
    x.grad = None
    w = ge.exp(x).sum()
    w.backward(retain_graph=True)
    w.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.exp([1.0, 2.0]), rtol=1e-6)


def test_gradient_of_something_that_does_not_require_grad():
    constant = ge.tensor([1.0, 2.0])
    x = ge.tensor([3.0], requires_grad=True)
    with pytest.raises(RuntimeError, match=r"inputs\[0\] does not require grad: create it with requires_grad=True"):
        ge.autograd.grad((constant * x).sum(), constant)
    with pytest.raises(RuntimeError, match=r"backward\(\) on a tensor that does not require grad"):
        constant.sum().backward()
    with ge.no_grad():
        detached = (x * 2).sum()
    with pytest.raises(RuntimeError, match=r"ran under no_grad\(\)"):
        detached.backward()
    unused = ge.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match=r"inputs\[1\] was not used to compute the outputs; pass allow_unused=True"):
        ge.autograd.grad((x * 2).sum(), [x, unused])
    assert ge.autograd.grad((x * 2).sum(), [x, unused], allow_unused=True)[1] is None


@pytest.mark.parametrize(
    "make",
    [
        lambda: ge.tensor([1, 2], requires_grad=True),
        lambda: ge.tensor([1, 2]).requires_grad_(),
        lambda: ge.zeros(2, dtype=ge.int64, requires_grad=True),
        lambda: ge.nn.Parameter(np.array([1, 2])),
    ],
    ids=["tensor", "requires_grad_", "zeros", "Parameter"],
)
def test_integer_tensors_cannot_require_grad(make):
    with pytest.raises(RuntimeError, match="only floating-point tensors can require gradients; this tensor has dtype int64"):
        make()


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: ge.tensor([1.0], dtype="banana"), "dtype: expected a dtype such as ge.float32 or ge.float64, got 'banana'"),
        (lambda: ge.zeros(2, dtype=3.5), "dtype: expected a dtype such as ge.float32 or ge.float64, got 3.5"),
        (lambda: ge.set_default_dtype(ge.int64), "dtype: the default dtype must be ge.float32 or ge.float64, got int64"),
        (lambda: ge.set_default_dtype("float16"), "dtype: the default dtype must be ge.float32 or ge.float64, got float16"),
        (lambda: ge.tensor([1.0]).to("banana"), "dtype: expected a dtype such as ge.float32 or ge.float64, got 'banana'"),
        (lambda: ge.tensor(["a", "b"]), "data: expected numbers .* of dtype <U1"),
    ],
    ids=["tensor", "zeros", "default-int", "default-float16", "to", "strings"],
)
def test_bad_dtype_arguments(call, message):
    with pytest.raises(TypeError, match=message):
        call()
    assert ge.get_default_dtype() == ge.float32


def test_other_bad_arguments_name_the_argument():
    with pytest.raises(RuntimeError, match="device: .* on the CPU only; it has no device 'cuda'"):
        ge.tensor([1.0]).to("cuda")
    with pytest.raises(TypeError, match="expected a Tensor, a number or an array, got str"):
        ge.tensor([1.0]) + "x"
    with pytest.raises(ValueError, match=r"item\(\) needs a tensor with one element; this one has shape \(1, 3\)"):
        ge.ones(1, 3).item()
    with pytest.raises(ValueError, match=r"cross_entropy: class indices must lie in \[0, 3\)"):
        ge.nn.functional.cross_entropy(ge.ones(1, 3), ge.tensor([3]))
    with pytest.raises(ValueError, match="lr: must be >= 0, got -1"):
        ge.optim.SGD([ge.ones(1, requires_grad=True)], lr=-1)
    with pytest.raises(KeyError, match=r"missing keys \['bias'\]"):
        ge.nn.Linear(2, 3).load_state_dict({"weight": np.ones((3, 2))})
    with pytest.raises(ValueError, match=r"'weight' has shape \(2, 2\) but the parameter has shape \(3, 2\)"):
        ge.nn.Linear(2, 3).load_state_dict({"weight": np.ones((2, 2)), "bias": np.ones(3)})


def test_ops_never_change_their_inputs():
    rng = np.random.default_rng(0)
    x_data, w_data = rng.standard_normal((4, 3)), rng.standard_normal((2, 3))
    x, w = ge.tensor(x_data, requires_grad=True), ge.tensor(w_data, requires_grad=True)
    seed = np.ones((4, 2))
    out = ge.tanh(x @ w.T + 1.0) * 3.0 - ge.exp(x).sum(dim=1, keepdim=True)
    out.backward(gradient=ge.tensor(seed))
    np.testing.assert_array_equal(x.array, x_data)
    np.testing.assert_array_equal(w.array, w_data)
    np.testing.assert_array_equal(seed, np.ones((4, 2)))
    x.grad.array += 1.0
    np.testing.assert_array_equal(seed, np.ones((4, 2)))

    leaf, other, cotangent = ge.tensor([1.0, 2.0], requires_grad=True), ge.tensor([5.0], requires_grad=True), ge.tensor([3.0, 4.0])
    leaf.backward(gradient=cotangent)
    (leaf + other).sum().backward()
    assert not np.shares_memory(leaf.grad.array, cotangent.array)
    assert not np.shares_memory(leaf.grad.array, other.grad.array)
    np.testing.assert_array_equal(leaf.grad.numpy(), [4.0, 5.0])
    np.testing.assert_array_equal(cotangent.numpy(), [3.0, 4.0])
