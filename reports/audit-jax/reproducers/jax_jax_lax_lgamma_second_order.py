"""jax jax.lax.lgamma: second order mode is wrong in float64 (check_grad, jax check_grads, mpmath agree).

Found by `python -m gradverify audit jax` on sample 0 (shapes [(20,)]).
Exit status 1 while the defect exists, 0 once it is fixed.
"""
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax.lax import lgamma

jax.config.update('jax_enable_x64', True)
XS = [jnp.asarray(np.array([-4.826984902407649, -7.582430495695129, -0.6046891126565539, -1.5411692216498662, -1.9719097652168658, -4.146041530864057, -5.4215280659972755, -4.784169829877467, -4.150805063878843, 7.380839390984031, 5.576059452216908, -8.315684908389088, 4.177597026003685, 2.047386382824099, -4.076012721760325, -3.063683029231029, -3.342174545322517, -5.439777184204883, 4.480518929058965, 2.685009210157367]), dtype=jnp.float64)]


def outputs(*xs):
    result = lgamma(xs[0])
    return tuple(result) if isinstance(result, (tuple, list)) else (result,)

OUT, OUT_ELEMENT, IN, IN_ELEMENT = 0, 11, 0, 11
TRUTH, ALLOWANCE, ORACLE = 13.975115966984669, 8.440429561984053e-13, 'mpmath'

second = jax.grad(lambda x: jax.grad(lambda v: outputs(v, *XS[1:])[0].sum())(x).sum())
value = float(second(XS[0]).reshape(-1)[IN_ELEMENT])

error = abs(value - TRUTH)
print(f"{value!r} where the truth ({ORACLE}) is {TRUTH!r}: error {error:.3g}, allowance {ALLOWANCE:.3g}")
sys.exit(0 if error <= ALLOWANCE else 1)
