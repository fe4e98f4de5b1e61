"""check_grad follows each framework's own definition of what has a derivative.

Conventions read from torch/autograd/gradcheck.py (pytorch/pytorch: ``_differentiable_outputs``,
``_check_no_differentiable_outputs``, ``_compute_numerical_jvps_wrt_specific_input`` for the conjugate
Wirtinger derivative) and JAX's FAQ on complex differentiation (``grad(abs(z)**2) = 2 conj(z)``).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from gradverify import check_grad


def torch64(values, dtype=torch.float64):
    return torch.tensor(values, dtype=dtype)


X = torch.linspace(-1.0, 1.2, 6, dtype=torch.float64).reshape(2, 3)


# ------------------------------------------------------------- non-differentiable outputs
def test_outputs_torch_marks_non_differentiable_are_skipped_with_a_note_and_checked_when_strict():
    weight, bias = torch64([0.5, -1.0, 2.0]), torch64([0.1, 0.2, 0.3])

    def layer_norm(x, w, b):
        return torch.native_layer_norm(x, [3], w, b, 1e-5)  # (out, mean, rstd): mean and rstd have no grad

    result = check_grad(layer_norm, X, weight, bias, mode="full")
    assert result.passed, str(result)
    assert any("outputs 1, 2 not differentiable" in note for note in result.notes)
    assert {name[0] for name in result.to_frame()["output"] if not name.startswith("<")} == {"0"}
    strict = check_grad(layer_norm, X, weight, bias, mode="full", strict=True)
    assert strict.verdict == "fail"
    assert strict.reason.split("output ")[1][0] in "12"


class SortWithIndex(torch.autograd.Function):
    """A custom Function whose second float output is declared non-differentiable."""

    @staticmethod
    def forward(ctx, x):
        values, order = x.sort()
        ctx.save_for_backward(order)
        index = order.to(x.dtype)
        ctx.mark_non_differentiable(index)
        return values, index

    @staticmethod
    def backward(ctx, grad_values, grad_index):
        (order,) = ctx.saved_tensors
        return torch.zeros_like(grad_values).scatter(-1, order, grad_values)


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_mark_non_differentiable_output_is_skipped(mode):
    result = check_grad(SortWithIndex.apply, torch64([0.3, -1.0, 2.0, 0.5]), mode=mode)
    assert result.passed, str(result)
    assert any("output 1 not differentiable" in note for note in result.notes)


def test_jax_integer_outputs_are_skipped_with_a_note():
    result = check_grad(lambda x: (jnp.sin(x), jnp.argmax(x)), jnp.asarray([0.3, -1.0, 2.0], dtype=jnp.float64))
    assert result.passed, str(result)
    assert any("output 1" in note and "integer" in note for note in result.notes)


def test_a_function_without_differentiable_output_says_so():
    nothing = check_grad(lambda x: x.argmax(), torch64([1.0, 2.0]))
    assert nothing.passed and "nothing to check" in nothing.reason and "no floating output" in nothing.reason
    jax_nothing = check_grad(jnp.argmax, jnp.asarray([1.0, 2.0], dtype=jnp.float64))
    assert jax_nothing.passed and "nothing to check" in jax_nothing.reason
    # As torch's gradcheck: with no differentiable output, the floating ones must have a zero derivative.
    detached = check_grad(lambda x: x.detach().sin(), torch64([1.0, 2.0]))
    assert detached.verdict == "fail"
    assert any("no differentiable output" in note for note in detached.notes)
    assert check_grad(lambda x: x.detach().sign(), torch64([1.0, -2.0])).passed


# ------------------------------------------------------------------- empty inputs
@pytest.mark.parametrize(("fn", "inputs"), [
    (torch.linalg.det, (torch.zeros(0, 0, dtype=torch.float64),)),
    (torch.linalg.slogdet, (torch.zeros(0, 0, dtype=torch.float64),)),
    (torch.nn.functional.pdist, (torch64([[1.0, 2.0, 3.0]]),)),
    (lambda x: torch.nn.functional.max_pool2d(x, 2), (torch.zeros(0, 1, 4, 4, dtype=torch.float64),)),
    (lambda x, y: x[:0] * y.sum(), (torch64([1.0]), torch64([2.0]))),
])
def test_empty_inputs_or_outputs_pass_with_nothing_to_check(fn, inputs):
    result = check_grad(fn, *inputs)
    assert result.passed, str(result)
    assert result.reason.startswith("nothing to check")
    assert result.to_frame().empty


def test_an_empty_input_beside_a_nonempty_one_is_checked_in_the_nonempty_one():
    wrong = check_grad(lambda x, e: x.sin() + e.sum(), torch64([0.5, 1.0]), torch.zeros(0, dtype=torch.float64))
    assert wrong.passed, str(wrong)


# ------------------------------------------------------------------ infinite entries
MASKED_LOGITS = torch64([[0.3, -float("inf"), 1.2, -0.7], [-float("inf"), -float("inf"), 0.4, 2.0]])


class MaskedSoftmaxMissingTerm(torch.autograd.Function):
    """softmax whose backward forgets the ``- y * sum(g * y)`` term."""

    @staticmethod
    def forward(ctx, x):
        y = torch.softmax(x, -1)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * y


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_infinite_entries_are_held_fixed_and_the_finite_ones_checked(mode):
    result = check_grad(lambda x: torch._safe_softmax(x, -1), MASKED_LOGITS, mode=mode)
    assert result.passed, str(result)
    assert any("input 0: 3 infinite entries are held fixed" in note for note in result.notes)
    wrong = check_grad(MaskedSoftmaxMissingTerm.apply, MASKED_LOGITS, mode=mode)
    assert wrong.verdict == "fail", str(wrong)


def test_entries_are_named_by_their_place_in_the_original_input():
    class WrongAtOneEntry(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return torch.where(torch.isinf(x), 0.0, x) * 2

        @staticmethod
        def backward(ctx, grad):
            out = grad * 2
            out[1, 3] *= 1.01
            return out

    result = check_grad(WrongAtOneEntry.apply, MASKED_LOGITS, mode="full")
    assert result.verdict == "fail"
    assert "input 0 element [1, 3]" in result.reason


# ------------------------------------------------------------------------- complex
Z = torch.tensor([0.3 + 0.4j, -1.1 + 0.2j, 0.7 - 0.9j], dtype=torch.complex128)


class SquareConjugated(torch.autograd.Function):
    """z -> z^2 with a backward that is right in JAX's convention, wrong in torch's (``g * 2z``)."""

    @staticmethod
    def forward(ctx, z):
        ctx.save_for_backward(z)
        return z * z

    @staticmethod
    def backward(ctx, grad):
        (z,) = ctx.saved_tensors
        return grad * 2 * z


class Square(SquareConjugated):
    @staticmethod
    def backward(ctx, grad):
        (z,) = ctx.saved_tensors
        return grad * (2 * z).conj()


@pytest.mark.parametrize("mode", ["full", "fast"])
@pytest.mark.parametrize(("fn", "inputs"), [
    (torch.fft.fft, (torch64([0.3, -1.0, 2.0, 0.5]),)),
    (torch.fft.ifft, (Z,)),
    (torch.fft.rfft, (torch64([0.3, -1.0, 2.0, 0.5, 0.1]),)),
    (lambda z: (z * z.conj()).real, (Z,)),
    (torch.abs, (Z,)),
    (torch.polar, (torch64([0.5, 2.0]), torch64([0.3, -1.2]))),
    (torch.view_as_complex, (torch64([[0.5, 2.0], [0.3, -1.2]]),)),
    (lambda z, w: (z * w.exp(), (z / w).imag), (Z, Z.flip(0))),
    (Square.apply, (Z,)),
])
def test_torch_complex_functions_pass_under_the_conjugate_wirtinger_convention(fn, inputs, mode):
    result = check_grad(fn, *inputs, mode=mode)
    assert result.passed, str(result)


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_a_torch_backward_in_the_wrong_complex_convention_fails(mode):
    result = check_grad(SquareConjugated.apply, Z, mode=mode)
    assert result.verdict == "fail", str(result)


def test_complex_entries_are_named_by_part():
    result = check_grad(SquareConjugated.apply, Z, mode="full")
    assert " re]" in result.reason or " im]" in result.reason


ZJ = jnp.asarray(Z.numpy())


@jax.custom_vjp
def jax_square_torch_convention(z):
    return z * z


jax_square_torch_convention.defvjp(lambda z: (z * z, z), lambda z, g: (g * jnp.conj(2 * z),))


@pytest.mark.parametrize("mode", ["full", "fast"])
@pytest.mark.parametrize(("fn", "inputs"), [
    (jnp.fft.fft, (jnp.asarray([0.3, -1.0, 2.0, 0.5], dtype=jnp.float64),)),
    (lambda z: jnp.abs(z) ** 2, (ZJ,)),
    (lambda z: jnp.exp(z) * jnp.conj(z), (ZJ,)),
    (lambda z: jnp.real(z) * jnp.imag(z), (ZJ,)),
])
def test_jax_complex_functions_pass_under_jax_convention(fn, inputs, mode):
    result = check_grad(fn, *inputs, mode=mode)
    assert result.passed, str(result)


def test_a_jax_custom_vjp_in_torch_convention_fails():
    # JAX's pullback of z^2 is ct * 2z; the conjugate is torch's, wrong here.
    result = check_grad(jax_square_torch_convention, ZJ, mode="full")
    assert result.verdict == "fail", str(result)


def test_complex_functions_need_a_framework_convention():
    with pytest.raises(TypeError, match="complex"):
        check_grad(np.abs, Z.numpy(), grad_fn=lambda z: z)


# ------------------------------------------------------------------ non-finite outputs
@pytest.mark.parametrize("mode", ["full", "fast"])
def test_nan_outputs_are_left_out_with_a_note(mode):
    def with_nan(x):
        return x.sin(), x[:2] * float("nan"), torch.where(x > 1.5, float("nan"), x.cos())

    result = check_grad(with_nan, torch64([0.3, 1.0, 2.0]), mode=mode)
    assert result.passed, str(result)
    assert any("output 1: 2 of 2 entries are NaN or infinite" in note for note in result.notes)
    assert any("output 2: 1 of 3 entries are NaN or infinite" in note for note in result.notes)
    assert np.isfinite(result.to_frame()["bound"]).all()


def test_a_constant_nan_output_is_not_differentiable_and_skipped():
    result = check_grad(lambda x: (x.sin(), torch.full((2,), float("nan"), dtype=x.dtype)), torch64([0.3, 1.0]),
                        mode="fast")
    assert result.passed, str(result)
    assert any("output 1 not differentiable" in note for note in result.notes)


def test_a_function_whose_outputs_are_all_nan_is_inconclusive():
    result = check_grad(lambda x: torch.sqrt(x - 1.0), torch64([0.5]))
    assert result.verdict == "inconclusive"
    assert "NaN" in result.reason


@pytest.mark.parametrize(("fn", "z"), [(lambda z: (z * z).exp(), Z), (lambda z: jnp.exp(z * z), ZJ),
                                       (lambda z: jnp.abs(z) ** 3, ZJ)])
def test_complex_second_order_in_each_convention(fn, z):
    result = check_grad(fn, z, order=2, mode="full")
    assert result.passed, str(result)
    assert "order 2: symmetry <u, H v> = <v, H u>" in result.checks


def test_both_parts_of_a_complex_output_take_its_modulus_as_their_rounding_scale():
    from gradverify.check.semantics import View

    view = View([np.ones(2)], [np.array([3 + 4j, -1j]), np.array([-2.0])], [True, True], conjugate=True)
    assert view.output_sizes_of([3.0, 4.0, 0.0, -1.0, -2.0]).tolist() == [5.0, 5.0, 1.0, 1.0, 2.0]


def test_the_imaginary_part_of_a_real_eigenvalue_is_judged_on_the_eigenvalue_scale():
    # OpInfo's first linalg.eig sample in float32: forward AD leaves 1.4e-9 in the tangent of a real eigenvalue's
    # imaginary part, rounding of the real parts' terms (the float64 Jacobian and reverse AD agree it is 0).
    from gradverify.audit import torch_source

    made = torch_source.case("linalg.eig", 0, "float32")
    assert check_grad(made.fn, *made.leaves).passed


class _LogSoftmax(torch.autograd.Function):
    """torch's rule, ``g - exp(out) * sum(g)``, with the softmax term scaled by ``factor`` (1: right)."""

    factor = 1.0

    @staticmethod
    def forward(ctx, x):
        out = torch.log_softmax(x, dim=-1)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        return grad - _LogSoftmax.factor * out.exp() * grad.sum(-1, keepdim=True)


@pytest.mark.parametrize("factor, passed", [(1.0, True), (1.0 + 1e-4, False), (1.01, False)])
def test_a_float32_rule_that_cancels_terms_near_one_is_judged_on_the_terms(factor, passed, monkeypatch):
    # Softmax 1 - 2e-6 at the first logit: 1 - exp(out) rounds terms of size 1 to an entry of 2e-6 (4% off in
    # float32), as the float64 run of the same rule shows; a rule wrong by 1e-4 is still caught.
    monkeypatch.setattr(_LogSoftmax, "factor", factor)
    x = torch.tensor([[0.0, -14.0, -15.0, -13.5], [1.0, -2.0, 0.5, 3.0]], dtype=torch.float32)
    assert check_grad(_LogSoftmax.apply, x).passed is passed


def test_a_float32_function_that_is_another_function_in_float64_is_differentiated_in_float32():
    # OpInfo's fractional_max_pool2d sample 7: the wrapper seeds the pooling regions, which are drawn in the
    # input's dtype, so in float64 the op pools other regions (its values move by 1, not by rounding).
    from gradverify.audit import torch_source

    made = torch_source.case("nn.functional.fractional_max_pool2d", 7, "float32")
    result = check_grad(made.fn, *made.leaves)
    assert result.passed and "another function in float64" in " ".join(result.notes), result.reason


def test_a_float32_output_computed_by_cancellation_sizes_its_rounding_by_how_far_it_moved():
    # OpInfo's linear_cross_entropy sample 32, reduction='none': row 5's prediction is saturated (logit 12.3 for
    # its target), its loss logsumexp(z) - z_t = 7.2e-5 is 1.8e-8 off its float64 value (rounding of terms far
    # larger than itself), and a gradient entry of 1.7e-7 carries the rounding of p_t - 1 times a weight (3e-8).
    from gradverify.audit import torch_source

    made = torch_source.case("nn.functional.linear_cross_entropy", 32, "float32")
    result = check_grad(made.fn, *made.leaves)
    assert result.passed, result.reason
