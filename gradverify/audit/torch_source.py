"""PyTorch's own op registry (OpInfo ``op_db``) as audit cases: op, sample, dtype -> a function of tensors.

Samples are regenerated from a seed derived from the op and dtype, so a unit
of work names its sample by index alone and any process rebuilds the same
inputs.  The function checked is the op applied to the sample's floating
tensor arguments through the OpInfo's ``gradcheck_wrapper`` (as torch's own
tests do: it makes inputs valid, e.g. Hermitian for cholesky), returning the
outputs torch differentiates (torch's gradcheck skips the others too).
"""
from __future__ import annotations

import functools
import sys
import types
import unittest
import zlib
from unittest import mock

import numpy as np

from .sources import Case, Skip, forward_over_reverse
from .truth import mpmath_counterpart

DTYPES = ("float64", "float32", "bfloat16")


@functools.lru_cache(maxsize=None)
def op_db() -> dict:
    """OpInfo id ("name" or "name.variant") -> OpInfo, for every op that supports autograd in float64 on CPU."""
    import torch
    from hypothesis import settings

    if "expecttest" not in sys.modules:
        # torch's internal test utilities import expecttest only for its TestCase base class, which op_db does
        # not need; a stand-in avoids a dependency on it.
        stand_in = types.ModuleType("expecttest")
        stand_in.TestCase = unittest.TestCase
        sys.modules["expecttest"] = stand_in
    # Importing them loads a hypothesis profile of torch's own for the whole process: put ours back.
    profile = settings.get_current_profile_name()
    from torch.testing._internal.common_methods_invocations import op_db as ops

    settings.load_profile(profile)
    chosen = (op for op in ops if op.supports_autograd and torch.float64 in op.supported_dtypes("cpu"))
    return {op_id(op): op for op in sorted(chosen, key=lambda op: (op.name, op.variant_test_name))}


def op_id(op) -> str:
    return f"{op.name}.{op.variant_test_name}" if op.variant_test_name else op.name


def select(names) -> list:
    """The op ids matching ``names`` (OpInfo names or ids; every variant of a name), in op_db order.

    Raises ValueError naming the unknown ones.
    """
    table = op_db()
    if names is None:
        return list(table)
    unknown = [n for n in names if n not in table and not any(op.name == n for op in table.values())]
    if unknown:
        raise ValueError(f"--ops: not differentiable OpInfo names of torch's op_db: {', '.join(unknown)}")
    return [key for key, op in table.items() if key in names or op.name in names]


def dtypes(key) -> list:
    """The audit dtypes (names) the op supports on CPU."""
    import torch

    supported = op_db()[key].supported_dtypes("cpu")
    return [d for d in DTYPES if getattr(torch, d) in supported]


@functools.lru_cache(maxsize=8)
def samples(key, dtype) -> tuple:
    """The op's OpInfo samples in ``dtype``, generated under a seed fixed by (op, dtype), detached.

    They are the samples torch's own gradient tests use (``requires_grad=True``): asked without gradients,
    OpInfo adds samples whose gradient differs from the derivative by design (``padding_idx``,
    ``scale_grad_by_freq``, ``max_norm``'s in-place renorm).
    """
    import torch

    ops = op_db()  # first: it puts the expecttest stand-in in place for common_utils
    from torch.testing._internal import common_utils
    from torch.testing._internal.opinfo import core

    torch.manual_seed(zlib.crc32(f"{key}/{dtype}".encode()))
    # OpInfo's sample iterators walk the whole call stack (inspect.stack, slow in a process of thousands of
    # modules) for a unittest test to tag and seed by; an audit has none, so the walk's answer is None.
    with mock.patch.object(common_utils, "extract_test_fn", _no_test), \
            mock.patch.object(core, "extract_test_fn", _no_test):
        made = ops[key].sample_inputs("cpu", getattr(torch, dtype), requires_grad=True)
        return tuple(sample.transform(_detached) for sample in made)


def _detached(value):
    import torch

    return value.detach() if isinstance(value, torch.Tensor) else value


def _no_test():
    return None


def count(key, dtype) -> int:
    return len(samples(key, dtype))


def elements(key, index, dtype) -> int:
    """The number of elements of the sample's floating tensors."""
    sample = samples(key, dtype)[index]
    return sum(t.numel() for t in [sample.input, *sample.args, *sample.kwargs.values()] if is_floating(t))


def is_floating(value) -> bool:
    """Is ``value`` a dense real floating torch tensor (what the audit differentiates)?"""
    import torch

    return isinstance(value, torch.Tensor) and value.is_floating_point() and value.layout == torch.strided


def _prepare(key, index, dtype):
    """(op, sample, slots, leaves, call, kept): the sample's floating tensor slots and the outputs to check."""
    import torch

    op, sample = op_db()[key], samples(key, dtype)[index]
    slots = ([("input", None)] if is_floating(sample.input) else []) + [
        ("arg", i) for i, a in enumerate(sample.args) if is_floating(a)]
    if not slots:
        raise Skip("no floating tensor argument")
    leaves = [(sample.input if kind == "input" else sample.args[i]).detach().clone() for kind, i in slots]

    def call(*tensors):
        first, args = sample.input, list(sample.args)
        for (kind, i), tensor in zip(slots, tensors):
            if kind == "input":
                first = tensor
            else:
                args[i] = tensor
        # Keyword tensors (weight, bias) follow the inputs' dtype, exactly: the checker's float64 evaluation
        # of a float32 or bfloat16 sample is then the same function, not one that refuses mixed dtypes.
        kwargs = {k: v.to(tensors[0].dtype) if is_floating(v) and v.dtype == leaves[0].dtype else v
                  for k, v in sample.kwargs.items()}
        # As torch's gradient tests: the sample's output_process_fn_grad makes outputs well defined (the
        # singular vectors of svd up to sign are made gauge-invariant).
        result = sample.output_process_fn_grad(op.gradcheck_wrapper(op.get_op(), first, *args, **kwargs))
        return result if isinstance(result, (tuple, list)) else (result,)

    try:
        with torch.enable_grad():
            probe = call(*[x.clone().requires_grad_() for x in leaves])
    except RuntimeError as error:  # floating arguments that are not differentiable (running statistics ...)
        raise Skip(f"the op refuses gradients for its floating arguments: {str(error).splitlines()[0][:120]}")
    # Every tensor output goes to check_grad, which decides as torch's gradcheck does: empty, complex (Wirtinger),
    # integer and non-differentiable outputs are its business, not a filter's here.
    kept = [k for k, y in enumerate(probe) if isinstance(y, torch.Tensor)]
    if not kept:
        raise Skip("no tensor output")
    return op, sample, slots, leaves, call, kept


def case(key, index, dtype):
    """The sample as a :class:`~gradverify.audit.sources.Case`: a function of its floating tensors.

    Raises :class:`~gradverify.audit.sources.Skip` with the reason when the
    sample has no floating tensor input, the op refuses gradients for it, or
    it returns no tensor.
    """
    op, _, _, leaves, call, kept = _prepare(key, index, dtype)

    def fn(*tensors):
        outputs = call(*tensors)
        return tuple(outputs[k] for k in kept)

    return Case(fn, leaves, op.supports_forward_ad, op.supports_gradgrad)


def _direct_path(op):
    """``torch.<op.name>`` when that is the op's own callable, else None."""
    import torch

    target = torch
    for part in op.name.split("."):
        target = getattr(target, part, None)
    return f"torch.{op.name}" if target is not None and target is op.op else None


def _keeps(process) -> bool:
    """Is an OpInfo output_process_fn_grad the identity (the default)?"""
    marker = object()
    try:
        return process(marker) is marker
    except Exception:  # noqa: BLE001  (it works on outputs only: not the identity)
        return False


def reproducer_call(key, index, dtype) -> str:
    """Code defining ``XS`` (exact inputs) and ``outputs(*xs)``: a direct call when the op is a public torch
    function on literal arguments, else the OpInfo sample regenerated from its seed."""
    from .reproducer import literal

    op, sample, slots, leaves, _, kept = _prepare(key, index, dtype)
    lines = ["import torch", "", f"XS = [{', '.join(literal(x) for x in leaves)}]", ""]
    path = _direct_path(op) if _plain(key, index, dtype) is not None and _keeps(sample.output_process_fn_grad) \
        else None
    try:
        if path is None:
            raise ValueError("no public callable")
        positions = iter(range(len(slots)))
        parts = [f"xs[{next(positions)}]" if is_floating(v) else literal(v) for v in [sample.input, *sample.args]]
        parts += [f"{k}={literal(v)}" for k, v in sample.kwargs.items()]
        lines += ["", "def outputs(*xs):", f"    result = {path}({', '.join(parts)})"]
    except ValueError:
        lines += [
            "import types, unittest, zlib", "",
            "# The OpInfo sample itself (torch's test utilities want expecttest only for a TestCase base class).",
            "sys.modules.setdefault('expecttest', types.SimpleNamespace(TestCase=unittest.TestCase))",
            "from torch.testing._internal.common_methods_invocations import op_db  # noqa: E402", "",
            f"OP = next(op for op in op_db if (op.name, op.variant_test_name) == {(op.name, op.variant_test_name)!r})",
            f"torch.manual_seed({zlib.crc32(f'{key}/{dtype}'.encode())})",
            f"SAMPLE = list(OP.sample_inputs('cpu', torch.{dtype}, requires_grad=True))[{index}]",
            "SAMPLE = SAMPLE.transform(lambda t: t.detach() if isinstance(t, torch.Tensor) else t)",
            f"SLOTS = {slots!r}", "", "",
            "def outputs(*xs):",
            "    first, args = SAMPLE.input, list(SAMPLE.args)",
            "    for (kind, i), x in zip(SLOTS, xs):",
            "        if kind == 'input':",
            "            first = x",
            "        else:",
            "            args[i] = x",
            "    result = OP.gradcheck_wrapper(OP.get_op(), first, *args, **SAMPLE.kwargs)",
            "    result = SAMPLE.output_process_fn_grad(result)",
        ]
    lines += ["    result = result if isinstance(result, (tuple, list)) else (result,)",
              f"    return tuple(result[k] for k in {kept!r})", ""]
    return "\n".join(lines)


def describe(key, index, dtype) -> str:
    """The sample as torch prints it (shapes and arguments), for the findings table."""
    sample = samples(key, dtype)[index]
    shapes = [tuple(t.shape) for t in [sample.input, *sample.args] if is_floating(t)]
    extra = [repr(a) for a in sample.args if not is_floating(a)] + [f"{k}={v!r}" for k, v in sample.kwargs.items()]
    return f"shapes {shapes}" + (f", {', '.join(extra)}" if extra else "")


def _plain(key, index, dtype):
    """(op, sample) when the call is the op itself on (input, *args) with no wrapper, else None."""
    op, sample = op_db()[key], samples(key, dtype)[index]
    default = type(op).__dataclass_fields__["gradcheck_wrapper"].default
    return (op, sample) if op.gradcheck_wrapper is default else None


def mpmath_function(key, index, dtype, made):
    """The op's mpmath counterpart (:class:`~gradverify.audit.truth.Elementwise`) for an elementwise sample whose
    tensor arguments are all inputs of ``made``; else None."""
    plain = _plain(key, index, dtype)
    if plain is None or not is_floating(plain[1].input):
        return None
    op, sample = plain
    if len(made.leaves) != 1 + sum(is_floating(a) for a in sample.args):
        return None
    args = [a for a in sample.args if not is_floating(a)]
    kwargs = {k: v.detach().double().numpy() if is_floating(v) else v for k, v in sample.kwargs.items()}
    if len(made.leaves) > 1 and args:
        return None
    return mpmath_counterpart(op.name, args, kwargs)


def other_framework(key, index, dtype, made):
    """("jax", backend, fn, float64 arrays): JAX's counterpart of the op on this sample, when it computes the
    same values; else None."""
    plain = _plain(key, index, dtype)
    if plain is None:
        return None
    from . import jax_source

    return jax_source.counterpart_on(plain[0].name, plain[1], [x.double().numpy() for x in made.leaves],
                                     [y.detach().double().numpy() for y in made.fn(*made.leaves) if is_floating(y)])


native_checker = "torch gradcheck"


def native_confirmation(fn, leaves, mode, check="") -> bool | None:
    """Does torch's own gradcheck, in float64 at ``leaves`` (cast), agree that ``mode`` is wrong?  None when it
    does not apply.

    A second-order failure of a forward-mode ``check`` (check_grad's row name) is forward over reverse, which
    gradgradcheck checks only when asked.
    """
    import warnings

    import torch

    inputs = [x.detach().double().requires_grad_() for x in leaves]
    options = dict(raise_exception=False, check_undefined_grad=False, check_batched_grad=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if mode == "second order":
                forward = forward_over_reverse(check)
                return not torch.autograd.gradgradcheck(fn, inputs, check_fwd_over_rev=forward,
                                                        check_rev_over_rev=not forward, **options)
            if mode == "forward":
                return not torch.autograd.gradcheck(fn, inputs, check_forward_ad=True, check_backward_ad=False,
                                                    **options)
            if mode == "reverse":
                return not torch.autograd.gradcheck(fn, inputs, **options)
        except (RuntimeError, NotImplementedError):
            return None
    return None


GRADIENT_TESTS = {"reverse": ("TestBwdGradients", ("test_fn_grad",)),
                  "forward": ("TestFwdGradients", ("test_forward_mode_AD", "test_fn_fwgrad_bwgrad")),
                  "second order": ("TestBwdGradients", ("test_fn_gradgrad",))}
"""The OpInfo gradient tests (class, test names) of each mode."""


def expected_failure(key, mode, dtypes=DTYPES) -> bool:
    """Does the OpInfo mark ``mode``'s gradient test of this op as an expected failure, or skip it, in every
    one of ``dtypes`` on CPU?  Either way torch does not hold that gradient to its check (a cast that changes
    dtype, max_unpool's duplicate indices, "Gradients are incorrect!" for normal's samples)."""
    import torch

    cls_name, tests = GRADIENT_TESTS.get(mode, (None, ()))

    def excuses(f):
        return getattr(f, "__name__", "") == "expectedFailure" or getattr(f, "__qualname__", "").startswith("skip.")

    def excused(dtype):
        return any(hasattr(d, "is_active") and d.is_active(cls_name, test, "cpu", getattr(torch, dtype), {})
                   and any(excuses(f) for f in d.decorators) for d in op_db()[key].decorators for test in tests)

    return bool(tests) and all(excused(dtype) for dtype in dtypes)
