"""Hypothesis profiles: "ci" (bounded, the default) and "nightly" (many more examples).

Select with ``pytest --hypothesis-profile=nightly``.
"""
import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "nightly",
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("GRADVERIFY_HYPOTHESIS_PROFILE", "ci"))
