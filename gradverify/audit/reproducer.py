"""Standalone reproducer scripts: one per finding, needing only the framework (no gradverify).

The script rebuilds the sample (its floating inputs as exact literals), computes
the entry the confirming oracle found wrong (a Jacobian entry from reverse or
forward mode, a second derivative, or a value) and compares it with the truth
recorded by that oracle; where the only second oracle was the framework's own
checker, it runs that checker (in float64, as the audit did).  Exit status 1 while the defect exists, 0
once it is fixed.
"""
from __future__ import annotations

import math

from .sources import forward_over_reverse

HEADER = '''"""{framework} {op}: {mode} mode is wrong in {dtype} ({oracles} agree).

Found by `python -m gradverify audit {framework}` on sample {sample} ({description}).
Exit status 1 while the defect exists, 0 once it is fixed.
"""
import sys

'''


def literal(value) -> str:
    """Python source that rebuilds ``value`` exactly; ValueError when there is none."""
    import torch

    if isinstance(value, torch.Tensor):
        if value.layout != torch.strided or value.is_complex():
            raise ValueError("not a dense real tensor")
        data = value.detach().cpu()
        data = data.double() if data.is_floating_point() else data
        return f"torch.tensor({literal(data.tolist())}, dtype={value.dtype})"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else f"float({str(value)!r})"
    if isinstance(value, (bool, int, str, type(None), torch.dtype)):
        return repr(value)
    if isinstance(value, torch.Size):
        return f"torch.Size({literal(list(value))})"
    if isinstance(value, (list, tuple)):
        inner = ", ".join(literal(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner}{',' if len(value) == 1 else ''})"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{literal(k)}: {literal(v)}" for k, v in value.items()) + "}"
    raise ValueError(f"no literal for {type(value).__name__}")


TORCH_CHECK = {
    "reverse": '''xs = [x.clone().requires_grad_() for x in XS]
y = outputs(*xs)[OUT].reshape(-1)[OUT_ELEMENT]
(g,) = torch.autograd.grad(y, [xs[IN]], allow_unused=True)
value = 0.0 if g is None else g.reshape(-1)[IN_ELEMENT].item()
''',
    "forward": '''import torch.autograd.forward_ad as fwAD

with fwAD.dual_level():
    tangent = torch.zeros(XS[IN].numel(), dtype=XS[IN].dtype)
    tangent[IN_ELEMENT] = 1
    duals = [fwAD.make_dual(x, tangent.reshape(x.shape)) if j == IN else x for j, x in enumerate(XS)]
    t = fwAD.unpack_dual(outputs(*duals)[OUT]).tangent
    value = 0.0 if t is None else t.reshape(-1)[OUT_ELEMENT].item()
''',
    "second order": '''x = XS[0].clone().requires_grad_()
(g,) = torch.autograd.grad(outputs(x, *XS[1:])[0].sum(), x, create_graph=True)
(h,) = torch.autograd.grad(g.sum(), x)
value = h.reshape(-1)[IN_ELEMENT].item()
''',
    "value": '''value = outputs(*XS)[OUT].reshape(-1)[OUT_ELEMENT].item()
''',
}

JAX_CHECK = {
    "reverse": '''y, pullback = jax.vjp(lambda *xs: outputs(*xs)[OUT], *XS)
cotangent = jnp.zeros(y.size, y.dtype).at[OUT_ELEMENT].set(1).reshape(y.shape)
value = float(pullback(cotangent)[IN].reshape(-1)[IN_ELEMENT])
''',
    "forward": '''tangents = [jnp.zeros_like(x).reshape(-1).at[IN_ELEMENT].set(1).reshape(x.shape) if j == IN
            else jnp.zeros_like(x) for j, x in enumerate(XS)]
_, t = jax.jvp(lambda *xs: outputs(*xs)[OUT], tuple(XS), tuple(tangents))
value = float(t.reshape(-1)[OUT_ELEMENT])
''',
    "second order": '''second = jax.grad(lambda x: jax.grad(lambda v: outputs(v, *XS[1:])[0].sum())(x).sum())
value = float(second(XS[0]).reshape(-1)[IN_ELEMENT])
''',
    "value": '''value = float(outputs(*XS)[OUT].reshape(-1)[OUT_ELEMENT])
''',
}

VERDICT = '''
error = abs(value - TRUTH)
print(f"{value!r} where the truth ({ORACLE}) is {TRUTH!r}: error {error:.3g}, allowance {ALLOWANCE:.3g}")
sys.exit(0 if error <= ALLOWANCE else 1)
'''


def script(finding, call_code) -> str:
    """The reproducer of one finding (a row of :func:`gradverify.audit.findings.collect`).

    ``call_code`` is the source's code defining ``XS`` (the inputs) and ``outputs(*xs)`` (a tuple).
    """
    text = HEADER.format(framework=finding["framework"], op=finding["op"], mode=finding["mode"],
                         dtype=finding["dtype"], oracles=", ".join(finding["oracles_agreeing"]),
                         sample=finding["sample"], description=finding["sample_description"])
    text += call_code + "\n"
    evidence = finding["evidence"]
    if evidence is None:
        return text + _native_replay(finding)
    text += (f"OUT, OUT_ELEMENT, IN, IN_ELEMENT = {evidence['output']}, {evidence['out_element']}, "
             f"{evidence['input']}, {evidence['in_element']}\n"
             f"TRUTH, ALLOWANCE, ORACLE = {evidence['truth']!r}, {evidence['allowance']!r}, {evidence['oracle']!r}\n\n")
    checks = TORCH_CHECK if finding["framework"] == "torch" else JAX_CHECK
    return text + checks[evidence["mode"]] + VERDICT


def _native_replay(finding) -> str:
    forward = forward_over_reverse(finding["check"])
    if finding["framework"] == "jax":
        order, modes = (2, '["fwd", "rev"]' if forward else '["rev"]') if finding["mode"] == "second order" else (
            1, '["fwd"]' if finding["mode"] == "forward" else '["rev"]')
        return ("from jax.test_util import check_grads\n\ntry:\n"
                f"    check_grads(lambda *xs: outputs(*xs), tuple(jnp.asarray(x, jnp.float64) for x in XS), "
                f"order={order}, modes={modes})\n"
                "except AssertionError as failure:\n    print(failure)\n    sys.exit(1)\nsys.exit(0)\n")
    options = "raise_exception=False, check_undefined_grad=False, check_batched_grad=False"
    call = {"second order": f"torch.autograd.gradgradcheck(outputs, xs, check_fwd_over_rev={forward}, "
                            f"check_rev_over_rev={not forward}, {options})",
            "forward": f"torch.autograd.gradcheck(outputs, xs, check_forward_ad=True, check_backward_ad=False, "
                       f"{options})"}.get(finding["mode"], f"torch.autograd.gradcheck(outputs, xs, {options})")
    return (f"xs = [x.detach().double().requires_grad_() for x in XS]\nok = {call}\n"
            "print('torch agrees the derivative is right' if ok else 'torch\\'s own check fails too')\n"
            "sys.exit(0 if ok else 1)\n")
