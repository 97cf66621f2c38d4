"""Bad input gives a typed LMMError naming the problem and the fix, never a raw traceback."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import lmmformula as lmf


@pytest.fixture
def df():
    rng = np.random.default_rng(0)
    n = 40
    return pd.DataFrame({"y": rng.normal(size=n), "x": rng.normal(size=n),
                         "g": np.repeat([f"g{i}" for i in range(8)], 5), "f": rng.choice(["a", "b"], n),
                         "row": np.tile(np.arange(1, 6), 8), "col": np.repeat(np.arange(1, 9), 5)})


CASES = [
    ("unknown column", "y ~ xx + (1 | g)", {}, lmf.UnknownColumnError, "'xx'.*did you mean 'x'"),
    ("unknown grouping column", "y ~ x + (1 | gg)", {}, lmf.UnknownColumnError, "'gg'"),
    ("response not numeric", "f ~ x + (1 | g)", {}, lmf.DataError, "response 'f' must be one numeric"),
    ("all-NaN column", "y ~ allnan + (1 | g)", {"allnan": np.nan}, lmf.DataError, "'allnan' has only missing"),
    ("constant response", "c ~ x + (1 | g)", {"c": 1.0}, lmf.DataError, "constant"),
    ("one-level group", "y ~ x + (1 | one)", {"one": "a"}, lmf.DataError, "'one'.*1 level"),
    ("as many levels as rows", "y ~ x + (1 | id)", {"id": np.arange(40)}, lmf.DataError, "40 levels for 40"),
    ("infinite value", "y ~ inf + (1 | g)", {"inf": np.r_[np.inf, np.zeros(39)]}, lmf.DataError, "infinite"),
    ("no random term", "y ~ x", {}, lmf.ModelSpecificationError, "no random term"),
    ("factor analytic residual", "y ~ x + (1 | g) + g:fa(row, 1)", {}, lmf.ModelSpecificationError,
     "fa\\(row, 1\\)"),
    ("two residual dimensions with variances", "y ~ x + (1 | g) + diag(g):us(row)", {},
     lmf.ModelSpecificationError, "more than one dimension with its own variances"),
    ("residual Toeplitz bands out of range", "y ~ x + (1 | g) + g:toep(row, 5)", {},
     lmf.ModelSpecificationError, "integer from 1 to 4.*got '5'"),
    ("duplicated cells in an AR1 x AR1 residual", "y ~ x + (1 | g) + ar1(row):ar1(half)",
     {"half": np.repeat(np.arange(1, 9), 5) // 2}, lmf.DataError, "share the cell"),
    ("ar1 on text positions", "y ~ x + (1 | g) + g:ar1(f)", {}, lmf.DataError, "ordered pandas"),
    ("ar1 on a single position", "y ~ x + (1 | g) + g:ar1(one)", {"one": 1.0}, lmf.DataError,
     "single position"),
    ("matrices not a dict", "y ~ x + (1 | g)", {}, lmf.DataError, "matrices must be a dict"),
    ("non-numeric AR1 positions on an irregular grid", "y ~ x + ar1(irr)", {"irr": np.arange(40) ** 1.5},
     lmf.DataError, "regular grid"),
    ("G-side correlation on one column", "y ~ x + ar1(0 + x | g)", {}, lmf.DataError,
     "has 1 column.*ar1\\(0 \\+ factor\\(time\\) \\| g\\)"),
    ("Toeplitz bands out of range", "y ~ x + toep(0 + f | g, 2)", {}, lmf.ModelSpecificationError,
     "integer from 1 to 1.*got '2'"),
    ("factor analytic with as many factors as columns", "y ~ x + fa(0 + f | g, 2)", {},
     lmf.ModelSpecificationError, "number of factors.*from 1 to 1.*got '2'"),
    ("unbalanced parentheses", "y ~ x + (1 | g", {}, lmf.FormulaSyntaxError, "unbalanced"),
    ("stray bar", "y ~ x | g", {}, lmf.FormulaSyntaxError, "parentheses"),
    ("two residual terms", "y ~ x + ar1(row) + ar1(col)", {}, lmf.FormulaSyntaxError, "two residual"),
    ("fa without k", "y ~ x + fa(0 + f | g)", {}, lmf.FormulaSyntaxError, "'fa'"),
    ("unknown structure", "y ~ x + (1 | ar2(g))", {}, lmf.FormulaSyntaxError, "ar2"),
    ("too many parameters", "y ~ x + (1 + x + row + col | g2)", {"g2": np.tile(["a", "b"], 20)},
     lmf.ModelSpecificationError, "simplify"),
    ("random slope on a constant column", "y ~ x + (1 + c | g)", {"c": 1.0}, lmf.DataError,
     "linearly dependent"),
    ("more random effects than observations", "y ~ x + (1 + x | id)", {"id": np.arange(40) // 2}, lmf.DataError,
     "40 random effects for 40 observations"),
    ("transform gives NaN", "np.log(y) ~ x + (1 | g)", {}, lmf.DataError, "missing values"),
    ("complex response", "yc ~ x + (1 | g)", {"yc": np.arange(40) * (1 + 1j)}, lmf.DataError, "numeric|complex"),
    ("offset", "y ~ x + offset(x) + (1 | g)", {}, lmf.ModelSpecificationError, "offset"),
    ("a column named C", "y ~ x * C + (1 | g)", {"C": np.tile(["c1", "c2"], 20)}, lmf.DataError,
     "column named 'C'.*rename"),
]


@pytest.mark.parametrize("name, formula, extra, error, message", CASES, ids=[c[0] for c in CASES])
def test_bad_input(df, name, formula, extra, error, message):
    data = df.assign(**extra) if extra else df
    if name == "too many parameters":
        data = data.iloc[:12]
    before = data.copy()
    kwargs = {"matrices": [1]} if name == "matrices not a dict" else {}
    with pytest.raises(error, match=message) as info:
        lmf.LMM.from_formula(formula, data, **kwargs).fit()
    assert isinstance(info.value, lmf.LMMError)
    pd.testing.assert_frame_equal(data, before)


def test_empty_dataframe():
    with pytest.raises(lmf.DataError, match="no rows"):
        lmf.LMM.from_formula("y ~ x + (1 | g)", pd.DataFrame({"y": [], "x": [], "g": []}))


def test_duplicated_column_names(df):
    data = pd.concat([df, df[["x"]]], axis=1)
    with pytest.raises(lmf.DataError, match="more than one column named 'x'"):
        lmf.LMM.from_formula("y ~ x + (1 | g)", data)


@pytest.mark.parametrize("kwargs, match", [({"method": "MLE"}, "method"), ({"algorithm": "NR"}, "algorithm"),
                                           ({"start": [1.0, 2.0]}, "start"), ({"start": [np.nan]}, "start"),
                                           ({"tol": "a"}, "tol"), ({"max_iter": 0}, "max_iter")])
def test_bad_fit_options(df, kwargs, match):
    with pytest.raises(lmf.ModelSpecificationError, match=match):
        lmf.LMM.from_formula("y ~ x + (1 | g)", df).fit(**kwargs)


def test_non_convergence_warns_and_reports_the_last_iterate(df):
    model = lmf.LMM.from_formula("y ~ x + (1 + x | g)", df)
    with pytest.warns(lmf.ConvergenceWarning, match="max_iter"):
        fit = model.fit(max_iter=1)
    assert not fit.converged
    assert np.isfinite(fit.loglik)
