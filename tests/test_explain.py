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
