"""Reproducible analyses: fit.to_json / FitResult.from_json round trips and bit-identical refits."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import lmmformula as lmf
from conftest import load_data
from lmmformula.datasets import load
from lmmformula.results.serialize import StoredFit


def _known_case():
    rng = np.random.default_rng(3)
    levels = [f"L{i}" for i in range(12)]
    B = rng.normal(size=(12, 12))
    K = pd.DataFrame(B @ B.T / 12 + np.eye(12), index=levels, columns=levels)
    data = pd.DataFrame({"y": rng.normal(size=48), "x": rng.normal(size=48), "g": np.repeat(levels, 4)})
    return data, "y ~ x + (1 | vm(g, 'K'))", {"matrices": {"K": K}}


CASES = {
    "slopes REML": lambda: (load_data("sleepstudy.csv"), "Reaction ~ Days + (Days | Subject)", {}),
    "crossed ML": lambda: (load_data("Penicillin.csv"), "diameter ~ 1 + (1 | plate) + (1 | sample)", {"method": "ML"}),
    "spatial AR1xAR1": lambda: (load("slatehall"), "yield ~ gen + (1 | rep) + ar1(row):ar1(col)", {}),
    "longitudinal us": lambda: (load_data("Orthodont.csv"), "distance ~ age * Sex + Subject:us(age)", {}),
    "known matrix": _known_case,
    "EM": lambda: (load_data("Pastes.csv"), "strength ~ 1 + (1 | batch/cask)", {"algorithm": "EM"}),
}


def _fit(case):
    data, formula, options = CASES[case]()
    matrices = options.pop("matrices", None)
    return data, matrices, lmf.LMM.from_formula(formula, data, matrices=matrices).fit(**options)


@pytest.mark.parametrize("case", list(CASES))
def test_round_trip_with_data_is_bit_identical(case):
    data, matrices, fit = _fit(case)
    restored = lmf.FitResult.from_json(fit.to_json(), data=data, matrices=matrices)
    assert np.array_equal(restored.theta, fit.theta)
    assert restored.loglik == fit.loglik and restored.sigma2 == fit.sigma2
    pd.testing.assert_frame_equal(restored.fixed_effects, fit.fixed_effects, check_exact=True)
    pd.testing.assert_frame_equal(restored.variance_components, fit.variance_components, check_exact=True)
    for term, table in fit.random_effects.items():
        pd.testing.assert_frame_equal(restored.random_effects[term], table, check_exact=True)
    assert (restored.method, restored.algorithm, restored.converged, restored.n_iter) == \
        (fit.method, fit.algorithm, fit.converged, fit.n_iter)
    assert [r.theta for r in restored.optimizer.history] == [r.theta for r in fit.optimizer.history]
    assert restored.summary().as_text() == fit.summary().as_text()


@pytest.mark.parametrize("case", list(CASES))
def test_round_trip_without_data_keeps_the_tables(case, tmp_path):
    _, _, fit = _fit(case)
    path = tmp_path / "fit.json"
    text = fit.to_json(path)
    assert path.read_text().strip() == text
    stored = lmf.FitResult.from_json(path)
    assert isinstance(stored, StoredFit)
    assert stored.formula == fit.formula and stored.loglik == fit.loglik and stored.n_obs == fit.n_obs
    assert np.array_equal(stored.theta, fit.theta)
    pd.testing.assert_frame_equal(stored.fixed_effects, fit.fixed_effects, check_exact=True, check_index_type=False)
    pd.testing.assert_frame_equal(stored.variance_components, fit.variance_components, check_exact=True,
                                  check_index_type=False)
    for term, table in fit.random_effects.items():
        pd.testing.assert_frame_equal(stored.random_effects[term], table, check_exact=True, check_index_type=False)


def test_record_holds_options_history_versions_and_strict_json():
    data = load_data("sleepstudy.csv")
    fit = lmf.LMM.from_formula("Reaction ~ Days + (Days | Subject)", data).fit(tol=1e-9)
    text = fit.to_json()
    record = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert record["options"]["tol"] == 1e-9 and record["options"]["start"] is None
    assert len(record["convergence"]["history"]) == len(fit.optimizer.history)
    assert record["convergence"]["history"][-1]["loglik"] == pytest.approx(fit.loglik, abs=1e-8)
    assert set(record["versions"]) >= {"python", "lmmformula", "numpy", "scipy", "pandas", "formulaic", "qdldl"}
    assert len(record["data"]["sha256"]) == 64 and record["data"]["n_obs"] == 180


def test_fingerprint_sees_any_change_in_the_data_and_ignores_unused_columns():
    data = load_data("sleepstudy.csv")
    model = lmf.LMM.from_formula("Reaction ~ Days + (Days | Subject)", data)
    assert lmf.LMM.from_formula(model.formula, data.assign(unused=1.0)).data_sha256 == model.data_sha256
    changed = data.copy()
    changed.loc[7, "Reaction"] += 1e-9
    assert lmf.LMM.from_formula(model.formula, changed).data_sha256 != model.data_sha256
    fit = model.fit()
    with pytest.raises(lmf.DataError, match="not the ones the stored fit used"):
        lmf.FitResult.from_json(fit.to_json(), data=changed)


def test_identical_input_gives_bit_identical_estimates():
    data = load("slatehall")
    fits = [lmf.LMM.from_formula("yield ~ gen + (1 | rep) + ar1(row):ar1(col)", data).fit() for _ in range(2)]
    assert np.array_equal(fits[0].theta, fits[1].theta)
    assert fits[0].to_json() == fits[1].to_json()


@pytest.mark.parametrize("source, match", [("not json at all {", "neither JSON text nor an existing file"),
                                           ("{not json", "not valid JSON"),
                                           ('{"format": "other"}', "not an lmmformula fit record")])
def test_bad_records_are_refused(source, match):
    with pytest.raises(lmf.DataError, match=match):
        lmf.FitResult.from_json(source)


def test_category_order_is_part_of_the_fingerprint():
    data = load_data("Orthodont.csv")
    a = data.assign(a=pd.Categorical(data["age"].astype(int).astype(str), ["8", "10", "12", "14"], ordered=True))
    b = data.assign(a=pd.Categorical(data["age"].astype(int).astype(str), ["8", "12", "10", "14"], ordered=True))
    formula = "distance ~ age + Subject:ar1(a)"
    assert lmf.LMM.from_formula(formula, a).data_sha256 != lmf.LMM.from_formula(formula, b).data_sha256
    fit = lmf.LMM.from_formula(formula, a).fit()
    with pytest.raises(lmf.DataError, match="category orders"):
        lmf.FitResult.from_json(fit.to_json(), data=b)


def test_text_columns_hash_alike_whatever_pandas_calls_them():
    data = load_data("sleepstudy.csv")
    as_object = data.assign(Subject=data["Subject"].astype(str).astype(object))
    as_string = data.assign(Subject=data["Subject"].astype(str).astype("string"))
    formula = "Reaction ~ Days + (1 | Subject)"
    assert lmf.LMM.from_formula(formula, as_object).data_sha256 == lmf.LMM.from_formula(formula, as_string).data_sha256


def test_a_record_of_another_model_is_refused():
    data = load_data("sleepstudy.csv")
    fit = lmf.LMM.from_formula("Reaction ~ Days + (1 | Subject)", data).fit()
    other = lmf.LMM.from_formula("Reaction ~ Days + (0 + Days | Subject)", data)
    with pytest.raises(lmf.ModelSpecificationError, match="stored fit is of"):
        other.restore(fit.to_json())


def test_a_record_written_by_other_code_warns():
    data = load_data("sleepstudy.csv")
    fit = lmf.LMM.from_formula("Reaction ~ Days + (1 | Subject)", data).fit()
    record = json.loads(fit.to_json())
    record["estimates"]["loglik"] += 1e-9  # as if the code that wrote it had rounded differently
    with pytest.warns(lmf.LMMWarning, match="not the code that wrote the record"):
        lmf.FitResult.from_json(record, data=data)
    assert len(record["versions"]["lmmformula source sha256"]) == 64


def test_sources_other_than_text_or_path():
    fit = lmf.LMM.from_formula("Reaction ~ Days + (1 | Subject)", load_data("sleepstudy.csv")).fit()
    text = fit.to_json()
    assert lmf.FitResult.from_json(text.encode()).loglik == fit.loglik
    with pytest.raises(lmf.DataError, match="neither JSON text nor an existing file"):
        lmf.FitResult.from_json("x" * 5000)


def test_stored_fit_summary_and_missing_methods():
    fit = lmf.LMM.from_formula("Reaction ~ Days + (Days | Subject)", load_data("sleepstudy.csv")).fit()
    stored = lmf.FitResult.from_json(fit.to_json())
    text = stored.summary()
    assert "read from JSON without the data" in text and "var(Intercept)" in text and f"{fit.loglik:.4f}" in text
    with pytest.raises(AttributeError, match="Pass the data the fit used"):
        stored.anova()
