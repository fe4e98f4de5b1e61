"""JAX's functions as audit cases, on the inputs of the matching PyTorch OpInfo samples.

An OpInfo name resolves to a function of ``jax.numpy``, ``jax.scipy.special``,
``jax.nn`` or ``jax.lax`` (``nn.functional.X`` -> ``jax.nn.X``, ``special.X``
-> ``jax.scipy.special.X``, ``linalg.X`` -> ``jax.numpy.linalg.X``, ``X`` ->
the first of jax.numpy, jax.scipy.special, jax.lax, jax.nn that has it).  A
sample is used when its arguments are all floating tensors, passed in order,
and the JAX function computes torch's values on it (to 1e-9): a name shared
by functions with other conventions (``std``'s default correction) is skipped
rather than misjudged.
"""
from __future__ import annotations

import functools
import importlib

import numpy as np

from . import torch_source
from .sources import Case, Skip
from .truth import mpmath_counterpart

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


def _plain_arrays(name, index, dtype):
    key = pairs()[name]
    sample = torch_source.samples(key, dtype)[index]
    tensors = [sample.input, *sample.args]
    if sample.kwargs or not all(torch_source.is_floating(t) for t in tensors):
        raise Skip("the sample passes non-tensor arguments, whose conventions differ between the libraries")
    return key, [t.detach().double().numpy() for t in tensors]


def _as_tuple(fn):
    def call(*xs):
        result = fn(*xs)
        return tuple(result) if isinstance(result, (tuple, list)) else (result,)

    return call


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

    key, arrays = _plain_arrays(name, index, dtype)
    fn = _as_tuple(_function(name))
    torch_fn = torch_source.case(key, index, "float64" if dtype != "float64" else dtype).fn
    with torch.no_grad():
        expected = [y.double().numpy() for y in torch_fn(*[torch.from_numpy(a) for a in arrays])]
    with jax.enable_x64(True):
        try:
            got = [np.asarray(y) for y in fn(*[jnp.asarray(a) for a in arrays])]
        except Exception as error:  # noqa: BLE001  (another signature: not this sample's counterpart)
            raise Skip(f"{name} does not take this sample: {type(error).__name__}") from None
        if not _same_values(got, expected):
            raise Skip(f"{name} computes other values than torch's {torch_source.op_db()[key].name} on this sample")
        leaves = [jnp.asarray(a, dtype=getattr(jnp, dtype)) for a in arrays]
    return Case(fn, leaves, True, True)


def mpmath_function(name, index, dtype, made):
    if len(made.leaves) != 1:
        return None
    return mpmath_counterpart(torch_source.op_db()[pairs()[name]].name, (), {})


def counterpart_on(opinfo_name, arrays, expected):
    """("jax", backend, fn, arrays) when JAX's counterpart of ``opinfo_name`` computes ``expected`` at
    ``arrays`` (float64), else None."""
    import jax
    import jax.numpy as jnp

    from gradverify.check import backend_for

    resolved = resolve(opinfo_name)
    if resolved is None:
        return None
    fn = _as_tuple(resolved[1])
    with jax.enable_x64(True):
        try:
            natives = [jnp.asarray(a) for a in arrays]
            if not _same_values([np.asarray(y) for y in fn(*natives)], expected):
                return None
        except Exception:  # noqa: BLE001  (another signature: not a counterpart)
            return None
    return "jax", backend_for(natives), fn, arrays


def other_framework(name, index, dtype, made):
    """("torch", backend, fn, float64 arrays): the OpInfo op itself on the same inputs."""
    import torch

    from gradverify.check import backend_for

    key = pairs()[name]
    arrays = [np.asarray(x, dtype=np.float64) for x in made.leaves]
    fn = torch_source.case(key, index, "float64").fn
    return "torch", backend_for([torch.from_numpy(a) for a in arrays]), fn, arrays


native_checker = "jax check_grads"


def native_confirmation(fn, leaves, mode):
    """Does ``jax.test_util.check_grads`` (float64) agree that ``mode`` is wrong?  None when it does not apply."""
    import jax
    from jax.test_util import check_grads

    if np.dtype(leaves[0].dtype) != np.float64 or mode == "value":
        return None
    order, modes = (2, ["rev"]) if mode == "second order" else (1, ["fwd" if mode == "forward" else "rev"])
    with jax.enable_x64(True):
        try:
            check_grads(fn, tuple(leaves), order=order, modes=modes)
        except AssertionError:
            return True
        except Exception:  # noqa: BLE001
            return None
    return False


def reproducer_call(name, index, dtype) -> str:
    """Code defining ``XS`` (the sample's exact inputs) and ``outputs(*xs)`` (the JAX function, as a tuple)."""
    _, arrays = _plain_arrays(name, index, dtype)
    space, attribute = name.rsplit(".", 1)
    inputs = ", ".join(f"jnp.asarray(np.array({a.tolist()!r}), dtype=jnp.{dtype})" for a in arrays)
    return "\n".join([
        "import jax", "import jax.numpy as jnp", "import numpy as np", f"from {space} import {attribute}", "",
        "jax.config.update('jax_enable_x64', True)", f"XS = [{inputs}]", "", "",
        "def outputs(*xs):", f"    result = {attribute}(*xs)",
        "    return tuple(result) if isinstance(result, (tuple, list)) else (result,)", ""])


def expected_failure(name, mode) -> bool:
    """JAX keeps no registry of expected gradient failures."""
    return False
