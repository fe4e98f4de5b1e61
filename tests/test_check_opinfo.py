"""No false alarms on PyTorch's own ops: the OpInfo samples through ``gradverify.audit``.

The default run audits the first checkable float64 sample (of at most
``MAX_ELEMENTS`` elements) of every ``OPINFO_STRIDE``-th differentiable op of ``op_db`` (sorted by name, so the
subset spans the whole table); the nightly run (``--hypothesis-profile=nightly``)
audits every sample of every op in float64 and float32, at order 1 and, as a test of its own, order 2.  Either way a failure
of check_grad must be a confirmed defect already listed in
``gradverify/audit/known_defects_torch.json``: a disagreement no second oracle
confirms, or a confirmed one not in the file, fails the test.
"""
import pytest
import torch

from gradverify import check_grad
from gradverify.audit import KNOWN_DEFECTS, Unit, audit_unit, collect, load_known, plan
from gradverify.audit import torch_source

OPINFO_STRIDE = 12
MAX_ELEMENTS = 64
"""The default run takes the first sample of at most this many elements (a full Jacobian costs six evaluations
per element)."""
ALL_OPS = torch_source.select(None)
DEFAULT_OPS = ALL_OPS[::OPINFO_STRIDE]
KNOWN = load_known(KNOWN_DEFECTS["torch"])


def assert_only_known_defects(results):
    report = collect(results, KNOWN, torch_source)
    assert not report["unconfirmed"], [(f["op"], f["mode"], f["reason"]) for f in report["unconfirmed"]]
    assert all(f["known"] for f in report["findings"]), [(f["op"], f["mode"], f["reason"]) for f in report["findings"]
                                                         if not f["known"]]


def test_default_subset_size():
    # The count stated in the report: ops whose first checkable sample runs in the default suite.
    assert len(ALL_OPS) > 500
    assert len(DEFAULT_OPS) == -(-len(ALL_OPS) // OPINFO_STRIDE)


@pytest.mark.parametrize("op", DEFAULT_OPS)
def test_opinfo_first_checkable_sample_has_no_unknown_failure(op):
    for unit in plan("torch", [op], ["float64"], [1], max_elements=MAX_ELEMENTS):
        result = audit_unit(unit)
        if result.status not in ("skipped", "refused"):
            break
    else:
        pytest.skip(f"{op}: no sample check_grad can differentiate")
    assert result.status in ("pass", "fail", "inconclusive"), result.reason
    assert_only_known_defects([result])


def test_hardsigmoid_float64_backward_is_a_confirmed_known_defect():
    # torch's float64 hardsigmoid backward multiplies by float32's 1/6 (0.16666667163...): torch's gradcheck
    # (rtol 1e-3) passes it, mpmath's exact 1/6 and check_grad's finite differences agree it is 3e-8 off.
    result = audit_unit(Unit("torch", "nn.functional.hardsigmoid", 0, "float64"))
    reverse = next(f for f in result.failures if f.mode == "reverse")
    assert reverse.oracles == {"check_grad": True, "torch gradcheck": False, "mpmath": True}
    assert reverse.observed == pytest.approx(0.16666667163372040, rel=1e-15)
    assert reverse.truth == 1 / 6 and reverse.ulps > 1e8
    assert ("nn.functional.hardsigmoid", "reverse") in KNOWN


def test_triangular_solve_forward_mode_bug_is_found():
    # Outside OpInfo's gradcheck_wrapper (which zeroes the unused triangle before the op) torch's forward-mode
    # AD of triangular_solve lets the tangent of the unused lower triangle leak into the result; reverse mode and
    # finite differences agree that those entries do not matter.
    generator = torch.Generator().manual_seed(0)
    rhs = torch.randn(4, 2, generator=generator, dtype=torch.float64)
    matrix = torch.randn(4, 4, generator=generator, dtype=torch.float64) + 4 * torch.eye(4, dtype=torch.float64)
    solve = lambda a: torch.triangular_solve(rhs, a)[0]  # noqa: E731
    assert torch.autograd.gradcheck(solve, (matrix.clone().requires_grad_(),))
    assert check_grad(solve, matrix, check_forward=False).passed
    result = check_grad(solve, matrix)
    assert result.verdict == "fail" and result.reason.startswith(("forward", "consistency"))


def test_a_fast_mode_failure_is_rejudged_entry_by_entry():
    # OpInfo's lstsq sample 35 (gelsd, 216 elements: fast mode) fails a random projection by 1.04 times its
    # bound; reverse AD agrees with mpmath to 1e-14 there, and the full Jacobian, entry by entry, passes.
    result = audit_unit(Unit("torch", "linalg.lstsq.grad_oriented", 35, "float64"))
    assert result.status == "pass", result.reason


@pytest.mark.nightly
@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("op", ALL_OPS)
def test_opinfo_every_sample_has_no_unknown_failure(op, order):
    assert_only_known_defects([audit_unit(unit) for unit in plan("torch", [op], ["float64", "float32"], [order])])
