"""Random-graph differential testing: the oracles, campaigns, reproducers and the fuzz command."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given

from gradverify.cli import main
from gradverify.fuzz import mutants
from gradverify.fuzz.campaign import Shard, check, cover_every_op, draw_cases, run_campaign
from gradverify.fuzz.graph import Graph, OpNode
from gradverify.fuzz.oracles import ORACLES, check_case, check_kinks, check_saturation, intermediate_rounding
from gradverify.ops import TABLE
from gradverify.strategies import API_CHOICES, cases

REPO = Path(__file__).resolve().parents[1]


# JAX compiles every new shape (about a second each here), so the property test compares with
# PyTorch only; the campaign tests below run JAX too, on few graphs.
@given(cases(max_nodes=6))
def test_engine_agrees_with_every_oracle_on_random_graphs(case):
    outcome = check(case, references=("torch",))
    assert outcome.engine_failures == [], "\n".join(str(f) for f in outcome.engine_failures)


def _sum_of(op, x, dtype="float64", attrs=()):
    graph = Graph((x.shape,), dtype, (OpNode(op, (0,), attrs), OpNode("sum", (1,), (("axis", None),))))
    return graph.compile()


def test_a_saturated_sigmoid_passes_where_the_references_round():
    # sigmoid'(x) at |x| ~ 30: PyTorch and JAX use y (1 - y), which loses most digits there;
    # the engine's s(x) s(-x) keeps them.  The ground truth decides, and the engine is not blamed.
    x = np.array([20.0, -30.0, 33.0])
    outcome = check_case(_sum_of("sigmoid", x), [x], np.array(0.7), [np.array([0.3, -1.2, 0.8])], depth=2)
    assert outcome.engine_failures == []
    assert {f.oracle for f in outcome.inconclusive} >= {"torch"}


def test_softmax_is_accurate_where_one_output_rounds_to_one():
    # Found by this fuzzer: out * (g - sum(g * out)) loses the small entries' relative accuracy
    # where float32 (hence the rounding estimate) saturates; PyTorch shares that formula.  Inside a
    # graph such a loss looks like the chain rule's own cancellation, which no reference avoids:
    # the graph oracles note it as unconfirmed, and the saturation probe convicts the rule.
    x = np.array([[-2.0, 21.5]])
    graph = Graph((x.shape,), "float64", (OpNode("softmax", (0,), (("axis", -1),)),)).compile()
    args = ([x], np.array([[0.3, -1.1]]), [np.array([[0.7, 0.2]])])
    assert check_case(graph, *args, depth=1).engine_failures == []
    with mutants.active("softmax_rounded_output"):
        noted = {f.oracle for f in check_case(graph, *args, depth=1).inconclusive}
        assert {"complex_step", "forward_reverse"} <= noted
        assert [f.oracle for f in check_saturation()] == ["saturation"]


def test_a_derivative_the_graph_cancels_is_not_blamed_on_the_engine():
    # Found by the nightly profile: x - softplus(x) at x = 20 has derivative 1 - sigmoid(20) = 2e-9,
    # which every chain rule computes with 7 digits lost, as the output itself loses 6.
    graph = Graph(((),), "float64", (OpNode("softplus", (0,), ()), OpNode("neg", (1,), ()), OpNode("add", (2, 0), ())))
    outcome = check_case(graph.compile(), [np.array(20.0)], np.array(0.126), [np.array(0.105)], depth=3)
    assert outcome.engine_failures == []
    with mutants.active("cotangent_ignored"):  # a real error on the same kind of graph is still caught
        exp_graph = Graph(((),), "float64", (OpNode("exp", (0,), ()), OpNode("neg", (1,), ()), OpNode("add", (2, 0), ())))
        assert check_case(exp_graph.compile(), [np.array(2.0)], np.array(0.126), [np.array(0.105)], depth=3).engine_failures


def test_the_rounding_of_an_intermediate_value_is_part_of_the_bound():
    # Graph 453 of `fuzz --graphs 2000 --seed 7 --shard 2/4` (issue 16): v0 + v1 rounds 65.87499999999999289
    # to 65.875, next to a root of sin, and log(sin(.)) turns that half ulp into 1.6e-12 of u^T H u.
    graph = Graph(((), ()), "float64", (OpNode("add", (0, 1)), OpNode("sin", (2,)), OpNode("log", (3,)),
                                         OpNode("cos", (4,))))
    x, v, u = [np.array(39.99999999999999), np.array(25.875)], np.array(0.84), [np.array(1.3), np.array(0.9)]
    carried = intermediate_rounding(graph.compile(), x, v, u, np.float64)
    assert 0 < float(np.sum(np.abs(u[0] * carried["hvp"][0]))) < 1e-10
    assert check_case(graph.compile(), x, v, u, depth=4).engine_failures == []
    with mutants.active("sign_flip"):  # the widened bound still sees a wrong cos'
        assert "mpmath" in check_case(graph.compile(), x, v, u, depth=4).fired


def test_a_wrong_rule_is_caught_by_the_ground_truth_and_the_references():
    x = np.array([0.4, 1.3, -2.0])
    with mutants.active("sign_flip"):
        outcome = check_case(_sum_of("cos", x), [x], np.array(-1.3), [np.array([0.5, 0.9, -0.7])], depth=2)
    assert {"mpmath", "torch", "jax", "finite_difference", "complex_step"} <= outcome.fired
    assert all(f.blamed == "engine" for f in outcome.findings)


def test_kink_conventions_match_pytorch_and_a_changed_one_is_caught():
    assert check_kinks() == []
    with mutants.active("kink_convention_changed"):
        findings = check_kinks()
    assert {f.quantity for f in findings} == {"relu vjp", "relu jvp"}
    assert all(f.oracle == "kink_convention" for f in findings)


@pytest.mark.parametrize("seed", [0, 1, 3])
def test_saturated_derivatives_match_the_ground_truth_entry_by_entry(seed):
    # Seeds 1 and 3 caught cross_entropy's p - 1 cancelling at the target entry (now fixed).
    assert check_saturation(seed) == []


@pytest.mark.parametrize("mutant, op", [("softmax_rounded_output", "softmax"), ("rounded_output_derivative", "sigmoid")])
def test_a_rule_built_from_a_rounded_output_is_caught_at_saturation(mutant, op):
    with mutants.active(mutant):
        findings = check_saturation()
    assert [f.quantity for f in findings] == [f"{op} vjp of input 0"]
    assert findings[0].oracle == "saturation" and findings[0].blamed == "engine"


@pytest.mark.parametrize("seed", [1, 7])
def test_a_campaign_checks_every_op_of_the_table_and_every_api_function(seed):
    # Uniform draws leave ops that need particular operands (linear, pow, squeeze ...) out of 100 graphs.
    every = set(TABLE) | set(API_CHOICES)
    drawn = draw_cases(cases(max_nodes=8), seed, 100)
    before = set().union(*(case.graph.ops_covered() for case in drawn)) & every
    covered = cover_every_op(drawn, seed, max_nodes=8)
    after = set().union(*(case.graph.ops_covered() for case in covered)) & every
    assert before < every and after == every
    # One focused graph may bring in several missing ops.
    assert len(covered) == len(drawn) and sum(a is not b for a, b in zip(drawn, covered)) <= len(every) - len(before)


def test_shrunk_reproducer_fails_as_a_separate_script(tmp_path):
    preamble = "from gradverify.fuzz import mutants\n\nmutants.apply('sign_flip')"
    with mutants.active("sign_flip"):
        result = run_campaign(6, seed=3, max_nodes=4, focus="cos", preamble=preamble, references=("torch",))
    assert not result.passed
    reproducer = next(f.reproducer for f in result.failures if f.reproducer)
    assert "ops.cos(" in reproducer
    assert reproducer.count(" = ops.") <= 2  # shrunk to the op itself (and at most one more node)
    script = tmp_path / "reproducer.py"
    script.write_text(reproducer)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
    broken = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert broken.returncode == 1, broken.stderr
    assert "engine is wrong" in broken.stdout
    script.write_text(reproducer.replace("mutants.apply('sign_flip')", ""))
    fixed = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "every oracle agrees" in fixed.stdout


def test_fuzz_command_writes_the_json_report(tmp_path, capsys):
    path = tmp_path / "fuzz.json"
    assert main(["fuzz", "--graphs", "4", "--seed", "5", "--max-nodes", "4", "--workers", "1", "--json", str(path)]) == 0
    report = json.loads(path.read_text())
    assert report["graphs"] == 4
    assert report["failures"] == []
    assert report["graphs_per_second"] > 0
    assert set(report["oracles"]) == set(ORACLES) - {"engine"}  # the target is no oracle of itself
    assert report["ops_covered"] and all(count >= 1 for count in report["ops_covered"].values())
    assert "PASSED" in capsys.readouterr().out


def test_fuzz_command_exits_1_and_names_the_oracle_when_the_engine_is_wrong(tmp_path):
    path = tmp_path / "fuzz.json"
    # One worker: the mutant patches this process only, not worker processes.  Six graphs: a focused
    # graph does not always reach exp (tail inputs overflow it, and the node falls back to another op).
    with mutants.active("cotangent_ignored"):
        code = main(["fuzz", "--graphs", "6", "--seed", "1", "--focus", "exp", "--no-shrink", "--workers", "1",
                     "--json", str(path)])
    assert code == 1
    report = json.loads(path.read_text())
    assert report["failures"] and not report["passed"]
    assert report["failures_by_oracle"]["mpmath"] >= 1
    # The saturation probe at the campaign's start catches it too, before any graph.
    assert any("mpmath" in failure["oracles"] for failure in report["failures"])


def test_shards_split_a_campaign_into_independent_parts(tmp_path):
    assert Shard.parse("2/4") == Shard(1, 4)
    assert sum(Shard(i, 4).graphs(10) for i in range(4)) == 10
    assert len({Shard(i, 3).seed(7) for i in range(3)}) == 3
    assert Shard().seed(7) == 7
    for text in ("0/4", "5/4", "a/b", "3"):
        with pytest.raises(ValueError, match="shard"):
            Shard.parse(text)
    path = tmp_path / "shard.json"
    argv = ["fuzz", "--graphs", "3", "--seed", "2", "--max-nodes", "3", "--shard", "2/2", "--json", str(path)]
    assert main(argv) == 0
    report = json.loads(path.read_text())
    assert report["graphs"] == 1 and report["shard"] == "2/2"


@pytest.mark.parametrize("argv, message", [
    (["fuzz", "--shard", "3/2"], "--shard"),
    (["fuzz", "--graphs", "0"], "--graphs"),
    (["fuzz", "--focus", "erf"], "--focus"),
])
def test_fuzz_command_rejects_bad_arguments_with_exit_2(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_workers_check_the_same_graphs_as_one_process():
    one = run_campaign(4, seed=9, max_nodes=4, references=("torch",))
    two = run_campaign(4, seed=9, max_nodes=4, references=("torch",), workers=2)
    assert one.graphs == two.graphs == 4
    assert one.ops_covered == two.ops_covered
    assert one.passed and two.passed
