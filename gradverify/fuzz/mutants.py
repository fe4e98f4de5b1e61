"""Mutation operators: break one engine rule or mechanism in-process, so the fuzzer can prove it notices.

Each :class:`Mutant` reproduces a class of real gradient bugs (see
``/work/shared/ANCHORS.md``): a wrong formula in one op's rule of the table
(patched on its :class:`~gradverify.ops.OpDef`), or a broken engine
mechanism (a function of :mod:`gradverify.engine.core` recompiled from its
own source with one line changed).  Nothing is written to disk and
:func:`active` restores the original on exit.

:func:`kill_matrix` runs a fixed-budget fuzz campaign against each mutant
and records which oracles caught it.
"""
from __future__ import annotations

import contextlib
import importlib
import inspect
import sys
import textwrap
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from gradverify.ops import TABLE
from gradverify.ops import table as rules
from gradverify.ops.table import F


@dataclass(frozen=True)
class Mutant:
    """A named bug: ``apply()`` installs it and returns the function that removes it.

    ``focus`` is the table op the campaign aims at, or ``program.<part>`` for stateful programs of that part
    (None: any graph exercises it).
    """

    name: str
    description: str
    apply: Callable[[], Callable[[], None]]
    focus: Optional[str] = None


def _patch_rules(op: str, **rules) -> Callable[[], None]:
    """Replace ``vjp``/``jvp`` of the table's ``op`` in place; returns the undo function."""
    opdef = TABLE[op]
    saved = {field: getattr(opdef, field) for field in rules}
    for field, rule in rules.items():
        object.__setattr__(opdef, field, rule)

    def restore():
        for field, rule in saved.items():
            object.__setattr__(opdef, field, rule)

    return restore


def _swap_everywhere(original, replacement) -> Callable[[], None]:
    """Point every ``gradverify`` module attribute bound to ``original`` at ``replacement``; returns the undo.

    The fuzzer's engine op namespaces count as modules: they keep the functions they have looked up.
    """
    from gradverify.fuzz.backends import namespace

    holders = [module for module_name, module in list(sys.modules.items())
               if module_name.startswith("gradverify") and module is not None]
    # (each spelling of the arguments is its own cache entry of `namespace`)
    holders += [namespace("engine"), namespace("engine", False), namespace("engine", True)]
    bound = [(holder, name) for holder in holders for name, value in list(vars(holder).items()) if value is original]
    for holder, name in bound:
        setattr(holder, name, replacement)

    def restore():
        for holder, name in bound:
            setattr(holder, name, original)

    return restore


def _recompiled(function, *edits):
    """``function`` recompiled from its source with each ``(old, new)`` text edit applied."""
    source = textwrap.dedent(inspect.getsource(function))
    for old, new in edits:
        if old not in source:
            raise RuntimeError(f"mutant out of date: {old!r} no longer appears in {function.__qualname__}")
        source = source.replace(old, new)
    namespace = dict(function.__globals__)
    exec(compile(source, f"<mutant of {function.__qualname__}>", "exec"), namespace)  # noqa: S102
    return namespace[function.__name__]


def _patch_source(function, *edits) -> Callable[[], None]:
    """Point every binding of ``function`` at its :func:`_recompiled` mutant; returns the undo."""
    return _swap_everywhere(function, _recompiled(function, *edits))


def _patch_forward(op: str, forward) -> Callable[[], None]:
    """Replace the table ``op``'s forward, and the engine function built from it; returns the undo."""
    from gradverify.engine import functional

    restore_rule = _patch_rules(op, forward=forward)
    restore_function = _swap_everywhere(getattr(functional, op), functional._make(TABLE[op]))

    def restore():
        restore_function()
        restore_rule()

    return restore


def _api_function(path):
    """A function of the engine's public API by dotted path under ``gradverify.engine`` (``nn.functional.x``)."""
    module, _, name = f"gradverify.engine.{path}".rpartition(".")
    if module == "gradverify.engine":
        module = "gradverify.engine.api"
    return getattr(importlib.import_module(module), name)


def _sum_to_dropping_middle(x, shape):
    """sum_to that sums the leading axes only and keeps the first entry along size-1 middle axes."""
    out = np.add.reduce(x, axis=tuple(range(x.ndim - len(shape)))) if x.ndim > len(shape) else x
    for axis, n in enumerate(shape):
        if n == 1 and out.shape[axis] != 1:
            out = np.take(out, [0], axis=axis)
    return out


def _pow_through_log():
    def derivative(x, exponent):
        return exponent * F.exp((exponent - 1) * F.log(x))

    # Its JVP is the table's default, the VJP applied to the tangent: the mutant reaches both.
    return _patch_rules("pow_scalar", vjp=lambda g, out, x, exponent: (g * derivative(x, exponent),))


def _concatenate_two_operands():
    vjp = TABLE["concatenate"].vjp

    def first_two(g, out, *xs, axis=0):
        pieces = vjp(g, out, *xs, axis=axis)
        return pieces[:2] + tuple(F.zeros_like(x) for x in xs[2:])

    return _patch_rules("concatenate", vjp=first_two)


def _stack_axis_of_input():
    vjp = TABLE["stack"].vjp
    return _patch_rules("stack", vjp=lambda g, out, *xs, axis=0: vjp(
        g, out, *xs, axis=axis % max(xs[0].ndim, 1) if axis < 0 else axis))


def _patch_method(path, *edits) -> Callable[[], None]:
    """Replace the method at ``path`` (``module:Class.method`` under ``gradverify.engine``) by its
    :func:`_recompiled` mutant; returns the undo (subclasses that inherit the method get the mutant too)."""
    module, _, qualified = path.partition(":")
    owner_name, _, name = qualified.partition(".")
    owner = getattr(importlib.import_module(f"gradverify.engine.{module}"), owner_name)
    original = vars(owner)[name]
    setattr(owner, name, _recompiled(original, *edits))
    return lambda: setattr(owner, name, original)


def _engine_function(name):
    return getattr(importlib.import_module("gradverify.engine.core"), name)


def _both(derivative):
    """The VJP of a unary op from a (mutated) derivative ``f'(x, out)``; its JVP, the table's default, follows."""
    return {"vjp": lambda g, out, x: (g * derivative(x, out),)}


def _mul_swapped():
    return _patch_rules("mul", vjp=lambda g, out, x, y: (g * x, g * y),
                        jvp=(lambda t, out, x, y: t * x, lambda t, out, x, y: y * t))


def _mean_without_count():
    return _patch_rules(
        "mean",
        vjp=lambda g, out, x, axis=None, keepdims=False: (
            F.broadcast_to(rules._keep(g, x, axis, keepdims), shape=x.shape),
        ),
    )


def _mse_halved():
    def dinput(x, y):
        return (x - y) * (1.0 / rules._count(x, None))

    return _patch_rules("mse_loss", vjp=lambda g, out, x, y: (g * dinput(x, y), -g * dinput(x, y)))


def _div_jvp_sign():
    return _patch_rules("div", jvp=(lambda t, out, x, y: t / y, lambda t, out, x, y: t * out / y))


MUTANTS = (
    Mutant("sign_flip", "cos' = +sin instead of -sin (reverse and forward)",
           lambda: _patch_rules("cos", **_both(lambda x, out: F.sin(x))), "cos"),
    Mutant("dropped_factor", "sqrt' = 1/sqrt(x): the factor 1/2 is dropped",
           lambda: _patch_rules("sqrt", **_both(lambda x, out: 1.0 / out)), "sqrt"),
    Mutant("halved_factor", "mse_loss's VJP uses (x - y) / N: the factor 2/N is halved", _mse_halved, "mse_loss"),
    Mutant("swapped_operands", "mul's product rule pairs each cotangent with the wrong operand",
           _mul_swapped, "mul"),
    Mutant("cotangent_ignored", "exp's VJP returns exp(x), dropping the incoming cotangent",
           lambda: _patch_rules("exp", vjp=lambda g, out, x: (out,)), "exp"),
    Mutant("broadcast_not_reduced", "fit_cotangent does not sum a broadcast cotangent back to the input's shape",
           lambda: _patch_source(_engine_function("fit_cotangent"),
                                 ("if grad.array.shape != target.array.shape:", "if False:")), "add"),
    Mutant("reduction_without_1_over_n", "mean's VJP forgets the 1/N", _mean_without_count, "mean"),
    Mutant("reduction_wrong_axis", "log_softmax's VJP sums the cotangent over every axis, not the softmax axis",
           lambda: _patch_rules("log_softmax", vjp=lambda g, out, x, axis=-1: (
               g - F.exp(out) * F.sum(g, axis=None, keepdims=True),)), "log_softmax"),
    Mutant("fanout_overwritten", "run_backward overwrites a cotangent at fan-out instead of accumulating it",
           lambda: _patch_source(_engine_function("run_backward"), (
               "grads[parent] = prev + gp", "grads[parent] = gp")),
           # stack(a, a) is the shortest fan-out the strategies draw.
           "stack"),
    Mutant("gradient_wrong_dtype", "fit_cotangent casts every cotangent to float64, not to the input's dtype",
           lambda: _patch_source(_engine_function("fit_cotangent"), (
               "if grad.array.dtype != target.array.dtype:", "if True:"), (
               '{"dtype": target.array.dtype}', '{"dtype": "float64"}')), "add"),
    Mutant("rounded_output_derivative", "sigmoid' = y (1 - y), computed from the rounded output",
           lambda: _patch_rules("sigmoid", **_both(lambda x, out: out * (1.0 - out))), "sigmoid"),
    Mutant("softmax_rounded_output", "softmax's VJP out * (g - sum(g * out)): cancels where an output rounds to 1",
           lambda: _patch_rules("softmax", vjp=lambda g, out, x, axis=-1: (
               out * (g - F.sum(g * out, axis=axis, keepdims=True)),)), "softmax"),
    Mutant("kink_convention_changed", "relu'(0) = 1 instead of the table's relu'(0) = 0",
           lambda: _patch_rules("relu", **_both(lambda x, out: rules._mask(x.array >= 0, x))), "relu"),
    Mutant("jvp_inconsistent", "div's JVP flips the sign of the divisor's term; its VJP is right",
           _div_jvp_sign, "div"),
    Mutant("saved_value_detached", "exp's VJP multiplies by a constant copy of exp(x): right once, wrong twice",
           lambda: _patch_rules("exp", vjp=lambda g, out, x: (g * F.constant(out.array),)), "exp"),
    # Classes the first fifteen left out (issue 16): options of composed functions, shapes and axes,
    # forward values that lose digits, and derivatives that are right once and wrong twice.
    Mutant("std_ignores_correction", "std passes correction=None to var: always Bessel's correction",
           lambda: _patch_source(_api_function("std"), ("correction=correction)", "correction=None)")),
           "api.std"),
    Mutant("var_detached_mean", "var centres on a constant copy of the mean: first order exact, second wrong",
           lambda: _patch_source(_api_function("var"), (
               "centred = x - F.mean(x, axis=axis, keepdims=True)",
               "centred = x - F.constant(F.mean(x, axis=axis, keepdims=True).array)")), "api.var"),
    Mutant("log1p_naive", "log1p's forward computes log(1 + x): every digit of x below eps is lost",
           lambda: _patch_forward("log1p", lambda x: np.log(1 + x)), "log1p"),
    Mutant("softplus_overflow", "softplus's forward is log1p(exp(x)): inf beyond exp's range (x > 88.7 in float32)",
           lambda: _patch_forward("softplus", lambda x: np.log1p(np.exp(x))), "softplus"),
    Mutant("concatenate_two_operands", "concatenate's VJP gives operands beyond the second a zero cotangent",
           _concatenate_two_operands, "concatenate"),
    Mutant("stack_negative_axis", "stack's VJP normalises a negative axis by the inputs' rank, not the output's",
           _stack_axis_of_input, "stack"),
    Mutant("batched_matmul_transpose", "matmul's VJP reverses every axis of the other operand, not the last two",
           lambda: _patch_rules("matmul", vjp=_recompiled(TABLE["matmul"].vjp, *[
               (f"F.swapaxes({m}, -1, -2)", f"F.permute({m}, axes=tuple(range({m}.ndim))[::-1])") for m in ("a2", "b2")
           ])), "matmul"),
    Mutant("sum_to_middle_axes", "sum_to sums leading axes only: a size-1 middle axis keeps its first entry",
           lambda: _patch_rules("sum_to", forward=_sum_to_dropping_middle), "sum_to"),
    Mutant("pow_negative_base", "x ** c's derivative as c exp((c - 1) log x): NaN for negative bases",
           _pow_through_log, "pow_scalar"),
    Mutant("cumsum_reversed", "cumsum multiplies by the lower triangle: sums from the end",
           lambda: _patch_source(_api_function("cumsum"), ("np.triu(", "np.tril(")), "api.cumsum"),
    Mutant("prod_through_logs", "prod as exp(sum(log |x|)) times the signs: NaN derivatives at zeros",
           lambda: _patch_source(_api_function("prod"), (
               "functools.reduce(lambda a, b: a * b, factors)",
               "F.exp(functools.reduce(lambda a, b: a + b, [F.log(F.abs(f)) for f in factors])) * "
               "Tensor(np.prod([np.sign(f.array) for f in factors], axis=0))")), "api.prod"),
    Mutant("topk_smallest", "topk sorts ascending when asked for the largest entries",
           lambda: _patch_source(_api_function("topk"), ("descending=largest", "descending=not largest")),
           "api.topk"),
    Mutant("einsum_alphabetical", "einsum aligns each operand's axes in alphabetical order, not the output's",
           lambda: _patch_source(_api_function("einsum"), ("sorted(term, key=letters.index)", "sorted(term)")),
           "api.einsum"),
    Mutant("bce_pos_weight_ignored", "binary_cross_entropy_with_logits ignores pos_weight",
           lambda: _patch_source(_api_function("nn.functional.binary_cross_entropy_with_logits"), (
               "positive = target if pos_weight is None else", "positive = target if True else")),
           "api.F.binary_cross_entropy_with_logits"),
    # Stateful programs (gradverify.fuzz.programs): optimizers, version counters, accumulation, hooks, loss options.
    Mutant("sgd_momentum_not_updated", "SGD keeps its first momentum buffer instead of updating it each step",
           lambda: _patch_method("optim:SGD._update", (
               'buf = momentum * buf.array + (1 - group["dampening"]) * grad', "buf = buf.array")),
           "program.sgd_momentum"),
    Mutant("sgd_nesterov_ignored", "SGD steps along the momentum buffer when asked for Nesterov momentum",
           lambda: _patch_method("optim:SGD._update", ('grad = grad + momentum * buf if group["nesterov"] else buf',
                                                        "grad = buf")), "program.sgd_momentum"),
    Mutant("adam_bias_correction_off_by_one", "Adam corrects the first moment's bias as if one step further",
           lambda: _patch_method("optim:Adam._update", ("(1 - b1**step)", "(1 - b1**(step + 1))")), "program.adam"),
    Mutant("version_counter_not_bumped", "an in-place change does not bump the version counter: a backward "
           "through a tensor saved before it runs on the new values instead of raising",
           lambda: _patch_source(_engine_function("mark_modified"), ("number = _next_sequence_number()", "return")),
           "program.inplace"),
    Mutant("grad_overwritten", "a second backward overwrites .grad instead of accumulating into it",
           lambda: _patch_source(_engine_function("_accumulate_grad"), (
               "np.add(grad.array, g.array, out=grad.array)", "np.copyto(grad.array, g.array)")),
           "program.accumulation"),
    Mutant("hook_return_ignored", "a tensor hook's returned gradient is ignored (the hook still runs)",
           lambda: _patch_source(_engine_function("_run_hooks"), ("g = replacement", "replacement = g")),
           "program.hook"),
    Mutant("label_smoothing_ignored", "cross_entropy ignores label_smoothing",
           lambda: _patch_source(_api_function("nn.functional.cross_entropy"), (
               "_check_label_smoothing(label_smoothing)", "label_smoothing = 0.0")), "program.loss_options"),
    Mutant("class_weight_ignored", "cross_entropy ignores its class weights",
           lambda: _patch_source(_api_function("nn.functional.cross_entropy"), (
               'weights = _class_weights("cross_entropy", weight, input, class_dim)', "weights = None")),
           "program.loss_options"),
    # Layers, optimizers, schedulers and module hooks of the programs.
    Mutant("batch_norm_biased_running_var", "BatchNorm blends the batch's biased variance into running_var",
           lambda: _patch_source(_api_function("nn.functional.batch_norm"), (
               "input.array.var(axis=dims, ddof=1)", "input.array.var(axis=dims, ddof=0)")), "program.batch_norm"),
    Mutant("embedding_padding_gradient", "Embedding's padding_idx row gets a gradient",
           lambda: _patch_source(_api_function("nn.functional.embedding"), (
               "if padded.any() else out", "if False else out")), "program.embedding"),
    Mutant("rmsprop_centered_ignored", "RMSprop centered does not subtract the squared average of gradients",
           lambda: _patch_method("optim:RMSprop._update", (
               "square_avg = square_avg - grad_avg * grad_avg", "square_avg = square_avg")), "program.rmsprop"),
    Mutant("adagrad_lr_decay_ignored", "Adagrad steps with lr, ignoring lr_decay",
           lambda: _patch_method("optim:Adagrad._update", (
               'group["lr"] / (1 + (step - 1) * group["lr_decay"])', 'group["lr"]')), "program.adagrad"),
    Mutant("step_lr_off_by_one", "StepLR decays the rate one epoch early",
           lambda: _patch_method("optim.lr_scheduler:StepLR.get_lr", (
               "self.last_epoch % self.step_size", "(self.last_epoch + 1) % self.step_size")), "program.scheduler"),
    Mutant("forward_hook_return_ignored", "a module's forward hook runs but its returned output is ignored",
           lambda: _patch_method("nn.module:Module.__call__", ("output = replacement", "replacement = output")),
           "program.module_hook"),
    Mutant("backward_hook_return_ignored", "a module's full backward hook runs but its returned grad_input is ignored",
           lambda: _patch_method("nn.module:_BackwardHookCall._run_hooks", (
               "grad_input = replacement", "replacement = grad_input")), "program.backward_hook"),
)
BY_NAME = {mutant.name: mutant for mutant in MUTANTS}


def get(name: str) -> Mutant:
    """The mutant called ``name``; KeyError listing the known ones otherwise."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown mutant {name!r}; known: {', '.join(BY_NAME)}") from None


def apply(name: str) -> Callable[[], None]:
    """Install mutant ``name`` for the rest of the process (reproducer scripts); returns the undo function."""
    return get(name).apply()


@contextlib.contextmanager
def active(name: str):
    """Context manager: mutant ``name`` installed inside, the engine restored after."""
    restore = apply(name)
    try:
        yield get(name)
    finally:
        restore()


@dataclass
class KillResult:
    """One mutant's campaign: oracle -> number of graphs (or kink probes) where it caught the mutant.

    ``reproducer`` is the script of the first graph that caught it (it re-applies the mutant); ``caught``
    counts the graphs on which any oracle caught it (op probes aside).
    """

    mutant: Mutant
    caught_by: dict
    graphs: int
    reproducer: str = ""
    caught: int = 0

    @property
    def killed(self) -> bool:
        return bool(self.caught_by)


def run_mutant(mutant: Mutant, graphs: int, seed: int, max_nodes: int = 6, references=("torch", "jax")) -> KillResult:
    """A fixed-budget campaign (``graphs`` graphs, no shrinking) with ``mutant`` installed."""
    from gradverify.fuzz.campaign import run_campaign

    preamble = f"from gradverify.fuzz import mutants\n\nmutants.apply({mutant.name!r})"
    with active(mutant.name):
        result = run_campaign(graphs, seed, max_nodes, focus=mutant.focus, shrink=False, preamble=preamble,
                              references=references)
    reproducer = next((f.reproducer for f in result.failures if f.reproducer), "")
    caught = sum(f.graph_index is not None for f in result.failures)
    return KillResult(mutant, dict(result.fired), result.graphs, reproducer, caught)


def kill_matrix(graphs: int = 40, seed: int = 0, names=None, on_mutant=None, references=("torch", "jax")) -> list:
    """:class:`KillResult` of every mutant (or those in ``names``), one campaign each."""
    chosen = MUTANTS if names is None else tuple(get(name) for name in names)
    results = []
    for mutant in chosen:
        results.append(run_mutant(mutant, graphs, seed, references=references))
        if on_mutant is not None:
            on_mutant(results[-1])
    return results
