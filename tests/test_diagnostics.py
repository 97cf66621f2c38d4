"""Residuals, variogram, shrinkage per level, effective df and generalised heritability."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import lmmformula as lmf
from conftest import load_data


@settings(max_examples=15, deadline=None)
@given(st.integers(3, 8), st.integers(2, 6), st.integers(0, 10_000))
def test_one_way_shrinkage_and_heritability_are_n_over_n_plus_alpha(n_levels, n_per, seed):
    """Balanced one-way layout: every level's shrinkage factor and the Cullis H^2 are n / (n + alpha)."""
    rng = np.random.default_rng(seed)
    g = np.repeat([f"g{i}" for i in range(n_levels)], n_per)
    y = np.repeat(rng.normal(0, 2.0, n_levels), n_per) + rng.normal(0, 1.0, g.size)
    d = pd.DataFrame({"y": y, "g": g})
    fit = lmf.LMM.from_formula("y ~ 1 + (1 | g)", d).fit()
    var_u = fit.term_covariance(0)[0, 0]
    assume(var_u > 1e-6 * fit.sigma2)  # a zero variance has no shrinkage factor to compare
    factor = n_per / (n_per + fit.sigma2 / var_u)
    detail = fit.shrinkage_detail("g")
    np.testing.assert_allclose(detail["shrinkage((Intercept))"], factor, rtol=1e-8)
    mu = fit.fixed_effects.estimate.iloc[0]
    np.testing.assert_allclose(detail["unshrunk((Intercept))"], d.groupby("g").y.mean().loc[detail.index] - mu,
                               rtol=1e-8, atol=1e-10)
    assert fit.term_heritability("g") == pytest.approx(factor, rel=1e-8)
    assert fit.shrinkage.H2.iloc[0] == pytest.approx(factor, rel=1e-8)


def _dense_cuu(fit):
    """sigma^2 times the random block of the inverse of Henderson's MME (dense)."""
    X, Z = fit.mme.X, fit.mme.Z.toarray()
    G = np.kron(np.eye(fit.mme.blocks[0].n_levels), fit.term_covariance(0))
    C = np.block([[X.T @ X, X.T @ Z], [Z.T @ X, Z.T @ Z + fit.sigma2 * np.linalg.inv(G)]])
    p = X.shape[1]
    return fit.sigma2 * np.linalg.inv(C)[p:, p:], G


def test_effective_df_equals_the_dense_trace():
    fit = lmf.LMM.from_formula("Reaction ~ Days + (Days | Subject)", load_data("sleepstudy.csv")).fit()
    Cuu, G = _dense_cuu(fit)
    assert fit.shrinkage.edf.iloc[0] == pytest.approx(G.shape[0] - np.trace(np.linalg.solve(G, Cuu)), rel=1e-7)
    # per-level PEV blocks are the diagonal blocks of C^uu
    detail = fit.shrinkage_detail("Subject")
    np.testing.assert_allclose(detail["pev(Days)"], np.diag(Cuu)[1::2], rtol=1e-7)


def test_heritability_equals_the_dense_mean_pev_of_differences():
    data = load_data("Penicillin.csv")
    fit = lmf.LMM.from_formula("diameter ~ 1 + (1 | plate)", data).fit()
    Cuu, _ = _dense_cuu(fit)
    n = Cuu.shape[0]
    v = np.mean([Cuu[i, i] + Cuu[j, j] - 2 * Cuu[i, j] for i, j in itertools.combinations(range(n), 2)])
    assert fit.term_heritability("plate") == pytest.approx(1 - v / (2 * fit.term_covariance(0)[0, 0]), rel=1e-8)


def test_standardized_residuals_whiten_the_residual_covariance():
    data = load_data("slatehall")
    fit = lmf.LMM.from_formula("yield ~ gen + ar1(row):ar1(col)", data).fit()
    z = fit.standardized_residuals
    W = fit.mme.products(fit.evaluation.theta).W
    e = fit.residuals
    assert z @ z == pytest.approx(e @ (W @ e) / fit.sigma2, rel=1e-10)
    iid = lmf.LMM.from_formula("yield ~ gen + (1 | rep)", data).fit()
    np.testing.assert_allclose(iid.standardized_residuals, iid.residuals / np.sqrt(iid.sigma2))
    np.testing.assert_allclose(iid.marginal_residuals, iid.mme.y - iid.mme.X @ iid.evaluation.beta)


def test_variogram_equals_brute_force_over_pairs():
    data = load_data("stroup_nin")  # fill plots missing: an incomplete grid
    fit = lmf.LMM.from_formula("yield ~ gen + ar1(row):ar1(col)", data).fit()
    vg = fit.variogram(max_lag=3).set_index(["row_lag", "col_lag"])
    r = fit.mme.residual.dimensions[0].positions
    c = fit.mme.residual.dimensions[1].positions
    e = fit.residuals
    sums, counts = {}, {}
    for i, j in itertools.combinations(range(e.size), 2):
        key = (abs(r[i] - r[j]), abs(c[i] - c[j]))
        if max(key) <= 3:
            sums[key] = sums.get(key, 0.0) + 0.5 * (e[i] - e[j]) ** 2
            counts[key] = counts.get(key, 0) + 1
    for key, total in sums.items():
        assert vg.loc[key, "n_pairs"] == counts[key]
        assert vg.loc[key, "gamma"] == pytest.approx(total / counts[key], rel=1e-10)
    named = fit.variogram(row="row", col="col", max_lag=3)
    np.testing.assert_allclose(named.gamma, vg.gamma.to_numpy())


def test_diagnostics_errors_name_the_problem():
    fit = lmf.LMM.from_formula("Reaction ~ Days + (Days | Subject)", load_data("sleepstudy.csv")).fit()
    with pytest.raises(lmf.LMMError, match="name them"):
        fit.variogram()
    with pytest.raises(lmf.LMMError, match="unknown random term"):
        fit.shrinkage_detail("Subjekt")
    with pytest.raises(lmf.LMMError, match="one effect"):
        fit.term_heritability("Subject")
    assert np.isnan(fit.shrinkage.H2).all()
