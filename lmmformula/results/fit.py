"""The result of a fit: estimates, tables and diagnostics, computed lazily.

A :class:`FitResult` is created once by :meth:`lmmformula.LMM.fit` and never
changes; every table is a labelled pandas object computed on first access.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
import scipy.linalg
import scipy.stats

from ..engine import MixedModelEquations, OptimizerResult
from ..engine.conditioning import conditioned_view
from ..engine.mme import Evaluation
from ..errors import ModelSpecificationError
from ..inference import contrast_df, satterthwaite_state
from .fixed_tests import FixedEffectTests
from .prediction import Prediction
from .diagnostics import Diagnostics
from .variances import VarianceComponents
from .serialize import StoredFit, fit_record, read_record, write_record

__all__ = ["FitResult"]


@dataclass(frozen=True, eq=False)
class FitResult(FixedEffectTests, Prediction, Diagnostics, VarianceComponents):
    """A fitted linear mixed model.

    Attributes
    ----------
    formula : str
    method : {"REML", "ML"}
    n_obs, n_dropped : int
        Observations used and rows dropped for missing values.
    converged : bool
    n_iter : int
    fixed_names : tuple of str
    dropped_fixed : tuple of str
        Aliased fixed-effect columns removed before fitting.
    """

    formula: str
    method: str
    mme: MixedModelEquations = field(repr=False)
    evaluation: Evaluation = field(repr=False)
    optimizer: OptimizerResult = field(repr=False)
    fixed_names: tuple[str, ...]
    dropped_fixed: tuple[str, ...]
    response: str
    n_dropped: int
    algorithm: str
    fixed_design: object = field(default=None, repr=False)  # design.FixedDesign: spec and kept columns of X
    frame: object = field(default=None, repr=False)         # the complete-case rows (never modified)
    model: object = field(default=None, repr=False)         # the LMM that produced this fit (for refit)
    options: dict = field(default=None, repr=False)         # fit options: tol, max_iter, start

    @cached_property
    def data_sha256(self) -> str:
        """SHA-256 fingerprint of the data used (``serialize.data_fingerprint``), computed when first asked for:
        the fit's rows are never modified, so it is the fingerprint at fitting time."""
        return self.model.data_sha256 if self.model is not None else ""

    # ---- scalar summaries -----------------------------------------------------------------
    @property
    def n_obs(self) -> int:
        return self.mme.n

    @property
    def converged(self) -> bool:
        return self.optimizer.converged

    @property
    def n_iter(self) -> int:
        return self.optimizer.n_iter

    @property
    def loglik(self) -> float:
        """Log-likelihood (restricted for REML) with lme4's constants."""
        return -0.5 * self.evaluation.deviance

    @property
    def n_params(self) -> int:
        """Fixed effects + covariance parameters + residual variance (lme4's count for AIC)."""
        return self.mme.p + self.mme.n_params + 1

    @property
    def aic(self) -> float:
        return -2.0 * self.loglik + 2.0 * self.n_params

    @property
    def bic(self) -> float:
        return -2.0 * self.loglik + np.log(self.n_obs) * self.n_params

    @property
    def sigma2(self) -> float:
        """Residual variance."""
        return self.evaluation.sigma2

    @property
    def theta(self) -> np.ndarray:
        """Relative Cholesky factors (lme4's theta), terms in formula order, then atanh of residual correlations."""
        return self.evaluation.theta.copy()

    @property
    def residual_correlations(self) -> dict[str, float]:
        """Estimated residual correlations, e.g. ``{"rho(row)": 0.4}`` (empty without a residual structure)."""
        res = self.mme.residual
        if res is None:
            return {}
        names, values = res.reported(self.mme.eta(self.evaluation.theta), self.sigma2)
        return {n: v for n, v in zip(names, values) if n.startswith("rho")}

    @property
    def singular(self) -> bool:
        """True when an estimate is on the boundary of its parameter space: a diagonal entry of a relative
        Cholesky factor below 1e-4 (lme4's isSingular: a variance of 0 or a singular covariance matrix; it also
        judges an unstructured term's correlations), a structure's correlation parameter at +-0.999, a
        structured covariance matrix (``toep``, ``fa``, a ``us``/``diag`` residual dimension) whose smallest
        eigenvalue is below 1e-6 of its largest, or a residual variance below 1e-4 of the variance a random
        term adds to an average observation (:meth:`_residual_vanishes`)."""
        if len(self.optimizer.at_boundary) > 0 or self._residual_vanishes():
            return True
        mats = [self.term_covariance(k) for k, c in enumerate(self.mme.covariances) if c.structured]
        res = self.mme.residual
        if res is not None:
            mats += [d.matrix(e) for d, e in zip(res.dimensions, res.split(self.mme.eta(self.evaluation.theta)))
                     if d.n_params]
        for M in mats:
            w = np.linalg.eigvalsh(0.5 * (M + M.T))
            if w[0] <= 1e-6 * max(w[-1], 1e-300):
                return True
        return False

    def _residual_vanishes(self, ratio: float = 1e-4) -> bool:
        """True when ``sigma^2`` is below ``ratio`` times ``mean_i z_i' Sigma_k z_i`` for some random term ``k``
        (``z_i`` its columns at observation ``i``, times the mean diagonal of a known matrix) among the terms with at
        least as many effects as observations: the residual variance is on its boundary 0, which the
        parameterisation relative to it reaches only in the limit (a term that absorbs all residual variation)."""
        res = self.mme.residual
        if res is not None and res.has_variances:
            return False
        for k, blk in enumerate(self.mme.blocks):
            if blk.Z.shape[1] < self.mme.n:  # fewer effects than observations cannot take the residual's place
                continue
            Z = np.asarray(blk.X, dtype=float)
            added = float(np.mean(np.einsum("ij,jk,ik->i", Z, self.term_covariance(k), Z)))
            if blk.known is not None:
                added *= float(np.mean(blk.known.diagonal))
            if self.sigma2 < ratio * added:
                return True
        return False

    # ---- fixed effects --------------------------------------------------------------------
    @cached_property
    def vcov(self) -> pd.DataFrame:
        """Covariance of the fixed-effect estimates, ``sigma^2 (X'V~^-1 X)^-1``."""
        ev = self.evaluation
        p = self.mme.p
        if p == 0:
            return pd.DataFrame(np.zeros((0, 0)))
        cov = self.sigma2 * scipy.linalg.cho_solve((ev.schur_chol, True), np.eye(p))  # p x p
        return pd.DataFrame(cov, index=list(self.fixed_names), columns=list(self.fixed_names))

    @cached_property
    def _conditioned(self):
        """``(equations, evaluation)`` on the orthogonalised columns of the conditioned terms (None without)."""
        terms = self.optimizer.conditioned
        return conditioned_view(self.mme, self.evaluation.theta, terms) if terms else None

    @cached_property
    def _satterthwaite(self):
        # the df of a contrast of the fixed effects do not depend on how the covariance is parameterised
        mme, ev = self._conditioned or (self.mme, self.evaluation)
        return satterthwaite_state(mme, ev.theta, ev.sigma2)

    @cached_property
    def fixed_effects(self) -> pd.DataFrame:
        """Estimates, standard errors, Satterthwaite df, t values and two-sided p-values (as lmerTest)."""
        est = self.evaluation.beta
        se = np.sqrt(np.diag(self.vcov.to_numpy())) if self.mme.p else np.zeros(0)
        if self.mme.p:
            _, df = contrast_df(self._satterthwaite, np.eye(self.mme.p))
        else:
            df = np.zeros(0)
        t = est / se
        pval = 2.0 * scipy.stats.t.sf(np.abs(t), df)
        return pd.DataFrame({"estimate": est, "std_error": se, "df": df, "t_value": t, "p_value": pval},
                            index=pd.Index(list(self.fixed_names), name="coefficient"))

    def refit(self, method: str | None = None, **options) -> "FitResult":
        """Fit the same model again, e.g. by ML for a likelihood-ratio test of fixed effects, starting from this
        fit's covariance parameters (``options`` as in :meth:`lmmformula.LMM.fit`)."""
        if self.model is None:
            raise ModelSpecificationError("this fit does not know its model; build it with LMM.from_formula")
        options.setdefault("start", self.evaluation.theta)
        return self.model.fit(method=method or self.method, **options)

    def to_json(self, path=None) -> str:
        """The fit as a reproducible JSON record: formula, options, estimates (exact), tables, convergence
        history, package versions and a SHA-256 of the data; also written to ``path`` when given.

        Read it back with :meth:`from_json`.
        """
        return write_record(fit_record(self), path)

    @classmethod
    def from_json(cls, source, data=None, matrices: dict | None = None):
        """Read a record written by :meth:`to_json` (JSON text, a path or a parsed dict).

        Without ``data``: a :class:`~lmmformula.results.serialize.StoredFit` holding the estimates and tables.
        With the data (and ``matrices``) the fit used: a full :class:`FitResult` at the stored estimates, with
        no iterations; its numbers are bit-identical to the original's.  Other data are refused (their
        fingerprint differs).
        """
        record = read_record(source)
        if data is None:
            return StoredFit.from_record(record)
        from ..model import LMM  # the model sits above the results in the pipeline; imported only here

        return LMM(record["formula"], data, matrices=matrices).restore(record)

    # ---- random effects -------------------------------------------------------------------
    def _pev_blocks(self, k: int) -> np.ndarray:
        """Per-level PEV blocks ``Var(u_l - u_hat_l)``: ``sigma^2 Lk [C*^-1]_vv,ll Lk'`` (fixed effects absorbed)."""
        mme, ev = self.mme, self.evaluation
        blocks = mme.level_blocks(ev, self._selected_inverse, k, reml=True)
        cov = mme.covariances[k]
        t0, t1 = mme.theta_offsets[k], mme.theta_offsets[k + 1]
        L = cov.factor(ev.theta[t0:t1])
        return self.sigma2 * np.einsum("ab,lbc,dc->lad", L, blocks, L)

    @cached_property
    def _selected_inverse(self):
        return self.mme.factor_at(self.evaluation.theta).selected_inverse()

    @cached_property
    def _pev(self) -> list[np.ndarray]:
        return [self._pev_blocks(k) for k in range(len(self.mme.blocks))]

    @cached_property
    def random_effects(self) -> dict[str, pd.DataFrame]:
        """BLUPs per term: DataFrame indexed by level, one column per effect, then ``pev(<effect>)`` columns."""
        out = {}
        for k, blk in enumerate(self.mme.blocks):
            m = blk.n_columns
            u = self.evaluation.u[self.mme.offsets[k]:self.mme.offsets[k + 1]].reshape(blk.n_levels, m)
            pev = self._pev[k]
            data = {c: u[:, j] for j, c in enumerate(blk.columns)}
            data.update({f"pev({c})": pev[:, j, j] for j, c in enumerate(blk.columns)})
            out[blk.name] = pd.DataFrame(data, index=pd.Index(list(blk.factor.levels), name=blk.factor.name))
        return out

    @cached_property
    def shrinkage(self) -> pd.DataFrame:
        """Per term and effect: levels, observations per level, variance, reliability ``1 - PEV/sigma_u^2``
        (mean, min, max), the term's effective degrees of freedom ``edf = q - tr(G^-1 C^uu)`` and, for a
        one-effect term, the generalised heritability ``H2`` of Cullis et al. (2006)
        (:meth:`term_heritability`); per level: :meth:`shrinkage_detail`.

        For a term with a known matrix ``K`` the prior variance of level l is ``sigma_u^2 K_ll``
        (``sigma_a^2 (1 + F_l)`` in an animal model), and the reliability uses it.

        In a balanced one-way layout with no fixed effects the reliability is the
        seed's shrinkage factor ``n / (n + alpha)``, ``alpha = sigma_e^2 / sigma_u^2``.
        """
        rows = []
        for k, blk in enumerate(self.mme.blocks):
            S = self.term_covariance(k)
            edf = self._effective_df(k)
            h2 = self.term_heritability(blk.name) if blk.n_columns == 1 else np.nan
            counts = np.bincount(blk.factor.codes, minlength=blk.n_levels)
            prior = blk.known.diagonal if blk.known is not None else 1.0  # 1 + F for a relationship matrix
            for j, col in enumerate(blk.columns):
                var = S[j, j]
                rel = 1.0 - self._pev[k][:, j, j] / (var * prior) if var > 0 else np.full(blk.n_levels, np.nan)
                rows.append({"term": blk.name, "effect": col, "n_levels": blk.n_levels,
                             "obs_per_level": counts.mean(), "variance": var,
                             "reliability_mean": np.mean(rel), "reliability_min": np.min(rel),
                             "reliability_max": np.max(rel), "edf": edf, "H2": h2})
        return pd.DataFrame(rows)

    # ---- fitted values --------------------------------------------------------------------
    @cached_property
    def fitted_values(self) -> np.ndarray:
        """Conditional fitted values ``X b + Z u`` for the rows used."""
        return self.mme.y - self.evaluation.resid

    @cached_property
    def residuals(self) -> np.ndarray:
        """Conditional residuals ``y - X b - Z u``."""
        return self.evaluation.resid.copy()

    def summary(self):
        """A printable summary (text and HTML), in the layout of lme4's ``summary(lmer)``."""
        from .summary import Summary

        return Summary(self)

    def __repr__(self) -> str:
        return (f"<FitResult {self.method} '{self.formula}': logLik {self.loglik:.4f}, "
                f"{self.n_obs} obs, converged={self.converged}>")
