"""One dimension of a residual grid (or of a structured grouping) and its relative covariance ``R_d``.

Kinds: ``id``; the correlations ``ar1``, ``cs``, ``toep`` (a :class:`~lmmformula.covariance.correlation.Correlation`
on the grid positions, ``eta = atanh(rho)``); ``us`` and ``diag`` with their own variances.  Each dimension gives
``R_d``, its precision ``Q_d`` (tridiagonal in closed form for AR1), ``log|R_d|`` and their derivatives.
Grid positions come from a numeric column's values on a regular grid (gaps kept) or a Categorical's order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import DataError
from .correlation import Correlation

__all__ = ["ResidualDimension", "ar1_precision", "cs_precision", "grid_positions", "CORRELATION_KINDS",
           "VARIANCE_KINDS"]


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
    return _tridiagonal(main, np.full(m - 1, -rho), 1.0 / (1.0 - rho * rho))


def _tridiagonal(main: np.ndarray, off: np.ndarray, scale: float) -> sp.csc_matrix:
    """The symmetric tridiagonal ``scale * tridiag(off; main; off)`` in CSC form, built from its index arrays
    (columns hold rows ``j-1, j, j+1``)."""
    m = main.size
    rows = np.stack([np.arange(m) - 1, np.arange(m), np.arange(m) + 1], axis=1)
    vals = np.stack([np.concatenate([[0.0], off]), main, np.concatenate([off, [0.0]])], axis=1) * scale
    keep = (rows >= 0) & (rows < m)
    indptr = np.concatenate([[0], np.cumsum(keep.sum(axis=1))])
    return sp.csc_matrix((vals[keep], rows[keep], indptr), shape=(m, m))


CORRELATION_KINDS = ("ar1", "cs", "toep")
VARIANCE_KINDS = ("us", "diag")


@dataclass(frozen=True)
class ResidualDimension:
    """One factor of the residual grid and its ``size x size`` relative covariance ``R_d(eta)``.

    Attributes
    ----------
    variable : str
    kind : {"id", "ar1", "cs", "toep", "us", "diag"}
    size : int
        Number of grid positions along this dimension (gaps included for AR1/Toeplitz on a numeric column).
    positions : ndarray of int
        Grid position of each observation.
    labels : tuple of str
        Label of each grid position (the column's value there).
    bands : int
        Number of free bands of a Toeplitz dimension.

    Notes
    -----
    ``ar1``, ``cs``, ``toep``: a correlation matrix, ``eta = atanh(rho)``.  ``diag``: ``R_d = D^2`` with
    ``D = diag(1, exp(eta_1), ...)`` (variances relative to the first level, nlme's ``varIdent``).
    ``us``: ``R_d = L L'`` with ``L`` lower triangular, ``L[0, 0] = 1`` (the residual variance is the first
    level's variance), ``log`` of the other diagonal entries and the off-diagonal entries column-major.
    """

    variable: str
    kind: str
    size: int
    positions: np.ndarray
    labels: tuple[str, ...] = ()
    bands: int = 0

    @property
    def correlation_model(self) -> Correlation:
        return Correlation(self.kind if self.kind in CORRELATION_KINDS else "id", self.size, self.bands)

    @property
    def n_params(self) -> int:
        if self.kind == "us":
            return self.size * (self.size + 1) // 2 - 1
        if self.kind == "diag":
            return self.size - 1
        return self.correlation_model.n_params

    def eta_bounds(self) -> list[tuple[float, float]]:
        if self.kind in VARIANCE_KINDS:
            return [(-np.inf, np.inf)] * self.n_params
        return [(float(np.arctanh(lo)), float(np.arctanh(hi))) for lo, hi in self.correlation_model.rho_bounds()]

    def initial_eta(self) -> np.ndarray:
        if self.kind in VARIANCE_KINDS:
            return np.zeros(self.n_params)
        return np.arctanh(self.correlation_model.initial_rho())

    def generic_eta(self) -> np.ndarray:
        """A value with no accidental zeros in the precision (for its structural pattern)."""
        if self.kind in VARIANCE_KINDS:
            return np.full(self.n_params, 0.1)
        if self.kind == "toep":  # not AR1-shaped (whose inverse is tridiagonal); diagonally dominant, so PD
            k = np.arange(1, self.bands + 1)
            return np.arctanh(0.3 ** k + 0.01 * 0.5 ** k)
        return np.arctanh(self.correlation_model.initial_rho(0.37))

    def _us_positions(self) -> list[tuple[int, int]]:
        return [(r, c) for c in range(self.size) for r in range(c, self.size) if (r, c) != (0, 0)]

    def factor(self, eta: np.ndarray) -> np.ndarray:
        """``L`` of a ``us`` dimension, ``D`` of a ``diag`` dimension."""
        eta = np.asarray(eta, dtype=float)
        if self.kind == "diag":
            return np.diag(np.exp(np.concatenate([[0.0], eta])))
        L = np.eye(self.size)
        for value, (r, c) in zip(eta, self._us_positions()):
            L[r, c] = np.exp(value) if r == c else value
        return L

    def matrix(self, eta: np.ndarray) -> np.ndarray:
        """The dense relative covariance ``R_d`` (a correlation matrix for ar1/cs/toep/id)."""
        if self.kind in VARIANCE_KINDS:
            F = self.factor(eta)
            return F @ F.T
        return self.correlation_model.matrix(np.tanh(np.asarray(eta, dtype=float)))

    def precision(self, eta: np.ndarray) -> sp.csc_matrix:
        eta = np.asarray(eta, dtype=float)
        if self.kind == "ar1":
            return ar1_precision(self.size, float(np.tanh(eta[0])))
        if self.kind == "cs":
            return cs_precision(self.size, float(np.tanh(eta[0])))
        if self.kind == "id":
            return sp.identity(self.size, format="csc")
        if self.kind in VARIANCE_KINDS:
            Finv = np.linalg.inv(self.factor(eta))
            return sp.csc_matrix(Finv.T @ Finv)
        C = self.matrix(eta)
        np.linalg.cholesky(C)  # raises LinAlgError outside the positive-definite region
        return sp.csc_matrix(np.linalg.inv(C))

    def dense_precision(self, eta: np.ndarray, j: int | None = None) -> np.ndarray:
        """``Q_d`` (or ``dQ_d / d eta_j``) as a dense array; AR1 in closed form without sparse objects."""
        if self.kind != "ar1":
            M = self.precision(eta) if j is None else self.precision_derivative(eta, j)
            return M.toarray()
        rho = float(np.tanh(np.asarray(eta, dtype=float)[0]))
        m, c = self.size, 1.0 - rho * rho
        out = np.zeros((m, m))
        if m == 1:
            out[0, 0] = 1.0 if j is None else 0.0
            return out
        i = np.arange(m)
        if j is None:
            diag, end, off = (1.0 + rho * rho) / c, 1.0 / c, -rho / c
        else:  # d/d eta = (1 - rho^2) d/d rho
            diag, end, off = 4.0 * rho / c, 2.0 * rho / c, -(1.0 + rho * rho) / c
        out[i, i] = diag
        out[0, 0] = out[-1, -1] = end
        out[i[:-1], i[1:]] = off
        out[i[1:], i[:-1]] = off
        return out

    def precision_derivative(self, eta: np.ndarray, j: int) -> sp.csc_matrix:
        """``dQ_d / d eta_j``: closed form for AR1 (tridiagonal), ``-Q (dR_d/d eta_j) Q`` otherwise."""
        eta = np.asarray(eta, dtype=float)
        if self.kind == "ar1":
            rho = float(np.tanh(eta[0]))
            m, c = self.size, 1.0 - rho * rho
            if m == 1:
                return sp.csc_matrix((1, 1))
            main = np.full(m, 4.0 * rho / c**2)
            main[0] = main[-1] = 2.0 * rho / c**2
            off = np.full(m - 1, -(1.0 + rho * rho) / c**2)
            return _tridiagonal(main, off, c)  # d rho / d eta = c
        if self.kind in CORRELATION_KINDS:
            rho = np.tanh(eta)
            dR = self.correlation_model.derivatives(rho)[j] * (1.0 - rho[j] ** 2)
        else:  # us, diag: derivative of F F' through the factor's entries (exp of the log-diagonal)
            h = 1e-6
            e = np.zeros(eta.size)
            e[j] = h
            dR = (self.matrix(eta + e) - self.matrix(eta - e)) / (2.0 * h)
        Q = self.precision(eta).toarray()
        return sp.csc_matrix(-Q @ dR @ Q)

    def log_det_derivative(self, eta: np.ndarray, j: int) -> float:
        """``d log|R_d| / d eta_j = tr(Q_d dR_d/d eta_j)`` (AR1: ``-2 rho (m - 1)``)."""
        eta = np.asarray(eta, dtype=float)
        if self.kind == "ar1":
            return -2.0 * float(np.tanh(eta[0])) * (self.size - 1)
        dQ = self.dense_precision(eta, j)  # d log|R| = -d log|Q| = -tr(R dQ)
        return -float(np.sum(self.matrix(eta) * dQ))

    def log_det(self, eta: np.ndarray) -> float:
        """``log|R_d|``."""
        eta = np.asarray(eta, dtype=float)
        if self.kind == "ar1":
            return (self.size - 1) * np.log1p(-np.tanh(eta[0]) ** 2)
        if self.kind == "cs":
            rho = np.tanh(eta[0])
            return (self.size - 1) * np.log1p(-rho) + np.log1p((self.size - 1) * rho)
        if self.kind == "id":
            return 0.0
        if self.kind in VARIANCE_KINDS:
            return 2.0 * float(np.sum(np.log(np.diag(self.factor(eta)))))
        sign, logdet = np.linalg.slogdet(self.matrix(eta))
        if sign <= 0:
            raise np.linalg.LinAlgError("the Toeplitz correlation is not positive definite")
        return float(logdet)

    def reported(self, eta: np.ndarray) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
        """Names, values and ``scaled`` flags of the reported parameters: correlations ``rho(...)``, or the
        entries ``var(<level>)``, ``cov(<a>,<b>)`` of ``R_d`` (to be multiplied by ``sigma^2``: flagged)."""
        eta = np.asarray(eta, dtype=float)
        if self.kind in CORRELATION_KINDS:
            names = self.correlation_model.names(self.variable)
            return names, np.tanh(eta), np.zeros(len(names), dtype=bool)
        if self.kind == "id":
            return (), np.zeros(0), np.zeros(0, dtype=bool)
        R = self.matrix(eta)
        pairs = [(a, a) for a in range(self.size)]
        if self.kind == "us":
            pairs += [(a, b) for b in range(self.size) for a in range(b + 1, self.size)]
        lab = [f"{self.variable}={x}" for x in self.labels]
        names = tuple(f"var({lab[a]})" if a == b else f"cov({lab[b]},{lab[a]})" for a, b in pairs)
        return names, np.array([R[a, b] for a, b in pairs]), np.ones(len(pairs), dtype=bool)


def _fmt(x) -> str:
    return str(int(x)) if isinstance(x, (float, np.floating)) and float(x).is_integer() else str(x)


def grid_positions(col: pd.Series, variable: str, kind: str) -> tuple[np.ndarray, int, tuple[str, ...]]:
    """Numeric columns: value / smallest positive spacing (gaps kept). Otherwise category order."""
    positional = kind in ("ar1", "toep")
    if positional and pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        vals = col.to_numpy(dtype=float)
        uniq = np.unique(vals)
        if uniq.size == 1:
            return np.zeros(vals.size, dtype=np.int64), 1, (_fmt(uniq[0]),)
        step = np.min(np.diff(uniq))
        pos = (vals - uniq[0]) / step
        if np.max(np.abs(pos - np.round(pos))) > 1e-6:
            raise DataError(
                f"the positions in '{variable}' are not on a regular grid (smallest spacing {step:g}); "
                f"{kind} needs equally spaced positions: round them or use a categorical column"
            )
        pos = np.round(pos).astype(np.int64)
        size = int(pos.max()) + 1
        return pos, size, tuple(_fmt(uniq[0] + k * step) for k in range(size))
    if positional and isinstance(col.dtype, pd.CategoricalDtype) and not col.dtype.ordered:
        raise DataError(
            f"{kind} positions in '{variable}' come from an unordered Categorical, whose category order "
            f"({', '.join(map(str, list(col.dtype.categories)[:4]))}, ...) is not declared as an order in time or "
            "space; make it ordered with the categories in time order (col.cat.as_ordered() or "
            "pd.Categorical(..., categories=[...], ordered=True)), or use a numeric column"
        )
    if positional and not isinstance(col.dtype, pd.CategoricalDtype):
        raise DataError(
            f"{kind} positions in '{variable}' must be numeric (equally spaced values) or an ordered pandas "
            f"Categorical; got {col.dtype}, whose text order (e.g. t1, t10, t2) is not an order in time or space. "
            "Convert it with pd.to_numeric or pd.Categorical(..., categories=[...], ordered=True)"
        )
    if isinstance(col.dtype, pd.CategoricalDtype):
        if not positional:  # an unused level of a us/diag/cs dimension would get parameters without data
            col = col.cat.remove_unused_categories()
        codes = col.cat.codes.to_numpy().astype(np.int64)
        return codes, len(col.cat.categories), tuple(_fmt(c) for c in col.cat.categories)
    codes, uniques = pd.factorize(col, sort=True)
    return codes.astype(np.int64), len(uniques), tuple(_fmt(u) for u in uniques)
