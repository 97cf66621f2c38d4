"""Tests of the fixed effects of a fit: denominator df (Satterthwaite, Kenward-Roger, residual), type III F
tests, user contrasts and predicted means.  A mixin of :class:`~lmmformula.results.fit.FitResult`, which
supplies ``mme``, ``evaluation``, ``vcov``, ``fixed_effects``, ``_satterthwaite`` and the fixed design."""

from __future__ import annotations

from functools import cached_property

import numpy as np
import pandas as pd
import scipy.stats

from ..design.fixed import _restore_r_calls
from ..errors import ModelSpecificationError
from ..inference import KenwardRogerState, contrast_df, kenward_roger_state, kr_test, type3_hypotheses, wald_test
from .means import predicted_means

__all__ = ["FixedEffectTests"]


class FixedEffectTests:
    """``fixed_effects_table``, ``anova``, ``contrast`` and ``predict_means`` (see the module docstring)."""

    _DDF = {"satterthwaite": "satterthwaite", "kenward-roger": "kenward-roger", "kenward_roger": "kenward-roger",
            "kr": "kenward-roger", "residual": "residual"}

    def _ddf_method(self, ddf: str) -> str:
        key = str(ddf).lower()
        if key not in self._DDF:
            raise ModelSpecificationError(
                f"ddf must be 'satterthwaite', 'kenward-roger' or 'residual', got {ddf!r}")
        return self._DDF[key]

    KR_MAX_DENSE = 50_000_000  # Kenward-Roger forms P Z densely (n x q doubles)

    @cached_property
    def _kenward_roger(self) -> KenwardRogerState:
        mme = self.mme
        if self.method != "REML":
            raise ModelSpecificationError(
                "Kenward-Roger needs a REML fit (its adjustment is built on the REML information); refit with "
                "method='REML' or use ddf='satterthwaite'")
        if mme.n_eta or mme.n_kappa or mme.structured:
            raise ModelSpecificationError(
                "Kenward-Roger is implemented for covariances linear in their parameters (variance components, "
                "us/diag terms, vm); this model has correlation parameters, whose second derivatives the "
                "adjustment would need. Use ddf='satterthwaite'")
        if mme.n * mme.q > self.KR_MAX_DENSE:
            raise ModelSpecificationError(
                f"Kenward-Roger needs P Z as a dense {mme.n} x {mme.q} matrix, too large here; use "
                "ddf='satterthwaite'")
        # the adjustment does not depend on how the covariance is parameterised (linearly here): on the
        # orthogonalised columns of conditioned terms it keeps its precision
        return kenward_roger_state(*(self._conditioned or (mme, self.evaluation)))

    def _df_function(self, method: str):
        """Maps contrast rows to their denominator df under ``method`` (one contrast per row)."""
        if method == "residual":
            return lambda L: np.full(np.atleast_2d(L).shape[0], float(self.n_obs - self.mme.p))
        if method == "kenward-roger":
            beta = self.evaluation.beta
            return lambda L: np.array([kr_test(self._kenward_roger, beta, row)[2] for row in np.atleast_2d(L)])
        return lambda L: contrast_df(self._satterthwaite, L)[1]

    def _vcov_for(self, method: str) -> np.ndarray:
        """Covariance of the fixed effects used with ``method`` (Kenward-Roger's is adjusted)."""
        if method == "kenward-roger":
            return self._kenward_roger.vcov_adjusted
        return self.vcov.to_numpy()

    def fixed_effects_table(self, ddf: str = "satterthwaite") -> pd.DataFrame:
        """:attr:`fixed_effects` with the denominator df of ``ddf``: 'satterthwaite' (as lmerTest's summary),
        'kenward-roger' (standard errors from the adjusted covariance, as lmerTest with pbkrtest) or 'residual'
        (``n - p``)."""
        method = self._ddf_method(ddf)
        if method == "satterthwaite":
            return self.fixed_effects
        est = self.evaluation.beta
        se = np.sqrt(np.diag(self._vcov_for(method))) if self.mme.p else np.zeros(0)
        df = self._df_function(method)(np.eye(self.mme.p)) if self.mme.p else np.zeros(0)
        t = est / se
        return pd.DataFrame({"estimate": est, "std_error": se, "df": df, "t_value": t,
                             "p_value": 2.0 * scipy.stats.t.sf(np.abs(t), df)},
                            index=pd.Index(list(self.fixed_names), name="coefficient"))

    def anova(self, ddf: str = "satterthwaite") -> pd.DataFrame:
        """Type III Wald F tests of the fixed-effect terms (as lmerTest's ``anova(fit, type = 3)``).

        Each term is tested with the hypothesis that its coefficients are zero under sum-to-zero coding of every
        factor (:func:`lmmformula.inference.type3_hypotheses`); the intercept is not tested.

        Parameters
        ----------
        ddf : {"satterthwaite", "kenward-roger", "residual"}
            Kenward-Roger reports the scaled statistic ``lambda F`` on ``m`` df, as lmerTest and pbkrtest.

        Returns
        -------
        DataFrame
            One row per term: ``num_df``, ``den_df``, ``F_value``, ``p_value``.
        """
        method = self._ddf_method(ddf)
        hyps = type3_hypotheses(self.fixed_design.spec, self.frame, self.mme.X, self.fixed_design.kept)
        rows = []
        for term, L in hyps.items():
            F, q, den, p = self._f_test(L, method)
            rows.append({"term": _restore_r_calls(term, self.formula), "num_df": q, "den_df": den,
                         "F_value": F, "p_value": p})
        return pd.DataFrame(rows, columns=["term", "num_df", "den_df", "F_value", "p_value"]).set_index("term")

    def contrast(self, L, ddf: str = "satterthwaite") -> pd.DataFrame:
        """Tests of user contrasts of the fixed effects.

        Parameters
        ----------
        L : array-like (r, p) or (p,), or dict {name: coefficient} for one contrast
            Rows are contrasts ``l'b`` in the order of :attr:`fixed_names`.
        ddf : {"satterthwaite", "kenward-roger", "residual"}

        Returns
        -------
        DataFrame
            One row per contrast (estimate, SE, df, t, p) and, when ``L`` has several rows, a final row
            ``"joint F"`` with the F test of all of them (``estimate`` holds F, ``df`` the denominator df).
        """
        p = self.mme.p
        L = self._contrast_matrix(L)
        if L.ndim != 2 or L.shape[1] != p or not np.all(np.isfinite(L)):
            got = f"shape {L.shape}" if L.ndim != 2 or L.shape[1] != p else "missing or infinite entries"
            raise ModelSpecificationError(
                f"L must have {p} finite columns (one per fixed effect: {list(self.fixed_names)}), got {got}")
        method = self._ddf_method(ddf)
        vcov = self._vcov_for(method)
        est = L @ self.evaluation.beta
        se = np.sqrt(np.einsum("rp,pq,rq->r", L, vcov, L))
        df = self._df_function(method)(L)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = est / se
        out = pd.DataFrame({"estimate": est, "std_error": se, "df": df, "t_value": t,
                            "p_value": 2.0 * scipy.stats.t.sf(np.abs(t), df)},
                           index=[f"contrast {i + 1}" for i in range(L.shape[0])])
        if L.shape[0] > 1:
            F, q, den, pv = self._f_test(L, method)
            out.loc["joint F"] = [F, np.nan, den, np.nan, pv]
        return out

    def _contrast_matrix(self, L) -> np.ndarray:
        """``L`` as a float array in the order of :attr:`fixed_names`: a dict or Series by name, a DataFrame by its
        column names, else positional.

        Raises
        ------
        ModelSpecificationError
            Unknown coefficient names or non-numeric entries.
        """
        names = list(self.fixed_names)
        if isinstance(L, pd.Series):
            L = L.to_dict()
        if isinstance(L, pd.DataFrame):
            unknown = [str(k) for k in L.columns if k not in names]
            if unknown:
                raise ModelSpecificationError(
                    f"contrast columns {unknown} are not fixed effects; name the columns after {names}")
            L = L.reindex(columns=names, fill_value=0.0)
        if isinstance(L, dict):
            unknown = [k for k in L if k not in names]
            if unknown:
                raise ModelSpecificationError(
                    f"contrast names {unknown} are not fixed effects; choose from {names}")
            L = [[L.get(n, 0.0) for n in names]]
        try:
            return np.atleast_2d(np.asarray(L, dtype=float))
        except (TypeError, ValueError):
            raise ModelSpecificationError(
                f"L must hold numbers (one coefficient per fixed effect: {names}), got {L!r}") from None

    def _f_test(self, L: np.ndarray, method: str) -> tuple[float, int, float, float]:
        """F, numerator df, denominator df and p-value of ``L b = 0``."""
        if method == "kenward-roger":
            F, q, m, _, _ = kr_test(self._kenward_roger, self.evaluation.beta, L)
            return F, q, m, float(scipy.stats.f.sf(F, q, m))
        return wald_test(self.evaluation.beta, self.vcov.to_numpy(), L, self._df_function(method))

    def predict_means(self, classify, ddf: str | None = None):
        """Predicted (marginal) means of the levels of a factor (or of combinations of factors), averaged with
        equal weights over the other factors of the fixed part, covariates at their mean (emmeans, ASReml's
        ``predict(classify = ...)``).

        Parameters
        ----------
        classify : str or list of str
            Factor(s) of the fixed part.
        ddf : {"kenward-roger", "satterthwaite", "residual"}, optional
            Default Kenward-Roger (as emmeans for lmer fits) where available (REML fits of covariances linear
            in their parameters), else Satterthwaite.

        Returns
        -------
        PredictedMeans
            ``table`` (means, SE, df, 95% intervals), ``sed`` (standard errors of differences), ``pairs`` (all
            pairwise differences with t tests), ``average_sed``, ``ranked()``.
        """
        if ddf is None:
            ddf = "kenward-roger" if self._kenward_roger_available else "satterthwaite"
        return predicted_means(self, classify, ddf)

    @property
    def _kenward_roger_available(self) -> bool:
        mme = self.mme
        return (self.method == "REML" and not (mme.n_eta or mme.n_kappa or mme.structured)
                and mme.n * mme.q <= self.KR_MAX_DENSE)
