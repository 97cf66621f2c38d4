"""Build the grid of a residual term or of a structured grouping from the model's rows."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import DataError, ModelSpecificationError
from ..formula.registry import integer_argument
from ..formula.terms import ResidualTerm
from .dimension import VARIANCE_KINDS, ResidualDimension, grid_positions
from .residual import ResidualStructure

__all__ = ["build_residual", "build_grid"]


def build_residual(frame: pd.DataFrame, term: ResidualTerm) -> ResidualStructure:
    """Build the residual structure of a residual term on the model's rows.

    Raises
    ------
    ModelSpecificationError
        For structures that cannot be residual dimensions (``fa``, ``vm``), or bands out of range.
    DataError
        Two observations in the same cell, or irregular AR1 positions.
    """
    return build_grid(frame, term.parts, term.text)


def build_grid(frame: pd.DataFrame, parts, text: str, grouping: bool = False) -> ResidualStructure:
    """The grid of structured dimensions joined by ``:`` (a residual term, or a grouping when ``grouping``).

    A grouping's cells may hold several observations, and its dimensions are correlations only (the
    variances belong to the random term).
    """
    where_text = f"the grouping of '{text}'" if grouping else f"the residual term '{text}'"
    allowed = ("ar1", "cs", "id", "toep", "ma") + (() if grouping else ("us", "diag"))
    dims = []
    for part in parts:
        call = part.structure
        kind = call.name if call is not None else "id"
        if kind not in allowed:
            raise ModelSpecificationError(
                f"'{part.label}' cannot be part of {where_text}; it may combine "
                + ("ar1(x), cs(x), toep(x[, q]), ma(x, q) and plain factors with ':' (variances among the "
                   "columns go around the term, e.g. us(0 + env | g))" if grouping else
                   "ar1(x), cs(x), toep(x[, q]), ma(x, q), us(x), diag(x), id(x) and plain factors with ':'")
            )
        kind = "toep" if kind == "ma" else kind
        pos, size, labels = grid_positions(frame[part.variable], part.variable, kind)
        if kind != "id" and size < 2:
            raise DataError(
                f"'{part.label}' has a single position, so its parameters cannot be estimated; "
                f"drop the {call.name}() or check the column"
            )
        bands = _bands(call, kind, size, part.variable)
        dims.append(ResidualDimension(variable=part.variable, kind=kind, size=size, positions=pos, labels=labels,
                                      bands=bands))
    if sum(d.kind in VARIANCE_KINDS for d in dims) > 1:
        raise ModelSpecificationError(
            f"the residual term '{text}' has more than one dimension with its own variances (us/diag); "
            "their scales are not separately identifiable: keep one and make the others correlations"
        )
    cells = np.zeros(frame.shape[0], dtype=np.int64)
    for d in dims:
        cells = cells * d.size + d.positions
    uniq, counts = np.unique(cells, return_counts=True)
    if (counts > 1).any() and not grouping:
        dup = np.flatnonzero(cells == uniq[counts > 1][0])
        where = ", ".join(f"{d.variable}={_scalar(frame[d.variable].iloc[dup[0]])!r}" for d in dims)
        raise DataError(
            f"observations {list(frame.index[dup[:3]])} share the cell ({where}) of the residual term "
            f"'{text}'; each cell may hold one observation. Add a dimension that separates them "
            "(e.g. Subject:ar1(time)) or average the duplicates"
        )
    n_cells = int(np.prod([d.size for d in dims]))
    if n_cells > 50 * max(frame.shape[0], 1) and n_cells > 1_000_000:
        raise DataError(
            f"{where_text} defines a grid of {n_cells} cells for {frame.shape[0]} "
            "observations; check the position columns"
        )
    return ResidualStructure(text=text, dimensions=tuple(dims), cells=cells)


def _scalar(value):
    """A numpy scalar as the Python value (so messages read ``row=3``, not ``row=np.int64(3)``)."""
    return value.item() if isinstance(value, np.generic) else value


def _bands(call, kind: str, size: int, variable: str) -> int:
    """Number of free bands of a Toeplitz dimension: all by default, else the call's second argument."""
    if kind != "toep":
        return 0
    if call is None or len(call.args) < 2:
        return size - 1
    return integer_argument(call, size - 1, "bands", f"'{variable}' has {size} positions")
