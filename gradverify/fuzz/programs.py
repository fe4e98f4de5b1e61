"""Stateful programs for the fuzzer: training steps run on the engine and on PyTorch, every observable compared.

A :class:`Program` is a short training run: an ``nn.Sequential`` of Linear
layers with, between them, the engine's other layers and their options
(LayerNorm, BatchNorm1d with its running statistics, an activation, Dropout
that does nothing: p = 0 or in eval; an Embedding fed integer indices first)
with given float64 parameters, a loss module with its options (reduction,
class weights, label smoothing, pos_weight, beta), an optimizer (SGD with
momentum, dampening, Nesterov, weight decay; Adam or AdamW, AMSGrad; RMSprop,
centered, with momentum; Adagrad with lr_decay and an initial accumulator),
perhaps a learning-rate scheduler stepped after each ``optimizer.step()``,
forward (pre-)hooks on layers that scale or only observe, and a few steps:
a training step (``zero_grad`` or accumulation into ``.grad``, a second
backward with ``retain_graph=True``, or one after the graph was freed, a
gradient hook that scales, replaces or only observes), an in-place update of
a parameter under ``no_grad``, an in-place change of a tensor in the graph
(one that a later backward reads back must raise, as PyTorch's version
counters make it), the model switched to eval or training mode, a layer's
hook removed.

Like a :class:`~gradverify.fuzz.graph.Graph`, a program is printed as Python
(:meth:`Program.to_python`, ``def program(torch, record)``) and that source
runs on the engine (``gradverify.engine`` passed as ``torch``) and on PyTorch,
PyTorch being the oracle.  ``record(observable, value)`` notes the loss, the
gradients (``.grad`` and what hooks see), the parameters after each step, the
buffers (BatchNorm's running statistics), the learning rate, what an
observing layer hook sees, and each error a step raised (by kind);
:func:`check_program` compares the two runs observable by observable.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from gradverify.fuzz.graph import defined, function_source, literal

OBSERVABLES = ("loss", "grad", "params", "buffers", "lr", "activation", "error")
ORACLE_OF = {observable: f"program_{observable}" for observable in OBSERVABLES}
"""The oracle named in a finding: PyTorch's run of the program, per observable that differed."""
RTOL = 1e-6
"""Relative to an array's largest entry: Adam divides by sqrt(v), so a gradient computed with cancellation
carries its rounding into the step at about this level; every mutant moves an observable by far more."""
SCALE_FLOOR = 1e-8
"""The least scale :data:`RTOL` is taken of: observables are of order 1 (inputs in [-2, 2], parameters in
[-1, 1]), so one of them all below this is a zero but for rounding (the gradient of a bias before a BatchNorm)."""
FOCUSES = ("sgd_momentum", "adam", "inplace", "accumulation", "hook", "loss_options", "batch_norm", "layer_norm",
           "embedding", "rmsprop", "adagrad", "scheduler", "module_hook", "backward_hook")
"""What a focused draw (``program.<focus>``) makes sure a program exercises."""
SIZED_LAYERS = ("Linear", "LayerNorm", "BatchNorm1d", "Embedding")
"""Layers built with ``dtype=torch.float64`` (the others hold no parameters)."""


def parameter_shapes(layer) -> list:
    """Shapes of ``layer``'s parameters in ``model.parameters()`` order; ``layer`` is ``(name, args, options)``."""
    name, args, options = layer
    options = dict(options)
    if name == "Linear":
        return [(args[1], args[0])] + [(args[1],)] * options.get("bias", True)
    if name == "Embedding":
        return [args]
    affine = options.get("elementwise_affine" if name == "LayerNorm" else "affine", True)
    return [(args[0],), (args[0],)] if name in ("LayerNorm", "BatchNorm1d") and affine else []


def _arguments(values, options) -> str:
    """Source of a call's arguments: positional ``values`` then keyword ``options`` (arrays as tensors)."""
    return ", ".join([literal(v) for v in values] + [_option(key, value) for key, value in options])


@dataclass(frozen=True)
class Train:
    """One training step: ``zero_grad`` (or accumulate), forward, loss, backward(s), then ``optimizer.step()``
    (and ``scheduler.step()``).

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

    def lines(self, program) -> list:
        """Source lines of this step in ``program``."""
        lines = ["optimizer.zero_grad()"] if self.zero_grad else []
        lines.append("out = model(x)")
        if self.inplace is not None:
            method, args, saved = self.inplace
            if saved:
                lines.append("read = torch.sin(out)")
            lines.append(f"out.{method}({', '.join(literal(a) for a in args)})")
            if saved:
                lines.append("out = read")
        # A loss left unreduced (reduction='none') is summed.
        sum_loss = dict(program.loss[1]).get("reduction") == "none"
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
        lines += backward + ["record('grad', [p.grad for p in params])", "optimizer.step()"]
        if program.scheduler is not None:
            lines += ["scheduler.step()", "record('lr', scheduler.get_last_lr())"]
        return lines + ["record('params', params)"] + program.record_buffers()

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

    def lines(self, program) -> list:
        return ["with torch.no_grad():",
                f"    params[{self.index}].{self.method}({', '.join(literal(a) for a in self.args)})",
                "record('params', params)"]

    features = frozenset()


@dataclass(frozen=True)
class SetMode:
    """``model.train(training)``; a Dropout that drops (p > 0) goes back to eval mode at once."""

    training: bool

    def lines(self, program) -> list:
        return [f"model.train({self.training})"] + (program.dropouts_to_eval() if self.training else [])

    features = frozenset()


@dataclass(frozen=True)
class RemoveHook:
    """``handles[index].remove()``: the program's layer hook ``index`` stops firing."""

    index: int

    def lines(self, program) -> list:
        return [f"handles[{self.index}].remove()"]

    features = frozenset()


@dataclass(frozen=True)
class Program:
    """Layers ``(name, args, options)``, their initial parameters, data, loss and optimizer (name, options),
    a scheduler (None or name, options), layer hooks and steps.

    ``module_hooks`` holds ``(layer, kind, factor)``: a forward hook on ``model[layer]`` that scales its output
    by ``factor`` (``kind`` ``"scale"``), one that records it (``"observe"``), a forward pre-hook that scales
    its input (``"pre_scale"``), a full backward hook that scales ``grad_input`` (``"backward_scale"``) or
    records ``grad_input`` and ``grad_output`` (``"backward_observe"``); ``RemoveHook(k)`` steps remove the k-th.
    """

    layers: tuple
    parameters: tuple
    x: np.ndarray
    target: np.ndarray
    loss: tuple
    optimizer: tuple
    steps: tuple
    scheduler: tuple = None
    module_hooks: tuple = ()

    def __post_init__(self):
        shapes = [shape for layer in self.layers for shape in parameter_shapes(layer)]
        if [tuple(p.shape) for p in self.parameters] != [tuple(s) for s in shapes]:
            raise ValueError(f"parameters: expected arrays of shapes {shapes} for layers {self.layers}, got "
                             f"{[p.shape for p in self.parameters]}")
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
        found |= {"Adam": {"adam"}, "AdamW": {"adam"}, "RMSprop": {"rmsprop"}, "Adagrad": {"adagrad"}}.get(name, set())
        if any(key in ("weight", "label_smoothing", "pos_weight", "beta") for key, _ in self.loss[1]):
            found.add("loss_options")
        names = {layer[0] for layer in self.layers}
        found |= {feature for layer, feature in (("LayerNorm", "layer_norm"), ("Embedding", "embedding"))
                  if layer in names}
        if self.record_buffers() and trains:
            found.add("batch_norm")
        if self.scheduler is not None and trains:
            found.add("scheduler")
        kinds = {kind for _, kind, _ in self.module_hooks}
        if kinds & {"scale", "pre_scale"}:
            found.add("module_hook")
        if "backward_scale" in kinds:
            found.add("backward_hook")
        return found

    def ops_covered(self) -> set:
        """Program features, named ``program.<focus>`` (no table op: a campaign's op coverage leaves them out)."""
        return {f"program.{feature}" for feature in self.features}

    def record_buffers(self) -> list:
        """The line recording the model's buffers, if it has any (BatchNorm1d tracking its running statistics)."""
        tracked = any(name == "BatchNorm1d" and dict(options).get("track_running_stats", True)
                      for name, _, options in self.layers)
        return ["record('buffers', list(model.buffers()))"] if tracked else []

    def dropouts_to_eval(self) -> list:
        """Lines putting each Dropout with p > 0 in eval mode (the programs draw no random masks)."""
        return [f"model[{k}].eval()" for k, (name, args, _) in enumerate(self.layers) if name == "Dropout" and args[0]]

    def _layer_source(self, layer) -> str:
        name, args, options = layer
        dtype = ["dtype=torch.float64"] if name in SIZED_LAYERS else []
        return f"torch.nn.{name}({', '.join([_arguments(args, options)] * bool(args or options) + dtype)})"

    def _hook_lines(self) -> list:
        sources = {"scale": "register_forward_hook(lambda module, args, out: out * {factor!r})",
                   "observe": "register_forward_hook(lambda module, args, out: record('activation', out))",
                   "pre_scale": "register_forward_pre_hook(lambda module, args: args[0] * {factor!r})",
                   "backward_scale": "register_full_backward_hook(lambda module, grad_input, grad_output: "
                                     "tuple(None if g is None else g * {factor!r} for g in grad_input))",
                   "backward_observe": "register_full_backward_hook(lambda module, grad_input, grad_output: "
                                       "record('grad', grad_input + grad_output))"}
        return ["handles = [" + ", ".join(f"model[{layer}]." + sources[kind].format(factor=factor)
                                          for layer, kind, factor in self.module_hooks) + "]"]

    def to_python(self, name: str = "program") -> str:
        """Standalone source of ``def program(torch, record)``: ``torch`` is PyTorch or ``gradverify.engine``."""
        loss_name, loss_options = self.loss
        optimizer_name, optimizer_options = self.optimizer
        values = ", ".join(literal(p) for p in self.parameters)
        layers = [self._layer_source(layer) for layer in self.layers]
        if self.loss[0] == "NLLLoss":
            layers.append("torch.nn.LogSoftmax(dim=1)")
        body = [f"model = torch.nn.Sequential({', '.join(layers)})"] + self.dropouts_to_eval() + [
            "params = list(model.parameters())",
            "with torch.no_grad():",
            f"    for p, value in zip(params, [{values}]):",
            "        p.copy_(torch.tensor(value))",
            f"x = torch.tensor({literal(self.x)})",
            f"target = torch.tensor({literal(self.target)})",
            f"loss_fn = torch.nn.{loss_name}({_arguments((), loss_options)})",
            f"optimizer = torch.optim.{optimizer_name}(params, {_arguments((), optimizer_options)})",
        ]
        if self.scheduler is not None:
            body.append(f"scheduler = torch.optim.lr_scheduler.{self.scheduler[0]}(optimizer, "
                        f"{_arguments((), self.scheduler[1])})")
        if self.module_hooks:
            body += self._hook_lines()
        for k, step in enumerate(self.steps):
            body += [f"# step {k}", "try:"] + ["    " + line for line in step.lines(self)]
            body += ["except Exception as error:", "    record('error', error)"]
        names = [layer[0] for layer in self.layers]
        return function_source(f"{name}(torch, record)", f"{len(self.steps)} steps of {optimizer_name} on a float64 "
                               f"{loss_name} of layers {', '.join(names)}.", body)

    def compile(self):
        """The program as a Python function ``program(torch, record)`` (executed from :meth:`to_python`)."""
        return defined(self.to_python(), "program", "<gradverify fuzz program>")

    def __len__(self):
        return len(self.steps)


def _option(key, value) -> str:
    return f"{key}=torch.tensor({literal(value)})" if isinstance(value, np.ndarray) else f"{key}={literal(value)}"


def _observed(value):
    if isinstance(value, BaseException):
        return type(value).__name__
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return np.array(value, dtype=np.float64)
    if isinstance(value, (list, tuple)):
        return tuple(_observed(v) for v in value)
    return np.array(value.detach().numpy(), dtype=np.float64)


def observe(program_fn, library) -> list:
    """``(observable, value)`` in the order ``program_fn`` recorded them, run on ``library`` (a torch-shaped module)."""
    seen = []
    with warnings.catch_warnings():
        # (PyTorch warns that a full backward hook fires on the output's gradients when no input requires grad)
        warnings.simplefilter("ignore")
        program_fn(library, lambda observable, value: seen.append((observable, _observed(value))))
    return seen


def _largest(value) -> float:
    """The largest magnitude in an observation (arrays nested in tuples; 0 for none)."""
    if isinstance(value, tuple):
        return max((_largest(v) for v in value), default=0.0)
    return float(np.max(np.abs(value), initial=0.0)) if isinstance(value, np.ndarray) else 0.0


def _difference(actual, expected, scale=None):
    """Why ``actual`` differs from ``expected`` (None where they agree to :data:`RTOL` of the largest entry of
    the whole observation: a gradient that is 0 but for rounding, beside others that are not, is not judged
    by its own rounding noise)."""
    if scale is None:
        scale = max(_largest(expected), SCALE_FLOOR)
    if isinstance(expected, tuple) or isinstance(actual, tuple):
        if not (isinstance(expected, tuple) and isinstance(actual, tuple)) or len(actual) != len(expected):
            return f"{actual!r} where PyTorch has {expected!r}"
        return next((f"[{k}] {why}" for k, (a, e) in enumerate(zip(actual, expected))
                     if (why := _difference(a, e, scale)) is not None), None)
    if expected is None or actual is None or isinstance(expected, str) or isinstance(actual, str):
        return None if actual is expected or actual == expected else f"{actual!r} where PyTorch has {expected!r}"
    if actual.shape != expected.shape:
        return f"shape {actual.shape} where PyTorch has {expected.shape}"
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
