"""Products with the inverse of the mixed model equations that the derivatives and the results need.

:class:`ProjectionMixin` is mixed into :class:`~lmmformula.engine.mme.MixedModelEquations`, which supplies
``products``, ``factor_at``, ``lam_times``, ``X``, ``Z``, ``Zt`` and the block offsets.  With the scaled MME
``C*`` of that module: ``P~ Q`` (the REML projection times ``sigma^2``) by one solve with ``C*``, and the
diagonal blocks of ``C*^-1`` for one term from the selected inverse of ``Cvv`` and the absorbed fixed effects
(``C*^-1_vv = Cvv^-1 + (B Sb^{-1/2})(B Sb^{-1/2})'``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from .factor import cholesky_solve

if TYPE_CHECKING:  # annotations only: mme imports this module
    from .mme import Evaluation

__all__ = ["ProjectionMixin"]


class ProjectionMixin:
    """``P~ Q`` and blocks of ``C*^-1`` (mixin of :class:`MixedModelEquations`)."""

    def project(self, ev: Evaluation, Q: np.ndarray) -> np.ndarray:
        """``P~ Q`` (REML) or ``V~^-1 Q`` (ML) for the columns of ``Q`` (n x k), with ``P~ = sigma^2 P``.

        Uses ``P~ q = W (q - X b_q - Z Lam v_q)`` where ``(b_q, v_q)`` solve the scaled MME with
        right-hand side ``[X'Wq; Lam'Z'Wq]``.
        """
        prod = self.products(ev.theta)
        WQ = prod.weight(Q)
        if self.q == 0:  # GLS: P~ q = W (q - X b_q)
            if not (self.reml and self.p):
                return WQ
            X, Xt = self.cross.fixed_design()  # indicator columns: sparse
            return WQ - prod.weight(X @ cholesky_solve(ev.schur_chol, np.asarray(Xt @ WQ)))
        rv = self.lam_times(ev.theta, self.Zt @ WQ, transpose=True)
        cv = self.factor_at(ev.theta).solve(rv)
        if self.reml and self.p:
            rb = self.X.T @ WQ - ev.B.T @ rv
            bq = cholesky_solve(ev.schur_chol, rb)
            vq = cv - ev.B @ bq
            return WQ - prod.weight(self.X @ bq + self.Z @ self.lam_times(ev.theta, vq))
        return WQ - prod.weight(self.Z @ self.lam_times(ev.theta, cv))

    @staticmethod
    def absorbed_fixed(ev: Evaluation) -> np.ndarray:
        """``B Sb^{-1/2}`` (q x p): ``C*^-1_vv = Cvv^-1 + (B Sb^{-1/2})(B Sb^{-1/2})'`` when the fixed effects are absorbed."""
        return scipy.linalg.solve_triangular(ev.schur_chol, ev.B.T, lower=True, check_finite=False).T

    def level_blocks(self, ev: Evaluation, S, k: int, reml: bool | None = None) -> np.ndarray:
        """``(L, m, m)`` diagonal blocks of the vv-part of ``C*^-1`` for term ``k``.

        With ``reml`` True the fixed effects are absorbed (``Cvv^-1 + B Sb^-1 B'``), otherwise
        they are taken as known (``Cvv^-1``, lme4's conditional variance).
        """
        reml = self.reml if reml is None else reml
        blk, cov = self.blocks[k], self.covariances[k]
        m, L = cov.m, blk.n_levels
        base = self.offsets[k] + np.arange(L) * m
        idx_r = (base[:, None, None] + np.arange(m)[None, :, None]).repeat(m, axis=2)
        idx_c = (base[:, None, None] + np.arange(m)[None, None, :]).repeat(m, axis=1)
        if sp.issparse(S):
            vals = np.asarray(S[idx_r.ravel(), idx_c.ravel()]).ravel().reshape(L, m, m)
        else:
            vals = S[idx_r, idx_c]
        if reml and self.p:
            Wk = self.absorbed_fixed(ev)[base[:, None] + np.arange(m)[None, :]]  # (L, m, p)
            vals = vals + np.einsum("lap,lbp->lab", Wk, Wk)
        return vals
