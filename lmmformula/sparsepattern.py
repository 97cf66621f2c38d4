"""Fixed sparsity patterns: matrices whose values change while the positions of their entries do not.

The mixed model equations, the residual precision and their derivatives keep one structural pattern for every
value of the covariance parameters, so their values are stored as vectors aligned with that pattern (CSC order,
sorted row indices) and sparse matrices are only wrapped around them where a product needs one.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["PatternError", "pattern_of", "pattern_keys", "values_on", "scatter", "sparse_if_mostly_zero"]

MOSTLY_ZERO = 0.2  # a dense matrix with fewer non-zero entries than this fraction is multiplied sparsely


class PatternError(Exception):
    """A matrix has an entry outside its fixed pattern: a bug, never an inadmissible parameter value (so it
    is deliberately not an ArithmeticError or RuntimeError, which the optimizer treats as 'try a shorter
    step')."""


def pattern_of(M: sp.spmatrix) -> sp.csc_matrix:
    """Structural pattern of ``M`` (ones where M stores an entry, explicit zeros included)."""
    P = sp.csc_matrix(M, copy=True)
    P.data = np.ones_like(P.data)
    return P


def pattern_keys(M: sp.csc_matrix) -> np.ndarray:
    """Sorted linear keys ``col * nrows + row`` of a CSC matrix with sorted indices."""
    cols = np.repeat(np.arange(M.shape[1], dtype=np.int64), np.diff(M.indptr))
    return cols * M.shape[0] + M.indices.astype(np.int64)


def values_on(M: sp.spmatrix, keys: np.ndarray, *, strict: bool = True) -> np.ndarray:
    """Values of ``M`` at the positions ``keys`` (from :func:`pattern_keys`), zero where M stores nothing.

    With ``strict``, an entry of ``M`` outside ``keys`` that is not negligible (relative 1e-12) is an error.
    """
    M = sp.csc_matrix(M, copy=True)  # the caller's matrix is not sorted in place
    M.sum_duplicates()
    M.sort_indices()
    mkeys = pattern_keys(M)
    pos = np.minimum(np.searchsorted(keys, mkeys), max(keys.size - 1, 0))
    hit = keys[pos] == mkeys if keys.size else np.zeros(mkeys.size, dtype=bool)
    if strict and not hit.all():
        stray = np.abs(M.data[~hit]).max()
        if stray > 1e-12 * max(float(np.abs(M.data).max()), 1e-300):
            raise PatternError("a matrix has an entry outside its fixed sparsity pattern")
    out = np.zeros(keys.size)
    out[pos[hit]] = M.data[hit]
    return out


def scatter(M: sp.spmatrix, pattern: sp.csc_matrix, keys: np.ndarray) -> sp.csc_matrix:
    """Values of ``M`` placed on the fixed ``pattern`` (entries of M outside it must be absent)."""
    out = pattern.copy()
    out.data = values_on(M, keys)
    return out


def sparse_if_mostly_zero(X: np.ndarray) -> sp.csc_matrix | None:
    """``X`` as a CSC matrix when under :data:`MOSTLY_ZERO` of its entries are non-zero (indicator columns of a
    factor with many levels), else None."""
    n, p = X.shape
    flat = np.flatnonzero(X)  # row-major positions: CSR order
    if flat.size >= MOSTLY_ZERO * max(X.size, 1):
        return None
    rows, cols = np.divmod(flat, p)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
    return sp.csr_matrix((X.ravel()[flat], cols, indptr), shape=(n, p)).tocsc()
