"""Hypothesis strategies for random computation graphs over the op table, with their inputs.

``cases()`` draws a :class:`Case`: a :class:`~gradverify.fuzz.graph.Graph`
(several inputs, fan-out, broadcasting, reductions, shape ops, indexing,
losses, and data-dependent branches and loops), concrete inputs, a random
cotangent for the output and random tangents for the inputs.

The graph is built one node at a time while its values are computed (in
float64, by the table's forwards), so every choice can look at the values it
will see:

- an op is offered only where its operands lie inside its domain
  (``OpDef.domains``) with room to spare, and away from its kinks
  (``OpDef.kink_gap``) and ties;
- values that would overflow or lose all precision (beyond ``VALUE_BOUND``)
  are never produced;
- branch and loop thresholds are placed away from the sums they compare;
- input values are *nudged* apart from 0 and from each other, never rejected,
  so shrinking stays smooth.

Every distance kept is ``MARGIN * (1 + |value|)``: wide enough that a finite
difference step, float32 rounding or a 30-digit evaluation all take the same
path through the graph.
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

from gradverify.fuzz.graph import ApiNode, Branch, Const, Graph, Loop, OpNode
from gradverify.fuzz.surface import FUNCTIONS, for_backend
from gradverify.ops import TABLE

__all__ = ["Case", "cases", "graphs", "nudged_arrays", "nudge", "INPUT_RANGES", "MARGIN", "VALUE_BOUND", "MAX_ELEMENTS"]

MARGIN = 0.05
VALUE_BOUND = 1e4
MAX_ELEMENTS = 24
# Tails start where float32 sigmoid and tanh round to 1: a float32 reference then says nothing
# about accuracy there, so the float64 ground truth alone judges the rules.
# Wide inputs saturate softmax-like ops (one entry of a group 37 or more above the rest
# rounds its probability to 1 in float64), where rules built from rounded outputs cancel.
# Where naive formulas lose digits: near 0 (log(1 + x), exp(x) - 1; magnitudes 1e-7 to 1e-2, either sign),
# and beyond float32's exp range (softplus, logsumexp at |x| > 88.7).
INPUT_RANGES = {"normal": (-3.0, 3.0), "positive": (0.2, 4.0), "tail": (20.0, 40.0), "wide": (-45.0, 45.0),
                "tiny": (-7.0, -2.0), "huge": (60.0, 120.0)}
FOCUS_MODES = {
    "log1p": ("tiny", "tiny", "normal"), "api.log1p": ("tiny", "tiny", "normal"),
    "api.expm1": ("tiny", "tiny", "normal"), "softplus": ("huge", "huge", "tail", "normal"),
    "api.F.softplus": ("huge", "tail", "normal"), "logsumexp": ("huge", "wide", "normal"),
    "api.logsumexp": ("huge", "wide", "normal"),
}
"""A focused campaign's inputs for ops whose naive formulas lose digits in a known region."""
SIGNED_MODES = ("tail", "tiny", "huge")
"""Modes whose range is of magnitudes (tiny: of decimal exponents); each entry gets a random sign."""


@dataclass(frozen=True)
class Case:
    """A graph with the concrete point, cotangent and tangents its derivatives are checked at."""

    graph: Graph
    inputs: tuple
    cotangent: np.ndarray
    tangents: tuple


@dataclass(frozen=True)
class _Value:
    shape: tuple
    dtype: str
    data: np.ndarray


def _ops_of(*kinds):
    return tuple(name for name, opdef in TABLE.items() if opdef.kind in kinds)


UNARY = _ops_of("unary")
BINARY = _ops_of("binary")
REDUCTIONS = _ops_of("reduction")
NORMALIZATIONS = _ops_of("normalize")
SMOOTH_LOOP_BODIES = ("sin", "cos", "tanh", "sigmoid", "softplus", "neg")


def _room(data):
    return MARGIN * (1.0 + np.abs(data))


def _in_domain(op, position, data) -> bool:
    if op == "pow_scalar":  # the table's domain is that of every exponent; integer ones need only x != 0
        return bool(np.all(np.abs(data) >= _room(data)))
    opdef = TABLE[op]
    domain = opdef.domains[min(position, len(opdef.domains) - 1)]
    return bool(np.all(domain.max_step(data) >= _room(data)))


def _clear_of_kinks(op, datas, attrs) -> bool:
    gap_fn = TABLE[op].kink_gap
    if gap_fn is None:
        return True
    scale = max(float(np.max(np.abs(d), initial=0.0)) for d in datas)
    return bool(np.all(np.abs(gap_fn(*datas, **attrs)) >= MARGIN * (1.0 + scale)))


def _tame(data) -> bool:
    return bool(np.all(np.isfinite(data)) and np.all(np.abs(data) <= VALUE_BOUND) and data.size <= MAX_ELEMENTS)


def _forward(op, datas, attrs):
    with np.errstate(all="ignore"):
        return np.asarray(TABLE[op].forward(*datas, **attrs), dtype=np.float64)


def _try_op(op, pool, args, attrs, out_dtype=None):
    """(node, value) for ``op`` on ``args`` if its domains, kinks and output are acceptable, else None."""
    datas = [a.array if isinstance(a, Const) else pool[a].data for a in args]
    for position, (arg, data) in enumerate(zip(args, datas)):
        if not isinstance(arg, Const) and not _in_domain(op, position, data):
            return None
    attr_dict = dict(attrs)
    if not _clear_of_kinks(op, [d for a, d in zip(args, datas) if not isinstance(a, Const)], attr_dict):
        return None
    try:
        out = _forward(op, datas, attr_dict)
    except (ValueError, IndexError, TypeError):
        return None
    if not _tame(out):
        return None
    if out_dtype is None:
        dtypes = [pool[a].dtype for a in args if not isinstance(a, Const)]
        out_dtype = np.result_type(*dtypes).name
    return OpNode(op, tuple(args), tuple(attrs)), _Value(out.shape, out_dtype, out)


def _pick(draw, pool, suitable=lambda value: True):
    """Index of a pool value satisfying ``suitable``.

    Half of the draws (and the shrink target) take the most recent one, so
    graphs grow deep and few nodes are left dead.
    """
    return _choose(draw, [i for i in range(len(pool) - 1, -1, -1) if suitable(pool[i])])


def _choose(draw, candidates):
    """One of ``candidates`` (most recent first), half of the draws the first; None if there are none."""
    if not candidates:
        return None
    k = draw(st.integers(0, 2 * (len(candidates) - 1)))
    return candidates[max(0, k - (len(candidates) - 1))]


def _only(ops, attempts):
    """The attempts (inner functions named after their op) for ``ops``; all of them when ``ops`` is None."""
    return attempts if ops is None else [attempt for attempt in attempts if attempt.__name__ in ops]


def _first(draw, attempts):
    """The first non-None result of ``attempts`` (callables), starting at a drawn position."""
    if not attempts:
        return None
    start = draw(st.integers(0, len(attempts) - 1))
    for k in range(len(attempts)):
        result = attempts[(start + k) % len(attempts)]()
        if result is not None:
            return result
    return None


# ------------------------------------------------------------------ builders
def _unary_attrs(draw, op, value):
    """Attribute choices for a unary op, placed so that they respect its kinks."""
    if op == "pow_scalar":
        # Integer exponents hold for negative bases too (torch and numpy agree there).
        choices = (2.0, 3.0, -1.0, -2.0) + (() if np.any(value.data <= 0) else (0.5, 1.5))
        return (("exponent", draw(st.sampled_from(choices))),)
    if op == "astype":
        return (("dtype", "float64" if value.dtype == "float32" else "float32"),)
    if op == "clip":
        flat = np.unique(value.data)
        cuts = np.concatenate([[flat[0] - 1.0], (flat[:-1] + flat[1:]) / 2, [flat[-1] + 1.0]])
        lo = draw(st.integers(0, len(cuts) - 2))
        hi = draw(st.integers(lo + 1, len(cuts) - 1))
        return (("lo", round(float(cuts[lo]), 3)), ("hi", round(float(cuts[hi]), 3)))
    return ()


def _suits_some(ops, position):
    """A pool-value predicate: inside the domain of one of ``ops`` at argument ``position``."""
    return lambda value: any(_in_domain(op, position, value.data) for op in ops)


def _unary(draw, pool, ops=UNARY, operand=None):
    index = _pick(draw, pool, _suits_some(ops, 0)) if operand is None else operand
    if index is None:
        return None
    candidates = [op for op in ops if _in_domain(op, 0, pool[index].data)]
    while candidates:
        op = draw(st.sampled_from(candidates))
        attrs = _unary_attrs(draw, op, pool[index])
        built = _try_op(op, pool, (index,), attrs, dict(attrs).get("dtype"))
        if built is not None:
            return built
        candidates.remove(op)
    return None


def _broadcastable(a, b) -> bool:
    try:
        shape = np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        return False
    return int(np.prod(shape)) <= MAX_ELEMENTS


def _partner(draw, pool, a):
    """A second operand broadcastable with ``pool[a]``: another value if there is one, else ``a`` itself."""
    others = [i for i in range(len(pool) - 1, -1, -1) if i != a and _broadcastable(pool[a], pool[i])]
    return _choose(draw, others) if others else a


def _binary(draw, pool, ops=BINARY):
    a = _pick(draw, pool, _suits_some(ops, 0))
    if a is None:
        return None
    b = _partner(draw, pool, a)
    options = [built for op in ops if (built := _try_op(op, pool, (a, b), ())) is not None]
    return draw(st.sampled_from(options)) if options else None


def _where(draw, pool, ops=None):
    a = _pick(draw, pool)
    b = _pick(draw, pool, lambda v: _broadcastable(pool[a], v))
    if b is None:
        return None
    shape = np.broadcast_shapes(pool[a].shape, pool[b].shape)
    bits = draw(st.lists(st.booleans(), min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
    return _try_op("where", pool, (Const(np.array(bits, dtype=bool).reshape(shape)), a, b), ())


def _matmul(draw, pool, ops=None):
    def fits(a, b):  # numpy's matmul, batched: leading axes broadcast
        if not a.shape or not b.shape or a.shape[-1] != b.shape[-2 if len(b.shape) >= 2 else 0]:
            return False
        try:
            batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
        except ValueError:
            return False
        return int(np.prod(batch + a.shape[-2:-1] + b.shape[-1:] if len(b.shape) >= 2 else batch)) <= MAX_ELEMENTS

    stacked = _pick(draw, pool, lambda v: len(v.shape) >= 3)
    if stacked is not None and draw(st.booleans()):
        # A batch of matrices times its own transposes: batched matmul, which few value pairs allow.
        axes = tuple(range(len(pool[stacked].shape) - 2)) + (-1, -2)
        axes = tuple(a % len(pool[stacked].shape) for a in axes)
        transposed = _try_op("permute", pool, (stacked,), (("axes", axes),))
        product = _try_op("matmul", pool + [transposed[1]], (stacked, len(pool)), ())
        return None if product is None else [transposed, product]
    a = _pick(draw, pool, lambda v: any(fits(v, w) for w in pool))
    if a is None:
        return None
    b = _pick(draw, pool, lambda w: fits(pool[a], w))
    return _try_op("matmul", pool, (a, b), ())


def _linear(draw, pool, ops=None):
    def weight_of(x):
        return lambda w: len(w.shape) == 2 and w.shape[1] == x.shape[-1]

    x = _pick(draw, pool, lambda v: bool(v.shape) and any(weight_of(v)(w) for w in pool))
    if x is None:
        return None
    w = _pick(draw, pool, weight_of(pool[x]))
    # A bias of shape (out,) among the values is rare (it needs a square frame): else a constant one.
    b = _pick(draw, pool, lambda v: v.shape == pool[w].shape[:1])
    if b is None:
        out = pool[w].shape[0]
        b = Const(np.array(draw(st.lists(st.floats(-2, 2, width=32), min_size=out, max_size=out)),
                           dtype=pool[w].dtype))
    return _try_op("linear", pool, (x, w, b), ())


def _axis_choice(draw, ndim):
    if ndim == 0:
        return None
    choices = [None] + list(range(ndim)) + ([tuple(range(ndim))] if ndim > 1 else [])
    return draw(st.sampled_from(choices))


def _reduction(draw, pool, ops=REDUCTIONS):
    a = _pick(draw, pool)
    attrs = (("axis", _axis_choice(draw, pool[a].data.ndim)), ("keepdims", draw(st.booleans())))
    options = [built for op in ops if (built := _try_op(op, pool, (a,), attrs)) is not None]
    return draw(st.sampled_from(options)) if options else None


def _shape_op(draw, pool, ops=None):
    a = _pick(draw, pool)
    shape = pool[a].shape
    ndim, size = len(shape), int(np.prod(shape))

    def reshape():
        targets = [t for t in {(size,), (size, 1), (1,) + shape, shape[::-1]} if t != shape]
        return _try_op("reshape", pool, (a,), (("shape", draw(st.sampled_from(sorted(targets)))),))

    def permute():
        if ndim < 2:
            return None
        axes = tuple(draw(st.permutations(range(ndim))))
        return _try_op("permute", pool, (a,), (("axes", axes),))

    def broadcast_to():
        target = tuple(2 if n == 1 else n for n in shape)
        target = target if target != shape else (2,) + shape
        return _try_op("broadcast_to", pool, (a,), (("shape", target),))

    def sum_to():
        if ndim == 0:
            return None
        # Leading axes dropped and middle axes kept as size 1, as a broadcast operand's cotangent is reduced.
        lead = draw(st.integers(0, ndim - 1))
        kept = [n if draw(st.booleans()) else 1 for n in shape[lead:]]
        if tuple(kept) == shape and lead == 0:
            kept[draw(st.integers(0, ndim - 1))] = 1
        return _try_op("sum_to", pool, (a,), (("shape", tuple(kept)),))

    def unsqueeze():
        return _try_op("unsqueeze", pool, (a,), (("axis", draw(st.integers(-ndim - 1, ndim))),))

    def squeeze():
        ones = [i for i, n in enumerate(shape) if n == 1]
        if not ones:
            return None
        return _try_op("squeeze", pool, (a,), (("axis", draw(st.sampled_from(ones + [None]))),))

    return _first(draw, _only(ops, [reshape, permute, broadcast_to, sum_to, unsqueeze, squeeze]))


def _index_op(draw, pool, ops=None):
    a = _pick(draw, pool, lambda v: len(v.shape) >= 1)
    if a is None:
        return None
    shape = pool[a].shape

    def positions(length, limit):
        return np.array(draw(st.lists(st.integers(0, limit - 1), min_size=length, max_size=length)), dtype=np.int64)

    def getitem():
        forms = [
            draw(st.integers(-shape[0], shape[0] - 1)),
            slice(draw(st.integers(0, shape[0] - 1)), None, None),
            positions(draw(st.integers(1, 4)), shape[0]),
        ]
        if len(shape) >= 2:
            forms.append((slice(None, None, None), positions(draw(st.integers(1, 3)), shape[1])))
        return _try_op("getitem", pool, (a,), (("index", draw(st.sampled_from(forms))),))

    def scatter_add():
        rows = shape[0] + draw(st.integers(0, 1))
        index = positions(shape[0], rows)
        return _try_op("scatter_add", pool, (a,), (("index", index), ("shape", (rows,) + shape[1:])))

    return _first(draw, _only(ops, [getitem, scatter_add]))


def _join(draw, pool, ops=None):
    a = _pick(draw, pool, lambda v: len(v.shape) >= 1)
    if a is None:
        return None
    shape = pool[a].shape
    axis = draw(st.integers(0, len(shape) - 1))
    count = draw(st.integers(2, 4))  # 3+ operands: a rule that splits a cotangent in two is wrong there

    def operands(suits):
        others = [_pick(draw, pool, suits) for _ in range(count - 1)]
        return (a,) + tuple(others)

    def concatenate():
        return _try_op("concatenate", pool, operands(lambda v: len(v.shape) == len(shape) and v.shape[:axis]
                                                      + v.shape[axis + 1 :] == shape[:axis] + shape[axis + 1 :]),
                       (("axis", axis - len(shape) if draw(st.booleans()) else axis),))

    def stack():
        # The new axis, negative half of the time (counted from the end of the result).
        new = draw(st.integers(0, len(shape)))
        return _try_op("stack", pool, operands(lambda v: v.shape == shape),
                       (("axis", new - len(shape) - 1 if draw(st.booleans()) else new),))

    return _first(draw, _only(ops, [concatenate, stack]))


def _layer_norm_operands(draw, pool):
    """(value, normalized_shape, weight, bias) for a layer norm (weight and bias: values of the graph or
    constants), or None where no value has a trailing axis of 2 or more entries that differ by the margin."""
    a = _pick(draw, pool, lambda v: len(v.shape) >= 1 and v.shape[-1] >= 2)
    if a is None:
        return None
    shape = pool[a].shape
    normalized = shape[-2:] if len(shape) >= 2 and draw(st.booleans()) else shape[-1:]
    spread = _call_surface("var", [pool[a].data], {"dim": tuple(range(-len(normalized), 0)), "correction": 0})
    if np.min(spread) < MARGIN:
        return None
    affine = []
    for _ in ("weight", "bias"):
        k = _pick(draw, pool, lambda v: v.shape == normalized and v.dtype == pool[a].dtype)
        affine.append(k if k is not None and draw(st.booleans()) else Const(
            _floats(draw, normalized, 0.5, 2.0, pool[a].dtype)))
    return a, normalized, *affine


def _normalize(draw, pool, ops=NORMALIZATIONS):
    def along_an_axis(op):
        # Normalising over an axis of length 1 is the constant 1 (or 0): prefer values with a longer axis,
        # and matrices over vectors, whose other axis tests the axis handling.
        def rank(value):
            return (any(n > 1 for n in value.shape), len(value.shape) >= 2)

        best = max((rank(v) for v in pool if v.shape), default=None)
        if best is None:
            return None
        a = _pick(draw, pool, lambda v: bool(v.shape) and rank(v) == best)
        long_axes = [i for i, n in enumerate(pool[a].shape) if n > 1] or list(range(len(pool[a].shape)))
        return _try_op(op, pool, (a,), (("axis", draw(st.sampled_from(long_axes))),))

    def layer_norm():
        operands = _layer_norm_operands(draw, pool)
        if operands is None:
            return None
        a, normalized, weight, bias = operands
        return _try_op("layer_norm", pool, (a, weight, bias), (("normalized_shape", normalized),))

    return _first(draw, [layer_norm if op == "layer_norm" else lambda op=op: along_an_axis(op) for op in ops])


def _loss(draw, pool, ops=None):
    def mse_loss():
        a = _pick(draw, pool)
        shape = pool[a].shape
        values = draw(st.lists(st.floats(-2, 2, width=32), min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
        target = Const(np.array(values, dtype=pool[a].dtype).reshape(shape))
        return _try_op("mse_loss", pool, (a, target), ())

    def logits_and_labels():
        a = _pick(draw, pool, lambda v: len(v.shape) == 2)
        if a is None:
            return None, None
        rows, classes = pool[a].shape
        labels = draw(st.lists(st.integers(0, classes - 1), min_size=rows, max_size=rows))
        return a, Const(np.array(labels, dtype=np.int64))

    def cross_entropy():
        a, labels = logits_and_labels()
        return None if a is None else _try_op("cross_entropy", pool, (a, labels), ())

    def cross_entropy_backward():
        a, labels = logits_and_labels()
        if a is None:
            return None
        # The loss's cotangent: a 0-d value of the graph when there is one, else a constant.
        g = _pick(draw, pool, lambda v: v.shape == () and v.dtype == pool[a].dtype)
        if g is None:
            g = Const(np.array(draw(st.floats(-2, 2, width=32)), dtype=pool[a].dtype))
        return _try_op("cross_entropy_backward", pool, (g, a, labels), ())

    return _first(draw, _only(ops, [mse_loss, cross_entropy, cross_entropy_backward]))


def _call_surface(function, datas, attrs, field=""):
    api = for_backend("numpy")
    fn = getattr(api.F, function[2:]) if function.startswith("F.") else getattr(api, function)
    with np.errstate(all="ignore"):
        out = fn(*datas, **attrs)
    return np.asarray(getattr(out, field) if field else out, dtype=np.float64)


def _try_api(function, pool, args, attrs=(), field=""):
    """(node, value) for a call of the public API's ``function`` if its output is tame, else None."""
    def data(arg):
        return arg.array if isinstance(arg, Const) else pool[arg].data if isinstance(arg, int) else arg

    datas = [data(a) for a in args]
    try:
        options = {key: value.array if isinstance(value, Const) else value for key, value in attrs}
        out = _call_surface(function, datas, options, field)
    except (ValueError, IndexError, TypeError, ZeroDivisionError):
        return None
    if not _tame(out):
        return None
    dtype = np.result_type(*[pool[a].dtype for a in args if isinstance(a, int)]).name
    return ApiNode(function, tuple(args), tuple(attrs), field), _Value(out.shape, dtype, out)


def _separated(data, axis):
    """Whether the entries of ``data`` along ``axis`` are apart by the margin (no ties for a sort to swap)."""
    ordered = np.sort(data, axis=axis)
    gaps = np.diff(ordered, axis=axis)
    return bool(np.all(gaps >= MARGIN * (1.0 + np.abs(ordered).max(initial=0.0))))


def _dim_choice(draw, ndim, negative=True):
    """An axis of a value of ``ndim`` axes, written negative half of the time when ``negative``."""
    axis = draw(st.integers(0, ndim - 1))
    return axis - ndim if negative and draw(st.booleans()) else axis


def _floats(draw, shape, lo, hi, dtype):
    n = int(np.prod(shape))
    return np.array(draw(st.lists(st.floats(lo, hi, width=32), min_size=n, max_size=n)), dtype=dtype).reshape(shape)


def _api(draw, pool, ops=None):
    """A call of a composed function of the public API (all its options), on values it suits."""
    def vector():
        return _pick(draw, pool, lambda v: len(v.shape) >= 1 and int(np.prod(v.shape)) >= 2)

    def moments(function):
        a = vector()
        if a is None:
            return None
        shape = pool[a].shape
        dim = draw(st.sampled_from([None, _dim_choice(draw, len(shape))] + ([(0, -1)] if len(shape) > 1 else [])))
        attrs = [("dim", dim), ("keepdim", draw(st.booleans())), ("correction", draw(st.sampled_from((0, 1, 2))))]
        built = _try_api(function, pool, (a,), attrs)
        # A variance near 0 puts std next to its pole: ask for spread data.
        if built is None or np.min(_call_surface("var", [pool[a].data], dict(attrs))) < MARGIN:
            return None
        return built

    def var():
        return moments("var")

    def std():
        return moments("std")

    def cumsum():
        a = vector()
        return None if a is None else _try_api("cumsum", pool, (a,), (("dim", _dim_choice(draw, len(pool[a].shape))),))

    def prod():
        a = vector()
        if a is None:
            return None
        value, steps, values = pool[a], [], pool
        if draw(st.booleans()):  # exact zeros: the derivative of a product through a zero factor
            mask = np.array(draw(st.lists(st.booleans(), min_size=int(np.prod(value.shape)),
                                          max_size=int(np.prod(value.shape))))).reshape(value.shape)
            zeroed = _try_op("mul", pool, (a, Const(mask.astype(value.dtype))), ())
            if zeroed is None:
                return None
            steps.append(zeroed)
            values = pool + [zeroed[1]]
            a = len(values) - 1
        dim = draw(st.sampled_from([None, _dim_choice(draw, len(value.shape))]))
        attrs = () if dim is None else (("dim", dim), ("keepdim", draw(st.booleans())))  # (torch takes no dim=None)
        built = _try_api("prod", values, (a,), attrs)
        return None if built is None else steps + [built]

    def topk():
        a = vector()
        if a is None:
            return None
        dim = _dim_choice(draw, len(pool[a].shape))
        if not _separated(pool[a].data, dim):
            return None
        k = draw(st.integers(1, pool[a].shape[dim]))
        return _try_api("topk", pool, (a,), (("k", k), ("dim", dim), ("largest", draw(st.booleans()))), "values")

    def einsum():
        a = _pick(draw, pool, lambda v: 1 <= len(v.shape) <= 3)
        if a is None:
            return None
        shape = pool[a].shape
        letters = "bij"[3 - len(shape):]
        forms = [(letters[::-1], ()), (letters[1:] if len(shape) > 1 else "", ())]
        for k, other in enumerate(pool):
            if other.shape == shape:
                forms.append((letters, (k,)))
            if len(shape) >= 2 and len(other.shape) == len(shape) and other.shape[:-2] == shape[:-2] \
                    and other.shape[-2] == shape[-1]:
                forms.append((letters[:-1] + "k", (k,)))  # (batched) matrix product
        keep, others = draw(st.sampled_from(forms))
        if others and keep == letters:
            equation = f"{letters},{letters}->{letters[:-1]}"
        elif others:
            equation = f"{letters},{letters[:-2]}jk->{letters[:-1]}k"
        else:
            equation = f"{letters}->{keep}"
        return _try_api("einsum", pool, (equation, a) + others, ())

    def unary(function):
        a = _pick(draw, pool)
        return _try_api(function, pool, (a,), ())

    def expm1():
        return unary("expm1")

    def log1p():
        a = _pick(draw, pool, lambda v: bool(np.all(v.data > -0.5)))
        return None if a is None else _try_api("log1p", pool, (a,), ())

    def logsumexp():
        a = vector()
        return None if a is None else _try_api("logsumexp", pool, (a,), (
            ("dim", _dim_choice(draw, len(pool[a].shape))), ("keepdim", draw(st.booleans()))))

    def softplus():
        a = _pick(draw, pool)
        beta, threshold = draw(st.sampled_from((1.0, 2.0, 0.5))), draw(st.sampled_from((20.0, 10.0, 80.0)))
        if np.any(np.abs(beta * pool[a].data - threshold) < _room(threshold)):
            return None  # torch switches formulas at beta x = threshold
        return _try_api("F.softplus", pool, (a,), (("beta", beta), ("threshold", threshold)))

    def layer_norm():
        operands = _layer_norm_operands(draw, pool)
        if operands is None:
            return None
        a, normalized, weight, bias = operands
        return _try_api("F.layer_norm", pool, (a, normalized, weight, bias), ())

    def binary_cross_entropy_with_logits():
        a = _pick(draw, pool)
        shape = pool[a].shape
        attrs = [("reduction", draw(st.sampled_from(("mean", "sum", "none"))))]
        if draw(st.booleans()):
            attrs.append(("pos_weight", Const(_floats(draw, shape[-1:], 0.5, 3.0, pool[a].dtype))))
        target = Const(_floats(draw, shape, 0.0, 1.0, pool[a].dtype))
        return _try_api("F.binary_cross_entropy_with_logits", pool, (a, target), attrs)

    def smooth_l1_loss():
        a = _pick(draw, pool)
        target = _floats(draw, pool[a].shape, -2.0, 2.0, pool[a].dtype)
        beta = draw(st.sampled_from((0.5, 1.0, 2.0)))
        gap = np.abs(pool[a].data - target)
        if np.any(np.abs(gap - beta) < _room(beta)) or np.any(gap < _room(target)):
            return None  # its kinks: |x - t| = beta and x = t
        return _try_api("F.smooth_l1_loss", pool, (a, Const(target)), (
            ("reduction", draw(st.sampled_from(("mean", "sum", "none")))), ("beta", beta)))

    def mse_loss():
        a = _pick(draw, pool)
        target = Const(_floats(draw, pool[a].shape, -2.0, 2.0, pool[a].dtype))
        return _try_api("F.mse_loss", pool, (a, target), (("reduction", draw(st.sampled_from(("sum", "none")))),))

    attempts = [var, std, cumsum, prod, topk, einsum, expm1, log1p, logsumexp, softplus, layer_norm,
                binary_cross_entropy_with_logits, smooth_l1_loss, mse_loss]
    return _first(draw, attempts if ops is None else [f for f in attempts if f"api.{f.__name__}" in ops
                                                      or f"api.F.{f.__name__}" in ops])


def _threshold(draw, sums, below, above):
    """A round threshold under ``above`` sums and over ``below`` sums with room to spare, or None."""
    lo = max((sums[j] + _room(sums[j]) for j in below), default=-np.inf)
    hi = min((sums[j] - _room(sums[j]) for j in above), default=np.inf)
    if lo >= hi:
        return None
    if np.isinf(lo):
        lo = hi - 2.0 * (1.0 + abs(hi))
    if np.isinf(hi):
        hi = lo + 2.0 * (1.0 + abs(lo))
    t = lo + (hi - lo) * draw(st.sampled_from((0.5, 0.25, 0.75)))
    rounded = round(float(t), 3)
    return rounded if lo <= rounded <= hi else float(t)


def _branch(draw, pool):
    test = _pick(draw, pool)
    operand = _pick(draw, pool)
    then_built = _unary(draw, pool, operand=operand)
    else_built = _unary(draw, pool, operand=operand)
    total = float(np.sum(pool[test].data))
    take_then = draw(st.booleans())
    threshold = _threshold(draw, [total], below=[] if take_then else [0], above=[0] if take_then else [])
    if then_built is None or else_built is None:
        return None
    (then_node, then_value), (else_node, else_value) = then_built, else_built
    if then_value.shape != else_value.shape or then_value.dtype != else_value.dtype:
        return None
    node = Branch(test, operand, threshold, (then_node.op, then_node.attrs), (else_node.op, else_node.attrs))
    return node, then_value if take_then else else_value


def _loop(draw, pool):
    operand = _pick(draw, pool)
    start = pool[operand]
    other = _pick(draw, pool, lambda v: v.dtype == start.dtype and _broadcastable(start, v)
                  and np.broadcast_shapes(start.shape, v.shape) == start.shape) if draw(st.booleans()) else None
    if other is None:
        op, attrs = draw(st.sampled_from(SMOOTH_LOOP_BODIES)), ()
    else:
        op, attrs = draw(st.sampled_from(("mul", "add", "sub"))), ()
    max_iters = draw(st.integers(1, 3))
    values = [start]
    for _ in range(max_iters):
        scratch = pool + [values[-1]]
        args = (len(pool),) if other is None else (len(pool), other)
        built = _try_op(op, scratch, args, attrs, start.dtype)
        if built is None:
            return None
        values.append(built[1])
    sums = [float(np.sum(v.data)) for v in values]
    stop = draw(st.integers(0, max_iters))
    # The loop breaks at the first sum above the threshold: iteration `stop` (or never).
    threshold = _threshold(draw, sums, below=range(stop), above=[stop] if stop < max_iters else [])
    if threshold is None:
        return None
    body = (op, other, attrs)
    return Loop(operand, body, threshold, max_iters), values[min(stop, max_iters)]


def _node_attempts(draw, pool):
    # A builder that finds nothing to do hands over to the next one: the
    # rarely applicable ones sit before ones that always succeed.
    return [
        lambda: _unary(draw, pool),
        lambda: _matmul(draw, pool),
        lambda: _linear(draw, pool),
        lambda: _binary(draw, pool),
        lambda: _normalize(draw, pool),
        lambda: _reduction(draw, pool),
        lambda: _index_op(draw, pool),
        lambda: _shape_op(draw, pool),
        lambda: _loop(draw, pool),
        lambda: _join(draw, pool),
        lambda: _loss(draw, pool),
        lambda: _branch(draw, pool),
        lambda: _where(draw, pool),
        lambda: _api(draw, pool),
    ]


def _focused_attempt(draw, pool, op):
    """One node using ``op`` (a table op name, or ``api.<function>``), or None where no value in the pool suits it."""
    if op in API_CHOICES:
        return _api(draw, pool, ops=(op,))
    return _BUILDERS[TABLE[op].kind](draw, pool, ops=(op,))


_BUILDERS = {
    "unary": _unary, "binary": _binary, "reduction": _reduction, "normalize": _normalize, "shape": _shape_op,
    "index": _index_op, "join": _join, "matmul": _matmul, "linear": _linear, "select": _where, "loss": _loss,
}
_CONTROL_FLOW = {"branch": _branch, "loop": _loop}
API_CHOICES = tuple(f"api.{name}" for name in FUNCTIONS)
NODE_CHOICES = tuple(TABLE) + API_CHOICES + tuple(_CONTROL_FLOW)


# ------------------------------------------------------------------- inputs
def nudge(values, gap):
    """``values`` moved (upwards, order kept) so that they are at least ``gap`` from 0 and from each other.

    Used instead of rejecting draws: kinks at 0 (relu, abs) and ties (maximum,
    amax) are avoided while every draw still yields a usable input.
    """
    flat = np.array(values, dtype=np.float64).reshape(-1)
    previous = -np.inf
    for i in np.argsort(flat, kind="stable"):
        v = max(flat[i], previous + gap)
        if abs(v) < gap:
            v = gap
        flat[i] = previous = v
    return flat.reshape(np.shape(values))


@st.composite
def nudged_arrays(draw, shape, dtype="float64", mode="normal"):
    """An array of ``shape`` with values from ``INPUT_RANGES[mode]`` (tail: either sign), nudged apart."""
    lo, hi = INPUT_RANGES[mode]
    n = int(np.prod(shape))
    values = np.array(draw(st.lists(st.floats(lo, hi), min_size=n, max_size=n)), dtype=np.float64)
    if mode == "tiny":  # apart by a tenth of their size: no tie, and nothing is moved away from 0
        values = 10.0 ** nudge(values, 0.05)
    else:
        values = nudge(values, MARGIN * (1.0 + max(abs(lo), abs(hi))))
    if mode in SIGNED_MODES:
        # Signs after nudging: the magnitudes stay in the tail, equal magnitudes of one sign stay apart.
        values = values * np.array(draw(st.lists(st.sampled_from((1.0, -1.0)), min_size=n, max_size=n)))
    return values.reshape(shape).astype(dtype)


@st.composite
def _input_shapes(draw, count, min_ndim=0):
    # Inputs broadcast against a common frame; a focused frame has no axis of length 1.
    frame = tuple(draw(st.lists(st.integers(2 if min_ndim else 1, 3), min_size=min_ndim, max_size=3)))
    # A focused campaign's first input is the whole frame, so the focus op has real axes to work on.
    shapes = [frame if int(np.prod(frame)) <= 12 else frame[1:]] if min_ndim else []
    for _ in range(count - len(shapes)):
        keep = draw(st.integers(min_ndim, len(frame)))
        shape = tuple(n if draw(st.booleans()) else 1 for n in frame[len(frame) - keep :])
        shapes.append(shape if int(np.prod(shape)) <= 12 else shape[1:])
    return tuple(shapes)


@st.composite
def cases(draw, max_nodes=8, dtypes=("float64", "float32"), focus=None):
    """A :class:`Case`: a graph of 1..``max_nodes`` nodes, its inputs, a cotangent and tangents.

    ``focus`` names a table op to use at the first node where a value suits
    it (to aim a campaign at one rule).
    """
    if max_nodes < 1:
        raise ValueError(f"max_nodes: expected a positive number of nodes, got {max_nodes}")
    if focus is not None and focus not in TABLE and focus not in API_CHOICES:
        raise ValueError(f"focus: {focus!r} is not an op of the table nor api.<function> of the surface")
    dtype = draw(st.sampled_from(dtypes))
    # A focused campaign works on matrices: axis handling is what reductions and normalisations get wrong.
    shapes = draw(_input_shapes(draw(st.integers(1, 3)), min_ndim=0 if focus is None else 2))
    # A focused campaign leans towards the tails and saturation, where rules computed from rounded outputs fail.
    modes = FOCUS_MODES.get(focus, ("tail", "wide", "normal", "positive", "tiny", "huge")) if focus is not None \
        else ("normal", "positive", "tail", "tiny", "huge")
    inputs = tuple(draw(nudged_arrays(s, dtype, draw(st.sampled_from(modes)))) for s in shapes)
    pool = [_Value(x.shape, dtype, x.astype(np.float64)) for x in inputs]
    nodes, focus_pending = [], focus is not None
    for _ in range(draw(st.integers(1, max_nodes))):
        if focus_pending:
            built = _focused_attempt(draw, pool, focus)
            focus_pending = built is None
        else:
            # The op is drawn first, uniformly over the table, so that rarely applicable ops get their turn.
            step = draw(st.sampled_from(NODE_CHOICES))
            built = _CONTROL_FLOW[step](draw, pool) if step in _CONTROL_FLOW else _focused_attempt(draw, pool, step)
        if built is None:
            built = _first(draw, _node_attempts(draw, pool))
        if built is None:
            built = _try_op("neg", pool, (len(pool) - 1,), ())
        for node, value in built if isinstance(built, list) else [built]:
            nodes.append(node)
            pool.append(value)
    graph = Graph(shapes, dtype, tuple(nodes))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    cotangent = rng.standard_normal(pool[-1].shape).astype(pool[-1].dtype)
    tangents = tuple(rng.standard_normal(s).astype(dtype) for s in shapes)
    return Case(graph, inputs, cotangent, tangents)


def graphs(max_nodes=8, dtypes=("float64", "float32")):
    """Graphs alone (each drawn with the inputs that steered it; see :func:`cases`)."""
    return cases(max_nodes=max_nodes, dtypes=dtypes).map(lambda case: case.graph)


def _program_loss(draw, n_out, batch, focus):
    """(loss module name, options) and its target: class indices, or floats of the output's shape."""
    # cross_entropy, the loss of most training programs, is drawn twice as often as each other loss.
    names = ("CrossEntropyLoss",) if focus == "loss_options" else (
        "CrossEntropyLoss", "CrossEntropyLoss", "MSELoss", "L1Loss", "SmoothL1Loss", "BCEWithLogitsLoss") + (
        () if focus == "inplace" else ("NLLLoss",))
    name = draw(st.sampled_from(names))
    options = [("reduction", draw(st.sampled_from(("mean", "sum", "none"))))]
    weight = _floats(draw, (n_out,), 0.25, 3.0, "float64")
    if name in ("CrossEntropyLoss", "NLLLoss"):
        if focus == "loss_options" or draw(st.sampled_from((False, True, True))):
            options.append(("weight", weight))
        if name == "CrossEntropyLoss" and (focus == "loss_options" or draw(st.booleans())):
            options.append(("label_smoothing", draw(st.sampled_from((0.1, 0.25, 0.5)))))
        target = np.array(draw(st.lists(st.integers(0, n_out - 1), min_size=batch, max_size=batch)), dtype=np.int64)
        return (name, tuple(options)), target
    if name == "SmoothL1Loss":
        options.append(("beta", draw(st.sampled_from((0.5, 1.0, 2.0)))))
    if name == "BCEWithLogitsLoss":
        options += [(key, value) for key, value in (("weight", weight), ("pos_weight", _floats(
            draw, (n_out,), 0.25, 3.0, "float64"))) if draw(st.booleans())]
    low = 0.0 if name == "BCEWithLogitsLoss" else -2.0
    return (name, tuple(options)), _floats(draw, (batch, n_out), low, 1.0, "float64")


def _program_optimizer(draw, focus):
    """(optimizer name, options): SGD with its momentum variants, Adam or AdamW, RMSprop, Adagrad with theirs."""
    names = {"sgd_momentum": ("SGD",), "adam": ("Adam", "AdamW"), "rmsprop": ("RMSprop",),
             "adagrad": ("Adagrad",)}.get(focus, ("SGD", "Adam", "AdamW", "RMSprop", "Adagrad"))
    name = draw(st.sampled_from(names))
    decay = ("weight_decay", draw(st.sampled_from((0.0, 0.05))))
    if name == "SGD":
        momentum = draw(st.sampled_from((0.5, 0.9) if focus == "sgd_momentum" else (0.0, 0.5, 0.9)))
        nesterov = bool(momentum) and draw(st.booleans())
        dampening = 0.0 if nesterov else draw(st.sampled_from((0.0, 0.3)))
        return name, (("lr", draw(st.sampled_from((0.05, 0.1, 0.3)))), ("momentum", momentum),
                      ("dampening", dampening), ("nesterov", nesterov), decay, ("maximize", draw(st.booleans())))
    if name == "RMSprop":
        return name, (("lr", draw(st.sampled_from((0.01, 0.05)))), ("alpha", draw(st.sampled_from((0.99, 0.9)))),
                      ("eps", draw(st.sampled_from((1e-8, 1e-3)))), decay,
                      ("momentum", draw(st.sampled_from((0.0, 0.5)))),
                      ("centered", focus == "rmsprop" or draw(st.booleans())))
    if name == "Adagrad":
        return name, (("lr", draw(st.sampled_from((0.05, 0.1, 0.5)))),
                      ("lr_decay", draw(st.sampled_from((0.1, 0.5) if focus == "adagrad" else (0.0, 0.1, 0.5)))),
                      decay, ("initial_accumulator_value", draw(st.sampled_from((0.0, 0.1)))),
                      ("eps", draw(st.sampled_from((1e-10, 1e-3)))))
    decays = (0.01, 0.1) if name == "AdamW" else (0.0, 0.05)
    return name, (("lr", draw(st.sampled_from((0.01, 0.05, 0.1)))),
                  ("betas", draw(st.sampled_from(((0.9, 0.999), (0.5, 0.9))))),
                  ("eps", draw(st.sampled_from((1e-8, 1e-3)))), ("weight_decay", draw(st.sampled_from(decays))),
                  ("amsgrad", draw(st.booleans())))


def _program_scheduler(draw, focus):
    """None, or a learning-rate scheduler (StepLR, ExponentialLR) with its options (StepLR with a step size
    above 1 when ``focus`` asks: every epoch then counts)."""
    if focus != "scheduler" and not draw(st.sampled_from((False, False, True))):
        return None
    gamma = ("gamma", draw(st.sampled_from((0.5, 0.1))))
    if focus == "scheduler" or draw(st.booleans()):
        return "StepLR", (("step_size", draw(st.sampled_from((2, 3) if focus == "scheduler" else (1, 2, 3)))), gamma)
    return "ExponentialLR", (gamma,)


def _program_norm(draw, width, focus):
    """None, or a LayerNorm or BatchNorm1d of ``width`` features with its options (drawn when ``focus`` asks)."""
    if focus not in ("batch_norm", "layer_norm") and not draw(st.booleans()):
        return None
    name = {"batch_norm": "BatchNorm1d", "layer_norm": "LayerNorm"}.get(focus) or draw(
        st.sampled_from(("BatchNorm1d", "LayerNorm")))
    eps = ("eps", draw(st.sampled_from((1e-5, 1e-3))))
    if name == "LayerNorm":
        return name, (width,), (eps, ("elementwise_affine", draw(st.booleans())))
    return name, (width,), (eps, ("momentum", draw(st.sampled_from((0.1, 0.5, None)))),
                            ("affine", draw(st.booleans())),
                            ("track_running_stats", focus == "batch_norm" or draw(st.booleans())))


_PROGRAM_ACTIVATIONS = {"Tanh": {}, "ReLU": {}, "Sigmoid": {}, "GELU": {"approximate": ("none", "tanh")},
                        "ELU": {"alpha": (1.0, 0.5)}, "LeakyReLU": {"negative_slope": (0.01, 0.2)}}


def _program_layers(draw, focus):
    """The layers of a program's Sequential: an Embedding first (or not), then Linear layers with a norm,
    an activation and a Dropout that does nothing (p = 0, or p > 0 in eval mode) before each but the first."""
    layers = []
    if focus == "embedding" or draw(st.sampled_from((False, False, False, True))):
        rows, width = draw(st.integers(2, 5)), draw(st.integers(2, 4))
        padding = (("padding_idx", draw(st.integers(-rows, rows - 1))),) if draw(st.booleans()) else ()
        layers.append(("Embedding", (rows, width), padding))
    else:
        width = draw(st.integers(1, 4))
    linears = 2 if focus in ("batch_norm", "layer_norm", "backward_hook") and not layers else draw(st.integers(1, 2))
    for _ in range(linears):
        if layers:
            norm = _program_norm(draw, width, focus)
            if norm is not None and norm[0] == "BatchNorm1d" and layers[-1][0] == "Linear":
                # As practitioners write it: a bias before a BatchNorm has a zero gradient but for rounding,
                # which Adam, RMSprop and Adagrad would blow up into steps of random sign.
                layers[-1] = ("Linear", layers[-1][1], (("bias", False),))
            activation = draw(st.sampled_from(sorted(_PROGRAM_ACTIVATIONS)))
            options = tuple((key, draw(st.sampled_from(values)))
                            for key, values in _PROGRAM_ACTIVATIONS[activation].items())
            layers += [norm] * (norm is not None) + [(activation, (), options)]
            if draw(st.sampled_from((False, False, False, True))):
                layers.append(("Dropout", (draw(st.sampled_from((0.0, 0.5))),), ()))
        out = draw(st.integers(2, 4))
        layers.append(("Linear", (width, out), ()))
        width = out
    return tuple(layers)


def _generic_floats(draw):
    """A function ``(shape, lo, hi)`` of uniform float64 arrays from a generator seeded by one draw."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return lambda shape, lo, hi: rng.uniform(lo, hi, shape)


def _program_module_hooks(draw, layers, focus):
    """Hooks on layers, ``(layer, kind, factor)`` (see :class:`~gradverify.fuzz.programs.Program`)."""
    if focus not in ("module_hook", "backward_hook") and not draw(st.sampled_from((False, False, True))):
        return ()
    hooks = []
    for k in range(draw(st.integers(1, 2))):
        kinds = ("scale", "observe", "pre_scale") + ("backward_scale", "backward_observe") * (len(layers) > 2)
        if k == 0 and focus in ("module_hook", "backward_hook"):
            kinds = {"module_hook": ("scale", "pre_scale"), "backward_hook": ("backward_scale",)}[focus]
        kind = draw(st.sampled_from(kinds))
        # A pre-hook scaling an Embedding's integer indices would be a type error, not a program, and the first
        # layer's grad_input is (None,) (its input needs no grad); PyTorch refuses an in-place change of a
        # backward-hooked module's output (a view made in a custom Function): a step may change the model's output.
        first = 1 if (kind == "pre_scale" and layers[0][0] == "Embedding") or kind == "backward_scale" else 0
        last = len(layers) - (2 if kind.startswith("backward") else 1)
        hooks.append((draw(st.integers(first, last)), kind, draw(st.sampled_from((0.5, 2.0, -1.0)))))
    return tuple(hooks)


def _program_step(draw, n_params, inplace_allowed, focus, first, others=()):
    """A training step (with its backward, hook and in-place variants), or (not first) one of ``others``:
    a no_grad update of a parameter, a switch of the model's mode, a layer hook's removal."""
    from gradverify.fuzz.programs import NoGradUpdate, Train

    if not first and others and draw(st.sampled_from((False, False, True))):
        return draw(st.sampled_from(others))
    if not first and focus is None and draw(st.sampled_from((False, False, False, True))):
        method = draw(st.sampled_from(("add_", "mul_", "clamp_")))
        args = {"add_": (0.25,), "mul_": (0.5,), "clamp_": (-0.5, 0.5)}[method]
        return NoGradUpdate(draw(st.integers(0, n_params - 1)), method, args)
    backward = "retained" if focus == "accumulation" and first else draw(
        st.sampled_from(("once", "once", "retained", "freed")))
    hook = None
    if (focus == "hook" and first) or draw(st.sampled_from((False, False, True))):
        kinds = ("scale", "replace") if focus == "hook" else ("scale", "replace", "observe")
        hook = (draw(st.sampled_from(("output",) + tuple(range(n_params)))), draw(st.sampled_from(kinds)),
                draw(st.sampled_from((0.5, 2.0, -1.0))))
    inplace = None
    if inplace_allowed and ((focus == "inplace" and first) or draw(st.sampled_from((False, False, True)))):
        method = draw(st.sampled_from(("add_", "mul_", "clamp_")))
        args = {"add_": (0.5,), "mul_": (-2.0,), "clamp_": (-1.0, 1.0)}[method]
        inplace = (method, args, (focus == "inplace" and first) or draw(st.booleans()))
    return Train(draw(st.booleans()) if not first else True, backward, hook, inplace)


@st.composite
def programs(draw, focus=None):
    """A :class:`~gradverify.fuzz.programs.Program`: a few training steps of a small float64 model.

    ``focus`` (one of :data:`gradverify.fuzz.programs.FOCUSES`) makes sure the program exercises that part
    (an SGD momentum buffer over several steps, Adam's bias correction, an in-place change the backward must
    refuse, accumulated gradients, a hook that changes the gradient, a loss's weight and label smoothing,
    BatchNorm1d's running statistics, a LayerNorm, an Embedding, RMSprop centered, Adagrad's lr_decay over
    several steps, a scheduler, a layer hook that changes the output or input, a full backward hook that
    changes grad_input).
    """
    from gradverify.fuzz.programs import FOCUSES, Program, RemoveHook, SetMode, parameter_shapes

    if focus is not None and focus not in FOCUSES:
        raise ValueError(f"focus: expected one of {', '.join(FOCUSES)}, got {focus!r}")
    layers = _program_layers(draw, focus)
    batch_norm = any(layer[0] == "BatchNorm1d" for layer in layers)
    # Before a BatchNorm, a channel constant over the batch (equal rows, a zero row of weights: values hypothesis
    # favours) is normalised to its rounding noise times 1/sqrt(eps), which the two libraries round differently:
    # such models get generic values, and distinct indices.
    floats = _generic_floats(draw) if batch_norm else functools.partial(_floats, draw, dtype="float64")
    parameters = tuple(floats(shape, -1.0, 1.0) for layer in layers for shape in parameter_shapes(layer))
    batch = draw(st.integers(2 if batch_norm else 1, 4))  # (BatchNorm refuses one value per channel in training)
    first = layers[0]
    if first[0] == "Embedding":
        rows = first[1][0]
        batch = min(batch, rows) if batch_norm else batch
        x = np.array(draw(st.lists(st.integers(0, rows - 1), min_size=batch, max_size=batch, unique=batch_norm)),
                     dtype=np.int64)
    else:
        x = floats((batch, first[1][0]), -2.0, 2.0)
    loss, target = _program_loss(draw, layers[-1][1][1], batch, focus)
    optimizer = _program_optimizer(draw, focus)
    hooks = _program_module_hooks(draw, layers, focus)
    # LogSoftmax (before NLLLoss) saves its output: an in-place change there must raise, which the engine misses.
    inplace_allowed = loss[0] != "NLLLoss"
    every_step_trains = focus in ("sgd_momentum", "adam", "adagrad", "scheduler")
    others = () if every_step_trains else tuple([SetMode(False), SetMode(True)] * batch_norm) + tuple(
        RemoveHook(k) for k in range(len(hooks)))
    steps = tuple(_program_step(draw, len(parameters), inplace_allowed, focus, k == 0, others)
                  for k in range(draw(st.integers(2 if every_step_trains else 1, 4))))
    if every_step_trains:  # every step must reach optimizer.step()
        steps = tuple(dataclasses.replace(step, backward="once", inplace=None) for step in steps)
    return Program(layers, parameters, x, target, loss, optimizer, steps, _program_scheduler(draw, focus), hooks)
