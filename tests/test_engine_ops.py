"""Op-level verification of the engine: every op of the table against PyTorch, JAX, mpmath and itself.

Each test runs over every op (ids = op names) in float32 and float64 on the
op's sample cases (:mod:`gradverify.ops.samples`), with random non-unit
cotangents and tangents so that a rule ignoring its incoming gradient fails.
"""
import jax
import mpmath
import numpy as np
import pytest
import torch
from test_ops_table import JAX_CASES, normwise_error, spread

import gradverify.engine as ge
import reference_impls
from gradverify.engine import functional as F
from gradverify.ops import TABLE
from gradverify.ops.samples import kink_cases, sample_cases

reference_impls.module("jax")  # enables float64 in JAX
# torch.func.jvp calls a deprecated torch.jit.script internally.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")

OPS = list(TABLE.values())
OP_IDS = [op.name for op in OPS]
DTYPES = [np.float32, np.float64]
DTYPE_IDS = ["float32", "float64"]
# Engine, torch and jax round differently inside each op (summation order, fused
# kernels): a few roundings, amplified by the conditioning of the samples.
# 64 eps is 1.4e-14 in float64 and 7.6e-6 in float32; the worst measured against torch is
# 17.5 eps (second derivative of logsumexp).
TOL_EPS = 64


def tolerance(dtype):
    return TOL_EPS * np.finfo(dtype).eps


class Case:
    """One sample of an op, callable in the engine, torch and jax with its differentiable inputs as arguments."""

    def __init__(self, op, arrays, attrs, dtype, seed):
        self.op, self.arrays, self.attrs, self.dtype = op, arrays, attrs, np.dtype(dtype)
        self.diff = [i for i, a in enumerate(arrays) if a.dtype.kind == "f" and i not in op.nondiff]
        self.rng = np.random.default_rng(seed)
        expected = np.asarray(op.forward(*arrays, **attrs))
        self.out_shape, self.out_dtype = expected.shape, expected.dtype
        # A case is as accurate as its least precise dtype (astype may round to float32).
        self.tol = max(tolerance(self.dtype), tolerance(self.out_dtype))

    def __repr__(self):
        return f"{self.op.name}{self.attrs} on {[a.shape for a in self.arrays]} ({self.dtype})"

    def primals(self):
        return [self.arrays[i] for i in self.diff]

    def random_like(self, shape, dtype=None):
        """Normal values shifted off 1 (a cotangent of ones would hide a rule that ignores it)."""
        return np.asarray(self.rng.standard_normal(shape) + 0.5, dtype=dtype or self.dtype)

    def function(self, backend):
        """``fn(*differentiable inputs)`` running the op in ``backend`` ("engine", "torch" or "jax")."""
        if backend == "engine":
            op_fn, convert = getattr(F, self.op.name), ge.tensor
        else:
            op_fn, convert = reference_impls.get(backend, self.op.ref), lambda a: reference_impls.to_backend(a, backend)
        fixed = [convert(a) for a in self.arrays]

        def fn(*inputs):
            args = list(fixed)
            for i, x in zip(self.diff, inputs):
                args[i] = x
            return op_fn(*args, **self.attrs)

        return fn


def cases(op, dtype):
    """The op's sample cases, each with its own seeded generator for cotangents and tangents."""
    return [Case(op, arrays, attrs, dtype, seed) for seed, (arrays, attrs) in enumerate(sample_cases(op, dtype))]


def with_jax_flags(case_list):
    """``(case, compare_with_jax)``: JAX (float64 only) on a spread of JAX_CASES cases, torch on all.

    float32 is compared with torch alone: JAX's compilation cost per shape
    (see JAX_CASES) would double for a second dtype.
    """
    chosen = {id(c) for c in spread(case_list, JAX_CASES)} if case_list and case_list[0].dtype == np.float64 else set()
    return [(case, id(case) in chosen) for case in case_list]


def assert_close(actual, expected, tol, what):
    error = normwise_error(reference_impls.to_numpy(actual), reference_impls.to_numpy(expected))
    assert error <= tol, f"{what}: normwise error {error:.2e} > {tol:.2e}"


def engine_vjp(case, cotangent):
    inputs = [ge.tensor(a, requires_grad=True) for a in case.primals()]
    out = case.function("engine")(*inputs)
    return ge.autograd.grad(out, inputs, ge.tensor(cotangent), allow_unused=True)


def engine_jvp_of(fn, case, tangents):
    """``ge.func.jvp`` of ``fn`` at the case's differentiable inputs."""
    return ge.func.jvp(fn, [ge.tensor(p) for p in case.primals()], [ge.tensor(t) for t in tangents])


def engine_jvp(case, tangents):
    """``(output, J · tangents)`` of the engine."""
    return engine_jvp_of(case.function("engine"), case, tangents)


def torch_vjp(case, cotangent):
    inputs = [reference_impls.to_backend(a, "torch").requires_grad_() for a in case.primals()]
    out = case.function("torch")(*inputs)
    grads = torch.autograd.grad(out, inputs, torch.from_numpy(cotangent), allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs)]


def jax_vjp(case, cotangent):
    fn = case.function("jax")
    # One jit compile of the whole pullback costs about half of eager mode's compile per primitive.
    pullback = jax.jit(lambda c, *primals: jax.vjp(fn, *primals)[1](c))
    primals = [reference_impls.to_backend(a, "jax") for a in case.primals()]
    return pullback(reference_impls.to_backend(cotangent, "jax"), *primals)


def jax_jvp(fn, primals, tangents):
    """``jax.jvp`` under jit (see :func:`jax_vjp`)."""
    return jax.jit(lambda p, t: jax.jvp(fn, p, t))(primals, tangents)


def check_vjp(case, use_jax):
    """The engine's VJP of ``case`` equals torch's (and JAX's) for a random cotangent."""
    cotangent = case.random_like(case.out_shape, case.out_dtype)
    grads = engine_vjp(case, cotangent)
    for backend, reference in (("torch", torch_vjp), ("jax", jax_vjp))[: 1 + use_jax]:
        for k, (g, r) in enumerate(zip(grads, reference(case, cotangent))):
            assert g is not None, f"{case}: no cotangent for input {case.diff[k]}"
            assert g.dtype == case.arrays[case.diff[k]].dtype, f"{case}: cotangent dtype {g.dtype}"
            assert_close(g, r, case.tol, f"{case}: VJP of input {case.diff[k]} vs {backend}")


def check_jvp(case, use_jax):
    """The engine's JVP of ``case`` equals torch.func's (and JAX's) for random tangents."""
    primals = case.primals()
    tangents = [case.random_like(p.shape) for p in primals]
    out, tangent = engine_jvp(case, tangents)
    assert_close(out, case.op.forward(*case.arrays, **case.attrs), case.tol, f"{case}: primal output of jvp")
    assert tangent.dtype == case.out_dtype and tangent.shape == case.out_shape, f"{case}: tangent {tangent!r}"
    for backend, jvp in (("torch", torch.func.jvp), ("jax", jax_jvp))[: 1 + use_jax]:
        _, reference = jvp(
            case.function(backend),
            tuple(reference_impls.to_backend(p, backend) for p in primals),
            tuple(reference_impls.to_backend(t, backend) for t in tangents),
        )
        assert_close(tangent, reference, case.tol, f"{case}: JVP vs {backend}")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
def test_vjp_matches_torch_and_jax(op, dtype):
    for case, use_jax in with_jax_flags(cases(op, dtype)):
        check_vjp(case, use_jax)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
def test_jvp_matches_torch_and_jax(op, dtype):
    for case, use_jax in with_jax_flags(cases(op, dtype)):
        check_jvp(case, use_jax)


NON_SMOOTH = [op for op in OPS if not op.smooth]


@pytest.mark.parametrize("op", NON_SMOOTH, ids=[op.name for op in NON_SMOOTH])
def test_kink_conventions_match_torch_and_jax(op):
    """Exactly at zeros, bounds and ties, the engine follows the table's (= PyTorch's) conventions."""
    for seed, (arrays, attrs) in enumerate(kink_cases(op)):
        case = Case(op, arrays, attrs, np.float64, seed)
        check_vjp(case, use_jax=True)
        check_jvp(case, use_jax=True)


@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
def test_jvp_matches_complex_step(op):
    """The numpy counterpart at x + i h t gives J t in its imaginary part, free of cancellation."""
    step = 1e-30
    for case in cases(op, np.float64):
        primals = case.primals()
        tangents = [case.random_like(p.shape) for p in primals]
        _, tangent = engine_jvp(case, tangents)
        stepped = list(case.arrays)
        for i, p, t in zip(case.diff, primals, tangents):
            stepped[i] = p + 1j * step * t
        reference = np.imag(reference_impls.get("numpy", op.ref)(*stepped, **case.attrs)) / step
        assert_close(tangent, reference, case.tol, f"{case}: JVP vs complex step")


MULTI_INPUT = [op for op in OPS if len(op.domains) > 1 or op.variadic]


@pytest.mark.parametrize("op", MULTI_INPUT, ids=[op.name for op in MULTI_INPUT])
def test_an_input_without_tangent_counts_as_zero(op):
    """The engine drops an input that has no tangent: J t with one input varied alone (the others constants)
    is J t with zero tangents for the others, and these terms sum to J t with every tangent."""
    for case in cases(op, np.float64):
        primals = case.primals()
        tangents = [case.random_like(p.shape) for p in primals]
        terms = []
        for k in range(len(primals)):
            constants = [ge.tensor(p) for p in primals]

            def alone(x, k=k, constants=constants):
                return case.function("engine")(*constants[:k], x, *constants[k + 1:])

            _, term = ge.func.jvp(alone, [ge.tensor(primals[k])], [ge.tensor(tangents[k])])
            zeros = [t if i == k else np.zeros_like(t) for i, t in enumerate(tangents)]
            assert_close(term, engine_jvp(case, zeros)[1], case.tol, f"{case}: J t of input {k} alone vs zeros")
            terms.append(term.numpy())
        assert_close(sum(terms), engine_jvp(case, tangents)[1], case.tol, f"{case}: sum of the terms vs J t")


def _inner(xs, ys):
    """``(sum of <x, y>, sum of <|x|, |y|>)`` in float64: the value and the scale of its rounding error."""
    products = [np.asarray(x, np.float64) * np.asarray(y, np.float64) for x, y in zip(xs, ys)]
    return sum(float(np.sum(p)) for p in products), sum(float(np.sum(np.abs(p))) for p in products)


def assert_inner_products_agree(case, dtype, first, second, what):
    """``<first> == <second>`` (each an ``(xs, ys)`` pair for :func:`_inner`) to the case's tolerance of their scale."""
    (a, a_scale), (b, b_scale) = _inner(*first), _inner(*second)
    scale = max(a_scale, b_scale, np.finfo(dtype).tiny)
    assert abs(a - b) <= case.tol * scale, f"{case}: {what} {a!r}, {b!r}"


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
def test_dot_product_identity(op, dtype):
    """<J u, v> = <u, J^T v>: forward and reverse mode of the engine agree without any reference."""
    for case in cases(op, dtype):
        u = [case.random_like(p.shape) for p in case.primals()]
        _, ju = engine_jvp(case, u)
        v = case.random_like(ju.shape, ju.dtype)
        assert_inner_products_agree(case, dtype, ([ju], [v]), (u, engine_vjp(case, v)), "<Ju, v> and <u, J^T v>:")


def _engine_second_order(case, cotangent, weights):
    inputs = [ge.tensor(a, requires_grad=True) for a in case.primals()]
    seed = ge.tensor(cotangent, requires_grad=True)
    grads = ge.autograd.grad(case.function("engine")(*inputs), inputs, seed, create_graph=True)
    total = sum((g * ge.tensor(w)).sum() for g, w in zip(grads, weights))
    if not total.requires_grad:  # the VJP does not depend on its arguments
        return [np.zeros_like(x.array) for x in inputs + [seed]]
    second = ge.autograd.grad(total, inputs + [seed], allow_unused=True)
    return [np.zeros_like(x.array) if s is None else s for s, x in zip(second, inputs + [seed])]


def _torch_second_order(case, cotangent, weights):
    inputs = [reference_impls.to_backend(a, "torch").requires_grad_() for a in case.primals()]
    seed = torch.from_numpy(cotangent).requires_grad_()
    grads = torch.autograd.grad(case.function("torch")(*inputs), inputs, seed, create_graph=True, allow_unused=True)
    total = sum((g * torch.from_numpy(w)).sum() for g, w in zip(grads, weights) if g is not None)
    if not torch.is_tensor(total) or not total.requires_grad:
        return [torch.zeros_like(x) for x in inputs + [seed]]
    second = torch.autograd.grad(total, inputs + [seed], allow_unused=True)
    return [torch.zeros_like(x) if s is None else s for s, x in zip(second, inputs + [seed])]


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
def test_second_derivatives_match_torch(op, dtype):
    """VJP of the VJP (create_graph) with respect to the inputs and the cotangent.

    Run for every op: at the sampled points (away from kinks) the non-smooth
    ops have well-defined second derivatives too (their masks are constants).
    """
    for case in cases(op, dtype):
        cotangent = case.random_like(case.out_shape, case.out_dtype)
        weights = [case.random_like(p.shape) for p in case.primals()]
        ours, theirs = _engine_second_order(case, cotangent, weights), _torch_second_order(case, cotangent, weights)
        names = [f"input {i}" for i in case.diff] + ["cotangent"]
        for name, a, b in zip(names, ours, theirs):
            assert_close(a, b, case.tol, f"{case}: second derivative w.r.t. {name}")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
def test_forward_over_reverse_agrees_with_reverse_over_reverse(op, dtype):
    """<d/dx (J^T v) u, w> two ways: the JVP rules run on the VJP rules' graph (as in hvp)."""
    for case in cases(op, dtype):
        v = case.random_like(case.out_shape, case.out_dtype)
        u, w = ([case.random_like(p.shape) for p in case.primals()] for _ in range(2))

        def pulled_back(*inputs):
            _, pullback = ge.func.vjp(case.function("engine"), *inputs)
            return F.concatenate(*[F.reshape(g, shape=(-1,)) for g in pullback(ge.tensor(v))])

        _, forward_over_reverse = engine_jvp_of(pulled_back, case, u)
        flat_w = np.concatenate([x.reshape(-1) for x in w])
        assert_inner_products_agree(case, dtype, ([forward_over_reverse], [flat_w]),
                                    (u, _engine_second_order(case, v, w)[:-1]), "forward-over-reverse")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
def test_forward_over_forward_agrees_with_reverse_over_reverse(op, dtype):
    """<v, f''[u, w]> two ways: a jvp of a jvp (the JVP rules run in forward mode) and <u, H_v w>."""
    for case in cases(op, dtype):
        u, w = ([case.random_like(p.shape) for p in case.primals()] for _ in range(2))

        def directional(*inputs):
            return ge.func.jvp(case.function("engine"), inputs, [ge.tensor(t) for t in u])[1]

        _, second = engine_jvp_of(directional, case, w)
        v = case.random_like(second.shape, second.dtype)
        assert_inner_products_agree(case, dtype, ([second], [v]), (u, _engine_second_order(case, v, w)[:-1]),
                                    "forward-over-forward")


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("op", OPS, ids=OP_IDS)
def test_dtypes_are_kept_and_inputs_never_modified(op, dtype):
    """float32 graphs stay float32, gradients take their input's dtype, and no array is written to."""
    for case in cases(op, dtype):
        before = [a.copy() for a in case.arrays]
        inputs = [ge.from_numpy(a) for a in case.arrays]
        for i in case.diff:
            inputs[i].requires_grad_()
        out = getattr(F, op.name)(*inputs, **case.attrs)
        assert out.dtype == case.out_dtype, f"{case}: output dtype {out.dtype}"
        if op.name != "astype":
            assert out.dtype == case.dtype, f"{case}: a {case.dtype} graph produced {out.dtype}"
        cotangent = case.random_like(out.shape, out.dtype)
        cotangent_before = cotangent.copy()
        # The rule's own dtypes: the engine casts cotangents to their input's dtype, which
        # would hide a rule that silently computes a float32 graph in float64.
        rule_cotangents = op.vjp(ge.from_numpy(cotangent), out, *inputs, **case.attrs)
        for i in case.diff:
            assert rule_cotangents[i].dtype == case.arrays[i].dtype, f"{case}: rule gives {rule_cotangents[i].dtype}"
        out.backward(ge.from_numpy(cotangent))
        for i in case.diff:
            assert inputs[i].grad.dtype == case.arrays[i].dtype, f"{case}: gradient dtype {inputs[i].grad.dtype}"
            assert inputs[i].grad.shape == case.arrays[i].shape
        for k, (a, b) in enumerate(zip(case.arrays, before)):
            assert np.array_equal(a, b), f"{case}: input {k} was modified"
        assert np.array_equal(cotangent, cotangent_before), f"{case}: the cotangent was modified"


BROADCASTING = [op for op in OPS if op.broadcasts]


@pytest.mark.parametrize("op", BROADCASTING, ids=[op.name for op in BROADCASTING])
def test_broadcast_errors_name_the_op_and_shapes(op):
    """Incompatible shapes raise a ValueError naming the op and every input shape."""
    shapes = [(3,), (4,), (3,)][: len(op.domains)]
    inputs = [ge.tensor(np.ones(s, dtype=np.int64 if d.integer else np.float64)) for s, d in zip(shapes, op.domains)]
    with pytest.raises(ValueError) as info:
        getattr(F, op.name)(*inputs)
    message = str(info.value)
    assert op.name in message and "(3,)" in message and "(4,)" in message, message


STABLE_FORMS = ["softmax", "log_softmax", "logsumexp", "cross_entropy", "sigmoid", "softplus", "tanh"]
EXTREME_LOGITS = np.array([[1000.0, -1000.0, 40.0], [-40.0, 0.5, -1000.0], [999.0, 1000.0, -3.0]])
MPMATH_DPS = 50
# Measured: at most 1.6 eps from the mpmath values (PyTorch: up to 45 eps on logsumexp).
EXTREME_TOL_EPS = 16


def _mpmath_vjp(op, arrays, cotangent):
    """d <cotangent, op(x)> / d x[0] by mpmath's numerical differentiation at MPMATH_DPS digits."""
    fn = reference_impls.get("mpmath", op.ref)
    with mpmath.workdps(MPMATH_DPS):
        args = [reference_impls.to_mp(a, MPMATH_DPS) for a in arrays]
        weights = reference_impls.to_mp(cotangent, MPMATH_DPS)
        x = args[0]
        grad = np.empty(x.shape, dtype=object)
        for position in np.ndindex(x.shape):

            def along(t, position=position):
                moved = x.copy()
                moved[position] = t
                return mpmath.fsum(np.asarray(weights * fn(moved, *args[1:]), dtype=object).reshape(-1))

            grad[position] = mpmath.diff(along, x[position])
    return reference_impls.from_mp(grad)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("name", STABLE_FORMS)
def test_extreme_logits_give_finite_accurate_gradients(name, dtype):
    """Logits of ±1000 and ±40: no overflow, no derivative rounded to 0 in the tails."""
    op = TABLE[name]
    arrays = [EXTREME_LOGITS.astype(dtype)]
    if name == "cross_entropy":
        arrays.append(np.array([1, 2, 0]))
    case = Case(op, tuple(arrays), {}, dtype, seed=0)
    cotangent = case.random_like(case.out_shape, case.out_dtype)
    (grad,) = engine_vjp(case, cotangent)
    assert np.all(np.isfinite(grad.array)), f"{name}: non-finite gradient {grad.array}"
    expected = _mpmath_vjp(op, arrays, cotangent)
    if op.kind == "unary":
        # Elementwise ops can be accurate entry by entry (sigmoid'(40) = 4e-18, not 0);
        # absolute only at the underflow threshold.
        bound = EXTREME_TOL_EPS * np.finfo(dtype).eps * np.abs(expected) + np.finfo(dtype).tiny
        assert np.all(np.abs(grad.array - expected) <= bound), f"{name}: gradient {grad.array} vs mpmath {expected}"
    else:
        # A normalization mixes entries of very different sizes (out * (g - <g, out>)): the
        # achievable accuracy is relative to the largest entry, as for PyTorch and JAX.
        assert_close(grad.array, expected, EXTREME_TOL_EPS * np.finfo(dtype).eps, f"{name}: gradient vs mpmath")
