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
from ..sparsepattern import pattern_keys, pattern_of, scatter, sparse_if_mostly_zero, values_on

__all__ = ["CrossProducts", "WeightedProducts", "BilinearMap"]


class BilinearMap:
    """``M'WN`` as a linear map of the values ``w`` of ``W`` on a fixed pattern.

    With ``W = sum_k w_k e_{r_k} e_{c_k}'``, ``(M'WN)[a, b] = sum_k w_k M[r_k, a] N[c_k, b]``: the map is a
    sparse matrix ``G`` (one column per stored entry of W) with ``vec(M'WN) = G w``; its transpose gives
    ``tr(T' M'dWN) = (G'vec(T)) . dw`` for any ``dW`` on the same pattern.  Built once per model, it turns
    every cross-product and every trace in the residual parameters into one sparse mat-vec.

    Parameters
    ----------
    M, N : sparse matrices with as many rows as W
    rows, cols : ndarray of int
        Positions of W's stored entries.
    out_keys : ndarray of int64 or "pattern", optional
        Sorted CSC keys of a fixed pattern holding ``M'WN``; ``"pattern"``: the structural pattern of ``M'WN``,
        found by the map and kept as :attr:`out_keys`; without it the output is the dense ``M'WN`` in row-major
        order.
    """

    MAX_ENTRIES = 4_000_000  # a larger map (dense W blocks with several Z entries per row) is applied lazily

    def __init__(self, M, N, rows: np.ndarray, cols: np.ndarray, out_keys: np.ndarray | str | None = None):
        Mr = sp.csr_matrix(M)
        Nr = Mr if N is M else sp.csr_matrix(N)
        self.shape = (Mr.shape[1], Nr.shape[1])
        find = isinstance(out_keys, str)
        self._dense = out_keys is None
        self._symmetric = M is N
        na, nb = np.diff(Mr.indptr)[rows], np.diff(Nr.indptr)[cols]  # entries in row r_k of M, row c_k of N
        count = na * nb
        self.lazy = int(count.sum()) > self.MAX_ENTRIES
        if self.lazy:  # keep the row-selected factors; products are formed at each call
            if find:  # the pattern of M'WN from the patterns of its factors
                W = sp.csc_matrix((np.ones(rows.size), (rows, cols)), shape=(M.shape[0], N.shape[0]))
                P = (pattern_of(M).T @ W @ pattern_of(N)).tocsc()
                P.sort_indices()
                out_keys = pattern_keys(P)
            self.out_keys = out_keys
            self._A, self._B, self._M, self._N = Mr[rows].tocsc(), Nr[cols], sp.csc_matrix(M), sp.csc_matrix(N)
            self._rows, self._cols, self._out_keys = rows, cols, out_keys
            return
        # the products of entry k of W are generated together: G is built column by column (CSC), unsorted
        indptr = np.zeros(rows.size + 1, dtype=np.int64)
        np.cumsum(count, out=indptr[1:])
        k = np.repeat(np.arange(rows.size), count)
        offset, within = np.divmod(np.arange(indptr[-1]) - indptr[k], nb[k])
        ia, ib = Mr.indptr[rows[k]] + offset, Nr.indptr[cols[k]] + within  # positions in M's and N's arrays
        a, b = Mr.indices[ia].astype(np.int64), Nr.indices[ib].astype(np.int64)
        if out_keys is None:
            out, n_out = a * self.shape[1] + b, self.shape[0] * self.shape[1]
        elif find:
            out_keys, out = np.unique(b * self.shape[0] + a, return_inverse=True)
            n_out = out_keys.size
        else:
            out, n_out = np.searchsorted(out_keys, b * self.shape[0] + a), out_keys.size
        self.out_keys = out_keys
        vals = Mr.data[ia] * Nr.data[ib]
        self._indptr = indptr
        self._G = sp.csc_matrix((vals, out, indptr), shape=(n_out, rows.size))
        self._Gt = self._Gt_lower = None  # the adjoints, built when first asked for
        self._lower = (vals, np.maximum(a, b) * self.shape[1] + np.minimum(a, b)) \
            if out_keys is None and self._symmetric else None

    def __call__(self, w: np.ndarray) -> np.ndarray:
        """``M'WN``: dense, or its values on the output pattern."""
        if self.lazy:
            n = self._M.shape[0]
            W = sp.csr_matrix((w, (self._rows, self._cols)), shape=(n, n))
            P = self._M.T @ (W @ self._N)
            return P.toarray() if self._dense else values_on(P, self._out_keys, strict=False)
        out = self._G @ w
        return out.reshape(self.shape) if self._dense else out

    def adjoint(self, T: np.ndarray) -> np.ndarray:
        """``t`` with ``t . dw = tr(T' M'dWN)`` (``T`` dense, or values on the output pattern)."""
        if self.lazy:  # t_k = (M T N')[r_k, c_k] = sum of (M[r_k] T) * N[c_k]
            if self._dense:
                AT = self._A @ np.asarray(T).reshape(self.shape)
                return np.asarray(self._B.multiply(AT).sum(axis=1)).ravel()
            keys = self._out_keys
            Tm = sp.csc_matrix((np.asarray(T, dtype=float), (keys % self.shape[0], keys // self.shape[0])),
                               shape=self.shape)
            return np.asarray(self._B.multiply(self._A @ Tm).sum(axis=1)).ravel()
        if self._Gt is None:
            self._Gt = self._G.T  # a CSR view of G's arrays
        return self._Gt @ np.ravel(T)

    def adjoint_lower(self, T: np.ndarray) -> np.ndarray:
        """:meth:`adjoint` of a symmetric ``T`` given by its lower triangle (the upper one is not read; for
        ``M'WM`` maps with dense output, e.g. the inverse from LAPACK ``potri``)."""
        if self.lazy:
            T = np.tril(T)
            return self.adjoint(T + np.tril(T, -1).T)
        T = np.asarray(T)
        fortran = T.flags.f_contiguous and not T.flags.c_contiguous  # LAPACK's output: read in place
        if self._Gt_lower is None:  # symmetric M'WM: adjoints reading the lower triangle only
            vals, lower = self._lower
            p = self.shape[1]
            shape = (self._G.shape[1], self._G.shape[0])
            self._Gt_lower = (sp.csr_matrix((vals, lower, self._indptr), shape=shape),
                              sp.csr_matrix((vals, (lower % p) * p + lower // p, self._indptr), shape=shape))
        return self._Gt_lower[1] @ T.ravel(order="F") if fortran else self._Gt_lower[0] @ T.ravel()


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


def _pattern_from_keys(keys: np.ndarray, n: int) -> sp.csc_matrix:
    """The ``n x n`` CSC pattern (ones, sorted indices) whose entries have the sorted keys ``col * n + row``."""
    cols, rows = np.divmod(keys, n)
    indptr = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(np.bincount(cols, minlength=n), out=indptr[1:])
    return sp.csc_matrix((np.ones(keys.size), rows.astype(np.int32), indptr), shape=(n, n))


class CrossProducts:
    """Cache of :class:`WeightedProducts` for a model's ``y, X, Z`` and residual structure.

    With a residual structure, ``W`` keeps one pattern (:meth:`ResidualStructure.precision_pattern`), and
    ``Z'WZ`` (and ``Z'WX``, ``X'WX`` for indicator columns of X) are :class:`BilinearMap` images of W's values.
    """

    def __init__(self, y: np.ndarray, X: np.ndarray, Z: sp.csc_matrix, residual: ResidualStructure | None,
                 sparse_X: sp.csc_matrix | None = None):
        self.y, self.X, self.Z, self.residual = y, X, Z, residual
        self._Zt = Z.T.tocsr()
        self.n_eta = residual.n_params if residual is not None else 0
        self._cache: dict[tuple[float, ...], WeightedProducts] = {}
        self._solvers: dict[tuple[float, ...], object] = {}
        self.w_rows = self.w_cols = self.zz = None
        self.sparse_X = None
        if residual is not None:
            w_pattern = residual.shared_pattern()
            self.w_rows = w_pattern.indices
            self.w_cols = np.repeat(np.arange(w_pattern.shape[1]), np.diff(w_pattern.indptr))
            # indicator columns (a fixed factor with many levels) make X mostly zeros: multiply it sparsely
            self.sparse_X = sparse_X if sparse_X is not None else sparse_if_mostly_zero(X)
            if Z.shape[1]:  # the map finds the structural pattern of Z'WZ from the products it enumerates
                self.zz = BilinearMap(Z, Z, self.w_rows, self.w_cols, "pattern")
                self.ztwz_pattern = _pattern_from_keys(self.zz.out_keys, Z.shape[1])
            if self.sparse_X is not None:
                self.zx = BilinearMap(Z, self.sparse_X, self.w_rows, self.w_cols) if Z.shape[1] else None
                self.xx = BilinearMap(self.sparse_X, self.sparse_X, self.w_rows, self.w_cols)
        elif Z.shape[1]:
            zp = pattern_of(Z)
            pat = (zp.T @ zp).tocsc()
            pat.sort_indices()
            self.ztwz_pattern = pattern_of(pat)
        if not Z.shape[1]:
            self.ztwz_pattern = sp.csc_matrix((0, 0))
        self._keys = pattern_keys(self.ztwz_pattern)
        self.pattern_keys = self._keys  # keys of the Z'WZ pattern (for values read off other matrices)
        self._sparse_Xt = self.sparse_X.T.tocsr() if self.sparse_X is not None else None

    def fixed_design(self):
        """``(X, X')`` for products with the fixed-effect design: sparse (``X'`` stored once) when X is mostly
        zeros and there is a residual structure, else dense."""
        if self.sparse_X is not None:
            return self.sparse_X, self._sparse_Xt
        return self.X, self.X.T

    CACHE_SIZE = 6  # the iterate, its finite-difference neighbours and a line-search trial

    def at(self, eta: np.ndarray) -> WeightedProducts:
        """Products at ``eta`` (the last few values are cached)."""
        key = tuple(float(e) for e in np.asarray(eta, dtype=float))
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        y, X, Z = self.y, self.X, self.Z
        if self.residual is None:
            prod = WeightedProducts(eta=key, W=None, logdet_r=0.0,
                                    ZtWZ=scatter(Z.T @ Z, self.ztwz_pattern, self._keys),
                                    ZtWX=np.asarray(Z.T @ X), XtWX=X.T @ X, ZtWy=np.asarray(Z.T @ y).ravel(),
                                    XtWy=X.T @ y)
        else:
            w, logdet_r = self.residual.precision_values(np.asarray(key))
            W = self.residual.on_pattern(w)
            if self.zz is not None:
                ZtWZ = self.ztwz_pattern.copy()
                ZtWZ.data = self.zz(w)
            else:  # no random effects: the empty pattern itself
                ZtWZ = self.ztwz_pattern
            if self.sparse_X is not None:
                ZtWX = self.zx(w) if self.zx is not None else np.zeros((0, X.shape[1]))
                XtWX = self.xx(w)
            else:
                WX = W @ X
                ZtWX, XtWX = np.asarray(self._Zt @ WX), X.T @ WX
            Wy = W @ y
            prod = WeightedProducts(eta=key, W=W, logdet_r=float(logdet_r), ZtWZ=ZtWZ, ZtWX=ZtWX, XtWX=XtWX,
                                    ZtWy=np.asarray(self._Zt @ Wy).ravel(),
                                    XtWy=(self._sparse_Xt @ Wy) if self.sparse_X is not None else X.T @ Wy)
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
