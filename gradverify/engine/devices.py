"""Devices: the engine computes with numpy on the CPU, so 'cpu' is the one device it can put tensors on.

``ge.device`` names any device torch names, as programs build
``device("cuda" if ge.cuda.is_available() else "cpu")``; putting a tensor or a module on
another device than the CPU raises a RuntimeError naming it (torch raises one when the device is absent).
"""
from __future__ import annotations

import types

__all__ = ["device", "cuda", "backends", "set_default_device", "get_default_device"]

_TYPES = ("cpu", "cuda", "mps", "xpu", "meta", "hip", "xla", "ipu", "hpu", "mtia", "privateuseone")


class device:
    """A device name, as ``torch.device``: ``device('cpu')``, ``device('cuda:1')``, ``device('cuda', 1)``."""

    def __init__(self, type="cpu", index=None):
        text = str(type)  # a torch.device or a device prints as its name
        kind, colon, number = text.partition(":")
        if kind not in _TYPES or (colon and not number.isdigit()):
            raise RuntimeError(f"device: expected a device name such as 'cpu', 'cuda' or 'cuda:0', got {text!r}")
        if colon and index is not None:
            raise RuntimeError(f"device: the index is given twice, in {text!r} and as index={index!r}")
        self.type, self.index = kind, int(number) if colon else index

    def __str__(self):
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __repr__(self):
        index = "" if self.index is None else f", index={self.index}"
        return f"device(type='{self.type}'{index})"

    def __eq__(self, other):
        if isinstance(other, str):
            try:
                other = device(other)
            except RuntimeError:
                return False
        return isinstance(other, device) and (self.type, self.index) == (other.type, other.index)

    def __hash__(self):
        return hash((self.type, self.index))


CPU = device("cpu")


def check_device(value, argname="device"):
    """The CPU, when ``value`` names it (None, 'cpu', 'cpu:0', a device); else a RuntimeError naming the device."""
    if value is None:
        return CPU
    if not isinstance(value, (str, device)) and not hasattr(value, "type"):
        raise TypeError(f"{argname}: expected a device or a device name such as 'cpu', got {type(value).__name__}")
    named = device(value)
    if named.type != "cpu":
        raise RuntimeError(
            f"{argname}: the engine computes with numpy on the CPU only; it has no device {str(named)!r} "
            "(ge.cuda.is_available() is False); use 'cpu'"
        )
    return CPU


def set_default_device(value):
    """As torch.set_default_device: the engine's one device, the CPU, is the only one accepted."""
    check_device(value)


def get_default_device():
    return CPU


def _nothing(*args, **kwargs):
    """Seeding a device the engine does not have does nothing (torch seeds CUDA lazily, also without one)."""


cuda = types.SimpleNamespace(
    is_available=lambda: False,
    device_count=lambda: 0,
    manual_seed=_nothing,
    manual_seed_all=_nothing,
)
cuda.__doc__ = "torch.cuda's queries: the engine has no CUDA device."

backends = types.SimpleNamespace(
    mps=types.SimpleNamespace(is_available=lambda: False, is_built=lambda: False),
    cuda=types.SimpleNamespace(is_built=lambda: False),
    cudnn=types.SimpleNamespace(is_available=lambda: False, enabled=True, deterministic=False, benchmark=False),
)
backends.__doc__ = "torch.backends' availability queries: no MPS, CUDA or cuDNN in the engine."
