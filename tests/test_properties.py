"""Property-based tests (hypothesis) of the fitted model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lmmformula as lmf
from conftest import dense_loglik

SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def designs(draw, slopes=None, crossed=None, min_sd=0.0):
    """Small unbalanced data sets with a grouping factor, optionally a slope and a crossed factor."""
    n_groups = draw(st.integers(3, 7))
    sizes = draw(st.lists(st.integers(3, 6), min_size=n_groups, max_size=n_groups))
    slope = draw(st.booleans()) if slopes is None else slopes
    cross = draw(st.booleans()) if crossed is None else crossed
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_groups), sizes)
    n = g.size
    x = rng.normal(size=n).round(3)
    h = rng.integers(0, 3, n)
    sd_g, sd_s, sd_h = rng.uniform(min_sd, 2.0, 3)
    y = (1.0 + 0.5 * x + rng.normal(0, sd_g, n_groups)[g] + slope * rng.normal(0, sd_s, n_groups)[g] * x
         + cross * rng.normal(0, sd_h, 3)[h] + rng.normal(size=n))
    data = pd.DataFrame({"y": y, "x": x, "g": [f"g{i}" for i in g], "h": [f"h{i}" for i in h]})
    terms = ["(1 + x | g)" if slope else "(1 | g)"] + (["(1 | h)"] if cross else [])
    return data, "y ~ x + " + " + ".join(terms)


@SETTINGS
@given(designs(), st.sampled_from(["REML", "ML"]))
def test_loglik_equals_dense_brute_force(case, method):
    data, formula = case
    fit = lmf.LMM.from_formula(formula, data).fit(method=method)
    ll, b = dense_loglik(fit)
    assert fit.loglik == pytest.approx(ll, rel=1e-9, abs=1e-8)
    np.testing.assert_allclose(fit.fixed_effects.estimate, b, rtol=1e-7, atol=1e-9)


@SETTINGS
@given(designs())
def test_optimum_is_a_maximum(case):
    """No small move of theta (within bounds) increases the REML log-likelihood."""
    data, formula = case
    fit = lmf.LMM.from_formula(formula, data).fit()
    assert fit.converged
    theta = fit.theta
    rng = np.random.default_rng(0)
    for _ in range(10):
        cand = np.maximum(theta + rng.normal(0, 1e-3, theta.size), fit.mme.lower)
        assert -0.5 * fit.mme.evaluate(cand).deviance <= fit.loglik + 1e-9


@SETTINGS
@given(designs(), st.randoms(use_true_random=False))
def test_row_permutation_changes_nothing(case, rnd):
    data, formula = case
    perm = list(range(len(data)))
    rnd.shuffle(perm)
    a = lmf.LMM.from_formula(formula, data).fit()
    b = lmf.LMM.from_formula(formula, data.iloc[perm]).fit()
    assert b.loglik == pytest.approx(a.loglik, abs=1e-7)
    np.testing.assert_allclose(b.fixed_effects.estimate, a.fixed_effects.estimate, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b.variance_components.estimate, a.variance_components.estimate,
                               rtol=1e-4, atol=1e-6)


@SETTINGS
@given(designs(), st.floats(0.1, 50.0), st.floats(-100.0, 100.0), st.booleans())
def test_affine_response_scales_variances(case, scale, shift, negate):
    data, formula = case
    a = -scale if negate else scale
    other = data.assign(y=a * data.y + shift)
    f0 = lmf.LMM.from_formula(formula, data).fit()
    f1 = lmf.LMM.from_formula(formula, other).fit()
    n_minus_p = f0.n_obs - f0.mme.p
    assert f1.loglik == pytest.approx(f0.loglik - n_minus_p * np.log(abs(a)), abs=1e-6)
    est0 = f0.variance_components.estimate.to_numpy()
    est1 = f1.variance_components.estimate.to_numpy()
    tol = 1e-5 * a**2 * max(est0.max(), 1e-8)
    np.testing.assert_allclose(est1, a**2 * est0, rtol=1e-4, atol=tol)
    b0, b1 = f0.fixed_effects.estimate.to_numpy(), f1.fixed_effects.estimate.to_numpy()
    expected = a * b0
    expected[0] += shift
    np.testing.assert_allclose(b1, expected, rtol=1e-5, atol=1e-5 * (abs(shift) + abs(a)))


@SETTINGS
@given(designs(slopes=True), st.sampled_from([-3e3, -300.0, 30.0, 1e3, 1e4]), st.sampled_from(["REML", "ML"]))
def test_shifting_a_random_slope_covariate_changes_no_likelihood(case, shift, method):
    """An unstructured ``(1 + x | g)`` is the same model as ``(1 + I(x + c) | g)``: the maximum, the slope's
    variance and the residual variance do not depend on c (lme4's optimizers stop short for large c)."""
    data, formula = case
    a = lmf.LMM.from_formula(formula, data).fit(method=method)
    b = lmf.LMM.from_formula(formula, data.assign(x=data.x + shift)).fit(method=method)
    assert a.converged and b.converged
    assert b.loglik == pytest.approx(a.loglik, abs=1e-6)
    va, vb = (f.variance_components.set_index("parameter")["estimate"] for f in (a, b))
    scale = max(float(va.max()), 1e-8)
    assert vb["var(x)"] == pytest.approx(va["var(x)"], rel=1e-3, abs=1e-4 * scale)
    assert b.sigma2 == pytest.approx(a.sigma2, rel=1e-3)


@settings(max_examples=6, deadline=None)
@given(designs(slopes=False, crossed=False, min_sd=1.0))
def test_em_and_ai_reach_the_same_optimum(case):
    """EM converges linearly (slowly near a boundary), so interior optima only."""
    data, formula = case
    model = lmf.LMM.from_formula(formula, data)
    ai = model.fit()
    if ai.singular:
        return
    em = model.fit(algorithm="EM", tol=1e-9, max_iter=20000)
    assert em.converged
    assert em.loglik == pytest.approx(ai.loglik, abs=1e-7)
    np.testing.assert_allclose(em.variance_components.estimate, ai.variance_components.estimate, rtol=1e-2)


@settings(max_examples=20, deadline=None)
@given(st.integers(3, 10), st.integers(2, 8), st.floats(0.3, 3.0), st.integers(0, 10_000))
def test_reliability_is_the_seed_shrinkage_factor(n_groups, n_per, sd_u, seed):
    """Balanced one-way, no fixed effects: reliability 1 - PEV/var_u = n / (n + alpha)."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(n_groups), n_per)
    y = rng.normal(0, sd_u, n_groups)[g] + rng.normal(size=g.size)
    fit = lmf.LMM.from_formula("y ~ 0 + (1 | g)", pd.DataFrame({"y": y, "g": g})).fit()
    var_u = fit.term_covariance(0)[0, 0]
    if var_u <= 1e-8 * fit.sigma2:
        return
    alpha = fit.sigma2 / var_u
    row = fit.shrinkage.iloc[0]
    assert row.reliability_mean == pytest.approx(n_per / (n_per + alpha), rel=1e-8)
    # and the BLUP is the seed's sum(y) / (n + alpha)
    sums = np.bincount(g, weights=y)
    np.testing.assert_allclose(fit.random_effects["g"]["(Intercept)"], sums / (n_per + alpha), rtol=1e-7)
