"""``ge.autograd.Function``: operations with their own backward (and forward-mode) rules, as torch.autograd.Function.

A subclass defines static ``forward`` and ``backward`` (optionally ``setup_context`` and ``jvp``) and is
called through ``apply``::

    class Cube(ge.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x ** 3

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return 3 * x ** 2 * g

    y = Cube.apply(x)

How it sits in the engine's graph: ``apply`` records one node for the call, whose parents are the tensor
arguments and whose rules call the user's ``backward`` and ``jvp``, and one node per differentiable output
that forwards the output's cotangent (or tangent) to it.  The node's value is a placeholder; what flows into
it is a :class:`_PerOutput`, which holds each output's cotangent apart, so ``backward`` receives one gradient
per output (None or zeros for outputs no gradient reached, as torch's ``set_materialize_grads`` says).
"""
from __future__ import annotations

import contextlib
import functools
import inspect

import numpy as np

from ..core import MODE, Tensor, apply

_PLACEHOLDER = np.zeros((), dtype=np.float64)
_PLACEHOLDER.flags.writeable = False


class _Rule:
    """An op for the engine's ``apply`` and ``run_backward`` from outside the op table: a name and three rules.

    Its ``jvp(tangents, out, *inputs)`` takes every input's tangent at once, zeros where an input has none.
    """

    __slots__ = ("name", "forward", "vjp", "jvp", "saves_output")
    broadcasts = floating_result = False
    nondiff = ()

    def __init__(self, name, forward, vjp, jvp, saves_output=False):
        self.name, self.forward, self.vjp, self.jvp = name, forward, vjp, jvp
        self.saves_output = saves_output


class _PerOutput(Tensor):
    """The cotangents (or tangents) of a Function's outputs, by output index, on their way to the Function's node.

    Its value is the node's placeholder, so the engine passes it on unchanged; the engine sums the terms a
    node receives with ``+``, which for these gathers the outputs' entries.
    """

    __slots__ = ("parts",)

    def __init__(self, parts):
        super().__init__(_PLACEHOLDER)
        self.parts = parts

    def __add__(self, other):
        return _PerOutput({**self.parts, **other.parts})


class FunctionCtx:
    """The ``ctx`` that a Function's ``forward`` (or ``setup_context``), ``backward`` and ``jvp`` share.

    Any attribute may be set on it to pass values from forward to backward.
    """

    def __init__(self, needs_input_grad):
        #: One bool per argument of ``forward``: whether it is a tensor that requires grad.
        self.needs_input_grad = needs_input_grad
        self.materialize_grads = True
        self.to_save = ()
        self.saved_for_forward = ()
        self.non_differentiable = ()
        self._in_jvp = False

    def save_for_backward(self, *tensors):
        """Keep ``tensors`` (or None) for ``backward``, which reads them from :attr:`saved_tensors`.

        Outputs of ``forward`` saved here come back as the recorded outputs, so a backward written with
        engine ops differentiates through them (double backward).
        """
        self.to_save = _tensors_or_none(tensors, "save_for_backward")

    def save_for_forward(self, *tensors):
        """Keep ``tensors`` (or None) for ``jvp``, which reads them from :attr:`saved_tensors`."""
        self.saved_for_forward = _tensors_or_none(tensors, "save_for_forward")

    @property
    def saved_tensors(self):
        """The tensors given to ``save_for_backward`` (in ``jvp``: to ``save_for_forward``)."""
        return self.saved_for_forward if self._in_jvp else self.to_save

    def mark_non_differentiable(self, *tensors):
        """Mark outputs of ``forward`` as not differentiable: they do not require grad and get no tangent."""
        self.non_differentiable = _tensors_or_none(tensors, "mark_non_differentiable")

    def set_materialize_grads(self, value):
        """With False, ``backward`` gets None (not zeros) for the outputs no gradient reached."""
        self.materialize_grads = bool(value)


def _tensors_or_none(values, method):
    for value in values:
        if value is not None and not isinstance(value, Tensor):
            raise TypeError(f"{method} expects engine Tensors or None, got {type(value).__name__}; "
                            "keep other values as attributes of ctx")
    return values


_NO_BACKWARD = ("You must implement either the backward or vjp method for your custom autograd.Function to use it "
                "with backward mode AD.")
_NO_JVP = "You must implement the jvp function for custom autograd.Function to use it with forward mode AD."


class Function:
    """Base class of operations with custom derivative rules; call them with ``Fn.apply(*args)``.

    Subclasses define the static methods ``forward(ctx, *args, **kwargs)`` (or ``forward(*args, **kwargs)``
    with ``setup_context(ctx, inputs, output)``), ``backward(ctx, *grad_outputs)`` (alias ``vjp``), returning
    one gradient (or None) per argument of ``forward``, and, for forward mode, ``jvp(ctx, *tangents)``
    returning one tangent per output.  ``forward`` runs without recording a graph; its tensor outputs get
    the derivatives of ``backward`` and ``jvp``.
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        name = f"{cls.__name__}Backward"
        cls._node_rule = _Rule(name, _placeholder, _node_vjp, _node_jvp)
        # Its backward may read the outputs (save_for_backward): a change of one is refused, saved or not.
        cls._output_rule = _Rule(name, _output_value, _output_vjp, _output_jvp, saves_output=True)

    @staticmethod
    def forward(*args, **kwargs):
        """The operation; returns a tensor or a tuple (tensors and other values)."""
        raise NotImplementedError("You must implement the forward function for custom autograd.Function.")

    @staticmethod
    def setup_context(ctx, inputs, output):
        """Torch 2 style: save what backward needs, from ``forward``'s arguments and its output."""
        raise NotImplementedError("setup_context is not implemented.")

    @staticmethod
    def backward(ctx, *grad_outputs):
        """The gradients of the arguments of ``forward``, given those of its outputs (None for non-tensors)."""
        raise NotImplementedError(_NO_BACKWARD)

    vjp = backward

    @staticmethod
    def jvp(ctx, *tangents):
        """The tangents of the outputs, given one per argument of ``forward`` (None for non-tensors)."""
        raise NotImplementedError(_NO_JVP)

    @classmethod
    def apply(cls, *args, **kwargs):
        """Run ``forward`` on ``args`` and record the call so that derivatives go through ``backward`` / ``jvp``."""
        split_setup = cls.setup_context is not Function.setup_context
        if split_setup:
            bound = inspect.signature(cls.forward).bind(*args, **kwargs)
            bound.apply_defaults()
            args, kwargs = bound.args, bound.kwargs
        ctx = FunctionCtx(tuple(isinstance(a, Tensor) and a.requires_grad for a in args))
        with _untraced():
            if split_setup:
                output = cls.forward(*args, **kwargs)
                cls.setup_context(ctx, args, output)
            else:
                output = cls.forward(ctx, *args, **kwargs)
        outputs = output if isinstance(output, tuple) else (output,)
        results = _Call(cls, ctx, args, outputs).record(args, outputs)
        return tuple(results) if isinstance(output, tuple) else results[0]


@contextlib.contextmanager
def _untraced():
    """Neither graph recording nor forward tangents: ``forward`` is the Function's, its ops are not."""
    saved = MODE.grad_enabled, MODE.forward_levels
    MODE.grad_enabled, MODE.forward_levels = False, ()
    try:
        yield
    finally:
        MODE.grad_enabled, MODE.forward_levels = saved


class _Call:
    """One call of a Function: what its node's rules need to call the user's ``backward`` and ``jvp``."""

    def __init__(self, cls, ctx, args, outputs):
        self.cls, self.ctx, self.name = cls, ctx, cls._node_rule.name
        self.n_args = len(args)
        self.tensor_args = [i for i, a in enumerate(args) if isinstance(a, Tensor)]
        # (shape, dtype) per tensor output, for the zeros of outputs no gradient reached; None for other values.
        self.output_specs = [(y.array.shape, y.array.dtype) if isinstance(y, Tensor) else None for y in outputs]

    def record(self, args, outputs):
        """``outputs`` with the differentiable tensors recorded behind one node for the call."""
        node = apply(self.cls._node_rule, tuple(args[i] for i in self.tensor_args), {"call": self})
        skipped = {id(t) for t in self.ctx.non_differentiable if t is not None}
        results, recorded = [], {}
        for i, y in enumerate(outputs):
            if isinstance(y, Tensor):
                recorded[id(y)] = y = (y.detach() if id(y) in skipped
                                       else apply(self.cls._output_rule, (node,), {"index": i, "value": y.array}))
            results.append(y)
        self.ctx.to_save = tuple(recorded.get(id(t), t) for t in self.ctx.to_save)
        return results

    def backward(self, parts, inputs):
        """The cotangents of the tensor arguments: the user's ``backward`` on the outputs' cotangents, checked."""
        materialize = self.ctx.materialize_grads
        grad_outputs = [Tensor(np.zeros(*spec)) if parts.get(i) is None and spec and materialize else parts.get(i)
                        for i, spec in enumerate(self.output_specs)]
        cls = self.cls
        if cls.vjp is Function.vjp and cls.backward is Function.backward:
            raise NotImplementedError(f"{cls.__name__}: {_NO_BACKWARD}")
        grads = (cls.vjp if cls.vjp is not Function.vjp else cls.backward)(self.ctx, *grad_outputs)
        grads = grads if isinstance(grads, tuple) else (grads,)
        if len(grads) < self.n_args or any(g is not None for g in grads[self.n_args:]):
            raise RuntimeError(f"function {self.name} returned an incorrect number of gradients (expected "
                               f"{self.n_args}, got {len(grads)})")
        for i, g in enumerate(grads[:self.n_args]):
            if g is not None and not isinstance(g, Tensor):
                raise RuntimeError(f"function {self.name} returned a {type(g).__name__} as the gradient of "
                                   f"argument {i}; expected an engine Tensor or None")
            if g is not None and i not in self.tensor_args:
                raise RuntimeError(f"function {self.name} returned a gradient different than None at position "
                                   f"{i + 1}, but the corresponding forward input was not a Tensor")
        return tuple(self._checked(i, grads[i], x) for i, x in zip(self.tensor_args, inputs))

    def _checked(self, i, g, x):
        """``g`` as the cotangent of argument ``i`` (tensor ``x``): None unless ``x`` requires grad."""
        if g is None or not x.requires_grad:
            return None
        shape, wanted = g.array.shape, x.array.shape
        if shape != wanted and not _reduces_to(shape, wanted):
            raise RuntimeError(f"Function {self.name} returned an invalid gradient at index {i} - got {list(shape)} "
                               f"but expected shape compatible with {list(wanted)}")
        return g

    def jvp(self, tangents):
        """The outputs' tangents by index: the user's ``jvp`` on one tangent per argument (the engine gives
        zeros where a tensor argument has none)."""
        if self.cls.jvp is Function.jvp:
            raise NotImplementedError(f"{self.cls.__name__}: {_NO_JVP}")
        arg_tangents = [None] * self.n_args
        for i, t in zip(self.tensor_args, tangents):
            arg_tangents[i] = t
        self.ctx._in_jvp = True
        try:
            result = self.cls.jvp(self.ctx, *arg_tangents)
        finally:
            self.ctx._in_jvp = False
        result = result if isinstance(result, tuple) else (result,)
        if len(result) != len(self.output_specs):
            raise RuntimeError(f"function {self.cls.__name__}.jvp returned an incorrect number of tangents "
                               f"(expected {len(self.output_specs)}, got {len(result)})")
        return dict(enumerate(result))


def _reduces_to(shape, target):
    """Whether a gradient of ``shape`` sums down to ``target`` (``target`` broadcasts to ``shape``)."""
    try:
        return np.broadcast_shapes(target, shape) == shape
    except ValueError:
        return False


# The rules of a call's node (parents: the tensor arguments) and of its outputs (parent: the node).
def _placeholder(*arrays, call):
    return _PLACEHOLDER


def _node_vjp(g, node, *inputs, call):
    return call.backward(g.parts, inputs)


def _node_jvp(tangents, node, *inputs, call):
    return _PerOutput(call.jvp(tangents))


def _output_value(node, index, value):
    return value


def _output_vjp(g, out, node, index, value):
    return (_PerOutput({index: g}),)


def _output_jvp(tangents, out, node, index, value):
    return tangents[0].parts.get(index)


_TWICE = "trying to differentiate twice a function that was marked with @once_differentiable"


def _differentiated_twice(*args, **kwargs):
    raise RuntimeError(_TWICE)


_DELAYED_ERROR = _Rule("DelayedError", lambda x: x, _differentiated_twice, _differentiated_twice)


def once_differentiable(backward):
    """Decorate a ``backward`` that cannot be differentiated (numpy code, say), as torch's once_differentiable.

    It runs without recording; when a graph was asked for (``create_graph``), its gradients require grad
    but differentiating them raises.
    """

    @functools.wraps(backward)
    def wrapper(ctx, *grad_outputs):
        with _untraced():
            grads = backward(ctx, *grad_outputs)
        if not MODE.grad_enabled or not any(isinstance(g, Tensor) and g.requires_grad for g in grad_outputs):
            return grads
        grads = grads if isinstance(grads, tuple) else (grads,)
        return tuple(apply(_DELAYED_ERROR, (Tensor(g.array, requires_grad=True),)) if isinstance(g, Tensor) else g
                     for g in grads)

    return wrapper
