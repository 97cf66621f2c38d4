"""Predicted means, SEDs and pairwise differences against emmeans 1.8.4-1 (tests/golden/generate_emmeans.R)."""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import lmmformula as lmf
from conftest import HERE, load_data

GOLD = json.loads((HERE / "golden" / "emmeans.json").read_text())


def _fit(case):
    data = load_data(case["data"])
    if case["drop"]:
        data = data.drop(index=np.asarray(case["drop"]) - 1)
    return lmf.LMM.from_formula(case["formula"], data).fit()


@pytest.fixture(scope="module", params=GOLD["cases"], ids=lambda c: c["name"])
def fitted(request):
    return request.param, _fit(request.param)


@pytest.mark.parametrize("ddf", ["kenward_roger", "satterthwaite"])
def test_predicted_means_match_emmeans(fitted, ddf):
    case, fit = fitted
    assert fit.loglik == pytest.approx(case["loglik"], abs=1e-4)
    pm = fit.predict_means(case["specs"], ddf=ddf.replace("_", "-"))
    ref = pd.DataFrame(case[ddf]["means"])
    ours = pm.table.loc[ref.level.astype(str)]
    np.testing.assert_allclose(ours.estimate, ref.emmean, rtol=1e-6)
    np.testing.assert_allclose(ours.std_error, ref.SE, rtol=1e-4)
    np.testing.assert_allclose(ours.df, ref.df, rtol=1e-3)
    # emmeans labels levels of a factor with numeric labels as "<factor><level>"
    pairs = pd.DataFrame(case[ddf]["pairs"])
    prefix = re.escape(case["specs"])
    labels = [re.sub(rf"(^|- ){prefix}(?=\d)", r"\1", c) for c in pairs.contrast]
    got = pm.pairs.loc[labels]
    scale = np.abs(pairs.estimate).max()
    np.testing.assert_allclose(got.estimate, pairs.estimate, rtol=0, atol=1e-6 * scale)
    np.testing.assert_allclose(got.std_error, pairs.SE, rtol=1e-4)
    np.testing.assert_allclose(got.df, pairs.df, rtol=1e-3)
    np.testing.assert_allclose(got.p_value, pairs.p, rtol=1e-3, atol=1e-12)
    # SED matrix holds the pairs' standard errors
    a, b = labels[0].split(" - ")
    assert pm.sed.loc[a, b] == pytest.approx(got.std_error.iloc[0]) == pm.sed.loc[b, a]


def test_default_ddf_is_kenward_roger_and_satterthwaite_for_correlation_models():
    fit = _fit(GOLD["cases"][0])
    assert fit.predict_means("Variety").ddf == "kenward-roger"
    spatial = lmf.LMM.from_formula("yield ~ gen + ar1(row):ar1(col)", load_data("slatehall")).fit()
    pm = spatial.predict_means("gen")
    assert pm.ddf == "satterthwaite" and len(pm.table) == 25 and len(pm.pairs) == 300
    assert pm.average_sed == pytest.approx(pm.pairs.std_error.mean())
    ranked = pm.ranked()
    assert list(ranked["rank"]) == list(range(1, 26)) and ranked.estimate.is_monotonic_decreasing


def test_predict_means_refuses_covariates_and_unknown_names():
    fit = _fit(GOLD["cases"][0])
    with pytest.raises(lmf.LMMError, match="factors"):
        fit.predict_means("nitro")
    with pytest.raises(lmf.LMMError, match="factors"):
        fit.predict_means("Varietyy")


@settings(max_examples=15, deadline=None)
@given(st.integers(2, 5), st.integers(3, 6), st.integers(0, 10_000))
def test_sed_of_a_balanced_block_design_is_the_closed_form(n_trt, n_block, seed):
    """Randomised complete blocks: SED = sqrt(2 sigma^2 / b) whatever the block variance."""
    rng = np.random.default_rng(seed)
    d = pd.DataFrame([(f"t{t}", f"b{b}") for t in range(n_trt) for b in range(n_block)], columns=["trt", "blk"])
    block = rng.normal(0, 1.0, n_block)
    d["y"] = [block[int(b[1:])] + 0.5 * int(t[1:]) + rng.normal() for t, b in zip(d.trt, d.blk)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = lmf.LMM.from_formula("y ~ trt + (1 | blk)", d).fit()
    assume(fit.converged)
    pm = fit.predict_means("trt")
    np.testing.assert_allclose(pm.pairs.std_error, np.sqrt(2 * fit.sigma2 / n_block), rtol=1e-8)
    # the means are the treatment averages, the residual df (b - 1)(t - 1) in a balanced RCBD
    np.testing.assert_allclose(pm.table.estimate, d.groupby("trt").y.mean().loc[pm.table.index], rtol=1e-9)
    if not fit.singular:
        np.testing.assert_allclose(pm.pairs.df, (n_block - 1) * (n_trt - 1), rtol=1e-4)
