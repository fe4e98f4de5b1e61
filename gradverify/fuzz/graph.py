"""The graph IR of the fuzzer: random programs over the op table, printable as Python.

A :class:`Graph` is a DAG over the ops of :data:`gradverify.ops.TABLE`: several
inputs, nodes that may reuse any earlier value (fan-out), and two kinds of
data-dependent control flow (:class:`Branch` and :class:`Loop`) whose path is
decided by the values flowing through the graph, as in a dynamic computation
graph; a node may also call a composed function of the engine's public API
(:class:`ApiNode`, see :mod:`gradverify.fuzz.surface`).  The last node is
the output.

A graph is compiled by printing it as Python source (:meth:`Graph.to_python`)
and executing that source, so what runs is exactly what a reproducer shows.
The printed function takes an op namespace first: ``f(ops, x0, x1)`` calls
``ops.<op name>(...)`` with the table's signatures, ``ops.const(array)`` for
constants (class indices, conditions, targets) and ``ops.value(x)`` for the
Python float of a one-element value (the branch decisions).  Every backend
(engine, PyTorch, JAX, numpy, mpmath) provides such a namespace
(:mod:`gradverify.fuzz.backends`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import numpy as np

from gradverify.fuzz.surface import FUNCTIONS
from gradverify.ops import TABLE


@dataclass(frozen=True)
class Const:
    """A constant array argument: printed as a literal and wrapped by ``ops.const``."""

    array: np.ndarray

    def __eq__(self, other):
        return isinstance(other, Const) and self.array.dtype == other.array.dtype and np.array_equal(
            self.array, other.array
        )

    def __hash__(self):
        return hash((self.array.dtype.str, self.array.shape, self.array.tobytes()))


Arg = Union[int, Const, str, tuple, float, None]


@dataclass(frozen=True)
class OpNode:
    """``ops.<op>(*args, **attrs)``; an ``int`` argument is the index of an earlier value."""

    op: str
    args: tuple
    attrs: tuple = ()

    @property
    def ops_used(self) -> tuple:
        return (self.op,)

    @property
    def operands(self) -> tuple:
        return tuple(a for a in self.args if isinstance(a, int))

    def lines(self, out: str) -> list:
        return [f"{out} = {call(self.op, [arg_source(a) for a in self.args], self.attrs)}"]


@dataclass(frozen=True)
class Branch:
    """``out = then_op(operand) if sum(test) > threshold else else_op(operand)`` as Python control flow."""

    test: int
    operand: int
    threshold: float
    then_op: tuple  # (op name, attrs)
    else_op: tuple

    @property
    def ops_used(self) -> tuple:
        return ("sum", self.then_op[0], self.else_op[0])

    @property
    def operands(self) -> tuple:
        return (self.test, self.operand)

    def lines(self, out: str) -> list:
        then_name, then_attrs = self.then_op
        else_name, else_attrs = self.else_op
        return [
            f"if ops.value(ops.sum({value_name(self.test)})) > {self.threshold!r}:",
            f"    {out} = {call(then_name, [value_name(self.operand)], then_attrs)}",
            "else:",
            f"    {out} = {call(else_name, [value_name(self.operand)], else_attrs)}",
        ]


@dataclass(frozen=True)
class Loop:
    """Apply ``body`` to a value until its sum exceeds ``threshold`` (at most ``max_iters`` times).

    ``body`` is ``(op name, other, attrs)``: the op takes the loop value, then
    the earlier value ``other`` when it is not None (fan-out into the loop).
    """

    operand: int
    body: tuple
    threshold: float
    max_iters: int

    @property
    def ops_used(self) -> tuple:
        return ("sum", self.body[0])

    @property
    def operands(self) -> tuple:
        other = self.body[1]
        return (self.operand,) if other is None else (self.operand, other)

    def lines(self, out: str) -> list:
        name, other, attrs = self.body
        args = [out] if other is None else [out, value_name(other)]
        return [
            f"{out} = {value_name(self.operand)}",
            f"for _ in range({self.max_iters}):",
            f"    if ops.value(ops.sum({out})) > {self.threshold!r}:",
            "        break",
            f"    {out} = {call(name, args, attrs)}",
        ]


@dataclass(frozen=True)
class ApiNode:
    """``surface(ops).<function>(*args, **attrs)`` (a composed function of the public API), ``.field`` if given.

    ``function`` is one of :data:`gradverify.fuzz.surface.FUNCTIONS`; an
    ``int`` argument is the index of an earlier value.
    """

    function: str
    args: tuple
    attrs: tuple = ()
    field: str = ""

    @property
    def ops_used(self) -> tuple:
        return (f"api.{self.function}",)

    @property
    def operands(self) -> tuple:
        return tuple(a for a in self.args if isinstance(a, int))

    def lines(self, out: str) -> list:
        parts = [arg_source(a) for a in self.args] + [f"{key}={_attr_source(val)}" for key, val in self.attrs]
        return [f"{out} = surface(ops).{self.function}({', '.join(parts)})" + (f".{self.field}" if self.field else "")]


Node = Union[OpNode, Branch, Loop, ApiNode]


def _all_attrs(node) -> list:
    """Every attribute tuple a node passes to an op (a branch has two ops, a loop one)."""
    if isinstance(node, OpNode):
        return [node.attrs]
    if isinstance(node, Branch):
        return [node.then_op[1], node.else_op[1]]
    if isinstance(node, ApiNode):
        return [node.attrs]
    return [node.body[2]]


def value_name(index: int) -> str:
    """Name of value ``index`` (inputs and nodes share one numbering) in printed code."""
    return f"v{index}"


def arg_source(arg: Arg) -> str:
    """Source of one positional argument: a value's name or a wrapped constant."""
    if isinstance(arg, Const):
        return f"ops.const({literal(arg.array)})"
    return value_name(arg) if isinstance(arg, int) else literal(arg)  # (an API call's equation, shape, option)


def literal(value) -> str:
    """Python source that evaluates to ``value`` (numbers, strings, None, tuples, slices, arrays)."""
    if isinstance(value, np.ndarray):
        dtype = value.dtype.name
        body = repr(value.tolist())
        return f"np.array({body}, dtype=np.{dtype})"
    if isinstance(value, tuple):
        inner = ", ".join(literal(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    if isinstance(value, slice):
        return f"slice({value.start!r}, {value.stop!r}, {value.step!r})"
    if isinstance(value, (np.floating, np.integer)):
        return repr(value.item())
    return repr(value)


def _attr_source(value) -> str:
    """Source of a keyword argument: a literal, or a wrapped constant (a tensor option such as ``pos_weight``)."""
    return arg_source(value) if isinstance(value, Const) else literal(value)


def call(op: str, arg_sources: list, attrs: tuple) -> str:
    """Source of one op call ``ops.<op>(args..., key=value...)``."""
    parts = list(arg_sources) + [f"{key}={literal(val)}" for key, val in attrs]
    return f"ops.{op}({', '.join(parts)})"


def function_source(signature: str, doc: str, body: list) -> str:
    """Source of ``def <signature>:`` with docstring ``doc`` and the lines of ``body``."""
    return "\n".join([f"def {signature}:", f'    """{doc}"""'] + ["    " + line for line in body]) + "\n"


def defined(source: str, name: str, label: str):
    """The function ``name`` that Python ``source`` defines (run with numpy as ``np``; ``label`` in tracebacks)."""
    namespace = {"np": np}
    exec(compile(source, label, "exec"), namespace)  # noqa: S102
    return namespace[name]


@dataclass(frozen=True)
class Graph:
    """Inputs (shapes, one floating dtype) and nodes; values are numbered inputs first, then nodes."""

    input_shapes: tuple
    dtype: str
    nodes: tuple

    def __post_init__(self):
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype: expected 'float32' or 'float64', got {self.dtype!r}")
        if not self.nodes:
            raise ValueError("nodes: a graph needs at least one node (the output)")
        for k, node in enumerate(self.nodes):
            limit = len(self.input_shapes) + k
            for operand in node.operands:
                if not 0 <= operand < limit:
                    raise ValueError(f"nodes[{k}] reads value {operand}, which is not defined before it")
            for name in node.ops_used:
                if name.startswith("api."):
                    if name[4:] not in FUNCTIONS:
                        raise ValueError(f"nodes[{k}] calls {name[4:]!r}, which is not a function of the surface")
                elif name not in TABLE:
                    raise ValueError(f"nodes[{k}] uses {name!r}, which is not an op of the table")

    @property
    def n_inputs(self) -> int:
        return len(self.input_shapes)

    @property
    def output(self) -> int:
        return self.n_inputs + len(self.nodes) - 1

    def live_nodes(self) -> list:
        """Indices (into ``nodes``) of the nodes the output depends on."""
        needed = {self.output}
        live = []
        for k in range(len(self.nodes) - 1, -1, -1):
            index = self.n_inputs + k
            if index in needed:
                live.append(k)
                needed.update(self.nodes[k].operands)
        return live[::-1]

    @property
    def precision(self) -> str:
        """The lowest floating precision any value of the graph is stored in (an ``astype`` may lower it)."""
        lowered = any(("dtype", "float32") in attrs for node in self.nodes for attrs in _all_attrs(node))
        return "float32" if lowered else self.dtype

    def ops_covered(self) -> set:
        """Names of the table ops on the path to the output."""
        return {name for k in self.live_nodes() for name in self.nodes[k].ops_used}

    def to_python(self, name: str = "f") -> str:
        """Standalone source of ``def f(ops, v0, v1, ...)`` returning the output value."""
        params = ", ".join(["ops"] + [value_name(i) for i in range(self.n_inputs)])
        body = ["from gradverify.fuzz.surface import surface"] if any(isinstance(n, ApiNode) for n in self.nodes) else []
        for k, node in enumerate(self.nodes):
            body.extend(node.lines(value_name(self.n_inputs + k)))
        body.append(f"return {value_name(self.output)}")
        shapes = ", ".join(str(s) for s in self.input_shapes)
        return function_source(f"{name}({params})", f"A {self.dtype} graph of {len(self.nodes)} nodes; input "
                               f"shapes {shapes}.", body)

    def compile(self):
        """The graph as a Python function ``f(ops, *inputs)`` (executed from :meth:`to_python`)."""
        return defined(self.to_python(), "f", "<gradverify fuzz graph>")

    def __len__(self):
        return len(self.nodes)
