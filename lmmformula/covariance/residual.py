"""Residual (R-side) covariance: Kronecker products of AR1, compound-symmetry and identity dimensions, as sparse
precisions.

The residual term ``d1:d2:...`` (e.g. ``ar1(row):ar1(col)`` or ``Subject:ar1(time)``) defines a grid, the
product of its dimensions; each observation sits in one cell.  On the full grid

    R~ = R_1 (x) R_2 (x) ...,     R~^-1 = Q_1 (x) Q_2 (x) ...

where an identity dimension has ``Q = I`` and an AR1 dimension with correlation rho has the tridiagonal

    Q = (1 / (1 - rho^2)) tridiag(-rho; 1, 1 + rho^2, ..., 1 + rho^2, 1; -rho),   log|R| = (m - 1) log(1 - rho^2)

and a compound-symmetry dimension ``R = (1 - rho) I + rho J`` has
``Q = (I - rho / (1 + (m-1) rho) J) / (1 - rho)``, ``log|R| = (m - 1) log(1 - rho) + log(1 + (m - 1) rho)``

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

from ..errors import DataError, ModelSpecificationError
from ..formula.terms import ResidualTerm

__all__ = ["ResidualDimension", "ResidualStructure", "build_residual", "ar1_precision"]


RHO_MAX = 0.999  # residual correlations are kept within [-0.999, 0.999] (ASReml's bound); the limit is flagged


def cs_precision(m: int, rho: float) -> sp.csc_matrix:
    """Inverse of the compound-symmetry correlation ``(1 - rho) I + rho J``:
    ``(I - rho / (1 + (m - 1) rho) J) / (1 - rho)`` (dense within the dimension)."""
    Q = (np.eye(m) - rho / (1.0 + (m - 1) * rho)) / (1.0 - rho)
    return sp.csc_matrix(Q)


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
        return 1 if self.kind in ("ar1", "cs") else 0

    def precision(self, rho: float | None) -> sp.csc_matrix:
        if self.kind == "ar1":
            return ar1_precision(self.size, rho)
        if self.kind == "cs":
            return cs_precision(self.size, rho)
        return sp.identity(self.size, format="csc")

    def log_det_correlation(self, rho: float | None) -> float:
        if self.kind == "ar1":
            return (self.size - 1) * np.log1p(-rho * rho)
        if self.kind == "cs":
            return (self.size - 1) * np.log1p(-rho) + np.log1p((self.size - 1) * rho)
        return 0.0

    def correlation(self, rho: float | None) -> np.ndarray:
        """The dense ``size x size`` correlation matrix (for reporting and tests)."""
        i = np.arange(self.size)
        if self.kind == "ar1":
            return rho ** np.abs(i[:, None] - i[None, :])
        if self.kind == "cs":
            return (1.0 - rho) * np.eye(self.size) + rho
        return np.eye(self.size)

    def rho_bounds(self) -> tuple[float, float]:
        """Admissible correlations: |rho| <= 0.999; compound symmetry also needs rho > -1/(size-1)."""
        if self.kind == "cs":
            return max(-RHO_MAX, -1.0 / (self.size - 1) + 1e-3), RHO_MAX
        return -RHO_MAX, RHO_MAX


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
class ResidualStructure:  # frozen; caches its missing-cell plan in __dict__
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
        return tuple(f"rho({d.variable})" for d in self.dimensions if d.n_params)

    @property
    def n_cells(self) -> int:
        return int(np.prod([d.size for d in self.dimensions]))

    def initial_eta(self) -> np.ndarray:
        return np.full(self.n_params, np.arctanh(0.1))

    def rhos(self, eta: np.ndarray) -> list[float | None]:
        it = iter(np.tanh(np.asarray(eta, dtype=float)))
        return [next(it) if d.n_params else None for d in self.dimensions]

    def rho_bounds(self) -> list[tuple[float, float]]:
        """Bounds of each correlation parameter."""
        return [d.rho_bounds() for d in self.dimensions if d.n_params]

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
        """Precision ``R~_oo^-1`` of the observations (in observation order) and ``log|R~_oo|``.

        The Schur complement is taken one connected group of unobserved cells at a time: a group
        only touches the observed cells next to it, so the update is a small dense block there
        (an isolated missing plot: a rank-one update of its up to 8 neighbours).
        """
        W, logdet_w = self.full_precision(eta)
        obs = self.cells
        W_oo = W[obs][:, obs].tocsc()
        if obs.size == self.n_cells:
            return W_oo, -logdet_w
        plan = self._plan()
        W_om = W[obs][:, plan.missing].tocsc()
        W_mm = W[plan.missing][:, plan.missing].tocsc()
        rows, cols, vals = [], [], []
        logdet_mm = 0.0
        for comp, nb in zip(plan.components, plan.neighbours):
            block = W_mm[comp][:, comp].toarray()
            Bm = W_om[nb][:, comp].toarray()
            chol = np.linalg.cholesky(block)
            logdet_mm += 2.0 * float(np.log(np.diag(chol)).sum())
            half = np.linalg.solve(chol, Bm.T)
            upd = half.T @ half
            rows.append(np.repeat(nb, nb.size))
            cols.append(np.tile(nb, nb.size))
            vals.append(upd.ravel())
        n = obs.size
        if rows:
            U = sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
            S = (W_oo - U).tocsc()
        else:
            S = W_oo
        S = sp.csc_matrix(0.5 * (S + S.T))
        return S, logdet_mm - logdet_w

    def precision_pattern(self) -> sp.csc_matrix:
        """Structural pattern of :meth:`precision` (the same for every value of the correlations)."""
        W, _ = self.full_precision(np.full(self.n_params, 0.37))
        obs = self.cells
        P = W[obs][:, obs].tocsc()
        P.data[:] = 1.0
        if obs.size == self.n_cells:
            return P
        plan = self._plan()
        n = obs.size
        rows = [np.repeat(nb, nb.size) for nb in plan.neighbours]
        cols = [np.tile(nb, nb.size) for nb in plan.neighbours]
        if rows:
            U = sp.csc_matrix((np.ones(sum(r.size for r in rows)), (np.concatenate(rows), np.concatenate(cols))),
                              shape=(n, n))
            P = P + U
        P = sp.csc_matrix(P)
        P.data[:] = 1.0
        return P

    def _plan(self) -> "_MissingPlan":
        plan = self.__dict__.get("_missing_plan")
        if plan is None:
            plan = _missing_plan(self)
            object.__setattr__(self, "_missing_plan", plan)
        return plan


@dataclass(frozen=True)
class _MissingPlan:
    missing: np.ndarray                 # unobserved cells
    components: tuple[np.ndarray, ...]  # positions in `missing` of each connected group
    neighbours: tuple[np.ndarray, ...]  # observation indices adjacent to each group


def _missing_plan(res: ResidualStructure) -> _MissingPlan:
    """Connected groups of unobserved cells in the graph of the full-grid precision, and their neighbours."""
    from scipy.sparse.csgraph import connected_components

    W, _ = res.full_precision(np.full(res.n_params, 0.37))
    obs = res.cells
    missing = np.setdiff1d(np.arange(res.n_cells), obs)
    W_mm = W[missing][:, missing]
    n_comp, label = connected_components(W_mm, directed=False)
    W_mo = W[missing][:, obs].tocsr()
    order = np.argsort(label, kind="stable")
    bounds = np.searchsorted(label[order], np.arange(n_comp + 1))
    comps, nbs = [], []
    for c in range(n_comp):
        comp = order[bounds[c]:bounds[c + 1]]
        nb = np.unique(W_mo[comp].indices)
        if nb.size:
            comps.append(comp)
            nbs.append(nb)
        else:  # a group with no observed neighbour only contributes to log|W_mm|
            comps.append(comp)
            nbs.append(np.zeros(0, dtype=np.int64))
    return _MissingPlan(missing=missing, components=tuple(comps), neighbours=tuple(nbs))


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
        if kind not in ("ar1", "cs", "id"):
            raise ModelSpecificationError(
                f"the residual structure '{part.label}' is not estimable in this version; residual terms "
                "may combine ar1(x), cs(x), id(x) and plain factors with ':' (other structures: issue #3)"
            )
        pos, size, labels = _grid_positions(frame[part.variable], part.variable, kind)
        if kind in ("ar1", "cs") and size < 2:
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
