"""Residual (R-side) AR1 and AR1 x AR1 structures: nlme golden values and dense brute force."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import lmmformula as lmf
from conftest import dense_loglik, load_data
from lmmformula.datasets import load

NLME = json.loads((pathlib.Path(__file__).parent / "golden" / "nlme.json").read_text())


@pytest.mark.parametrize("case", NLME["cases"], ids=[c["name"] for c in NLME["cases"]])
def test_matches_nlme(case):
    data = load_data(case["data"])
    data = data.drop(index=data.index[case["drop_rows"]])
    fit = lmf.LMM.from_formula(case["formula"], data).fit(method="REML" if case["REML"] else "ML")
    assert fit.converged
    assert fit.n_obs == case["nobs"]
    assert fit.loglik == pytest.approx(case["loglik"], abs=1e-4)
    (rho,) = fit.residual_correlations.values()
    assert rho == pytest.approx(case["rho"], abs=2e-4)
    assert np.sqrt(fit.sigma2) == pytest.approx(case["sigma"], rel=5e-4)
    fe = fit.fixed_effects
    np.testing.assert_allclose(fe.estimate, list(case["fixef"].values()), rtol=1e-3, atol=1e-4)
    se = fe.std_error.to_numpy()
    if not fit.mme.blocks and fit.method == "ML":
        # nlme's gls scales the ML covariance of the fixed effects by N / (N - p); lme and lme4 do not
        se = se * np.sqrt(fit.n_obs / (fit.n_obs - fit.mme.p))
    np.testing.assert_allclose(se, list(case["fixef_se"].values()), rtol=2e-3)
    if isinstance(case.get("random_sd"), float):
        assert np.sqrt(fit.term_covariance(0)[0, 0]) == pytest.approx(case["random_sd"], rel=2e-3, abs=1e-3)


@pytest.mark.parametrize("formula", ["yield ~ gen + ar1(row):ar1(col)",
                                     "yield ~ gen + (1 | rep) + ar1(row):ar1(col)",
                                     "yield ~ gen + (1 | rep) + id(row):ar1(col)"])
@pytest.mark.parametrize("method", ["REML", "ML"])
def test_field_trial_equals_dense_brute_force(formula, method):
    data = load("slatehall").drop(index=[3, 40, 77, 78])  # missing plots: observed-data likelihood
    fit = lmf.LMM.from_formula(formula, data).fit(method=method)
    assert fit.converged
    assert fit.loglik == pytest.approx(dense_loglik(fit)[0], rel=1e-10, abs=1e-8)
    # the optimum is a maximum: no small move improves it
    rng = np.random.default_rng(1)
    for _ in range(5):
        cand = fit.mme.canonical(fit.theta + rng.normal(0, 1e-3, fit.theta.size))
        assert -0.5 * fit.mme.evaluate(cand).deviance <= fit.loglik + 1e-8
    names = fit.variance_components.parameter.tolist()
    assert "rho(col)" in names


@settings(max_examples=15, deadline=None)
@given(st.integers(3, 7), st.integers(3, 7), st.floats(-0.8, 0.8), st.floats(-0.8, 0.8),
       st.integers(0, 10_000), st.floats(0.0, 0.4))
def test_random_incomplete_grids_equal_dense_brute_force(n_row, n_col, rho_r, rho_c, seed, frac_missing):
    rng = np.random.default_rng(seed)
    i = np.arange(n_row)
    j = np.arange(n_col)
    R = np.kron(rho_r ** np.abs(i[:, None] - i), rho_c ** np.abs(j[:, None] - j))
    y = np.linalg.cholesky(R) @ rng.normal(size=n_row * n_col) + 2.0
    data = pd.DataFrame({"y": y, "row": np.repeat(i + 1, n_col), "col": np.tile(j + 1, n_row),
                         "x": rng.normal(size=n_row * n_col)})
    keep = rng.uniform(size=len(data)) >= frac_missing
    keep[[0, -1]] = True
    assume(keep.sum() > 5)  # two fixed effects and three covariance parameters need six observations
    data = data[keep].sample(frac=1.0, random_state=seed)  # any row order
    fit = lmf.LMM.from_formula("y ~ x + ar1(row):ar1(col)", data).fit()
    assert fit.loglik == pytest.approx(dense_loglik(fit)[0], rel=1e-9, abs=1e-8)


def test_row_order_does_not_matter():
    data = load("slatehall")
    a = lmf.LMM.from_formula("yield ~ gen + ar1(row):ar1(col)", data).fit()
    b = lmf.LMM.from_formula("yield ~ gen + ar1(row):ar1(col)", data.sample(frac=1.0, random_state=3)).fit()
    assert b.loglik == pytest.approx(a.loglik, abs=1e-7)
    for k, v in a.residual_correlations.items():
        assert b.residual_correlations[k] == pytest.approx(v, abs=1e-5)


def test_duplicated_cells_are_an_error():
    data = load("slatehall")
    data = pd.concat([data, data.iloc[[5]]])
    with pytest.raises(lmf.DataError, match="share the cell"):
        lmf.LMM.from_formula("yield ~ gen + ar1(row):ar1(col)", data)


def test_irregular_positions_are_an_error():
    data = load("slatehall").assign(row=lambda d: d.row.astype(float) ** 1.5)
    with pytest.raises(lmf.DataError, match="regular grid"):
        lmf.LMM.from_formula("yield ~ gen + ar1(row):ar1(col)", data)


def test_covariance_and_correlation_tables():
    fit = lmf.LMM.from_formula("distance ~ age * Sex + (1 | Subject) + Subject:ar1(age)",
                               load_data("Orthodont.csv")).fit()
    (rho,) = fit.residual_correlations.values()
    corr = fit.correlation("residual")
    assert list(corr.index) == ["age=8", "age=10", "age=12", "age=14"]
    assert corr.loc["age=8", "age=12"] == pytest.approx(rho**2)
    cov = fit.covariance("residual")
    assert cov.loc["age=10", "age=10"] == pytest.approx(fit.sigma2)
    assert fit.covariance("Subject").iloc[0, 0] == pytest.approx(fit.term_covariance(0)[0, 0])
    with pytest.raises(KeyError, match="Subject"):
        fit.covariance("nope")
    vc = fit.variance_components
    assert vc.loc[vc.parameter == "rho(age)", "estimate"].item() == pytest.approx(rho)
    assert np.isfinite(vc.std_error).all()


def test_correlation_at_its_bound_is_held_and_flagged():
    """Residuals that are constant within subject push rho to 1: it stops at 0.999 and the fit is flagged."""
    rng = np.random.default_rng(1)
    n_s, n_t = 10, 30
    y = np.repeat(rng.normal(0, 3, n_s), n_t) + 0.01 * rng.normal(size=n_s * n_t)
    data = pd.DataFrame({"y": y, "S": np.repeat(np.arange(n_s), n_t), "t": np.tile(np.arange(n_t), n_s)})
    for method in ("REML", "ML"):
        fit = lmf.LMM.from_formula("y ~ 1 + S:ar1(t)", data).fit(method=method)
        assert fit.converged and fit.singular
        assert fit.residual_correlations["rho(t)"] == pytest.approx(0.999)
        assert fit.loglik == pytest.approx(dense_loglik(fit)[0], rel=1e-9)
    fit = lmf.LMM.from_formula("y ~ 1 + S:ar1(t)", data).fit(start=[25.0])  # a start beyond the bound is clipped
    assert fit.converged


def test_large_incomplete_grid_precision_is_exact_and_sparse():
    from lmmformula.covariance.grids import build_residual
    from lmmformula.formula import parse_formula

    rng = np.random.default_rng(0)
    d = pd.DataFrame({"r": np.repeat(np.arange(7), 6), "c": np.tile(np.arange(6), 7)})
    d = d.drop(index=rng.choice(len(d), 12, replace=False))
    res = build_residual(d, parse_formula("y ~ 1 + ar1(r):ar1(c)").residual)
    W, logdet = res.precision(np.arctanh([0.6, -0.4]))
    i, j = np.arange(7), np.arange(6)
    C = np.kron(0.6 ** np.abs(i[:, None] - i), (-0.4) ** np.abs(j[:, None] - j))[np.ix_(res.cells, res.cells)]
    np.testing.assert_allclose(W.toarray(), np.linalg.inv(C), atol=1e-12)
    assert logdet == pytest.approx(np.linalg.slogdet(C)[1], abs=1e-10)
    pattern = res.precision_pattern()
    assert set(zip(*W.nonzero())) <= set(zip(*pattern.nonzero()))


@pytest.mark.parametrize("method", ["REML", "ML"])
def test_compound_symmetry_with_text_levels_equals_dense_brute_force(method):
    """cs() is exchangeable, so its positions may be text; with missing cells the likelihood stays exact."""
    data = load_data("Orthodont.csv").assign(occasion=lambda d: "visit" + (d.age // 2).astype(str))
    data = data.drop(index=[3, 10, 11, 50])
    fit = lmf.LMM.from_formula("distance ~ age * Sex + Subject:cs(occasion)", data).fit(method=method)
    assert fit.converged
    assert fit.loglik == pytest.approx(dense_loglik(fit)[0], rel=1e-10)
    (rho,) = fit.residual_correlations.values()
    corr = fit.correlation("residual").to_numpy()
    assert corr[0, 3] == pytest.approx(rho) and corr[1, 2] == pytest.approx(rho)


@pytest.mark.parametrize("case", NLME["structured_cases"], ids=[c["name"] for c in NLME["structured_cases"]])
def test_matches_nlme_variance_structures(case):
    """us(x) = corSymm + varIdent, diag(x) = varIdent, ma(x, 1) = corARMA(q = 1), with and without gaps."""
    data = load_data(case["data"])
    data = data.drop(index=data.index[case["drop_rows"]])
    fit = lmf.LMM.from_formula(case["formula"], data).fit(method="REML" if case["REML"] else "ML")
    assert fit.converged
    assert fit.n_obs == case["nobs"]
    assert fit.loglik == pytest.approx(case["loglik"], abs=1e-6)
    ref = np.array(case["covariance"])
    np.testing.assert_allclose(fit.covariance("residual").to_numpy(), ref, atol=1e-4 * np.abs(ref).max())
    if case["rho"]:
        assert fit.residual_correlations["rho1(age)"] == pytest.approx(case["rho"], abs=1e-5)
    fe = fit.fixed_effects
    np.testing.assert_allclose(fe.estimate, list(case["fixef"].values()), rtol=1e-5)
    se = fe.std_error.to_numpy()
    if fit.method == "ML":  # gls's N / (N - p) scaling, as above
        se = se * np.sqrt(fit.n_obs / (fit.n_obs - fit.mme.p))
    np.testing.assert_allclose(se, list(case["fixef_se"].values()), rtol=1e-4)


def test_unstructured_residual_rows_and_standard_errors():
    fit = lmf.LMM.from_formula("distance ~ age * Sex + Subject:us(age)", load_data("Orthodont.csv")).fit()
    vc = fit.variance_components
    assert list(vc.parameter[:3]) == ["variance", "var(age=8)", "var(age=10)"]
    assert "cov(age=8,age=10)" in set(vc.parameter)
    cov = fit.covariance("residual")
    by_name = vc.set_index("parameter")["estimate"]
    assert by_name["var(age=12)"] == pytest.approx(cov.loc["age=12", "age=12"], rel=1e-12)
    assert by_name["cov(age=10,age=14)"] == pytest.approx(cov.loc["age=10", "age=14"], rel=1e-12)
    assert by_name["var(age=8)"] == pytest.approx(fit.sigma2, rel=1e-12)
    assert np.all(np.isfinite(vc.std_error)) and np.all(vc.std_error > 0)


@pytest.mark.parametrize("term", ["Subject:us(age)", "Subject:diag(age)", "Subject:toep(age)",
                                  "Subject:toep(age, 2)", "Subject:ma(age, 1)"])
@pytest.mark.parametrize("method", ["REML", "ML"])
def test_variance_structures_equal_dense_brute_force_with_gaps(term, method):
    data = load_data("Orthodont.csv")
    data = data.drop(index=data.index[[0, 5, 6, 30, 31, 32, 77]]).sample(frac=1.0, random_state=3)
    fit = lmf.LMM.from_formula(f"distance ~ age * Sex + {term}", data).fit(method)
    assert fit.converged
    ll, b = dense_loglik(fit)
    assert fit.loglik == pytest.approx(ll, abs=1e-8)
    np.testing.assert_allclose(fit.fixed_effects.estimate, b, rtol=1e-7)


def test_unused_categories_of_a_variance_dimension_are_dropped():
    """Found by review: an unused level of a Categorical got a variance without data."""
    data = load_data("Orthodont.csv")
    data = data[data.age != 12].copy()
    data["agec"] = pd.Categorical(data.age.astype(str), categories=["8", "10", "12", "14"], ordered=True)
    fit = lmf.LMM.from_formula("distance ~ age * Sex + Subject:diag(agec)", data).fit()
    numeric = lmf.LMM.from_formula("distance ~ age * Sex + Subject:diag(age)", data).fit()
    assert "var(agec=12)" not in set(fit.variance_components.parameter)
    assert fit.loglik == pytest.approx(numeric.loglik, abs=1e-8)
    assert np.isfinite(fit.variance_components.std_error).all()
    assert fit.aic == pytest.approx(numeric.aic, abs=1e-6)


def _missing_block_field():
    """A 30 x 20 field with an 8 x 10 block of unobserved plots (one group of 80 cells, beyond the compiled loop's
    group size) and scattered missing plots (small groups)."""
    rng = np.random.default_rng(5)
    df = pd.DataFrame({"row": np.repeat(np.arange(30), 20), "col": np.tile(np.arange(20), 30)})
    df["g"] = [f"g{i}" for i in rng.integers(0, 40, len(df))]
    df["y"] = rng.normal(size=len(df))
    drop = (df.row.between(5, 12) & df.col.between(3, 12)) | (rng.random(len(df)) < 0.03)
    return df[~drop].reset_index(drop=True)


@pytest.mark.parametrize("formula", ["y ~ 1 + (1 | g) + ar1(row):ar1(col)", "y ~ 1 + ar1(row):toep(col, 2)"])
@pytest.mark.parametrize("small_group", [0, 48, 10**6])
def test_missing_blocks_large_and_small_give_the_exact_observed_precision(formula, small_group, monkeypatch):
    """Small groups of unobserved cells go through the compiled loop, large ones through LAPACK; either way the
    precision, its log-determinant and the gradient are exact (dense inverse of R_oo, central differences)."""
    from lmmformula.covariance import missing
    monkeypatch.setattr(missing, "SMALL_GROUP", small_group)
    model = lmf.LMM.from_formula(formula, _missing_block_field())
    res = model.design.residual
    assert max(c.size for c in res._plan().components) > 48
    mme = model._equations("REML")
    theta = model._initial_theta(mme) + 0.1
    eta = mme.eta(theta)
    R = np.ones((1, 1))
    for d, e in zip(res.dimensions, res.split(eta)):
        R = np.kron(R, np.eye(d.size) if d.kind == "id" else d.matrix(e))
    R_oo = R[np.ix_(res.cells, res.cells)]
    precision, logdet = res.precision(eta)
    np.testing.assert_allclose(precision.toarray(), np.linalg.inv(R_oo), atol=1e-12)
    assert logdet == pytest.approx(np.linalg.slogdet(R_oo)[1], abs=1e-10)
    steps = np.eye(theta.size) * 1e-6
    numeric = [(mme.evaluate(theta + h).deviance - mme.evaluate(theta - h).deviance) / 2e-6 for h in steps]
    np.testing.assert_allclose(mme.profiled_gradient(theta), numeric, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 9), st.integers(1, 9), st.booleans(), st.floats(0.0, 0.9), st.integers(0, 10_000))
def test_groups_of_unobserved_cells_are_the_connected_components(rows, cols, reps, missing_share, seed):
    """missing_plan: each group is a connected set of unobserved cells in the graph of the full precision (no
    edge to any other unobserved cell), and its neighbours are exactly the observations adjacent to it; checked
    against a breadth-first search on the dense precision, rows in any order."""
    import scipy.sparse as sp

    from lmmformula.covariance.missing import missing_plan

    def ar1(m, rho):
        main = np.full(m, 1 + rho ** 2)
        main[0] = main[-1] = 1.0
        return sp.diags([main, np.full(m - 1, -rho), np.full(m - 1, -rho)], [0, -1, 1]) if m > 1 else sp.eye(1)

    rng = np.random.default_rng(seed)
    W = sp.kron(ar1(rows, 0.3), ar1(cols, 0.6))
    if reps:
        W = sp.kron(W, sp.identity(2))
    W = W.tocsc()
    W.eliminate_zeros()  # groups follow the stored entries; here every stored entry is a non-zero
    n_cells = W.shape[0]
    observed = rng.random(n_cells) >= missing_share
    observed[rng.integers(n_cells)] = True
    cells = rng.permutation(np.flatnonzero(observed))  # the cell of each observation, in data order
    plan = missing_plan(W, cells, n_cells)
    adjacent = W.toarray() != 0
    observation = {int(c): i for i, c in enumerate(cells)}
    missing = np.flatnonzero(~observed)
    np.testing.assert_array_equal(plan.missing, missing)
    found, unvisited = [], set(missing.tolist())
    while unvisited:  # breadth-first search over unobserved cells
        group, frontier = set(), [unvisited.pop()]
        while frontier:
            cell = frontier.pop()
            group.add(cell)
            for other in np.flatnonzero(adjacent[cell]).tolist():
                if other in unvisited:
                    unvisited.remove(other)
                    frontier.append(other)
        near = {observation[o] for c in group for o in np.flatnonzero(adjacent[c]).tolist() if o in observation}
        found.append((frozenset(group), frozenset(near)))
    got = [(frozenset(plan.missing[comp].tolist()), frozenset(nb.tolist()))
           for comp, nb in zip(plan.components, plan.neighbours)]
    assert set(got) == set(found) and len(got) == len(found)
    for nb in plan.neighbours:
        assert np.all(np.diff(nb) > 0)  # sorted, no repeats


def test_a_correlation_only_model_stuck_at_the_edge_stops_at_once():
    """``Chick:toep(Time, 2)`` on ChickWeight (days 0, 2, ..., 20, 21: lag 1 is only observed between days 20
    and 21) needs lag-1 and lag-2 correlations next to the edge of positive definiteness, where no AI or Newton
    step helps.  Without random effects EM changes no parameter: the fit stops with a ConvergenceWarning saying
    so, instead of repeating the same EM step until max_iter."""
    model = lmf.LMM.from_formula("weight ~ Time + Chick:toep(Time, 2)", load_data("ChickWeight.csv"))
    with pytest.warns(lmf.ConvergenceWarning, match="EM step changes no parameter"):
        fit = model.fit()
    assert not fit.converged and fit.n_iter < 50
    assert fit.optimizer.history[-1].algorithm != "EM"
