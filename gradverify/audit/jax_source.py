"""JAX's functions as audit cases, on the inputs of the matching PyTorch OpInfo samples.

An OpInfo name resolves to a function of ``jax.numpy``, ``jax.scipy.special``,
``jax.nn`` or ``jax.lax`` (``nn.functional.X`` -> ``jax.nn.X``, ``special.X``
-> ``jax.scipy.special.X``, ``linalg.X`` -> ``jax.numpy.linalg.X``, ``X`` ->
the first of jax.numpy, jax.scipy.special, jax.lax, jax.nn that has it).  The
sample's floating tensors are the differentiated arguments; its other
arguments are passed as numpy arrays and Python values, with ``dim`` and
``keepdim`` named ``axis`` and ``keepdims``.  A sample is used when the JAX
function computes torch's values on it (to 1e-9): a name shared by functions
with other conventions (``std``'s default correction, an argument meaning
something else) is skipped rather than misjudged.
"""
from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass

import numpy as np

from . import torch_source
from .sources import Case, Skip, forward_over_reverse

NAMESPACES = ("jax.numpy", "jax.scipy.special", "jax.lax", "jax.nn")
PREFIXES = {"nn.functional.": ("jax.nn",), "special.": ("jax.scipy.special",), "linalg.": ("jax.numpy.linalg",)}
VALUE_RTOL = 1e-9
DTYPES = ("float64", "float32", "bfloat16")


def resolve(opinfo_name):
    """(qualified name, function) of JAX's counterpart of an OpInfo name, or None."""
    namespaces, attribute = NAMESPACES, opinfo_name
    for prefix, spaces in PREFIXES.items():
        if opinfo_name.startswith(prefix):
            namespaces, attribute = spaces, opinfo_name[len(prefix):]
    if "." in attribute:
        return None
    for space in namespaces:
        fn = getattr(importlib.import_module(space), attribute, None)
        if callable(fn):
            return f"{space}.{attribute}", fn
    return None


@functools.lru_cache(maxsize=None)
def pairs() -> dict:
    """JAX function name -> the OpInfo id whose samples it is audited on (the first variant with plain calls)."""
    found = {}
    for key, op in torch_source.op_db().items():
        default = type(op).__dataclass_fields__["gradcheck_wrapper"].default
        resolved = resolve(op.name) if op.gradcheck_wrapper is default else None
        if resolved is not None and resolved[0] not in found:
            found[resolved[0]] = key
    return dict(sorted(found.items()))


def select(names) -> list:
    """JAX function names matching ``names`` (JAX names or OpInfo names); raises ValueError for unknown ones."""
    table = pairs()
    if names is None:
        return list(table)
    by_opinfo = {torch_source.op_db()[key].name: name for name, key in table.items()}
    unknown = [n for n in names if n not in table and n not in by_opinfo]
    if unknown:
        raise ValueError(f"--ops: no JAX counterpart of an OpInfo op for: {', '.join(unknown)}")
    return [name for name in table if name in names or any(by_opinfo.get(n) == name for n in names)]


def _function(name):
    space, attribute = name.rsplit(".", 1)
    return getattr(importlib.import_module(space), attribute)


def dtypes(name) -> list:
    return [d for d in torch_source.dtypes(pairs()[name]) if d in DTYPES]


def count(name, dtype) -> int:
    return torch_source.count(pairs()[name], dtype)


def elements(name, index, dtype) -> int:
    return torch_source.elements(pairs()[name], index, dtype)


def describe(name, index, dtype) -> str:
    return torch_source.describe(pairs()[name], index, dtype)


KEYWORDS = {"dim": "axis", "keepdim": "keepdims"}
"""Torch keyword names and JAX's for the same argument; other keywords are passed as they are."""


@dataclass(frozen=True)
class Call:
    """A sample's call with its floating tensors as the only free arguments: ``positional`` holds ``SLOT`` where
    a floating tensor goes (in torch_source's slot order) and the other arguments as numpy arrays and Python values."""

    positional: tuple
    keywords: dict

    def bind(self, fn):
        """``fn`` as a function of the floating tensors, returning a tuple."""
        def call(*xs):
            free = iter(xs)
            result = fn(*[next(free) if a is SLOT else a for a in self.positional], **self.keywords)
            return tuple(result) if isinstance(result, (tuple, list)) else (result,)

        return call

    def source(self, attribute) -> str:
        """The call as Python source over ``xs``."""
        free = iter(range(len(self.positional)))
        parts = [f"xs[{next(free)}]" if a is SLOT else _literal(a) for a in self.positional]
        return f"{attribute}({', '.join(parts + [f'{k}={_literal(v)}' for k, v in self.keywords.items()])})"


SLOT = object()


def _static(value, dtype):
    """A non-free argument as JAX takes it: tensors become numpy arrays (floating ones in ``dtype``); Python
    numbers and strings stay, sequences become tuples, dtypes numpy's; a torch-only value (memory format ...) is a
    Skip."""
    import torch

    if isinstance(value, torch.Tensor):
        if value.layout != torch.strided or value.is_complex():
            raise Skip("the sample passes a sparse or complex tensor argument")
        array = value.detach().cpu().numpy()
        return array.astype(dtype) if array.dtype.kind == "f" else array
    if isinstance(value, (list, tuple)):  # JAX takes axes as tuples (lists are not hashable static arguments)
        return tuple(_static(v, dtype) for v in value)
    if isinstance(value, torch.dtype):
        return np.dtype(str(value).removeprefix("torch."))
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise Skip(f"the sample passes a {type(value).__name__}, which JAX has no counterpart of")


def _literal(value) -> str:
    from .reproducer import literal

    if isinstance(value, np.ndarray):
        return f"np.array({literal(value.tolist())}, dtype=np.{value.dtype})"
    if isinstance(value, np.dtype):
        return f"np.{value}"
    if isinstance(value, tuple):
        return f"({''.join(_literal(v) + ', ' for v in value)})"
    return literal(value)


def call_of(sample, static_dtype="float64") -> "Call":
    """The OpInfo ``sample``'s call as JAX takes it, its floating tensors left free (Skip when it has none)."""
    positional = [sample.input, *sample.args]
    if not any(torch_source.is_floating(a) for a in positional):
        raise Skip("no floating tensor argument")
    return Call(tuple(SLOT if torch_source.is_floating(a) else _static(a, static_dtype) for a in positional),
                {KEYWORDS.get(k, k): _static(v, static_dtype) for k, v in sample.kwargs.items()})


def _sample(name, index, dtype):
    """(OpInfo id, the OpInfo sample, float64 arrays of its floating tensors)."""
    key = pairs()[name]
    sample = torch_source.samples(key, dtype)[index]
    free = [a for a in [sample.input, *sample.args] if torch_source.is_floating(a)]
    return key, sample, [t.detach().double().numpy() for t in free]


def _same_values(left, right) -> bool:
    if len(left) != len(right):
        return False
    for a, b in zip(left, right):
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        scale = np.abs(b[np.isfinite(b)]).max(initial=1.0)
        if a.shape != b.shape or not np.allclose(a, b, rtol=VALUE_RTOL, atol=VALUE_RTOL * scale, equal_nan=True):
            return False
    return True


def case(name, index, dtype):
    """The JAX function on the matching OpInfo sample, as a :class:`~gradverify.audit.sources.Case`."""
    import jax
    import jax.numpy as jnp
    import torch

    key, sample, arrays = _sample(name, index, dtype)
    # The torch op on the same sample (each dtype has its own samples), evaluated at the float64 inputs.
    torch_fn = torch_source.case(key, index, dtype).fn
    with torch.no_grad():
        expected = [y.double().numpy() for y in torch_fn(*[torch.from_numpy(a) for a in arrays])
                    if torch_source.is_floating(y)]
    with jax.enable_x64(True):
        try:
            got = [np.asarray(y) for y in call_of(sample).bind(_function(name))(*[jnp.asarray(a) for a in arrays])]
        except Exception as error:  # noqa: BLE001  (another signature: not this sample's counterpart)
            raise Skip(f"{name} does not take this sample: {type(error).__name__}") from None
        if not _same_values([y for y in got if y.dtype.kind == "f"], expected):
            raise Skip(f"{name} computes other values than torch's {torch_source.op_db()[key].name} on this sample")
        leaves = [jnp.asarray(a, dtype=getattr(jnp, dtype)) for a in arrays]
    # Floating arguments that are not differentiated (weights, bounds) take the audited dtype, as the leaves do.
    return Case(call_of(sample, dtype).bind(_function(name)), leaves, True, True)


def mpmath_function(name, index, dtype, made):
    return torch_source.mpmath_function(pairs()[name], index, dtype, made)


def counterpart_on(opinfo_name, sample, arrays, expected):
    """("jax", backend, fn, arrays) when JAX's counterpart of ``opinfo_name``, called as the OpInfo ``sample``
    with its floating tensors set to ``arrays``, computes ``expected`` (float64); else None."""
    import jax
    import jax.numpy as jnp

    from gradverify.check import backend_for

    resolved = resolve(opinfo_name)
    if resolved is None:
        return None
    with jax.enable_x64(True):
        try:
            fn = call_of(sample).bind(resolved[1])
            natives = [jnp.asarray(a) for a in arrays]
            if not _same_values([np.asarray(y) for y in fn(*natives) if np.asarray(y).dtype.kind == "f"], expected):
                return None
        except Exception:  # noqa: BLE001  (another signature or a torch-only argument: not a counterpart)
            return None
    return "jax", backend_for(natives), fn, arrays


def other_framework(name, index, dtype, made):
    """("torch", backend, fn, float64 arrays): the OpInfo op itself on the same inputs."""
    import torch

    from gradverify.check import backend_for

    key = pairs()[name]
    arrays = [np.asarray(x, dtype=np.float64) for x in made.leaves]
    fn = torch_source.case(key, index, made.leaves[0].dtype.name).fn
    return "torch", backend_for([torch.from_numpy(a) for a in arrays]), fn, arrays


native_checker = "jax check_grads"


def native_confirmation(fn, leaves, mode, check=""):
    """Does ``jax.test_util.check_grads``, in float64 at ``leaves`` (cast), agree that ``mode`` is wrong?  None
    when it does not apply.

    A second-order failure of a forward-mode ``check`` also asks for forward mode, which check_grads then
    applies to the reverse-mode derivative too (forward over reverse).
    """
    import jax
    from jax.test_util import check_grads

    if mode == "value":
        return None
    if mode == "second order":
        order, modes = 2, ["fwd", "rev"] if forward_over_reverse(check) else ["rev"]
    else:
        order, modes = 1, ["fwd" if mode == "forward" else "rev"]
    with jax.enable_x64(True):
        try:
            check_grads(fn, tuple(jax.numpy.asarray(x, dtype=np.float64) for x in leaves), order=order, modes=modes)
        except AssertionError:
            return True
        except Exception:  # noqa: BLE001
            return None
    return False


def reproducer_call(name, index, dtype) -> str:
    """Code defining ``XS`` (the sample's exact inputs) and ``outputs(*xs)`` (the JAX function, as a tuple)."""
    _, sample, arrays = _sample(name, index, dtype)
    call = call_of(sample, dtype)
    space, attribute = name.rsplit(".", 1)
    inputs = ", ".join(f"jnp.asarray(np.array({a.tolist()!r}), dtype=jnp.{dtype})" for a in arrays)
    return "\n".join([
        "import jax", "import jax.numpy as jnp", "import numpy as np", f"from {space} import {attribute}", "",
        "jax.config.update('jax_enable_x64', True)", f"XS = [{inputs}]", "", "",
        "def outputs(*xs):", f"    result = {call.source(attribute)}",
        "    return tuple(result) if isinstance(result, (tuple, list)) else (result,)", ""])


def expected_failure(name, mode, dtypes=()) -> bool:
    """JAX keeps no registry of expected gradient failures."""
    return False
