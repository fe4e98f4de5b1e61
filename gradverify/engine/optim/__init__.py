"""``ge.optim``: SGD (momentum, weight decay, Nesterov), Adam (AMSGrad), AdamW, RMSprop and Adagrad, following
torch.optim's update rules; ``ge.optim.lr_scheduler`` holds torch's common learning-rate schedules.

Parameters come in ``param_groups`` (dicts of ``params`` and hyper-parameters,
editable between steps for learning-rate schedules), and ``state_dict()`` /
``load_state_dict()`` use torch.optim's layout, so a torch optimizer's state
loads too.
"""
from __future__ import annotations

import itertools
import warnings

import numpy as np

from .. import api
from ..nn.module import state_array, zero_grads
from ..core import Tensor, is_floating, mark_modified


class Optimizer:
    """Holds parameter groups and updates their parameters in place from their ``.grad``.

    ``params`` is an iterable of tensors, or of dicts each with a ``params``
    entry and hyper-parameters overriding ``defaults`` for those parameters.
    ``state`` maps each parameter to its per-parameter state.
    """

    def __init__(self, params, defaults):
        if isinstance(params, Tensor):
            raise TypeError("params: expected an iterable of tensors or of dicts, got a single Tensor")
        self.defaults = defaults
        self.state = {}
        self.param_groups = []
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        for group in groups if isinstance(groups[0], dict) else [{"params": groups}]:
            self.add_param_group(group)

    def add_param_group(self, param_group):
        """Add a group (a dict with ``params``); options it does not give take the optimizer's defaults."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group: expected a dict, got {type(param_group).__name__}")
        params = param_group["params"]
        if isinstance(params, (set, frozenset)):
            raise TypeError("params: a set has no order, so the optimizer state could not be matched; pass a list")
        params = [params] if isinstance(params, Tensor) else list(params)
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"params: expected tensors, got {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError("params: can't optimize a non-leaf tensor (one computed by an op)")
        group = {**self.defaults, **param_group, "params": params}
        self._check_group(group)
        if len({id(p) for p in params}) != len(params):
            warnings.warn("optimizer contains a parameter group with duplicate parameters", UserWarning, stacklevel=2)
        held = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in held for p in params):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(group)

    def _check_group(self, group):
        for key, value in group.items():
            if isinstance(value, (int, float)) and value < 0:
                raise ValueError(f"{key}: must be >= 0, got {value}")

    def _params(self):
        return (p for group in self.param_groups for p in group["params"])

    def zero_grad(self, set_to_none=True):
        zero_grads(self._params(), set_to_none)

    def step(self, closure=None):
        """Update every parameter that has a gradient; ``closure`` (re-evaluating the loss) runs first."""
        loss = None
        if closure is not None:
            with api.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    state = self.state.get(p, {})
                    self._update(p, p.grad.array, state, group)
                    if state:  # plain SGD keeps none, and torch's state_dict then lists no entry
                        self.state[p] = state
                    mark_modified(p)
        return loss

    def _update(self, p, grad, state, group):
        raise NotImplementedError

    def state_dict(self):
        """``{'state': {index: {...}}, 'param_groups': [...]}`` with parameters replaced by their index, as torch."""
        index = {}
        param_groups = []
        for group in self.param_groups:
            packed = {key: value for key, value in group.items() if key != "params"}
            packed["params"] = [index.setdefault(id(p), len(index)) for p in group["params"]]
            param_groups.append(packed)
        state = {index[id(p)]: dict(values) for p, values in self.state.items()}
        return {"state": state, "param_groups": param_groups}

    def load_state_dict(self, state_dict):
        """Take the hyper-parameters and per-parameter state of ``state_dict`` (from ``state_dict()``, ours or torch's).

        Groups must match this optimizer's in number and size; state values are
        copied, floating ones (except ``step``) cast to their parameter's dtype.
        """
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"state_dict: has {len(saved_groups)} parameter groups, this optimizer {len(self.param_groups)}"
            )
        for number, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            if len(group["params"]) != len(saved["params"]):
                raise ValueError(
                    f"state_dict: parameter group {number} has {len(saved['params'])} parameters, "
                    f"this optimizer's has {len(group['params'])}"
                )
        by_index = dict(zip(itertools.chain.from_iterable(g["params"] for g in saved_groups), self._params()))
        self.state = {
            by_index[key]: {name: _loaded_state_value(value, by_index[key], name) for name, value in values.items()}
            for key, values in state_dict["state"].items()
            if key in by_index
        }
        self.param_groups = [{**saved, "params": group["params"]} for group, saved in zip(self.param_groups, saved_groups)]


def _loaded_state_value(value, param, name):
    if value is None:
        return value
    array = np.array(state_array(value, name), copy=True)
    if name != "step" and is_floating(array.dtype):
        array = array.astype(param.dtype)
    return Tensor(array)


def _directed_gradient(p, grad, group):
    """The gradient to descend: negated when ``maximize``, plus L2 ``weight_decay * p`` (torch's coupled decay)."""
    if group["maximize"]:
        grad = -grad
    if group["weight_decay"]:
        grad = grad + group["weight_decay"] * p.array
    return grad


def _next_step(state):
    """Count one more step in ``state['step']`` (a 0-d tensor, as torch keeps it) and return the new count."""
    step = float(state["step"].array) + 1
    state["step"] = Tensor(np.array(step, dtype=state["step"].dtype))
    return step


def _step_counter():
    return Tensor(np.array(0.0, dtype=api.get_default_dtype()))


def _descend(p, lr, direction):
    p.array -= np.asarray(lr * direction, dtype=p.array.dtype)


class SGD(Optimizer):
    """Stochastic gradient descent, torch's formulation of momentum and Nesterov."""

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
                 maximize=False):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
                        maximize=maximize)
        super().__init__(params, defaults)

    def _check_group(self, group):
        super()._check_group(group)
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("nesterov: requires momentum > 0 and dampening == 0")

    def _update(self, p, grad, state, group):
        momentum = group["momentum"]
        grad = _directed_gradient(p, grad, group)
        if momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = np.array(grad, copy=True)
            else:
                buf = momentum * buf.array + (1 - group["dampening"]) * grad
            state["momentum_buffer"] = Tensor(buf)
            grad = grad + momentum * buf if group["nesterov"] else buf
        _descend(p, group["lr"], grad)


class Adam(Optimizer):
    """Adam (Kingma & Ba), with torch's bias correction, L2 weight decay and AMSGrad; with
    ``decoupled_weight_decay`` (as torch 2.13's Adam), the decay of AdamW instead."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                 maximize=False, decoupled_weight_decay=False):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize,
                        decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)

    def _check_group(self, group):
        super()._check_group(group)
        if len(group["betas"]) != 2 or not all(0.0 <= b < 1.0 for b in group["betas"]):
            raise ValueError(f"betas: expected two numbers in [0, 1), got {group['betas']}")

    def _update(self, p, grad, state, group):
        b1, b2 = group["betas"]
        # .get: a state_dict saved by a torch older than 2.13 has no such entry
        if group.get("decoupled_weight_decay"):
            grad = -grad if group["maximize"] else grad
            p.array *= 1 - group["lr"] * group["weight_decay"]
        else:
            grad = _directed_gradient(p, grad, group)
        if not state:
            state["step"] = _step_counter()
            state["exp_avg"], state["exp_avg_sq"] = Tensor(np.zeros_like(p.array)), Tensor(np.zeros_like(p.array))
        step = _next_step(state)
        m = b1 * state["exp_avg"].array + (1 - b1) * grad
        v = b2 * state["exp_avg_sq"].array + (1 - b2) * grad * grad
        state.update(exp_avg=Tensor(m), exp_avg_sq=Tensor(v))
        if group["amsgrad"]:
            v = np.maximum(state["max_exp_avg_sq"].array, v) if "max_exp_avg_sq" in state else v
            state["max_exp_avg_sq"] = Tensor(v)
        denom = np.sqrt(v) / np.sqrt(1 - b2**step) + group["eps"]
        _descend(p, group["lr"] / (1 - b1**step), m / denom)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): the parameter shrinks by ``lr * weight_decay``
    before the Adam step, instead of the decay entering the gradient."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False,
                 maximize=False):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize, decoupled_weight_decay=True)


class RMSprop(Optimizer):
    """RMSprop as torch: a running mean of squared gradients (decay ``alpha``) scales the step; ``centered``
    subtracts the squared running mean gradient, ``momentum`` keeps a buffer of scaled steps."""

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False,
                 maximize=False):
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum, centered=centered,
                        maximize=maximize)
        super().__init__(params, defaults)

    def _update(self, p, grad, state, group):
        alpha = group["alpha"]
        grad = _directed_gradient(p, grad, group)
        if not state:
            state["step"] = _step_counter()
            state["square_avg"] = Tensor(np.zeros_like(p.array))
            if group["momentum"] > 0:
                state["momentum_buffer"] = Tensor(np.zeros_like(p.array))
            if group["centered"]:
                state["grad_avg"] = Tensor(np.zeros_like(p.array))
        _next_step(state)
        square_avg = alpha * state["square_avg"].array + (1 - alpha) * grad * grad
        state["square_avg"] = Tensor(square_avg)
        if group["centered"]:
            grad_avg = _lerp(state["grad_avg"].array, grad, 1 - alpha)
            state["grad_avg"] = Tensor(grad_avg)
            square_avg = square_avg - grad_avg * grad_avg
        avg = np.sqrt(square_avg) + group["eps"]
        if group["momentum"] > 0:
            buf = group["momentum"] * state["momentum_buffer"].array + grad / avg
            state["momentum_buffer"] = Tensor(buf)
            _descend(p, group["lr"], buf)
        else:
            _descend(p, group["lr"], grad / avg)


def _lerp(start, end, weight):
    """``start + weight (end - start)``, evaluated from the nearer end as torch.lerp does."""
    return start + weight * (end - start) if weight < 0.5 else end - (end - start) * (1 - weight)


class Adagrad(Optimizer):
    """Adagrad as torch: steps scaled by the root of the summed squared gradients (from
    ``initial_accumulator_value``), the rate decayed as ``lr / (1 + (step - 1) lr_decay)``.

    Like torch, the state exists from construction, so ``state_dict()`` lists it before the first step.
    """

    def __init__(self, params, lr=1e-2, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10,
                 maximize=False):
        defaults = dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                        initial_accumulator_value=initial_accumulator_value, eps=eps, maximize=maximize)
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p] = self._initial_state(p, group)

    @staticmethod
    def _initial_state(p, group):
        return {"step": _step_counter(), "sum": Tensor(np.full_like(p.array, group["initial_accumulator_value"]))}

    def _update(self, p, grad, state, group):
        if not state:  # a parameter of a group added after construction
            state.update(self._initial_state(p, group))
        step = _next_step(state)
        grad = _directed_gradient(p, grad, group)
        total = state["sum"].array + grad * grad
        state["sum"] = Tensor(total)
        _descend(p, group["lr"] / (1 + (step - 1) * group["lr_decay"]), grad / (np.sqrt(total) + group["eps"]))


from . import lr_scheduler  # noqa: E402  (after the optimizers: ge.optim.lr_scheduler, as torch.optim.lr_scheduler)
