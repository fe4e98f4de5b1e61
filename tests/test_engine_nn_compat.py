"""ge.nn and ge.optim behave like torch.nn and torch.optim: shared parameters, state_dict storage,
Sequential, implicit softmax dims, the losses' options and the optimizers' parameter groups."""
import copy
import warnings
from collections import OrderedDict

import numpy as np
import pytest
import torch

import gradverify.engine as ge

LIBS = (ge, torch)


# ------------------------------------------------------------------ modules
def _tied_model(lib):
    lin = lib.nn.Linear(3, 3).double()
    return lin, lib.nn.Sequential(lin, lib.nn.Tanh(), lib.nn.Sequential(lin))


def test_a_shared_layer_is_listed_once_by_parameters_and_every_time_by_state_dict():
    for lib in LIBS:
        _, model = _tied_model(lib)
        assert [n for n, _ in model.named_parameters()] == ["0.weight", "0.bias"]
        assert len(list(model.parameters())) == 2
        assert [n for n, _ in model.named_parameters(remove_duplicate=False)] == [
            "0.weight", "0.bias", "2.0.weight", "2.0.bias"]
        assert list(model.state_dict()) == ["0.weight", "0.bias", "2.0.weight", "2.0.bias"]
        assert [n for n, _ in model.named_modules()] == ["", "0", "1", "2"]
        assert len(list(model.modules())) == 4


def test_sgd_steps_a_tied_layer_once_per_step_like_torch():
    rng = np.random.default_rng(0)
    w0, b0, x = rng.standard_normal((3, 3)), rng.standard_normal(3), rng.standard_normal((4, 3))
    finals = []
    for lib in LIBS:
        lin, model = _tied_model(lib)
        lin.load_state_dict({"weight": lib.tensor(w0), "bias": lib.tensor(b0)})
        optimizer = lib.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for _ in range(3):
            optimizer.zero_grad()
            model(lib.tensor(x)).square().sum().backward()
            optimizer.step()
        finals.append(lin.weight.detach().numpy().copy())
    np.testing.assert_allclose(finals[0], finals[1], rtol=1e-12)


def test_state_dict_shares_the_parameters_memory_and_load_copies_into_it():
    for lib in LIBS:
        lib.manual_seed(0)
        model = lib.nn.Linear(2, 2).double()
        weight = model.weight
        state = model.state_dict()
        assert not state["weight"].requires_grad
        with lib.no_grad():
            state["weight"].zero_()
        assert model.weight.tolist() == [[0.0, 0.0], [0.0, 0.0]]
        alias = model.weight.detach()
        model.load_state_dict({"weight": lib.ones(2, 2, dtype=lib.float64) * 3, "bias": lib.zeros(2)})
        assert alias.tolist() == [[3.0, 3.0], [3.0, 3.0]]
        assert model.weight is weight and model.weight.requires_grad and model.bias.dtype == lib.float64


def test_a_deep_copied_state_dict_is_a_snapshot_that_restores_the_model():
    for lib in LIBS:
        lib.manual_seed(0)
        model = lib.nn.Linear(2, 2).double()
        saved = copy.deepcopy(model.state_dict())
        before = model.weight.tolist()
        with lib.no_grad():
            model.weight.zero_()
        assert saved["weight"].tolist() == before
        model.load_state_dict(saved)
        assert model.weight.tolist() == before


def test_an_optimizer_keeps_updating_the_model_after_load_state_dict():
    for lib in LIBS:
        model = lib.nn.Linear(2, 1).double()
        optimizer = lib.optim.SGD(model.parameters(), lr=0.5)
        model.load_state_dict({"weight": lib.tensor([[1.0, 2.0]]), "bias": lib.tensor([0.5])})
        model(lib.tensor([[1.0, 1.0]], dtype=lib.float64)).sum().backward()
        optimizer.step()
        assert model.weight.tolist() == [[0.5, 1.5]] and model.bias.tolist() == [0.0]


def test_load_state_dict_refuses_a_backward_through_a_graph_recorded_before_it():
    model = ge.nn.Linear(2, 1).double()
    loss = model(ge.ones(1, 2, dtype=ge.float64)).sum()
    model.load_state_dict({k: v.detach().clone() for k, v in model.state_dict().items()})
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def _three_layers(lib):
    lib.manual_seed(0)
    return lib.nn.Sequential(lib.nn.Linear(2, 2), lib.nn.ReLU(), lib.nn.Linear(2, 1))


@pytest.mark.parametrize("index", [slice(0, 2), slice(1, None), slice(None, None, -1), slice(5, 9)])
def test_sequential_slices_are_sequentials_keeping_the_names(index):
    for lib in LIBS:
        model = _three_layers(lib)
        part = model[index]
        assert type(part) is lib.nn.Sequential
        assert list(part._modules) == [str(i) for i in range(3)][index]
        assert list(part) == list(model)[index]


def test_sequential_indexing_iteration_and_append_follow_torch():
    for lib in LIBS:
        model = _three_layers(lib)
        assert len(model) == 3 and model[-1] is model[2] and model[-3] is model[0]
        assert [type(m).__name__ for m in model] == ["Linear", "ReLU", "Linear"]
        for index in (3, -4):
            with pytest.raises(IndexError, match=f"index {index} is out of range"):
                model[index]
        tanh = lib.nn.Tanh()
        assert model.append(tanh) is model and model[3] is tanh and list(model._modules)[-1] == "3"
        named = lib.nn.Sequential(OrderedDict([("fc", lib.nn.Linear(2, 2)), ("act", lib.nn.ReLU())]))
        assert list(named._modules) == ["fc", "act"] and [n for n, _ in named.named_parameters()] == [
            "fc.weight", "fc.bias"]


@pytest.mark.parametrize("shape", [(5,), (2, 3), (2, 3, 4), (2, 3, 4, 2)])
@pytest.mark.parametrize("layer", ["Softmax", "LogSoftmax"])
def test_softmax_without_dim_uses_torchs_implicit_dim_and_warns(layer, shape):
    x = np.random.default_rng(1).standard_normal(shape)
    results = []
    for lib in LIBS:
        leaf = lib.tensor(x, requires_grad=True)
        with pytest.warns(UserWarning, match=f"Implicit dimension choice for {layer.lower().replace('log', 'log_')}"):
            out = getattr(lib.nn, layer)()(leaf)
        (out * lib.tensor(np.arange(out.numel()).reshape(shape))).sum().backward()
        results.append((out.detach().numpy(), leaf.grad.numpy()))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-12, atol=1e-14)


def test_softmax_of_a_0d_tensor_without_dim_normalises_over_dim_0():
    for lib in LIBS:
        with pytest.warns(UserWarning, match="Implicit dimension choice for softmax"):
            assert lib.nn.Softmax()(lib.tensor(2.5)).item() == 1.0
        with pytest.warns(UserWarning, match="Implicit dimension choice for log_softmax"):
            assert lib.nn.functional.log_softmax(lib.tensor(2.5)).item() == 0.0


def test_softmax_with_a_dim_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = ge.nn.Softmax(dim=-1)(ge.tensor([[0.0, 0.0]]))
    assert out.tolist() == [[0.5, 0.5]]


# -------------------------------------------------------------------- optim
def _regression_problem(lib, seed=0):
    rng = np.random.default_rng(seed)
    w, b = lib.tensor(rng.standard_normal((3, 4)), requires_grad=True), lib.tensor(rng.standard_normal(3), requires_grad=True)
    x, target = lib.tensor(rng.standard_normal((6, 4))), lib.tensor(rng.standard_normal((6, 3)))

    def loss():
        return ((lib.tanh(x @ w.T + b) - target) ** 2).mean()

    return w, b, loss


def _run(optimizer, loss, steps, schedule=None):
    for number in range(steps):
        if schedule:
            schedule(optimizer, number)
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()


def _halve_the_first_groups_lr(optimizer, number):
    optimizer.param_groups[0]["lr"] *= 0.5


GROUPED = [
    ("SGD", lambda w, b: [{"params": [w]}, {"params": [b], "lr": 0.5}], dict(lr=0.1)),
    ("SGD", lambda w, b: [{"params": [w], "momentum": 0.9, "nesterov": True}, {"params": b}], dict(lr=0.05)),
    ("Adam", lambda w, b: [{"params": [w], "amsgrad": True}, {"params": [b], "betas": (0.5, 0.9)}], dict(lr=0.05)),
]


@pytest.mark.parametrize("name, groups, options", GROUPED)
@pytest.mark.parametrize("schedule", [None, _halve_the_first_groups_lr])
def test_parameter_groups_take_their_own_options_and_follow_lr_edits_like_torch(name, groups, options, schedule):
    finals = []
    for lib in LIBS:
        w, b, loss = _regression_problem(lib)
        optimizer = getattr(lib.optim, name)(groups(w, b), **options)
        _run(optimizer, loss, 6, schedule)
        finals.append((w.detach().numpy().copy(), b.detach().numpy().copy(), loss().item()))
    for ours, theirs in zip(*finals):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)


def _torch_layout(state_dict, hyper_parameters):
    """A state_dict reduced to plain values and to the hyper-parameters the engine's optimizers have."""
    state = {index: {key: np.asarray(value).tolist() for key, value in values.items()}
             for index, values in state_dict["state"].items()}
    groups = [{key: group[key] for key in (*hyper_parameters, "params")} for group in state_dict["param_groups"]]
    return state, groups


OPTIMIZER_STATES = [
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.1), ["lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize"]),
    ("SGD", dict(lr=0.1), ["lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize"]),
    ("Adam", dict(lr=0.05, amsgrad=True), ["lr", "betas", "eps", "weight_decay", "amsgrad", "maximize"]),
]


@pytest.mark.parametrize("name, options, hyper_parameters", OPTIMIZER_STATES)
def test_state_dict_has_torchs_layout_and_values(name, options, hyper_parameters):
    layouts = []
    for lib in LIBS:
        w, b, loss = _regression_problem(lib)
        optimizer = getattr(lib.optim, name)([{"params": [w]}, {"params": [b], "lr": 0.01}], **options)
        _run(optimizer, loss, 3)
        layouts.append(_torch_layout(optimizer.state_dict(), hyper_parameters))
    (our_state, our_groups), (their_state, their_groups) = layouts
    assert our_groups == their_groups
    assert our_state.keys() == their_state.keys()
    for index, values in their_state.items():
        assert our_state[index].keys() == values.keys()
        for key, value in values.items():
            np.testing.assert_allclose(our_state[index][key], value, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("source", LIBS, ids=["from engine", "from torch"])
@pytest.mark.parametrize("name, options", [("SGD", dict(lr=0.1, momentum=0.9)), ("Adam", dict(lr=0.05, amsgrad=True))])
def test_a_loaded_optimizer_state_continues_the_trajectory(source, name, options):
    """Three steps, save, load into a fresh optimizer (and parameters), three more: as six steps in torch."""
    w, b, loss = _regression_problem(torch)
    reference = getattr(torch.optim, name)([w, b], **options)
    _run(reference, loss, 6)

    w, b, loss = _regression_problem(source)
    first = getattr(source.optim, name)([w, b], **options)
    _run(first, loss, 3)
    saved, values = first.state_dict(), (w.detach().numpy().copy(), b.detach().numpy().copy())
    w, b, loss = _regression_problem(ge)
    with ge.no_grad():
        w.copy_(ge.tensor(values[0]))
        b.copy_(ge.tensor(values[1]))
    resumed = getattr(ge.optim, name)([w, b], lr=1.0)
    resumed.load_state_dict(saved)
    assert resumed.param_groups[0]["lr"] == options["lr"] and resumed.param_groups[0]["params"] == [w, b]
    _run(resumed, loss, 3)
    np.testing.assert_allclose(w.detach().numpy(), reference.param_groups[0]["params"][0].detach().numpy(),
                               rtol=1e-12)


def test_load_state_dict_copies_the_state_and_casts_it_to_the_parameters_dtype():
    w = ge.zeros(2, requires_grad=True)
    saved = {"state": {0: {"momentum_buffer": np.array([1.0, 2.0])}},
             "param_groups": [{"lr": 0.1, "momentum": 0.5, "dampening": 0.0, "weight_decay": 0.0, "nesterov": False,
                               "maximize": False, "params": [0]}]}
    optimizer = ge.optim.SGD([w])
    optimizer.load_state_dict(saved)
    buffer = optimizer.state[w]["momentum_buffer"]
    assert buffer.dtype == ge.float32 and buffer.tolist() == [1.0, 2.0]
    saved["state"][0]["momentum_buffer"][0] = 5.0
    assert buffer.tolist() == [1.0, 2.0] and optimizer.param_groups[0]["momentum"] == 0.5


def test_optimizer_options_and_groups_are_checked():
    w, b = ge.zeros(2, requires_grad=True), ge.zeros(1, requires_grad=True)
    with pytest.raises(ValueError, match="some parameters appear in more than one parameter group"):
        ge.optim.SGD([{"params": [w]}, {"params": [w, b]}], lr=0.1)
    with pytest.raises(ValueError, match="lr: must be >= 0, got -0.5"):
        ge.optim.SGD([{"params": [w]}, {"params": [b], "lr": -0.5}], lr=0.1)
    with pytest.raises(ValueError, match=r"betas: expected two numbers in \[0, 1\), got \(0.9, 1.0\)"):
        ge.optim.Adam([w], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="nesterov: requires momentum > 0 and dampening == 0"):
        ge.optim.SGD([{"params": [w], "nesterov": True}], lr=0.1)
    with pytest.raises(TypeError, match="params: expected an iterable of tensors or of dicts, got a single Tensor"):
        ge.optim.SGD(w, lr=0.1)
    with pytest.warns(UserWarning, match="duplicate parameters"):
        ge.optim.SGD([w, w], lr=0.1)
    optimizer = ge.optim.SGD([w, b], lr=0.1)
    with pytest.raises(ValueError, match="state_dict: has 2 parameter groups, this optimizer 1"):
        optimizer.load_state_dict(ge.optim.SGD([{"params": [w]}, {"params": [b]}]).state_dict())
    with pytest.raises(ValueError, match="state_dict: parameter group 0 has 1 parameters, this optimizer's has 2"):
        optimizer.load_state_dict(ge.optim.SGD([w]).state_dict())


def test_add_param_group_does_not_change_the_callers_dict_and_step_returns_the_closures_loss():
    w, b, loss = _regression_problem(ge)
    optimizer = ge.optim.SGD([w], lr=0.1)
    group = {"params": [b]}
    optimizer.add_param_group(group)
    assert group == {"params": [b]} and optimizer.param_groups[1]["lr"] == 0.1

    def closure():
        optimizer.zero_grad()
        value = loss()
        value.backward()
        return value

    first = optimizer.step(closure).item()
    assert first > optimizer.step(closure).item()


# ------------------------------------------------------------------- losses
REDUCTIONS = ["none", "mean", "sum"]

# (input shape, target: "index" or "probability", options, how many targets become ignore_index)
CLASS_LOSS_CASES = {
    "batch": ((4, 5), "index", {}, 0),
    "unbatched": ((5,), "index", {}, 0),
    "spatial": ((3, 4, 2, 2), "index", {}, 0),
    "ignore_index default": ((4, 5), "index", {}, 2),
    "ignore_index inside the classes": ((4, 5), "index", {"ignore_index": 2}, 2),
    "ignore_index spatial": ((3, 4, 5), "index", {}, 4),
    "ignore_index unbatched": ((5,), "index", {}, 1),
    "all ignored": ((4, 5), "index", {}, 4),
    "weight": ((4, 5), "index", {"weight": True}, 0),
    "weight and ignore_index spatial": ((3, 4, 5), "index", {"weight": True}, 3),
    "empty batch": ((0, 5), "index", {}, 0),
    "label_smoothing": ((4, 5), "index", {"label_smoothing": 0.2}, 0),
    "label_smoothing unbatched": ((5,), "index", {"label_smoothing": 0.3}, 0),
    "label_smoothing, weight and ignore_index spatial": ((3, 4, 5), "index", {"label_smoothing": 0.1, "weight": True}, 3),
    "probabilities": ((4, 5), "probability", {}, 0),
    "probabilities unbatched": ((5,), "probability", {}, 0),
    "probabilities spatial": ((3, 4, 2), "probability", {}, 0),
    "probabilities, weight and label_smoothing": ((4, 5), "probability", {"weight": True, "label_smoothing": 0.1}, 0),
    "probabilities empty batch": ((0, 5), "probability", {}, 0),
}


def _class_loss_arrays(shape, kind, options, ignored, seed=5):
    """Logits, a target and options (numpy) for one case of CLASS_LOSS_CASES."""
    rng = np.random.default_rng(seed)
    class_dim = 0 if len(shape) == 1 else 1
    classes = shape[class_dim]
    x = rng.standard_normal(shape) * 2
    options = dict(options)
    if options.pop("weight", False):
        options["weight"] = rng.uniform(0.5, 2.0, classes)
    if kind == "probability":
        target = rng.uniform(0.0, 1.0, shape)
        return x, target / target.sum(axis=class_dim, keepdims=True), options
    target = rng.integers(0, classes, shape[:class_dim] + shape[class_dim + 1:])
    flat = target.reshape(-1)
    flat[rng.permutation(flat.size)[:ignored]] = options.get("ignore_index", -100)
    return x, flat.reshape(target.shape), options


def _value_and_gradients(lib, fn, x, target, options, differentiate_target):
    """``fn``'s value and the gradients of a random projection of it, for input and (optionally) target."""
    leaf = lib.tensor(x, requires_grad=True)
    target_leaf = lib.tensor(target, requires_grad=differentiate_target)
    options = {k: lib.tensor(v) if isinstance(v, np.ndarray) else v for k, v in options.items()}
    out = fn(lib, leaf, target_leaf, options)
    projection = np.random.default_rng(9).standard_normal(tuple(out.shape))
    (out * lib.tensor(projection)).sum().backward()
    grads = [leaf.grad.numpy()] + ([target_leaf.grad.numpy()] if differentiate_target else [])
    return [out.detach().numpy()] + grads


def _assert_matches_torch(fn, x, target, options, differentiate_target=False):
    ours = _value_and_gradients(ge, fn, x, target, options, differentiate_target)
    theirs = _value_and_gradients(torch, fn, x, target, options, differentiate_target)
    for mine, reference in zip(ours, theirs):
        assert mine.shape == reference.shape
        np.testing.assert_allclose(mine, reference, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", sorted(CLASS_LOSS_CASES))
def test_cross_entropy_matches_torch_in_value_and_gradient(case, reduction):
    shape, kind, options, ignored = CLASS_LOSS_CASES[case]
    x, target, options = _class_loss_arrays(shape, kind, options, ignored)
    _assert_matches_torch(
        lambda lib, x, t, o: lib.nn.functional.cross_entropy(x, t, reduction=reduction, **o),
        x, target, options, differentiate_target=kind == "probability",
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("case", sorted(c for c, (_, kind, o, _) in CLASS_LOSS_CASES.items()
                                        if kind == "index" and "label_smoothing" not in o))
def test_nll_loss_matches_torch_in_value_and_gradient(case, reduction):
    shape, _, options, ignored = CLASS_LOSS_CASES[case]
    x, target, options = _class_loss_arrays(shape, "index", options, ignored)
    _assert_matches_torch(lambda lib, x, t, o: lib.nn.functional.nll_loss(x, t, reduction=reduction, **o),
                          x, target, options)


def test_the_loss_modules_pass_their_options_on():
    x, target, options = _class_loss_arrays((3, 4, 5), "index", {"weight": True}, 3)
    _assert_matches_torch(
        lambda lib, x, t, o: lib.nn.CrossEntropyLoss(o["weight"], ignore_index=-100, reduction="none",
                                                     label_smoothing=0.1)(x, t), x, target, options)
    _assert_matches_torch(lambda lib, x, t, o: lib.nn.NLLLoss(o["weight"], reduction="sum")(x, t), x, target, options)
    _assert_matches_torch(lambda lib, x, t, o: lib.nn.MSELoss(reduction="none")(x, t), x, x[::-1].copy(), {}, True)


MSE_CASES = [((2, 3), (2, 3)), ((0,), (0,)), ((3,), (3,))]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("input_shape, target_shape", MSE_CASES)
def test_mse_loss_matches_torch_in_value_and_gradient(input_shape, target_shape, reduction):
    rng = np.random.default_rng(2)
    _assert_matches_torch(lambda lib, x, t, o: lib.nn.functional.mse_loss(x, t, reduction=reduction),
                          rng.standard_normal(input_shape), rng.standard_normal(target_shape), {}, True)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("input_shape, target_shape", [((2, 3), (3,)), ((3,), (2, 3)), ((2, 1), (1, 3))])
def test_mse_loss_broadcasts_a_target_of_another_shape_with_torchs_warning(input_shape, target_shape, reduction):
    rng = np.random.default_rng(2)
    with pytest.warns(UserWarning, match=r"Using a target size .* that is different to the input size"):
        _assert_matches_torch(lambda lib, x, t, o: lib.nn.functional.mse_loss(x, t, reduction=reduction),
                              rng.standard_normal(input_shape), rng.standard_normal(target_shape), {}, True)


def test_summed_losses_of_an_empty_batch_are_zero_with_empty_gradients():
    logits = ge.zeros(0, 3, dtype=ge.float64, requires_grad=True)
    loss = ge.nn.functional.cross_entropy(logits, ge.zeros(0, dtype=ge.int64), reduction="sum")
    loss.backward()
    assert loss.item() == 0.0 and logits.grad.shape == (0, 3)
    x = ge.zeros(0, dtype=ge.float64, requires_grad=True)
    loss = ge.nn.functional.mse_loss(x, ge.zeros(0, dtype=ge.float64), reduction="sum")
    loss.backward()
    assert loss.item() == 0.0 and x.grad.shape == (0,)


BAD_LOSS_CALLS = {
    r"reduction: expected 'none', 'mean' or 'sum', got 'avg'":
        lambda F: F.cross_entropy(ge.zeros(2, 3), ge.tensor([0, 1]), reduction="avg"),
    r"reduction: expected 'none', 'mean' or 'sum', got 'elementwise'":
        lambda F: F.mse_loss(ge.zeros(2), ge.zeros(2), reduction="elementwise"),
    r"reduction: expected 'none', 'mean' or 'sum', got None": lambda F: F.nll_loss(ge.zeros(2, 3), ge.tensor([0, 1]),
                                                                                   reduction=None),
    r"label_smoothing: must lie in \[0, 1\], got 1.5":
        lambda F: F.cross_entropy(ge.zeros(2, 3), ge.tensor([0, 1]), label_smoothing=1.5),
    r"cross_entropy: a target of the input's shape holds class probabilities and must be floating, got dtype int64":
        lambda F: F.cross_entropy(ge.zeros(2, 2), ge.tensor([[0, 1], [1, 0]])),
    r"ignore_index: not supported with class-probability targets, got 0":
        lambda F: F.cross_entropy(ge.zeros(2, 3), ge.ones(2, 3) / 3, ignore_index=0),
    r"cross_entropy: weight must hold one weight per class, shape \(3,\), got \(2,\)":
        lambda F: F.cross_entropy(ge.zeros(2, 3), ge.tensor([0, 1]), weight=ge.ones(2)),
    r"cross_entropy: class indices must lie in \[0, 3\)":
        lambda F: F.cross_entropy(ge.zeros(2, 3), ge.tensor([0, -1]), ignore_index=-100),
    r"cross_entropy: target must hold 4 integer class indices of shape \(2, 2\), got shape \(2,\)":
        lambda F: F.cross_entropy(ge.zeros(2, 3, 2), ge.tensor([0, 1])),
    r"cross_entropy: input must be \(C,\), \(N, C\) or \(N, C, d1, ...\), got shape \(\)":
        lambda F: F.cross_entropy(ge.tensor(1.0), ge.tensor(0)),
    r"mse_loss: input has shape \(2, 3\) but target has shape \(2,\), which do not broadcast":
        lambda F: F.mse_loss(ge.zeros(2, 3), ge.zeros(2)),
}


@pytest.mark.parametrize("message", sorted(BAD_LOSS_CALLS))
def test_bad_loss_arguments_name_the_argument(message):
    with pytest.raises(ValueError, match=message):
        BAD_LOSS_CALLS[message](ge.nn.functional)


def test_an_ignored_entry_may_pick_minus_infinity():
    logits = ge.tensor([[-np.inf, 0.0, 1.0], [0.5, 0.0, 1.0]], dtype=ge.float64, requires_grad=True)
    loss = ge.nn.functional.nll_loss(logits, ge.tensor([-100, 2]), reduction="sum")
    loss.backward()
    assert loss.item() == -1.0 and logits.grad.tolist() == [[0.0, 0.0, 0.0], [0.0, 0.0, -1.0]]
