"""Diagnostics of a fit: residuals, the sample variogram of a field trial, shrinkage per level, effective df and
generalised heritability.  A mixin of :class:`~lmmformula.results.fit.FitResult`.

Shrinkage (the seed's one-way example, generalised): the BLUP of level ``l`` of a term is
``u_l = (Z_l'WZ_l + sigma^2 G_l^-1)^-1 Z_l'W e_l`` and its unshrunk (fixed-effect) estimate
``u~_l = (Z_l'WZ_l)^-1 Z_l'W e_l`` from the same partial residual ``e_l = y - Xb - Z u + Z_l u_l``; their ratio
is the level's shrinkage factor, ``n_l / (n_l + alpha)`` in a balanced one-way layout.  The reliability is
``1 - PEV / sigma_u^2``.  A term's effective degrees of freedom are ``q_k - tr(G_k^-1 C^uu_kk)`` (ASReml's
``edf``), and the generalised heritability of Cullis, Smith & Coombes (2006) is
``H^2 = 1 - v_Delta / (2 sigma_g^2)`` with ``v_Delta`` the mean prediction error variance of the differences of
two BLUPs of the term.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..engine.factor import SparseFactor
from ..errors import ModelSpecificationError

__all__ = ["Diagnostics"]


def _scalar(value):
    """A numpy scalar as the Python value, for messages."""
    return value.item() if isinstance(value, np.generic) else value


class Diagnostics:
    """``marginal_residuals``, ``standardized_residuals``, ``variogram``, ``shrinkage_detail``,
    ``term_heritability`` (module docstring)."""

    # ---- residuals ------------------------------------------------------------------------
    @cached_property
    def marginal_residuals(self) -> np.ndarray:
        """``y - X b`` (the random effects not subtracted)."""
        return self.mme.y - self.mme.X @ self.evaluation.beta

    @cached_property
    def standardized_residuals(self) -> np.ndarray:
        """Conditional residuals scaled to unit variance under the fitted residual covariance.

        Independent residuals: ``e / sigma``.  Correlated residuals (``R = sigma^2 R~``): the whitened vector
        ``D^{1/2} (I + L)' P e / sigma`` from the sparse factorisation ``P W P' = (I + L) D (I + L)'`` of
        ``W = R~^-1`` (independent, unit variance when the model is right), entry ``i`` placed at observation
        ``P[i]``; nlme's "normalized" residuals are the same idea with a Cholesky factor in time order.
        """
        e = self.evaluation.resid
        sigma = np.sqrt(self.sigma2)
        W = self.mme.products(self.evaluation.theta).W
        if W is None:
            return e / sigma
        L, d, perm = SparseFactor(sp.csc_matrix(W))._get()
        ep = e[perm]
        white = np.sqrt(d) * (ep + L.T @ ep)
        out = np.empty_like(e)
        out[perm] = white
        return out / sigma

    # ---- variogram ------------------------------------------------------------------------
    def variogram(self, row: str | None = None, col: str | None = None, max_lag: int | None = None) -> pd.DataFrame:
        """Sample semi-variogram of the conditional residuals by row and column displacement.

        ``gamma(dr, dc) = mean of (e_i - e_j)^2 / 2`` over pairs of plots ``dr`` rows and ``dc`` columns apart
        (absolute displacements, both diagonal directions pooled, as ASReml's variogram).

        Parameters
        ----------
        row, col : str, optional
            Columns of the data holding the plot positions (integer-valued); default: the two dimensions of the
            residual structure (e.g. ``ar1(row):ar1(col)``).
        max_lag : int, optional
            Largest displacement in each direction.

        Returns
        -------
        DataFrame
            ``row_lag``, ``col_lag``, ``gamma``, ``n_pairs``.
        """
        if max_lag is not None and not (isinstance(max_lag, (int, np.integer)) and not isinstance(max_lag, bool)
                                        and max_lag >= 0):
            raise ModelSpecificationError(f"max_lag must be a non-negative whole number of plots, got {max_lag!r}")
        r, c = self._positions(row, col)
        e = self.evaluation.resid
        nr, nc = r.max() + 1, c.max() + 1
        grid = np.full((nr, nc), np.nan)
        if len(set(zip(r, c))) != r.size:
            raise ModelSpecificationError("the variogram needs one residual per plot; some (row, col) pairs repeat")
        grid[r, c] = e
        max_r = nr - 1 if max_lag is None else min(max_lag, nr - 1)
        max_c = nc - 1 if max_lag is None else min(max_lag, nc - 1)
        rows = []
        for dr in range(max_r + 1):
            for dc in range(max_c + 1):
                diffs = [grid[dr:, dc:] - grid[:nr - dr, :nc - dc]]
                if dr and dc:
                    diffs.append(grid[dr:, :nc - dc] - grid[:nr - dr, dc:])
                sq = np.concatenate([d.ravel() for d in diffs])
                sq = sq[np.isfinite(sq)]
                if dr == 0 and dc == 0:
                    rows.append((0, 0, 0.0, int(np.isfinite(grid).sum())))
                    continue
                rows.append((dr, dc, 0.5 * float(np.mean(sq**2)) if sq.size else np.nan, int(sq.size)))
        return pd.DataFrame(rows, columns=["row_lag", "col_lag", "gamma", "n_pairs"])

    def _positions(self, row, col) -> tuple[np.ndarray, np.ndarray]:
        """Zero-based integer plot positions of every observation."""
        if row is None and col is None:
            res = self.mme.residual
            if res is None or not res.is_field:
                raise ModelSpecificationError(
                    "variogram() takes the plot positions from a two-dimensional residual structure with numeric "
                    "positions such as ar1(row):ar1(col); this model has none (a grouping such as Subject is not a "
                    "spatial coordinate), so name them: variogram(row='row', col='col') with two position columns")
            return res.dimensions[0].positions.astype(int), res.dimensions[1].positions.astype(int)
        if row is None or col is None:
            raise ModelSpecificationError(
                f"variogram needs two columns of the data for the plot positions, got row={row!r}, col={col!r}; "
                "name both, e.g. variogram(row='row', col='col')")
        absent = [v for v in (row, col) if v not in self.frame.columns]
        if absent:
            raise ModelSpecificationError(
                f"the position column(s) {absent} are not among the columns the model used "
                f"({', '.join(map(repr, self.frame.columns))}); the fit keeps only those, so name position columns "
                "of the formula, or fit with a residual structure such as ar1(row):ar1(col)")
        out = []
        for name in (row, col):
            v = pd.to_numeric(self.frame[name], errors="coerce").to_numpy(dtype=float)
            if not np.all(np.isfinite(v)) or not np.allclose(v, np.round(v)):
                raise ModelSpecificationError(
                    f"the position column '{name}' must hold whole numbers (plot rows and columns), got "
                    f"{self.frame[name].dtype} values such as {_scalar(self.frame[name].iloc[0])!r}; round or recode it")
            out.append((v - v.min()).astype(int))
        return out[0], out[1]

    # ---- shrinkage ------------------------------------------------------------------------
    def _term_index(self, term: str) -> int:
        names = [b.name for b in self.mme.blocks]
        if term not in names:
            raise ModelSpecificationError(f"unknown random term {term!r}; use one of the terms {names}")
        return names.index(term)

    def shrinkage_detail(self, term: str) -> pd.DataFrame:
        """Per level of a random term: BLUP, PEV, reliability, unshrunk estimate and shrinkage factor (module
        docstring), one group of columns per effect of the term, and the number of observations."""
        k = self._term_index(term)
        mme, ev = self.mme, self.evaluation
        blk = mme.blocks[k]
        m, L = blk.n_columns, blk.n_levels
        rows = slice(mme.offsets[k], mme.offsets[k + 1])
        prod = mme.products(ev.theta)
        Zk = mme.Z[:, rows]
        u_k = ev.u[rows]
        blup = u_k.reshape(L, m)
        # Z_l'W e_l with e_l = e + Z_l u_l (only level l's own effect added back)
        ztwe = (Zk.T @ prod.weight(ev.resid)).reshape(L, m)
        ztwz = prod.ZtWZ[rows][:, rows]
        blocks = np.array([ztwz[l * m:(l + 1) * m, l * m:(l + 1) * m].toarray() for l in range(L)])
        unshrunk = np.full((L, m), np.nan)
        for l in range(L):
            if np.linalg.matrix_rank(blocks[l]) == m:
                unshrunk[l] = blup[l] + np.linalg.solve(blocks[l], ztwe[l])
        pev = self._pev[k]
        S = self.term_covariance(k)
        prior = blk.known.diagonal if blk.known is not None else np.ones(L)
        data = {"n_obs": np.bincount(blk.factor.codes, minlength=L)}
        for j, col in enumerate(blk.columns):
            var = S[j, j] * prior
            with np.errstate(divide="ignore", invalid="ignore"):
                data[f"blup({col})"] = blup[:, j]
                data[f"pev({col})"] = pev[:, j, j]
                data[f"reliability({col})"] = np.where(var > 0, 1.0 - pev[:, j, j] / var, np.nan)
                data[f"unshrunk({col})"] = unshrunk[:, j]
                data[f"shrinkage({col})"] = np.where(np.abs(unshrunk[:, j]) > 1e-12 * max(1.0, np.abs(
                    unshrunk[:, j]).max(initial=0.0)), blup[:, j] / unshrunk[:, j], np.nan)
        return pd.DataFrame(data, index=pd.Index(list(blk.factor.levels), name=blk.factor.name))

    def _cuu_block(self, k: int) -> np.ndarray:
        """Dense ``C^vv`` block of term k (fixed effects absorbed), scaled units."""
        mme, ev = self.mme, self.evaluation
        rows = np.arange(mme.offsets[k], mme.offsets[k + 1])
        E = np.zeros((mme.q, rows.size))
        E[rows, np.arange(rows.size)] = 1.0
        block = mme.factor_at(ev.theta).solve(E)[rows]
        if mme.p:
            A = mme.absorbed_fixed(ev)[rows]
            block = block + A @ A.T
        return 0.5 * (block + block.T)

    H2_MAX_LEVELS = 5000  # H^2 needs the term's full PEV matrix (levels x levels, dense)

    def term_heritability(self, term: str) -> float:
        """Generalised heritability ``H^2 = 1 - v_Delta / (2 sigma_g^2)`` of a one-effect term (Cullis et al.
        2006), from the prediction error variances of all pairwise differences of its BLUPs (NaN above
        :attr:`H2_MAX_LEVELS` levels, where that dense matrix would be too large)."""
        k = self._term_index(term)
        blk = self.mme.blocks[k]
        if blk.n_columns != 1:
            raise ModelSpecificationError(f"H^2 is defined for a term with one effect; '{term}' has "
                                          f"{blk.n_columns}")
        if blk.n_levels > self.H2_MAX_LEVELS:
            return float("nan")
        lam = self.mme.lam(self.evaluation.theta)
        rows = slice(self.mme.offsets[k], self.mme.offsets[k + 1])
        lk = lam[rows][:, rows].diagonal()
        P = self.sigma2 * lk[:, None] * self._cuu_block(k) * lk[None, :]      # PEV matrix of the term's BLUPs
        n = P.shape[0]
        v_delta = 2.0 * (n * np.trace(P) - P.sum()) / (n * (n - 1))
        var_g = float(self.term_covariance(k)[0, 0])
        if blk.known is not None:
            var_g *= float(np.mean(blk.known.diagonal))
        return 1.0 - v_delta / (2.0 * var_g) if var_g > 0 else float("nan")

    def _effective_df(self, k: int) -> float:
        """``q_k - tr(K_k^-1 C^vv_kk)`` (equal to ``q_k - tr(G_k^-1 C^uu_kk)``); NaN for a singular term.

        ``C^vv = Cvv^-1 + A A'`` (``A = B Sb^{-1/2}``, fixed effects absorbed) is needed only on the pattern of
        ``K^-1``, which lies in that of ``Cvv``: the selected inverse and row dot products of ``A`` give it."""
        # a conditioned term (orthogonalised columns): the same quantity on the conditioned equations, where the
        # covariance matrix is well scaled
        mme, ev = self._conditioned if k in self.optimizer.conditioned else (self.mme, self.evaluation)
        t0, t1 = mme.theta_offsets[k], mme.theta_offsets[k + 1]
        L = mme.covariances[k].factor(ev.theta[t0:t1])
        S = L @ L.T
        if np.linalg.eigvalsh(np.atleast_2d(S)).min() <= 1e-10 * max(np.abs(S).max(), 1e-300):
            return float("nan")
        off, end = mme.offsets[k], mme.offsets[k + 1]
        kinv = mme.level_state(ev.theta).kinv
        K = sp.coo_matrix(kinv[off:end][:, off:end] if sp.issparse(kinv) else np.asarray(kinv)[off:end, off:end])
        r, c = K.row + off, K.col + off
        sel = self._selected_inverse if mme is self.mme else mme.factor_at(ev.theta).selected_inverse()
        cvv = np.asarray(sel[r, c]).ravel() if sp.issparse(sel) else sel[r, c]
        if mme.p:
            A = mme.absorbed_fixed(ev)
            cvv = cvv + np.einsum("ij,ij->i", A[r], A[c])
        return float((end - off) - K.data @ cvv)
