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
import scipy.sparse as sp

from ..sparsepattern import pattern_keys, values_on
from .dimension import VARIANCE_KINDS, ResidualDimension
from .missing import MissingPlan, SchurPlan, missing_plan

__all__ = ["ResidualStructure"]


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
    def n_cells(self) -> int:
        if "_n_cells" not in self.__dict__:
            object.__setattr__(self, "_n_cells", int(np.prod([d.size for d in self.dimensions])))
        return self.__dict__["_n_cells"]

    @property
    def is_field(self) -> bool:
        """Two dimensions whose positions are numbers (plot rows and columns), as a variogram needs; a
        ``Subject:ar1(week)`` grid is not one (subjects are not a spatial coordinate)."""
        if len(self.dimensions) != 2:
            return False
        try:
            for d in self.dimensions:
                [float(label) for label in d.labels]
        except (TypeError, ValueError):
            return False
        return True

    def split(self, eta: np.ndarray) -> list[np.ndarray]:
        """``eta`` cut into the parameters of each dimension."""
        eta = np.asarray(eta, dtype=float)
        if "_split_bounds" not in self.__dict__:
            object.__setattr__(self, "_split_bounds", np.cumsum([0] + [d.n_params for d in self.dimensions]).tolist())
        bounds = self.__dict__["_split_bounds"]
        return [eta[bounds[i]:bounds[i + 1]] for i in range(len(self.dimensions))]

    def initial_eta(self) -> np.ndarray:
        return np.concatenate([np.zeros(0)] + [d.initial_eta() for d in self.dimensions])

    def cell_labels(self) -> tuple[str, ...]:
        """``"row=1:col=2"``-style label of every cell of the grid (row-major)."""
        labels = [""]
        for d in self.dimensions:
            labels = [f"{a}:{d.variable}={b}".lstrip(":") for a in labels for b in d.labels]
        return tuple(labels)

    def generic_eta(self) -> np.ndarray:
        return np.concatenate([np.zeros(0)] + [d.generic_eta() for d in self.dimensions])

    def eta_bounds(self) -> np.ndarray:
        """``(n_params, 2)`` bounds of ``eta``."""
        rows = [b for d in self.dimensions for b in d.eta_bounds()]
        return np.array(rows, dtype=float).reshape(-1, 2)

    @property
    def has_variances(self) -> bool:
        """True when a dimension carries its own variances (``us``, ``diag``)."""
        return any(d.kind in VARIANCE_KINDS for d in self.dimensions)

    def reported(self, eta: np.ndarray, sigma2: float) -> tuple[tuple[str, ...], np.ndarray]:
        """Names and values of the reported residual parameters after ``variance`` (``sigma^2``):
        correlations, and ``sigma^2 R_d`` entries of dimensions with their own variances."""
        names, values = [], []
        for d, e in zip(self.dimensions, self.split(eta)):
            n, v, scaled = d.reported(e)
            names.extend(n)
            values.extend(np.where(scaled, sigma2 * v, v))
        return tuple(names), np.array(values, dtype=float)

    def full_precision(self, eta: np.ndarray) -> tuple[sp.csc_matrix, float]:
        """Precision of the full grid and its log-determinant (``-log|R~|``)."""
        W = None
        logdet_r = 0.0
        n_cells = self.n_cells
        for d, e in zip(self.dimensions, self.split(eta)):
            Q = d.precision(e)
            W = Q if W is None else sp.kron(W, Q, format="csc")
            logdet_r += (n_cells / d.size) * d.log_det(e)
        return W.tocsc(), -logdet_r

    def covariance_values(self, eta: np.ndarray) -> np.ndarray:
        """Entries of ``R~_oo`` (observation order) at the stored positions of :meth:`precision_pattern`:
        ``R~[i, j] = prod_d R_d[pos_d(i), pos_d(j)]``."""
        Rs = self._dense_covariances(eta)
        plan = self._gather_plan()
        if plan is not None:  # positions of the pattern's entries are stored (identities: equal positions)
            vals = np.ones(plan[1].size)
            for R, flat in zip(Rs, plan[3]):
                if R is not None:
                    vals *= R.ravel().take(flat)
            return vals
        P = self.shared_pattern()
        rows, cols = P.indices, np.repeat(np.arange(P.shape[1]), np.diff(P.indptr))
        vals = self._entries(Rs, [d.positions[rows] for d in self.dimensions],
                             [d.positions[cols] for d in self.dimensions])
        return np.broadcast_to(vals, rows.shape).astype(float)

    def log_det_derivative(self, eta: np.ndarray, j: int) -> float:
        """``d log|R~| / d eta_j`` of the full grid: ``(n_cells / size_d) d log|R_d| / d eta_j``."""
        offsets = np.cumsum([0] + [d.n_params for d in self.dimensions])
        dim = int(np.searchsorted(offsets, j, side="right") - 1)
        d = self.dimensions[dim]
        return (self.n_cells / d.size) * d.log_det_derivative(self.split(eta)[dim], j - offsets[dim])

    def log_det(self, eta: np.ndarray) -> float:
        """``log|R~|`` of the full grid."""
        n_cells = self.n_cells
        return float(sum((n_cells / d.size) * d.log_det(e) for d, e in zip(self.dimensions, self.split(eta))))

    def _parameters(self) -> list[tuple[int, int]]:
        """(dimension, index within the dimension) of every parameter (cached)."""
        if "_parameter_list" not in self.__dict__:
            object.__setattr__(self, "_parameter_list",
                               [(i, k) for i, d in enumerate(self.dimensions) for k in range(d.n_params)])
        return self.__dict__["_parameter_list"]

    def precision_derivatives(self, eta: np.ndarray) -> list[np.ndarray] | None:
        """``dR~_oo^-1 / d eta_j`` for every parameter, in observation order, as values on
        :meth:`precision_pattern` (a Kronecker product with one differentiated factor, or the derivative of the
        Schur complement when cells are unobserved); None for very long dimensions with unobserved cells (the
        caller differentiates numerically)."""
        if self._gather_plan() is not None:
            if self.cells.size != self.n_cells:
                return self._schur(eta, derivatives=True)[0]
            return [self._gathered(eta, dj) for dj in self._parameters()]
        if self.cells.size != self.n_cells:
            return None
        obs = self.cells
        return [self._on_pattern(self.full_precision_derivative(eta, j)[obs][:, obs]) for j in range(self.n_params)]

    def observed_log_det_derivatives(self, eta: np.ndarray) -> np.ndarray | None:
        """``d log|R~_oo| / d eta_j`` for every parameter: ``d log|R~| / d eta_j`` on a complete grid, plus
        ``sum_g tr(A_g^-1 dA_g)`` over the groups of unobserved cells otherwise (``log|R~_oo| = log|W_mm| -
        log|W|`` with ``W_mm`` block diagonal over the groups, ``A_g = W_gg``); None for very long dimensions
        with unobserved cells."""
        parts = self.split(eta)
        n_cells = self.n_cells
        full = np.array([(n_cells / self.dimensions[i].size) * self.dimensions[i].log_det_derivative(parts[i], k)
                         for i, k in self._parameters()])
        if self.cells.size == self.n_cells:
            return full
        if self._gather_plan() is None:
            return None
        return full + self._schur(eta, derivatives=True)[1]

    def _schur_plan(self) -> SchurPlan:
        """Gather positions of every group of unobserved cells (:class:`~lmmformula.covariance.missing.SchurPlan`)."""
        if "_schur_cache" not in self.__dict__:
            indptr, indices, shape, _ = self._gather_plan()
            keys = np.repeat(np.arange(shape[1]), np.diff(indptr)).astype(np.int64) * shape[0] + indices
            object.__setattr__(self, "_schur_cache", SchurPlan(self.dimensions, self._plan(), keys, shape[0]))
        return self.__dict__["_schur_cache"]

    def _dense_factors(self, eta: np.ndarray, derivative: tuple[int, int] | None) -> list[np.ndarray | None]:
        """Dense ``Q_d`` (``dQ_d`` for the differentiated dimension) per dimension; None for identities.
        The factors at the last ``eta`` are kept: the values, the derivatives and the trial points of a line
        search ask for them repeatedly."""
        key = (tuple(float(x) for x in np.asarray(eta, dtype=float).ravel()), derivative)
        cache = self.__dict__.setdefault("_factor_cache", {})
        hit = cache.get(key)
        if hit is not None:
            return hit
        if derivative is None:
            out = [None if d.kind == "id" else d.dense_precision(e)
                   for d, e in zip(self.dimensions, self.split(eta))]
        else:
            out = list(self._dense_factors(eta, None))
            i, k = derivative
            out[i] = self.dimensions[i].dense_precision(self.split(eta)[i], k)
        for Q in out:
            if Q is not None:
                Q.flags.writeable = False  # shared through the cache
        if len(cache) >= self.FACTOR_CACHE:
            cache.pop(next(iter(cache)))
        cache[key] = out
        return out

    def _dense_covariances(self, eta: np.ndarray) -> list[np.ndarray | None]:
        """Dense ``R_d`` per dimension (None for identities), kept for the last few ``eta`` as the factors are."""
        key = (tuple(float(x) for x in np.asarray(eta, dtype=float).ravel()), "R")
        cache = self.__dict__.setdefault("_factor_cache", {})
        hit = cache.get(key)
        if hit is None:
            hit = [None if d.kind == "id" else d.matrix(e) for d, e in zip(self.dimensions, self.split(eta))]
            for R in hit:
                if R is not None:
                    R.flags.writeable = False
            if len(cache) >= self.FACTOR_CACHE:
                cache.pop(next(iter(cache)))
            cache[key] = hit
        return hit

    FACTOR_CACHE = 12  # dense factors (values and derivatives) of the last few parameter values

    @staticmethod
    def _entries(Qs, pos_i, pos_j) -> np.ndarray:
        """``prod_d Q_d[pos_i[d], pos_j[d]]`` (broadcasting), identities as equality of positions."""
        out = 1.0
        for Q, a, b in zip(Qs, pos_i, pos_j):
            out = out * ((a == b).astype(float) if Q is None else Q[a, b])
        return out

    def _schur(self, eta: np.ndarray, derivatives: bool = False):
        """Values on the pattern of the observed-cell precision ``W_oo - W_om W_mm^-1 W_mo`` and ``log|R~_oo|``,
        or (``derivatives``, cached for the last ``eta``) the list of its derivatives in every parameter and
        ``d log|W_mm| / d eta``, from entries gathered out of dense per-dimension factors
        (:mod:`~lmmformula.covariance.missing`)."""
        plan = self._schur_plan()
        Qs = self._dense_factors(eta, None)
        if not derivatives:
            vals = self._gathered_from(Qs)
            logdet_mm = plan.values(Qs, vals)
            return vals, logdet_mm + self.log_det(eta)
        key = tuple(float(x) for x in np.asarray(eta, dtype=float).ravel())
        cached = self.__dict__.get("_schur_derivatives")
        if cached is not None and cached[0] == key:
            return cached[1]
        # entries of dW are products with one differentiated factor (the parameter belongs to one dimension)
        dQs = [self._dense_factors(eta, dj) for dj in self._parameters()]
        dvals = np.array([self._gathered_from(dQ) for dQ in dQs]).reshape(len(dQs), -1)
        dlogdet_mm = plan.derivatives(Qs, dQs, dvals)
        dvals.flags.writeable = False  # shared through the cache
        out = (list(dvals), dlogdet_mm)
        object.__setattr__(self, "_schur_derivatives", (key, out))
        return out

    def full_precision_derivative(self, eta: np.ndarray, j: int) -> sp.csc_matrix:
        """``dW/d eta_j`` on the full grid: the Kronecker product with dimension d's ``dQ_d``."""
        offsets = np.cumsum([0] + [d.n_params for d in self.dimensions])
        dim = int(np.searchsorted(offsets, j, side="right") - 1)
        D = None
        for i, (d, e) in enumerate(zip(self.dimensions, self.split(eta))):
            Q = d.precision_derivative(e, j - offsets[i]) if i == dim else d.precision(e)
            D = Q if D is None else sp.kron(D, Q, format="csc")
        return D.tocsc()

    def covariance_times(self, eta: np.ndarray, M: np.ndarray) -> np.ndarray | None:
        """``R~_oo M`` without a factorization: ``M`` is placed on the full grid (zeros at unobserved cells),
        multiplied by each dimension's dense ``R_d`` along its axis, and read back at the observed cells
        (``R~_oo`` is a sub-matrix of the full-grid Kronecker product).  None for very long dimensions."""
        if any(d.kind != "id" and d.size > self.GATHER_MAX for d in self.dimensions):
            return None
        M = np.asarray(M, dtype=float)
        vec = M.ndim == 1
        M2 = M.reshape(M.shape[0], -1)
        grid = np.zeros((self.n_cells, M2.shape[1]))
        grid[self.cells] = M2
        sizes = [d.size for d in self.dimensions]
        for axis, R in enumerate(self._dense_covariances(eta)):
            if R is not None:  # R_d along this axis: (before, size_d, after) blocks, one broadcast product
                grid = R @ grid.reshape(int(np.prod(sizes[:axis])), sizes[axis], -1)
        out = grid.reshape(self.n_cells, M2.shape[1])[self.cells]
        return out[:, 0] if vec else out

    GATHER_MAX = 2000  # dimensions up to this size are held as dense per-dimension matrices

    def _gather_plan(self):
        """The CSC pattern of the observed-cell precision in observation order and, per non-identity
        dimension, the flat position of each stored entry in the dimension's dense matrix (None for very long
        dimensions)."""
        if "_gather" not in self.__dict__:
            plan = None
            if all(d.kind == "id" or d.size <= self.GATHER_MAX for d in self.dimensions):
                P = self.shared_pattern()
                cols = np.repeat(np.arange(P.shape[1]), np.diff(P.indptr))
                rows = P.indices
                # per dimension, the flat position pos_d(i) * size_d + pos_d(j) of each entry in the dense R_d or Q_d
                index = [(d.positions[rows].astype(np.intp) * d.size + d.positions[cols]) if d.kind != "id" else None
                         for d in self.dimensions]
                plan = (P.indptr, P.indices, P.shape, index)
            object.__setattr__(self, "_gather", plan)
        return self.__dict__["_gather"]

    def _gathered(self, eta: np.ndarray, derivative: tuple[int, int] | None = None) -> np.ndarray:
        """Values of the precision (or its derivative in one parameter) on its pattern: the product
        ``prod_d Q_d[pos_d(i), pos_d(j)]`` of the dimensions' entries; no Kronecker product is formed."""
        return self._gathered_from(self._dense_factors(eta, derivative))

    def _gathered_from(self, Qs: list[np.ndarray | None]) -> np.ndarray:
        """:meth:`_gathered` from given dense factors (None for identities)."""
        index = self._gather_plan()[3]
        vals = None
        for Q, flat in zip(Qs, index):
            if flat is None:
                continue
            g = Q.ravel().take(flat)
            vals = g if vals is None else vals * g
        return np.ones(self._gather_plan()[1].size) if vals is None else vals

    def precision_values(self, eta: np.ndarray) -> tuple[np.ndarray, float]:
        """Values of the precision ``R~_oo^-1`` of the observations on :meth:`precision_pattern` (CSC order,
        observation order) and ``log|R~_oo|``.

        The Schur complement is taken one connected group of unobserved cells at a time: a group
        only touches the observed cells next to it, so the update is a small dense block there
        (an isolated missing plot: a rank-one update of its up to 8 neighbours).
        """
        if self._gather_plan() is not None:
            if self.cells.size == self.n_cells:
                return self._gathered(eta), self.log_det(eta)
            return self._schur(eta)
        W, logdet_w = self.full_precision(eta)
        obs = self.cells
        W_oo = W[obs][:, obs].tocsc()
        if obs.size == self.n_cells:
            return self._on_pattern(W_oo), -logdet_w
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
        return self._on_pattern(0.5 * (S + S.T)), logdet_mm - logdet_w

    def precision(self, eta: np.ndarray) -> tuple[sp.csc_matrix, float]:
        """Precision ``R~_oo^-1`` of the observations (observation order) and ``log|R~_oo|``
        (:meth:`precision_values` as a sparse matrix)."""
        vals, logdet = self.precision_values(eta)
        return self.on_pattern(vals), logdet

    def on_pattern(self, vals: np.ndarray) -> sp.csc_matrix:
        """The sparse matrix with ``vals`` on :meth:`precision_pattern` (its own copy of the index arrays)."""
        P = self.shared_pattern()
        return sp.csc_matrix((vals, P.indices.copy(), P.indptr.copy()), shape=P.shape)

    def _on_pattern(self, M: sp.spmatrix) -> np.ndarray:
        """Values of ``M`` on :meth:`precision_pattern` (entries of ``M`` outside it must be zero)."""
        if "_pattern_keys" not in self.__dict__:
            object.__setattr__(self, "_pattern_keys", pattern_keys(self.shared_pattern()))
        return values_on(M, self.__dict__["_pattern_keys"])

    def precision_pattern(self) -> sp.csc_matrix:
        """Structural pattern of :meth:`precision` (the same for every value of the correlations; CSC with
        sorted indices; a copy of the cached one)."""
        return self.shared_pattern().copy()

    def shared_pattern(self) -> sp.csc_matrix:
        """The cached pattern, shared (its index arrays are read-only: every value vector is aligned with them)."""
        if "_pattern" in self.__dict__:
            return self.__dict__["_pattern"]
        W = sp.csc_matrix(self._generic_full_precision())
        obs = self.cells
        n = obs.size
        observation = np.full(self.n_cells, -1, dtype=np.int64)  # the observation in each cell (-1: unobserved)
        observation[obs] = np.arange(n)
        r = observation[W.indices]
        c = observation[np.repeat(np.arange(self.n_cells), np.diff(W.indptr))]
        rows, cols = [r[(r >= 0) & (c >= 0)]], [c[(r >= 0) & (c >= 0)]]  # W_oo
        if n != self.n_cells:  # the Schur complement of each group of unobserved cells joins its neighbours
            for nb in self._plan().neighbours:
                rows.append(np.repeat(nb, nb.size))
                cols.append(np.tile(nb, nb.size))
        rows, cols = np.concatenate(rows), np.concatenate(cols)
        P = sp.csc_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n))
        P.sum_duplicates()
        P.sort_indices()
        P.data[:] = 1.0
        P.indices.flags.writeable = False
        P.indptr.flags.writeable = False
        object.__setattr__(self, "_pattern", P)
        return P

    def _generic_full_precision(self) -> sp.csc_matrix:
        """The full-grid precision at :meth:`generic_eta` (its pattern is every value's pattern), cached."""
        if "_generic_full" not in self.__dict__:
            object.__setattr__(self, "_generic_full", self.full_precision(self.generic_eta())[0])
        return self.__dict__["_generic_full"]

    def _plan(self) -> MissingPlan:
        plan = self.__dict__.get("_missing_plan")
        if plan is None:
            plan = missing_plan(self._generic_full_precision(), self.cells, self.n_cells)
            object.__setattr__(self, "_missing_plan", plan)
        return plan
