"""``ge.optim``: SGD (momentum, weight decay, Nesterov) and Adam, following torch.optim's update rules."""
from __future__ import annotations

import numpy as np

from .nn.module import zero_grads
from .tensor import mark_modified


class Optimizer:
    """Holds parameters and updates them in place from their ``.grad``."""

    def __init__(self, params, defaults):
        self.params = list(params)
        if not self.params:
            raise ValueError("optimizer got an empty parameter list")
        for key, value in defaults.items():
            if isinstance(value, (int, float)) and value < 0:
                raise ValueError(f"{key}: must be >= 0, got {value}")
        self.defaults = defaults
        self.state = {}

    def zero_grad(self, set_to_none=True):
        zero_grads(self.params, set_to_none)

    def step(self):
        for p in self.params:
            if p.grad is not None:
                self._update(p, p.grad.data, self.state.setdefault(id(p), {}))
                mark_modified(p)

    def _update(self, p, grad, state):
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent, torch's formulation of momentum and Nesterov."""

    def __init__(self, params, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov: requires momentum > 0 and dampening == 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay))
        self.nesterov = nesterov

    def _update(self, p, grad, state):
        d = self.defaults
        if d["weight_decay"]:
            grad = grad + d["weight_decay"] * p.data
        if d["momentum"]:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = np.array(grad, copy=True)
            else:
                buf = d["momentum"] * buf + (1 - d["dampening"]) * grad
            state["momentum_buffer"] = buf
            grad = grad + d["momentum"] * buf if self.nesterov else buf
        p.data -= np.asarray(d["lr"] * grad, dtype=p.data.dtype)


class Adam(Optimizer):
    """Adam (Kingma & Ba), with torch's bias correction and L2 weight decay."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, eps=eps, weight_decay=weight_decay))
        self.betas = betas

    def _update(self, p, grad, state):
        d, (b1, b2) = self.defaults, self.betas
        if d["weight_decay"]:
            grad = grad + d["weight_decay"] * p.data
        step = state.get("step", 0) + 1
        m = b1 * state.get("exp_avg", 0.0) + (1 - b1) * grad
        v = b2 * state.get("exp_avg_sq", 0.0) + (1 - b2) * grad * grad
        state.update(step=step, exp_avg=m, exp_avg_sq=v)
        denom = np.sqrt(v) / np.sqrt(1 - b2**step) + d["eps"]
        p.data -= np.asarray(d["lr"] / (1 - b1**step) * m / denom, dtype=p.data.dtype)
