"""Graph recording switched off and on: ``ge.no_grad()``, ``enable_grad``, ``set_grad_enabled``, ``inference_mode``."""
from __future__ import annotations

import contextlib

import numpy as np

from .core import MODE

__all__ = ["is_grad_enabled", "no_grad", "enable_grad", "set_grad_enabled", "inference_mode"]


def is_grad_enabled():
    return MODE.grad_enabled


class _GradMode(contextlib.ContextDecorator):
    def __init__(self, enabled):
        self.enabled = enabled

    def __enter__(self):
        self.saved = MODE.grad_enabled
        MODE.grad_enabled = self.enabled

    def __exit__(self, *exc):
        MODE.grad_enabled = self.saved
        return False


def no_grad():
    """Context manager and decorator: ops inside record no graph."""
    return _GradMode(False)


def enable_grad():
    """Context manager and decorator: re-enable graph recording."""
    return _GradMode(True)


class set_grad_enabled(_GradMode):
    """Switch graph recording on or off: at once when called, for a block as a context manager, or for a function.

    As torch: the call itself sets the mode; leaving the block (or the
    decorated function) restores the mode from before.
    """

    def __init__(self, mode):
        if not isinstance(mode, (bool, np.bool_)):
            raise TypeError(f"mode: expected True or False, got {mode!r}")
        super().__init__(bool(mode))
        self.saved = MODE.grad_enabled
        MODE.grad_enabled = self.enabled

    def __enter__(self):
        MODE.grad_enabled = self.enabled

    def __call__(self, function):
        # Decorating is no switch: the mode goes back, and each call of the function switches anew.
        MODE.grad_enabled = self.saved
        return super().__call__(function)

    def _recreate_cm(self):
        return set_grad_enabled(self.enabled)


def inference_mode(mode=True):
    """As :func:`no_grad` (with ``mode=False``: no change); the engine has no separate inference tensors."""
    return _GradMode(False if mode else MODE.grad_enabled)
