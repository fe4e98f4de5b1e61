"""``Module`` and ``Parameter``: the torch.nn container model on engine tensors."""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from ..tensor import Tensor, mark_modified


class Parameter(Tensor):
    """A tensor that a :class:`Module` registers as trainable (requires grad by default)."""

    __slots__ = ()

    def __init__(self, data, requires_grad=True):
        if isinstance(data, Tensor):
            data = data.data
        super().__init__(np.array(data, copy=True), requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


def state_array(value, name):
    """A numpy array from an engine tensor, a torch tensor or anything array-like."""
    if isinstance(value, Tensor):
        return value.data
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        return value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except Exception as err:
        raise TypeError(f"state_dict entry {name!r}: expected an array or tensor, got {type(value).__name__}") from err


def zero_grads(params, set_to_none=True):
    """Clear the ``.grad`` of each parameter: None, or zeros where a gradient exists and ``set_to_none`` is false."""
    for p in params:
        if set_to_none or p.grad is None:
            p.grad = None
        elif p.grad.requires_grad:
            p.grad = Tensor(np.zeros_like(p.data))  # a create_graph gradient: torch detaches it first
        else:
            p.grad.data.fill(0)  # in place, as torch: a reference to .grad sees the zeros
            mark_modified(p.grad)


class Module:
    """Base class of layers and models, as ``torch.nn.Module``.

    Assigning a :class:`Parameter` or a :class:`Module` to an attribute
    registers it, so ``parameters()``, ``state_dict()`` and ``zero_grad()``
    find it.
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError("call super().__init__() in your Module's __init__ before assigning attributes")
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def named_modules(self, memo=None, prefix="", remove_duplicate=True):
        """``(name, module)`` pairs of this module and its descendants, each module once unless
        ``remove_duplicate`` is false (a module used twice appears under its first name, as in PyTorch)."""
        if memo is None:
            memo = set()
        if remove_duplicate:
            if self in memo:
                return
            memo.add(self)
        yield prefix, self
        for name, m in self._modules.items():
            yield from m.named_modules(memo, prefix + ("." if prefix else "") + name, remove_duplicate)

    def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):
        """``(name, parameter)`` pairs, names dotted as in PyTorch (``fc1.weight``).

        A parameter shared by several modules (tied weights) is listed once, under its first name,
        so that an optimizer updates it once; ``remove_duplicate=False`` lists every occurrence.
        """
        modules = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse else [(prefix, self)]
        seen = set()
        for module_prefix, module in modules:
            for name, p in module._parameters.items():
                if remove_duplicate:
                    if id(p) in seen:
                        continue
                    seen.add(id(p))
                yield module_prefix + ("." if module_prefix else "") + name, p

    def parameters(self, recurse=True):
        return (p for _, p in self.named_parameters(recurse=recurse))

    def children(self):
        return iter(self._modules.values())

    def modules(self):
        return (m for _, m in self.named_modules())

    def zero_grad(self, set_to_none=True):
        zero_grads(self.parameters(), set_to_none)

    def train(self, mode=True):
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self):
        return self.train(False)

    def _cast(self, dtype):
        for p in self.parameters():
            p.data = p.data.astype(dtype)
            if p.grad is not None:
                p.grad = Tensor(p.grad.data.astype(dtype))
        return self

    def double(self):
        """Convert every parameter to float64 in place."""
        return self._cast(np.float64)

    def float(self):
        """Convert every parameter to float32 in place."""
        return self._cast(np.float32)

    def to(self, dtype):
        return self if isinstance(dtype, str) else self._cast(np.dtype(dtype))

    def state_dict(self):
        """An ordered mapping from dotted parameter names to tensors that share the parameters' memory.

        The tensors are detached; every name of a shared parameter is kept (as in PyTorch).
        """
        return OrderedDict((name, p.detach()) for name, p in self.named_parameters(remove_duplicate=False))

    def load_state_dict(self, state_dict, strict=True):
        """Copy values (numpy arrays, engine or torch tensors) into the parameters' memory by name.

        The parameters stay the same objects (an optimizer holding them keeps working) and
        tensors sharing their memory see the new values.
        """
        own = dict(self.named_parameters(remove_duplicate=False))
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        for name, value in state_dict.items():
            if name not in own:
                continue
            array = state_array(value, name)
            p = own[name]
            if array.shape != p.data.shape:
                raise ValueError(
                    f"load_state_dict: {name!r} has shape {array.shape} but the parameter has shape {p.data.shape}"
                )
            np.copyto(p.data, array, casting="unsafe")
            mark_modified(p)
        return missing, unexpected

    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, m in self._modules.items():
            lines.append(f"  ({name}): " + repr(m).replace("\n", "\n  "))
        return ("\n".join(lines) + "\n)") if self._modules else lines[0] + ")"
