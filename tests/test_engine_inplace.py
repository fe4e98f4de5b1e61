"""In-place methods: torch's results and identity semantics, its refusals, and its version-counter errors."""
import numpy as np
import pytest
import torch

import gradverify.engine as ge
import gradverify.engine.nn as nn

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


def test_in_place_on_a_tensor_in_the_graph_is_refused_with_a_clear_error():
    x = ge.tensor([1.0, 2.0], requires_grad=True)
    y = x * 2.0
    with pytest.raises(RuntimeError, match=r"does not record in-place .*y = y \+ x"):
        y += 1.0
    plain = ge.tensor([0.0, 0.0])
    with pytest.raises(RuntimeError, match="does not record in-place"):
        plain += x
    plain += x.detach()
    assert plain.tolist() == [1.0, 2.0]


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
    with pytest.raises(RuntimeError, match=r"a tensor of shape \(2,\) that the backward of 'mul' needs .*in-place"):
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
