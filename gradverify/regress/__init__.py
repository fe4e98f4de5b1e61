"""CI gradient-regression gates: record the values and gradients of cases, compare later runs with them.

``python -m gradverify regress record`` writes a baseline (format in
:mod:`gradverify.regress.baseline`); ``python -m gradverify regress compare``
measures the cases again and fails on any drift beyond the tolerance
(:mod:`gradverify.regress.drift`).  The pytest plugin's ``grad_regression``
fixture uses the same baselines and comparison.
"""
