"""``Module`` and ``Parameter``: the torch.nn container model on engine tensors."""
from __future__ import annotations

import itertools
from collections import OrderedDict

import numpy as np

from .. import devices
from ..autograd.function import Function
from ..core import Tensor, is_floating, mark_modified
from ..grad_mode import is_grad_enabled


class Parameter(Tensor):
    """A tensor that a :class:`Module` registers as trainable (requires grad by default)."""

    __slots__ = ()

    def __init__(self, data, requires_grad=True):
        if isinstance(data, Tensor):
            data = data.array
        super().__init__(np.array(data, copy=True), requires_grad=requires_grad)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


def state_array(value, name):
    """A numpy array from an engine tensor, a torch tensor or anything array-like."""
    if isinstance(value, Tensor):
        return value.array
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
            p.grad = Tensor(np.zeros_like(p.array))  # a create_graph gradient: torch detaches it first
        else:
            p.grad.array.fill(0)  # in place, as torch: a reference to .grad sees the zeros
            mark_modified(p.grad)


class RemovableHandle:
    """What a module's ``register_forward_pre_hook``/``register_forward_hook`` returns: ``remove()`` unregisters
    the hook (a second call does nothing)."""

    _ids = itertools.count()

    def __init__(self, hooks):
        self._hooks, self.id = hooks, next(self._ids)

    def remove(self):
        self._hooks.pop(self.id, None)


def _registered(hooks, hook, prepend):
    """Add ``hook`` to the ordered ``hooks`` (first if ``prepend``) and return its handle."""
    if not callable(hook):
        raise TypeError(f"hook: expected a callable, got {type(hook).__name__}")
    handle = RemovableHandle(hooks)
    hooks[handle.id] = hook
    if prepend:
        hooks.move_to_end(handle.id, last=False)
    return handle


class _HookedIdentity(Function):
    """Identity on its tensor arguments whose backward hands their cotangents, all at once, to ``on_backward``
    (a function from the tuple of cotangents to the tuple passed on)."""

    @staticmethod
    def forward(ctx, on_backward, *tensors):
        ctx.on_backward = on_backward
        ctx.set_materialize_grads(False)
        return tensors

    @staticmethod
    def backward(ctx, *grads):
        return (None,) + tuple(ctx.on_backward(grads))


class _BackwardHookCall:
    """One call of a module with full backward hooks, as torch's: the positional tensor inputs that require grad
    pass through one :class:`_HookedIdentity` before ``forward``, the output's tensors through another after the
    forward hooks; the hooks run when the inputs' cotangents are known (when the output's are, if no input
    requires grad) and may replace them."""

    def __init__(self, module):
        self.module, self.grad_output = module, ()

    def inputs(self, args):
        """``args`` with the tensors that require grad rerouted through the input identity."""
        self.n_args, self.positions = len(args), _needing_grad(args)
        return tuple(_rerouted(args, self.positions, self._on_inputs))

    def output(self, output):
        """``output`` (a tensor or a tuple) with its tensors that require grad rerouted through the output identity."""
        values = output if isinstance(output, tuple) else (output,)
        self.n_outputs, self.output_positions = len(values), _needing_grad(values)
        values = _rerouted(values, self.output_positions, self._on_output)
        return tuple(values) if isinstance(output, tuple) else values[0]

    def _on_output(self, grads):
        self.grad_output = _placed(grads, self.output_positions, self.n_outputs)
        if not self.positions:
            self._run_hooks((None,) * self.n_args)
        return grads

    def _on_inputs(self, grads):
        grad_input = self._run_hooks(_placed(grads, self.positions, self.n_args))
        return tuple(grad_input[k] for k in self.positions)

    def _run_hooks(self, grad_input):
        for hook in list(self.module._backward_hooks.values()):
            replacement = hook(self.module, grad_input, self.grad_output)
            if replacement is None:
                continue
            replacement = tuple(replacement) if isinstance(replacement, (tuple, list)) else (replacement,)
            if len(replacement) != len(grad_input):
                raise RuntimeError(f"backward hook {getattr(hook, '__name__', hook)!r} returned {len(replacement)} "
                                   f"gradients; expected {len(grad_input)}, one per positional input")
            grad_input = replacement
        return grad_input


def _needing_grad(values):
    return [k for k, value in enumerate(values) if isinstance(value, Tensor) and value.requires_grad]


def _rerouted(values, positions, on_backward):
    """``values`` as a list, those at ``positions`` passed through one :class:`_HookedIdentity` calling
    ``on_backward``."""
    values = list(values)
    if positions:
        for k, tensor in zip(positions, _HookedIdentity.apply(on_backward, *(values[k] for k in positions))):
            values[k] = tensor
    return values


def _placed(values, positions, size):
    """A tuple of ``size`` entries holding ``values`` at ``positions`` and None elsewhere."""
    placed = [None] * size
    for k, value in zip(positions, values):
        placed[k] = value
    return tuple(placed)


def _check_member_name(kind, name, owner, registry):
    """Refuse, as torch does, a name that is not a str, is empty, holds a dot, or is taken by something else."""
    if not isinstance(name, str):
        raise TypeError(f"{kind} name: expected a str, got {type(name).__name__}")
    if not name or "." in name:
        raise KeyError(f"{kind} name: must be non-empty and contain no '.', got {name!r}")
    if hasattr(owner, name) and name not in registry:
        raise KeyError(f"{kind} name: attribute {name!r} already exists")


class Module:
    """Base class of layers and models, as ``torch.nn.Module``.

    Assigning a :class:`Parameter` or a :class:`Module` to an attribute
    registers it, so ``parameters()``, ``state_dict()`` and ``zero_grad()``
    find it; ``register_buffer`` registers state that is saved but not trained.
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent_buffers", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "_forward_pre_hooks", OrderedDict())
        object.__setattr__(self, "_forward_hooks", OrderedDict())
        object.__setattr__(self, "_backward_hooks", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError("call super().__init__() in your Module's __init__ before assigning attributes")
        if name in self._buffers and (value is None or isinstance(value, Tensor)) and not isinstance(value, Parameter):
            self._buffers[name] = value  # assigning to a buffer replaces its value, as torch
        elif name in self._parameters and value is None:
            self._parameters[name] = None
        else:
            self._forget(name)
            if isinstance(value, Parameter):
                self._parameters[name] = value
            elif isinstance(value, Module):
                self._modules[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        self._forget(name)
        object.__delattr__(self, name)

    def _forget(self, name):
        self._parameters.pop(name, None)
        self._buffers.pop(name, None)
        self._non_persistent_buffers.discard(name)
        self._modules.pop(name, None)

    def register_buffer(self, name, tensor, persistent=True):
        """Register ``tensor`` (or None) as a buffer: in ``state_dict()`` unless not ``persistent``, cast by
        ``double()``/``float()``, but not a parameter."""
        if "_buffers" not in self.__dict__:
            raise AttributeError("call super().__init__() in your Module's __init__ before register_buffer()")
        _check_member_name("buffer", name, self, self._buffers)
        if tensor is not None and (not isinstance(tensor, Tensor) or isinstance(tensor, Parameter)):
            raise TypeError(f"tensor: expected a Tensor (not a Parameter) or None, got {type(tensor).__name__}")
        self._forget(name)
        self._buffers[name] = tensor
        if not persistent:
            self._non_persistent_buffers.add(name)
        object.__setattr__(self, name, tensor)

    def register_parameter(self, name, param):
        """Register ``param`` (a :class:`Parameter`, or None for an absent one such as ``bias=False``) as ``name``."""
        if "_parameters" not in self.__dict__:
            raise AttributeError("call super().__init__() in your Module's __init__ before register_parameter()")
        _check_member_name("parameter", name, self, self._parameters)
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"param: expected a Parameter or None, got {type(param).__name__}")
        self._forget(name)
        self._parameters[name] = param
        object.__setattr__(self, name, param)

    def add_module(self, name, module):
        """Register ``module`` (or None) as the child ``name``."""
        _check_member_name("module", name, self, self._modules)
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"module: expected a Module or None, got {type(module).__name__}")
        self._forget(name)
        self._modules[name] = module
        object.__setattr__(self, name, module)

    register_module = add_module

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args, **kwargs):
        for hook in list(self._forward_pre_hooks.values()):
            replacement = hook(self, args)
            if replacement is not None:
                args = replacement if isinstance(replacement, tuple) else (replacement,)
        backward_hooks = _BackwardHookCall(self) if self._backward_hooks and is_grad_enabled() else None
        if backward_hooks is not None:
            args = backward_hooks.inputs(args)
        output = self.forward(*args, **kwargs)
        for hook in list(self._forward_hooks.values()):
            replacement = hook(self, args, output)
            if replacement is not None:
                output = replacement
        return output if backward_hooks is None else backward_hooks.output(output)

    def register_forward_pre_hook(self, hook, *, prepend=False):
        """Call ``hook(module, args)`` before each ``forward``; a returned value (a tuple, or one value that is
        wrapped in one) replaces the positional arguments.  Returns a handle whose ``remove()`` unregisters it."""
        return _registered(self._forward_pre_hooks, hook, prepend)

    def register_forward_hook(self, hook, *, prepend=False):
        """Call ``hook(module, args, output)`` after each ``forward``; a returned value other than None replaces
        the output.  Returns a handle whose ``remove()`` unregisters it."""
        return _registered(self._forward_hooks, hook, prepend)

    def register_full_backward_hook(self, hook, *, prepend=False):
        """Call ``hook(module, grad_input, grad_output)`` in the backward of each later call: ``grad_output``
        holds the cotangents of the output's tensors, ``grad_input`` those of the positional inputs (None for
        one that is no tensor or does not require grad); a returned tuple replaces ``grad_input``.  Returns a
        handle whose ``remove()`` unregisters it."""
        return _registered(self._backward_hooks, hook, prepend)

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
            if m is not None:
                yield from m.named_modules(memo, prefix + ("." if prefix else "") + name, remove_duplicate)

    def _named_members(self, members, prefix, recurse, remove_duplicate):
        modules = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse else [(prefix, self)]
        seen = set()
        for module_prefix, module in modules:
            for name, value in members(module):
                if value is None:
                    continue
                if remove_duplicate:
                    if id(value) in seen:
                        continue
                    seen.add(id(value))
                yield module_prefix + ("." if module_prefix else "") + name, value

    def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):
        """``(name, parameter)`` pairs, names dotted as in PyTorch (``fc1.weight``).

        A parameter shared by several modules (tied weights) is listed once, under its first name,
        so that an optimizer updates it once; ``remove_duplicate=False`` lists every occurrence.
        """
        return self._named_members(lambda m: m._parameters.items(), prefix, recurse, remove_duplicate)

    def parameters(self, recurse=True):
        return (p for _, p in self.named_parameters(recurse=recurse))

    def named_buffers(self, prefix="", recurse=True, remove_duplicate=True):
        """``(name, buffer)`` pairs, dotted like ``named_parameters``; None buffers are left out."""
        return self._named_members(lambda m: m._buffers.items(), prefix, recurse, remove_duplicate)

    def buffers(self, recurse=True):
        return (b for _, b in self.named_buffers(recurse=recurse))

    def named_children(self):
        """``(name, module)`` pairs of the direct children, each module once."""
        seen = set()
        for name, m in self._modules.items():
            if m is not None and id(m) not in seen:
                seen.add(id(m))
                yield name, m

    def children(self):
        return (m for _, m in self.named_children())

    def modules(self):
        return (m for _, m in self.named_modules())

    def apply(self, fn):
        """Call ``fn`` on every submodule (children first) and then on this module; return this module."""
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    def requires_grad_(self, requires_grad=True):
        """Set ``requires_grad`` of every parameter (e.g. False to freeze the module); return this module."""
        for p in self.parameters():
            p.requires_grad_(requires_grad)
        return self

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
            p.array = p.array.astype(dtype)
            if p.grad is not None:
                p.grad = Tensor(p.grad.array.astype(dtype))
        for b in self.buffers():
            if is_floating(b.array.dtype):
                b.array = b.array.astype(dtype)
        return self

    def double(self):
        """Convert every parameter and floating buffer to float64 in place."""
        return self._cast(np.float64)

    def float(self):
        """Convert every parameter and floating buffer to float32 in place."""
        return self._cast(np.float32)

    def to(self, *args, device=None, dtype=None, non_blocking=False):
        """As torch.nn.Module.to(device, dtype), to(dtype) or to(tensor): cast the floating parameters and buffers
        to ``dtype``; the device must be the CPU (another raises, naming it).  Returns this module."""
        for arg in args:
            if isinstance(arg, Tensor):
                dtype = arg.dtype
            elif isinstance(arg, (str, devices.device)):
                device = arg
            elif isinstance(arg, bool):
                non_blocking = arg
            else:
                dtype = arg
        devices.check_device(device)
        return self if dtype is None else self._cast(np.dtype(dtype))

    def cpu(self):
        return self

    def cuda(self, device=None):
        """Raises, naming the device, as torch does without CUDA: the engine has none."""
        devices.check_device("cuda" if device is None else f"cuda:{device}" if isinstance(device, int) else device)

    def _state_entries(self):
        """Every (name, tensor) that ``state_dict`` holds: per module its parameters, then persistent buffers."""
        for prefix, module in self.named_modules(remove_duplicate=False):
            dot = prefix + ("." if prefix else "")
            for name, p in module._parameters.items():
                if p is not None:
                    yield dot + name, p
            for name, b in module._buffers.items():
                if b is not None and name not in module._non_persistent_buffers:
                    yield dot + name, b

    def state_dict(self):
        """An ordered mapping from dotted parameter and buffer names to tensors that share their memory.

        The tensors are detached; every name of a shared parameter is kept (as in PyTorch).
        """
        return OrderedDict((name, t.detach()) for name, t in self._state_entries())

    def load_state_dict(self, state_dict, strict=True):
        """Copy values (numpy arrays, engine or torch tensors) into the parameters' and buffers' memory by name.

        The parameters stay the same objects (an optimizer holding them keeps working) and
        tensors sharing their memory see the new values.
        """
        own = dict(self._state_entries())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing keys {missing}, unexpected keys {unexpected}")
        for name, value in state_dict.items():
            if name not in own:
                continue
            array = state_array(value, name)
            p = own[name]
            if array.shape != p.array.shape:
                raise ValueError(
                    f"load_state_dict: {name!r} has shape {array.shape} but the parameter has shape {p.array.shape}"
                )
            np.copyto(p.array, array, casting="unsafe")
            mark_modified(p)
        return missing, unexpected

    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, m in self._modules.items():
            lines.append(f"  ({name}): " + repr(m).replace("\n", "\n  "))
        return ("\n".join(lines) + "\n)") if self._modules else lines[0] + ")"
