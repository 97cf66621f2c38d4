"""Structured covariances among the columns of a random term: ar1(...), cs(...), toep(...), ma(...).

References: glmmTMB (ar1) and nlme (pdCompSymm) golden values from tests/golden/generate_gside.R, and an
independent dense REML/ML built from the reported variance and correlations.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lmmformula as lmf
from conftest import gaussian_loglik

HERE = Path(__file__).parent
GOLDEN = json.loads((HERE / "golden" / "gside.json").read_text())


def _load(name: str) -> pd.DataFrame:
    return pd.read_csv(HERE / "data" / name)


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=lambda c: c["name"])
def test_against_reference(case):
    fit = lmf.LMM.from_formula(case["formula"], _load(case["data"])).fit("REML" if case["REML"] else "ML")
    assert fit.converged
    vc = fit.variance_components.query("term != 'residual'").set_index("parameter")
    if case["name"] == "sleepstudy_ar1_reml":
        # glmmTMB stops on the boundary (residual variance ~1e-4) 2.5 units below our interior optimum
        assert fit.loglik > case["loglik"] + 2.0
        assert vc.loc["variance", "estimate"] > 0 and fit.sigma2 > 100
        return
    assert fit.loglik == pytest.approx(case["loglik"], abs=1e-5)
    ref_b = np.array(list(case["fixef"].values()))
    ref_se = np.array(list(case["fixef_se"].values()))
    np.testing.assert_allclose(fit.fixed_effects["estimate"], ref_b, rtol=1e-4, atol=1e-8)
    # glmmTMB's SEs come from the joint Hessian of (beta, theta); nlme's, like ours, from (X'V^-1X)^-1
    np.testing.assert_allclose(fit.fixed_effects["std_error"], ref_se,
                               rtol=2e-3 if case["software"] == "glmmTMB" else 1e-5)
    rho_name = [p for p in vc.index if p.startswith("rho")][0]
    assert vc.loc["variance", "estimate"] == pytest.approx(case["variance"], rel=1e-4)
    assert vc.loc[rho_name, "estimate"] == pytest.approx(case["rho"], abs=1e-4)
    assert fit.sigma2 == pytest.approx(case["residual_variance"], rel=1e-4)


def _dense_loglik(fit, corr) -> float:
    """REML/ML log-likelihood from a dense V = Z (I (x) s2_g C) Z' + s2 I built from the reported estimates."""
    X, y = fit.mme.X, fit.mme.y
    blk = fit.mme.blocks[0]
    vc = fit.variance_components
    est = vc[vc.term == blk.name]["estimate"].to_numpy()
    G = np.kron(np.eye(blk.n_levels), est[0] * corr(est[1:], blk.n_columns))
    Z = blk.Z.toarray()
    V = Z @ G @ Z.T + fit.sigma2 * np.eye(y.size)
    return gaussian_loglik(V, X, y, fit.method)[0]


def _lags(m):
    i = np.arange(m)
    return np.abs(i[:, None] - i[None, :])


CORR = {
    "ar1": lambda r, m: r[0] ** _lags(m),
    "cs": lambda r, m: np.where(_lags(m) == 0, 1.0, r[0]),
    "toep": lambda r, m: np.concatenate([[1.0], r, np.zeros(m)])[_lags(m)],
}


def _simulate(seed, n_sub, n_t, reps, rho=0.5):
    rng = np.random.default_rng(seed)
    s = np.repeat(np.arange(n_sub), n_t * reps)
    t = np.tile(np.repeat(np.arange(n_t), reps), n_sub)
    C = rho ** _lags(n_t)
    u = rng.multivariate_normal(np.zeros(n_t), 2.0 * C, size=n_sub)
    y = 1.0 + 0.2 * t + u[s, t] + rng.normal(size=s.size)
    return pd.DataFrame({"y": y, "s": [f"s{k}" for k in s], "t": t, "x": rng.normal(size=s.size)})


@pytest.mark.parametrize("formula,kind", [
    ("y ~ t + ar1(0 + factor(t) | s)", "ar1"),
    ("y ~ t + cs(0 + factor(t) | s)", "cs"),
    ("y ~ t + toep(0 + factor(t) | s)", "toep"),
    ("y ~ t + toep(0 + factor(t) | s, 2)", "toep"),
    ("y ~ t + ma(0 + factor(t) | s, 1)", "toep"),
])
@pytest.mark.parametrize("method", ["REML", "ML"])
def test_dense_oracle_and_optimum(formula, kind, method):
    """The optimum's log-likelihood equals the dense formula, and no move of a parameter improves it."""
    df = _simulate(3, 25, 4, 2)
    fit = lmf.LMM.from_formula(formula, df).fit(method)
    assert fit.converged
    assert fit.loglik == pytest.approx(_dense_loglik(fit, CORR[kind]), abs=1e-8)
    mme = fit.mme
    for i in range(mme.n_params):
        for h in (1e-3, -1e-3):
            e = np.zeros(mme.n_params)
            e[i] = h
            try:
                dev = mme.evaluate(mme.canonical(fit.theta + e)).deviance
            except np.linalg.LinAlgError:
                continue
            assert -0.5 * dev <= fit.loglik + 1e-9


def test_names_covariance_and_correlation():
    df = _simulate(1, 20, 4, 2)
    fit = lmf.LMM.from_formula("y ~ t + toep(0 + factor(t) | s, 2)", df).fit()
    vc = fit.variance_components
    assert list(vc.parameter) == ["variance", "rho1(t)", "rho2(t)", "variance"]
    est = vc.estimate.to_numpy()
    cov = fit.covariance("s")
    np.testing.assert_allclose(cov.to_numpy(), est[0] * CORR["toep"](est[1:3], 4), rtol=1e-10, atol=1e-12)
    assert list(cov.index) == ["factor(t)0", "factor(t)1", "factor(t)2", "factor(t)3"]
    np.testing.assert_allclose(fit.correlation("s").to_numpy(), CORR["toep"](est[1:3], 4), rtol=1e-10, atol=1e-12)
    assert np.all(np.isfinite(vc.std_error))


def test_unidentified_toeplitz_has_no_standard_errors():
    """One observation per (subject, time): the Toeplitz variance and the residual variance share the
    diagonal, so the information matrix is singular and no standard error is reported."""
    fit = lmf.LMM.from_formula("y ~ t + toep(0 + factor(t) | s)", _simulate(1, 20, 4, 1)).fit()
    assert fit.variance_components.std_error.isna().all()


def test_cs_equals_nested_intercepts():
    """cs(0 + Variety | Block) with rho >= 0 is (1 | Block) + (1 | Block:Variety): same REML optimum."""
    oats = _load("Oats.csv")
    cs = lmf.LMM.from_formula("yield ~ nitro + cs(0 + Variety | Block)", oats).fit()
    nested = lmf.LMM.from_formula("yield ~ nitro + (1 | Block) + (1 | Block:Variety)", oats).fit()
    assert cs.loglik == pytest.approx(nested.loglik, abs=1e-7)
    vc = cs.variance_components.query("term != 'residual'").set_index("parameter")["estimate"]
    nv = nested.variance_components["estimate"].to_numpy()
    assert vc["variance"] * vc["rho(Variety)"] == pytest.approx(nv[0], rel=1e-5)   # Block
    assert vc["variance"] * (1 - vc["rho(Variety)"]) == pytest.approx(nv[1], rel=1e-5)  # Block:Variety


def test_ar1_columns_with_missing_cells_and_shuffled_rows():
    df = _simulate(5, 30, 5, 2).drop(index=[3, 17, 40, 41, 88, 89, 150]).reset_index(drop=True)
    fit = lmf.LMM.from_formula("y ~ t + ar1(0 + factor(t) | s)", df).fit()
    shuffled = df.sample(frac=1.0, random_state=0)
    fit2 = lmf.LMM.from_formula("y ~ t + ar1(0 + factor(t) | s)", shuffled).fit()
    assert fit.converged and fit2.converged
    assert fit.loglik == pytest.approx(_dense_loglik(fit, CORR["ar1"]), abs=1e-8)
    assert fit2.loglik == pytest.approx(fit.loglik, abs=1e-7)
    np.testing.assert_allclose(fit2.variance_components.estimate, fit.variance_components.estimate, rtol=1e-4)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n_sub=st.integers(6, 15), n_t=st.integers(2, 5),
       reps=st.integers(1, 2), kind=st.sampled_from(["ar1", "cs", "toep"]), rho=st.floats(-0.3, 0.8))
def test_property_loglik_is_dense_loglik(seed, n_sub, n_t, reps, kind, rho):
    """At the reported optimum of any small design, our log-likelihood is the dense one."""
    df = _simulate(seed, n_sub, n_t, reps, rho)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lmf.ConvergenceWarning)
        fit = lmf.LMM.from_formula(f"y ~ t + {kind}(0 + factor(t) | s)", df).fit()
    assert fit.loglik == pytest.approx(_dense_loglik(fit, CORR[kind]), abs=1e-7)


def _met(seed, ng=30, ne=4, reps=2):
    rng = np.random.default_rng(seed)
    lam = np.array([[1.0, 0.0], [0.8, 0.5], [0.6, -0.4], [0.9, 0.2], [0.5, 0.5]])[:ne]
    G = lam @ lam.T + np.diag([0.2, 0.3, 0.1, 0.25, 0.2][:ne])
    u = rng.multivariate_normal(np.zeros(ne), G, size=ng)
    rows = [(f"g{g:02d}", f"E{e + 1}", 5 + e + u[g, e] + rng.normal() * 0.7)
            for g in range(ng) for e in range(ne) for _ in range(reps)]
    return pd.DataFrame(rows, columns=["gen", "env", "y"])


def _fa_dense_loglik(fit):
    """Dense REML/ML with G = I (x) (Lambda Lambda' + Psi) rebuilt from the reported loadings and psi."""
    vc = fit.variance_components.query("term == 'gen'").set_index("parameter")["estimate"]
    blk = fit.mme.blocks[0]
    labels = [c[len("env"):] for c in blk.columns]
    k = max(int(p[len("loading")]) for p in vc.index if p.startswith("loading"))
    lam = np.zeros((len(labels), k))
    for i, lab in enumerate(labels):
        for j in range(k):
            lam[i, j] = vc.get(f"loading{j + 1}({lab})", 0.0)
    S = lam @ lam.T + np.diag([vc[f"psi({lab})"] for lab in labels])
    X, y = fit.mme.X, fit.mme.y
    Z = blk.Z.toarray()
    V = Z @ np.kron(np.eye(blk.n_levels), S) @ Z.T + fit.sigma2 * np.eye(y.size)
    return gaussian_loglik(V, X, y, fit.method)[0]


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("method", ["REML", "ML"])
def test_factor_analytic_equals_dense_and_is_nested_in_us(k, method):
    df = _met(4)
    fa = lmf.LMM.from_formula(f"y ~ env + fa(0 + env | gen, {k})", df).fit(method)
    us = lmf.LMM.from_formula("y ~ env + us(0 + env | gen)", df).fit(method)
    diag = lmf.LMM.from_formula("y ~ env + diag(0 + env | gen)", df).fit(method)
    assert fa.converged
    assert fa.loglik == pytest.approx(_fa_dense_loglik(fa), abs=1e-8)
    assert diag.loglik < fa.loglik <= us.loglik + 1e-8
    names = list(fa.variance_components.query("term == 'gen'").parameter)
    assert names[:4] == ["loading1(E1)", "loading1(E2)", "loading1(E3)", "loading1(E4)"]
    assert names[-4:] == ["psi(E1)", "psi(E2)", "psi(E3)", "psi(E4)"]
    if k == 2:
        assert "loading2(E1)" not in names and "loading2(E2)" in names  # zero above the diagonal


def test_one_factor_on_two_columns_is_unstructured():
    """Any 2 x 2 covariance is l l' + Psi with Psi >= 0, so fa(., 1) on two columns reaches the us optimum."""
    df = _met(6, ne=2, ng=40)
    fa = lmf.LMM.from_formula("y ~ env + fa(0 + env | gen, 1)", df).fit()
    us = lmf.LMM.from_formula("y ~ env + us(0 + env | gen)", df).fit()
    assert fa.loglik == pytest.approx(us.loglik, abs=1e-6)
    np.testing.assert_allclose(fa.covariance("gen").to_numpy(), us.covariance("gen").to_numpy(), rtol=1e-3,
                               atol=1e-4)


def _boundary_toeplitz_data():
    """AR1(0.5) data on which the Toeplitz optimum lies on the edge of positive definiteness."""
    rng = np.random.default_rng(7)
    u = rng.multivariate_normal(np.zeros(5), 0.5 ** _lags(5), size=15)
    return pd.DataFrame([(f"s{s}", t, u[s, t] + rng.normal()) for s in range(15) for t in range(5)
                         for _ in range(2)], columns=["s", "t", "y"])


@pytest.mark.parametrize("formula", ["y ~ 1 + (1 | s:toep(t))", "y ~ 1 + toep(0 + factor(t) | s)"])
def test_toeplitz_on_the_positive_definite_boundary_does_not_crash(formula):
    """Found by review: a raw LinAlgError from difference steps outside the admissible region."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lmf.ConvergenceWarning)
        fit = lmf.LMM.from_formula(formula, _boundary_toeplitz_data()).fit()
    fe = fit.fixed_effects
    assert np.isfinite(fe.estimate).all() and np.isfinite(fe.std_error).all()
    str(fit.summary())
    if "toep(0" in formula:
        w = np.linalg.eigvalsh(fit.correlation("s").to_numpy())
        assert fit.singular == bool(w[0] <= 1e-6 * w[-1])


def test_factor_analytic_with_zero_specific_variances():
    """One-factor data without specific variance: psi on its lower bound, results still available."""
    rng = np.random.default_rng(1)
    g = rng.normal(size=30)
    lam = [1.0, 0.8, 0.6]
    dm = pd.DataFrame([(f"g{i}", f"E{e}", lam[e] * g[i] + rng.normal()) for i in range(30) for e in range(3)
                       for _ in range(2)], columns=["gen", "env", "y"])
    fit = lmf.LMM.from_formula("y ~ env + fa(0 + env | gen, 1)", dm).fit()
    assert fit.converged
    assert np.isfinite(fit.fixed_effects.std_error).all()
    assert fit.loglik == pytest.approx(_fa_dense_loglik(fit), abs=1e-8)
    str(fit.summary())


def test_inadmissible_start_is_a_model_error():
    df = _boundary_toeplitz_data()
    with pytest.raises(lmf.ModelSpecificationError, match="not positive definite"):
        lmf.LMM.from_formula("y ~ 1 + toep(0 + factor(t) | s, 2)", df).fit(
            start=[1.0, np.arctanh(0.9), np.arctanh(-0.9)])


def test_em_refuses_correlation_parameters():
    with pytest.raises(lmf.ModelSpecificationError, match="algorithm='AI'"):
        lmf.LMM.from_formula("y ~ t + ar1(0 + factor(t) | s)", _simulate(1, 10, 3, 2)).fit(algorithm="EM")


def test_text_positions_are_refused_and_gaps_are_kept():
    df = _simulate(4, 30, 6, 2, 0.7)
    df = df[df.t.isin([0, 1, 2, 5])]
    with pytest.raises(lmf.DataError, match="text order"):
        lmf.LMM.from_formula("y ~ 1 + ar1(0 + tt | s)", df.assign(tt="t" + df.t.astype(str)))
    cols = lmf.LMM.from_formula("y ~ 1 + ar1(0 + factor(t) | s)", df).fit()
    grouping = lmf.LMM.from_formula("y ~ 1 + (1 | s:ar1(t))", df).fit()
    assert cols.loglik == pytest.approx(grouping.loglik, abs=1e-6)  # t = 2 and t = 5 are three steps apart
    rho = cols.variance_components.set_index("parameter").loc["rho(t)", "estimate"]
    assert cols.correlation("s").iloc[2, 3] == pytest.approx(rho**3, rel=1e-10)


def test_ar1_correlation_over_positions_with_a_huge_gap():
    """Positions 0, 1, 2 and 1e12 (a far-off time): the correlation and its derivative are rho ** lag entry by entry,
    without one power per possible lag (which would need gigabytes)."""
    from lmmformula.covariance.correlation import Correlation

    positions = (0, 1, 2, 10**12)
    lags = np.abs(np.subtract.outer(np.array(positions), np.array(positions)))
    for rho in (-0.7, 0.0, 0.4):
        c = Correlation("ar1", 4, 0, positions)
        np.testing.assert_array_equal(c.matrix([rho]), rho ** lags)
        expected = np.where(lags > 0, lags * rho ** np.maximum(lags - 1, 0), 0.0)
        np.testing.assert_array_equal(c.derivatives([rho])[0], expected)


def test_a_term_absorbing_all_residual_variation_is_a_boundary_fit():
    """sleepstudy's first five days: an ar1 term over the days leaves no residual variation (the REML supremum
    is the residual AR1 model, as nlme's gls corAR1 finds).  The fit approaches it on a flat ridge and is flagged
    singular; the whole sleepstudy keeps a residual variance and is not."""
    data = _load("sleepstudy.csv")
    formula = "Reaction ~ Days + ar1(0 + factor(Days) | Subject)"
    first = data[data["Days"] <= 4]
    short = lmf.LMM.from_formula(formula, first).fit()
    limit = lmf.LMM.from_formula("Reaction ~ Days + Subject:ar1(Days)", first).fit()
    assert short.singular and not limit.singular
    assert limit.loglik - 2e-3 < short.loglik <= limit.loglik + 1e-9
    assert short.sigma2 < 1e-4 * short.covariance("Subject").to_numpy().diagonal().mean()
    assert not lmf.LMM.from_formula(formula, data).fit().singular


def test_a_large_group_variance_with_replicates_is_not_a_boundary_fit():
    """A random intercept with an SD 1000 times the residual's and 10 observations per group is well identified
    (lme4: isSingular FALSE, theta 890): 20 effects cannot take the place of 200 residuals."""
    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(20), 10)
    d = pd.DataFrame({"y": 1000 * rng.normal(size=20)[g] + rng.normal(size=200), "g": g.astype(str)})
    fit = lmf.LMM.from_formula("y ~ 1 + (1 | g)", d).fit()
    assert not fit.singular and fit.theta[0] > 100
