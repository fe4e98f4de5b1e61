"""The options shared by ``gradverify regress`` and the pytest plugin, defined once.

The command line spells them ``--ulps``; the pytest plugin ``--gradverify-ulps``
on the command line and ``gradverify_ulps`` in pytest.ini or pyproject.toml.
This module imports nothing heavy: the pytest plugin reads it in every run.
"""
from __future__ import annotations

from dataclasses import dataclass

DEFAULT_ULPS = 4.0
DEFAULT_ATOL = 0.0


@dataclass(frozen=True)
class Option:
    """One option: its name, the type of its value, its default and its help text."""

    name: str
    type: type
    default: object
    help: str


TOLERANCE_OPTIONS = (
    Option("ulps", float, DEFAULT_ULPS,
           "an entry of a value or gradient holds when it moved by at most this many units in the last place of "
           "its dtype"),
    Option("atol", float, DEFAULT_ATOL, "an entry also holds when it moved by at most this much in absolute value"),
)
