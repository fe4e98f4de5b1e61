"""Stateful programs: the engine's training steps, in-place updates, accumulation and hooks against PyTorch."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings

import gradverify.engine as ge
from gradverify.cli import main
from gradverify.fuzz import mutants
from gradverify.fuzz.campaign import PROGRAM_EVERY, _interleave, draw_cases
from gradverify.fuzz.programs import (NoGradUpdate, Program, RemoveHook, SetMode, Train, check_program, observe,
                                      parameter_shapes)
from gradverify.strategies import programs

REPO = Path(__file__).resolve().parents[1]
SGD = ("SGD", (("lr", 0.1),))
CROSS_ENTROPY = ("CrossEntropyLoss", (("reduction", "mean"),))


def _program(*steps, loss=CROSS_ENTROPY, optimizer=SGD, layers=(("Linear", (3, 2), ()),), x=None, **options):
    rng = np.random.default_rng(0)
    parameters = tuple(rng.uniform(-1, 1, shape) for layer in layers for shape in parameter_shapes(layer))
    x = rng.uniform(-2, 2, (4, layers[0][1][0])) if x is None else x
    return Program(layers, parameters, x, np.array([0, 1, 1, 0]), loss, optimizer, steps, **options)


def _records(program, library=ge, kind=None):
    return [value for observable, value in observe(program.compile(), library) if kind in (None, observable)]


@settings(max_examples=15)
@given(programs())
def test_engine_matches_pytorch_on_random_programs(program):
    assert check_program(program).findings == []


def test_a_backward_through_a_changed_saved_tensor_or_a_freed_graph_raises_in_both():
    for step in (Train(inplace=("mul_", (-2.0,), True)), Train(backward="freed")):
        program = _program(step, NoGradUpdate(0, "clamp_", (-0.5, 0.5)))
        assert _records(program, torch, "error") == _records(program, ge, "error") == ["RuntimeError"]
        assert check_program(program).findings == []
    unchanged = _program(Train(inplace=("mul_", (-2.0,), False)))  # the output changed before anything read it
    assert _records(unchanged, torch, "error") == [] and check_program(unchanged).findings == []


def test_retained_backwards_and_scaling_hooks_multiply_the_gradients():
    once = _records(_program(Train()), kind="grad")[0]
    for step, factor in ((Train(backward="retained"), 2.0), (Train(hook=("output", "scale", -1.0)), -1.0),
                         (Train(hook=(1, "replace", 0.5)), None)):
        grads = _records(_program(step), kind="grad")[0]
        if factor is None:  # the bias's gradient replaced by 0.5 everywhere
            np.testing.assert_allclose(grads[1], [0.5, 0.5])
            np.testing.assert_allclose(grads[0], once[0])
        else:
            for got, expected in zip(grads, once):
                np.testing.assert_allclose(got, factor * expected)


MOMENTUM = ("SGD", (("lr", 0.1), ("momentum", 0.9), ("nesterov", True)))
ADAM = ("Adam", (("lr", 0.05), ("betas", (0.5, 0.9))))
SMOOTHED = ("CrossEntropyLoss", (("reduction", "sum"), ("label_smoothing", 0.25)))
WEIGHTED = ("CrossEntropyLoss", (("reduction", "mean"), ("weight", np.array([0.5, 2.0]))))
BATCH_NORMED = (("Linear", (3, 3), ()), ("BatchNorm1d", (3,), (("momentum", 0.5),)), ("ReLU", (), ()),
                ("Linear", (3, 2), ()))
EMBEDDED = (("Embedding", (4, 3), (("padding_idx", 0),)), ("Linear", (3, 2), ()))


@pytest.mark.parametrize("mutant, program, oracle", [
    ("sgd_momentum_not_updated", _program(Train(), Train(), Train(), optimizer=MOMENTUM), "program_params"),
    ("sgd_nesterov_ignored", _program(Train(), optimizer=MOMENTUM), "program_params"),
    ("adam_bias_correction_off_by_one", _program(Train(), optimizer=ADAM), "program_params"),
    ("version_counter_not_bumped", _program(Train(inplace=("add_", (0.5,), True))), "program_error"),
    ("grad_overwritten", _program(Train(backward="retained")), "program_grad"),
    ("hook_return_ignored", _program(Train(hook=("output", "scale", 2.0))), "program_grad"),
    ("label_smoothing_ignored", _program(Train(), loss=SMOOTHED), "program_loss"),
    ("class_weight_ignored", _program(Train(), loss=WEIGHTED), "program_loss"),
    ("batch_norm_biased_running_var", _program(Train(), layers=BATCH_NORMED), "program_buffers"),
    ("embedding_padding_gradient", _program(Train(), layers=EMBEDDED, x=np.array([0, 1, 2, 0])), "program_grad"),
    ("rmsprop_centered_ignored", _program(Train(), optimizer=("RMSprop", (("centered", True),))), "program_params"),
    ("adagrad_lr_decay_ignored", _program(Train(), Train(), optimizer=("Adagrad", (("lr_decay", 0.5),))),
     "program_params"),
    ("step_lr_off_by_one", _program(Train(), scheduler=("StepLR", (("step_size", 2),))), "program_lr"),
    ("forward_hook_return_ignored", _program(Train(), module_hooks=((0, "scale", 2.0),)), "program_loss"),
    ("backward_hook_return_ignored", _program(Train(), layers=BATCH_NORMED, module_hooks=((2, "backward_scale", 2.0),)),
     "program_grad"),
])
def test_each_stateful_mutant_is_caught_by_the_observable_it_changes(mutant, program, oracle):
    assert check_program(program).findings == []
    with mutants.active(mutant):
        caught = {finding.oracle for finding in check_program(program).engine_failures}
    assert oracle in caught


def test_a_small_campaign_kills_every_stateful_mutant():
    stateful = [m.name for m in mutants.MUTANTS if (m.focus or "").startswith("program.")]
    results = mutants.kill_matrix(graphs=10, names=stateful, references=("torch",))
    assert len(results) >= 15 and [r.mutant.name for r in results if not r.killed] == []


def test_an_in_place_change_of_a_saved_output_raises_as_in_pytorch():
    program = _program(Train(inplace=("mul_", (-2.0,), False)), loss=("NLLLoss", (("reduction", "mean"),)))
    assert _records(program, torch, "error") == ["RuntimeError"]
    assert check_program(program).findings == []


def test_batch_norm_running_statistics_follow_the_mode_and_layer_hooks_their_removal():
    program = _program(Train(), SetMode(False), Train(), RemoveHook(0), SetMode(True), Train(), layers=BATCH_NORMED,
                       module_hooks=((1, "scale", -1.0), (2, "observe", None), (3, "pre_scale", 0.5)))
    assert check_program(program).findings == []
    buffers = _records(program, kind="buffers")
    assert [float(b[2]) for b in buffers] == [1.0, 1.0, 2.0]  # num_batches_tracked: not counted in eval mode
    np.testing.assert_array_equal(buffers[0][0], buffers[1][0])
    assert not np.allclose(buffers[1][0], buffers[2][0])
    assert len(_records(program, kind="activation")) == 3  # the observing hook sees each forward
    losses = [float(v) for v in _records(program, kind="loss")]
    # Removing the hook that negates the BatchNorm's output changes the loss; the engine agrees with PyTorch.
    np.testing.assert_allclose(losses, [float(v) for v in _records(program, torch, "loss")], rtol=1e-12)


def test_a_campaign_puts_a_program_at_every_tenth_place():
    graphs = [f"g{k}" for k in range(2 * PROGRAM_EVERY - 2)]
    drawn = _interleave(graphs, ["p0", "p1", "p2"])
    assert [k for k, case in enumerate(drawn) if case.startswith("p")] == [
        PROGRAM_EVERY - 1, 2 * PROGRAM_EVERY - 1, 2 * PROGRAM_EVERY]
    assert [case for case in drawn if case.startswith("g")] == graphs


def test_a_focused_campaign_of_programs_catches_a_mutant_with_a_standalone_reproducer(tmp_path):
    path = tmp_path / "fuzz.json"
    assert main(["fuzz", "--graphs", "3", "--seed", "1", "--focus", "program.hook", "--workers", "1",
                 "--json", str(path)]) == 0
    report = json.loads(path.read_text())
    assert report["programs"] == {"count": 3, "features": {**report["programs"]["features"], "hook": 3}}
    with mutants.active("hook_return_ignored"):
        assert main(["fuzz", "--graphs", "3", "--seed", "1", "--focus", "program.hook", "--workers", "1", "--no-shrink",
                     "--json", str(path)]) == 1
    failure = json.loads(path.read_text())["failures"][0]
    assert "program_grad" in failure["oracles"]
    script = tmp_path / "reproducer.py"
    imports = "from gradverify.fuzz.programs import reproduce"
    script.write_text(failure["reproducer"].replace(
        imports, f"{imports}\nfrom gradverify.fuzz import mutants\nmutants.apply('hook_return_ignored')"))
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
    run = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 1 and "[program_grad]" in run.stdout, run.stdout + run.stderr


def test_a_focus_that_is_no_part_of_a_program_is_refused(capsys):
    assert main(["fuzz", "--focus", "program.nope"]) == 2
    assert "program.hook" in capsys.readouterr().err
    with pytest.raises(ValueError, match="focus"):
        draw_cases(programs(focus="nope"), 0, 1)
