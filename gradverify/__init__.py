"""gradverify: are these gradients right?

``gradverify.check_grad`` / ``gradverify.assert_grad`` check gradients of
engine, PyTorch, JAX or numpy functions against error-bounded numerical
oracles; ``gradverify.engine`` is the in-house AD engine; ``gradverify.ops``
is the op table that drives both.
"""
__version__ = "0.1.0"

_LAZY = {
    "check_grad": "gradverify.check",
    "assert_grad": "gradverify.check",
    "GradientMismatch": "gradverify.check",
    "CheckResult": "gradverify.check",
}


def __getattr__(name):
    # Lazy so that `import gradverify` (e.g. by the pytest plugin) stays cheap.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'gradverify' has no attribute {name!r}")
