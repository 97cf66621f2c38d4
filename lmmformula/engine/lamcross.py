"""``Lam' M Lam`` on a fixed pattern as a gather and a sum, without sparse matrix products.

Both ``Lam`` (values from the vector of factor elements) and ``M = Z'WZ`` (values on its fixed pattern) keep
their patterns, so every entry of ``Lam' M Lam`` is a fixed sum of products
``Lam[a, i] M[a, b] Lam[b, j]`` over the stored entries ``(a, b)`` of ``M``.  The triplets are listed once;
each evaluation is then three gathers, a product and one ``bincount``, which for small models costs a few
microseconds where a chain of scipy.sparse products costs a millisecond of format checks.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["LamCrossMap", "MAX_TRIPLETS"]

MAX_TRIPLETS = 2_000_000  # beyond this, sparse products are cheaper in memory (and their overhead is negligible)


class LamCrossMap:
    """Values of ``Lam' M Lam`` at the stored positions of a target pattern.

    Parameters
    ----------
    lam_pattern : csc_matrix
        Pattern of ``Lam`` (``q x q``) in CSC order; ``lam_values`` passed later follow this order.
    m_pattern : csc_matrix
        Pattern of ``M`` with sorted indices; ``m_values`` follow its CSC order.
    target_keys : ndarray
        Sorted linear keys (``col * q + row``) of the target pattern, which must contain every product.
    """

    def __init__(self, lam_pattern: sp.csc_matrix, m_pattern: sp.csc_matrix, target_keys: np.ndarray):
        q = lam_pattern.shape[0]
        # rows of Lam: for row a, the columns i with Lam[a, i] stored and their positions in Lam's CSC order
        lam_pos = sp.csc_matrix((np.arange(lam_pattern.nnz, dtype=float) + 1, lam_pattern.indices,
                                 lam_pattern.indptr), shape=lam_pattern.shape).tocsr()
        lam_pos.sort_indices()
        row_ptr, row_col = lam_pos.indptr, lam_pos.indices
        row_val = lam_pos.data.astype(np.int64) - 1
        counts = np.diff(row_ptr)
        m_rows = m_pattern.indices.astype(np.int64)
        m_cols = np.repeat(np.arange(m_pattern.shape[1], dtype=np.int64), np.diff(m_pattern.indptr))
        per = counts[m_rows] * counts[m_cols]
        self.n_triplets = int(per.sum())
        self.size = target_keys.size
        if self.n_triplets > MAX_TRIPLETS:
            self.usable = False
            return
        self.usable = True
        t = np.repeat(np.arange(m_rows.size), per)            # the M entry of each triplet
        within = np.arange(self.n_triplets) - np.repeat(np.cumsum(per) - per, per)
        cb = counts[m_cols][t]
        ia = within // cb                                     # which stored entry of row a
        ib = within % cb                                      # which stored entry of row b
        ea = row_ptr[m_rows[t]] + ia
        eb = row_ptr[m_cols[t]] + ib
        keys = row_col[eb].astype(np.int64) * q + row_col[ea].astype(np.int64)
        pos = np.searchsorted(target_keys, keys)
        if np.any(pos >= target_keys.size) or np.any(target_keys[np.minimum(pos, target_keys.size - 1)] != keys):
            raise ValueError("the target pattern does not contain Lam' M Lam")
        self._m, self._a, self._b, self._pos = t, row_val[ea], row_val[eb], pos

        self.m_size = m_pattern.nnz

    def __call__(self, lam_values: np.ndarray, m_values: np.ndarray) -> np.ndarray:
        """Values of ``Lam' M Lam`` on the target pattern (zeros where no triplet lands)."""
        w = m_values[self._m] * lam_values[self._a] * lam_values[self._b]
        return np.bincount(self._pos, weights=w, minlength=self.size)

    def adjoint(self, lam_values: np.ndarray, s_values: np.ndarray) -> np.ndarray:
        """``Lam S Lam'`` on the pattern of ``M``, for a symmetric ``S`` given on the target pattern: the
        adjoint of the map, ``tr(S Lam' dM Lam) = adjoint(S) . dm``."""
        w = s_values[self._pos] * lam_values[self._a] * lam_values[self._b]
        return np.bincount(self._m, weights=w, minlength=self.m_size)

    def element_traces(self, lam_values: np.ndarray, m_values: np.ndarray, s_values: np.ndarray,
                       element_index: np.ndarray, n_elements: int) -> np.ndarray:
        """``tr(S Lam' M dLam/de)`` for every element ``e`` that the entries of ``Lam`` take their values from
        (``element_index``, one per stored entry of ``Lam``), for symmetric ``M`` and ``S`` (``S`` on the
        target pattern): half the derivative of ``tr(S Lam' M Lam) = sum S[pos] Lam[a] M[t] Lam[b]``, whose
        two halves are equal by symmetry."""
        w = s_values[self._pos] * m_values[self._m] * lam_values[self._b]
        return np.bincount(element_index[self._a], weights=w, minlength=n_elements)
