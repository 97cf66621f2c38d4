"""LMM.explain(): the implied model before fitting, and warnings for combinations the data cannot identify."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import lmmformula as lmf
from conftest import load_data
from lmmformula.datasets import load

CLEAN = [
    ("sleepstudy.csv", "Reaction ~ Days + (Days | Subject)"),
    ("Penicillin.csv", "diameter ~ 1 + (1 | plate) + (1 | sample)"),
    ("slatehall", "yield ~ gen + (1 | rep) + (1 | rep:row) + (1 | rep:col) + ar1(row):ar1(col)"),
    ("Orthodont.csv", "distance ~ age * Sex + (1 | Subject) + Subject:ar1(age)"),
    ("sleepstudy.csv", "Reaction ~ Days + ar1(0 + factor(Days) | Subject)"),
    ("cullis_earlygen", "yield ~ 1 + (1 | gen) + ar1(row):ar1(col)"),
]


@pytest.mark.parametrize("name, formula", CLEAN)
def test_clean_models_are_described_without_warnings(name, formula, capsys):
    data = load_data(name)
    before = data.copy()
    model = lmf.LMM.from_formula(formula, data)
    explanation = model.explain()
    printed = capsys.readouterr().out
    assert printed.strip() == explanation.text
    assert explanation.warnings == ()
    assert f"Model: {formula}" in printed and "Covariance parameters:" in printed
    for block in model.design.random:
        assert f"{block.n_levels} levels x {block.n_columns} effect(s)" in printed
    fit = model.fit()
    # covariance parameters counted as in the fit (lme4's count: fixed + covariance + residual variance)
    assert explanation.n_covariance_parameters == fit.n_params - fit.mme.p
    pd.testing.assert_frame_equal(data, before)


def test_show_false_prints_nothing(capsys):
    explanation = lmf.LMM.from_formula("Reaction ~ Days + (1 | Subject)", load_data("sleepstudy.csv")).explain(
        show=False)
    assert capsys.readouterr().out == ""
    assert "Residual: sigma^2 I" in str(explanation) and "<ModelExplanation" in repr(explanation)


def test_incomplete_grid_is_noted():
    explanation = lmf.LMM.from_formula("yield ~ gen + ar1(row):ar1(col)", load("stroup_nin")).explain(show=False)
    assert any("11 x 22 grid has 242 cells and 224 observations" in n for n in explanation.notes)


def test_alphabetical_positions_are_flagged():
    data = load_data("Orthodont.csv")
    data["t"] = pd.Categorical(data["age"].astype(int).astype(str), categories=["10", "12", "14", "8"],
                               ordered=True)
    warnings = lmf.LMM.from_formula("distance ~ age + Subject:ar1(t)", data).explain(show=False).warnings
    assert len(warnings) == 1 and "category order (10, 12, 14, 8" in warnings[0] and "'t'" in warnings[0]
    numeric_order = data.assign(t=pd.Categorical(data["t"].astype(str), categories=["8", "10", "12", "14"],
                                                 ordered=True))
    assert lmf.LMM.from_formula("distance ~ age + Subject:ar1(t)", numeric_order).explain(show=False).warnings == ()


def test_structured_term_with_single_observation_cells_is_flagged():
    data = load_data("Orthodont.csv")
    extra = data.iloc[:4].assign(distance=data["distance"].iloc[:4] + 0.5)
    data = pd.concat([data, extra], ignore_index=True)
    for structure in ("us", "cs", "toep", "diag"):
        warnings = lmf.LMM.from_formula(f"distance ~ age + {structure}(0 + factor(age) | Subject)",
                                        data).explain(show=False).warnings
        assert len(warnings) == 1 and "only 4 of the 112 observations" in warnings[0], structure
    ar1 = lmf.LMM.from_formula("distance ~ age + ar1(0 + factor(age) | Subject)", data).explain(show=False)
    assert ar1.warnings == ()  # AR1 with a nugget is identifiable


@pytest.mark.parametrize("residual, flagged", [("cs(age)", True), ("us(age)", True), ("toep(age)", True),
                                               ("toep(age, 1)", False), ("ar1(age)", False), ("diag(age)", False)])
def test_random_intercept_inside_a_residual_structure(residual, flagged):
    data = load_data("Orthodont.csv")
    warnings = lmf.LMM.from_formula(f"distance ~ age + (1 | Subject) + Subject:{residual}",
                                    data).explain(show=False).warnings
    assert (len(warnings) == 1 and "not separately identifiable" in warnings[0]) == flagged


def test_nugget_next_to_a_residual_without_ar1():
    data = load_data("Orthodont.csv").assign(unit=lambda d: np.arange(len(d)))
    flagged = lmf.LMM.from_formula("distance ~ age + (1 | unit) + Subject:cs(age)", data).explain(show=False)
    assert any("one level per observation" in w for w in flagged.warnings)
    fine = lmf.LMM.from_formula("distance ~ age + (1 | unit) + Subject:ar1(age)", data).explain(show=False)
    assert fine.warnings == ()


def test_sparse_fill_is_reported_for_a_large_block():
    rng = np.random.default_rng(1)
    n = 4000
    data = pd.DataFrame({"y": rng.normal(size=n), "a": rng.integers(0, 500, n), "b": rng.integers(0, 40, n)})
    text = lmf.LMM.from_formula("y ~ 1 + (1 | a) + (1 | b)", data).explain(show=False).text
    assert "random block of order 540" in text and "sparse factor has" in text


@pytest.mark.parametrize("formula, expected", [
    ("distance ~ age + (age | Subject) + Subject:us(age)", "already contains"),
    ("distance ~ age + (0 + age | Subject) + Subject:us(age)", "already contains"),
    ("distance ~ age + (1 | Sex:Subject) + Sex:Subject:cs(age)", "already contains"),
    ("distance ~ age + (0 + factor(age) | Subject) + Subject:ar1(age)", "models the same covariance again"),
    ("distance ~ age + (0 + factor(age) | Subject) + Subject:diag(age)", "models the same covariance again"),
    ("distance ~ age + cs(0 + factor(age) | Subject) + Subject:cs(age)", "models the same covariance again"),
])
def test_random_terms_that_duplicate_a_residual_structure(formula, expected):
    warnings = lmf.LMM.from_formula(formula, load_data("Orthodont.csv")).explain(show=False).warnings
    assert len(warnings) == 1 and expected in warnings[0]


def test_grouping_separated_by_the_fixed_part():
    data = load_data("sleepstudy.csv")
    warnings = lmf.LMM.from_formula("Reaction ~ factor(Subject) + (1 | Subject)", data).explain(show=False).warnings
    assert len(warnings) == 1 and "already separates the levels of 'Subject'" in warnings[0]


def test_field_without_nugget():
    warnings = lmf.LMM.from_formula("yield ~ gen + (1 | ar1(row):ar1(col))", load("slatehall")).explain(
        show=False).warnings
    assert len(warnings) == 1 and "residual variance tends to 0" in warnings[0]


@pytest.mark.parametrize("formula, where", [("distance ~ age + Subject:ar1(t)", "residual"),
                                            ("distance ~ age + (1 | Subject) + (1 | Subject:ar1(t))", "(1 | Subject:ar1(t))"),
                                            ("distance ~ age + ar1(0 + t | Subject)", "ar1(0 + t | Subject)")])
def test_text_labels_in_alphabetical_order_are_flagged(formula, where):
    data = load_data("Orthodont.csv")
    data["t"] = pd.Categorical([f"t{a}" for a in data["age"].astype(int)], ordered=True)  # t10, t12, t14, t8
    warnings = lmf.LMM.from_formula(formula, data).explain(show=False).warnings
    assert any(w.startswith(where) and "category order (t10, t12, t14, t8" in w and "'t'" in w for w in warnings)


def test_unstructured_residual_with_too_few_groups():
    data = load_data("Orthodont.csv")
    few = data[data["Subject"].isin(data["Subject"].unique()[:4])]
    warnings = lmf.LMM.from_formula("distance ~ age + Subject:us(age)", few).explain(show=False).warnings
    assert len(warnings) == 1 and "4 positions but only 4 independent group(s)" in warnings[0]
    assert lmf.LMM.from_formula("distance ~ age + Subject:us(age)", data).explain(show=False).warnings == ()


def _met(seed=1, n_gen=30, envs=("E1", "E2", "E3", "E4")):
    rng = np.random.default_rng(seed)
    data = pd.DataFrame({"gen": np.repeat([f"g{i}" for i in range(n_gen)], 2 * len(envs)),
                         "env": np.tile(np.repeat(list(envs), 2), n_gen)})
    data["y"] = rng.normal(size=len(data))
    return data


@pytest.mark.parametrize("formula, expected", [
    ("y ~ env + (1 | gen) + us(0 + env | gen)", "already contains"),
    ("y ~ env + (1 | gen) + (1 | gen:env) + diag(0 + env | gen)", "give the same effects"),
    ("y ~ env + fa(0 + env | gen, 2)", "11 parameters for a 4 x 4 covariance"),
    ("y ~ env + (1 | gen) + (1 | gen:env)", None),
    ("y ~ env + (1 | gen) + diag(0 + env | gen)", None),
    ("y ~ env + fa(0 + env | gen, 1)", None),
])
def test_multi_environment_terms(formula, expected):
    warnings = lmf.LMM.from_formula(formula, _met()).explain(show=False).warnings
    assert (warnings == ()) if expected is None else (len(warnings) == 1 and expected in warnings[0])


def test_same_grouping_under_two_names_warns_at_fit():
    growth = load("growth")
    data = growth.assign(subj2="s" + growth["subject"])
    with pytest.warns(lmf.LMMWarning, match="give the same effects"):
        lmf.LMM.from_formula("y ~ week + (1 | subject) + (1 | subj2)", data).fit()
    with pytest.warns(lmf.LMMWarning, match="give the same effects"):
        lmf.LMM.from_formula("y ~ week + (1 | subject) + (1 | treatment:subject)", data).fit()


def test_field_twice():
    warnings = lmf.LMM.from_formula("yield ~ gen + (1 | ar1(row):ar1(col)) + ar1(row):ar1(col)",
                                    load("slatehall")).explain(show=False).warnings
    assert len(warnings) == 1 and "is the residual's ar1(row):ar1(col) again" in warnings[0]


def test_stray_value_that_sets_the_grid_step_is_noted():
    growth = load("growth")
    stray = growth.copy()
    stray.loc[0, "week"] = 1  # weeks 0, 2, ..., 12 and one 1: the step becomes 1 week
    notes = lmf.LMM.from_formula("y ~ week + subject:ar1(week)", stray).explain(show=False).notes
    assert any("7 values of 'week' sit on a grid of 13 positions (step 1," in n for n in notes)
    clean = lmf.LMM.from_formula("y ~ week + subject:ar1(week)", growth).explain(show=False).notes
    assert not any("sit on a grid" in n for n in clean)
