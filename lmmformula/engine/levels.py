"""Covariance among the levels of each grouping: ``K~ = blockdiag(K_k (x) I_m)``, known or parameterised.

A plain grouping has ``K_k = I``; ``vm(g, "A")`` a known ``K_k`` held through its precision; a structured
grouping such as ``(1 | ar1(row):ar1(col))`` has ``K_k(kappa)`` = the Kronecker product of its dimensions'
correlations on the full grid of cells, whose sparse precision (``Q_row (x) Q_col``, tridiagonal factors) and
log-determinant come from :class:`~lmmformula.covariance.residual.ResidualStructure`.  Cells without
observations keep their effects: integrating them out is exact, and their BLUPs are the field's predictions.

The engine needs ``K~^-1`` (added to the random block of the MME), ``log|K~|`` (in the objective), ``K~ x``
(working variates) and ``dK~^-1/dkappa`` (a Kronecker product with one differentiated dimension).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from ..sparsepattern import pattern_of
from .factor import make_factor

__all__ = ["LevelPrecision", "LevelState"]


@dataclass
class LevelState:
    """``K~^-1`` and ``log|K~|`` at one value of kappa; the factorization for ``K~ x`` is made on demand."""

    kinv: sp.csc_matrix
    logdet: float
    dense_below: int
    _solver: object = field(default=None, repr=False)

    def times(self, x: np.ndarray) -> np.ndarray:
        """``K~ x`` by a solve with ``K~^-1``."""
        if self._solver is None:
            self._solver = make_factor(self.kinv, self.dense_below)
        return self._solver.solve(x)


class LevelPrecision:
    """``K~^-1(kappa)`` for a model's random terms.

    Parameters
    ----------
    blocks : sequence of RandomBlock
    ms : sequence of int
        Number of effects per level of each block.
    dense_below : int
    """

    CACHE_SIZE = 6

    def __init__(self, blocks, ms, dense_below: int = 400):
        self.blocks = tuple(blocks)
        self.ms = tuple(ms)
        self.dense_below = dense_below
        sizes = [b.grid.n_params if b.grid is not None else 0 for b in self.blocks]
        self.offsets = np.cumsum([0] + sizes)
        self.n_params = int(self.offsets[-1])
        self.identity = all(b.known is None and b.grid is None for b in self.blocks)
        self._cache: dict[tuple[float, ...], LevelState] = {}

    def bounds(self) -> np.ndarray:
        rows = [b.grid.eta_bounds() for b in self.blocks if b.grid is not None]
        return np.concatenate(rows) if rows else np.zeros((0, 2))

    def initial(self) -> np.ndarray:
        return np.concatenate([np.zeros(0)] + [b.grid.initial_eta() for b in self.blocks if b.grid is not None])

    def block_kappa(self, kappa: np.ndarray, k: int) -> np.ndarray:
        return np.asarray(kappa, dtype=float)[self.offsets[k]:self.offsets[k + 1]]

    def block_precision(self, k: int, kappa: np.ndarray) -> tuple[sp.csc_matrix | None, float]:
        """``K_k^-1`` (None for the identity) and ``log|K_k|``."""
        blk = self.blocks[k]
        if blk.known is not None:
            return blk.known.precision, blk.known.logdet
        if blk.grid is not None:
            W, logdet_w = blk.grid.full_precision(self.block_kappa(kappa, k))
            return W, -logdet_w
        return None, 0.0

    def at(self, kappa: np.ndarray) -> LevelState:
        """``K~^-1`` and ``log|K~|`` at ``kappa`` (the last few values are cached)."""
        key = tuple(float(x) for x in np.asarray(kappa, dtype=float))
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        parts, logdet = [], 0.0
        for k, (blk, m) in enumerate(zip(self.blocks, self.ms)):
            P, ld = self.block_precision(k, np.asarray(key))
            parts.append(sp.identity(blk.n_levels * m, format="csc") if P is None
                         else sp.kron(P, sp.identity(m), format="csc"))
            logdet += m * ld
        kinv = sp.block_diag(parts, format="csc") if parts else sp.csc_matrix((0, 0))
        kinv.sort_indices()
        state = LevelState(kinv=kinv, logdet=logdet, dense_below=self.dense_below)
        if len(self._cache) >= self.CACHE_SIZE:
            self._cache.pop(next(iter(self._cache)))
        self._cache[key] = state
        return state

    def times(self, kappa: np.ndarray, x: np.ndarray) -> np.ndarray:
        """``K~ x`` (``x`` itself when every grouping is plain)."""
        return x if self.identity else self.at(kappa).times(x)

    def pattern(self) -> sp.csc_matrix:
        """Pattern of ``K~^-1`` widened to full ``m x m`` blocks: the EM step and the PEV need the inverse
        of the MME at (level l, effect a) x (level l', effect b) wherever ``K^-1[l, l'] != 0``."""
        if self.identity and all(m == 1 for m in self.ms):
            return sp.identity(sum(blk.n_levels for blk in self.blocks), format="csc")
        parts = []
        for blk, m in zip(self.blocks, self.ms):
            if blk.known is not None:
                base = pattern_of(blk.known.precision)
            elif blk.grid is not None:
                base = pattern_of(blk.grid.full_precision(blk.grid.generic_eta())[0])
            else:
                base = sp.identity(blk.n_levels)
            parts.append(sp.kron(base, np.ones((m, m)), format="csc"))
        return pattern_of(sp.block_diag(parts, format="csc")) if parts else sp.csc_matrix((0, 0))

    def log_det_derivative(self, kappa: np.ndarray, j: int) -> float:
        """``d log|K~| / d kappa_j = m_k d log|K_k| / d kappa_j``."""
        k = int(np.searchsorted(self.offsets, j, side="right") - 1)
        return self.ms[k] * self.blocks[k].grid.log_det_derivative(self.block_kappa(kappa, k), j - self.offsets[k])

    def derivative(self, kappa: np.ndarray, j: int) -> sp.csc_matrix:
        """``dK~^-1 / dkappa_j``: the grouping's full-grid precision differentiated in one dimension
        (a Kronecker product), placed in its block; zero elsewhere."""
        k = int(np.searchsorted(self.offsets, j, side="right") - 1)
        grid = self.blocks[k].grid
        D = sp.kron(grid.full_precision_derivative(self.block_kappa(kappa, k), j - self.offsets[k]),
                    sp.identity(self.ms[k]), format="csc")
        parts = [D if i == k else sp.csc_matrix((b.n_levels * m, b.n_levels * m))
                 for i, (b, m) in enumerate(zip(self.blocks, self.ms))]
        return sp.block_diag(parts, format="csc")
