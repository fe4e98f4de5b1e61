"""Stateful programs for the fuzzer: training steps run on the engine and on PyTorch, every observable compared.

A :class:`Program` is a short training run: an ``nn.Sequential`` of Linear
layers (and an activation) with given float64 parameters, a loss module with
its options (reduction, class weights, label smoothing, pos_weight, beta), an
optimizer (SGD with momentum, dampening, Nesterov, weight decay; Adam or
AdamW, AMSGrad) and a few steps: a training step (``zero_grad`` or
accumulation into ``.grad``, a second backward with ``retain_graph=True``, or
one after the graph was freed, a gradient hook that scales, replaces or only
observes), an in-place update of a parameter under ``no_grad``, and an
in-place change of a tensor in the graph (one that a later backward reads
back must raise, as PyTorch's version counters make it).

Like a :class:`~gradverify.fuzz.graph.Graph`, a program is printed as Python
(:meth:`Program.to_python`, ``def program(torch, record)``) and that source
runs on the engine (``gradverify.engine`` passed as ``torch``) and on PyTorch,
PyTorch being the oracle.  ``record(observable, value)`` notes the loss, the
gradients (``.grad`` and what hooks see), the parameters after each step, and
each error a step raised (by kind); :func:`check_program` compares the two
runs observable by observable.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gradverify.fuzz.graph import defined, function_source, literal

OBSERVABLES = ("loss", "grad", "params", "error")
ORACLE_OF = {observable: f"program_{observable}" for observable in OBSERVABLES}
"""The oracle named in a finding: PyTorch's run of the program, per observable that differed."""
RTOL = 1e-6
"""Relative to an array's largest entry: Adam divides by sqrt(v), so a gradient computed with cancellation
carries its rounding into the step at about this level; every mutant moves an observable by far more."""
FOCUSES = ("sgd_momentum", "adam", "inplace", "accumulation", "hook", "loss_options")
"""What a focused draw (``program.<focus>``) makes sure a program exercises."""


@dataclass(frozen=True)
class Train:
    """One training step: ``zero_grad`` (or accumulate), forward, loss, backward(s), then ``optimizer.step()``.

    ``backward`` is ``"once"``, ``"retained"`` (a second backward after ``retain_graph=True``: the gradients
    add up) or ``"freed"`` (a second backward after the graph was freed: RuntimeError); ``hook`` is None or
    ``(where, kind, factor)``: on the model's output or on parameter ``where``, a hook that scales the
    gradient, replaces it by ``factor`` everywhere, or only observes it (``kind`` ``scale``/``replace``/``observe``).
    ``inplace`` is None or ``(method, args, saved)``: the model's output is changed in place before the loss
    (``saved``: after ``sin`` read it, so the backward must raise).
    """

    zero_grad: bool = True
    backward: str = "once"
    hook: tuple = None
    inplace: tuple = None

    def lines(self, sum_loss=False) -> list:
        """Source lines; ``sum_loss`` sums a loss left unreduced (``reduction='none'``)."""
        lines = ["optimizer.zero_grad()"] if self.zero_grad else []
        lines.append("out = model(x)")
        if self.inplace is not None:
            method, args, saved = self.inplace
            if saved:
                lines.append("read = torch.sin(out)")
            lines.append(f"out.{method}({', '.join(literal(a) for a in args)})")
            if saved:
                lines.append("out = read")
        backward = ["loss = loss_fn(out, target)" + (".sum()" if sum_loss else ""), "record('loss', loss)"]
        if self.backward != "once":
            backward.append(f"loss.backward(retain_graph={self.backward == 'retained'})")
        backward.append("loss.backward()")
        if self.hook is not None:
            where, kind, factor = self.hook
            body = {"scale": f"g * {factor!r}", "replace": f"torch.full_like(g, {factor!r})",
                    "observe": "record('grad', g)"}[kind]
            holder = "out" if where == "output" else f"params[{where}]"
            # Removed even when the backward raises: hooks left on two leaves would fire in an order
            # that neither library promises.
            lines += [f"handle = {holder}.register_hook(lambda g: {body})", "try:"]
            backward = ["    " + line for line in backward] + ["finally:", "    handle.remove()"]
        lines += backward
        return lines + ["record('grad', [p.grad for p in params])", "optimizer.step()", "record('params', params)"]

    @property
    def features(self) -> set:
        found = set() if self.zero_grad and self.backward != "retained" else {"accumulation"}
        if self.hook is not None and self.hook[1] != "observe":
            found.add("hook")
        if self.inplace is not None and self.inplace[2]:
            found.add("inplace")
        return found


@dataclass(frozen=True)
class NoGradUpdate:
    """``with torch.no_grad(): params[index].<method>(*args)`` (``add_``, ``mul_`` or ``clamp_`` on a leaf)."""

    index: int
    method: str
    args: tuple

    def lines(self, sum_loss=False) -> list:
        return ["with torch.no_grad():",
                f"    params[{self.index}].{self.method}({', '.join(literal(a) for a in self.args)})",
                "record('params', params)"]

    features = frozenset()


@dataclass(frozen=True)
class Program:
    """Layers' widths, an activation, initial parameters, data, loss and optimizer (name, options), steps."""

    widths: tuple
    activation: str
    parameters: tuple
    x: np.ndarray
    target: np.ndarray
    loss: tuple
    optimizer: tuple
    steps: tuple

    def __post_init__(self):
        if len(self.widths) < 2 or len(self.parameters) != 2 * (len(self.widths) - 1):
            raise ValueError(f"parameters: expected a weight and a bias per layer of widths {self.widths}")
        if not self.steps:
            raise ValueError("steps: a program needs at least one step")

    @property
    def features(self) -> set:
        """The :data:`FOCUSES` this program exercises."""
        name, options = self.optimizer
        found = set().union(*(step.features for step in self.steps))
        trains = sum(isinstance(step, Train) for step in self.steps)
        if name == "SGD" and dict(options).get("momentum", 0) and trains > 1:
            found.add("sgd_momentum")
        if name in ("Adam", "AdamW"):
            found.add("adam")
        if any(key in ("weight", "label_smoothing", "pos_weight", "beta") for key, _ in self.loss[1]):
            found.add("loss_options")
        return found

    def ops_covered(self) -> set:
        """Program features, named ``program.<focus>`` (no table op: a campaign's op coverage leaves them out)."""
        return {f"program.{feature}" for feature in self.features}

    def _layers(self) -> str:
        pairs = zip(self.widths[:-1], self.widths[1:])
        layers = [f"torch.nn.Linear({a}, {b}, dtype=torch.float64)" for a, b in pairs]
        between = [f"torch.nn.{self.activation}()"] if self.activation else []
        layers = [part for k, layer in enumerate(layers) for part in ([layer] if k == 0 else between + [layer])]
        if self.loss[0] == "NLLLoss":
            layers.append("torch.nn.LogSoftmax(dim=1)")
        return ", ".join(layers)

    def to_python(self, name: str = "program") -> str:
        """Standalone source of ``def program(torch, record)``: ``torch`` is PyTorch or ``gradverify.engine``."""
        loss_name, loss_options = self.loss
        optimizer_name, optimizer_options = self.optimizer
        values = ", ".join(literal(p) for p in self.parameters)
        body = [
            f"model = torch.nn.Sequential({self._layers()})",
            "params = list(model.parameters())",
            "with torch.no_grad():",
            f"    for p, value in zip(params, [{values}]):",
            "        p.copy_(torch.tensor(value))",
            f"x = torch.tensor({literal(self.x)})",
            f"target = torch.tensor({literal(self.target)})",
            f"loss_fn = torch.nn.{loss_name}({_options(loss_options)})",
            f"optimizer = torch.optim.{optimizer_name}(params, {_options(optimizer_options)})",
        ]
        sum_loss = dict(loss_options).get("reduction") == "none"
        for k, step in enumerate(self.steps):
            body += [f"# step {k}", "try:"] + ["    " + line for line in step.lines(sum_loss)]
            body += ["except Exception as error:", "    record('error', error)"]
        return function_source(f"{name}(torch, record)", f"{len(self.steps)} steps of {optimizer_name} on a float64 "
                               f"{loss_name} of layers {self.widths}.", body)

    def compile(self):
        """The program as a Python function ``program(torch, record)`` (executed from :meth:`to_python`)."""
        return defined(self.to_python(), "program", "<gradverify fuzz program>")

    def __len__(self):
        return len(self.steps)


def _options(options) -> str:
    return ", ".join(f"{key}=torch.tensor({literal(value)})" if isinstance(value, np.ndarray)
                     else f"{key}={literal(value)}" for key, value in options)


def _observed(value):
    if isinstance(value, BaseException):
        return type(value).__name__
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        return tuple(_observed(v) for v in value)
    return np.array(value.detach().numpy(), dtype=np.float64)


def observe(program_fn, library) -> list:
    """``(observable, value)`` in the order ``program_fn`` recorded them, run on ``library`` (a torch-shaped module)."""
    seen = []
    program_fn(library, lambda observable, value: seen.append((observable, _observed(value))))
    return seen


def _difference(actual, expected):
    """Why ``actual`` differs from ``expected`` (None where they agree to :data:`RTOL` of the largest entry)."""
    if isinstance(expected, tuple) or isinstance(actual, tuple):
        if not (isinstance(expected, tuple) and isinstance(actual, tuple)) or len(actual) != len(expected):
            return f"{actual!r} where PyTorch has {expected!r}"
        return next((f"[{k}] {why}" for k, (a, e) in enumerate(zip(actual, expected))
                     if (why := _difference(a, e)) is not None), None)
    if expected is None or actual is None or isinstance(expected, str) or isinstance(actual, str):
        return None if actual is expected or actual == expected else f"{actual!r} where PyTorch has {expected!r}"
    if actual.shape != expected.shape:
        return f"shape {actual.shape} where PyTorch has {expected.shape}"
    scale = max(float(np.max(np.abs(expected), initial=0.0)), 1e-300)
    miss = float(np.max(np.abs(actual - expected), initial=0.0))
    if not miss <= RTOL * scale:  # (NaN misses too)
        return f"off by {miss:.3g} (PyTorch's largest entry {scale:.3g})"
    return None


def compare(actual: list, expected: list, target: str = "engine") -> list:
    """Findings where the target's observations ``actual`` differ from PyTorch's ``expected``, one per observable.

    The runs are compared in order up to the first difference of sequence (an error raised by one run only).
    """
    from gradverify.fuzz.oracles import Finding

    findings, seen = [], set()
    for k in range(max(len(actual), len(expected))):
        got = actual[k] if k < len(actual) else ("end", None)
        want = expected[k] if k < len(expected) else ("end", None)
        if got[0] != want[0]:
            observable = "error" if "error" in (got[0], want[0]) else want[0]
            detail = f"record {k}: the engine recorded {got[0]} {got[1]!r} where PyTorch recorded {want[0]} {want[1]!r}"
            findings.append(Finding(ORACLE_OF.get(observable, ORACLE_OF["error"]), observable, target, detail))
            break
        why = _difference(got[1], want[1])
        if why is not None and got[0] not in seen:
            seen.add(got[0])
            findings.append(Finding(ORACLE_OF[got[0]], got[0], target, f"record {k}: {why}"))
    return findings


def check_program(program: Program, target: str = "engine"):
    """The :class:`~gradverify.fuzz.oracles.Outcome` of ``program`` run on the engine against PyTorch."""
    import torch

    import gradverify.engine as engine
    from gradverify.fuzz.oracles import Finding, Outcome

    program_fn = program.compile()
    expected = observe(program_fn, torch)
    try:
        actual = observe(program_fn, engine)
    except Exception as error:  # outside a step: building the model, the loss or the optimizer
        return Outcome([Finding("exception", "program", target, f"{type(error).__name__}: {error}")], [], target)
    return Outcome(compare(actual, expected, target), [], target)


def reproduce(program_fn) -> int:
    """Run ``program_fn`` on the engine and on PyTorch, print each difference; 1 while they differ, else 0."""
    import torch

    import gradverify.engine as engine

    findings = compare(observe(program_fn, engine), observe(program_fn, torch))
    for finding in findings:
        print(finding)
    return 1 if findings else 0


def reproducer_script(program: Program, outcome, preamble: str = "") -> str:
    """A standalone script that exits 1 while the engine's run of ``program`` differs from PyTorch's."""
    findings = "\n".join(f"    {finding}" for finding in outcome.engine_failures)
    lines = ['"""Reproducer written by gradverify fuzz: the engine differs from PyTorch on this program.', "",
             findings, "", "Run it: `python <this file>` exits 1 while the engine is wrong, 0 once it is fixed.",
             '"""', "import numpy as np", "", "from gradverify.fuzz.programs import reproduce"]
    if preamble:
        lines += ["", preamble.rstrip()]
    lines += ["", "", program.to_python().rstrip(), "", "", 'if __name__ == "__main__":',
              "    raise SystemExit(reproduce(program))"]
    return "\n".join(lines) + "\n"
