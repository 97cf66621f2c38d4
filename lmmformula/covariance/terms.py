"""The covariance parameterisation of a random term, chosen from its design block."""

from __future__ import annotations

import re

from ..design import RandomBlock
from .blocks import BlockCovariance
from .correlation import Correlation
from .structured import FactorAnalytic, StructuredCovariance

__all__ = ["term_covariance"]


def _label(expr: str) -> str:
    """The variable of a term's left side (``0 + factor(time)`` -> ``time``), else the text itself."""
    text = re.sub(r"^\s*(0|-\s*1)\s*\+\s*|\s*[+-]\s*(0|1)\s*$", "", expr).strip()
    call = re.fullmatch(r"(?:factor|C|as\.factor)\((\w+)\)", text)
    return call.group(1) if call else text


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
        label = _label(call.args[0].split("|")[0])
        return FactorAnalytic(block.columns, int(call.args[1]), _level_labels(block.columns, label))
    kind = "toep" if call.name in ("toep", "ma") else call.name
    bands = int(call.args[1]) if len(call.args) > 1 else m - 1
    expr = call.args[0].split("|")[0]
    return StructuredCovariance(block.columns, Correlation(kind, m, bands if kind == "toep" else 0), _label(expr))
