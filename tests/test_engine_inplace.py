"""In-place methods: torch's results and identity semantics, its refusals, and its version-counter errors."""
import numpy as np
import pytest
import torch

import gradverify.engine as ge
import gradverify.engine.nn as nn
from test_engine_autograd_function import make_exp

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

CHANGES = {
    "+= tensor": lambda t, o: t.__iadd__(o),
    "-= scalar": lambda t, o: t.__isub__(0.25),
    "*= tensor": lambda t, o: t.__imul__(o),
    "/= tensor": lambda t, o: t.__itruediv__(o),
    "**= 2": lambda t, o: t.__ipow__(2),
    "add_ alpha": lambda t, o: t.add_(o, alpha=-0.5),
    "sub_ alpha": lambda t, o: t.sub_(o, alpha=2.0),
    "mul_": lambda t, o: t.mul_(o),
    "div_": lambda t, o: t.div_(o),
    "pow_": lambda t, o: t.pow_(3),
    "clamp_": lambda t, o: t.clamp_(-0.5, 0.7),
    "clamp_ max": lambda t, o: t.clamp_(max=0.1),
    "copy_ broadcast": lambda t, o: t.copy_(o[0]),
    "fill_": lambda t, o: t.fill_(1.5),
    "zero_": lambda t, o: t.zero_(),
    "setitem mask": lambda t, o: t.__setitem__(t < 0, 0.0),
    "setitem rows": lambda t, o: t.__setitem__((slice(None), 1), o[:, 0]),
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("change", sorted(CHANGES))
def test_in_place_methods_change_the_tensor_and_its_views_like_torch(change, dtype):
    rng = np.random.default_rng(0)
    data, other = rng.uniform(-1, 1, (3, 4)).astype(dtype), rng.uniform(0.5, 1.5, (3, 4)).astype(dtype)
    ours, theirs = ge.tensor(data), torch.tensor(data)
    our_view, their_view = ours.reshape(4, 3), theirs.reshape(4, 3)
    returned = CHANGES[change](ours, ge.tensor(other))
    CHANGES[change](theirs, torch.tensor(other))
    assert returned is None or returned is ours
    assert ours.dtype == np.dtype(dtype)
    # Exact but for pow, where numpy's and torch's kernels differ in the last bit.
    rtol = 2 * np.finfo(dtype).eps
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=rtol, atol=0)
    np.testing.assert_allclose(our_view.numpy(), their_view.numpy(), rtol=rtol, atol=0)


def test_a_manual_update_under_no_grad_trains_the_models_parameters_like_torch():
    # `p -= lr * p.grad` on model.parameters(): without in-place semantics the update rebinds a loop
    # variable and the model silently never changes.
    torch.manual_seed(0)
    theirs = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()
    ours = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((16, 4)), rng.standard_normal((16, 1))
    losses = {"ours": [], "theirs": []}
    for lib, model, key in ((ge, ours, "ours"), (torch, theirs, "theirs")):
        inputs, targets = lib.tensor(x), lib.tensor(y)
        for _ in range(5):
            loss = ((model(inputs) - targets) ** 2).mean()
            model.zero_grad()
            loss.backward()
            with lib.no_grad():
                for p in model.parameters():
                    p -= 0.1 * p.grad
            losses[key].append(loss.item())
    np.testing.assert_allclose(losses["ours"], losses["theirs"], rtol=1e-12)
    assert losses["ours"][-1] < losses["ours"][0]
    for name, value in theirs.state_dict().items():
        np.testing.assert_allclose(ours.state_dict()[name].numpy(), value.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("lib", [ge, torch])
def test_changing_a_leaf_that_requires_grad_is_refused_while_recording(lib):
    w = lib.tensor([1.0, 2.0], requires_grad=True)
    for change in (lambda: w.add_(1.0), lambda: w.__isub__(1.0), lambda: w.__setitem__(0, 3.0)):
        with pytest.raises(RuntimeError, match="leaf"):
            change()
    with lib.no_grad():
        w -= 1.0
    assert w.requires_grad and w.is_leaf and w.tolist() == [0.0, 1.0]


def _set_two_entries(lib, x, z):
    buffer = lib.zeros(3, dtype=lib.float64)
    buffer[1] = x[0] * 3.0
    buffer[x.detach() > 0] = z[2]
    return buffer * z


# Programs that change tensors of the graph in place, as ported PyTorch code does.
RECORDED_CHANGES = {
    "y = x.clone(); y[0] = 0": lambda lib, x, z: _squared(_with(x.clone(), lambda y: y.__setitem__(0, 0.0))),
    "y += z; y *= x": lambda lib, x, z: _with(x * 2.0, lambda y: (y.__iadd__(z), y.__imul__(x))),
    "a buffer without grad gets entries that need grad": _set_two_entries,
    "clamp_, sub_(alpha), /=, **=": lambda lib, x, z: _with(
        x * 1.0, lambda y: (y.clamp_(min=0.0), y.sub_(z, alpha=2), y.__itruediv__(z), y.__ipow__(2))
    ),
    "zero_, +=, slice assignment of a tensor": lambda lib, x, z: _with(
        x * 1.0, lambda y: (y.zero_(), y.__iadd__(z), y.__setitem__(slice(1, None), x[:2]))
    ),
    "copy_ from a tensor that needs grad": lambda lib, x, z: _with(x * 1.0, lambda y: y.copy_(z * z)) * x,
    "fill_ with a 0-d tensor that needs grad": lambda lib, x, z: _with(z * 1.0, lambda y: y.fill_(x[1])) * z,
}


def _with(tensor, change):
    change(tensor)
    return tensor


def _squared(tensor):
    return tensor * tensor


def _changes_and_gradients(lib, program):
    x = lib.tensor([0.5, -1.0, 2.0], dtype=lib.float64, requires_grad=True)
    z = lib.tensor([3.0, 1.5, -0.5], dtype=lib.float64, requires_grad=True)
    out = program(lib, x, z)
    (out * lib.tensor([1.0, 2.0, 3.0], dtype=lib.float64)).sum().backward()
    return [out.detach().numpy()] + [np.zeros(3) if t.grad is None else t.grad.numpy() for t in (x, z)]


@pytest.mark.parametrize("name", sorted(RECORDED_CHANGES))
def test_in_place_changes_to_tensors_in_the_graph_are_recorded_as_in_torch(name):
    ours = _changes_and_gradients(ge, RECORDED_CHANGES[name])
    theirs = _changes_and_gradients(torch, RECORDED_CHANGES[name])
    for our_array, their_array in zip(ours, theirs):
        np.testing.assert_allclose(our_array, their_array, rtol=1e-14, atol=0)


def test_a_recorded_change_keeps_the_tensor_and_its_memory():
    x = ge.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2.0
    memory, view = y.array, y.detach()
    y += 1.0
    assert y.array is memory and view.tolist() == [3.0, 5.0] and y.grad_fn == "add" and not y.is_leaf


SAVING_THEIR_OUTPUT = {
    "exp": lambda lib, x: lib.exp(x),
    "sigmoid": lambda lib, x: lib.sigmoid(x),
    "tanh": lambda lib, x: lib.tanh(x),
    "softmax": lambda lib, x: lib.softmax(x, dim=0),
    "log_softmax": lambda lib, x: lib.log_softmax(x, dim=0),
    "a Function that saves its output": lambda lib, x: make_exp(lib).apply(x),
}


def _leaves(lib):
    return (lib.tensor([0.5, -1.0, 2.0], dtype=lib.float64, requires_grad=True),
            lib.tensor([3.0, 1.5, -0.5], dtype=lib.float64, requires_grad=True))


@pytest.mark.parametrize("recorded", [True, False], ids=["recorded", "no_grad"])
@pytest.mark.parametrize("name", sorted(SAVING_THEIR_OUTPUT))
def test_a_backward_after_a_saved_output_was_changed_in_place_raises_as_in_torch(name, recorded):
    messages = []
    for lib in (ge, torch):
        x, z = _leaves(lib)
        y = SAVING_THEIR_OUTPUT[name](lib, x)
        if recorded:
            y.mul_(z)
        else:
            with lib.no_grad():
                y.add_(1.0)
        with pytest.raises(RuntimeError, match="modified by an inplace operation") as raised:
            (y * z).sum().backward()
        messages.append(str(raised.value))
        assert x.grad is None
    assert "output 0 of " + ("'MyExpBackward" if name.startswith("a Function") else repr(name)) in messages[0]


def test_a_changed_saved_input_raises_and_a_change_of_what_nothing_saved_does_not_as_in_torch():
    grads = []
    for lib in (ge, torch):
        x, z = _leaves(lib)
        y = x * 1.0
        product = y * z  # mul saves y
        y.mul_(2.0)
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            product.sum().backward()
        total = x + z  # add saves nothing: its output may change
        total.mul_(z)
        total.sum().backward()
        grads.append([x.grad.numpy().copy(), z.grad.numpy().copy()])
    np.testing.assert_allclose(grads[0][0], [3.0, 1.5, -0.5], rtol=1e-15)
    np.testing.assert_allclose(grads[0][1], [2 * 3.0 + 0.5, 2 * 1.5 - 1.0, 2 * -0.5 + 2.0], rtol=1e-15)
    np.testing.assert_array_equal(grads[0][0], grads[1][0])
    np.testing.assert_array_equal(grads[0][1], grads[1][1])


def test_forward_mode_sees_a_recorded_change():
    def f(x):
        y = x * 2.0
        y += x * x
        return y

    _, tangent = ge.func.jvp(f, (ge.tensor([1.0, 3.0], dtype=ge.float64),), (ge.tensor([1.0, 1.0], dtype=ge.float64),))
    assert tangent.tolist() == [4.0, 8.0]


def test_a_node_that_read_values_changed_later_raises_and_a_repeated_index_is_refused():
    x = ge.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2.0
    product = y * y
    y += 1.0
    with pytest.raises(RuntimeError, match="in-place operation"):
        product.sum().backward()
    with pytest.raises(ValueError, match="repeats an element"):
        (x * 1.0)[np.array([0, 0])] = x[0]


@pytest.mark.parametrize("lib", [ge, torch])
def test_a_backward_through_values_changed_after_use_raises(lib):
    x = lib.tensor([0.5, 1.5], requires_grad=True)
    out = x.exp()
    with lib.no_grad():
        out += 1.0  # exp's backward needs its output
    with pytest.raises(RuntimeError, match="in-?place operation"):
        out.sum().backward()

    w = lib.tensor([1.0, 2.0], requires_grad=True)
    loss = (w * w).sum()
    with lib.no_grad():
        w.mul_(0.5)  # updated before the backward of the product that used it
    with pytest.raises(RuntimeError, match="in-?place operation"):
        loss.backward()


def test_an_optimizer_step_invalidates_graphs_recorded_before_it_and_only_those():
    w = ge.tensor([1.0, 2.0], requires_grad=True)
    optimizer = ge.optim.SGD([w], lr=0.1)
    old = (w * w).sum()
    old.backward(retain_graph=True)
    optimizer.step()
    with pytest.raises(RuntimeError, match=r"inplace operation: input 0 of 'mul', of shape \(2,\)"):
        old.backward()
    optimizer.zero_grad()
    (w * w).sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), 2 * np.array([0.8, 1.6], dtype=np.float32))


@pytest.mark.parametrize("change, error, message", [
    (lambda: ge.tensor([1, 2]).__iadd__(1.5), TypeError, r"\+= on a tensor of shape \(2,\) and dtype int64.*cast"),
    (lambda: ge.tensor([1.0, 2.0]).add_(ge.tensor([1.0, 2.0, 3.0])), ValueError, r"add_ .*operands of shape \(3,\)"),
    (lambda: ge.tensor([1.0]).expand(3).__imul__(2.0), ValueError, r"read-only .*clone\(\)"),
    (lambda: ge.tensor([1.0]).clamp_(), ValueError, "at least one of min and max"),
])
def test_in_place_errors_name_the_problem(change, error, message):
    with pytest.raises(error, match=message):
        change()


@pytest.mark.parametrize("form", ["functional", "module", "method"])
def test_relu_in_place_changes_the_input_and_keeps_its_gradient_as_torch(form):
    results = []
    for lib in (ge, torch):
        x = lib.tensor([-1.0, 0.5, 2.0], dtype=lib.float64, requires_grad=True)
        hidden = x * 3.0
        run = {
            "functional": lambda h: lib.nn.functional.relu(h, inplace=True),
            "module": lambda h: lib.nn.ReLU(inplace=True)(h),
            "method": lambda h: h.relu_(),
        }[form]
        out = run(hidden)
        assert out is hidden
        (out * out).sum().backward()
        results.append((hidden.detach().numpy(), x.grad.numpy()))
    for ours, theirs in zip(*results):
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("lib", [ge, torch])
def test_zero_grad_without_set_to_none_zeroes_the_existing_grad_in_place(lib):
    w = lib.tensor([1.0, 2.0], requires_grad=True)
    optimizer = lib.optim.SGD([w], lr=0.1)
    (w * w).sum().backward()
    kept = w.grad
    optimizer.zero_grad(set_to_none=False)
    assert w.grad is kept and kept.tolist() == [0.0, 0.0]
