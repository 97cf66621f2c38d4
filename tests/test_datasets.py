"""The shipped data sets: every one loads; the simulated ones fit their documented models (nlme golden values for
``growth``, dense brute force for ``animal``)."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pandas as pd
import pytest

import lmmformula as lmf
from conftest import gaussian_loglik
from lmmformula import datasets
from lmmformula.pedigree import inverse_relationship

GOLDEN = json.loads((pathlib.Path(__file__).parent / "golden" / "datasets.json").read_text())


@pytest.mark.parametrize("name", datasets.available())
def test_every_data_set_loads_as_a_new_frame(name):
    first, second = datasets.load(name), datasets.load(name)
    assert len(first) > 0 and first is not second
    assert name in datasets.__doc__


def test_unknown_name_is_refused():
    with pytest.raises(lmf.DataError, match="unknown data set 'slatehal'.*available: .*slatehall"):
        datasets.load("slatehal")


@pytest.mark.parametrize("case", GOLDEN["cases"], ids=[c["name"] for c in GOLDEN["cases"]])
def test_growth_matches_nlme(case):
    data = datasets.load(case["dataset"])
    fit = lmf.LMM.from_formula(case["formula"], data).fit(method="REML" if case["REML"] else "ML")
    assert fit.loglik == pytest.approx(case["loglik"], abs=1e-5)
    assert fit.sigma2 == pytest.approx(case["sigma"] ** 2, rel=1e-4)
    assert fit.residual_correlations["rho(week)"] == pytest.approx(case["rho"], abs=1e-4)
    np.testing.assert_allclose(fit.covariance("subject").to_numpy(), np.array(case["G"]), rtol=1e-4, atol=1e-6)
    for name, value in case["fixef"].items():
        assert fit.fixed_effects.loc[name, "estimate"] == pytest.approx(value, rel=1e-5)
        assert fit.fixed_effects.loc[name, "std_error"] == pytest.approx(case["fixef_se"][name], rel=1e-3)


def test_animal_model_equals_dense_brute_force():
    data = datasets.load("animal")
    pedigree = data[["animal", "sire", "dam"]]
    Ainv = inverse_relationship(pedigree)
    fit = lmf.LMM.from_formula('weight ~ herd + sex + (1 | vm(animal, "A"))', data, matrices={"A": Ainv}).fit()
    assert fit.converged and fit.n_obs == 1000 and fit.n_dropped == 200
    # founders have no record but are levels of the pedigree, so they get BLUPs too
    assert len(fit.random_effects['vm(animal, "A")']) == 1200
    position = {label: i for i, label in enumerate(Ainv.labels)}
    A = np.linalg.inv(Ainv.precision.toarray())
    rows = [position[a] for a in fit.frame["animal"]]
    variances = fit.variance_components.set_index("term")["estimate"]
    V = variances['vm(animal, "A")'] * A[np.ix_(rows, rows)] + variances["residual"] * np.eye(fit.n_obs)
    loglik, b = gaussian_loglik(V, fit.mme.X, fit.mme.y, "REML")
    assert fit.loglik == pytest.approx(loglik, abs=1e-6)
    np.testing.assert_allclose(fit.fixed_effects["estimate"].to_numpy(), b, rtol=1e-7, atol=1e-9)


def test_growth_is_the_documented_design():
    data = datasets.load("growth")
    assert sorted(data["week"].unique()) == [0, 2, 4, 6, 8, 12]
    assert data["subject"].nunique() == 60 and set(data["treatment"]) == {"A", "B"}
    assert isinstance(data, pd.DataFrame) and len(data) < 60 * 6
