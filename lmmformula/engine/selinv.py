"""Selected inversion of a sparse LDL' factorization (Takahashi's recursion), compiled with numba.

For ``A = L D L'`` with ``L`` unit lower triangular, ``Z = A^{-1}`` satisfies
``Z = D^{-1} L^{-1} + (I - L') Z``; reading it column by column from the last
one gives, for every ``i > j`` in the pattern of column ``j`` of ``L``,

    Z[i, j] = - sum_{k in struct(L[:, j])} L[k, j] Z[i, k]
    Z[j, j] = 1 / d[j] - sum_{k in struct(L[:, j])} L[k, j] Z[k, j]

(Takahashi, Fagan & Chen 1973; Erisman & Tinney 1975).  Every ``Z[i, k]``
needed lies in the pattern of ``L + L'`` because that pattern is closed
under elimination, so only entries on the pattern are ever computed.

Fill-reducing orderings of crossed designs end in a nearly full block; there the recursion's binary searches
are far slower than a dense inverse.  The trailing block from column ``t`` on is therefore inverted by LAPACK:
``Z_tt`` is the inverse of the Schur complement ``(I + L_tt) D_tt (I + L_tt)'`` (``potri`` on
``(I + L_tt) D_tt^{1/2}``), and the recursion for the columns before ``t`` reads ``Z[i, k]`` there directly;
``t`` balances the two costs (:func:`dense_start`).
"""

from __future__ import annotations

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from numba import njit

__all__ = ["takahashi", "column_dots"]


@njit(cache=True)
def _find(indptr, indices, col, row):
    lo = indptr[col]
    hi = indptr[col + 1]
    while lo < hi:
        mid = (lo + hi) // 2
        v = indices[mid]
        if v == row:
            return mid
        if v < row:
            lo = mid + 1
        else:
            hi = mid
    return -1


@njit(cache=True)
def _takahashi_kernel(n, t, indptr, indices, lx, d, zx, zd, Zd, acc):
    """Columns ``j >= t`` are read from the dense inverse ``Zd`` of the trailing block; the others follow the
    recursion, reading ``Z[i, k]`` from ``Zd`` when both ``i, k >= t`` and by binary search otherwise.  Each
    ``Z[i, k]`` of a column's structure is looked up once and used for both ``zx[i]`` and ``zx[k]``
    (``acc``: scratch of the longest column's length)."""
    missing = 0
    for j in range(n - 1, -1, -1):
        start = indptr[j]
        stop = indptr[j + 1]
        if j >= t:
            for a in range(start, stop):
                zx[a] = Zd[indices[a] - t, j - t]
            zd[j] = Zd[j - t, j - t]
            continue
        m = stop - start
        for a in range(m):
            acc[a] = 0.0
        for a in range(m):
            i = indices[start + a]
            la = lx[start + a]
            acc[a] += lx[start + a] * zd[i]
            # the rows k > i of this column lie in column i's structure (closure), both sorted: one merge walk
            pos = indptr[i]
            end = indptr[i + 1]
            for b in range(a + 1, m):
                k = indices[start + b]
                if i >= t and k >= t:
                    z = Zd[i - t, k - t]
                else:
                    while pos < end and indices[pos] < k:
                        pos += 1
                    if pos < end and indices[pos] == k:
                        z = zx[pos]
                    else:
                        missing += 1
                        z = 0.0
                acc[a] += lx[start + b] * z
                acc[b] += la * z
        total = 0.0
        for a in range(m):
            zx[start + a] = -acc[a]
            total += lx[start + a] * zx[start + a]
        zd[j] = 1.0 / d[j] - total
    return missing


SPARSE_STEP_COST = 2e-8    # seconds per (i, k) pair of the simplicial recursion (binary search), measured
DENSE_FLOP_COST = 4e-10    # seconds per flop of LAPACK potrf/potri on one thread, measured
DENSE_BLOCK_MAX = 6000     # a trailing dense block holds at most this many columns (288 MB)


def dense_start(L: sp.csc_matrix) -> int:
    """Where the trailing block that is cheaper to invert densely starts (``n`` for none).

    AMD orderings of crossed designs end in a nearly full block; there the recursion's binary searches cost far
    more than LAPACK's dense inverse.  The split minimises ``SPARSE_STEP_COST * sum_{j<t} nnz_j^2 +
    DENSE_FLOP_COST * (n - t)^3``.
    """
    n = L.shape[0]
    counts = np.diff(L.indptr).astype(float)
    sparse_cost = SPARSE_STEP_COST * np.concatenate([[0.0], np.cumsum(counts**2)])   # cost of columns < t
    t = np.arange(n + 1)
    cost = sparse_cost + DENSE_FLOP_COST * (n - t).astype(float) ** 3
    cost[n - t > DENSE_BLOCK_MAX] = np.inf
    return int(np.argmin(cost))


def _dense_trailing_inverse(L: sp.csc_matrix, d: np.ndarray, t: int, where=None) -> np.ndarray:
    """Inverse of the trailing Schur complement ``(I + L_tt) D_tt (I + L_tt)'`` by LAPACK (``potri``).

    ``where``: positions in ``L.data`` of the trailing block's entries and their (row, col) in it (from
    :func:`trailing_positions`; computed when not given)."""
    m = L.shape[0] - t
    if m == 0:
        return np.zeros((0, 0))
    pos, rows, cols = trailing_positions(L, t) if where is None else where
    block = np.eye(m)
    block[rows, cols] = L.data[pos]
    chol = block * np.sqrt(d[t:])[None, :]
    inv, info = scipy.linalg.lapack.dpotri(chol, lower=True, overwrite_c=True)
    if info != 0:
        raise RuntimeError("selected inversion: the trailing block is singular")
    inv = np.tril(inv)
    return inv + np.tril(inv, -1).T


def trailing_positions(L: sp.csc_matrix, t: int):
    """Positions in ``L.data`` of the entries of the block ``L[t:, t:]`` and their (row, col) within it."""
    cols = np.repeat(np.arange(L.shape[0]), np.diff(L.indptr))
    pos = np.flatnonzero((cols >= t) & (L.indices >= t))
    return pos, L.indices[pos] - t, cols[pos] - t


def takahashi(L: sp.csc_matrix, d: np.ndarray, perm: np.ndarray, dense_from: int | None = None,
              layout=None, trailing=None, index64=None) -> sp.csc_matrix:
    """Entries of ``A^{-1}`` on the pattern of ``L + L'``, in the original ordering.

    Parameters
    ----------
    L : scipy.sparse.csc_matrix
        Strictly lower triangular factor of the permuted matrix (unit diagonal implied).
    d : ndarray
        Diagonal of ``D``.
    perm : ndarray of int
        ``A[perm][:, perm] = (I + L) D (I + L)'``.
    dense_from : int, optional
        First column of the trailing block inverted densely (default :func:`dense_start`; ``n`` for none).
    layout : tuple, optional
        :func:`inverse_layout` of this factor pattern (computed when not given).
    trailing : tuple, optional
        :func:`trailing_positions` of this factor pattern and ``dense_from``.
    index64 : tuple, optional
        ``L.indptr`` and ``L.indices`` as int64 and the longest column's length (fixed for a fixed pattern).

    Returns
    -------
    scipy.sparse.csc_matrix
        Symmetric matrix holding ``A^{-1}`` on the pattern of ``P (L + L' + I) P'``.
    """
    L = L.tocsc()
    L.sort_indices()
    n = L.shape[0]
    zx = np.zeros(L.nnz)
    zd = np.zeros(n)
    d = np.asarray(d, dtype=np.float64)
    t = dense_start(L) if dense_from is None else int(dense_from)
    Zd = np.ascontiguousarray(_dense_trailing_inverse(L, d, t, trailing))
    if index64 is None:
        index64 = (L.indptr.astype(np.int64), L.indices.astype(np.int64), int(np.diff(L.indptr).max(initial=0)))
    indptr64, indices64, longest = index64
    missing = _takahashi_kernel(n, t, indptr64, indices64, np.ascontiguousarray(L.data, dtype=np.float64), d,
                                zx, zd, Zd, np.empty(longest))
    if missing:
        raise RuntimeError("selected inversion: factor pattern is not closed under elimination")
    if layout is None:
        layout = inverse_layout(L, perm)
    indptr, indices, order = layout
    return sp.csc_matrix((np.concatenate([zx, zx, zd])[order], indices, indptr), shape=(n, n))


def inverse_layout(L: sp.csc_matrix, perm: np.ndarray):
    """CSC pattern of ``P (L + L' + I) P'`` in the original ordering and, for the values listed as
    ``[zx, zx, zd]`` (below the diagonal, above it, diagonal), their order in it: fixed for a fixed factor
    pattern, so a refactored matrix reuses it."""
    n = L.shape[0]
    cols = np.repeat(np.arange(n), np.diff(L.indptr))
    rows = L.indices
    p = np.asarray(perm)
    r = np.concatenate([p[rows], p[cols], p])
    c = np.concatenate([p[cols], p[rows], p])
    M = sp.csc_matrix((np.arange(r.size, dtype=float), (r, c)), shape=(n, n))
    M.sort_indices()
    return M.indptr.copy(), M.indices.copy(), M.data.astype(np.int64)


@njit(cache=True)
def _column_dots_kernel(sp_, si, sx, fp, fi, fx, xs, ys, out):
    missing = 0
    for t in range(xs.shape[0]):
        x = xs[t]
        y = ys[t]
        a = sp_[x]
        a_end = sp_[x + 1]
        acc = 0.0
        for b in range(fp[y], fp[y + 1]):
            row = fi[b]
            while a < a_end and si[a] < row:
                a += 1
            if a < a_end and si[a] == row:
                acc += sx[a] * fx[b]
            elif fx[b] != 0.0:
                missing += 1
        out[t] = acc
    return missing


def _as_slice(idx: np.ndarray):
    """A slice (a view, no copy) when ``idx`` is an evenly spaced increasing range, else ``idx``."""
    if idx.size > 1:
        step = idx[1] - idx[0]
        if step > 0 and np.all(np.diff(idx) == step):
            return slice(int(idx[0]), int(idx[-1]) + 1, int(step))
    return idx


def column_dots(S: sp.csc_matrix | np.ndarray, F: sp.csc_matrix, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """``out[t] = sum_c S[c, xs[t]] * F[c, ys[t]]`` using only the stored pattern of ``S``.

    ``S`` is a selected inverse (sparse) or a full inverse (dense).  The pattern
    of ``F[:, y]`` must lie inside the pattern of ``S[:, x]``.
    """
    xs = np.asarray(xs, dtype=np.int64)
    ys = np.asarray(ys, dtype=np.int64)
    if not sp.issparse(S):
        Fd = F[:, _as_slice(ys)]
        Fd = Fd.toarray() if sp.issparse(Fd) else Fd
        return np.einsum("ct,ct->t", S[:, _as_slice(xs)], Fd)
    F = F.tocsc()
    F.sort_indices()
    out = np.zeros(xs.shape[0])
    missing = _column_dots_kernel(S.indptr.astype(np.int64), S.indices.astype(np.int64), S.data,
                                  F.indptr.astype(np.int64), F.indices.astype(np.int64), F.data, xs, ys, out)
    if missing:
        raise RuntimeError("selected inverse does not cover the pattern needed for a trace")
    return out
