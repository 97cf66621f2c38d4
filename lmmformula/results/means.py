"""Predicted (marginal) means of the fixed part, as emmeans or ASReml's ``predict(classify = ...)``.

The reference grid crosses the levels of every factor of the fixed part (covariates at their mean).  The mean of
a level of the classifying factor(s) is the equal-weight average of the grid's predictions at that level:
``L b`` with ``L`` the averaged rows of the grid's design.  Its standard error is ``sqrt(l' Cov(b) l)``; the
standard error of a difference of two means (SED) is ``sqrt((l_i - l_j)' Cov(b) (l_i - l_j))``; each mean and
each difference gets its own denominator df (Kenward-Roger with its adjusted covariance, or Satterthwaite).
A mean whose ``l`` is not a combination of the rows of ``X`` (an empty cell of an interaction) is not estimable
and is reported as NaN.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.stats

from ..errors import ModelSpecificationError

__all__ = ["PredictedMeans", "reference_grid", "mean_weights"]


@dataclass(frozen=True)
class PredictedMeans:
    """Predicted means of the levels of ``classify``.

    Attributes
    ----------
    classify : tuple of str
    ddf : str
        The denominator df method ("kenward-roger" or "satterthwaite").
    table : DataFrame
        One row per level: ``estimate``, ``std_error``, ``df``, ``ci_lower``, ``ci_upper`` (95%).
    sed : DataFrame
        Standard errors of differences, level by level.
    pairs : DataFrame
        Every pairwise difference (``a - b``): ``estimate``, ``std_error``, ``df``, ``t_value``, ``p_value``
        (unadjusted for multiplicity).
    L : ndarray
        The rows ``l`` of the means in the model's coefficients.
    """

    classify: tuple[str, ...]
    ddf: str
    table: pd.DataFrame
    sed: pd.DataFrame
    pairs: pd.DataFrame
    L: np.ndarray

    @property
    def average_sed(self) -> float:
        """Mean of the standard errors of all pairwise differences (ASReml's avsed)."""
        return float(self.pairs["std_error"].mean())

    def ranked(self) -> pd.DataFrame:
        """:attr:`table` sorted by estimate, largest first, with a ``rank`` column."""
        out = self.table.sort_values("estimate", ascending=False).copy()
        out.insert(0, "rank", np.arange(1, len(out) + 1))
        return out


def _categorical_variables(spec, frame: pd.DataFrame) -> dict[str, list]:
    """Levels of every variable that enters the fixed part as a factor (directly or through ``C(x)``)."""
    out = {}
    coded = {str(f): state.levels for f, state in spec.factor_contrasts.items()}
    for factor, variables in spec.factor_variables.items():
        if str(factor) not in coded:
            continue
        for v in variables:
            if v in frame.columns:
                col = frame[v]
                if isinstance(col.dtype, pd.CategoricalDtype):
                    out[v] = [c for c in col.cat.categories if (col == c).any()]
                else:
                    out[v] = sorted(col.unique().tolist())
    return out


def reference_grid(spec, frame: pd.DataFrame) -> pd.DataFrame:
    """Every combination of the factor levels of the fixed part, covariates at their mean."""
    factors = _categorical_variables(spec, frame)
    numeric = [v for v in sorted(spec.required_variables) if v in frame.columns and v not in factors]
    names = list(factors)
    grid = pd.DataFrame(list(itertools.product(*factors.values())), columns=names) if names else pd.DataFrame(
        index=[0])
    for v in names:
        if isinstance(frame[v].dtype, pd.CategoricalDtype):
            grid[v] = pd.Categorical(grid[v], categories=frame[v].cat.categories)
    for v in numeric:
        grid[v] = float(frame[v].mean())
    return grid


def mean_weights(spec, frame: pd.DataFrame, classify: tuple[str, ...]):
    """The levels of ``classify`` and the rows ``L`` (equal-weight averages of the reference grid's design, all
    columns of the spec, aliased ones included)."""
    grid = reference_grid(spec, frame)
    missing = [c for c in classify if c not in grid.columns or c not in _categorical_variables(spec, frame)]
    if missing:
        factors = sorted(_categorical_variables(spec, frame))
        raise ModelSpecificationError(
            f"predict_means needs factors of the fixed part; {missing} is not one (factors: {factors}). "
            "Add the factor to the fixed part or choose one of these")
    Xg = np.asarray(spec.get_model_matrix(grid, output="numpy"), dtype=float)
    keys = grid[list(classify)].astype(object).apply(tuple, axis=1)
    levels = list(dict.fromkeys(keys))
    L = np.vstack([Xg[(keys == lev).to_numpy()].mean(axis=0) for lev in levels])
    return levels, L


def _classify_names(classify) -> tuple[str, ...]:
    """``classify`` as a tuple of distinct column names."""
    names = (classify,) if isinstance(classify, str) else classify
    try:
        names = tuple(names)
    except TypeError:
        names = None
    if not names or not all(isinstance(c, str) for c in names):
        raise ModelSpecificationError(
            f"classify must be the name of a factor of the fixed part or a list of names, got {classify!r}; "
            "e.g. fit.predict_means('variety')")
    if len(set(names)) != len(names):
        raise ModelSpecificationError(f"classify names a factor twice ({list(names)}); name each factor once")
    return names


def predicted_means(fit, classify, ddf: str) -> PredictedMeans:
    """See :meth:`lmmformula.FitResult.predict_means`."""
    classify = _classify_names(classify)
    method = fit._ddf_method(ddf)
    spec, kept = fit.fixed_design.spec, fit.fixed_design.kept
    levels, L_full = mean_weights(spec, fit.frame, classify)
    # estimable: l in the row space of the full design (aliased columns included; the fit's X has them removed)
    X_full = np.asarray(spec.get_model_matrix(fit.frame, output="numpy"), dtype=float)
    estimable = np.linalg.norm(L_full - (L_full @ np.linalg.pinv(X_full)) @ X_full, axis=1) <= 1e-6 * np.maximum(
        np.linalg.norm(L_full, axis=1), 1.0)
    L = L_full[:, kept]
    V = fit._vcov_for(method)
    df_of = fit._df_function(method)
    beta = fit.evaluation.beta
    label = [":".join(str(x) for x in lev) for lev in levels]
    est = np.where(estimable, L @ beta, np.nan)
    se = np.where(estimable, np.sqrt(np.einsum("rp,pq,rq->r", L, V, L)), np.nan)
    df = np.full(len(levels), np.nan)
    if estimable.any():
        df[estimable] = df_of(L[estimable])
    tq = scipy.stats.t.ppf(0.975, df)
    table = pd.DataFrame({"estimate": est, "std_error": se, "df": df, "ci_lower": est - tq * se,
                          "ci_upper": est + tq * se}, index=pd.Index(label, name=":".join(classify)))
    pairs_idx = list(itertools.combinations(range(len(levels)), 2))
    D = np.array([L[i] - L[j] for i, j in pairs_idx]).reshape(len(pairs_idx), L.shape[1])
    ok = np.array([estimable[i] and estimable[j] for i, j in pairs_idx], dtype=bool)
    d_est = np.where(ok, D @ beta, np.nan)
    d_se = np.where(ok, np.sqrt(np.einsum("rp,pq,rq->r", D, V, D)), np.nan)
    d_df = np.full(len(pairs_idx), np.nan)
    if ok.any():
        d_df[ok] = df_of(D[ok])
    with np.errstate(divide="ignore", invalid="ignore"):
        t = d_est / d_se
    pairs = pd.DataFrame({"estimate": d_est, "std_error": d_se, "df": d_df, "t_value": t,
                          "p_value": 2.0 * scipy.stats.t.sf(np.abs(t), d_df)},
                         index=pd.Index([f"{label[i]} - {label[j]}" for i, j in pairs_idx], name="contrast"))
    sed = np.zeros((len(levels), len(levels)))
    for (i, j), s in zip(pairs_idx, d_se):
        sed[i, j] = sed[j, i] = s
    return PredictedMeans(classify=classify, ddf=method, table=table,
                          sed=pd.DataFrame(sed, index=label, columns=label), pairs=pairs, L=L)
