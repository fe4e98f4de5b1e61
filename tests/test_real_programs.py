"""Public PyTorch programs (tests/real_programs/, source recorded at the top of each) run unmodified on the engine.

Each program runs twice: on torch, and with ``import torch`` (and its submodules) meaning the
engine, through ``sys.modules``.  The engine draws torch's random numbers (``TorchSource``), and
Python's ``random`` is seeded alike, so both runs see the same data.  The runs must agree on:

- the loss trajectory: the value of every one-element tensor ``.backward()`` is called on;
- what the program prints (the text exactly, up to whitespace, the spelling of shapes and dtypes and the names
  of grad_fn; the numbers within the tolerance below);
- the final state: every tensor, module (state_dict) and list of tensors the program leaves in its globals.

Tolerance: float32 within 1e-5 of the largest magnitude logged (in the loss trajectory, in the printed
numbers, in the final state), float64 within 1e-10 (a printed number also within one unit of its last
printed digit).
"""
from __future__ import annotations

import contextlib
import io
import pathlib
import random
import re
import runpy
import sys
import warnings

import numpy as np
import pytest
import torch

import gradverify.engine as ge
from gradverify.engine.torch_random import TorchSource

PROGRAMS = sorted((pathlib.Path(__file__).parent / "real_programs").glob("*.py"))
# `import torch.x.y` binds what sys.modules holds under these names: the engine's counterparts.
ENGINE_AS_TORCH = {
    "torch": ge,
    "torch.nn": ge.nn,
    "torch.nn.functional": ge.nn.functional,
    "torch.nn.init": ge.nn.init,
    "torch.optim": ge.optim,
    "torch.autograd": ge.autograd,
    "torch.func": ge.func,
    "torch.utils": ge.utils,
    "torch.utils.data": ge.utils.data,
}
RELATIVE = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-10}
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


@contextlib.contextmanager
def _modules(replacements):
    saved = {name: sys.modules.get(name) for name in replacements}
    sys.modules.update(replacements)
    try:
        yield
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def _run(path, lib, monkeypatch, tmp_path):
    """(losses with their dtype, printed output, final globals) of one run of the program at ``path`` on ``lib``."""
    losses, running = [], []
    backward = lib.Tensor.backward

    def recording_backward(self, *args, **kwargs):
        # Not again from inside: a torch function mode (set_default_device) calls Tensor.backward anew.
        if self.numel() == 1 and not running:
            losses.append((self.item(), np.dtype(str(self.dtype).removeprefix("torch."))))
        running.append(True)
        try:
            return backward(self, *args, **kwargs)
        finally:
            running.pop()

    monkeypatch.setattr(lib.Tensor, "backward", recording_backward)
    workdir = tmp_path / lib.__name__
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    random.seed(0)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if lib is torch:
            torch.manual_seed(0)
            # One thread: on a loaded machine (pytest-xdist workers, 2 cores) torch's pool of 2 spins on each op
            # and a 300-step program takes 15 s instead of 0.4 s.
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                namespace = runpy.run_path(str(path), run_name="__main__")
            finally:
                torch.set_num_threads(threads)
                torch.set_default_device(None)  # a program's default device stays with the program
        else:
            with ge.random.use_source(TorchSource), _modules(ENGINE_AS_TORCH):
                ge.manual_seed(0)
                namespace = runpy.run_path(str(path), run_name="__main__")
    monkeypatch.undo()
    return losses, printed.getvalue(), namespace


def _array(value):
    return value.detach().numpy() if isinstance(value, torch.Tensor) else value.array


def _state(namespace):
    """name -> array of every tensor the program's globals hold (directly, in a module, or in a list)."""
    state = {}
    for name, value in namespace.items():
        if isinstance(value, (torch.Tensor, ge.Tensor)):
            state[name] = _array(value)
        elif isinstance(value, (torch.nn.Module, ge.nn.Module)):
            state.update({f"{name}.{key}": _array(v) for key, v in value.state_dict().items()})
        elif isinstance(value, (list, tuple)) and value and all(isinstance(v, (torch.Tensor, ge.Tensor)) for v in value):
            state.update({f"{name}[{i}]": _array(v) for i, v in enumerate(value)})
    return state


def _deviation(got, want, dtype, scale=None):
    """Largest |got - want| over the tolerance of ``dtype`` relative to ``scale`` (by default the largest |want|);
    <= 1 passes."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    scale = np.max(np.abs(want), initial=0.0) if scale is None else scale
    if scale == 0.0 or not np.isfinite(scale):
        return 0.0 if np.array_equal(got, want, equal_nan=True) else np.inf
    return float(np.max(np.abs(got - want), initial=0.0) / (RELATIVE[dtype] * scale))


def _printed_numbers(text):
    """The numbers in ``text`` (value, as printed), and the text around them: numbers replaced by '#', without
    whitespace (tensor printouts align columns differently), torch's spelling of shapes and dtypes
    ('torch.Size([2, 3])', 'torch.int64') as the engine's ('(2, 3)', 'int64'), grad_fn names left out."""
    text = re.sub(r"grad_fn=<[^>]*>", "grad_fn=<>", text)  # before the numbers: 'EmbeddingBackward0' ends in one
    numbers = [(float(m.group()), m.group()) for m in NUMBER.finditer(text)]
    text = re.sub(r"\s+", "", NUMBER.sub("#", text))
    text = re.sub(r"torch\.Size\(\[(.*?)\]\)", r"(\1)", text).replace(",)", ")")
    return numbers, re.sub(r"torch\.(?=(float|int|bool|uint)\w*)", "", text)


@pytest.mark.parametrize("path", PROGRAMS, ids=[p.stem for p in PROGRAMS])
def test_program_runs_on_the_engine_as_on_torch(path, monkeypatch, tmp_path):
    torch_losses, torch_printed, torch_globals = _run(path, torch, monkeypatch, tmp_path)
    engine_losses, engine_printed, engine_globals = _run(path, ge, monkeypatch, tmp_path)

    assert len(engine_losses) == len(torch_losses)
    if torch_losses:
        dtype = torch_losses[0][1]
        assert [d for _, d in engine_losses] == [d for _, d in torch_losses]
        assert _deviation([v for v, _ in engine_losses], [v for v, _ in torch_losses], dtype) <= 1.0

    torch_numbers, torch_text = _printed_numbers(torch_printed)
    engine_numbers, engine_text = _printed_numbers(engine_printed)
    assert engine_text == torch_text
    scale = max((abs(v) for v, _ in torch_numbers), default=0.0)
    rel = max(RELATIVE[d] for _, d in torch_losses) if torch_losses else RELATIVE[np.dtype(np.float32)]
    for (got, _), (want, text) in zip(engine_numbers, torch_numbers):
        digits = len(text.split(".")[1].split("e")[0].split("E")[0]) if "." in text else 0
        assert abs(got - want) <= rel * scale + 10.0**-digits, f"printed {got} where torch printed {text}"

    torch_state, engine_state = _state(torch_globals), _state(engine_globals)
    assert torch_state and engine_state.keys() == torch_state.keys()
    # The largest value of the program's final state is the scale of every float tensor in it.
    scale = max(float(np.max(np.abs(a), initial=0.0)) for a in torch_state.values() if a.dtype.kind == "f")
    for name, want in torch_state.items():
        got = engine_state[name]
        assert (got.shape, got.dtype) == (want.shape, want.dtype), name
        if want.dtype.kind == "f":
            assert _deviation(got, want, want.dtype, scale) <= 1.0, name
        else:
            np.testing.assert_array_equal(got, want, err_msg=name)
