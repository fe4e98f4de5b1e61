"""ge.optim's AdamW, RMSprop, Adagrad and lr_scheduler follow torch 2.13: float64 trajectories to 1e-12,
state_dict layout, and the learning rates the schedulers set."""
import math

import numpy as np
import pytest
import torch

import gradverify.engine as ge

LIBS = (ge, torch)
RNG = np.random.default_rng(0)
W0, B0 = RNG.standard_normal((3, 4)), RNG.standard_normal(3)
X, Y = RNG.standard_normal((5, 4)), RNG.standard_normal((5, 3))


def _trajectory(lib, make_optimizer, steps=6, schedule=None):
    """Parameters after each of ``steps`` optimizer steps on a small tanh regression, from the same start."""
    w, b = lib.tensor(W0.copy(), requires_grad=True), lib.tensor(B0.copy(), requires_grad=True)
    optimizer = make_optimizer(lib, [{"params": [w]}, {"params": [b], "lr": 0.05}])
    scheduler = schedule(lib, optimizer) if schedule else None
    history = []
    for _ in range(steps):
        optimizer.zero_grad()
        loss = ((lib.tanh(lib.tensor(X) @ w.T + b) - lib.tensor(Y)) ** 2).sum()
        loss.backward()
        optimizer.step()
        if scheduler:
            scheduler.step()
        history.append(np.concatenate([w.detach().numpy().ravel(), b.detach().numpy().ravel()]))
    return np.array(history), optimizer


OPTIMIZERS = {
    "adamw": lambda lib, p: lib.optim.AdamW(p, lr=0.1),
    "adamw-amsgrad-maximize": lambda lib, p: lib.optim.AdamW(p, lr=0.1, weight_decay=0.3, amsgrad=True, maximize=True),
    "adam-l2": lambda lib, p: lib.optim.Adam(p, lr=0.1, weight_decay=0.3),
    "rmsprop": lambda lib, p: lib.optim.RMSprop(p, lr=0.01),
    "rmsprop-centered-momentum": lambda lib, p: lib.optim.RMSprop(p, lr=0.01, alpha=0.9, momentum=0.8,
                                                                  centered=True, weight_decay=0.1),
    "rmsprop-maximize-alpha-0.3": lambda lib, p: lib.optim.RMSprop(p, alpha=0.3, centered=True, maximize=True),
    "adagrad": lambda lib, p: lib.optim.Adagrad(p, lr=0.1),
    "adagrad-decay": lambda lib, p: lib.optim.Adagrad(p, lr=0.1, lr_decay=0.2, weight_decay=0.1,
                                                      initial_accumulator_value=0.5, eps=1e-6),
    "sgd-nesterov": lambda lib, p: lib.optim.SGD(p, lr=0.01, momentum=0.9, nesterov=True, weight_decay=0.1),
}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_trajectories_and_state_match_torch(name):
    (ours, ours_opt), (theirs, theirs_opt) = (_trajectory(lib, OPTIMIZERS[name]) for lib in LIBS)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)
    ours_state, theirs_state = ours_opt.state_dict(), theirs_opt.state_dict()
    # torch's groups also hold its implementation switches (foreach, fused, ...), which the engine has not
    assert [{k: g[k] for k in ours} for ours, g in zip(ours_state["param_groups"], theirs_state["param_groups"])] \
        == ours_state["param_groups"]
    assert ours_state["state"].keys() == theirs_state["state"].keys()
    for index, values in theirs_state["state"].items():
        assert ours_state["state"][index].keys() == values.keys()
        for key, value in values.items():
            np.testing.assert_allclose(ours_state["state"][index][key].array, value.numpy(), rtol=1e-12, atol=1e-12)


def test_adagrad_state_exists_before_the_first_step_like_torch():
    for lib in LIBS:
        w = lib.zeros(2, requires_grad=True)
        state = lib.optim.Adagrad([w], initial_accumulator_value=0.25).state_dict()["state"]
        assert list(state) == [0] and sorted(state[0]) == ["step", "sum"]
        assert state[0]["sum"].tolist() == [0.25, 0.25] and float(state[0]["step"]) == 0.0


def test_optimizer_state_saved_by_torch_loads_and_continues_identically():
    w_t = torch.tensor(W0.copy(), requires_grad=True)
    w_g = ge.tensor(W0.copy(), requires_grad=True)
    reference = torch.optim.RMSprop([w_t], momentum=0.5, centered=True)
    for _ in range(2):
        reference.zero_grad()
        (w_t ** 3).sum().backward()
        reference.step()
    ours = ge.optim.RMSprop([w_g], momentum=0.5, centered=True)
    ours.load_state_dict(reference.state_dict())
    w_g.array[...] = w_t.detach().numpy()
    for lib, w, optimizer in ((torch, w_t, reference), (ge, w_g, ours)):
        optimizer.zero_grad()
        (w ** 3).sum().backward()
        optimizer.step()
    np.testing.assert_allclose(w_g.array, w_t.detach().numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("make, error, message", [
    (lambda p: ge.optim.AdamW(p, lr=-1.0), ValueError, "lr"),
    (lambda p: ge.optim.RMSprop(p, alpha=-0.5), ValueError, "alpha"),
    (lambda p: ge.optim.Adagrad(p, lr_decay=-1.0), ValueError, "lr_decay"),
    (lambda p: ge.optim.AdamW(p, betas=(0.9, 1.5)), ValueError, "betas"),
])
def test_bad_hyper_parameters_raise_naming_them(make, error, message):
    with pytest.raises(error, match=message):
        make([ge.zeros(2, requires_grad=True)])


# ------------------------------------------------------------------ schedulers
class _Halving:
    """A callable object, whose attributes LambdaLR's state_dict keeps (as torch)."""

    def __init__(self):
        self.base = 0.5

    def __call__(self, epoch):
        return self.base ** epoch


SCHEDULES = {
    "step": lambda lib, o: lib.optim.lr_scheduler.StepLR(o, step_size=3, gamma=0.5),
    "multistep": lambda lib, o: lib.optim.lr_scheduler.MultiStepLR(o, milestones=[2, 5, 5, 9], gamma=0.3),
    "exponential": lambda lib, o: lib.optim.lr_scheduler.ExponentialLR(o, gamma=0.9),
    "cosine": lambda lib, o: lib.optim.lr_scheduler.CosineAnnealingLR(o, T_max=4, eta_min=0.001),
    "lambda": lambda lib, o: lib.optim.lr_scheduler.LambdaLR(o, lambda epoch: 1 / (1 + epoch)),
    "lambda-per-group": lambda lib, o: lib.optim.lr_scheduler.LambdaLR(o, [lambda e: 0.9 ** e, _Halving()]),
}


def _learning_rates(lib, make_scheduler, epochs=14):
    w, b = lib.zeros(2, requires_grad=True), lib.zeros(1, requires_grad=True)
    optimizer = lib.optim.SGD([{"params": [w]}, {"params": [b], "lr": 0.3}], lr=0.1)
    scheduler = make_scheduler(lib, optimizer)
    rates = [scheduler.get_last_lr()]
    for _ in range(epochs):
        optimizer.step()
        scheduler.step()
        rates.append([group["lr"] for group in optimizer.param_groups])
        assert scheduler.get_last_lr() == rates[-1]
    return rates, optimizer, scheduler


@pytest.mark.parametrize("name", SCHEDULES)
def test_schedulers_set_torchs_learning_rates(name):
    (ours, ours_opt, ours_sched), (theirs, theirs_opt, theirs_sched) = (
        _learning_rates(lib, SCHEDULES[name]) for lib in LIBS)
    np.testing.assert_allclose(ours, theirs, rtol=1e-15, atol=0)
    assert [g["initial_lr"] for g in ours_opt.param_groups] == [g["initial_lr"] for g in theirs_opt.param_groups]
    ours_state, theirs_state = ours_sched.state_dict(), theirs_sched.state_dict()
    for key in ("last_epoch", "base_lrs", "_last_lr", "_step_count"):
        assert ours_state[key] == theirs_state[key]
    if name.startswith("lambda"):
        assert ours_state["lr_lambdas"] == theirs_state["lr_lambdas"]


def test_a_resumed_cosine_schedule_continues_like_torch():
    def resume(lib):
        w = lib.zeros(1, requires_grad=True)
        optimizer = lib.optim.SGD([{"params": [w], "lr": 0.2, "initial_lr": 1.0}])
        scheduler = lib.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=5, last_epoch=2)
        rates = [optimizer.param_groups[0]["lr"]]
        for _ in range(8):
            optimizer.step()
            scheduler.step()
            rates.append(optimizer.param_groups[0]["lr"])
        return rates

    np.testing.assert_allclose(resume(ge), resume(torch), rtol=1e-15)


def test_scheduler_state_round_trips_and_resuming_needs_initial_lr():
    rates, optimizer, scheduler = _learning_rates(ge, SCHEDULES["step"], epochs=4)
    saved = scheduler.state_dict()
    scheduler.step()
    scheduler.load_state_dict(saved)
    assert scheduler.last_epoch == 4 and scheduler.get_last_lr() == rates[-1]
    fresh = ge.optim.SGD([ge.zeros(1, requires_grad=True)], lr=0.1)
    with pytest.raises(KeyError, match="initial_lr"):
        ge.optim.lr_scheduler.StepLR(fresh, step_size=2, last_epoch=3)
    with pytest.raises(ValueError, match="step_size"):
        ge.optim.lr_scheduler.StepLR(fresh, step_size=0)
    with pytest.raises(ValueError, match="lr_lambda"):
        ge.optim.lr_scheduler.LambdaLR(fresh, [math.exp, math.exp])


def test_a_scheduled_adamw_trajectory_matches_torch():
    schedule = SCHEDULES["cosine"]
    ours, _ = _trajectory(ge, OPTIMIZERS["adamw"], steps=8, schedule=schedule)
    theirs, _ = _trajectory(torch, OPTIMIZERS["adamw"], steps=8, schedule=schedule)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)
