"""Predictions from a fit, for its own rows or new data, with standard errors.  A mixin of
:class:`~lmmformula.results.fit.FitResult`.

With ``x`` and ``z`` the fixed and random design rows of a prediction, ``x'b + z'u`` has prediction error
variance (Henderson 1975) ``sigma^2 [(x - B'w)' Sb^-1 (x - B'w) + w' Cvv^-1 w]`` with ``w = Lam'z`` in the
scaled MME (``B = Cvv^-1 Lam'Z'WX``, ``Sb`` the Schur complement of the fixed effects); without the random
part it is ``x' Cov(b) x``.  A level of a grouping factor not seen in the fit gets no random effect (its BLUP is
the prior mean 0, lme4's ``allow.new.levels = TRUE``), so its prediction is the population one and its
prediction error adds the effect's prior variance ``x_k' Sigma_k x_k``.  Correlated
residuals are not predicted (no kriging of the residual at new positions).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import scipy.linalg
import scipy.sparse as sp

from ..design.fixed import model_matrix_for
from ..design.random import block_design_for
from ..errors import DataError, LMMWarning

__all__ = ["Prediction"]


class Prediction:
    """``predict`` (see the module docstring)."""

    def predict(self, newdata: pd.DataFrame | None = None, include_random: bool = True,
                se: bool = False):
        """Predictions ``X b (+ Z u)`` for the rows of the fit or for ``newdata``.

        Parameters
        ----------
        newdata : DataFrame, optional
            Needs the columns of the fixed part and, with ``include_random``, of the random terms; never
            modified.  Without it, the fit's own rows.
        include_random : bool
            Add the BLUPs of the random effects (conditional prediction); False gives the population
            (marginal) prediction ``X b``.
        se : bool
            Also return standard errors (prediction error for the conditional prediction).

        Returns
        -------
        Series, or DataFrame with ``prediction`` and ``std_error`` when ``se``
        """
        mme, ev = self.mme, self.evaluation
        extra = None  # prior variance of random effects of new levels
        if newdata is None:
            X, Z = mme.X, mme.Z
            index = self.frame.index if self.frame is not None else pd.RangeIndex(mme.n)
        else:
            X, Z, extra = self._new_design(newdata, include_random)
            index = newdata.index
        pred = X @ ev.beta
        if include_random and mme.q:
            pred = pred + Z @ ev.u
        out = pd.Series(np.asarray(pred, dtype=float), index=index, name="prediction")
        if not se:
            return out
        var = self._prediction_se(X, Z if include_random else None) ** 2
        if include_random and extra is not None:
            var = var + extra  # a new level's random effect: its prior variance
        return pd.DataFrame({"prediction": out, "std_error": np.sqrt(var)}, index=index)

    def _new_design(self, newdata, include_random: bool):
        if not isinstance(newdata, pd.DataFrame):
            raise DataError(f"newdata must be a pandas DataFrame, got {type(newdata).__name__}; pass a DataFrame "
                            "with the columns the model uses (e.g. pd.DataFrame(newdata))")
        needed = set(self.fixed_design.spec.required_variables)
        if include_random:
            needed |= {v for blk in self.mme.blocks for v in _block_variables(blk)}
        absent = sorted(v for v in needed if v not in newdata.columns)
        if absent:
            raise DataError(f"newdata lacks the column(s) {absent} used by the model; add them (or predict with "
                            "include_random=False, which needs only the fixed part's columns)")
        incomplete = [v for v in sorted(needed) if newdata[v].isna().any()]
        if incomplete:
            raise DataError(f"newdata has missing values in {incomplete}; drop or fill those rows before "
                            "predicting")
        Xf = model_matrix_for(self.fixed_design.spec, newdata, "fixed-effect")
        X = Xf[:, self.fixed_design.kept]
        if not include_random or not self.mme.q:
            return X, None, None
        parts, unseen = [], np.zeros(len(newdata), dtype=bool)
        prior = np.zeros(len(newdata))  # Var(z'u) of random effects of new levels (not predicted from the data)
        for k, blk in enumerate(self.mme.blocks):
            Zk, new, Xk = block_design_for(blk, newdata)
            parts.append(Zk)
            unseen |= new
            prior[new] += np.einsum("ra,ab,rb->r", Xk[new], self.term_covariance(k), Xk[new])
        if unseen.any():
            warnings.warn(f"{int(unseen.sum())} row(s) of newdata have grouping levels not in the fit; their "
                          "random effects are predicted at 0 (the population mean)", LMMWarning, stacklevel=3)
        return X, sp.hstack(parts, format="csc"), prior

    def _prediction_se(self, X: np.ndarray, Z) -> np.ndarray:
        mme, ev = self.mme, self.evaluation
        if Z is None or mme.q == 0:
            return np.sqrt(np.einsum("rp,pq,rq->r", X, self.vcov.to_numpy(), X))
        ZL = (Z @ mme.lam(ev.theta)).tocsr()
        fac = mme.factor_at(ev.theta)
        var = np.empty(X.shape[0])
        step = max(1, 2_000_000 // max(mme.q, 1))  # rows per chunk: Lam'z is dense in q
        for start in range(0, X.shape[0], step):
            rows = slice(start, start + step)
            W = ZL[rows].T.toarray()                                     # Lam'z for these rows (q x r)
            D = X[rows].T - ev.B.T @ W                                    # x - B'w  (p x r)
            half = (scipy.linalg.solve_triangular(ev.schur_chol, D, lower=True) if mme.p
                    else np.zeros((0, D.shape[1])))
            var[rows] = np.sum(half**2, axis=0) + np.sum(W * fac.solve(W), axis=0)
        return np.sqrt(ev.sigma2 * var)


def _block_variables(blk) -> set[str]:
    """Data columns a random block needs: its left side and its grouping."""
    out = set(blk.spec.required_variables) if blk.spec is not None else set()
    if blk.grid is not None:
        out |= {d.variable for d in blk.grid.dimensions}
    elif blk.term is not None:
        out |= {p.variable for p in blk.term.group}
    return out
