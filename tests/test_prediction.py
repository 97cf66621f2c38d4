"""fit.predict against the fit's own quantities and an exact dense computation of the prediction error."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import lmmformula as lmf
from conftest import load_data


@pytest.fixture(scope="module")
def sleep_fit():
    return lmf.LMM.from_formula("Reaction ~ Days + (Days | Subject)", load_data("sleepstudy.csv")).fit()


def test_predictions_on_the_fit_rows_are_the_fitted_values(sleep_fit):
    np.testing.assert_allclose(sleep_fit.predict(), sleep_fit.fitted_values, rtol=1e-12)
    np.testing.assert_allclose(sleep_fit.predict(include_random=False),
                               sleep_fit.mme.X @ sleep_fit.evaluation.beta, rtol=1e-12)
    data = load_data("sleepstudy.csv")
    shuffled = data.sample(frac=1.0, random_state=3)
    before = shuffled.copy()
    got = sleep_fit.predict(shuffled)
    pd.testing.assert_frame_equal(shuffled, before)  # newdata not modified
    np.testing.assert_allclose(got.loc[data.index], sleep_fit.fitted_values, rtol=1e-10)


def test_new_levels_get_the_population_prediction(sleep_fit):
    new = pd.DataFrame({"Days": [0.0, 5.0], "Subject": ["not-a-subject", "308"]})
    with pytest.warns(lmf.LMMWarning, match="not in the fit"):
        got = sleep_fit.predict(new)
    beta = sleep_fit.fixed_effects.estimate
    assert got.iloc[0] == pytest.approx(beta.iloc[0])
    u = sleep_fit.random_effects["Subject"].loc["308"]
    assert got.iloc[1] == pytest.approx(beta.iloc[0] + 5 * beta.iloc[1] + u["(Intercept)"] + 5 * u["Days"])


def test_prediction_errors_equal_the_dense_mixed_model_equations(sleep_fit):
    """PEV of x'b + z'u is sigma^2 [x z] C^-1 [x z]' with C the (unscaled) MME of Henderson."""
    fit = sleep_fit
    mme = fit.mme
    new = pd.DataFrame({"Days": [0.0, 3.5, 9.0], "Subject": ["308", "330", "372"]})
    got = fit.predict(new, se=True)
    X, Z = mme.X, mme.Z.toarray()
    G = np.kron(np.eye(len(fit.random_effects["Subject"])), fit.term_covariance(0))
    C = np.block([[X.T @ X, X.T @ Z], [Z.T @ X, Z.T @ Z + fit.sigma2 * np.linalg.inv(G)]])
    levels = list(fit.random_effects["Subject"].index)
    rows = []
    for days, subj in zip(new.Days, new.Subject):
        z = np.zeros(Z.shape[1])
        j = levels.index(subj)
        z[2 * j:2 * j + 2] = [1.0, days]
        rows.append(np.concatenate([[1.0, days], z]))
    R = np.array(rows)
    pev = fit.sigma2 * np.einsum("ri,ij,rj->r", R, np.linalg.inv(C), R)
    np.testing.assert_allclose(got.std_error, np.sqrt(pev), rtol=1e-7)
    marginal = fit.predict(new, include_random=False, se=True)
    V = fit.vcov.to_numpy()
    np.testing.assert_allclose(marginal.std_error, np.sqrt(np.einsum("ri,ij,rj->r", R[:, :2], V, R[:, :2])))


def test_predict_rejects_incomplete_newdata(sleep_fit):
    with pytest.raises(lmf.LMMError, match="lacks the column"):
        sleep_fit.predict(pd.DataFrame({"Days": [1.0]}))
    assert sleep_fit.predict(pd.DataFrame({"Days": [1.0]}), include_random=False).size == 1
    with pytest.raises(lmf.LMMError, match="missing values"):
        sleep_fit.predict(pd.DataFrame({"Days": [1.0, np.nan], "Subject": ["308", "308"]}))
    with pytest.raises(lmf.LMMError, match="DataFrame"):
        sleep_fit.predict([[1.0]])


def test_predict_with_a_factor_fixed_part_and_nested_groups():
    data = load_data("Oats.csv")
    fit = lmf.LMM.from_formula("yield ~ Variety * nitro + (1 | Block/Variety)", data).fit()
    np.testing.assert_allclose(fit.predict(data.iloc[::-1]).loc[data.index], fit.fitted_values, rtol=1e-10)
    with pytest.raises(lmf.LMMError, match="fixed factor"):
        fit.predict(pd.DataFrame({"Variety": ["Unknown"], "nitro": [0.2], "Block": ["I"]}))


def test_new_levels_add_the_prior_variance_to_the_prediction_error(sleep_fit):
    new = pd.DataFrame({"Days": [2.0], "Subject": ["new-subject"]})
    with pytest.warns(lmf.LMMWarning):
        got = sleep_fit.predict(new, se=True)
    marginal = sleep_fit.predict(new, include_random=False, se=True)
    x = np.array([1.0, 2.0])
    prior = x @ sleep_fit.term_covariance(0) @ x
    assert got.std_error.iloc[0] ** 2 == pytest.approx(marginal.std_error.iloc[0] ** 2 + prior, rel=1e-10)


def test_unseen_levels_in_a_random_slope_factor_are_refused():
    data = load_data("sleepstudy.csv").assign(half=lambda d: np.where(d.Days < 5, "early", "late"))
    fit = lmf.LMM.from_formula("Reaction ~ Days + (0 + half | Subject)", data).fit()
    with pytest.raises(lmf.LMMError, match="never saw"):
        fit.predict(pd.DataFrame({"Days": [3.0], "half": ["middle"], "Subject": ["308"]}))
