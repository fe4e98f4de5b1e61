"""``ge.autograd.Function``, ``gradcheck`` and ``gradgradcheck`` behave as torch's: each program runs on both.

Every Function here is built by a factory from the library module (``ge`` or ``torch``), so the engine and
PyTorch run the same code; values, gradients, second derivatives and error types are compared.
"""
import gc
import weakref

import numpy as np
import pytest

import gradverify.engine as ge

torch = pytest.importorskip("torch")

LIBS = [pytest.param(ge, id="engine"), pytest.param(torch, id="torch")]
X = np.array([0.3, -0.7, 1.1])
Y = np.array([1.5, 0.4, -0.2])


def _tensor(lib, array, requires_grad=True):
    return lib.tensor(np.array(array, dtype=np.float64), requires_grad=requires_grad)


def _np(t):
    return None if t is None else np.asarray(t.detach().numpy() if hasattr(t, "detach") else t)


def _on_both(program):
    """``program(lib)`` on the engine and on torch, results as numpy (nested tuples kept)."""

    def convert(value):
        if isinstance(value, (tuple, list)):
            return tuple(convert(v) for v in value)
        if isinstance(value, (ge.Tensor, torch.Tensor)):
            return value.detach().numpy()
        return value

    return convert(program(ge)), convert(program(torch))


def _assert_same(engine, reference):
    if isinstance(reference, tuple):
        assert isinstance(engine, tuple) and len(engine) == len(reference)
        for e, r in zip(engine, reference):
            _assert_same(e, r)
    elif isinstance(reference, np.ndarray):
        np.testing.assert_allclose(engine, reference, rtol=1e-13, atol=1e-15)
        assert engine.dtype == reference.dtype
    else:
        assert engine == reference


def _compare(program):
    _assert_same(*_on_both(program))


# ------------------------------------------------------------------ the Functions, for either library
def make_exp(lib, detach_saved=False):
    """exp with backward ``g * y`` (written with ops of ``lib``, so it differentiates again)."""

    class MyExp(lib.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            y = x.exp()
            ctx.save_for_backward(y)
            return y

        @staticmethod
        def backward(ctx, g):
            (y,) = ctx.saved_tensors
            return g * (y.detach() if detach_saved else y)

    return MyExp


def make_wrong_sign_exp(lib):
    class WrongExp(make_exp(lib)):
        @staticmethod
        def backward(ctx, g):
            (y,) = ctx.saved_tensors
            return -g * y

    return WrongExp


def make_two_outputs(lib, seen=None, materialize=True):
    """(x * y, x + y, 3): two tensor outputs and a number; ``seen`` records the grad_outputs backward gets."""

    class ProdSum(lib.autograd.Function):
        @staticmethod
        def forward(ctx, x, y):
            ctx.set_materialize_grads(materialize)
            ctx.save_for_backward(x, y)
            return x * y, x + y, 3

        @staticmethod
        def backward(ctx, g_prod, g_sum, g_number):
            if seen is not None:
                seen.append((_np(g_prod), _np(g_sum), g_number))
            x, y = ctx.saved_tensors
            gx = (0 if g_prod is None else g_prod * y) + (0 if g_sum is None else g_sum)
            gy = (0 if g_prod is None else g_prod * x) + (0 if g_sum is None else g_sum)
            return gx, gy

    return ProdSum


def make_scaled_sin(lib):
    """``k * sin(x) ** power`` with non-tensor arguments ``k`` and ``power`` (a keyword with a default)."""

    class ScaledSin(lib.autograd.Function):
        @staticmethod
        def forward(ctx, x, k, power=2):
            ctx.save_for_backward(x)
            ctx.k, ctx.power = k, power
            return k * x.sin() ** power

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * ctx.k * ctx.power * x.sin() ** (ctx.power - 1) * x.cos(), None, None

    return ScaledSin


def make_sort(lib, seen):
    """Sorted values and their (integer, non-differentiable) indices, plus a float copy marked non-differentiable."""

    class Sort(lib.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            values, indices = x.sort()
            frozen = values * 1.0
            ctx.mark_non_differentiable(indices, frozen)
            ctx.save_for_backward(indices)
            return values, indices, frozen

        @staticmethod
        def backward(ctx, g_values, g_indices, g_frozen):
            seen.append((_np(g_indices), _np(g_frozen)))
            (indices,) = ctx.saved_tensors
            gx = lib.zeros_like(g_values)
            gx[indices] = g_values
            return gx

    return Sort


def make_cube_once(lib, seen):
    """x ** 3 whose backward is marked once_differentiable."""

    class Cube(lib.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x ** 3

        @staticmethod
        @lib.autograd.function.once_differentiable
        def backward(ctx, g):
            seen.append(lib.is_grad_enabled())
            (x,) = ctx.saved_tensors
            return 3 * x ** 2 * g

    return Cube


def make_mul_jvp(lib):
    """``x * y * k`` in torch 2 style (setup_context), with jvp from save_for_forward."""

    class Mul(lib.autograd.Function):
        @staticmethod
        def forward(x, y, k):
            return x * y * k

        @staticmethod
        def setup_context(ctx, inputs, output):
            x, y, k = inputs
            ctx.save_for_backward(x, y)
            ctx.save_for_forward(x, y)
            ctx.k = k

        @staticmethod
        def jvp(ctx, x_t, y_t, k_t):
            assert k_t is None
            x, y = ctx.saved_tensors
            return ctx.k * (y * x_t + x * y_t)

        @staticmethod
        def backward(ctx, g):
            x, y = ctx.saved_tensors
            return ctx.k * g * y, ctx.k * g * x, None

    return Mul


def _doubling(lib, **rules):
    """A Function computing ``x * 2`` whose other static methods are ``rules`` (name: function)."""
    namespace = {"forward": staticmethod(lambda ctx, x: x * 2)}
    namespace.update({name: staticmethod(rule) for name, rule in rules.items()})
    return type("Twice", (lib.autograd.Function,), namespace)


def make_exp_without_jvp(lib):
    class NoJvp(make_exp(lib)):
        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(output)

        @staticmethod
        def forward(x):
            return x.exp()

    return NoJvp


# ------------------------------------------------------------------ values and derivatives
@pytest.mark.parametrize("create_graph", [False, True])
def test_custom_exp_values_gradients_and_second_derivatives(create_graph):
    def program(lib):
        x = _tensor(lib, X)
        y = make_exp(lib).apply(x)
        (g,) = lib.autograd.grad((y * _tensor(lib, Y, False)).sum(), x, create_graph=create_graph)
        if not create_graph:
            return y, g, y.grad_fn.name() if lib is torch else y.grad_fn
        (gg,) = lib.autograd.grad((g * g).sum(), x)
        return y, g, gg

    engine, reference = _on_both(program)
    _assert_same(engine, reference)
    np.testing.assert_allclose(engine[1], Y * np.exp(X), rtol=1e-15)
    if create_graph:
        np.testing.assert_allclose(engine[2], 2 * Y ** 2 * np.exp(2 * X), rtol=1e-14)
    else:
        assert engine[2] == "MyExpBackward"


def test_grad_fn_and_requires_grad_as_torch():
    for lib in (ge, torch):
        fn = make_exp(lib)
        y = fn.apply(_tensor(lib, X))
        name = y.grad_fn.name() if lib is torch else y.grad_fn
        assert name == "MyExpBackward" and y.requires_grad and not y.is_leaf
        with lib.no_grad():
            z = fn.apply(_tensor(lib, X))
        assert z.grad_fn is None and not z.requires_grad
        w = fn.apply(_tensor(lib, X, requires_grad=False))
        assert w.grad_fn is None and not w.requires_grad
        np.testing.assert_allclose(_np(w), np.exp(X))


def test_custom_function_inside_a_graph_and_hessian():
    def program(lib):
        x = _tensor(lib, X)
        fn = make_exp(lib)
        loss = (fn.apply(x.sin() * 2) * x).sum()
        loss.backward()
        hessian = lib.autograd.functional.hessian(lambda v: (fn.apply(v) * v.cos()).sum(), x.detach())
        return loss, x.grad, hessian

    _compare(program)


@pytest.mark.parametrize("use", ["prod", "sum", "both"])
def test_two_outputs_and_a_number(use):
    def program(lib):
        seen = []
        x, y = _tensor(lib, X), _tensor(lib, Y)
        prod, total, number = make_two_outputs(lib, seen).apply(x, y)
        loss = {"prod": lambda: (prod * 2).sum(), "sum": lambda: (total ** 2).sum(),
                "both": lambda: (prod * total).sum()}[use]()
        loss.backward()
        return prod, total, number, x.grad, y.grad, seen[0]

    engine, reference = _on_both(program)
    _assert_same(engine, reference)
    assert engine[2] == 3 and engine[5][2] is None


def test_two_outputs_second_derivatives():
    def program(lib):
        x, y = _tensor(lib, X), _tensor(lib, Y)
        prod, total, _ = make_two_outputs(lib).apply(x, y)
        gx, gy = lib.autograd.grad((prod * total * total).sum(), (x, y), create_graph=True)
        return gx, gy, lib.autograd.grad((gx * gy).sum(), (x, y))

    _compare(program)


def test_set_materialize_grads_false_passes_none():
    def program(lib):
        seen = []
        x, y = _tensor(lib, X), _tensor(lib, Y)
        prod, _, _ = make_two_outputs(lib, seen, materialize=False).apply(x, y)
        prod.sum().backward()
        return x.grad, y.grad, seen[0]

    engine, reference = _on_both(program)
    _assert_same(engine, reference)
    assert engine[2][1] is None


def test_non_tensor_arguments_get_no_gradient():
    def program(lib):
        x = _tensor(lib, X)
        fn = make_scaled_sin(lib)
        a, b = fn.apply(x, 2.5), fn.apply(x, 0.5, power=3)
        (a + b).sum().backward()
        return a, b, x.grad

    engine, _ = _on_both(program)
    _compare(program)
    np.testing.assert_allclose(engine[2], 5 * np.sin(X) * np.cos(X) + 1.5 * np.sin(X) ** 2 * np.cos(X), rtol=1e-14)


def test_mark_non_differentiable():
    def program(lib):
        seen = []
        x = _tensor(lib, [3.0, 1.0, 2.0])
        values, indices, frozen = make_sort(lib, seen).apply(x)
        flags = (values.requires_grad, indices.requires_grad, frozen.requires_grad, str(indices.dtype)[-5:])
        (values * _tensor(lib, [1.0, 2.0, 3.0], False)).sum().backward()
        return values, indices, frozen, flags, x.grad, seen[0]

    engine, reference = _on_both(program)
    _assert_same(engine, reference)
    assert engine[3] == (True, False, False, "int64")
    np.testing.assert_array_equal(engine[5][0], [0, 0, 0])  # the integer output's gradient: zeros of its dtype


def test_needs_input_grad():
    def program(lib):
        seen = []

        class Record(lib.autograd.Function):
            @staticmethod
            def forward(ctx, x, y, k):
                seen.append(ctx.needs_input_grad)
                return x * y * k

            @staticmethod
            def backward(ctx, g):
                seen.append(ctx.needs_input_grad)
                return g, g, None

        Record.apply(_tensor(lib, X), _tensor(lib, Y, False), 2.0).sum().backward()
        Record.apply(_tensor(lib, X, False), _tensor(lib, Y), 2.0)
        with lib.no_grad():
            Record.apply(_tensor(lib, X), _tensor(lib, Y), 2.0)
        return tuple(seen)

    engine, reference = _on_both(program)
    assert engine == reference == ((True, False, False), (True, False, False), (False, True, False),
                                   (True, True, False))


def test_forward_runs_without_recording():
    def program(lib):
        seen = []

        class Probe(lib.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                y = x * 2
                seen.append((lib.is_grad_enabled(), y.requires_grad))
                return y

            @staticmethod
            def backward(ctx, g):
                return g * 2

        Probe.apply(_tensor(lib, X))
        return tuple(seen)

    assert _on_both(program) == (((False, False),), ((False, False),))


def test_once_differentiable():
    for lib in (ge, torch):
        seen = []
        x = _tensor(lib, X)
        fn = make_cube_once(lib, seen)
        (g,) = lib.autograd.grad((fn.apply(x) ** 2).sum(), x, create_graph=True)
        np.testing.assert_allclose(_np(g), 6 * X ** 5, rtol=1e-14)
        assert seen == [False] and g.requires_grad
        with pytest.raises(RuntimeError, match="trying to differentiate twice a function that was marked with "
                                               "@once_differentiable"):
            g.sum().backward()
        (g,) = lib.autograd.grad(fn.apply(x).sum(), x, create_graph=True)  # the seed does not require grad
        assert not g.requires_grad
        np.testing.assert_allclose(_np(g), 3 * X ** 2, rtol=1e-15)


def test_broadcast_and_dtype_of_returned_gradients_as_torch():
    def program(lib):
        x = _tensor(lib, X)

        # A gradient that broadcasts to the input's shape is summed down to it; float32 is cast to float64.
        loose = _doubling(lib, backward=lambda ctx, g: (g * lib.ones((2, 3), dtype=lib.float64)).to(lib.float32))
        loose.apply(x).sum().backward()
        return x.grad

    engine, reference = _on_both(program)
    _assert_same(engine, reference)
    np.testing.assert_array_equal(engine, [2.0, 2.0, 2.0])


# ------------------------------------------------------------------ errors
def _backward_returning(lib, make_grads):
    class Bad(lib.autograd.Function):
        @staticmethod
        def forward(ctx, x, k):
            return x * k

        @staticmethod
        def backward(ctx, g):
            return make_grads(lib, g)

    return Bad


BAD_BACKWARDS = {
    "too few": (lambda lib, g: g, r"function BadBackward returned an incorrect number of gradients "
                                  r"\(expected 2, got 1\)"),
    "too many": (lambda lib, g: (g, None, g), r"function BadBackward returned an incorrect number of gradients "
                                              r"\(expected 2, got 3\)"),
    "non-tensor argument": (lambda lib, g: (g, g.sum()), "function BadBackward returned a gradient different than "
                                                         "None at position 2, but the corresponding forward input "
                                                         "was not a"),
    "wrong shape": (lambda lib, g: (g[:2], None), r"Function BadBackward returned an invalid gradient at index 0 - "
                                                  r"got \[2\] but expected shape compatible with \[3\]"),
    "not a tensor": (lambda lib, g: (g.tolist(), None), "list"),
}


@pytest.mark.parametrize("case", BAD_BACKWARDS)
@pytest.mark.parametrize("lib", LIBS)
def test_wrong_backward_results_raise_as_torch(lib, case):
    make_grads, message = BAD_BACKWARDS[case]
    y = _backward_returning(lib, make_grads).apply(_tensor(lib, X), 2.0)
    with pytest.raises(RuntimeError, match=message):
        y.sum().backward()


@pytest.mark.parametrize("lib", LIBS)
def test_extra_none_gradients_are_allowed(lib):
    x = _tensor(lib, X)
    _backward_returning(lib, lambda lib, g: (g * 2, None, None)).apply(x, 2.0).sum().backward()
    np.testing.assert_array_equal(_np(x.grad), [2.0, 2.0, 2.0])


@pytest.mark.parametrize("lib", LIBS)
def test_vjp_is_an_alias_of_backward(lib):
    x = _tensor(lib, X)
    _doubling(lib, vjp=lambda ctx, g: g * 2).apply(x).sum().backward()
    np.testing.assert_array_equal(_np(x.grad), [2.0, 2.0, 2.0])


@pytest.mark.parametrize("lib", LIBS)
def test_missing_backward_raises_not_implemented(lib):
    with pytest.raises(NotImplementedError, match="You must implement either the backward or vjp method"):
        _doubling(lib).apply(_tensor(lib, X)).sum().backward()


@pytest.mark.parametrize("lib", LIBS)
def test_second_backward_raises_and_retain_graph_allows_it(lib):
    x = _tensor(lib, X)
    y = make_exp(lib).apply(x)
    y.sum().backward(retain_graph=True)
    y.sum().backward()
    np.testing.assert_allclose(_np(x.grad), 2 * np.exp(X), rtol=1e-15)
    with pytest.raises(RuntimeError, match="(?i)backward through the graph a second time"):
        y.sum().backward()


def test_saved_tensors_are_released_after_backward():
    contexts = []

    class Keep(ge.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            contexts.append(weakref.ref(ctx))
            ctx.save_for_backward(x * 3)
            return x * 2

        @staticmethod
        def backward(ctx, g):
            (saved,) = ctx.saved_tensors
            return g * saved

    x = _tensor(ge, X)
    y = Keep.apply(x)
    y.sum().backward(retain_graph=True)
    gc.collect()
    assert contexts[0]() is not None
    y.sum().backward()
    assert contexts[0]() is None  # freed by reference counting, with y still alive
    np.testing.assert_allclose(_np(x.grad), 6 * X, rtol=1e-15)


# ------------------------------------------------------------------ forward mode
def test_jvp_with_setup_context_and_save_for_forward():
    def program(lib):
        x, y = _tensor(lib, X, False), _tensor(lib, Y, False)
        tx, ty = _tensor(lib, [1.0, 0.5, -2.0], False), _tensor(lib, [0.25, -1.0, 3.0], False)
        fn = make_mul_jvp(lib)
        value, tangent = lib.func.jvp(lambda a, b: fn.apply(a, b, 4.0), (x, y), (tx, ty))
        xg = _tensor(lib, X)
        fn.apply(xg, y, 4.0).sum().backward()
        return value, tangent, xg.grad

    engine, reference = _on_both(program)
    _assert_same(engine, reference)
    np.testing.assert_allclose(engine[1], 4.0 * (Y * [1.0, 0.5, -2.0] + X * [0.25, -1.0, 3.0]), rtol=1e-15)


def test_jvp_of_grad_through_a_custom_function():
    def program(lib):
        fn = make_mul_jvp(lib)
        x, y = _tensor(lib, X, False), _tensor(lib, Y, False)
        gradient = lib.func.grad(lambda a: (fn.apply(a, y, 2.0) * a).sum())
        return lib.func.jvp(gradient, (x,), (_tensor(lib, [1.0, 2.0, 3.0], False),))

    _compare(program)


def test_jvp_of_a_function_with_two_outputs():
    def program(lib):
        class SinCos(lib.autograd.Function):
            @staticmethod
            def forward(x):
                return x.sin(), x.cos()

            @staticmethod
            def setup_context(ctx, inputs, output):
                ctx.save_for_forward(*output)

            @staticmethod
            def jvp(ctx, t):
                sin, cos = ctx.saved_tensors
                return cos * t, -sin * t

            @staticmethod
            def backward(ctx, g_sin, g_cos):
                raise AssertionError("forward mode only")

        x, t = _tensor(lib, X, False), _tensor(lib, Y, False)
        return tuple(lib.func.jvp(lambda v, k=k: SinCos.apply(v)[k] * v, (x,), (t,)) for k in (0, 1))

    engine, reference = _on_both(program)
    _assert_same(engine, reference)
    np.testing.assert_allclose(engine[1][1], (-np.sin(X) * X + np.cos(X)) * Y, rtol=1e-15)


@pytest.mark.parametrize("lib", LIBS)
def test_forward_mode_without_jvp_raises(lib):
    fn = make_exp_without_jvp(lib)
    x = _tensor(lib, X, False)
    with pytest.raises(NotImplementedError, match="You must implement the jvp function"):
        lib.func.jvp(fn.apply, (x,), (lib.ones_like(x),))


# ------------------------------------------------------------------ gradcheck and gradgradcheck
@pytest.mark.parametrize("lib", LIBS)
def test_gradcheck_passes_right_functions(lib):
    x, y = _tensor(lib, X), _tensor(lib, Y)
    gradcheck = lib.autograd.gradcheck
    assert gradcheck(make_exp(lib).apply, (x,)) is True
    assert gradcheck(make_exp(lib).apply, x, fast_mode=True) is True
    assert gradcheck(lambda a, b: make_two_outputs(lib).apply(a, b)[:2], (x, y)) is True
    assert gradcheck(make_scaled_sin(lib).apply, (x, 2.5)) is True
    assert gradcheck(make_sort(lib, []).apply, (x,)) is True  # only the differentiable output is checked
    assert gradcheck(make_mul_jvp(lib).apply, (x, y, 3.0), check_forward_ad=True) is True


@pytest.mark.parametrize("lib", LIBS)
def test_gradcheck_catches_a_sign_error(lib):
    wrong = make_wrong_sign_exp(lib).apply
    x = _tensor(lib, X)
    error = lib.autograd.gradcheck.__globals__["GradcheckError"] if lib is torch else ge.autograd.GradcheckError
    with pytest.raises(error) as caught:
        lib.autograd.gradcheck(wrong, (x,))
    assert isinstance(caught.value, RuntimeError)
    assert lib.autograd.gradcheck(wrong, (x,), raise_exception=False) is False
    assert lib.autograd.gradcheck(wrong, (x,), fast_mode=True, raise_exception=False) is False


def test_gradcheck_report_names_the_mismatch():
    with pytest.raises(ge.autograd.GradcheckError, match=r"FAIL .*\n.*input 0 element \[\d\] differs: analytical"):
        ge.autograd.gradcheck(make_wrong_sign_exp(ge).apply, _tensor(ge, X))


@pytest.mark.parametrize("lib", LIBS)
def test_gradgradcheck(lib):
    x, y = _tensor(lib, X), _tensor(lib, Y)
    assert lib.autograd.gradgradcheck(make_exp(lib).apply, (x,)) is True
    assert lib.autograd.gradgradcheck(lambda a, b: make_two_outputs(lib).apply(a, b)[:2], (x, y)) is True
    grad_outputs = (_tensor(lib, [0.5, -1.0, 2.0]),)
    assert lib.autograd.gradgradcheck(make_scaled_sin(lib).apply, (x, 1.5), grad_outputs) is True
    # A backward that treats its saved output as a constant has the right first derivative only.
    detached = make_exp(lib, detach_saved=True).apply
    assert lib.autograd.gradcheck(detached, (x,)) is True
    assert lib.autograd.gradgradcheck(detached, (x,), raise_exception=False) is False
    with pytest.raises(RuntimeError):
        lib.autograd.gradgradcheck(detached, (x,))


@pytest.mark.parametrize("lib", LIBS)
def test_gradcheck_input_conventions(lib):
    fn = make_exp(lib).apply
    with pytest.raises(ValueError, match="at least one input tensor to require gradient"):
        lib.autograd.gradcheck(fn, (_tensor(lib, X, False),))
    with pytest.warns(UserWarning, match="Input #0 requires gradient and is not a double precision"):
        lib.autograd.gradcheck(fn, (lib.tensor(X.astype(np.float32), requires_grad=True),),
                               raise_exception=False)
    with pytest.raises(NotImplementedError, match="You must implement the jvp function"):
        lib.autograd.gradcheck(make_exp(lib).apply, (_tensor(lib, X),), check_forward_ad=True)


def test_gradcheck_refuses_options_it_does_not_have():
    x = _tensor(ge, X)
    with pytest.raises(NotImplementedError, match="check_batched_grad=True"):
        ge.autograd.gradcheck(make_exp(ge).apply, x, check_batched_grad=True)
    with pytest.raises(NotImplementedError, match="check_rev_over_rev=False"):
        ge.autograd.gradgradcheck(make_exp(ge).apply, x, check_rev_over_rev=False)
