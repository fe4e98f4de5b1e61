"""Sensitivity: a backward wrong by the factor (1+δ), spread over all entries or confined to one, is flagged.

"full" mode must flag every δ ≥ 1e-8, "fast" mode every δ ≥ 1e-6 on a
1000-element input (at an entry whose input is not near 0), and neither may
flag the correct backward (δ = 0).
The function is f(x) = A·tanh(x) with 3 outputs and a custom
torch.autograd.Function backward (benchmarks.torch_corrupted).
"""
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from gradverify import check_grad
from gradverify.check.benchmarks import _problem, jax_corrupted, torch_corrupted
from gradverify.check.full import WIDE_STEP_RATIO

FULL_SIZE = 40
FAST_SIZE = 1000


@pytest.mark.parametrize("delta", [1e-2, 1e-4, 1e-6, 1e-7, 1e-8])
@pytest.mark.parametrize("where", ["spread", "one"])
def test_full_mode_flags_every_delta_down_to_1e_8(delta, where):
    fn, x = torch_corrupted(delta, where, size=FULL_SIZE)
    result = check_grad(fn, x, mode="full")
    assert result.verdict == "fail", str(result)


@given(index=st.integers(0, FULL_SIZE - 1), seed=st.integers(0, 2**16))
def test_full_mode_finds_a_1e_8_error_in_any_single_entry_and_names_it(index, seed):
    # Any entry whose Jacobian column is not 16 times below the median column: AD rounds relative to
    # the largest entries of the input's block, so a column of tanh' in the tails (|x| > 3, ~1e-3)
    # is judged to about 1e-8 of the block, not of itself.  Inputs near 0 are included.
    x0, matrix = _problem(FULL_SIZE, seed)
    columns = np.linalg.norm(matrix, axis=0) / np.cosh(x0) ** 2
    assume(columns[index] * WIDE_STEP_RATIO >= np.median(columns))
    fn, x = torch_corrupted(1e-8, "one", size=FULL_SIZE, seed=seed, index=index)
    result = check_grad(fn, x, mode="full", seed=seed)
    assert result.verdict == "fail"
    failing = result.to_frame().query("status == 'fail'")
    assert set(failing["element"]) == {f"[{index}]"}


@pytest.mark.parametrize("delta", [1e-2, 1e-4, 1e-6])
@pytest.mark.parametrize("where", ["spread", "one"])
def test_fast_mode_flags_every_delta_down_to_1e_6_on_1000_elements(delta, where):
    fn, x = torch_corrupted(delta, where, size=FAST_SIZE)
    result = check_grad(fn, x, mode="fast")
    assert result.verdict == "fail", str(result)
    assert result.evaluations < FAST_SIZE  # a full Jacobian would take 6 per element; bisection takes O(log n)


@given(index=st.integers(0, FAST_SIZE - 1), seed=st.integers(0, 2**16))
def test_fast_mode_localises_a_1e_6_error_in_any_single_entry(index, seed):
    # Fast mode sees entry j through its term g_j x_j of a random projection (directions move each
    # element by its own |x|): an entry whose term is 16 times below the median term (an input near 0,
    # or a derivative near 0 as tanh' in the tails) moves the projection too little.  Full mode checks
    # every entry, with steps on the median |x| as well (the test above).  The random cotangent can also
    # cancel entry j's column of A (3 outputs): one direction missed 1 of 292 sampled entries, three
    # directions none, so three are used here.
    x0, matrix = _problem(FAST_SIZE, seed)
    terms = np.linalg.norm(matrix, axis=0) / np.cosh(x0) ** 2 * np.abs(x0)
    assume(terms[index] * WIDE_STEP_RATIO >= np.median(terms))
    fn, x = torch_corrupted(1e-6, "one", size=FAST_SIZE, seed=seed, index=index)
    result = check_grad(fn, x, mode="fast", seed=seed, directions=3)
    assert result.verdict == "fail"
    localised = result.to_frame().query("check == 'reverse (localised)'")
    assert f"[{index}]" in set(localised["element"])


@given(seed=st.integers(0, 2**16))
def test_no_false_alarm_on_the_correct_backward(seed):
    for mode, size in (("full", FULL_SIZE), ("fast", FAST_SIZE)):
        fn, x = torch_corrupted(0.0, "spread", size=size, seed=seed)
        result = check_grad(fn, x, mode=mode, seed=seed)
        assert result.passed, str(result)


@pytest.mark.parametrize("mode", ["full", "fast"])
def test_jax_custom_vjp_errors_are_found_too(mode):
    fn, x = jax_corrupted(1e-8 if mode == "full" else 1e-6, "one", size=FULL_SIZE if mode == "full" else FAST_SIZE)
    assert check_grad(fn, x, mode=mode).verdict == "fail"
    correct, x = jax_corrupted(0.0, "one", size=FULL_SIZE)
    assert check_grad(correct, x, mode=mode).passed
