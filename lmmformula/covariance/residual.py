"""Residual (R-side) covariance: Kronecker products of AR1 and identity dimensions, as sparse precisions.

The residual term ``d1:d2:...`` (e.g. ``ar1(row):ar1(col)`` or ``Subject:ar1(time)``) defines a grid, the
product of its dimensions; each observation sits in one cell.  On the full grid

    R~ = R_1 (x) R_2 (x) ...,     R~^-1 = Q_1 (x) Q_2 (x) ...

where an identity dimension has ``Q = I`` and an AR1 dimension with correlation rho has the tridiagonal

    Q = (1 / (1 - rho^2)) tridiag(-rho; 1, 1 + rho^2, ..., 1 + rho^2, 1; -rho),   log|R| = (m - 1) log(1 - rho^2)

so the precision of an AR1 x AR1 field has at most 9 non-zeros per row.  When some cells are not observed
(missing plots, missing responses, unequal follow-up), the covariance of the observed cells is the
sub-matrix ``R~_oo`` of the full-grid covariance, whose precision is the Schur complement

    R~_oo^-1 = W_oo - W_om W_mm^-1 W_mo,      log|R~_oo| = log|W_mm| - log|W|      (W = R~^-1)

which gives exactly the observed-data likelihood.  Correlations are estimated on the scale
``eta = atanh(rho)`` (unbounded); the residual variance scales the whole matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ..errors import DataError, ModelSpecificationError
from ..formula.terms import ResidualTerm

__all__ = ["ResidualDimension", "ResidualStructure", "build_residual", "ar1_precision"]


def ar1_precision(m: int, rho: float) -> sp.csc_matrix:
    """Tridiagonal inverse of the ``m x m`` AR1 correlation matrix ``rho^|i-j|``."""
    if m == 1:
        return sp.csc_matrix(np.ones((1, 1)))
    main = np.full(m, 1.0 + rho * rho)
    main[0] = main[-1] = 1.0
    off = np.full(m - 1, -rho)
    return (sp.diags([off, main, off], [-1, 0, 1], format="csc") / (1.0 - rho * rho)).tocsc()


@dataclass(frozen=True)
class ResidualDimension:
    """One factor of the residual grid.

    Attributes
    ----------
    variable : str
    kind : {"id", "ar1"}
    size : int
        Number of grid positions along this dimension (gaps included for AR1 on a numeric column).
    positions : ndarray of int
        Grid position of each observation.
    labels : tuple of str
        Label of each grid position (the column's value there).
    """

    variable: str
    kind: str
    size: int
    positions: np.ndarray
    labels: tuple[str, ...] = ()

    @property
    def n_params(self) -> int:
        return 1 if self.kind == "ar1" else 0

    def precision(self, rho: float | None) -> sp.csc_matrix:
        if self.kind == "ar1":
            return ar1_precision(self.size, rho)
        return sp.identity(self.size, format="csc")

    def log_det_correlation(self, rho: float | None) -> float:
        return (self.size - 1) * np.log1p(-rho * rho) if self.kind == "ar1" else 0.0


def _fmt(x) -> str:
    return str(int(x)) if isinstance(x, (float, np.floating)) and float(x).is_integer() else str(x)


def _grid_positions(col: pd.Series, variable: str, kind: str) -> tuple[np.ndarray, int, tuple[str, ...]]:
    """Numeric columns: value / smallest positive spacing (gaps kept). Otherwise category order."""
    if kind == "ar1" and pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        vals = col.to_numpy(dtype=float)
        uniq = np.unique(vals)
        if uniq.size == 1:
            return np.zeros(vals.size, dtype=np.int64), 1, (_fmt(uniq[0]),)
        step = np.min(np.diff(uniq))
        pos = (vals - uniq[0]) / step
        if np.max(np.abs(pos - np.round(pos))) > 1e-6:
            raise DataError(
                f"the positions in '{variable}' are not on a regular grid (smallest spacing {step:g}); "
                "ar1 needs equally spaced positions: round them or use a categorical column"
            )
        pos = np.round(pos).astype(np.int64)
        size = int(pos.max()) + 1
        return pos, size, tuple(_fmt(uniq[0] + k * step) for k in range(size))
    if kind == "ar1" and not isinstance(col.dtype, pd.CategoricalDtype):
        raise DataError(
            f"ar1 positions in '{variable}' must be numeric (equally spaced values) or an ordered pandas "
            f"Categorical; got {col.dtype}, whose text order (e.g. t1, t10, t2) is not an order in time or space. "
            "Convert it with pd.to_numeric or pd.Categorical(..., categories=[...], ordered=True)"
        )
    if isinstance(col.dtype, pd.CategoricalDtype):
        codes = col.cat.codes.to_numpy().astype(np.int64)
        return codes, len(col.cat.categories), tuple(_fmt(c) for c in col.cat.categories)
    codes, uniques = pd.factorize(col, sort=True)
    return codes.astype(np.int64), len(uniques), tuple(_fmt(u) for u in uniques)


@dataclass(frozen=True, eq=False)
class ResidualStructure:
    """The residual covariance ``sigma^2 R~(rho)`` of the observations.

    Attributes
    ----------
    text : str
        The term as written.
    dimensions : tuple of ResidualDimension
    cells : ndarray of int
        Grid cell of each observation (row-major over the dimensions).
    """

    text: str
    dimensions: tuple[ResidualDimension, ...]
    cells: np.ndarray

    @property
    def n_params(self) -> int:
        return sum(d.n_params for d in self.dimensions)

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return tuple(f"rho({d.variable})" for d in self.dimensions if d.kind == "ar1")

    @property
    def n_cells(self) -> int:
        return int(np.prod([d.size for d in self.dimensions]))

    def initial_eta(self) -> np.ndarray:
        return np.full(self.n_params, np.arctanh(0.1))

    def rhos(self, eta: np.ndarray) -> list[float | None]:
        it = iter(np.tanh(np.asarray(eta, dtype=float)))
        return [next(it) if d.kind == "ar1" else None for d in self.dimensions]

    def full_precision(self, eta: np.ndarray) -> tuple[sp.csc_matrix, float]:
        """Precision of the full grid and its log-determinant (``-log|R~|``)."""
        rhos = self.rhos(eta)
        W = None
        logdet_r = 0.0
        n_cells = self.n_cells
        for d, rho in zip(self.dimensions, rhos):
            Q = d.precision(rho)
            W = Q if W is None else sp.kron(W, Q, format="csc")
            logdet_r += (n_cells / d.size) * d.log_det_correlation(rho)
        return W.tocsc(), -logdet_r

    def precision(self, eta: np.ndarray) -> tuple[sp.csc_matrix, float]:
        """Precision ``R~_oo^-1`` of the observations (in observation order) and ``log|R~_oo|``."""
        W, logdet_w = self.full_precision(eta)
        obs = self.cells
        if obs.size == self.n_cells:
            Wo = W[obs][:, obs].tocsc()
            return Wo, -logdet_w
        missing = np.setdiff1d(np.arange(self.n_cells), obs)
        W_oo = W[obs][:, obs].tocsc()
        W_om = W[obs][:, missing].tocsc()
        W_mm = W[missing][:, missing].tocsc()
        lu = spla.splu(W_mm, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0,
                       options={"SymmetricMode": True})
        X = lu.solve(W_om.T.toarray()) if W_om.nnz and missing.size * obs.size <= 4_000_000 else None
        if X is None:
            X = sp.csc_matrix(spla.spsolve(W_mm, W_om.T.tocsc()))
            S = W_oo - (W_om @ X)
        else:
            S = W_oo - sp.csc_matrix(W_om @ X)
        logdet_mm = float(np.sum(np.log(np.abs(lu.U.diagonal()))))
        S = sp.csc_matrix(0.5 * (S + S.T))
        S.eliminate_zeros()
        return S, logdet_mm - logdet_w


def build_residual(frame: pd.DataFrame, term: ResidualTerm) -> ResidualStructure:
    """Build the residual structure of a residual term on the model's rows.

    Raises
    ------
    ModelSpecificationError
        For structures other than ``ar1`` and ``id`` (not estimable yet).
    DataError
        Two observations in the same cell, or irregular AR1 positions.
    """
    dims = []
    for part in term.parts:
        kind = part.structure.name if part.structure is not None else "id"
        if kind not in ("ar1", "id"):
            raise ModelSpecificationError(
                f"the residual structure '{part.label}' is not estimable in this version; residual terms "
                "may combine ar1(x), id(x) and plain factors with ':' (other structures: issue #3)"
            )
        pos, size, labels = _grid_positions(frame[part.variable], part.variable, kind)
        if kind == "ar1" and size < 2:
            raise DataError(
                f"'{part.label}' has a single position, so its correlation cannot be estimated; "
                "drop the ar1() or check the column"
            )
        dims.append(ResidualDimension(variable=part.variable, kind=kind, size=size, positions=pos, labels=labels))
    cells = np.zeros(frame.shape[0], dtype=np.int64)
    for d in dims:
        cells = cells * d.size + d.positions
    uniq, counts = np.unique(cells, return_counts=True)
    if (counts > 1).any():
        dup = np.flatnonzero(cells == uniq[counts > 1][0])
        where = ", ".join(f"{d.variable}={frame[d.variable].iloc[dup[0]]!r}" for d in dims)
        raise DataError(
            f"observations {list(frame.index[dup[:3]])} share the cell ({where}) of the residual term "
            f"'{term.text}'; each cell may hold one observation. Add a dimension that separates them "
            "(e.g. Subject:ar1(time)) or average the duplicates"
        )
    n_cells = int(np.prod([d.size for d in dims]))
    if n_cells > 50 * max(frame.shape[0], 1) and n_cells > 1_000_000:
        raise DataError(
            f"the residual term '{term.text}' defines a grid of {n_cells} cells for {frame.shape[0]} "
            "observations; check the position columns"
        )
    return ResidualStructure(text=term.text, dimensions=tuple(dims), cells=cells)
