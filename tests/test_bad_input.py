"""Bad input gives a typed LMMError naming the problem and the fix, never a raw traceback."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

import lmmformula as lmf
from lmmformula.pedigree import inverse_relationship


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
    ("response on the right", "y ~ x + y + (1 | g)", {}, lmf.ModelSpecificationError,
     "response column 'y' also appears on the right-hand side \\(in the fixed part\\)"),
    ("transformed response on the right", "log(y2) ~ x + I(2 * y2) + (1 | g)", {"y2": 2.0 + np.arange(40)},
     lmf.ModelSpecificationError, "'y2' also appears.*fixed part"),
    ("response in a random term", "y ~ x + (y | g)", {}, lmf.ModelSpecificationError,
     "'y' also appears.*random term \\(y \\| g\\)"),
    ("response in a stateful transform", "y ~ x + scale(y) + (1 | g)", {}, lmf.ModelSpecificationError,
     "'y' also appears.*fixed part"),
    ("response in a spline of a random term", "y ~ x + (0 + poly(y, 1) | g)", {}, lmf.ModelSpecificationError,
     "'y' also appears.*random term \\(0 \\+ poly\\(y, 1\\) \\| g\\)"),
    ("response in a structured random term", "y ~ x + diag(1 + y | g)", {}, lmf.ModelSpecificationError,
     "'y' also appears.*random term diag\\(1 \\+ y \\| g\\)"),
    ("response in a stateful transform on both sides", "scale(y) ~ x + y + (1 | g)", {},
     lmf.ModelSpecificationError, "'y' also appears.*fixed part"),
    ("every column of a change score on the right", "I(y - x) ~ x + y + (1 | g)", {},
     lmf.ModelSpecificationError, "'x' also appears.*fixed part"),
    ("response as a residual dimension", "y ~ x + (1 | g) + g:ar1(y)", {}, lmf.ModelSpecificationError,
     "'y' also appears.*residual term"),
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
    # formula stage
    ("no response", "~ x + (1 | g)", {}, lmf.FormulaSyntaxError, "response .*is missing"),
    ("nothing right of the tilde", "y ~", {}, lmf.FormulaSyntaxError, "nothing on the right of '~'.*y ~ 1"),
    ("two tildes", "y ~ x ~ (1 | g)", {}, lmf.FormulaSyntaxError, "exactly one '~'"),
    ("name with a space not quoted", "y ~ my x + (1 | g)", {"my x": 1.0}, lmf.FormulaSyntaxError,
     "Missing operator.*backticks"),
    ("empty parentheses", "y ~ x + () + (1 | g)", {}, lmf.FormulaSyntaxError, "formulaic cannot read.*empty term"),
    ("random term subtracted", "y ~ x - (1 | g)", {}, lmf.FormulaSyntaxError, "cannot be subtracted"),
    ("random intercept written (0 | g)", "y ~ x + (0 | g)", {}, lmf.FormulaSyntaxError, "no columns.*\\(1 \\| g\\)"),
    ("grouping missing after the bar", "y ~ x + (1 | /g)", {}, lmf.FormulaSyntaxError,
     "'\\|/'.*grouping factor is missing"),
    ("factor() around a grouping", "y ~ x + (1 | factor(g))", {}, lmf.FormulaSyntaxError,
     "write the column alone: 'g'"),
    ("sum in a grouping", "y ~ x + (1 | g + f)", {}, lmf.FormulaSyntaxError, "join factors with ':' or '/'"),
    ("two bars in one term", "y ~ x + (1 | g | f)", {}, lmf.FormulaSyntaxError, "one '\\|'"),
    ("ar1 with two arguments", "y ~ x + (1 | g) + g:ar1(row, 2)", {}, lmf.FormulaSyntaxError,
     "'ar1'.*takes 1 argument"),
    ("ma without q", "y ~ x + (1 | g) + g:ma(row)", {}, lmf.FormulaSyntaxError, "'ma'.*takes 2.*ma\\(time, 2\\)"),
    ("structure of an expression", "y ~ x + ar1(log(row)):ar1(col)", {}, lmf.FormulaSyntaxError,
     "first argument of 'ar1' must be a column name"),
    ("unknown structure in a residual", "y ~ x + (1 | g) + ar2(row):ar1(col)", {}, lmf.FormulaSyntaxError,
     "'ar2\\(row\\)' cannot be combined"),
    ("double bar inside a structure", "y ~ x + ar1(0 + factor(row) || g)", {}, lmf.FormulaSyntaxError,
     "'\\|\\|' inside 'ar1"),
    ("unknown function", "y ~ foo(x) + (1 | g)", {}, lmf.UnknownColumnError, "'foo'.*called as a function"),
    ("nested grouping with a missing column", "y ~ x + (1 | g/h)", {}, lmf.UnknownColumnError,
     "column 'h' .*not in the data"),
    ("unknown column in a random slope", "y ~ x + (xx | g)", {}, lmf.UnknownColumnError, "'xx'.*did you mean 'x'"),
    ("weights() in the formula", "y ~ x + weights(x) + (1 | g)", {}, lmf.ModelSpecificationError,
     "weights.*not supported"),
    # data stage
    ("response boolean", "b ~ x + (1 | g)", {"b": np.arange(40) % 2 == 0}, lmf.DataError,
     "response 'b' must be one numeric column, got bool.*pd.to_numeric"),
    ("response categorical", "c ~ x + (1 | g)", {"c": pd.Categorical(np.arange(40) % 3)}, lmf.DataError,
     "response 'c' must be one numeric column, got category"),
    ("response datetime", "d ~ x + (1 | g)", {"d": pd.date_range("2020-01-01", periods=40)}, lmf.DataError,
     "response 'd' must be one numeric column, got datetime64"),
    ("response text", "s ~ x + (1 | g)", {"s": [str(v) for v in range(40)]}, lmf.DataError,
     "response 's' must be one numeric column.*pd.to_numeric"),
    ("response too large", "yb ~ x + (1 | g)", {"yb": np.linspace(-1, 1, 40) * 1e200}, lmf.DataError,
     "'yb' has values as large as 1e\\+200.*rescale"),
    ("log of zero in the response", "np.log(y0) ~ x + (1 | g)", {"y0": np.r_[0.0, np.arange(1.0, 40.0)]},
     lmf.DataError, "non-finite.*-inf.*log\\(\\) of zero"),
    ("datetime covariate", "y ~ d + (1 | g)", {"d": pd.date_range("2020-01-01", periods=40)}, lmf.DataError,
     "'d' in the fixed part is datetime64.*dt.days"),
    ("numbers stored as object", "y ~ xo + (1 | g)", {"xo": (np.arange(40) / 4).astype(object)}, lmf.DataError,
     "'xo' holds numbers stored with dtype object.*40 levels.*pd.to_numeric.*factor\\(xo\\)"),
    ("single-level fixed factor", "y ~ x + s + (1 | g)", {"s": "a"}, lmf.DataError,
     "factor 's' in the fixed part has 1 level \\('a'\\).*drop it"),
    ("column of lists", "y ~ x + (1 | gl)", {"gl": [[i % 8] for i in range(40)]}, lmf.DataError,
     "'gl' holds list values.*astype\\(str\\)"),
    ("grouping all missing", "y ~ x + (1 | gn)", {"gn": np.nan}, lmf.DataError, "'gn' has only missing values"),
    ("all rows but one level dropped", "y ~ x + (1 | g)", {"y": np.r_[np.full(35, np.nan), np.arange(5.0)]},
     lmf.DataError, "'g' in '\\(1 \\| g\\)' has 1 level"),
    # random terms
    ("random slope on a factor with no variation within groups", "y ~ x + (1 + h | g)",
     {"h": np.repeat(["a", "b"], 20)}, lmf.DataError,
     "'hb' does not vary within the levels of 'g'.*drop the columns.*\\(1 \\+ h \\|\\| g\\)"),
    ("random slope on a factor with one level per group", "y ~ x + (0 + h | g)",
     {"h": np.repeat(["a", "b"], 20)}, lmf.DataError, "not identifiable.*'ha', 'hb'"),
    ("duplicated random term", "y ~ x + (1 | g) + (1 | g)", {}, lmf.ModelSpecificationError,
     "both give '\\(Intercept\\)'.*keep each column in one term"),
    ("random intercept in two terms", "y ~ x + (1 | g) + (1 + x | g)", {}, lmf.ModelSpecificationError,
     "'\\(1 \\| g\\)' and '\\(1 \\+ x \\| g\\)' both give '\\(Intercept\\)'"),
    ("grouping is the response", "y ~ x + (1 | y)", {}, lmf.ModelSpecificationError,
     "'y' also appears.*random term \\(1 \\| y\\)"),
    # structures
    ("AR1 positions from a text column", "y ~ x + ar1(rs):ar1(col)", {"rs": [f"r{i}" for i in np.tile(range(5), 8)]},
     lmf.DataError, "'rs'.*numeric.*ordered pandas Categorical"),
    ("AR1 positions from dates", "y ~ x + (1 | g) + g:ar1(t)", {"t": pd.date_range("2020-01-01", periods=40)},
     lmf.DataError, "positions in 't' must be numeric.*datetime64"),
    ("duplicated cells in a series", "y ~ x + (1 | g) + g:ar1(r2)", {"r2": np.tile(np.arange(1, 6), 8) // 2},
     lmf.DataError, "share the cell \\(g='g0', r2=1\\).*Subject:ar1\\(time\\)"),
    ("Toeplitz bands not a number", "y ~ x + (1 | g) + g:toep(row, a)", {}, lmf.ModelSpecificationError,
     "bands in 'toep\\(row, a\\)' must be an integer from 1 to 4.*got 'a'"),
    ("fa factors not whole", "y ~ x + fa(0 + f | g, 1.5)", {}, lmf.ModelSpecificationError,
     "factors in 'fa\\(0 \\+ f \\| g, 1.5\\)'.*got '1.5'"),
    ("fa as a grouping", "y ~ x + (1 | fa(g, 1))", {}, lmf.ModelSpecificationError,
     "'fa\\(g, 1\\)' cannot be part of the grouping"),
    ("two variance dimensions in a residual", "y ~ x + (1 | g) + us(row):us(col)", {}, lmf.ModelSpecificationError,
     "more than one dimension with its own variances"),
    ("vm without matrices", 'y ~ x + (1 | vm(g, "K"))', {}, lmf.ModelSpecificationError,
     "names the matrix 'K', which is not in matrices=.*matrices=\\{'K': A\\}"),
    ("vm inside an interaction", 'y ~ x + (1 | f:vm(g, "K"))', {}, lmf.ModelSpecificationError,
     "vm\\(\\) must be the whole grouping"),
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
    data = pd.DataFrame({"y": [], "x": [], "g": []})
    before = data.copy(deep=True)
    with pytest.raises(lmf.DataError, match="no rows"):
        lmf.LMM.from_formula("y ~ x + (1 | g)", data)
    pd.testing.assert_frame_equal(data, before)


def test_duplicated_column_names(df):
    data = pd.concat([df, df[["x"]]], axis=1)
    before = data.copy(deep=True)
    with pytest.raises(lmf.DataError, match="more than one column named 'x'"):
        lmf.LMM.from_formula("y ~ x + (1 | g)", data)
    pd.testing.assert_frame_equal(data, before)


@pytest.mark.parametrize("formula", ["I(y - x) ~ x + (1 | g)", "np.log(np.abs(y / x)) ~ np.log(np.abs(x)) + (1 | g)",
                                     "y ~ y2 + (1 | g)", "y2 ~ y + (1 | g)", "log(y2) ~ x + (1 | g)",
                                     "df ~ bs(x, df=3) + (1 | g)", "scale(y) ~ scale(x) + (1 | g)",
                                     "y ~ x + `y lag` + (1 | g)"])
def test_responses_sharing_names_or_some_columns_with_the_right_side_fit(df, formula):
    """A change score (``I(post - pre) ~ pre``) or a ratio shares a column with the right-hand side; names that
    contain the response's name (``y2``, a backticked `y lag`), or a keyword argument spelled like it, are other
    names."""
    data = df.assign(y2=df.y + 5.0, df=df.y, **{"y lag": np.roll(df.y.to_numpy(), 1)})
    fit = lmf.LMM.from_formula(formula, data).fit()
    assert np.isfinite(fit.loglik)


@pytest.mark.parametrize("column", ["y", "x", "g"])
def test_multi_level_column_labels_with_sub_labels(df, column):
    """``df.groupby(...).agg(["mean", "std"])`` leaves labels such as ("y", "mean"): the formula's name selects
    several columns, which is refused by name (labels with an empty sub-label fit, see test_design)."""
    data = df.copy()
    data.columns = pd.MultiIndex.from_tuples([(c, "mean" if c == column else "") for c in df.columns])
    before = data.copy(deep=True)
    with pytest.raises(lmf.DataError, match=f"'{column}' is the first level.*\\('{column}', 'mean'\\).*flatten"):
        lmf.LMM.from_formula("y ~ x + (1 | g)", data)
    pd.testing.assert_frame_equal(data, before)


@pytest.mark.parametrize("kwargs, match", [({"method": "MLE"}, "method"), ({"algorithm": "NR"}, "algorithm"),
                                           ({"start": [1.0, 2.0]}, "start"), ({"start": [np.nan]}, "start"),
                                           ({"tol": "a"}, "tol"), ({"max_iter": 0}, "max_iter")])
def test_bad_fit_options(df, kwargs, match):
    before = df.copy(deep=True)
    with pytest.raises(lmf.ModelSpecificationError, match=match):
        lmf.LMM.from_formula("y ~ x + (1 | g)", df).fit(**kwargs)
    pd.testing.assert_frame_equal(df, before)


def test_non_convergence_warns_and_reports_the_last_iterate(df):
    before = df.copy(deep=True)
    model = lmf.LMM.from_formula("y ~ x + (1 + x | g)", df)
    with pytest.warns(lmf.ConvergenceWarning, match="max_iter"):
        fit = model.fit(max_iter=1)
    assert not fit.converged
    assert np.isfinite(fit.loglik)
    pd.testing.assert_frame_equal(df, before)


# ---- data that is not a DataFrame ------------------------------------------------------------------------------
NOT_A_FRAME = [
    ("data is a numpy array", lambda d: d[["y", "x"]].to_numpy(), "got ndarray.*pd.DataFrame\\(array, columns="),
    ("data is a list", lambda d: d.to_numpy().tolist(), "got list.*column names"),
    ("data is None", lambda d: None, "got NoneType"),
    ("data is a Series", lambda d: d["y"], "got Series.*whole DataFrame"),
    ("data is a file name", lambda d: "data.csv", "got str"),
]


@pytest.mark.parametrize("name, make, message", NOT_A_FRAME, ids=[c[0] for c in NOT_A_FRAME])
def test_data_not_a_dataframe(df, name, make, message):
    before = df.copy(deep=True)
    with pytest.raises(lmf.DataError, match=message):
        lmf.LMM.from_formula("y ~ x + (1 | g)", make(df))
    pd.testing.assert_frame_equal(df, before)


def test_formula_not_a_string(df):
    before = df.copy(deep=True)
    with pytest.raises(lmf.FormulaSyntaxError, match="must be a string.*got NoneType"):
        lmf.LMM.from_formula(None, df)
    pd.testing.assert_frame_equal(df, before)


def test_fully_aliased_fixed_effect_warns_naming_it(df):
    data = df.assign(x2=2 * df["x"])
    before = data.copy(deep=True)
    with pytest.warns(lmf.RankDeficiencyWarning, match="dropping 1 aliased column\\(s\\): x2"):
        fit = lmf.LMM.from_formula("y ~ x + x2 + (1 | g)", data).fit()
    assert fit.dropped_fixed == ("x2",) and "x2" not in fit.fixed_effects.index
    ref = lmf.LMM.from_formula("y ~ x + (1 | g)", df).fit()
    assert fit.loglik == pytest.approx(ref.loglik, abs=1e-8)
    pd.testing.assert_frame_equal(data, before)


def test_em_on_a_correlation_model(df):
    before = df.copy(deep=True)
    with pytest.raises(lmf.ModelSpecificationError, match="algorithm='EM'.*Use algorithm='AI'"):
        lmf.LMM.from_formula("y ~ x + ar1(row):ar1(col)", df).fit(algorithm="EM")
    pd.testing.assert_frame_equal(df, before)


# ---- known matrices and pedigrees -------------------------------------------------------------------------------
def _labelled(M, labels=None):
    labels = [f"g{i}" for i in range(8)] if labels is None else labels
    return pd.DataFrame(M, index=labels, columns=labels)


def _asymmetric():
    M = np.eye(8)
    M[0, 1] = 0.1
    return _labelled(M)


def _with_nan():
    M = np.eye(8)
    M[2, 2] = np.nan
    return _labelled(M)


KNOWN = [
    ("vm matrix is a numpy array", lambda: np.eye(8), lmf.DataError, "got ndarray.*pd.DataFrame\\(K, index=levels"),
    ("vm matrix is scipy sparse", lambda: __import__("scipy.sparse").sparse.eye(8, format="csr"), lmf.DataError,
     "got csr_matrix.*pd.DataFrame"),
    ("vm matrix not square", lambda: pd.DataFrame(np.ones((8, 7)), index=[f"g{i}" for i in range(8)],
                                                  columns=[f"g{i}" for i in range(7)]), lmf.DataError,
     "'K' has shape \\(8, 7\\); it must be square"),
    ("vm matrix row and column labels differ", lambda: pd.DataFrame(np.eye(8), index=[f"g{i}" for i in range(8)],
                                                                     columns=range(8)), lmf.DataError,
     "same labels on its rows and columns.*K.loc\\[labels, labels\\]"),
    ("vm matrix duplicated labels", lambda: _labelled(np.eye(8), [f"g{i}" for i in range(7)] + ["g0"]),
     lmf.DataError, "'K' has duplicated labels \\('g0' appears more than once\\)"),
    ("vm matrix with NaN", _with_nan, lmf.DataError, "missing or infinite entry \\('g2', 'g2'\\)"),
    ("vm matrix of text", lambda: _labelled(np.full((8, 8), "a")), lmf.DataError,
     "non-numeric entries.*astype\\(float\\)"),
    ("vm matrix not symmetric", _asymmetric, lmf.DataError,
     "not symmetric \\(entry \\('g0', 'g1'\\) is 0.1, \\('g1', 'g0'\\) is 0\\).*\\(K \\+ K.T\\) / 2"),
    ("vm matrix not positive definite", lambda: _labelled(np.ones((8, 8))), lmf.DataError,
     "not positive definite \\(smallest eigenvalue.*0.99 \\* G \\+ 0.01 \\* I"),
    ("vm matrix missing levels", lambda: _labelled(np.eye(7), [f"g{i}" for i in range(7)]), lmf.DataError,
     "1 level\\(s\\) of 'g' are not in the known matrix.*'g7'.*a row and column for every level"),
    ("pedigree missing animals of the data", lambda: inverse_relationship(pd.DataFrame(
        {"animal": [f"g{i}" for i in range(6)], "sire": [0, 0, "g0", "g0", "g2", "g2"],
         "dam": [0, 0, "g1", "g1", "g3", "g3"]})), lmf.DataError, "2 level\\(s\\) of 'g' are not in the known matrix"),
]


@pytest.mark.parametrize("name, make, error, message", KNOWN, ids=[c[0] for c in KNOWN])
def test_bad_known_matrix(df, name, make, error, message):
    K = make()
    K_before = K.copy(deep=True) if isinstance(K, pd.DataFrame) else None
    before = df.copy(deep=True)
    with pytest.raises(error, match=message):
        lmf.LMM.from_formula('y ~ x + (1 | vm(g, "K"))', df, matrices={"K": K}).fit()
    pd.testing.assert_frame_equal(df, before)
    if K_before is not None:
        pd.testing.assert_frame_equal(K, K_before)


PEDIGREES = [
    ("pedigree animal its own parent", {"animal": [1, 2, 3], "sire": [0, 0, 3], "dam": [0, 0, 2]}, {},
     "animal '3' is listed as its own parent; correct its sire or dam"),
    ("pedigree loop", {"animal": [1, 2, 3], "sire": [3, 1, 2], "dam": [0, 0, 0]}, {},
     "loop through animal .*own ancestor"),
    ("pedigree parent born after offspring loop", {"animal": [1, 2, 3, 4], "sire": [0, 4, 2, 3], "dam": [0, 1, 1, 1]},
     {}, "loop through animal"),
    ("pedigree duplicated animal", {"animal": [1, 2, 2], "sire": [0, 0, 1], "dam": [0, 0, 0]}, {},
     "animal '2' appears more than once.*one row per animal"),
    ("pedigree missing column", {"id": [1, 2, 3], "sire": [0, 0, 1], "dam": [0, 0, 2]}, {},
     "no column 'animal'.*animal=, sire=, dam="),
    ("pedigree wrong column names passed", {"id": [1, 2, 3], "s": [0, 0, 1], "d": [0, 0, 2]},
     {"animal": "id", "sire": "sire", "dam": "d"}, "no column 'sire'"),
    ("pedigree missing animal id", {"animal": [1.0, np.nan, 3.0], "sire": [0, 0, 1], "dam": [0, 0, 2]}, {},
     "missing or zero identifier \\(nan\\)"),
    ("pedigree with no rows", {"animal": [], "sire": [], "dam": []}, {}, "no rows"),
]


@pytest.mark.parametrize("name, columns, kwargs, message", PEDIGREES, ids=[c[0] for c in PEDIGREES])
def test_bad_pedigree(name, columns, kwargs, message):
    ped = pd.DataFrame(columns)
    before = ped.copy(deep=True)
    with pytest.raises(lmf.DataError, match=message):
        inverse_relationship(ped, **kwargs)
    pd.testing.assert_frame_equal(ped, before)


def test_pedigree_not_a_dataframe():
    with pytest.raises(lmf.DataError, match="must be a pandas DataFrame, got list; pass pd.DataFrame"):
        inverse_relationship([[1, 0, 0]])


# ---- methods of a fit ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(1)
    n = 48
    data = pd.DataFrame({"y": rng.normal(size=n), "x": rng.normal(size=n),
                         "g": np.repeat([f"g{i}" for i in range(8)], 6), "f": np.tile(["a", "b", "c"], 16),
                         "row": np.tile(np.arange(1, 7), 8), "col": np.repeat(np.arange(1, 9), 6)})
    data["y"] += np.repeat(rng.normal(size=8), 6)
    fit = lmf.LMM.from_formula("y ~ x + f + (1 | g)", data).fit()
    spatial = lmf.LMM.from_formula("y ~ f + ar1(row):ar1(col)", data).fit()
    return data, fit, spatial


def _newdata(data, **columns):
    return data.assign(**columns)


RESULT_CASES = [
    ("predict newdata missing a column", lambda d, f, s: f.predict(d.drop(columns="x")), lmf.DataError,
     "lacks the column\\(s\\) \\['x'\\].*add them"),
    ("predict newdata unseen fixed level", lambda d, f, s: f.predict(_newdata(d, f="zz")), lmf.DataError,
     "factor levels the fit never saw \\(\\{'zz'\\}\\)"),
    ("predict newdata NaN covariate", lambda d, f, s: f.predict(_newdata(d, x=np.r_[np.nan, d.x[1:]])),
     lmf.DataError, "missing values in \\['x'\\]; drop or fill"),
    ("predict newdata infinite covariate", lambda d, f, s: f.predict(_newdata(d, x=np.r_[np.inf, d.x[1:]])),
     lmf.DataError, "'x' of newdata has an infinite value \\(row 0\\)"),
    ("predict newdata covariate as text", lambda d, f, s: f.predict(_newdata(d, x=d.x.astype(str))),
     lmf.DataError, "'x' of newdata is (str|object).*numeric covariate.*pd.to_numeric"),
    ("predict newdata not a DataFrame", lambda d, f, s: f.predict(d.to_dict("list")), lmf.DataError,
     "newdata must be a pandas DataFrame, got dict"),
    ("predict_means unknown name", lambda d, f, s: f.predict_means("nonexistent"), lmf.ModelSpecificationError,
     "\\['nonexistent'\\] is not one \\(factors: \\['f'\\]\\)"),
    ("predict_means of a covariate", lambda d, f, s: f.predict_means("x"), lmf.ModelSpecificationError,
     "\\['x'\\] is not one"),
    ("predict_means of a random factor", lambda d, f, s: f.predict_means("g"), lmf.ModelSpecificationError,
     "\\['g'\\] is not one"),
    ("predict_means classify not a name", lambda d, f, s: f.predict_means(3), lmf.ModelSpecificationError,
     "classify must be the name of a factor.*got 3"),
    ("predict_means classify None", lambda d, f, s: f.predict_means(None), lmf.ModelSpecificationError,
     "got None"),
    ("predict_means factor named twice", lambda d, f, s: f.predict_means(["f", "f"]), lmf.ModelSpecificationError,
     "names a factor twice"),
    ("predict_means unknown ddf", lambda d, f, s: f.predict_means("f", ddf="foo"), lmf.ModelSpecificationError,
     "ddf must be 'satterthwaite', 'kenward-roger' or 'residual', got 'foo'"),
    ("anova unknown ddf", lambda d, f, s: f.anova(ddf="foo"), lmf.ModelSpecificationError, "got 'foo'"),
    ("fixed_effects_table ddf None", lambda d, f, s: f.fixed_effects_table(ddf=None), lmf.ModelSpecificationError,
     "got None"),
    ("Kenward-Roger on an ML fit", lambda d, f, s: f.refit(method="ML").anova(ddf="kenward-roger"),
     lmf.ModelSpecificationError, "needs a REML fit.*ddf='satterthwaite'"),
    ("Kenward-Roger on an AR1 residual", lambda d, f, s: s.anova(ddf="kr"), lmf.ModelSpecificationError,
     "correlation parameters.*ddf='satterthwaite'"),
    ("contrast of the wrong length", lambda d, f, s: f.contrast([1.0, 0.0]), lmf.ModelSpecificationError,
     "4 finite columns.*got shape \\(1, 2\\)"),
    ("contrast with unknown names", lambda d, f, s: f.contrast({"z": 1.0}), lmf.ModelSpecificationError,
     "\\['z'\\] are not fixed effects; choose from"),
    ("contrast of text", lambda d, f, s: f.contrast(["a", "b", "c", "d"]), lmf.ModelSpecificationError,
     "L must hold numbers"),
    ("contrast with NaN", lambda d, f, s: f.contrast([np.nan, 0, 0, 0]), lmf.ModelSpecificationError,
     "missing or infinite entries"),
    ("contrast DataFrame with unknown columns", lambda d, f, s: f.contrast(pd.DataFrame({"zz": [1.0]})),
     lmf.ModelSpecificationError, "contrast columns \\['zz'\\]"),
    ("vpredict unknown name", lambda d, f, s: f.vpredict("h2 = zz / (g + residual)"), lmf.ModelSpecificationError,
     "unknown name 'zz'.*labels of variance_components: g, residual"),
    ("vpredict syntax error", lambda d, f, s: f.vpredict("g / (g + "), lmf.ModelSpecificationError,
     "cannot parse the expression 'g / \\(g \\+'.*h2 = gen"),
    ("vpredict __import__", lambda d, f, s: f.vpredict("__import__('os').getcwd()"), lmf.ModelSpecificationError,
     "'__import__\\('os'\\).getcwd' may not be called.*only sqrt, log, exp, abs"),
    ("vpredict attribute access", lambda d, f, s: f.vpredict("g.real"), lmf.ModelSpecificationError,
     "'g.real' is not allowed"),
    ("vpredict comparison", lambda d, f, s: f.vpredict("g > residual"), lmf.ModelSpecificationError,
     "'g > residual' is not allowed"),
    ("vpredict empty", lambda d, f, s: f.vpredict(""), lmf.ModelSpecificationError, "needs an expression"),
    ("compare a single fit", lambda d, f, s: lmf.compare(f), lmf.ModelSpecificationError,
     "at least two fits, got 1"),
    ("compare a non-fit", lambda d, f, s: lmf.compare(f, 3), lmf.ModelSpecificationError,
     "argument 2 is of type int.*\\.fit\\(\\)"),
    ("compare fits to different data", lambda d, f, s: lmf.compare(
        f, lmf.LMM.from_formula("y ~ x + f + (1 | g)", d.iloc[:40]).fit()), lmf.ModelSpecificationError,
     "different observations"),
    ("compare REML fits with different fixed effects", lambda d, f, s: lmf.compare(
        f, lmf.LMM.from_formula("y ~ x + (1 | g)", d).fit()), lmf.ModelSpecificationError,
     "refit both by ML"),
    ("compare REML with ML", lambda d, f, s: lmf.compare(f, f.refit(method="ML")), lmf.ModelSpecificationError,
     "fits of one method"),
    ("shrinkage_detail unknown term", lambda d, f, s: f.shrinkage_detail("nope"), lmf.ModelSpecificationError,
     "unknown random term 'nope'; use one of the terms \\['g'\\]"),
    ("term_heritability unknown term", lambda d, f, s: f.term_heritability("nope"), lmf.ModelSpecificationError,
     "unknown random term 'nope'"),
    ("variogram without positions", lambda d, f, s: f.variogram(), lmf.ModelSpecificationError,
     "name them: variogram\\(row='row', col='col'\\)"),
    ("variogram columns not in the model", lambda d, f, s: f.variogram(row="row", col="col"),
     lmf.ModelSpecificationError, "\\['row', 'col'\\] are not among the columns the model used"),
    ("variogram one column", lambda d, f, s: s.variogram(row="row"), lmf.ModelSpecificationError,
     "got row='row', col=None; name both"),
    ("variogram non-integer positions", lambda d, f, s: f.variogram(row="x", col="g"), lmf.ModelSpecificationError,
     "'x' must hold whole numbers.*round or recode"),
    ("variogram negative max_lag", lambda d, f, s: s.variogram(max_lag=-1), lmf.ModelSpecificationError,
     "max_lag must be a non-negative whole number, got -1|max_lag must be a non-negative whole number of plots"),
    ("variogram max_lag text", lambda d, f, s: s.variogram(max_lag="3"), lmf.ModelSpecificationError,
     "max_lag .*got '3'"),
]


@pytest.mark.parametrize("name, call, error, message", RESULT_CASES, ids=[c[0] for c in RESULT_CASES])
def test_bad_result_call(fitted, name, call, error, message):
    data, fit, spatial = fitted
    before = data.copy(deep=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lmf.LMMWarning)
        with pytest.raises(error, match=message) as info:
            call(data, fit, spatial)
    assert isinstance(info.value, lmf.LMMError)
    pd.testing.assert_frame_equal(data, before)


@pytest.mark.parametrize("method", ["covariance", "correlation"])
def test_covariance_of_unknown_term(fitted, method):
    _, fit, _ = fitted
    with pytest.raises(lmf.LMMError, match="no term 'nope'"):
        getattr(fit, method)("nope")


def test_bad_newdata_does_not_change_the_fit(fitted):
    """formulaic updates a spec's state on unexpected data: a failed predict must not alter later results."""
    data, fit, _ = fitted
    before = data.copy(deep=True)
    means = fit.predict_means("f").table.copy()
    anova = fit.anova().copy()
    with pytest.raises(lmf.DataError):
        fit.predict(data.assign(x=data["x"].astype(str)))
    with pytest.raises(lmf.DataError):
        fit.predict(data.assign(f="zz"))
    with pytest.raises(lmf.ModelSpecificationError, match="\\['x'\\] is not one"):
        fit.predict_means("x")
    pd.testing.assert_frame_equal(fit.predict_means("f").table, means)
    pd.testing.assert_frame_equal(fit.anova(), anova)
    pd.testing.assert_frame_equal(data, before)


def test_predict_new_grouping_level_warns(fitted):
    data, fit, _ = fitted
    new = data.assign(g="new")
    before = new.copy(deep=True)
    with pytest.warns(lmf.LMMWarning, match="48 row\\(s\\) of newdata have grouping levels not in the fit"):
        pred = fit.predict(new)
    np.testing.assert_allclose(pred.to_numpy(), fit.predict(new, include_random=False).to_numpy())
    pd.testing.assert_frame_equal(new, before)


def test_contrast_by_name_ignores_order(fitted):
    """A Series or DataFrame contrast is matched by coefficient name, not position (no silent misalignment)."""
    _, fit, _ = fitted
    by_dict = fit.contrast({"fb": 1.0, "fc": -1.0})
    by_series = fit.contrast(pd.Series({"fc": -1.0, "x": 0.0, "fb": 1.0}))
    by_frame = fit.contrast(pd.DataFrame({"fc": [-1.0], "fb": [1.0]}))
    pd.testing.assert_frame_equal(by_series, by_dict)
    pd.testing.assert_frame_equal(by_frame, by_dict)


# ---- inputs that look unusual but are valid: they fit, to the same numbers as the plain version -------------------
def _same_fit(a, b):
    assert a.loglik == pytest.approx(b.loglik, abs=1e-8)
    np.testing.assert_allclose(a.fixed_effects["estimate"].to_numpy(), b.fixed_effects["estimate"].to_numpy(),
                               rtol=1e-7, atol=1e-10)
    np.testing.assert_allclose(a.variance_components["estimate"].to_numpy(),
                               b.variance_components["estimate"].to_numpy(), rtol=1e-6, atol=1e-10)


def _with_na(values, dtype):
    out = pd.array(list(values), dtype=dtype)
    out[3] = pd.NA
    return out


VALID = [
    # (id, formula of the unusual data, make unusual data, formula of the plain data, make plain data)
    ("nullable Int64 covariate", "y ~ xi + (1 | g)", lambda d: d.assign(xi=pd.array(d["row"], dtype="Int64")),
     "y ~ row + (1 | g)", lambda d: d),
    ("nullable Int64 covariate with NA", "y ~ xi + (1 | g)", lambda d: d.assign(xi=_with_na(d["row"], "Int64")),
     "y ~ row + (1 | g)", lambda d: d.drop(index=3)),
    ("nullable Float64 response with NA", "yf ~ x + (1 | g)", lambda d: d.assign(yf=_with_na(d["y"], "Float64")),
     "y ~ x + (1 | g)", lambda d: d.drop(index=3)),
    ("nullable string factor", "y ~ fs + (1 | g)", lambda d: d.assign(fs=pd.array(d["f"], dtype="string")),
     "y ~ f + (1 | g)", lambda d: d),
    ("nullable string grouping with NA", "y ~ x + (1 | gs)", lambda d: d.assign(gs=_with_na(d["g"], "string")),
     "y ~ x + (1 | g)", lambda d: d.drop(index=3)),
    ("nullable boolean covariate with NA", "y ~ b + (1 | g)",
     lambda d: d.assign(b=_with_na(d["x"] > 0, "boolean")), "y ~ b + (1 | g)",
     lambda d: d.assign(b=d["x"] > 0).drop(index=3)),
    ("nullable Int64 AR1 positions", "y ~ x + ar1(ri):ar1(ci)",
     lambda d: d.assign(ri=pd.array(d["row"], dtype="Int64"), ci=pd.array(d["col"], dtype="Int64")),
     "y ~ x + ar1(row):ar1(col)", lambda d: d),
    ("float grouping with NaN", "y ~ x + (1 | gf)",
     lambda d: d.assign(gf=np.r_[np.nan, np.repeat(np.arange(8.0), 5)[1:]]), "y ~ x + (1 | g)",
     lambda d: d.iloc[1:]),
    ("AR1 position with NaN", "y ~ x + (1 | g) + ar1(rn):ar1(col)",
     lambda d: d.assign(rn=np.r_[np.nan, d["row"].to_numpy()[1:]]), "y ~ x + (1 | g) + ar1(row):ar1(col)",
     lambda d: d.iloc[1:]),
    ("datetime grouping", "y ~ x + (1 | gd)",
     lambda d: d.assign(gd=np.repeat(pd.date_range("2020-01-01", periods=8), 5)), "y ~ x + (1 | g)", lambda d: d),
    ("MultiIndex", "y ~ x + (1 | g)", lambda d: d.set_index(["g", "row"], drop=False), "y ~ x + (1 | g)",
     lambda d: d),
    ("duplicated index", "y ~ x + (1 | g)", lambda d: d.set_index(pd.Index(np.zeros(len(d), dtype=int))),
     "y ~ x + (1 | g)", lambda d: d),
    ("shuffled index", "y ~ x + (1 | g)", lambda d: d.set_index(pd.Index(np.arange(len(d))[::-1] * 7)),
     "y ~ x + (1 | g)", lambda d: d),
    ("dict of columns", "y ~ x + (1 | g)", lambda d: d.to_dict("list"), "y ~ x + (1 | g)", lambda d: d),
    ("backtick-quoted name with a space", "y ~ `my x` + (1 | `my g`)",
     lambda d: d.rename(columns={"x": "my x", "g": "my g"}), "y ~ x + (1 | g)", lambda d: d),
    ("Q() name with a space", "y ~ Q('my x') + (1 | g)", lambda d: d.rename(columns={"x": "my x"}),
     "y ~ x + (1 | g)", lambda d: d),
    ("unicode names", "y ~ größe + (1 | gruppé)", lambda d: d.rename(columns={"x": "größe", "g": "gruppé"}),
     "y ~ x + (1 | g)", lambda d: d),
    ("integer column labels unused", "y ~ x + (1 | g)", lambda d: d.rename(columns={"row": 0, "col": 1}),
     "y ~ x + (1 | g)", lambda d: d),
]


@pytest.mark.parametrize("name, formula, make, plain_formula, make_plain", VALID, ids=[c[0] for c in VALID])
def test_valid_unusual_input(df, name, formula, make, plain_formula, make_plain):
    data = make(df)
    before = data.copy(deep=True) if isinstance(data, pd.DataFrame) else None
    fit = lmf.LMM.from_formula(formula, data).fit()
    ref = lmf.LMM.from_formula(plain_formula, make_plain(df)).fit()
    _same_fit(fit, ref)
    assert fit.n_obs == ref.n_obs
    if before is not None:
        pd.testing.assert_frame_equal(data, before)


@pytest.mark.parametrize("index", [pd.MultiIndex.from_arrays([np.arange(40) % 3, np.arange(40)]),
                                   pd.Index(np.zeros(40, dtype=int)), pd.Index(np.arange(40)[::-1] * 7)],
                         ids=["MultiIndex", "duplicated index", "shuffled index"])
def test_predictions_keep_the_row_order_of_an_unusual_index(df, index):
    """Fitted values and predictions follow the rows, whatever the index (no alignment on labels)."""
    data = df.set_index(index)
    before = data.copy(deep=True)
    fit = lmf.LMM.from_formula("y ~ x + (1 | g)", data).fit()
    ref = lmf.LMM.from_formula("y ~ x + (1 | g)", df).fit()
    np.testing.assert_allclose(fit.fitted_values, ref.fitted_values, rtol=1e-8, atol=1e-10)
    pred = fit.predict(data)
    assert pred.index.equals(data.index)
    np.testing.assert_allclose(pred.to_numpy(), ref.predict(df).to_numpy(), rtol=1e-8, atol=1e-10)
    pd.testing.assert_frame_equal(data, before)


@pytest.mark.parametrize("where, kwargs, match", [
    ("model", {"weights": [1.0] * 40}, "observation weights are not supported.*diag"),
    ("model", {"offset": [0.0] * 40}, "offsets are not supported.*I\\(y - o\\)"),
    ("fit", {"weights": [1.0] * 40}, "observation weights are not supported"),
    ("fit", {"max_iter": True}, "max_iter must be a positive integer"),
    ("fit", {"tol": True}, "tol must be a positive number"),
])
def test_weights_offsets_and_boolean_options_are_refused(df, where, kwargs, match):
    before = df.copy(deep=True)
    with pytest.raises(lmf.ModelSpecificationError, match=match):
        if where == "model":
            lmf.LMM.from_formula("y ~ x + (1 | g)", df, **kwargs)
        else:
            lmf.LMM.from_formula("y ~ x + (1 | g)", df).fit(**kwargs)
    pd.testing.assert_frame_equal(df, before)


@pytest.mark.parametrize("formula, extra, error, message", [
    ("y ~ x + (1 | g) + exp(x + 0 | g)", {}, lmf.FormulaSyntaxError, "'\\|' inside 'exp\\(...\\)' in the fixed part.*ar1"),
    ("y ~ x + I(row | col) + (1 | g)", {}, lmf.FormulaSyntaxError, "'\\|' inside 'I\\(...\\)' in the fixed part"),
    ("y ~ x + (1 | g) + g:AR1(row)", {}, lmf.UnknownColumnError, "lower case: write ar1"),
    ("y ~ x + (1 | g) + g:idh(row)", {}, lmf.UnknownColumnError, "another package's structure; write diag"),
    ("y ~ x + (1 | g) + g:ar1(tt)", {"tt": pd.Categorical(np.tile(["t1", "t2", "t3", "t4", "t5"], 8))},
     lmf.DataError, "unordered Categorical.*as_ordered"),
    ("y ~ x + ar1(0 + tt | g)", {"tt": pd.Categorical(np.tile(["t1", "t2", "t3", "t4", "t5"], 8))},
     lmf.DataError, "unordered Categorical.*as_ordered"),
], ids=["bar inside a fixed-part call", "bar inside I()", "upper-case structure", "ASReml structure name",
        "unordered Categorical as residual positions", "unordered Categorical as G-side positions"])
def test_foreign_syntax(df, formula, extra, error, message):
    data = df.assign(**extra)
    before = data.copy(deep=True)
    with pytest.raises(error, match=message):
        lmf.LMM.from_formula(formula, data).fit()
    pd.testing.assert_frame_equal(data, before)


@pytest.mark.parametrize("where, keyword, message", [
    ("fit", {"REML": False}, "method='ML'"), ("model", {"random": "~1|g"}, "random terms go in the formula"),
    ("model", {"groups": "g"}, "groupings go in the formula"), ("model", {"foo": 1}, "no option 'foo'"),
])
def test_keywords_of_other_packages(df, where, keyword, message):
    with pytest.raises(lmf.ModelSpecificationError, match=message):
        if where == "model":
            lmf.LMM.from_formula("y ~ x + (1 | g)", df, **keyword)
        else:
            lmf.LMM.from_formula("y ~ x + (1 | g)", df).fit(**keyword)


def test_tiny_response_is_refused(df):
    with pytest.raises(lmf.DataError, match="varies only by.*rescale"):
        lmf.LMM.from_formula("y ~ x + (1 | g)", df.assign(y=df["y"] * 1e-100))


def test_variogram_needs_a_spatial_field():
    from lmmformula.datasets import load
    fit = lmf.LMM.from_formula("y ~ week + subject:ar1(week)", load("growth")).fit()
    with pytest.raises(lmf.ModelSpecificationError, match="not a spatial coordinate"):
        fit.variogram()


def test_grouping_values_that_print_alike(df):
    data = df.assign(g=[1, "1", 2, "2"] * 10)
    before = data.copy(deep=True)
    with pytest.raises(lmf.DataError, match="print alike.*astype\\(str\\)"):
        lmf.LMM.from_formula("y ~ x + (1 | g)", data)
    pd.testing.assert_frame_equal(data, before)
