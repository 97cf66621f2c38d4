"""Residual-weighted cross-products ``Z'WZ, Z'WX, X'WX, Z'Wy, X'Wy`` with ``W = R~^-1``.

With independent residuals ``W = I`` and the products are computed once.  With a residual
structure they depend on its parameters ``eta`` and are recomputed (and cached) when eta
changes; ``Z'WZ`` is always placed on one structural pattern so the factorization of the MME
keeps its symbolic analysis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ..covariance.residual import ResidualStructure

__all__ = ["CrossProducts", "WeightedProducts", "pattern_of", "pattern_keys", "scatter"]


def pattern_of(M: sp.spmatrix) -> sp.csc_matrix:
    """Structural pattern of ``M`` (ones where M stores an entry, explicit zeros included)."""
    P = sp.csc_matrix(M, copy=True)
    P.data = np.ones_like(P.data)
    return P


def pattern_keys(M: sp.csc_matrix) -> np.ndarray:
    """Sorted linear keys ``col * nrows + row`` of a CSC matrix with sorted indices."""
    cols = np.repeat(np.arange(M.shape[1], dtype=np.int64), np.diff(M.indptr))
    return cols * M.shape[0] + M.indices.astype(np.int64)


def scatter(M: sp.spmatrix, pattern: sp.csc_matrix, keys: np.ndarray) -> sp.csc_matrix:
    """Values of ``M`` placed on the fixed ``pattern`` (entries of M outside it must be absent)."""
    M = sp.csc_matrix(M)
    M.sum_duplicates()
    M.sort_indices()
    mkeys = pattern_keys(M)
    pos = np.minimum(np.searchsorted(keys, mkeys), max(keys.size - 1, 0))
    hit = keys[pos] == mkeys if keys.size else np.zeros(mkeys.size, dtype=bool)
    if not hit.all():
        stray = np.abs(M.data[~hit]).max()
        if stray > 1e-12 * max(float(np.abs(M.data).max()), 1e-300):
            raise RuntimeError("a matrix has an entry outside its fixed sparsity pattern")
    out = pattern.copy()
    out.data = np.zeros(pattern.nnz)
    out.data[pos[hit]] = M.data[hit]
    return out


@dataclass(frozen=True)
class WeightedProducts:
    """Cross-products at one value of the residual parameters."""

    eta: tuple[float, ...]
    W: sp.csc_matrix | None      # None means the identity
    logdet_r: float              # log|R~| of the observations
    ZtWZ: sp.csc_matrix
    ZtWX: np.ndarray
    XtWX: np.ndarray
    ZtWy: np.ndarray
    XtWy: np.ndarray

    def weight(self, M):
        """``W M`` (``M`` when the residuals are independent)."""
        return M if self.W is None else self.W @ M


class CrossProducts:
    """Cache of :class:`WeightedProducts` for a model's ``y, X, Z`` and residual structure."""

    def __init__(self, y: np.ndarray, X: np.ndarray, Z: sp.csc_matrix, residual: ResidualStructure | None):
        self.y, self.X, self.Z, self.residual = y, X, Z, residual
        self.n_eta = residual.n_params if residual is not None else 0
        if residual is None:
            w_pattern = sp.identity(y.size, format="csc")
        else:
            w_pattern = residual.precision_pattern()
        zp = pattern_of(Z)
        pat = (zp.T @ w_pattern @ zp).tocsc()
        pat.sort_indices()
        self.ztwz_pattern = pattern_of(pat)
        self._keys = pattern_keys(self.ztwz_pattern)
        self._cache: dict[tuple[float, ...], WeightedProducts] = {}
        self._solvers: dict[tuple[float, ...], object] = {}
        # indicator columns (a fixed factor with many levels) make X mostly zeros: multiply it sparsely
        density = np.count_nonzero(X) / max(X.size, 1)
        self.sparse_X = sp.csc_matrix(X) if residual is not None and density < 0.2 else None

    CACHE_SIZE = 6  # the iterate, its finite-difference neighbours and a line-search trial

    def at(self, eta: np.ndarray) -> WeightedProducts:
        """Products at ``eta`` (the last few values are cached)."""
        key = tuple(float(e) for e in np.asarray(eta, dtype=float))
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        y, X, Z = self.y, self.X, self.Z
        if self.residual is None:
            W, logdet_r, WZ, WX, Wy = None, 0.0, Z, X, y
        else:
            W, logdet_r = self.residual.precision(np.asarray(key))
            WZ, Wy = (W @ Z).tocsc(), W @ y
            WX = W @ (X if self.sparse_X is None else self.sparse_X)
        if sp.issparse(WX):
            Xs = self.sparse_X
            ZtWX, XtWX = (Z.T @ WX).toarray(), (Xs.T @ WX).toarray()
        else:
            ZtWX, XtWX = np.asarray(Z.T @ WX), X.T @ WX
        prod = WeightedProducts(
            eta=key, W=W, logdet_r=float(logdet_r),
            ZtWZ=scatter(Z.T @ WZ, self.ztwz_pattern, self._keys),
            ZtWX=ZtWX, XtWX=XtWX,
            ZtWy=np.asarray(Z.T @ Wy).ravel(), XtWy=X.T @ Wy)
        if len(self._cache) >= self.CACHE_SIZE:
            oldest = next(iter(self._cache))
            self._cache.pop(oldest)
            self._solvers.pop(oldest, None)
        self._cache[key] = prod
        return prod

    def covariance_times(self, eta: np.ndarray, M: np.ndarray) -> np.ndarray:
        """``R~ M`` by a sparse solve with ``W`` (the residual correlation times a vector)."""
        prod = self.at(eta)
        if prod.W is None:
            return M
        direct = self.residual.covariance_times(np.asarray(prod.eta), M)
        if direct is not None:
            return direct
        solver = self._solvers.get(prod.eta)
        if solver is None:
            solver = self._solvers[prod.eta] = spla.factorized(prod.W.tocsc())
        M = np.asarray(M, dtype=float)
        if M.ndim == 1:
            return solver(M)
        return np.column_stack([solver(M[:, j]) for j in range(M.shape[1])])
