"""Correlation models on ``m`` consecutive positions: identity, AR1, compound symmetry, banded Toeplitz.

Each model is a small dense ``m x m`` matrix ``C(rho)`` with unit diagonal and its derivatives; the
same model serves the columns of a random term (``ar1(0 + time | subject)``) and a dimension of the
residual grid.  Parameters are correlations ``rho``; the engine estimates them on the unbounded scale
``eta = atanh(rho)`` within the bounds of :meth:`Correlation.rho_bounds`.

===========  ==========================================  ==============================
kind         ``C[i, j]``                                 parameters
===========  ==========================================  ==============================
``id``       ``1{i = j}``                                none
``ar1``      ``rho^|i - j|``                             rho
``cs``       ``rho`` off the diagonal                    rho, ``> -1/(m-1)``
``toep``     ``rho_k`` at lag ``k <= q``, 0 beyond       rho_1 ... rho_q
===========  ==========================================  ==============================

``toep(x)`` has ``q = m - 1`` bands; ``toep(x, q)`` and the seed's moving-average form ``ma(x, q)``
are the same banded matrix.  A banded matrix need not be positive definite for every ``rho`` in
``(-1, 1)^q``; such values are rejected by the factorization and the optimizer steps back.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

__all__ = ["Correlation", "RHO_MAX"]

RHO_MAX = 0.999  # correlations are kept within [-0.999, 0.999] (ASReml's bound); the limit is flagged


@dataclass(frozen=True)
class Correlation:
    """A correlation model on ``size`` consecutive positions.

    Attributes
    ----------
    kind : {"id", "ar1", "cs", "toep"}
    size : int
    bands : int
        Number of free bands of a Toeplitz model (ignored otherwise).
    positions : tuple of int, optional
        Grid position of each row/column (gaps allowed); ``0, 1, ..., size-1`` when omitted.
    """

    kind: str
    size: int
    bands: int = 0
    positions: tuple[int, ...] | None = None

    @property
    def n_params(self) -> int:
        return {"ar1": 1, "cs": 1, "toep": self.bands}.get(self.kind, 0)

    def names(self, label: str) -> tuple[str, ...]:
        """``rho(label)``; a Toeplitz model has ``rho<k>(label)`` for lag k."""
        if self.kind == "toep":
            return tuple(f"rho{k}({label})" for k in range(1, self.bands + 1))
        return (f"rho({label})",) if self.n_params else ()

    def rho_bounds(self) -> list[tuple[float, float]]:
        """``|rho| <= 0.999``; compound symmetry also needs ``rho > -1/(size-1)`` (positive definite)."""
        if self.kind == "cs":
            return [(max(-RHO_MAX, -1.0 / (self.size - 1) + 1e-3), RHO_MAX)]
        return [(-RHO_MAX, RHO_MAX)] * self.n_params

    def initial_rho(self, start: float = 0.1) -> np.ndarray:
        """``start`` for AR1 and CS, ``start^k`` at lag k for Toeplitz (AR1-shaped, hence positive definite)."""
        if self.kind == "toep":
            return start ** np.arange(1, self.bands + 1)
        return np.full(self.n_params, start)

    def _lags(self) -> np.ndarray:
        return _lags(self.size, self.positions)[0]

    def matrix(self, rho) -> np.ndarray:
        """``C(rho)`` (dense, ``size x size``)."""
        rho = np.asarray(rho, dtype=float).reshape(-1)
        if self.kind == "ar1":
            lags, longest = _lags(self.size, self.positions)
            return _powers_at(rho[0], lags, longest)
        if self.kind == "cs":
            return (1.0 - rho[0]) * np.eye(self.size) + rho[0]
        if self.kind == "toep":
            lags = self._lags()
            band = np.concatenate([[1.0], rho, np.zeros(max(int(lags.max()) - self.bands, 0))])
            return band[lags]
        return np.eye(self.size)

    def derivatives(self, rho) -> list[np.ndarray]:
        """``dC / d rho_j`` for each parameter."""
        rho = np.asarray(rho, dtype=float).reshape(-1)
        lags, longest = _lags(self.size, self.positions)
        if self.kind == "ar1":
            d = lags * _powers_at(rho[0], np.maximum(lags - 1, 0), longest)  # lag * rho ** (lag - 1)
            d[lags == 0] = 0.0
            return [d]
        if self.kind == "cs":
            return [1.0 - np.eye(self.size)]
        if self.kind == "toep":
            return [(lags == k).astype(float) for k in range(1, self.bands + 1)]
        return []


CACHED_LAGS = 512  # lag matrices of models up to this size are kept (8 of them, at most 2 MB each)


def _lags(size: int, positions: tuple[int, ...] | None) -> tuple[np.ndarray, int]:
    """``|i - j|`` between the positions and its largest entry; kept for small sizes, which models ask for at every
    parameter value."""
    return _lag_matrix(size, positions) if size <= CACHED_LAGS else _lag_matrix.__wrapped__(size, positions)


@functools.lru_cache(maxsize=8)
def _lag_matrix(size: int, positions: tuple[int, ...] | None) -> tuple[np.ndarray, int]:
    i = np.arange(size) if positions is None else np.asarray(positions)
    lags = np.abs(i[:, None] - i[None, :])
    lags.flags.writeable = False
    return lags, int(lags.max(initial=0))


def _powers_at(rho: float, lags: np.ndarray, longest: int) -> np.ndarray:
    """``rho ** lags`` (``longest`` at least their largest entry): one power per lag, gathered, unless the lags are
    so spread out (long gaps between positions) that there are more of them than entries."""
    if longest < lags.size:
        return (rho ** np.arange(longest + 1))[lags]
    return rho ** lags
