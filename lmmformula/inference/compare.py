"""Likelihood-ratio comparison of nested fits, with information criteria.

``2 (l_big - l_small)`` is referred to ``chi^2`` with the difference in the number of parameters.  When the
extra parameters are one new random effect whose variance is tested on its boundary (0), the null distribution
is the 50:50 mixture of ``chi^2_{d-1}`` and ``chi^2_d`` (Self & Liang 1987; Stram & Lee 1994; ``chi^2_0`` is a
point mass at 0), reported as ``p_boundary``.  REML likelihoods of models with different fixed effects are not
comparable (the REML criterion depends on X), so such comparisons are refused.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.stats

from ..errors import ModelSpecificationError

__all__ = ["compare"]


def _same_column_space(X1: np.ndarray, X2: np.ndarray) -> bool:
    r1, r2 = np.linalg.matrix_rank(X1), np.linalg.matrix_rank(X2)
    return r1 == r2 == np.linalg.matrix_rank(np.hstack([X1, X2]))


def _variance_keys(fit) -> tuple[set, set]:
    """Keys of a fit's variances and of all its covariance parameters: ``(term, sorted columns)`` for an
    unstructured term's entries (so that ``(1 | g)``'s variance is ``(Intercept | g)``'s), names otherwise."""
    keys, variances = set(), set()
    for blk, cov in zip(fit.mme.blocks, fit.mme.covariances):
        pairs = getattr(cov, "parameters", None)
        if cov.structured or pairs is None:
            names = [(blk.name, nm) for nm in cov.parameter_names()]
            keys.update(names)
            variances.update(k for k in names if k[1] == "variance" or k[1].startswith("var"))
            continue
        for a, b in pairs:
            key = (blk.name, tuple(sorted((blk.columns[a], blk.columns[b]))))
            keys.add(key)
            if a == b:
                variances.add(key)
    return variances, keys


def _one_new_random_effect(small, big) -> bool:
    """The big model has the small one's covariance parameters and exactly one more variance (with any
    covariances of the new effect): the case of Stram & Lee's 50:50 mixture."""
    v_small, k_small = _variance_keys(small)
    v_big, k_big = _variance_keys(big)
    return k_small <= k_big and len(v_big - v_small) == 1


def compare(*fits) -> pd.DataFrame:
    """Compare fits of nested models to the same data: AIC, BIC, log-likelihood and likelihood-ratio tests.

    Parameters
    ----------
    *fits : FitResult
        Two or more fits to the same rows, all REML or all ML (REML only when the fixed effects are the same).

    Returns
    -------
    DataFrame
        One row per fit, ordered by the number of parameters: ``n_params``, ``AIC``, ``BIC``, ``loglik``,
        ``chi2``, ``df``, ``p_value`` and, when the bigger model adds exactly one random effect (one new variance,
        with its covariances) to the same fixed effects, ``p_boundary`` (each test against the row above).
    """
    if len(fits) < 2:
        raise ModelSpecificationError(
            f"compare needs at least two fits, got {len(fits)}; pass the fits of the models to compare, e.g. "
            "compare(small, big)")
    for i, f in enumerate(fits):
        if not all(hasattr(f, a) for a in ("mme", "method", "loglik", "n_params")):
            raise ModelSpecificationError(
                f"compare takes fitted models (the result of LMM.fit()); argument {i + 1} is of type "
                f"{type(f).__name__}. Call .fit() on a model before comparing it")
    methods = {f.method for f in fits}
    if len(methods) > 1:
        raise ModelSpecificationError("compare needs fits of one method; refit them with fit.refit(method='ML')")
    y0 = fits[0].mme.y
    for f in fits[1:]:
        if f.mme.y.shape != y0.shape or not np.array_equal(f.mme.y, y0):
            raise ModelSpecificationError(
                "the fits use different observations (responses or rows differ: check missing values in columns "
                "used by one model only); likelihoods of different data are not comparable")
    if methods == {"REML"}:
        X0 = fits[0].mme.X
        for f in fits[1:]:
            if not _same_column_space(f.mme.X, X0):
                raise ModelSpecificationError(
                    "REML likelihoods of models with different fixed effects are not comparable; refit both by "
                    "ML: compare(a.refit(method='ML'), b.refit(method='ML'))")
    order = sorted(range(len(fits)), key=lambda i: fits[i].n_params)
    rows = []
    for pos, i in enumerate(order):
        f = fits[i]
        row = {"model": f.formula, "n_params": f.n_params, "AIC": f.aic, "BIC": f.bic, "loglik": f.loglik,
               "chi2": np.nan, "df": np.nan, "p_value": np.nan, "p_boundary": np.nan}
        if pos:
            prev = fits[order[pos - 1]]
            d = f.n_params - prev.n_params
            stat = max(2.0 * (f.loglik - prev.loglik), 0.0)
            row.update(chi2=stat, df=d)
            if d > 0:
                row["p_value"] = float(scipy.stats.chi2.sf(stat, d))
                if _same_column_space(f.mme.X, prev.mme.X) and _one_new_random_effect(prev, f):
                    lower = float(scipy.stats.chi2.sf(stat, d - 1)) if d > 1 else float(stat <= 0.0)
                    row["p_boundary"] = 0.5 * (lower + row["p_value"])
        rows.append(row)
    return pd.DataFrame(rows).set_index("model")
