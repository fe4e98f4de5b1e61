"""Engines a campaign can put under test (its *target*), and how their derivatives are taken.

An :class:`Adapter` maps the graph IR's ops (:data:`gradverify.ops.TABLE`) onto
one engine's arrays and asks that engine for a graph's derivatives.  The
campaign checks the target's derivatives; the other libraries (the in-house
engine, PyTorch, JAX, numpy and mpmath) stay oracles.  Built in:
``engine``, ``torch`` and ``jax``; any other engine plugs in as
``module:Class`` (:func:`load`), e.g. :mod:`gradverify.fuzz.hips_autograd`.

A minimal adapter implements :meth:`Adapter.op`, :meth:`Adapter.const`,
:meth:`Adapter.value`, :meth:`Adapter.vjp` and :meth:`Adapter.jvp`; with
:meth:`Adapter.hvp` (and ``second_order = True``) the Hessian oracles run
too.  Inputs, cotangents and tangents arrive as numpy arrays, and every
derivative goes back as numpy arrays.
"""
from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass

import numpy as np

from gradverify.fuzz.backends import Ops, namespace

BUILT_IN = ("engine", "torch", "jax")


@dataclass
class Derivatives:
    """One library's output and derivatives at a point (numpy arrays; ``hvp`` per input)."""

    value: np.ndarray
    vjp: list
    jvp: np.ndarray
    hvp: list = None
    hvp_forward: list = None


def _identity(x, dtype):
    return x


class Adapter:
    """An engine's view of the graph IR: its op functions, and its derivatives of a graph.

    Subclasses set ``name`` and implement the five methods below that raise
    NotImplementedError; ``second_order = True`` with :meth:`hvp` adds the
    Hessian-vector oracles.  A graph is a Python function ``f(*inputs)`` of
    native arrays calling the ops by name (:meth:`bind` makes it from the IR).
    """

    name = "adapter"
    second_order = False

    def op(self, name: str):
        """The function computing table op ``name`` on native arrays, with the table's signature
        ``fn(*arrays, **attrs)`` (e.g. ``sum(x, axis=None, keepdims=False)``)."""
        raise NotImplementedError

    def const(self, array: np.ndarray):
        """A native constant holding ``array`` (class indices, conditions, targets)."""
        raise NotImplementedError

    def value(self, x) -> float:
        """The Python float of a one-element native value (decides a branch of the graph)."""
        raise NotImplementedError

    def vjp(self, fn, inputs: list, cotangent: np.ndarray):
        """``(output, grads)``: ``fn`` at ``inputs`` and ``J^T cotangent``, one gradient per input."""
        raise NotImplementedError

    def jvp(self, fn, inputs: list, tangents: list):
        """``(output, J tangents)`` of ``fn`` at ``inputs``."""
        raise NotImplementedError

    def hvp(self, fn, inputs: list, cotangent: np.ndarray, tangents: list, forward: bool = False) -> list:
        """``H u`` of ``<cotangent, fn>`` per input, reverse-over-reverse (forward-over-reverse when ``forward``)."""
        raise NotImplementedError(f"{self.name} has no second-order derivatives")

    def surface(self):
        """The public-API functions graphs may call (:mod:`gradverify.fuzz.surface`) on this engine's arrays;
        None: numpy's :class:`~gradverify.fuzz.surface.ArraySurface`."""
        return None

    def namespace(self, exact: bool = False) -> Ops:
        """The ops of this engine; ``exact`` makes ``astype`` the identity (the graph's mathematical function)."""
        lookup = (lambda name: _identity if name == "astype" else self.op(name)) if exact else self.op
        ops = Ops(self.name + (" (exact)" if exact else ""), lookup, self.const, self.value)
        if self.surface() is not None:
            ops.surface = self.surface()
        return ops

    def bind(self, graph_fn, exact: bool = False):
        """The compiled graph ``graph_fn(ops, *inputs)`` as a function of native inputs on this engine."""
        ops = self.namespace(exact)
        return lambda *inputs: graph_fn(ops, *inputs)

    def derivatives(self, graph_fn, inputs, cotangent, tangents, second_order=True, forward_over_reverse=False,
                    exact=False) -> Derivatives:
        """Output, ``J^T v``, ``J u`` and (when asked and available) ``H u`` of the compiled graph."""
        fn = self.bind(graph_fn, exact)
        inputs, tangents = list(inputs), list(tangents)
        value, vjp = self.vjp(fn, inputs, cotangent)
        _, jvp = self.jvp(fn, inputs, tangents)
        result = Derivatives(np.asarray(value), [np.asarray(g) for g in vjp], np.asarray(jvp))
        if second_order and self.second_order:
            result.hvp = self.hvp(fn, inputs, cotangent, tangents)
            if forward_over_reverse:
                result.hvp_forward = self.hvp(fn, inputs, cotangent, tangents, forward=True)
        return result

    def __repr__(self):
        return f"<gradverify fuzz target {self.name}>"


class CheckerAdapter(Adapter):
    """A built-in library: the checker's backend (:mod:`gradverify.check.backends`) and the fuzzer's namespace.

    ``library`` names the built-in library (a subclass may rename the target and replace some ops).
    """

    second_order = True
    library = "engine"

    def __init__(self):
        from gradverify.check import backends

        self.backend = {"engine": backends.EngineBackend, "torch": backends.TorchBackend,
                        "jax": backends.JaxBackend}[self.library]()

    def op(self, name):
        return getattr(namespace(self.library), name)

    def const(self, array):
        return namespace(self.library).const(array)

    def value(self, x):
        return namespace(self.library).value(x)

    def vjp(self, fn, inputs, cotangent):
        (value,), grads = self.backend.vjp(fn, inputs, [cotangent])
        return value, grads

    def jvp(self, fn, inputs, tangents):
        (value,), (tangent_output,) = self.backend.jvp(fn, inputs, tangents)
        return value, tangent_output

    def hvp(self, fn, inputs, cotangent, tangents, forward=False):
        gradient_fn = self.backend.derivative_function(fn, [cotangent])
        if forward:
            return self.backend.jvp(gradient_fn, inputs, tangents)[1]
        return self.backend.vjp(gradient_fn, inputs, tangents)[1]


class EngineAdapter(CheckerAdapter):
    """gradverify's own engine (``--target engine``, the default)."""

    name = library = "engine"


class TorchAdapter(CheckerAdapter):
    """PyTorch: ``reference_impls.torch_ops`` through torch.autograd and forward-mode AD."""

    name = library = "torch"


class _Decisions:
    """Replays a graph's recorded branch decisions: ``value(x) > threshold`` answers from the record.

    A traced JAX value cannot decide a Python ``if``; the decisions of one
    concrete run of the graph (on numpy) fix the path that is compiled.
    """

    def __init__(self, decisions):
        self.decisions = decisions
        self.position = 0

    def rewind(self):
        self.position = 0

    def value(self, x):
        return self

    def _next(self, other):
        decision = self.decisions[self.position]
        self.position += 1
        return decision

    __gt__ = __lt__ = __ge__ = __le__ = _next


class _Recorder(float):
    """A branch value that records the outcome of each comparison made with it."""

    log: list

    def _compare(self, other, op):
        decision = bool(getattr(float(self), op)(other))
        self.log.append(decision)
        return decision

    def __gt__(self, other):
        return self._compare(other, "__gt__")

    def __lt__(self, other):
        return self._compare(other, "__lt__")

    def __ge__(self, other):
        return self._compare(other, "__ge__")

    def __le__(self, other):
        return self._compare(other, "__le__")


def branch_decisions(graph_fn, inputs) -> tuple:
    """The outcomes, in order, of the graph's branch and loop tests at ``inputs`` (computed on numpy)."""
    log = []
    numpy_ops = namespace("numpy")

    def record(x):
        recorded = _Recorder(numpy_ops.value(x))
        recorded.log = log
        return recorded

    ops = Ops("numpy (recording)", numpy_ops._lookup, numpy_ops.const, record)
    with np.errstate(all="ignore"):
        graph_fn(ops, *[np.asarray(x) for x in inputs])
    return tuple(log)


FAST_COMPILE = {"xla_cpu_use_fusion_emitters": False, "xla_backend_optimization_level": 0}
"""XLA options for the campaign's programs: each runs a few times on tiny arrays, so compiling is nearly all
of its cost, and these cut XLA's compile time about threefold (results differ from the default pipeline only
by float rounding: fused or not)."""


@functools.lru_cache(maxsize=None)
def fast_compile_options() -> dict:
    """:data:`FAST_COMPILE`, or no options when this JAX/XLA does not know them (older releases)."""
    import jax

    try:
        jax.jit(lambda x: x + 1, compiler_options=FAST_COMPILE)(1.0)
    except Exception:  # noqa: BLE001  (TypeError from an old jit, an XLA error naming the unknown option)
        return {}
    return FAST_COMPILE


def _structure_key(graph_fn) -> tuple:
    code = graph_fn.__code__
    return code.co_code, code.co_consts, code.co_names, code.co_varnames


class JaxAdapter(CheckerAdapter):
    """JAX, compiled once per graph structure and path (``jax.jit``) and reused across inputs.

    Op by op, JAX compiles every primitive for every new shape; a random
    graph is mostly new shapes.  One ``jit`` program computes the output,
    ``J^T v``, ``J u`` and (when asked) both ``H u``: one compilation per
    graph, with :func:`fast_compile_options`, which the persistent cache
    (:mod:`gradverify.fuzz.jax_cache`) keeps across processes.
    """

    name = library = "jax"

    def __init__(self):
        super().__init__()
        self._programs = {}

    def derivatives(self, graph_fn, inputs, cotangent, tangents, second_order=True, forward_over_reverse=False,
                    exact=False) -> Derivatives:
        import jax

        decisions = branch_decisions(graph_fn, inputs)
        key = (_structure_key(graph_fn), decisions, exact, second_order, forward_over_reverse)
        if key not in self._programs:
            self._programs[key] = jax.jit(self._program(graph_fn, decisions, exact, second_order,
                                                        forward_over_reverse),
                                          compiler_options=fast_compile_options() or None)
        backend = self.backend
        with backend.precision(inputs):
            outputs = self._programs[key]([backend._to_native(np.asarray(x)) for x in inputs],
                                          backend._to_native(np.asarray(cotangent)),
                                          [backend._to_native(np.asarray(u)) for u in tangents])
            value, vjp, jvp, hvp, hvp_forward = outputs

            def arrays(values):
                return None if values is None else [np.asarray(x) for x in values]

            return Derivatives(np.asarray(value), arrays(vjp), np.asarray(jvp), arrays(hvp), arrays(hvp_forward))

    def _program(self, graph_fn, decisions, exact, second_order, forward_over_reverse):
        import jax

        replay = _Decisions(decisions)
        base = self.namespace(exact)
        ops = Ops(base.name, base._lookup, base.const, replay.value)

        def f(*xs):
            replay.rewind()
            return graph_fn(ops, *xs)

        def program(xs, cotangent, tangents):
            value, pullback = jax.vjp(f, *xs)
            cotangent = cotangent.astype(value.dtype)
            vjp = pullback(cotangent)
            _, jvp = jax.jvp(f, tuple(xs), tuple(tangents))
            hvp = hvp_forward = None
            if second_order:
                def gradient(*ys):
                    out, pull = jax.vjp(f, *ys)
                    return pull(cotangent)

                hvp = jax.vjp(gradient, *xs)[1](tuple(tangents))
                if forward_over_reverse:
                    hvp_forward = jax.jvp(gradient, tuple(xs), tuple(tangents))[1]
            return value, vjp, jvp, hvp, hvp_forward

        return program


_CLASSES = {"engine": EngineAdapter, "torch": TorchAdapter, "jax": JaxAdapter}


@functools.lru_cache(maxsize=None)
def load(spec: str) -> Adapter:
    """The adapter named by ``spec``: ``engine``, ``torch``, ``jax`` or ``module:Class`` (one instance per spec).

    ValueError names what was expected when ``spec`` is malformed or does not
    lead to an :class:`Adapter` subclass.
    """
    if spec in _CLASSES:
        return _CLASSES[spec]()
    module_name, _, class_name = spec.partition(":")
    if not module_name or not class_name:
        raise ValueError(f"target: expected engine, torch, jax or module:Class, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"target: cannot import module {module_name!r} ({error})") from None
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        raise ValueError(f"target: {spec!r} is not a subclass of gradverify.fuzz.adapters.Adapter")
    return cls()


def get(target) -> Adapter:
    """``target`` itself when it is an :class:`Adapter`, else :func:`load` of the spec."""
    return target if isinstance(target, Adapter) else load(target)
