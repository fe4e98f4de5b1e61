"""Deterministic sample inputs for every op of the table (in the spirit of PyTorch's OpInfo).

:func:`sample_cases` turns an :class:`~gradverify.ops.spec.OpDef` into a list
of ``(arrays, attrs)`` cases.  It is driven by the table: the op's ``kind``
picks the input shapes (broadcasting pairs for broadcasting ops, batched and
1-D matmuls, ...), the names of its attributes pick attribute variants (every
``axis`` with and without ``keepdims`` for reductions, several exponents ...),
each input's :class:`~gradverify.ops.spec.Domain` gives its values, and
``kink_gap`` keeps them away from the points where the op is not smooth.  Ops
whose attributes depend on their input's shape (reshape, indexing, joins)
list their cases explicitly in :data:`STRUCTURAL_CASES`.
"""
from __future__ import annotations

import itertools

import numpy as np

from .spec import OpDef

#: Input shapes per op kind (one tuple of shapes per case, one shape per input).
KIND_SHAPES = {
    "unary": [((),), ((5,),), ((2, 3, 4),)],
    "binary": [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((3, 1), (1, 4)), ((), (2, 3)), ((2, 1, 4), (3, 1))],
    "select": [((3, 4), (3, 4), (3, 4)), ((3, 1), (3, 4), (4,)), ((2, 3), (), (1, 3))],
    "matmul": [
        ((3, 4), (4, 2)),
        ((4,), (4, 3)),
        ((3, 4), (4,)),
        ((4,), (4,)),
        ((2, 3, 4), (4, 5)),
        ((2, 1, 3, 4), (3, 4, 2)),
        ((4,), (2, 4, 3)),
    ],
    "linear": [((3, 4), (2, 4), (2,)), ((4,), (3, 4), (3,)), ((2, 3, 4), (5, 4), (5,))],
    "reduction": [((3, 4, 2),), ((),)],
    "normalize": [((3, 5),), ((2, 3, 4),), ((4,),)],
}

#: Shapes of ops whose inputs do not broadcast (same shape everywhere).
SAME_SHAPES = [((3, 4), (3, 4)), ((5,), (5,)), ((), ())]

#: Loss shapes: with a class-index input, (N, C) logits and (N,) targets; C exceeds
#: the class-index domain's sample range, so every sampled class exists.
CLASS_LOSS_SHAPES = [((4, 5), (4,)), ((1, 5), (1,)), ((6, 5), (6,))]

#: Values tried for attributes with these names (filtered to the default's type).
ATTR_VARIANTS = {
    "axis": [None, 0, -1, (0, 2)],
    "keepdims": [False, True],
    "exponent": [2.0, 0.5, -1.5, 0.0],
    "dtype": ["float64", "float32"],
}

_INDEXED_SHAPE = (4, 5)
#: Basic, negative-step, integer-array (with repeats) and mixed indices into a (4, 5) array.
INDICES = [
    2,
    (slice(1, 3), slice(None, None, 2)),
    (-1, slice(None, None, -1)),
    (np.array([0, 2, 2, 3]),),
    (np.array([3, 1, 3]), np.array([4, 0, 4])),
    (Ellipsis, np.array([1, -1, 1])),
    (slice(None), np.array([[0, 1], [1, 4]])),
    (np.array([True, False, True, True]),),
]


def _indexed_shape(index):
    return np.empty(_INDEXED_SHAPE)[index].shape


#: Cases of ops whose attributes are tied to their input shapes: (input shapes, attrs).
STRUCTURAL_CASES = {
    "reshape": [
        (((2, 3, 4),), {"shape": (4, 6)}),
        (((3, 4),), {"shape": (12,)}),
        (((6,),), {"shape": (2, -1)}),
        (((),), {"shape": (1, 1)}),
    ],
    "permute": [
        (((2, 3, 4),), {"axes": (2, 0, 1)}),
        (((3, 4),), {"axes": (1, 0)}),
        (((2, 3, 4),), {"axes": (0, 2, 1)}),
    ],
    "broadcast_to": [
        (((3, 1),), {"shape": (2, 3, 4)}),
        (((),), {"shape": (2, 2)}),
        (((4,),), {"shape": (3, 4)}),
    ],
    "sum_to": [
        (((2, 3, 4),), {"shape": (3, 1)}),
        (((3, 4),), {"shape": (4,)}),
        (((3, 4),), {"shape": ()}),
        (((3, 4),), {"shape": (3, 4)}),
    ],
    "unsqueeze": [(((3, 4),), {"axis": 0}), (((3, 4),), {"axis": -1}), (((3, 4),), {"axis": 1}), (((),), {"axis": 0})],
    "squeeze": [
        (((3, 1, 4),), {"axis": None}),
        (((1, 4, 1),), {"axis": 0}),
        (((1, 4, 1),), {"axis": -1}),
        (((1, 4, 1),), {"axis": (0, 2)}),
    ],
    "getitem": [((_INDEXED_SHAPE,), {"index": index}) for index in INDICES],
    "scatter_add": [((_indexed_shape(index),), {"index": index, "shape": _INDEXED_SHAPE}) for index in INDICES],
    "concatenate": [
        (((2, 3), (4, 3)), {"axis": 0}),
        (((3, 2), (3, 1), (3, 4)), {"axis": -1}),
        (((5,),), {"axis": 0}),
    ],
    "layer_norm": [
        (((3, 5), (5,), (5,)), {"normalized_shape": (5,)}),
        (((2, 3, 4), (3, 4), (3, 4)), {"normalized_shape": (3, 4)}),
        (((4,), (4,), (4,)), {"normalized_shape": (4,), "eps": 1e-3}),
    ],
    "cross_entropy_backward": [(((), (4, 5), (4,)), {}), (((), (1, 5), (1,)), {}), (((), (6, 5), (6,)), {})],
    "stack": [
        (((3, 4),) * 3, {"axis": 0}),
        (((3, 4),) * 2, {"axis": -1}),
        (((2,),) * 3, {"axis": 1}),
        (((),) * 3, {"axis": 0}),
    ],
}

#: Inputs exactly at the kinks of each non-smooth op (zeros, bounds, ties), where the
#: table's conventions decide the derivative: (inputs, attrs).
KINK_CASES = {
    "relu": [(([-1.0, 0.0, 0.0, 2.0],), {})],
    "abs": [(([-1.0, 0.0, 0.0, 2.0],), {})],
    "clip": [(([-2.0, -1.0, 0.0, 1.0, 2.0],), {"lo": -1.0, "hi": 1.0})],
    "maximum": [(([1.0, 2.0, -1.0], [1.0, 0.0, -1.0]), {})],
    "minimum": [(([1.0, 2.0, -1.0], [1.0, 0.0, -1.0]), {})],
    "amax": [
        (([[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]],), {"axis": 1, "keepdims": False}),
        (([[1.0, 3.0, 3.0], [2.0, 3.0, 2.0]],), {"axis": None, "keepdims": False}),
    ],
    "amin": [
        (([[1.0, 1.0, 3.0], [2.0, 2.0, 2.0]],), {"axis": 1, "keepdims": True}),
        (([[1.0, 1.0, 3.0], [1.0, 3.0, 2.0]],), {"axis": (0, 1), "keepdims": False}),
    ],
}


def kink_cases(op: OpDef, dtype=np.float64):
    """Inputs of the non-smooth ``op`` exactly at its kinks, as a list of ``(arrays, attrs)``."""
    if op.smooth:
        raise ValueError(f"op: {op.name!r} is smooth and has no kinks")
    if op.name not in KINK_CASES:
        raise KeyError(f"{op.name!r} has a kink_gap but no entry in KINK_CASES")
    return [(tuple(np.asarray(a, dtype=dtype) for a in inputs), dict(attrs)) for inputs, attrs in KINK_CASES[op.name]]


#: Smallest distance from a kink (in value units) that sampled inputs keep.
KINK_MARGIN = 0.1
_MAX_DRAWS = 200


def _variants(name, default):
    """The ATTR_VARIANTS of attribute ``name`` of the default's type (any type for a None default)."""
    values = ATTR_VARIANTS.get(name, [default])
    if default is None:
        return values
    return [v for v in values if type(v) is type(default)]


def _axes_fit(attrs, ndim):
    """True when the ``axis`` attribute (if any) names existing axes of an ``ndim``-d input."""
    axis = attrs.get("axis")
    if axis is None:
        return True
    return all(-ndim <= a < ndim for a in np.atleast_1d(axis))


def _attr_combinations(op: OpDef):
    names = list(op.attrs)
    for values in itertools.product(*(_variants(n, op.attrs[n]) for n in names)):
        yield dict(zip(names, values))


def _generic_cases(op: OpDef):
    """(shapes, attrs) of an op whose cases follow from its kind and attribute names."""
    if op.kind == "loss":
        shapes = CLASS_LOSS_SHAPES if any(d.integer for d in op.domains) else SAME_SHAPES
    elif op.kind in ("binary", "select") and not op.broadcasts:
        shapes = [s[:1] * len(op.domains) for s in SAME_SHAPES]
    elif op.kind in KIND_SHAPES:
        shapes = KIND_SHAPES[op.kind]
    else:
        raise KeyError(f"{op.name!r}: ops of kind {op.kind!r} list their cases in STRUCTURAL_CASES")
    for input_shapes in shapes:
        for attrs in _attr_combinations(op):
            if _axes_fit(attrs, len(input_shapes[0])):
                yield input_shapes, attrs


def sample_values(domain, shape, dtype, rng):
    """Values drawn from ``domain.sample`` (integers for integer domains, random signs for nonzero ones)."""
    lo, hi = domain.sample
    if domain.integer:
        return rng.integers(int(lo), int(hi) + 1, size=shape)
    values = rng.uniform(lo, hi, size=shape)
    if domain.exclude_zero and domain.low < 0:
        values = values * rng.choice([-1.0, 1.0], size=shape)
    return np.asarray(values, dtype=dtype)


def _draw(op: OpDef, shapes, attrs, dtype, rng):
    """Inputs of ``shapes`` inside the op's domains and at least KINK_MARGIN from its kinks."""
    domains = op.domains * len(shapes) if op.variadic else op.domains
    for _ in range(_MAX_DRAWS):
        arrays = tuple(sample_values(d, s, dtype, rng) for d, s in zip(domains, shapes))
        if op.kink_gap is None or np.all(np.abs(op.kink_gap(*arrays, **attrs)) >= KINK_MARGIN):
            return arrays
    raise RuntimeError(f"{op.name}: no sample {KINK_MARGIN} away from the kinks in {_MAX_DRAWS} draws ({shapes})")


def sample_cases(op: OpDef, dtype=np.float64, rng=None):
    """Sample inputs of ``op`` as a list of ``(arrays, attrs)``, floating inputs in ``dtype``.

    Deterministic for a given ``rng`` (a ``numpy.random.Generator``; by
    default one seeded from the op's name, so every op gets its own values).
    """
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise ValueError(f"dtype: expected a floating dtype, got {dtype}")
    if rng is None:
        rng = np.random.default_rng(list(op.name.encode()))
    structural = STRUCTURAL_CASES.get(op.name)
    plans = structural if structural is not None else _generic_cases(op)
    return [(_draw(op, shapes, attrs, dtype, rng), dict(attrs)) for shapes, attrs in plans]
