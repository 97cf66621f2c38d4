"""Wald F tests of fixed-effect hypotheses ``L b = 0`` and the type III hypotheses of each model term.

Type III (as lmerTest's ``anova(type = 3)``): the hypothesis of a term is that its coefficients are zero when
every factor is coded with sum-to-zero contrasts (so a main effect is averaged with equal weights over the levels
of the factors it interacts with; covariates are not centred, as in lmerTest).  With ``X_s`` that design and
``X`` the model's (treatment-coded) design, ``X_s b_s = X b`` gives ``b_s = X_s^+ X b``, and the term's rows of
``X_s^+ X`` are its hypothesis in the model's coefficients.

The F statistic of a ``q``-row hypothesis is ``F = (Lb)' (L Cov(b) L')^-1 (Lb) / q``.  Its denominator df
(Satterthwaite, as lmerTest's ``contestMD``): with ``L Cov(b) L' = P D P'``, each of the ``q`` independent
contrasts ``P_m' L b`` has Satterthwaite df ``nu_m``, and ``E = sum nu_m / (nu_m - 2)`` gives
``ddf = 2 E / (E - q)`` (``ddf = 2`` when some ``nu_m <= 2``; the common value when all ``nu_m`` agree).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import scipy.stats
from formulaic import Formula

from ..design.fixed import _independent_columns
from ..errors import ModelSpecificationError

__all__ = ["type3_hypotheses", "wald_test", "combine_df"]

_PLAIN_C = re.compile(r"^C\((?P<inner>[^,()]+(?:\([^()]*\))?)\)$")


def _sum_coded(expr: str) -> str:
    """The factor expression with sum-to-zero contrasts: ``Sex`` -> ``C(Sex, contr.sum)``."""
    m = _PLAIN_C.match(expr)
    inner = m.group("inner") if m else expr
    if expr.startswith("C(") and not m:
        raise ModelSpecificationError(
            f"type III tests need the default coding of '{expr}'; write the factor without contrast arguments")
    return f"C({inner}, contr.sum)"


def type3_hypotheses(spec, frame: pd.DataFrame, X: np.ndarray, kept: np.ndarray) -> dict[str, np.ndarray]:
    """Type III hypothesis matrix (rows: independent contrasts in the model's coefficients) of every term.

    Parameters
    ----------
    spec : formulaic.ModelSpec
        The fixed part's spec (treatment contrasts).
    frame : DataFrame
        The rows the model was fitted to.
    X : ndarray (n, p)
        The model's fixed-effect design (aliased columns removed).
    kept : ndarray of int
        Columns of the spec kept in ``X``.
    """
    categorical = {str(f) for f in spec.factor_contrasts}
    terms, names = [], []
    for term in spec.terms:
        factors = [str(f) for f in term.factors]
        if factors == ["1"]:
            terms.append("1")
            continue
        names.append(str(term))
        terms.append(":".join(_sum_coded(f) if f in categorical else f for f in factors))
    if "1" not in terms:
        terms.insert(0, "0")
    mm = Formula(" + ".join(terms)).get_model_matrix(frame, na_action="raise", output="numpy")
    Xs = np.asarray(mm, dtype=float)
    # columns aliased with earlier ones (unused categories, empty cells, collinear covariates) carry no
    # hypothesis: drop them, as for X, so that b_s = X_s^+ X b is unique
    keep = np.asarray(_independent_columns(Xs), dtype=int)
    position = {j: i for i, j in enumerate(keep)}
    T, *_ = np.linalg.lstsq(Xs[:, keep], X, rcond=None)
    slices = {str(t): s for t, s in mm.model_spec.term_slices.items()}
    if len(names) == 1:
        return {names[0]: _single_term_rows(spec, X, kept)}
    exact = _contained_orthogonal_rows(spec, frame, X, kept)
    if exact is not None:
        return exact
    out = {}
    for name in names:
        sl = slices[_sum_term_name(name, categorical, slices)]
        rows = [position[j] for j in range(sl.start, sl.stop) if j in position]
        out[name] = _independent_rows(T[rows]) if rows else np.zeros((0, X.shape[1]))
    return out


def _contained_orthogonal_rows(spec, frame: pd.DataFrame, X: np.ndarray, kept: np.ndarray):
    """lmerTest's construction of type III hypotheses for treatment contrasts (its ``extract_contrasts_type3``).

    With ``D`` the over-parameterised design (an intercept and every term coded with all its levels, ``~ 0 +
    term``), ``L = (X^+ D)'`` expresses each over-parameterised effect in the model's coefficients; from the
    highest-order terms down, the columns of a term are replaced by their residuals on the columns of the terms
    that contain it (same covariates, a strict superset of the factors); the rows of ``L`` that are the model's
    own columns then give, column by column, each term's hypothesis.  It equals the sum-to-zero construction in
    ordinary factorial models; where a factor enters only through interactions it reproduces lmerTest's choices
    (which follow R's coding of the terms' factors).  Returns None when
    the over-parameterised design cannot be built (the caller falls back to the sum-to-zero construction).
    """
    categorical = {str(f) for f in spec.factor_contrasts}
    terms = [t for t in spec.terms if [str(f) for f in t.factors] != ["1"]]
    try:
        blocks = [np.asarray(Formula(f"0 + {t}").get_model_matrix(frame, na_action="raise", output="numpy"),
                             dtype=float) for t in terms]
    except Exception:
        return None
    has_intercept = any([str(f) for f in t.factors] == ["1"] for t in spec.terms)
    D = np.column_stack(([np.ones(len(frame))] if has_intercept else []) + blocks)
    L = np.linalg.lstsq(X, D, rcond=None)[0].T            # (columns of D) x (coefficients)
    L[np.abs(L) < 1e-7 * max(np.abs(L).max(), 1.0)] = 0.0
    # the model's columns (by name in the spec) per term
    names = [str(t) for t in terms]
    cols = {n: [i for i, j in enumerate(kept) if spec.term_slices[t].start <= j < spec.term_slices[t].stop]
            for n, t in zip(names, terms)}
    factors = {n: frozenset(str(f) for f in t.factors) for n, t in zip(names, terms)}
    present = set(factors.values()) | ({frozenset()} if has_intercept else set())
    # R's terms "factors" coding: a variable counts for containment (code 1) only when the term without it is
    # also in the model (the empty term: the intercept); lmerTest's containment reads only those
    vars_ = {n: {v for v in factors[n] if factors[n] - {v} in present} for n in names}
    numerics = {n: {v for v in vars_[n] if v not in categorical} for n in names}
    order = sorted(names, key=lambda n: -len(factors[n]))
    for n in order:
        contains = [m for m in names if m != n and vars_[n] <= vars_[m] and vars_[m] - vars_[n]
                    and numerics[n] == numerics[m]]
        if contains:
            C = L[:, [c for m in contains for c in cols[m]]]
            Y = L[:, cols[n]]
            L[:, cols[n]] = Y - C @ np.linalg.lstsq(C, Y, rcond=None)[0]
    # rows of L that are the model's own columns: the column of D equal to each column of X
    rows = []
    for j in range(X.shape[1]):
        match = np.flatnonzero(np.all(np.abs(D - X[:, [j]]) <= 1e-10 * (1.0 + np.abs(X[:, [j]])), axis=0))
        if match.size == 0:
            return None
        rows.append(match[0])
    L = L[rows]
    out = {}
    for n in names:
        T = L[:, cols[n]].T
        out[n] = T[np.abs(T).sum(axis=1) > 1e-8]
    return out


def _single_term_rows(spec, X: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """The hypothesis of the only term of a model, in lmerTest's basis for that case (its type I rows: the
    rows of the term's columns in the Doolittle factor of ``X'X``, i.e. ``R_j. / R_jj`` with ``X'X = R'R``);
    the F statistic does not depend on the basis, the multi-df Satterthwaite ddf does."""
    term = [t for t in spec.terms if [str(f) for f in t.factors] != ["1"]][0]
    sl = spec.term_slices[term]
    cols = [i for i, j in enumerate(kept) if sl.start <= j < sl.stop]
    R = np.linalg.cholesky(X.T @ X).T
    return R[cols] / np.diag(R)[cols][:, None]


def _sum_term_name(name: str, categorical: set[str], slices: dict) -> str:
    """The name formulaic gives the sum-coded version of a term."""
    rebuilt = ":".join(_sum_coded(f) if f in categorical else f for f in name.split(":"))
    if rebuilt in slices:
        return rebuilt
    for key in slices:  # formulaic may order the factors of an interaction differently
        if sorted(key.split(":")) == sorted(rebuilt.split(":")):
            return key
    raise KeyError(name)


def _independent_rows(L: np.ndarray, tol: float = 1e-8) -> np.ndarray:
    """An orthonormal basis of the row space of ``L`` (the hypothesis is unchanged)."""
    if L.size == 0:
        return L
    U, s, Vt = np.linalg.svd(L, full_matrices=False)
    keep = s > tol * max(s.max(), 1e-300)
    return Vt[keep]


def combine_df(nu: np.ndarray, tol: float = 1e-8) -> float:
    """Denominator df of an F statistic from the df of its independent t statistics (module docstring)."""
    nu = np.asarray(nu, dtype=float)
    if nu.size == 1:
        return float(nu[0])
    if np.any(np.isnan(nu)):
        return float("nan")
    if np.all(np.abs(np.diff(nu)) < tol):
        return float(np.mean(nu))
    if np.any(nu <= 2):
        return 2.0
    E = float(np.sum(nu / (nu - 2.0)))
    return 2.0 * E / (E - nu.size)


def wald_test(beta: np.ndarray, vcov: np.ndarray, L: np.ndarray, df_of) -> tuple[float, int, float, float]:
    """F statistic, numerator df, denominator df and p-value of ``L b = 0``.

    Parameters
    ----------
    beta, vcov : estimates and their covariance
    L : ndarray (r, p)
    df_of : callable
        Maps a matrix of contrasts (rows) to their denominator df (Satterthwaite, Kenward-Roger or residual);
        called with the ``q`` independent contrasts ``P_m' L``.
    """
    L = np.atleast_2d(L)
    VL = L @ vcov @ L.T
    d, P = np.linalg.eigh(0.5 * (VL + VL.T))
    order = np.argsort(d)[::-1]
    d, P = d[order], P[:, order]
    keep = d > 1e-8 * max(d[0], 1e-300) if d.size else np.zeros(0, dtype=bool)
    q = int(keep.sum())
    if q == 0:
        return float("nan"), 0, float("nan"), float("nan")
    PL = P[:, keep].T @ L
    t2 = (PL @ beta) ** 2 / d[keep]
    F = float(t2.sum() / q)
    ddf = combine_df(df_of(PL))
    p = float(scipy.stats.f.sf(F, q, ddf)) if np.isfinite(ddf) else float("nan")
    return F, q, ddf, p
