"""The op table: one declaration per op drives the engine, generators, checker and tests."""
from .spec import Domain, OpDef
from .table import TABLE, flat_indices, sum_to_axes, sum_to_forward

__all__ = ["Domain", "OpDef", "TABLE", "get", "names", "flat_indices", "sum_to_axes", "sum_to_forward"]


def get(name: str) -> OpDef:
    """The op called ``name``; raises KeyError listing the known ops otherwise."""
    try:
        return TABLE[name]
    except KeyError:
        raise KeyError(f"unknown op {name!r}; the table has: {', '.join(sorted(TABLE))}") from None


def names() -> list:
    """Names of all ops in declaration order."""
    return list(TABLE)
