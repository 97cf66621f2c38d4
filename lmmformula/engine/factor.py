"""Cholesky-type factorizations of the random-effect block of the MME, behind one interface.

``SparseFactor`` uses qdldl (LDL' with AMD ordering): the symbolic analysis is
done once, each later call only refactors numerically (``update``).
``DenseFactor`` uses LAPACK and is chosen when the block is small.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import qdldl
import scipy.linalg
import scipy.sparse as sp

from .selinv import dense_start, inverse_layout, takahashi, trailing_positions

__all__ = ["SparseFactor", "DenseFactor", "NotPositiveDefinite", "make_factor", "cholesky_solve"]


class NotPositiveDefinite(ArithmeticError):
    """The matrix handed to a factorization is not numerically positive definite."""


@dataclass(frozen=True)
class _UpperMask:
    """How to take the upper triangle of matrices with one pattern: the pattern (a copy, and the arrays themselves:
    a matrix sharing them, such as the equations' ``C_vv``, is recognised without comparing), the positions of its
    upper-triangle entries in CSC order and that triangle's index arrays."""

    indptr: np.ndarray
    indices: np.ndarray
    take: np.ndarray
    upper_indices: np.ndarray
    upper_indptr: np.ndarray
    shared_indptr: np.ndarray
    shared_indices: np.ndarray


class SparseFactor:
    """qdldl factorization of a symmetric positive definite matrix with a fixed pattern."""

    def __init__(self, A: sp.csc_matrix):
        self.n = A.shape[0]
        self._pattern = None
        self._solver = qdldl.Solver(self._upper(A), upper=True)
        self._factors = None
        self._layout = None  # the selected inverse's CSC layout (the factor's pattern never changes)
        self._dense_from = None

    def _upper(self, A: sp.csc_matrix) -> sp.csc_matrix:
        """The upper triangle of the symmetric ``A`` (qdldl reads only that), taken by a stored mask while
        ``A`` keeps its pattern: qdldl's own extraction costs more than the numeric refactorization of a
        small block."""
        if getattr(A, "format", None) != "csc":
            A = sp.csc_matrix(A)
        p = self._pattern
        same = p is not None and ((A.indptr is p.shared_indptr and A.indices is p.shared_indices)
                                  or (np.array_equal(p.indptr, A.indptr) and np.array_equal(p.indices, A.indices)))
        if not same:
            cols = np.repeat(np.arange(A.shape[1]), np.diff(A.indptr))
            keep = A.indices <= cols
            order = np.lexsort((A.indices[keep], cols[keep]))  # CSC order, rows sorted within each column
            take = np.flatnonzero(keep)[order]
            indptr = np.concatenate([[0], np.cumsum(np.bincount(cols[keep], minlength=A.shape[1]))])
            indptr = indptr.astype(A.indices.dtype)  # one index type: scipy then takes the arrays as they are
            p = self._pattern = _UpperMask(indptr=A.indptr.copy(), indices=A.indices.copy(), take=take,
                                           upper_indices=A.indices[take].copy(), upper_indptr=indptr,
                                           shared_indptr=A.indptr, shared_indices=A.indices)
        return sp.csc_matrix((A.data[p.take], p.upper_indices, p.upper_indptr), shape=A.shape)

    def refactor(self, A: sp.csc_matrix) -> None:
        """New values, same pattern: numeric refactorization only."""
        self._solver.update(self._upper(A), upper=True)
        self._factors = None

    def _get(self):
        if self._factors is None:
            L, d, p = self._solver.factors()
            if not np.all(d > 0):
                raise NotPositiveDefinite("matrix is not positive definite")
            self._factors = (L, d, p)
        return self._factors

    @property
    def nnz(self) -> int:
        """Stored entries of the factor (strict lower triangle of L plus the diagonal)."""
        return int(self._get()[0].nnz) + self.n

    def logdet(self) -> float:
        """log-determinant, sum of log d."""
        return float(np.sum(np.log(self._get()[1])))

    def solve(self, b: np.ndarray) -> np.ndarray:
        """Solve ``A x = b`` for a vector or each column of a matrix."""
        b = np.asarray(b, dtype=float)
        if b.ndim == 1:
            return self._solver.solve(b)
        out = np.empty_like(b)
        for j in range(b.shape[1]):
            out[:, j] = self._solver.solve(np.ascontiguousarray(b[:, j]))
        return out

    def selected_inverse(self) -> sp.csc_matrix:
        """``A^{-1}`` on the pattern of the factor (Takahashi), original ordering."""
        L, d, p = self._get()
        if self._layout is None or self._layout_key[0] != L.nnz or not np.array_equal(self._layout_key[1], L.indptr):
            self._layout = inverse_layout(L, p)
            self._layout_key = (L.nnz, L.indptr.copy())
            self._dense_from = dense_start(L)
            self._trailing = trailing_positions(L, self._dense_from)
            self._index64 = (L.indptr.astype(np.int64), L.indices.astype(np.int64),
                             int(np.diff(L.indptr).max(initial=0)))
        return takahashi(L, d, p, dense_from=self._dense_from, layout=self._layout, trailing=self._trailing,
                         index64=self._index64)


def cholesky_solve(chol: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Solve ``L L' x = b`` with the lower Cholesky factor ``L`` from LAPACK ``potrf`` (``potrs`` called
    directly: no argument checks, for the small solves repeated in every iteration)."""
    x, _ = scipy.linalg.lapack.dpotrs(chol, b, lower=True)
    return x


class DenseFactor:
    """LAPACK Cholesky for small matrices; the 'selected' inverse is the full inverse."""

    def __init__(self, A: sp.spmatrix | np.ndarray):
        self.n = A.shape[0]
        self.refactor(A)

    def refactor(self, A) -> None:
        dense = A.toarray() if sp.issparse(A) else np.asarray(A, dtype=float)
        if self.n == 0:  # no random effects: an empty block
            self._cho = (dense, True)
            return
        try:
            self._cho = scipy.linalg.cho_factor(dense, lower=True, check_finite=True)
        except (np.linalg.LinAlgError, ValueError):
            raise NotPositiveDefinite("matrix is not positive definite") from None

    @property
    def nnz(self) -> int:
        """Entries of the dense lower triangle."""
        return self.n * (self.n + 1) // 2

    def logdet(self) -> float:
        return float(2.0 * np.sum(np.log(np.diag(self._cho[0]))))

    def solve(self, b: np.ndarray) -> np.ndarray:
        return cholesky_solve(self._cho[0], np.asarray(b, dtype=float)) if self.n else np.zeros(np.shape(b))

    def selected_inverse(self) -> np.ndarray:
        """The full inverse from the Cholesky factor (LAPACK ``potri``), symmetrised."""
        if self.n == 0:
            return np.zeros((0, 0))
        inv, info = scipy.linalg.lapack.dpotri(self._cho[0], lower=True)
        if info != 0:
            raise NotPositiveDefinite("matrix is not positive definite")
        inv = np.tril(inv)
        return inv + np.tril(inv, -1).T


DENSE_FILL = 0.25    # a sparse factor with more than this fraction of the lower triangle filled goes dense
DENSE_MAX = 6000     # ... when the dense matrix has at most this many columns (288 MB)
DENSE_DIRECT_MAX = 2500        # up to this size (a dense Cholesky costs at most ~5 GFlop) ...
DENSE_DIRECT_DEGREE = 20       # ... a block with more than 20 off-diagonal entries per column goes dense without a
#                                sparse trial (2000 genotypes on a 100 x 100 AR1 x AR1 field: 39 per column and
#                                a factor 60% full; 532 genotypes of an early-generation trial: 7 per column,
#                                2.6% full, and the sparse path is 8x faster than LAPACK there)


def make_factor(A: sp.csc_matrix, dense_below: int = 400):
    """Choose the dense path for small blocks, the sparse one otherwise.

    A sparse factor that fills in (e.g. genotypes of a field trial linked through a correlated residual:
    every genotype shares neighbours with many others) is replaced by LAPACK's dense Cholesky, whose
    blocked kernels are far faster than a column-by-column sparse factor and selected inversion there.
    """
    n = A.shape[0]
    if n <= dense_below:
        return DenseFactor(A)
    if n <= DENSE_DIRECT_MAX and (A.nnz - n) > DENSE_DIRECT_DEGREE * n:
        return DenseFactor(A)  # a dense pattern at a size where LAPACK's cost is small anyway
    sparse = SparseFactor(A)
    if n <= DENSE_MAX:
        try:
            L = sparse._get()[0]
        except NotPositiveDefinite:
            return sparse
        if L.nnz > DENSE_FILL * n * (n - 1) / 2:
            return DenseFactor(A)
    return sparse
