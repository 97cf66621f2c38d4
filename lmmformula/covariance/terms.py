"""The covariance parameterisation of a random term, chosen from its design block."""

from __future__ import annotations

from ..design import RandomBlock
from ..design.random import left_variable
from .blocks import BlockCovariance
from .correlation import Correlation
from .structured import FactorAnalytic, StructuredCovariance

__all__ = ["term_covariance"]


def _level_labels(columns: tuple[str, ...], label: str) -> tuple[str, ...]:
    """Column names without the variable's prefix (``envE1`` -> ``E1``) when every column has it."""
    if label and all(c.startswith(label) and len(c) > len(label) for c in columns):
        return tuple(c[len(label):] for c in columns)
    return columns


def term_covariance(block: RandomBlock) -> BlockCovariance | StructuredCovariance | FactorAnalytic:
    """Unstructured/diagonal (``|``, ``||``, ``us``, ``diag``), factor analytic, or a correlation structure."""
    call = block.structure
    if call is None:
        return BlockCovariance(block.columns, block.correlated)
    m = block.n_columns
    if call.name == "fa":
        label = left_variable(call.args[0].split("|")[0])
        return FactorAnalytic(block.columns, int(call.args[1]), _level_labels(block.columns, label))
    kind = "toep" if call.name in ("toep", "ma") else call.name
    bands = int(call.args[1]) if len(call.args) > 1 else m - 1
    expr = call.args[0].split("|")[0]
    corr = Correlation(kind, m, bands if kind == "toep" else 0, block.column_positions)
    return StructuredCovariance(block.columns, corr, left_variable(expr))
