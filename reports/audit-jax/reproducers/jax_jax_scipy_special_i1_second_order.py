"""jax jax.scipy.special.i1: second order mode is wrong in float64 (check_grad, mpmath agree).

Found by `python -m gradverify audit jax` on sample 2 (shapes [(5,)]).
Exit status 1 while the defect exists, 0 once it is fixed.
"""
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import i1

jax.config.update('jax_enable_x64', True)
XS = [jnp.asarray(np.array([0.0, -7.582430495695129, -0.6046891126565539, -1.5411692216498662, -1.9719097652168658]), dtype=jnp.float64)]


def outputs(*xs):
    result = i1(xs[0])
    return tuple(result) if isinstance(result, (tuple, list)) else (result,)

OUT, OUT_ELEMENT, IN, IN_ELEMENT = 0, 0, 0, 0
TRUTH, ALLOWANCE, ORACLE = 0.0, 3.5601181736115222e-307, 'mpmath'

second = jax.grad(lambda x: jax.grad(lambda v: outputs(v, *XS[1:])[0].sum())(x).sum())
value = float(second(XS[0]).reshape(-1)[IN_ELEMENT])

error = abs(value - TRUTH)
print(f"{value!r} where the truth ({ORACLE}) is {TRUTH!r}: error {error:.3g}, allowance {ALLOWANCE:.3g}")
sys.exit(0 if error <= ALLOWANCE else 1)
