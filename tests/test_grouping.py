"""Structured groupings: the levels of a random term are the cells of a grid with correlated effects,
e.g. a spatial random field ``(1 | ar1(row):ar1(col))`` or ``(1 | Subject:ar1(time))``."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lmmformula as lmf
from conftest import gaussian_loglik
from lmmformula.datasets import load


def _lag(m):
    i = np.arange(m)
    return np.abs(i[:, None] - i[None, :])


def _dense_field_loglik(fit, y, X, cells, K):
    """-2 l from a dense V = s2_f Zc K Zc' + s2 I (Zc maps observations to grid cells)."""
    vc = fit.variance_components
    s2f = vc.query("term != 'residual' and parameter == 'variance'")["estimate"].iloc[0]
    Zc = np.zeros((y.size, K.shape[0]))
    Zc[np.arange(y.size), cells] = 1.0
    V = s2f * Zc @ K @ Zc.T + fit.sigma2 * np.eye(y.size)
    return gaussian_loglik(V, X, y, fit.method)[0]


def test_random_field_equals_residual_field_with_nugget():
    """(1 | ar1(row):ar1(col)) + iid residual has the same V as (1 | plot) + ar1(row):ar1(col)."""
    d = load("slatehall")
    field = lmf.LMM.from_formula("yield ~ gen + (1 | ar1(row):ar1(col))", d).fit()
    d2 = d.assign(plot=np.arange(len(d)))
    resid = lmf.LMM.from_formula("yield ~ gen + (1 | plot) + ar1(row):ar1(col)", d2).fit()
    assert field.converged and resid.converged
    assert field.loglik == pytest.approx(resid.loglik, abs=1e-6)
    a = field.variance_components.set_index(["term", "parameter"])["estimate"]
    b = resid.variance_components.set_index(["term", "parameter"])["estimate"]
    assert a[("ar1(row):ar1(col)", "rho(row)")] == pytest.approx(b[("residual", "rho(row)")], abs=1e-4)
    assert a[("ar1(row):ar1(col)", "rho(col)")] == pytest.approx(b[("residual", "rho(col)")], abs=1e-4)
    assert a[("ar1(row):ar1(col)", "variance")] == pytest.approx(b[("residual", "variance")], rel=1e-4)
    assert a[("residual", "variance")] == pytest.approx(b[("plot", "variance")], rel=1e-4)
    np.testing.assert_allclose(field.fixed_effects.estimate, resid.fixed_effects.estimate, rtol=1e-4, atol=1e-3)


def _field_data(seed, n_row, n_col, reps, frac_missing):
    rng = np.random.default_rng(seed)
    K = np.kron(0.6 ** _lag(n_row), 0.3 ** _lag(n_col))
    f = np.linalg.cholesky(K) @ rng.normal(size=n_row * n_col) * 1.5
    rows = []
    for r in range(n_row):
        for c in range(n_col):
            for _ in range(reps):
                if rng.random() >= frac_missing:
                    rows.append((r + 1, c + 1, 2.0 + f[r * n_col + c] + rng.normal()))
    df = pd.DataFrame(rows, columns=["row", "col", "y"])
    df["trt"] = rng.choice(["a", "b", "c"], size=len(df))
    return df.sample(frac=1.0, random_state=seed).reset_index(drop=True)


@pytest.mark.parametrize("method", ["REML", "ML"])
@pytest.mark.parametrize("reps,frac", [(2, 0.0), (1, 0.2), (2, 0.3)])
def test_field_equals_dense_brute_force(method, reps, frac):
    df = _field_data(11, 6, 5, reps, frac)
    fit = lmf.LMM.from_formula("y ~ trt + (1 | ar1(row):ar1(col))", df).fit(method)
    assert fit.converged
    vc = fit.variance_components.set_index(["term", "parameter"])["estimate"]
    rr, rc = vc[("ar1(row):ar1(col)", "rho(row)")], vc[("ar1(row):ar1(col)", "rho(col)")]
    K = np.kron(rr ** _lag(6), rc ** _lag(5))
    cells = (df["row"].to_numpy() - 1) * 5 + (df["col"].to_numpy() - 1)
    assert fit.loglik == pytest.approx(_dense_field_loglik(fit, fit.mme.y, fit.mme.X, cells, K), abs=1e-8)
    blups = fit.random_effects["ar1(row):ar1(col)"]
    assert len(blups) == 30  # every cell of the grid has a BLUP, observed or not
    assert blups.index[7] == "row=2:col=3"


def test_subject_by_ar1_time_grouping_equals_dense():
    rng = np.random.default_rng(2)
    n_s, n_t = 12, 5
    s = np.repeat(np.arange(n_s), n_t * 2)
    t = np.tile(np.repeat(np.arange(n_t), 2), n_s)
    y = rng.normal(size=s.size) + rng.normal(size=(n_s, n_t))[s, t]
    df = pd.DataFrame({"y": y, "s": [f"s{k:02d}" for k in s], "t": t})
    fit = lmf.LMM.from_formula("y ~ 1 + (1 | s:ar1(t))", df).fit()
    rho = fit.variance_components.set_index("parameter").loc["rho(t)", "estimate"]
    K = np.kron(np.eye(n_s), rho ** _lag(n_t))
    assert fit.loglik == pytest.approx(_dense_field_loglik(fit, fit.mme.y, fit.mme.X, s * n_t + t, K), abs=1e-8)


def test_grouping_with_variances_is_refused():
    df = _field_data(1, 4, 4, 1, 0.0)
    with pytest.raises(lmf.ModelSpecificationError, match="us\\(row\\).*cannot be part of the grouping"):
        lmf.LMM.from_formula("y ~ trt + (1 | us(row):ar1(col))", df)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n_row=st.integers(3, 6), n_col=st.integers(2, 5),
       frac=st.floats(0.0, 0.4))
def test_property_field_loglik_is_dense(seed, n_row, n_col, frac):
    df = _field_data(seed, n_row, n_col, 2, frac)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lmf.ConvergenceWarning)
        fit = lmf.LMM.from_formula("y ~ trt + (1 | ar1(row):ar1(col))", df).fit()
    vc = fit.variance_components.set_index(["term", "parameter"])["estimate"]
    K = np.kron(vc[("ar1(row):ar1(col)", "rho(row)")] ** _lag(n_row), vc[("ar1(row):ar1(col)", "rho(col)")]
                ** _lag(n_col))
    n_row_obs = df["row"].max()
    assume_full = n_row_obs == n_row and df["col"].max() == n_col and df["row"].min() == 1 and df["col"].min() == 1
    if not assume_full:  # the grid spans the observed range of positions
        K = np.kron(vc[("ar1(row):ar1(col)", "rho(row)")] ** _lag(df["row"].max() - df["row"].min() + 1),
                    vc[("ar1(row):ar1(col)", "rho(col)")] ** _lag(df["col"].max() - df["col"].min() + 1))
    n_c = df["col"].max() - df["col"].min() + 1
    cells = (df["row"].to_numpy() - df["row"].min()) * n_c + (df["col"].to_numpy() - df["col"].min())
    assert fit.loglik == pytest.approx(_dense_field_loglik(fit, fit.mme.y, fit.mme.X, cells, K), abs=1e-7)
