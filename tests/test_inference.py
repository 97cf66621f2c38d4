"""Fixed-effect inference: type III F tests, contrasts, denominator df (golden values are in test_lme4_golden)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

import lmmformula as lmf
from conftest import HERE, load_data


@pytest.fixture(scope="module")
def oats_fit():
    return lmf.LMM.from_formula("yield ~ Variety * nitro + (1 | Block/Variety)", load_data("Oats.csv")).fit()


def test_type3_anova_does_not_depend_on_the_reference_level(oats_fit):
    data = load_data("Oats.csv")
    levels = sorted(data["Variety"].unique())
    data["Variety"] = pd.Categorical(data["Variety"], categories=levels[::-1])
    other = lmf.LMM.from_formula("yield ~ Variety * nitro + (1 | Block/Variety)", data).fit()
    a, b = oats_fit.anova(), other.anova()
    np.testing.assert_allclose(b.loc[a.index, "F_value"], a["F_value"], rtol=1e-7)
    np.testing.assert_allclose(b.loc[a.index, "den_df"], a["den_df"], rtol=1e-5)


def test_single_coefficient_contrast_equals_the_coefficient_row(oats_fit):
    fe = oats_fit.fixed_effects
    name = "nitro"
    row = oats_fit.contrast({name: 1.0}).iloc[0]
    for col in ("estimate", "std_error", "df", "t_value", "p_value"):
        assert row[col] == pytest.approx(fe.loc[name, col], rel=1e-10)


def test_joint_contrast_of_a_term_equals_its_type3_test(oats_fit):
    """The interaction's type III hypothesis is its two coefficients being zero (nothing contains it)."""
    names = list(oats_fit.fixed_names)
    idx = [i for i, n in enumerate(names) if n.startswith("Variety") and ":nitro" in n]
    L = np.eye(len(names))[idx]
    joint = oats_fit.contrast(L).loc["joint F"]
    row = oats_fit.anova().loc["Variety:nitro"]
    assert joint["estimate"] == pytest.approx(row.F_value, rel=1e-10)
    assert joint["df"] == pytest.approx(row.den_df, rel=1e-10)
    assert joint["p_value"] == pytest.approx(row.p_value, rel=1e-8)


def test_residual_ddf_is_n_minus_p(oats_fit):
    n, p = oats_fit.n_obs, len(oats_fit.fixed_names)
    table = oats_fit.anova(ddf="residual")
    assert (table.den_df == n - p).all()
    np.testing.assert_allclose(table.F_value, oats_fit.anova().F_value, rtol=1e-12)
    fe = oats_fit.fixed_effects_table(ddf="residual")
    assert (fe.df == n - p).all()
    assert fe.p_value.iloc[1] == pytest.approx(2 * scipy.stats.t.sf(abs(fe.t_value.iloc[1]), n - p))


def test_kenward_roger_contrast_equals_its_coefficient_row(oats_fit):
    fe = oats_fit.fixed_effects_table(ddf="kenward-roger")
    row = oats_fit.contrast({"nitro": 1.0}, ddf="kenward-roger").iloc[0]
    for col in ("estimate", "std_error", "df", "t_value", "p_value"):
        assert row[col] == pytest.approx(fe.loc["nitro", col], rel=1e-10)


def test_kenward_roger_is_refused_for_correlation_parameters():
    data = load_data("Orthodont.csv")
    fit = lmf.LMM.from_formula("distance ~ age * Sex + Subject:ar1(age)", data).fit()
    with pytest.raises(lmf.LMMError, match="correlation parameters"):
        fit.anova(ddf="kenward-roger")
    assert np.isfinite(fit.anova().den_df).all()  # Satterthwaite works there


@pytest.mark.parametrize("call", [
    lambda f: f.anova(ddf="containment"),
    lambda f: f.contrast(np.ones(3)),
    lambda f: f.contrast({"nitrogen": 1.0}),
    lambda f: f.contrast(np.full((1, 6), np.nan)),
    lambda f: f.fixed_effects_table(ddf=5),
])
def test_bad_inference_requests_raise_lmmerror(oats_fit, call):
    with pytest.raises(lmf.LMMError):
        call(oats_fit)


@settings(max_examples=15, deadline=None)
@given(st.integers(3, 5), st.integers(2, 3), st.integers(2, 4), st.integers(0, 10_000))
@example(3, 2, 4, 0)    # Kenward-Roger's A2 = q case (pbkrtest's 0/0 rule)
@example(3, 2, 3, 271)  # the same with rounding of 3e-14 in both vanishing terms
def test_satterthwaite_df_are_the_classical_split_plot_df(n_block, n_main, n_sub, seed):
    """Balanced split plot: whole-plot factor A tested on (b - 1)(a - 1) df, sub-plot factor B and A:B on
    a (b - 1)(s - 1) df, when both variance estimates are interior (lmerTest's property for balanced designs)."""
    rng = np.random.default_rng(seed)
    rows = [(b, a, s) for b in range(n_block) for a in range(n_main) for s in range(n_sub)]
    d = pd.DataFrame(rows, columns=["block", "A", "B"]).astype(str)
    blk = rng.normal(0, 2.0, n_block)
    wp = rng.normal(0, 1.5, (n_block, n_main))
    d["y"] = [blk[b] + wp[b, a] + 0.3 * a + 0.2 * s + rng.normal() for b, a, s in rows]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = lmf.LMM.from_formula("y ~ A * B + (1 | block) + (1 | block:A)", d).fit()
    assume(fit.converged and not fit.singular)
    sub = n_main * (n_block - 1) * (n_sub - 1)
    for ddf in ("satterthwaite", "kenward-roger"):
        table = fit.anova(ddf=ddf)
        assert table.loc["A", "den_df"] == pytest.approx((n_block - 1) * (n_main - 1), rel=1e-4)
        assert table.loc["B", "den_df"] == pytest.approx(sub, rel=1e-4)
        assert table.loc["A:B", "den_df"] == pytest.approx(sub, rel=1e-4)
    # balanced: no Kenward-Roger adjustment, the same F
    np.testing.assert_allclose(fit.anova(ddf="kenward-roger").F_value, table.F_value, rtol=1e-6)


# ---- comparisons and functions of variance parameters --------------------------------------------------------
@pytest.fixture(scope="module")
def sleep():
    return load_data("sleepstudy.csv")


def test_compare_likelihood_ratio_and_boundary_mixture(sleep):
    small = lmf.LMM.from_formula("Reaction ~ Days + (1 | Subject)", sleep).fit()
    big = lmf.LMM.from_formula("Reaction ~ Days + (Days | Subject)", sleep).fit()
    table = lmf.compare(big, small)  # any order: sorted by the number of parameters
    row = table.iloc[1]
    assert list(table.n_params) == [4, 6]
    assert row.chi2 == pytest.approx(2 * (big.loglik - small.loglik))
    assert row.df == 2
    assert row.p_value == pytest.approx(scipy.stats.chi2.sf(row.chi2, 2))
    assert row.p_boundary == pytest.approx(0.5 * scipy.stats.chi2.sf(row.chi2, 1) + 0.5 * row.p_value)
    assert table.AIC.iloc[0] == pytest.approx(small.aic)


def test_compare_refuses_reml_fits_with_different_fixed_effects_and_refit_by_ml_works(sleep):
    a = lmf.LMM.from_formula("Reaction ~ Days + (Days | Subject)", sleep).fit()
    b = lmf.LMM.from_formula("Reaction ~ 1 + (Days | Subject)", sleep).fit()
    with pytest.raises(lmf.LMMError, match="refit"):
        lmf.compare(a, b)
    a_ml, b_ml = a.refit(method="ML"), b.refit(method="ML")
    assert a_ml.method == "ML"
    direct = lmf.LMM.from_formula("Reaction ~ Days + (Days | Subject)", sleep).fit(method="ML")
    assert a_ml.loglik == pytest.approx(direct.loglik, abs=1e-7)
    row = lmf.compare(a_ml, b_ml).iloc[1]
    assert row.df == 1 and np.isnan(row.p_boundary)  # a fixed effect: no boundary mixture
    with pytest.raises(lmf.LMMError, match="one method"):
        lmf.compare(a, b_ml)


def test_compare_refuses_different_rows(sleep):
    a = lmf.LMM.from_formula("Reaction ~ Days + (1 | Subject)", sleep).fit()
    b = lmf.LMM.from_formula("Reaction ~ Days + (1 | Subject)", sleep.iloc[:-5]).fit()
    with pytest.raises(lmf.LMMError, match="different observations"):
        lmf.compare(a, b)


def test_variance_components_wald_intervals_and_vpredict(sleep):
    fit = lmf.LMM.from_formula("Reaction ~ Days + (Days | Subject)", sleep).fit()
    vc = fit.variance_components.set_index("label")
    z = scipy.stats.norm.ppf(0.975)
    np.testing.assert_allclose(vc.ci_upper - vc.ci_lower, 2 * z * vc.std_error)
    np.testing.assert_allclose(vc.z_value, vc.estimate / vc.std_error)
    one = fit.vpredict("Subject.var(Days)")
    assert one.estimate == pytest.approx(vc.loc["Subject.var(Days)", "estimate"])
    assert one.std_error == pytest.approx(vc.loc["Subject.var(Days)", "std_error"], rel=1e-6)
    # a linear function: exact delta method a'Ca
    _, cov = fit._reported_variances
    labels = list(vc.index)
    i, j = labels.index("Subject.var(Intercept)"), labels.index("residual")
    total = fit.vpredict("total = Subject.var(Intercept) + 2 * residual")
    assert total.name == "total"
    assert total.estimate == pytest.approx(vc.estimate.iloc[i] + 2 * vc.estimate.iloc[j])
    a = np.zeros(len(labels))
    a[i], a[j] = 1.0, 2.0
    assert total.std_error == pytest.approx(np.sqrt(a @ cov @ a), rel=1e-6)
    r = fit.vpredict("r = Subject.cov(Intercept,Days) / sqrt(Subject.var(Intercept) * Subject.var(Days))")
    assert r.estimate == pytest.approx(0.0655, abs=5e-4)  # lme4's VarCorr correlation 0.066


@pytest.mark.parametrize("expr", ["h2 = Subject / (Subject + resid)", "__import__('os')", "Subject.__class__",
                                  "open('x')", "", "1 +"])
def test_vpredict_rejects_unknown_names_and_code(sleep, expr):
    fit = lmf.LMM.from_formula("Reaction ~ Days + (1 | Subject)", sleep).fit()
    with pytest.raises(lmf.LMMError):
        fit.vpredict(expr)


def test_compare_gives_no_boundary_mixture_for_two_new_variances(sleep):
    data = load_data("Penicillin.csv")
    one = lmf.LMM.from_formula("diameter ~ 1 + (1 | plate)", data).fit()
    two = lmf.LMM.from_formula("diameter ~ 1 + (1 | plate) + (1 | sample)", data).fit()
    assert np.isfinite(lmf.compare(one, two).p_boundary.iloc[1])  # one new variance: the mixture
    base = lmf.LMM.from_formula("diameter ~ 1 + (1 | plate)", data.assign(
        blk=np.arange(len(data)) % 4)).fit()
    both = lmf.LMM.from_formula("diameter ~ 1 + (1 | plate) + (1 | sample) + (1 | blk)", data.assign(
        blk=np.arange(len(data)) % 4)).fit()
    assert np.isnan(lmf.compare(base, both).p_boundary.iloc[1])  # two new variances: not 50:50


def test_type3_tests_drop_aliased_columns_and_unused_categories():
    """Unused categories and collinear covariates carry no hypothesis (lmerTest: A on 2 df, no test of x2)."""
    rng = np.random.default_rng(7)
    d = pd.DataFrame({"A": rng.choice(["a1", "a2", "a3"], 120), "x": rng.normal(size=120),
                      "g": rng.choice([f"g{i}" for i in range(12)], 120)})
    d["y"] = (d.A == "a2") * 0.8 + 0.5 * d.x + rng.normal(size=120) + d.g.map(
        dict(zip(sorted(d.g.unique()), rng.normal(size=12))))
    ref = lmf.LMM.from_formula("y ~ A + x + (1 | g)", d).fit().anova()
    d["A"] = pd.Categorical(d.A, categories=["a1", "a2", "a3", "a4"])
    d["x2"] = 2 * d.x + 1
    with pytest.warns(lmf.RankDeficiencyWarning):
        fit = lmf.LMM.from_formula("y ~ A + x + x2 + (1 | g)", d).fit()
    table = fit.anova()
    np.testing.assert_allclose(table.loc[["A", "x"], "F_value"], ref.loc[["A", "x"], "F_value"], rtol=1e-8)
    assert table.loc["A", "num_df"] == 2
    assert table.loc["x2", "num_df"] == 0 and np.isnan(table.loc["x2", "F_value"])


def test_predict_means_flags_non_estimable_means():
    """An empty cell of an interaction: its mean and the margin averaging over it are NaN (emmeans: nonEst)."""
    rng = np.random.default_rng(3)
    d = pd.DataFrame({"A": rng.choice(["a1", "a2", "a3"], 150), "B": rng.choice(["b1", "b2"], 150),
                      "g": rng.choice([f"g{i}" for i in range(10)], 150)})
    d = d[~((d.A == "a3") & (d.B == "b2"))]
    d["y"] = rng.normal(size=len(d)) + (d.B == "b2") * 0.5
    with pytest.warns(lmf.RankDeficiencyWarning):
        fit = lmf.LMM.from_formula("y ~ A * B + (1 | g)", d).fit()
    cells = fit.predict_means(["A", "B"]).table
    assert np.isnan(cells.loc["a3:b2", "estimate"]) and np.isfinite(cells.loc["a3:b1", "estimate"])
    margin_b = fit.predict_means("B").table
    assert np.isnan(margin_b.loc["b2", "estimate"]) and np.isfinite(margin_b.loc["b1", "estimate"])


EXTRA = json.loads((HERE / "golden" / "anova_extra.json").read_text())


@pytest.mark.parametrize("case", EXTRA["cases"], ids=lambda c: c["name"])
def test_unbalanced_type3_tables_match_lmertest(case):
    """Cases of tests/golden/generate_anova_extra.R (lme4 run to a tight optimum): a single-term model, where
    lmerTest's basis is its type I rows; an unbalanced factorial with a nested random term; factors entering only
    through interactions and a model without an intercept, where lmerTest's containment follows R's coding."""
    data = load_data(case["data"])
    if case["drop"]:
        data = data.drop(index=np.asarray(case["drop"]) - 1)
    fit = lmf.LMM.from_formula(case["formula"], data).fit()
    assert fit.loglik == pytest.approx(case["loglik"], abs=1e-6)
    def key(term):  # R orders an interaction's factors as they first appear in the formula
        return tuple(sorted(term.split(":")))

    for ddf in ("satterthwaite", "kenward_roger"):
        table = fit.anova(ddf=ddf.replace("_", "-"))
        table.index = [key(t) for t in table.index]
        for row in case[ddf]:
            ours = table.loc[[key(row["term"])]].iloc[0]
            assert ours.num_df == row["NumDF"]
            assert ours.F_value == pytest.approx(row["F"], rel=1e-5)
            # 2e-5: the basis matters (the coefficient basis gives 43.2519 for Diet, 7e-5 off)
            assert ours.den_df == pytest.approx(row["DenDF"], rel=2e-5)
