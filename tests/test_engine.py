"""Engine internals: selected inversion, factorization back-ends, analytic derivatives."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import lmmformula as lmf
from conftest import load_data
from lmmformula.engine import DenseFactor, SparseFactor, column_dots


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 60), st.floats(0.01, 0.3), st.integers(0, 10_000))
def test_takahashi_equals_dense_inverse_on_the_pattern(n, density, seed):
    rng = np.random.default_rng(seed)
    A = sp.random(n, n, density=density, random_state=rng)
    A = (A + A.T).tocsc()
    A = (A + sp.diags(np.asarray(abs(A).sum(axis=1)).ravel() + 1.0)).tocsc()
    f = SparseFactor(A)
    S = f.selected_inverse().tocoo()
    inv = np.linalg.inv(A.toarray())
    np.testing.assert_allclose(S.data, inv[S.row, S.col], rtol=1e-9, atol=1e-12)
    # the selected pattern covers the pattern of A
    assert set(zip(*A.nonzero())) <= set(zip(S.row, S.col))
    assert f.logdet() == pytest.approx(np.linalg.slogdet(A.toarray())[1], rel=1e-10, abs=1e-10)
    b = rng.normal(size=(n, 2))
    np.testing.assert_allclose(f.solve(b), inv @ b, rtol=1e-8, atol=1e-10)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.integers(1, 7), st.integers(0, 10_000), st.booleans())
def test_bilinear_map_equals_dense_products_and_traces(n, m, seed, lazy):
    """BilinearMap: M'WN from W's values, and its adjoints give tr(T' M'dWN) for any dW on W's pattern; the
    same when the map is too large to store and is applied lazily."""
    from lmmformula.engine import crossproducts

    class BilinearMap(crossproducts.BilinearMap):
        MAX_ENTRIES = -1 if lazy else crossproducts.BilinearMap.MAX_ENTRIES
    from lmmformula.sparsepattern import pattern_keys

    rng = np.random.default_rng(seed)
    W = sp.random(n, n, density=0.3, random_state=rng)
    W = (W + W.T + sp.identity(n)).tocsc()
    W.sort_indices()
    rows, cols = W.indices, np.repeat(np.arange(n), np.diff(W.indptr))
    M = sp.random(n, m, density=0.4, random_state=rng, format="csc")
    N = sp.random(n, m + 1, density=0.4, random_state=rng, format="csc")
    dW = W.copy()
    dW.data = rng.normal(size=W.nnz)
    dW = (dW + dW.T).tocsc()  # same (symmetric) pattern, other values
    dW.sort_indices()
    exact = (M.T @ dW @ N).toarray()
    mn = BilinearMap(M, N, rows, cols)
    np.testing.assert_allclose(mn(dW.data), exact, atol=1e-12)
    T = rng.normal(size=exact.shape)
    assert mn.adjoint(T) @ dW.data == pytest.approx(np.sum(T * exact), abs=1e-10)
    # symmetric M'WM, the adjoint reading the lower triangle only (upper triangle: noise)
    mm = BilinearMap(M, M, rows, cols)
    Ts = rng.normal(size=(m, m))
    Ts = Ts + Ts.T
    noisy = np.tril(Ts) + np.triu(rng.normal(size=(m, m)), 1)
    exact_mm = (M.T @ dW @ M).toarray()
    assert mm.adjoint_lower(noisy) @ dW.data == pytest.approx(np.sum(Ts * exact_mm), abs=1e-10)
    # output on a fixed sparse pattern
    P = (abs(M).T @ abs(W) @ abs(M)).tocsc()
    P.sort_indices()
    on = BilinearMap(M, M, rows, cols, pattern_keys(P))
    got = sp.csc_matrix((on(dW.data), P.indices, P.indptr), shape=P.shape).toarray()
    np.testing.assert_allclose(got, exact_mm, atol=1e-12)
    # the map finding that structural pattern itself
    found = BilinearMap(M, M, rows, cols, "pattern")
    np.testing.assert_array_equal(found.out_keys, pattern_keys(P))
    np.testing.assert_allclose(found(dW.data), on(dW.data), atol=1e-12)
    # LAPACK's Fortran-ordered output read in place gives the same adjoint
    assert mm.adjoint_lower(np.asfortranarray(noisy)) @ dW.data == pytest.approx(np.sum(Ts * exact_mm), abs=1e-10)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 50), st.floats(0.02, 0.4), st.floats(0.0, 1.0), st.integers(0, 10_000))
def test_takahashi_with_a_dense_trailing_block_equals_the_dense_inverse(n, density, split, seed):
    from lmmformula.engine.selinv import takahashi

    rng = np.random.default_rng(seed)
    A = sp.random(n, n, density=density, random_state=rng)
    A = (A + A.T).tocsc()
    A = (A + sp.diags(np.asarray(abs(A).sum(axis=1)).ravel() + 1.0)).tocsc()
    L, d, p = SparseFactor(A)._get()
    S = takahashi(L, d, p, dense_from=int(round(split * n))).tocoo()
    inv = np.linalg.inv(A.toarray())
    np.testing.assert_allclose(S.data, inv[S.row, S.col], rtol=1e-9, atol=1e-12)


def test_column_dots_sparse_equals_dense():
    rng = np.random.default_rng(1)
    A = sp.random(30, 30, density=0.2, random_state=rng)
    A = (A + A.T + 10 * sp.identity(30)).tocsc()
    F = A.copy()
    F.data = rng.normal(size=F.nnz)
    xs, ys = np.arange(30), np.arange(30)
    sparse = column_dots(SparseFactor(A).selected_inverse(), F, xs, ys)
    dense = column_dots(DenseFactor(A).selected_inverse(), F, xs, ys)
    np.testing.assert_allclose(sparse, dense, rtol=1e-10)


@pytest.mark.parametrize("formula, data, method", [
    ("Reaction ~ Days + (Days | Subject)", "sleepstudy.csv", "REML"),
    ("Reaction ~ Days + (Days || Subject)", "sleepstudy.csv", "ML"),
    ("strength ~ 1 + (1 | batch/cask)", "Pastes.csv", "REML"),
    ("diameter ~ 1 + (1 | plate) + (1 | sample)", "Penicillin.csv", "ML"),
])
def test_sparse_and_dense_paths_agree(formula, data, method):
    model = lmf.LMM.from_formula(formula, load_data(data))
    dense = model.fit(method=method)
    assert isinstance(dense.mme._factor, DenseFactor)
    import lmmformula.engine.mme as mme_mod

    original = mme_mod.make_factor
    mme_mod.make_factor = lambda A, dense_below=400: SparseFactor(A)
    try:
        sparse = model.fit(method=method)
    finally:
        mme_mod.make_factor = original
    assert isinstance(sparse.mme._factor, SparseFactor)
    assert sparse.loglik == pytest.approx(dense.loglik, abs=1e-9)
    np.testing.assert_allclose(sparse.fixed_effects.to_numpy(), dense.fixed_effects.to_numpy(), rtol=1e-6)
    pd_s, pd_d = sparse.random_effects, dense.random_effects
    for term in pd_d:
        np.testing.assert_allclose(pd_s[term].to_numpy(), pd_d[term].to_numpy(), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("method", ["REML", "ML"])
def test_analytic_gradient_matches_finite_differences(method):
    fit = lmf.LMM.from_formula("distance ~ age * Sex + (age | Subject)", load_data("Orthodont.csv")).fit(
        method=method)
    mme = fit.mme
    theta = fit.theta * 1.3 + 0.05
    ev = mme.evaluate(theta)
    grad = mme.derivatives(ev).gradient
    h = 1e-6
    fd = [(mme.evaluate(theta + h * e).deviance - mme.evaluate(theta - h * e).deviance) / (2 * h)
          for e in np.eye(theta.size)]
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-6)
    full = mme.full_gradient(theta, 2.0)
    d0 = mme.deviance_at(theta, 2.0)
    fd_s = (mme.deviance_at(theta, 2.0 + 1e-6) - mme.deviance_at(theta, 2.0 - 1e-6)) / 2e-6
    assert full[-1] == pytest.approx(fd_s, rel=1e-5)
    assert np.isfinite(d0)


def test_verbose_prints_one_line_per_iteration(capsys):
    fit = lmf.LMM.from_formula("Yield ~ 1 + (1 | Batch)", load_data("Dyestuff.csv")).fit(verbose=True)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("iter")]
    assert len(lines) == len(fit.optimizer.history)
    assert "logL" in lines[-1] and "theta" in lines[-1]


def test_lazy_bilinear_maps_give_the_same_fit(monkeypatch):
    """Models whose maps would be too large apply them lazily (dense residual blocks, several Z entries per
    row): the same optimum."""
    from lmmformula.engine.crossproducts import BilinearMap

    data = load_data("slatehall")
    formula = "yield ~ gen + (1 | rep) + ar1(row):ar1(col)"
    stored = lmf.LMM.from_formula(formula, data).fit()
    monkeypatch.setattr(BilinearMap, "MAX_ENTRIES", -1)
    lazy = lmf.LMM.from_formula(formula, data).fit()
    assert lazy.mme.cross.zz.lazy and lazy.mme.cross.xx.lazy
    assert lazy.loglik == pytest.approx(stored.loglik, abs=1e-9)
    np.testing.assert_allclose(lazy.theta, stored.theta, rtol=1e-6)


@pytest.mark.parametrize("formula, data, method", [
    ("yield ~ gen + ar1(row):ar1(col)", "slatehall", "REML"),
    ("yield ~ gen + ar1(row):ar1(col)", "stroup_nin", "ML"),
    ("distance ~ age * Sex + Subject:us(age)", "Orthodont.csv", "REML"),
    ("Reaction ~ Days + (1 | Subject) + Subject:ar1(Days)", "sleepstudy.csv", "REML"),
    ("Reaction ~ Days + (Days | Subject)", "sleepstudy.csv", "ML"),
])
def test_converged_fit_has_a_decrement_below_tol_at_its_estimates(formula, data, method):
    """Convergence is claimed at the end point of the last step (which may end the iterations without new
    derivatives there): derivatives computed afresh at the estimates give a Newton decrement below tol, and
    the deviance there is the one reported."""
    fit = lmf.LMM.from_formula(formula, load_data(data)).fit(method=method)
    assert fit.converged
    mme = fit.mme
    ev = mme.evaluate(fit.theta)
    der = mme.derivatives(ev)
    score = -0.5 * der.gradient
    decrement = float(score @ np.linalg.solve(der.ai, score))
    assert 0.0 <= decrement < fit.optimizer.tol
    assert -0.5 * ev.deviance == pytest.approx(fit.loglik, abs=1e-12)


def test_summary_convergence_line_counts_the_steps_taken():
    """The summary names the steps of the history by algorithm and the last decrement the optimizer computed
    (the one its convergence rule compared with tol)."""
    fit = lmf.LMM.from_formula("Reaction ~ Days + (Days | Subject)", load_data("sleepstudy.csv")).fit()
    algs = [h.algorithm for h in fit.optimizer.history[1:]]
    line = next(x for x in fit.summary().as_text().splitlines() if x.startswith("REML converged"))
    assert f"after {len(algs)} steps ({algs.count('EM')} EM, {algs.count('AI')} AI)" in line
    assert f"s'AI^-1 s = {fit.optimizer.criterion:.2e} (tolerance 1e-08)" in line
    assert fit.optimizer.criterion < 1e-8


def test_a_variance_stepped_onto_zero_is_released_before_convergence():
    """Durban's lettuce trial with a replicate effect: the first AI step is capped so that the replicate's
    relative SD lands exactly on 0, where its score is 0.  It is tested for release once the correlations are
    near their optimum (decrement below RELEASE_FROM), and the fit reaches the interior optimum that a start
    next to it finds."""
    from lmmformula.engine.reml import RELEASE_FROM

    model = lmf.LMM.from_formula("yield ~ gen + (1 | rep) + ar1(row):ar1(bed)", load_data("durban_rowcol"))
    fit = model.fit()
    history = fit.optimizer.history
    first_zero = next(r.iteration for r in history if r.theta[0] == 0.0)
    release = next(k for k, r in enumerate(history) if r.algorithm == "release")
    assert first_zero == 1 and RELEASE_FROM > fit.optimizer.tol
    assert history[release - 1].loglik - history[release - 2].loglik > 1e-4  # not after converging at 0
    near = model.fit(start=np.asarray(fit.theta) * 1.01)
    assert fit.theta[0] > 0.05
    assert fit.loglik == pytest.approx(near.loglik, abs=1e-8)
    np.testing.assert_allclose(fit.theta, near.theta, rtol=1e-4)


def _far_slope_data(seed: int, slope_sd: float) -> pd.DataFrame:
    """A random slope on x ~ N(1000, 1): lme4's parameterisation is badly conditioned there (lme4 1.1-31 stops
    0.02-0.24 log-likelihood units short of the optimum on such data, with convergence warnings)."""
    rng = np.random.default_rng(seed)
    g = np.repeat(np.arange(15), 6)
    x = rng.normal(1000.0, 1.0, size=g.size)
    y = 1 + x + rng.normal(size=15)[g] + slope_sd * rng.normal(size=15)[g] * (x - 1000) + rng.normal(size=g.size)
    return pd.DataFrame({"y": y, "x": x, "xc": x - 1000.0, "g": [f"g{i}" for i in g]})


@pytest.mark.parametrize("seed, slope_sd", [(4, 0.05), (6, 0.0), (7, 0.3)])
@pytest.mark.parametrize("method", ["REML", "ML"])
def test_slope_on_a_covariate_far_from_zero_reaches_the_centred_optimum(seed, slope_sd, method):
    """``(x | g)`` and ``(I(x - 1000) | g)`` are the same model (an unstructured covariance is invariant under a
    shift of x): the uncentred fit, whose columns are conditioned internally, reaches the centred fit's maximum,
    slope variance, residual variance and fixed slope.  Before, it claimed convergence up to 0.23 below.
    Both fits stop at a decrement below 1e-8, which fixes parameters along flat directions only to about
    sqrt(1e-8) = 1e-4 relative."""
    d = _far_slope_data(seed, slope_sd)
    far = lmf.LMM.from_formula("y ~ x + (x | g)", d).fit(method=method)
    centred = lmf.LMM.from_formula("y ~ xc + (xc | g)", d).fit(method=method)
    assert far.converged and centred.converged
    assert far.optimizer.conditioned == (0,) and centred.optimizer.conditioned == ()
    assert far.loglik == pytest.approx(centred.loglik, abs=1e-7)
    vc_far, vc_c = far.variance_components, centred.variance_components
    slope = lambda vc, name: float(vc.loc[vc["parameter"] == f"var({name})", "estimate"].iloc[0])  # noqa: E731
    assert slope(vc_far, "x") == pytest.approx(slope(vc_c, "xc"), rel=1e-3, abs=1e-7)
    assert far.sigma2 == pytest.approx(centred.sigma2, rel=1e-4)
    assert far.fixed_effects.loc["x", "estimate"] == pytest.approx(centred.fixed_effects.loc["xc", "estimate"],
                                                                   rel=1e-4)
    history = far.optimizer.history  # mapped to the original parameters
    assert history[0].algorithm == "start" and np.array_equal(history[-1].theta, far.theta)
    # the log-likelihood recomputed in the original parameters (about 1e6 times worse conditioned here)
    assert len(history) <= far.n_iter + 1 and far.loglik == pytest.approx(history[-1].loglik, abs=1e-7)
    assert "orthogonalised columns of (x | g)" in far.summary().as_text()


def test_conditioning_is_kept_by_the_record_used_from_a_given_start_and_skipped_for_good_columns():
    d = _far_slope_data(6, 0.0)
    fit = lmf.LMM.from_formula("y ~ x + (x | g)", d).fit()
    again = lmf.FitResult.from_json(fit.to_json(), data=d)
    assert again.optimizer.conditioned == (0,)
    refit = fit.refit(method="ML")  # a start (the REML estimates) is mapped to the conditioned parameters
    assert refit.optimizer.conditioned == (0,)
    centred = lmf.LMM.from_formula("y ~ xc + (xc | g)", d).fit(method="ML")
    assert refit.loglik == pytest.approx(centred.loglik, abs=1e-7)
    sleep = lmf.LMM.from_formula("Reaction ~ Days + (Days | Subject)", load_data("sleepstudy.csv")).fit()
    assert sleep.optimizer.conditioned == ()


@pytest.mark.parametrize("shift", [1e3, 1e4])
def test_shifted_sleepstudy_slope_matches_the_centred_fit_and_its_singular_flag(shift):
    """sleepstudy with Days + shift: the same maximum as ``(Days | Subject)`` and not flagged singular (the
    original factor's second diagonal entry, the slope's SD given the intercept at Days = -shift, is below
    1e-4 at a shift of 1e4 although the covariance matrix is positive definite)."""
    d = load_data("sleepstudy.csv")
    plain = lmf.LMM.from_formula("Reaction ~ Days + (Days | Subject)", d).fit()
    far = lmf.LMM.from_formula("Reaction ~ Dx + (Dx | Subject)", d.assign(Dx=d.Days + shift)).fit()
    assert far.optimizer.conditioned == (0,) and far.converged
    assert far.loglik == pytest.approx(plain.loglik, abs=1e-7)
    assert far.singular is plain.singular is False
    # inference on the slope does not depend on the shift (lmerTest on the centred data: 17.0 both ways); it is
    # computed on the orthogonalised columns, where it keeps its precision
    slope, days = far.fixed_effects.loc["Dx"], plain.fixed_effects.loc["Days"]
    assert slope["df"] == pytest.approx(days["df"], rel=1e-3) and slope["std_error"] == pytest.approx(
        days["std_error"], rel=1e-6)
    kr_far, kr_plain = far.anova(ddf="kenward-roger"), plain.anova(ddf="kenward-roger")
    assert kr_far.loc["Dx", "den_df"] == pytest.approx(kr_plain.loc["Days", "den_df"], rel=1e-3)
    se = lambda fit, name: float(fit.variance_components.set_index("parameter").loc[name, "std_error"])  # noqa
    assert se(far, "var(Dx)") == pytest.approx(se(plain, "var(Days)"), rel=1e-4)
    assert se(far, "variance") == pytest.approx(se(plain, "variance"), rel=1e-4)  # the residual variance
    assert far.shrinkage["edf"].iloc[0] == pytest.approx(plain.shrinkage["edf"].iloc[0], rel=1e-5)


def test_a_rank_one_covariance_is_singular_whatever_the_shift():
    """A random slope only (``y = 10 + 2x + b_g (x - 3.5) + e``): the centred fit puts the factor's second diagonal
    entry on 0; on orthogonalised columns of the shifted data the optimum has a rank-one covariance matrix
    (eigenvalue ratio 4e-11) without a diagonal entry below 1e-4.  Both are flagged singular."""
    rng = np.random.default_rng(119)
    g = np.repeat(np.arange(15), 8)
    x = np.tile(np.arange(8), 15).astype(float)
    y = 10 + 2 * x + rng.normal(0, 0.5, 15)[g] * (x - 3.5) + rng.normal(0, 1, g.size)
    d = pd.DataFrame({"y": y, "g": g.astype(str), "x": x, "xs": x + 1000.0})
    centred = lmf.LMM.from_formula("y ~ x + (x | g)", d).fit()
    shifted = lmf.LMM.from_formula("y ~ xs + (xs | g)", d).fit()
    assert shifted.optimizer.conditioned == (0,)
    assert shifted.loglik == pytest.approx(centred.loglik, abs=1e-7)
    assert centred.singular and shifted.singular
    assert shifted.optimizer.at_boundary == centred.optimizer.at_boundary == (2,)


def test_conditioned_iterations_that_stop_early_are_returned_with_a_warning():
    d = load_data("sleepstudy.csv").assign(Dx=lambda f: f.Days + 1000.0)
    model = lmf.LMM.from_formula("Reaction ~ Dx + (Dx | Subject)", d)
    with pytest.warns(lmf.ConvergenceWarning, match="stopped after 3 iterations"):
        fit = model.fit(max_iter=3)
    assert fit.optimizer.conditioned == (0,) and not fit.converged and fit.n_iter == 3
    assert fit.loglik == pytest.approx(fit.optimizer.history[-1].loglik, abs=1e-6)


def test_lost_precision_in_the_original_parameters_is_warned_about():
    """``(1 + x + I(x**2) | Subject)`` with x = Days + 3000: the conditioned iterations reach the centred
    model's maximum (lme4 on the centred data: -869.1499594), but the equations in the original parameters
    give a log-likelihood 2.6e-3 off; the fit says so rather than reporting it silently."""
    d = load_data("sleepstudy.csv")
    centred = lmf.LMM.from_formula("Reaction ~ Days + (1 + Days + I(Days**2) | Subject)", d).fit(method="ML")
    model = lmf.LMM.from_formula("Reaction ~ x + (1 + x + I(x**2) | Subject)", d.assign(x=d.Days + 3000.0))
    with pytest.warns(lmf.LMMWarning, match=r"lose precision.*centre or rescale"):
        far = model.fit(method="ML")
    assert far.optimizer.history[-1].loglik == pytest.approx(centred.loglik, abs=1e-7)
    assert centred.loglik == pytest.approx(-869.1499594, abs=1e-6)
