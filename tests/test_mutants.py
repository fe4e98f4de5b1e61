"""The mutation self-test: every mutant changes the engine, is undone, and is caught."""
import json
import sys

import numpy as np
import pytest

import gradverify.engine as ge
from gradverify.cli import main
from gradverify.fuzz import mutants
from gradverify.ops import TABLE

API_MUTATED = ("var", "std", "cumsum", "prod", "topk", "einsum", "log1p", "softplus")


def _engine_state():
    tensor_module = sys.modules["gradverify.engine.core"]
    rules = {name: (op.forward, op.vjp, op.jvp) for name, op in TABLE.items()}
    api = {name: getattr(ge, name) for name in API_MUTATED}
    stateful = (ge.optim.SGD._update, ge.optim.Adam._update, tensor_module.mark_modified,
                tensor_module._accumulate_grad, tensor_module._run_hooks, ge.nn.functional.cross_entropy,
                ge.optim.RMSprop._update, ge.optim.Adagrad._update, ge.optim.lr_scheduler.StepLR.get_lr,
                ge.nn.Module.__call__, ge.nn.functional.batch_norm, ge.nn.functional.embedding,
                sys.modules["gradverify.engine.nn.module"]._BackwardHookCall._run_hooks)
    return (rules, tensor_module.fit_cotangent, tensor_module.run_backward, api,
            ge.nn.functional.binary_cross_entropy_with_logits, stateful)


def _cos_gradient():
    x = ge.tensor(np.array([0.3, 1.1]), requires_grad=True)
    return ge.autograd.grad(ge.cos(x).sum(), [x])[0].array


@pytest.mark.parametrize("name", [m.name for m in mutants.MUTANTS])
def test_each_mutant_changes_the_engine_and_is_undone(name):
    before = _engine_state()
    with mutants.active(name) as mutant:
        during = _engine_state()
        assert during != before, f"{name} changed nothing"
        assert mutant.description
    assert _engine_state() == before


def test_a_mutant_changes_the_numbers_and_restoring_brings_them_back():
    expected = -np.sin([0.3, 1.1])
    np.testing.assert_allclose(_cos_gradient(), expected)
    with mutants.active("sign_flip"):
        np.testing.assert_allclose(_cos_gradient(), -expected)
    np.testing.assert_allclose(_cos_gradient(), expected)


def test_unknown_mutant_is_named_in_the_error():
    with pytest.raises(KeyError, match="unknown mutant 'nope'"):
        mutants.get("nope")


def test_every_mutant_is_killed_by_the_oracle_meant_for_it():
    # The default budget against PyTorch and the numerical oracles (JAX's compilations would
    # dominate the run); `python -m gradverify mutants` adds JAX.
    # (The stateful programs' mutants are run on a smaller budget in test_programs.)
    graph_mutants = [m.name for m in mutants.MUTANTS if not (m.focus or "").startswith("program.")]
    results = {r.mutant.name: r for r in mutants.kill_matrix(names=graph_mutants, references=("torch",))}
    assert [name for name, r in results.items() if not r.killed] == []
    assert len(results) == len(graph_mutants) >= 29
    expected = {
        "gradient_wrong_dtype": "structure",
        "broadcast_not_reduced": "structure",
        "kink_convention_changed": "kink_convention",
        "rounded_output_derivative": "mpmath",
        "softmax_rounded_output": "saturation",
        "jvp_inconsistent": "forward_reverse",
        "saved_value_detached": "mpmath",
        "sign_flip": "finite_difference",
        "fanout_overwritten": "torch",
        # Right once, wrong twice: only a derivative of a derivative sees it.
        "var_detached_mean": "mpmath",
        # Forward values only: the derivative rule is separate and right.
        "log1p_naive": "ulps",
    }
    for name, oracle in expected.items():
        assert oracle in results[name].caught_by, (name, results[name].caught_by)


def test_mutants_command_reports_kills_and_exit_code(tmp_path, capsys):
    path = tmp_path / "mutants.json"
    code = main(["mutants", "--only", "sign_flip", "kink_convention_changed", "--graphs", "4", "--json", str(path)])
    report = json.loads(path.read_text())
    assert code == 0
    assert report["killed"] == report["total"] == 2
    assert report["survivors"] == []
    assert report["matrix"]["kink_convention_changed"]["caught_by"] == {"kink_convention": 2}
    assert report["matrix"]["kink_convention_changed"]["caught"] == 0  # (the kink probes only: the graphs avoid kinks)
    assert 1 <= report["matrix"]["sign_flip"]["caught"] <= 4
    assert "mutants.apply('sign_flip')" in report["matrix"]["sign_flip"]["reproducer"]
    assert "killed 2/2" in capsys.readouterr().out


def test_mutants_command_rejects_unknown_names(capsys):
    assert main(["mutants", "--only", "nope"]) == 2
    assert "unknown mutants nope" in capsys.readouterr().err
