"""Unobserved cells of a residual grid: the observed cells' precision as Schur complements, group by group.

With ``W`` the full-grid precision and ``g`` the connected groups of unobserved cells (``W_mm`` is block
diagonal over them), the precision of the observed cells and its log-determinant are

    R~_oo^-1 = W_oo - sum_g B_g A_g^-1 B_g',     A_g = W_gg,  B_g = W_og,
    log|R~_oo| = sum_g log|A_g| - log|W|,

and their derivatives in a parameter (one differentiated factor ``dW``)

    dR~_oo^-1 = dW_oo - sum_g (dB_g M_g + M_g' dB_g' - M_g' dA_g M_g),   M_g = A_g^-1 B_g',
    d log|R~_oo| = sum_g tr(A_g^-1 dA_g) - d log|W|.

A group touches only its observed neighbours, so each update is a small dense block.  The entries of every
group's ``A_g`` and ``B_g`` are products of per-dimension factors gathered in one pass for all groups
(:class:`SchurPlan`); the small dense algebra of all groups runs in one compiled loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from numba import njit

__all__ = ["MissingPlan", "missing_plan", "SchurPlan"]


@dataclass(frozen=True)
class MissingPlan:
    missing: np.ndarray                 # unobserved cells
    components: tuple[np.ndarray, ...]  # positions in `missing` of each connected group
    neighbours: tuple[np.ndarray, ...]  # observation indices adjacent to each group


def missing_plan(full_precision, cells: np.ndarray, n_cells: int) -> MissingPlan:
    """Connected groups of unobserved cells in the graph of the (symmetric, CSC) full-grid precision, and their
    neighbours."""
    from scipy.sparse.csgraph import connected_components

    W = full_precision.tocsc()
    missing = np.setdiff1d(np.arange(n_cells), cells)
    observation = np.full(n_cells, -1, dtype=np.int64)  # the observation in each cell (-1: unobserved)
    observation[cells] = np.arange(cells.size)
    missing_index = np.full(n_cells, -1, dtype=np.int64)
    missing_index[missing] = np.arange(missing.size)
    # the stored entries of the missing cells' columns: by symmetry, each one's neighbours
    start, counts = W.indptr[missing], np.diff(W.indptr)[missing]
    owner = np.repeat(np.arange(missing.size), counts)
    neighbour = W.indices[np.repeat(start - (np.cumsum(counts) - counts), counts) + np.arange(int(counts.sum()))]
    between = missing_index[neighbour] >= 0
    adjacency = sp.csr_matrix((np.ones(int(between.sum())), (owner[between], missing_index[neighbour[between]])),
                              shape=(missing.size, missing.size))
    n_comp, label = connected_components(adjacency, directed=False)
    order = np.argsort(label, kind="stable")
    bounds = np.searchsorted(label[order], np.arange(n_comp + 1))
    comps = [order[bounds[c]:bounds[c + 1]] for c in range(n_comp)]
    # each group's observed neighbours (none: the group only contributes to log|W_mm|), sorted
    seen = observation[neighbour]
    pairs = np.unique(label[owner][seen >= 0].astype(np.int64) * cells.size + seen[seen >= 0])
    group, obs = np.divmod(pairs, cells.size)
    cut = np.searchsorted(group, np.arange(n_comp + 1))
    nbs = [obs[cut[c]:cut[c + 1]] for c in range(n_comp)]
    return MissingPlan(missing=missing, components=tuple(comps), neighbours=tuple(nbs))


SMALL_GROUP = 48  # groups of up to this many unobserved cells share one compiled loop; larger ones use LAPACK


class SchurPlan:
    """The groups of unobserved cells of a grid, ready for :meth:`values` and :meth:`derivatives`: the small ones
    (isolated missing plots) in one batch for the compiled loops, each large one (a missing block of a field) on
    its own for LAPACK, whose blocked kernels beat scalar loops there.

    Parameters
    ----------
    dimensions : sequence of ResidualDimension
    plan : MissingPlan
    pattern_keys : ndarray of int64
        Sorted CSC keys (``col * n + row``) of the observed-cell precision's pattern.
    n_obs : int
    """

    def __init__(self, dimensions, plan: MissingPlan, pattern_keys: np.ndarray, n_obs: int):
        groups = list(zip(plan.components, plan.neighbours))
        small = [g for g in groups if g[0].size <= SMALL_GROUP]
        args = (dimensions, plan.missing, pattern_keys, n_obs)
        self._small = _GroupBatch(small, *args) if small else None
        self._large = [_GroupBatch([g], *args) for g in groups if g[0].size > SMALL_GROUP]
        self.n_groups = len(groups)

    def values(self, Qs, vals: np.ndarray) -> float:
        """Subtract every group's ``B A^-1 B'`` from ``vals`` (the full-grid precision's entries on the observed
        pattern, changed in place) and return ``sum_g log|A_g|``.

        Raises
        ------
        numpy.linalg.LinAlgError
            When a group's block is not positive definite (outside the admissible region).
        """
        logdet = self._small.values_compiled(Qs, vals) if self._small is not None else 0.0
        return logdet + sum(batch.values_lapack(Qs, vals) for batch in self._large)

    def derivatives(self, Qs, dQs, dvals: np.ndarray) -> np.ndarray:
        """Subtract every group's ``dB M + M'dB' - M'dA M`` from each row of ``dvals`` (one per parameter, changed
        in place) and return ``sum_g tr(A_g^-1 dA_g)`` per parameter."""
        out = np.zeros(len(dQs))
        if self._small is not None:
            out += self._small.derivatives_compiled(Qs, dQs, dvals)
        for batch in self._large:
            out += batch.derivatives_lapack(Qs, dQs, dvals)
        return out


class _GroupBatch:
    """Where the listed groups' ``A_g`` (``a x a``, row-major) and ``B_g`` (neighbours x ``a``, row-major) entries
    sit in the per-dimension dense factors, concatenated over the groups, and where each group's update lands among
    the stored entries of the observed-cell precision (row-major over neighbour pairs)."""

    def __init__(self, groups, dimensions, missing: np.ndarray, pattern_keys: np.ndarray, n_obs: int):
        sizes = [d.size for d in dimensions]
        miss_pos = np.unravel_index(missing, sizes)
        a_rows, a_cols, b_rows, b_cols, where = [], [], [], [], []
        a_size, b_size = [], []
        for comp, nb in groups:
            a, k = comp.size, nb.size
            a_rows.append(np.repeat(comp, a))
            a_cols.append(np.tile(comp, a))
            b_rows.append(np.repeat(nb, a))          # neighbour (an observation index), then ...
            b_cols.append(np.tile(comp, k))          # ... the group's unobserved cell
            keys = np.tile(nb, k).astype(np.int64) * n_obs + np.repeat(nb, k)  # (row nb[i], col nb[j]), row-major
            where.append(np.searchsorted(pattern_keys, keys))
            a_size.append(a)
            b_size.append(k)
        cat = (lambda parts, dtype=np.int64: np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype))
        a_rows, a_cols, b_rows, b_cols = cat(a_rows), cat(a_cols), cat(b_rows), cat(b_cols)
        self.a_size, self.b_size = np.array(a_size, dtype=np.int64), np.array(b_size, dtype=np.int64)
        self.a_off = np.concatenate([[0], np.cumsum(self.a_size ** 2)]).astype(np.int64)
        self.b_off = np.concatenate([[0], np.cumsum(self.a_size * self.b_size)]).astype(np.int64)
        self.w_off = np.concatenate([[0], np.cumsum(self.b_size ** 2)]).astype(np.int64)
        self.where = cat(where)
        # per dimension: flat positions into the dense factor, or (identity) a fixed 0/1 mask
        self._a_index, self._b_index = [], []
        self._a_mask, self._b_mask = np.ones(a_rows.size), np.ones(b_rows.size)
        for d, mp in zip(dimensions, miss_pos):
            ar, ac = mp[a_rows], mp[a_cols]
            br, bc = d.positions[b_rows], mp[b_cols]
            if d.kind == "id":  # identity: entries vanish off the diagonal of this dimension
                self._a_mask = self._a_mask * (ar == ac)
                self._b_mask = self._b_mask * (br == bc)
                self._a_index.append(None)
                self._b_index.append(None)
            else:
                self._a_index.append(ar.astype(np.int64) * d.size + ac)
                self._b_index.append(br.astype(np.int64) * d.size + bc)

    def blocks(self, Qs) -> tuple[np.ndarray, np.ndarray]:
        """The groups' ``A_g`` and ``B_g`` entries (concatenated) from dense per-dimension factors (None for
        identities)."""
        A, B = self._a_mask, self._b_mask
        for Q, ai, bi in zip(Qs, self._a_index, self._b_index):
            if Q is not None:
                flat = Q.ravel()
                A = A * flat[ai]
                B = B * flat[bi]
        return A, B

    def _stacked(self, dQs, A, B):
        parts = [self.blocks(dQ) for dQ in dQs]
        dA = np.ascontiguousarray(np.array([p[0] for p in parts]).reshape(len(dQs), A.size))
        dB = np.ascontiguousarray(np.array([p[1] for p in parts]).reshape(len(dQs), B.size))
        return dA, dB

    def values_compiled(self, Qs, vals: np.ndarray) -> float:
        A, B = self.blocks(Qs)
        logdet = np.zeros(1)
        if not _values_kernel(A, B, self.a_size, self.b_size, self.a_off, self.b_off, self.w_off, self.where, vals,
                              logdet):
            raise np.linalg.LinAlgError("a block of unobserved cells is not positive definite")
        return float(logdet[0])

    def derivatives_compiled(self, Qs, dQs, dvals: np.ndarray) -> np.ndarray:
        A, B = self.blocks(Qs)
        dA, dB = self._stacked(dQs, A, B)
        dlogdet = np.zeros(len(dQs))
        if not _derivatives_kernel(A, B, dA, dB, self.a_size, self.b_size, self.a_off, self.b_off, self.w_off,
                                   self.where, dvals, dlogdet):
            raise np.linalg.LinAlgError("a block of unobserved cells is not positive definite")
        return dlogdet

    def _one(self, Qs):
        """The single group's ``A`` (``a x a``) and ``B`` (``k x a``)."""
        a, k = int(self.a_size[0]), int(self.b_size[0])
        A, B = self.blocks(Qs)
        return A.reshape(a, a), B.reshape(k, a)

    def values_lapack(self, Qs, vals: np.ndarray) -> float:
        A, B = self._one(Qs)
        chol = np.linalg.cholesky(A)  # raises LinAlgError outside the admissible region
        half = scipy.linalg.solve_triangular(chol, B.T, lower=True)
        vals[self.where] -= (half.T @ half).ravel()
        return 2.0 * float(np.log(np.diag(chol)).sum())

    def derivatives_lapack(self, Qs, dQs, dvals: np.ndarray) -> np.ndarray:
        A, B = self._one(Qs)
        a, k = A.shape[0], B.shape[0]
        chol = np.linalg.cholesky(A)
        A_inv = scipy.linalg.cho_solve((chol, True), np.eye(a))
        M = A_inv @ B.T
        out = np.zeros(len(dQs))
        for j, dQ in enumerate(dQs):
            dA, dB = self.blocks(dQ)
            dA, dB = dA.reshape(a, a), dB.reshape(k, a)
            dU = dB @ M
            dvals[j, self.where] -= (dU + dU.T - M.T @ dA @ M).ravel()
            out[j] = float(np.sum(A_inv * dA))
        return out


@njit(cache=True)
def _cholesky(A, L):
    """Lower Cholesky factor of ``A`` into ``L``; False when ``A`` is not positive definite."""
    n = A.shape[0]
    for j in range(n):
        s = A[j, j]
        for k in range(j):
            s -= L[j, k] * L[j, k]
        if not s > 0.0:
            return False
        L[j, j] = np.sqrt(s)
        for i in range(j + 1, n):
            t = A[i, j]
            for k in range(j):
                t -= L[i, k] * L[j, k]
            L[i, j] = t / L[j, j]
    return True


@njit(cache=True)
def _forward(L, B, H):
    """``H = L^-1 B'`` for lower-triangular ``L`` (``a x a``) and ``B`` (``k x a``)."""
    a = L.shape[0]
    for c in range(B.shape[0]):
        for i in range(a):
            t = B[c, i]
            for k in range(i):
                t -= L[i, k] * H[k, c]
            H[i, c] = t / L[i, i]


@njit(cache=True)
def _group(A_all, B_all, a, k, a_start, b_start):
    """One group's ``A`` (``a x a``), ``B`` (``k x a``), the Cholesky factor of ``A`` and whether it exists."""
    A = A_all[a_start:a_start + a * a].reshape((a, a))
    B = B_all[b_start:b_start + k * a].reshape((k, a))
    L = np.zeros((a, a))
    return A, B, L, _cholesky(A, L)


@njit(cache=True)
def _values_kernel(A_all, B_all, a_size, b_size, a_off, b_off, w_off, where, vals, logdet):
    for g in range(a_size.shape[0]):
        a, k = a_size[g], b_size[g]
        A, B, L, ok = _group(A_all, B_all, a, k, a_off[g], b_off[g])
        if not ok:
            return False
        for i in range(a):
            logdet[0] += 2.0 * np.log(L[i, i])
        H = np.zeros((a, k))
        _forward(L, B, H)
        for r in range(k):
            for c in range(k):
                s = 0.0
                for i in range(a):
                    s += H[i, r] * H[i, c]
                vals[where[w_off[g] + r * k + c]] -= s
    return True


@njit(cache=True)
def _derivatives_kernel(A_all, B_all, dA_all, dB_all, a_size, b_size, a_off, b_off, w_off, where, dvals, dlogdet):
    for g in range(a_size.shape[0]):
        a, k = a_size[g], b_size[g]
        A, B, L, ok = _group(A_all, B_all, a, k, a_off[g], b_off[g])
        if not ok:
            return False
        Linv = np.zeros((a, a))
        _forward(L, np.eye(a), Linv)
        A_inv = np.zeros((a, a))  # L^-T L^-1
        for r in range(a):
            for c in range(a):
                t = 0.0
                for i in range(max(r, c), a):
                    t += Linv[i, r] * Linv[i, c]
                A_inv[r, c] = t
        M = np.zeros((a, k))      # A^-1 B'
        for r in range(a):
            for c in range(k):
                t = 0.0
                for i in range(a):
                    t += A_inv[r, i] * B[c, i]
                M[r, c] = t
        dU = np.zeros((k, k))
        dAM = np.zeros((a, k))
        for j in range(dA_all.shape[0]):
            a0, b0 = a_off[g], b_off[g]
            for r in range(k):    # dU = dB M
                for c in range(k):
                    t = 0.0
                    for i in range(a):
                        t += dB_all[j, b0 + r * a + i] * M[i, c]
                    dU[r, c] = t
            for r in range(a):    # dA M
                for c in range(k):
                    t = 0.0
                    for i in range(a):
                        t += dA_all[j, a0 + r * a + i] * M[i, c]
                    dAM[r, c] = t
            for r in range(k):
                for c in range(k):
                    t = 0.0       # (M' dA M)[r, c]
                    for i in range(a):
                        t += M[i, r] * dAM[i, c]
                    dvals[j, where[w_off[g] + r * k + c]] -= dU[r, c] + dU[c, r] - t
            t = 0.0
            for r in range(a):
                for c in range(a):
                    t += A_inv[r, c] * dA_all[j, a0 + r * a + c]
            dlogdet[j] += t
    return True
