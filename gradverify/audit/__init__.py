"""Audit a framework's own gradients: ``python -m gradverify audit torch|jax``.

Every differentiable op of PyTorch's OpInfo registry (for JAX: the
``jax.numpy`` / ``jax.scipy.special`` / ``jax.lax`` / ``jax.nn`` functions
that match an OpInfo op, on its samples), sample by sample, in float64 and
float32, at order 1 and 2, is judged by :func:`gradverify.check_grad`; a
disagreement becomes a finding only when a second oracle confirms it
(:mod:`gradverify.audit.truth`).  The unit of work, :func:`audit_unit`, is a
pure function of a :class:`Unit` so a run can be spread over processes.
"""
from .findings import KNOWN_DEFECTS, collect, load_known
from .run import Shard, execute, plan
from .unit import Unit, UnitResult, audit_unit

__all__ = ["Unit", "UnitResult", "audit_unit", "plan", "execute", "Shard", "collect", "load_known",
           "KNOWN_DEFECTS"]
