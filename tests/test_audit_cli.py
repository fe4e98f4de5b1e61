"""``python -m gradverify audit``: exit codes, JSON fields, reproducers, --resume and --shard, on a few ops."""
import json
import subprocess
import sys

import pytest

from gradverify.audit import Shard, plan
from gradverify.cli import main

HARDSIGMOID = ["audit", "torch", "--ops", "nn.functional.hardsigmoid", "--dtypes", "float64", "--orders", "1"]


@pytest.fixture(scope="module")
def audited(tmp_path_factory):
    out = tmp_path_factory.mktemp("audit")
    code = main([*HARDSIGMOID, "--out", str(out), "--json", str(out / "report.json")])
    return code, out, json.loads((out / "report.json").read_text())


def test_known_findings_exit_0_and_the_json_names_op_and_reproducer(audited, capsys):
    code, out, report = audited
    assert code == 0
    assert report["summary"]["ops"] == 1 and report["summary"]["units"] == report["summary"]["samples"] >= 3
    modes = {(f["op"], f["mode"]) for f in report["findings"]}
    assert ("nn.functional.hardsigmoid", "reverse") in modes
    for finding in report["findings"]:
        assert finding["known"] and finding["dtype"] == "float64"
        assert {"check_grad", "mpmath"} <= set(finding["oracles_agreeing"])
        assert (out / "reproducers" / finding["reproducer"].rsplit("/", 1)[-1]).exists()
    assert "| nn.functional.hardsigmoid | reverse | float64 |" in (out / "findings.md").read_text()


def test_the_reproducer_is_standalone_and_exits_1_while_the_defect_exists(audited, tmp_path):
    _, _, report = audited
    reverse = next(f for f in report["findings"] if f["mode"] == "reverse")
    script = open(reverse["reproducer"]).read()
    assert "gradverify" not in script.split('"""', 2)[2]
    run = subprocess.run([sys.executable, reverse["reproducer"]], cwd=tmp_path, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin"}, timeout=300)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "0.1666666716337204 where the truth (mpmath) is 0.16666666666666666" in run.stdout


def test_resume_reruns_nothing_and_a_new_finding_exits_1(audited, tmp_path):
    _, out, _ = audited
    lines = (out / "results.jsonl").read_text().splitlines()
    (tmp_path / "known.json").write_text('{"framework": "torch", "defects": []}')
    assert main([*HARDSIGMOID, "--out", str(out), "--resume", "--known", str(tmp_path / "known.json")]) == 1
    assert (out / "results.jsonl").read_text().splitlines() == lines


@pytest.mark.parametrize("flag, value", [("--ops", "no_such_op"), ("--shard", "3/2"), ("--dtypes", "float16"),
                                         ("--orders", "3"), ("--known", "/nonexistent/known.json"),
                                         ("--workers", "0")])
def test_bad_arguments_exit_2_naming_the_flag(flag, value, capsys, tmp_path):
    assert main([*HARDSIGMOID, "--out", str(tmp_path), flag, value]) == 2
    assert flag in capsys.readouterr().err


def test_resume_from_a_file_that_is_not_a_results_journal_exits_2(tmp_path, capsys):
    (tmp_path / "results.jsonl").write_text('{"unit": {"op": "sin"}, "status": "pass"}\n')
    assert main([*HARDSIGMOID, "--out", str(tmp_path), "--resume"]) == 2
    assert "--resume: journal: " in capsys.readouterr().err


def test_shards_split_the_plan_without_overlap():
    whole = plan("torch", ["nn.functional.hardsigmoid", "sin"], ["float64", "float32"], [1, 2])
    parts = [plan("torch", ["nn.functional.hardsigmoid", "sin"], ["float64", "float32"], [1, 2], Shard(i, 3))
             for i in range(3)]
    assert sorted(u.key for part in parts for u in part) == sorted(u.key for u in whole)
    assert len({u.key for u in whole}) == len(whole) == sum(map(len, parts))


def test_progress_prints_a_line_per_op_when_not_a_terminal(tmp_path, capsys):
    assert main(["audit", "torch", "--ops", "sin", "--dtypes", "float32", "--orders", "1", "--out", str(tmp_path)]) == 0
    assert "  sin: 1 units, 0 failing (1/1)" in capsys.readouterr().out


def test_jax_audit_on_the_matching_opinfo_samples(tmp_path):
    assert main(["audit", "jax", "--ops", "sin", "--dtypes", "float64", "--orders", "1", "--out", str(tmp_path),
                 "--json", str(tmp_path / "report.json")]) == 0
    summary = json.loads((tmp_path / "report.json").read_text())["summary"]
    assert summary["ops"] == 1 and summary["statuses"]["pass"] >= 1 and summary["statuses"]["fail"] == 0


def test_jax_samples_with_axes_and_keywords_are_audited_and_reproduced(tmp_path):
    # cumsum's samples pass dim positionally, sum's as dim=/keepdim=: JAX takes them as axis/keepdims.
    from gradverify.audit import jax_source

    assert main(["audit", "jax", "--ops", "cumsum,sum", "--dtypes", "float64", "--orders", "1", "--out", str(tmp_path),
                 "--json", str(tmp_path / "report.json")]) == 0
    statuses = json.loads((tmp_path / "report.json").read_text())["summary"]["statuses"]
    assert statuses["fail"] == 0 and statuses["pass"] >= 10
    made, index = next((case, i) for i in range(jax_source.count("jax.numpy.sum", "float64"))
                       if jax_source.call_of(jax_source._sample("jax.numpy.sum", i, "float64")[1]).keywords
                       and (case := _jax_case_or_none("jax.numpy.sum", i)))
    code = jax_source.reproducer_call("jax.numpy.sum", index, "float64") + "print(outputs(*XS)[0].tolist())\n"
    printed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(printed) == pytest.approx(made.fn(*made.leaves)[0].tolist())


def _jax_case_or_none(name, index):
    from gradverify.audit import jax_source
    from gradverify.audit.sources import Skip

    try:
        return jax_source.case(name, index, "float64")
    except Skip:
        return None


def test_max_elements_leaves_large_samples_out_and_says_how_many(tmp_path, capsys):
    whole = plan("torch", ["sin"], ["float64"], [1])
    assert plan("torch", ["sin"], ["float64"], [1], max_elements=1) == []
    assert main(["audit", "torch", "--ops", "sin", "--dtypes", "float64", "--orders", "1", "--max-elements", "1",
                 "--out", str(tmp_path), "--json", str(tmp_path / "r.json")]) == 0
    assert f"0 units planned; {len(whole)} samples over --max-elements 1 left out" in capsys.readouterr().out
    assert json.loads((tmp_path / "r.json").read_text())["summary"]["samples_over_max_elements"] == len(whole)


def test_a_sample_whose_output_is_nan_is_skipped_not_blamed():
    # __rpow__ sample 2 raises negative bases to fractional powers: NaN outputs, whose 0 * NaN poisons the
    # broadcast sum of every gradient (torch's gradcheck fails it too); that is IEEE arithmetic, not a defect.
    from gradverify.audit import Unit, audit_unit

    result = audit_unit(Unit("torch", "__rpow__", 2, "float64"))
    assert result.status == "skipped" and "not finite" in result.reason


def test_a_failure_torch_expects_and_only_its_gradcheck_confirms_is_not_a_finding(tmp_path):
    # as_strided_scatter's OpInfo marks test_fn_grad as an expected failure: torch knows its gradcheck fails there.
    from gradverify.audit import Unit, UnitResult
    from gradverify.audit.cli import build_report
    from gradverify.audit.unit import Failure

    failure = Failure("reverse", "reverse (Jacobian)", 1.0, 0.0, 4.5e15, {"check_grad": True, "torch gradcheck": True})
    result = UnitResult(Unit("torch", "as_strided_scatter", 3, "float64"), "fail", "differs", 0.1, "shapes", [failure])
    # In float32 the float64 Jacobian does not confirm it; still the failure torch expects, unlike sin's.
    alone = Failure("reverse", "reverse (Jacobian)", 1.0, 0.0, 8e6, {"check_grad": True, "float64": False})
    results = [result, UnitResult(Unit("torch", "as_strided_scatter", 3, "float32"), "fail", "differs", 0.1,
                                  "shapes", [alone]),
               UnitResult(Unit("torch", "sin", 0, "float32"), "fail", "differs", 0.1, "shapes", [alone])]
    report = build_report("torch", results, 0.1, "1/1", {}, tmp_path)
    assert report["findings"] == []
    assert [(f["op"], f["failing_samples"]) for f in report["expected_by_framework"]] == [
        ("as_strided_scatter", 1), ("as_strided_scatter", 1)]
    assert [f["op"] for f in report["unconfirmed"]] == ["sin"]


def test_a_gradient_test_torch_skips_for_the_audited_dtypes_is_an_expected_failure():
    from gradverify.audit import torch_source

    assert torch_source.expected_failure("normal", "reverse", ["float64"])  # whole class skipped: random samples
    assert torch_source.expected_failure("nn.functional.max_unpool2d", "reverse", ["float32"])  # duplicate indices
    assert not torch_source.expected_failure("acos", "reverse", ["float64"])  # skipped for complex dtypes only
    assert not torch_source.expected_failure("sin", "reverse", ["float64"])


def test_torch_samples_are_those_of_torch_gradient_tests():
    # Asked without gradients, OpInfo adds embedding samples whose gradient is not the derivative by design.
    from gradverify.audit import torch_source

    kwargs = [s.kwargs for s in torch_source.samples("nn.functional.embedding", "float64")]
    assert kwargs and not any({"padding_idx", "scale_grad_by_freq", "max_norm"} & set(k) for k in kwargs)


def test_a_confirmation_jacobian_the_function_refuses_says_nothing():
    import numpy as np
    import torch

    from gradverify.audit import truth
    from gradverify.check.backends import backend_for

    weights = torch.ones(3, dtype=torch.float32)  # as embedding_bag's per_sample_weights: left in float32

    def fn(x):
        return torch.dot(x, weights)

    arrays = [np.ones(3)]
    assert truth.jacobian(backend_for([torch.ones(3)]), fn, arrays, "reverse") is None


def test_an_order_torch_own_tests_expect_to_fail_is_skipped_with_its_error():
    # native_layer_norm's OpInfo skips test_fn_gradgrad: its double backward refuses the undefined gradients of
    # the mean and rstd outputs, which torch marks non-differentiable.
    from gradverify.audit import Unit, audit_unit

    result = audit_unit(Unit("torch", "native_layer_norm", 1, "float64", order=2))
    assert result.status == "skipped" and "expects it to fail" in result.reason and "RuntimeError" in result.reason


def test_mvlgamma_second_order_is_confirmed_by_mpmath_as_digamma_backward_defect():
    # mvlgamma(x, 2) = log(pi)/2 + lgamma(x) + lgamma(x - 1/2): its second derivative is torch's trigamma
    # (digamma's backward), 1.9e6 ulps off at sample 1; mpmath's exact value agrees with finite differences.
    from gradverify.audit import KNOWN_DEFECTS, Unit, audit_unit, load_known

    result = audit_unit(Unit("torch", "mvlgamma.mvlgamma_p_1", 1, "float64", order=2))
    [failure] = result.failures
    assert failure.mode == "second order" and failure.oracles["mpmath"] and failure.confirmed
    assert failure.ulps > 1e6
    assert ("mvlgamma.mvlgamma_p_1", "second order") in load_known(KNOWN_DEFECTS["torch"])


def test_binary_cross_entropy_second_order_is_confirmed_by_mpmath_over_its_target_weight_and_mean(tmp_path):
    # torch's double backward divides by (x + 1e-12)^2 (1 - x + 1e-12)^2: about 2e-12/x relative off. mpmath's
    # loss is elementwise in the input, with the target and weight elements as parameters, averaged.
    from gradverify.audit import KNOWN_DEFECTS, load_known

    out = tmp_path / "bce"
    code = main(["audit", "torch", "--ops", "nn.functional.binary_cross_entropy", "--dtypes", "float64",
                 "--orders", "2", "--out", str(out), "--json", str(out / "report.json")])
    [finding] = json.loads((out / "report.json").read_text())["findings"]
    assert code == 0 and finding["mode"] == "second order" and "mpmath" in finding["oracles_agreeing"]
    assert ("nn.functional.binary_cross_entropy", "second order") in load_known(KNOWN_DEFECTS["torch"])
    run = subprocess.run([sys.executable, finding["reproducer"]], cwd=tmp_path, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin"}, timeout=300)
    assert run.returncode == 1 and "where the truth (mpmath) is" in run.stdout, run.stdout + run.stderr


@pytest.mark.parametrize("op, index", [("clamp", 5), ("grid_sampler_2d", 3), ("nn.functional.grid_sample", 4)])
def test_a_bfloat16_tie_where_forward_and_reverse_take_different_subgradients_is_no_finding(op, index):
    # bfloat16's coarse grid puts inputs exactly on clamp's bound and grid points on cell edges (grid_sample #4: its
    # subgradient is off by its bfloat16 rounding, measured before the kink is judged).
    from gradverify.audit import Unit, audit_unit

    assert audit_unit(Unit("torch", op, index, "bfloat16")).status == "pass"


def test_a_forward_over_reverse_failure_is_confirmed_by_torch_checking_forward_over_reverse():
    # triangular_solve's JVP of its backward is wrong at sample 5; torch's gradgradcheck sees it only with
    # check_fwd_over_rev=True, and reverse over reverse is right.
    from gradverify.audit import Unit, audit_unit

    result = audit_unit(Unit("torch", "triangular_solve", 5, "float64", order=2))
    [failure] = result.failures
    assert failure.mode == "second order" and "consistency" in failure.check
    assert failure.oracles == {"check_grad": True, "torch gradcheck": True}


def test_a_bfloat16_result_is_confirmed_wrong_only_beyond_its_own_rounding():
    # 256 float32 ulps (1.5e-5) would confirm every bfloat16 rounding (2**-8); 16 bfloat16 ulps are 12.5%.
    import numpy as np
    from ml_dtypes import bfloat16

    from gradverify.audit import truth

    def disagreement(observed, dtype):
        return truth.worst_disagreement([[np.array([[observed]])]], [[np.array([[1.0]])]], np.dtype(dtype))

    assert disagreement(1.05, bfloat16) is None
    assert disagreement(1.29, bfloat16)["observed"] == 1.29  # special.ndtr's bfloat16 derivative at -8: 29% off
    assert disagreement(1.05, np.float32) is not None


def test_a_bfloat16_sample_with_keyword_tensors_is_checked_in_float64():
    # group_norm's bfloat16 weight and bias follow the inputs to float64, so the float64 evaluation is the same
    # function; before, it refused mixed dtypes and the check ran finite differences in bfloat16 (a NaN bound).
    from gradverify.audit import Unit, audit_unit

    result = audit_unit(Unit("torch", "nn.functional.group_norm", 8, "bfloat16"))
    assert result.status == "pass", result.reason


def test_a_jax_bfloat16_sample_is_compared_with_torch_on_the_same_sample():
    # Each dtype has its own OpInfo samples: linalg.norm's bfloat16 sample 75 is a (5, 5, 5) input with
    # keepdim, its float64 sample 75 a (5, 0) one with ord 'nuc'; torch ran the first with the second's
    # arguments and raised ("must be 1D or 2D").
    from gradverify.audit import Unit, audit_unit

    result = audit_unit(Unit("jax", "jax.numpy.linalg.norm", 75, "bfloat16"))
    assert result.status == "pass", result.reason


@pytest.mark.parametrize("op, index, dtype, order, mode", [("triangular_solve", 1, "float32", 2, "second order"),
                                                           ("nextafter", 6, "bfloat16", 1, "reverse"),
                                                           ("nn.functional.poisson_nll_loss", 49, "bfloat16", 1,
                                                            "reverse")])
def test_a_lower_precision_failure_is_confirmed_by_the_framework_checker_in_float64_where_the_ads_agree(
        op, index, dtype, order, mode, tmp_path):
    # torch's checkers run in float64 only: at the sample's own inputs, widened, they judge float64's AD, which the
    # audit first finds equal to this dtype's.  nextafter #6 holds 5.125 in both tensors: torch's derivative at
    # the tie is 0, where nextafter(x, y) is x to within an ulp on both sides.  poisson_nll_loss(full=True) #49 holds
    # targets of exactly 0, where the gradient in target is NaN (the masked Stirling term's -inf times 0), not -input.
    from gradverify.audit import KNOWN_DEFECTS, Unit, audit_unit, collect, load_known, torch_source
    from gradverify.audit.reproducer import script

    result = audit_unit(Unit("torch", op, index, dtype, order))
    failure = next(f for f in result.failures if f.mode == mode)
    assert failure.oracles["torch gradcheck in float64"] and failure.confirmed
    [finding] = [f for f in collect([result], load_known(KNOWN_DEFECTS["torch"]), torch_source)["findings"]
                 if f["mode"] == mode]
    assert finding["known"]
    path = tmp_path / "reproducer.py"
    path.write_text(script(finding, torch_source.reproducer_call(op, index, dtype)))
    run = subprocess.run([sys.executable, str(path)], cwd=tmp_path, capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin"}, timeout=300)
    assert run.returncode == 1 and "own check fails too" in run.stdout, run.stdout + run.stderr


def test_the_checker_in_float64_is_asked_only_where_float64_ad_matches_the_audited_dtype():
    import torch

    from gradverify.audit.sources import Case
    from gradverify.audit.unit import _same_ad_in_float64

    class SlopeByDtype(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return 2 * x

        @staticmethod
        def backward(ctx, grad):
            return grad * (2 if grad.dtype == torch.float64 else 3)

    x = torch.linspace(-1, 1, 5, dtype=torch.float32)
    assert _same_ad_in_float64(Case(lambda v: (2 * v,), [x], True, True), "reverse")
    assert _same_ad_in_float64(Case(lambda v: (v * v.sin(),), [x], True, True), "second order")
    assert not _same_ad_in_float64(Case(lambda v: (SlopeByDtype.apply(v),), [x], True, True), "reverse")


@pytest.mark.parametrize("op, index, dtype", [("linalg.lstsq.grad_oriented", 32, "float64"),
                                              ("masked.softmax", 3, "float32"),
                                              ("torch.ops.aten._safe_softmax.default", 7, "bfloat16")])
def test_second_order_rounding_the_checker_measures_is_no_failure(op, index, dtype):
    # lstsq #32 (gelss, through an SVD) is five times noisier along the failing input than along a random
    # direction: finite differences sized by the random one missed the truth by 4.2e-9 on 22.08, which AD gives
    # to 1e-10 (Richardson at 1e-3 and 3e-4 agree).  The softmaxes' float32 Hessian entries (6e-5) cancel
    # terms near 1 that no entry shows; float64's AD matches the finite differences, and the float32 products
    # move by their whole error when their cotangents are scaled by 3.
    from gradverify.audit import Unit, audit_unit

    result = audit_unit(Unit("torch", op, index, dtype, order=2))
    assert result.status == "pass", result.reason
