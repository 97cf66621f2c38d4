"""Design matrices: X against patsy, Z from integer codes, missing rows, aliased columns."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import patsy
import pytest
import scipy.sparse as sp

import lmmformula as lmf
from lmmformula.design import build_fixed, build_random, model_frame
from lmmformula.formula import parse_formula


@pytest.fixture
def frame():
    rng = np.random.default_rng(3)
    n = 60
    return pd.DataFrame({
        "y": rng.normal(size=n),
        "x": rng.normal(size=n),
        "z": rng.uniform(1, 2, n),
        "a": rng.choice(["lo", "mid", "hi"], n),
        "b": rng.choice(["p", "q"], n),
        "g": rng.choice([f"s{i}" for i in range(8)], n),
        "h": rng.choice([f"t{i}" for i in range(3)], n),
    })


@pytest.mark.parametrize("rhs", ["x", "a", "a + b", "a * b", "a * x", "x + I(x**2) + np.log(z)", "0 + a",
                                 "C(a) + b:x", "a:b", "x * z"])
def test_fixed_matrix_equals_patsy(frame, rhs):
    p = parse_formula(f"y ~ {rhs} + (1 | g)")
    mf = model_frame(frame, p)
    fx = build_fixed(mf.data, p.response, p.fixed, p.formula)
    ref = np.asarray(patsy.dmatrix(rhs, frame, eval_env=0, return_type="dataframe"))
    # same column space and, with treatment contrasts, the same columns up to order
    assert fx.X.shape == ref.shape
    for j in range(ref.shape[1]):
        assert min(np.abs(fx.X - ref[:, [j]]).max(axis=0)) < 1e-12


def test_treatment_contrasts_use_first_sorted_level(frame):
    p = parse_formula("y ~ a + (1 | g)")
    fx = build_fixed(model_frame(frame, p).data, p.response, p.fixed, p.formula)
    assert fx.names == ("(Intercept)", "alo", "amid")  # reference level "hi"


def test_random_block_is_sparse_from_codes(frame):
    p = parse_formula("y ~ x + (1 + x | g) + (1 | g:h)")
    mf = model_frame(frame, p)
    blocks = build_random(mf.data, p.random, p.formula)
    g, gh = blocks
    assert sp.issparse(g.Z) and g.Z.shape == (60, 2 * g.n_levels)
    assert g.Z.nnz == 2 * 60 and gh.Z.nnz == 60
    codes = pd.factorize(frame.g, sort=True)[0]
    np.testing.assert_array_equal(g.factor.codes, codes)
    dense = g.Z.toarray()
    np.testing.assert_allclose(dense[np.arange(60), 2 * codes], 1.0)
    np.testing.assert_allclose(dense[np.arange(60), 2 * codes + 1], frame.x)
    assert gh.factor.levels == tuple(sorted(set(frame.g + ":" + frame.h)))


def test_missing_rows_are_dropped_and_counted(frame):
    df = frame.copy()
    df.loc[[2, 5], "y"] = np.nan
    df.loc[7, "x"] = np.nan
    df.loc[9, "g"] = None
    df.loc[11, "h"] = np.nan  # h is not used: the row stays
    before = df.copy()
    fit = lmf.LMM.from_formula("y ~ x + (1 | g)", df).fit()
    assert fit.n_obs == 56 and fit.n_dropped == 4
    pd.testing.assert_frame_equal(df, before)


def test_aliased_columns_are_dropped_with_a_warning(frame):
    df = frame.assign(x2=2 * frame.x + 1)
    with pytest.warns(lmf.RankDeficiencyWarning, match="x2"):
        fit = lmf.LMM.from_formula("y ~ x + x2 + (1 | g)", df).fit()
    assert list(fit.fixed_effects.index) == ["(Intercept)", "x"]
    assert fit.dropped_fixed == ("x2",)


def test_empty_interaction_cells_are_aliased(frame):
    df = frame[~((frame.a == "lo") & (frame.b == "q"))]
    with pytest.warns(lmf.RankDeficiencyWarning, match="alo:bq"):
        fit = lmf.LMM.from_formula("y ~ a * b + (1 | g)", df).fit()
    assert "alo:bq" not in fit.fixed_effects.index


def test_the_callers_frame_is_never_modified(frame):
    before = frame.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lmf.LMM.from_formula("y ~ a * x + (1 + x | g) + (1 | h)", frame).fit().summary().as_text()
    pd.testing.assert_frame_equal(frame, before)


def test_categorical_grouping_drops_unused_levels(frame):
    df = frame.assign(g=pd.Categorical(frame.g, categories=sorted(set(frame.g)) + ["unused"]))
    fit = lmf.LMM.from_formula("y ~ x + (1 | g)", df).fit()
    assert "unused" not in fit.random_effects["g"].index


def test_intercept_free_fixed_part_and_response_transform(frame):
    fit = lmf.LMM.from_formula("np.log(z) ~ 0 + a + (1 | g)", frame).fit()
    assert list(fit.fixed_effects.index) == ["ahi", "alo", "amid"]


def test_r_factor_call_is_understood_and_named_as_in_r(frame):
    df = frame.assign(d=np.tile([1, 2, 3], 20))
    fit = lmf.LMM.from_formula("y ~ x * factor(d) + (1 | g)", df).fit()
    assert list(fit.fixed_effects.index) == ["(Intercept)", "x", "factor(d)2", "factor(d)3", "x:factor(d)2",
                                             "x:factor(d)3"]


@pytest.mark.parametrize("structured, plain", [("us(1 + x | g)", "(1 + x | g)"), ("diag(1 + x | g)", "(1 + x || g)")])
def test_us_and_diag_around_a_term_are_the_bar_forms(frame, structured, plain):
    a = lmf.LMM.from_formula(f"y ~ x + {structured}", frame).fit()
    b = lmf.LMM.from_formula(f"y ~ x + {plain}", frame).fit()
    assert a.loglik == pytest.approx(b.loglik, abs=1e-10)
    assert a.variance_components.parameter.tolist() == b.variance_components.parameter.tolist()


def test_aliasing_keeps_a_basis_when_columns_outnumber_rows():
    """Found by review: an unpivoted QR let an aliased column take a direction a later column needed."""
    rng = np.random.default_rng(0)
    n = 12
    f = np.array(list("abcde") + list(rng.choice(list("abcde"), n - 5)))
    df = pd.DataFrame({"f": f, "g": f, "h": f, "x": rng.normal(size=n), "grp": np.repeat(list("uvw"), 4)})
    df["y"] = 3 * df["x"] + rng.normal(size=n)
    with pytest.warns(lmf.RankDeficiencyWarning):
        m = lmf.LMM.from_formula("y ~ f + g + h + x + (1 | grp)", df)
    assert m.design.fixed.names == ("(Intercept)", "fb", "fc", "fd", "fe", "x")


@pytest.mark.parametrize("seed", range(30))
def test_aliasing_keeps_as_many_columns_as_the_rank(seed):
    """Unbalanced factorials with empty cells: the kept columns are independent and span X."""
    from lmmformula.design.fixed import _independent_columns

    rng = np.random.default_rng(seed)
    n = int(rng.integers(8, 20))
    cols = [np.ones(n)]
    for _ in range(int(rng.integers(3, 6))):
        lev = rng.integers(0, 3, n)
        cols += [(lev == k).astype(float) for k in (1, 2)]
    cols += [cols[int(rng.integers(1, len(cols)))] * cols[int(rng.integers(1, len(cols)))] for _ in range(8)]
    X = np.column_stack(cols)
    kept = _independent_columns(X)
    rank = np.linalg.matrix_rank(X)
    assert len(kept) == rank
    assert np.linalg.matrix_rank(X[:, kept]) == rank


def test_variables_inside_transforms_formulaic_does_not_report_are_kept():
    """poly(x, 2): formulaic's required_variables misses x; the frame keeps it (same ML fit as x + x^2)."""
    rng = np.random.default_rng(5)
    d = pd.DataFrame({"x": rng.normal(size=120), "g": rng.choice([f"g{i}" for i in range(10)], 120)})
    d["y"] = 1 + d.x - 0.5 * d.x**2 + rng.normal(size=120)
    poly = lmf.LMM.from_formula("y ~ poly(x, 2) + (1 | g)", d).fit(method="ML")
    raw = lmf.LMM.from_formula("y ~ x + I(x**2) + (1 | g)", d).fit(method="ML")
    assert poly.loglik == pytest.approx(raw.loglik, abs=1e-8)
    assert list(poly.fixed_effects.index) == ["(Intercept)", "poly(x, 2)1", "poly(x, 2)2"]


def test_columns_with_an_empty_second_level_fit_as_plain_columns():
    """Labels such as ``("y", "")`` (left by ``groupby().agg().reset_index()``) name the columns ``y``, ``x``, ``g``."""
    rng = np.random.default_rng(1)
    plain = pd.DataFrame({"y": rng.normal(size=60), "x": rng.normal(size=60), "g": np.repeat(list("abcdefghij"), 6)})
    multi = plain.copy()
    multi.columns = pd.MultiIndex.from_tuples([(c, "") for c in plain.columns])
    before = multi.copy()
    a = lmf.LMM.from_formula("y ~ x + (1 | g)", plain).fit()
    b = lmf.LMM.from_formula("y ~ x + (1 | g)", multi).fit()
    assert b.loglik == a.loglik
    np.testing.assert_array_equal(b.fixed_effects["estimate"].to_numpy(), a.fixed_effects["estimate"].to_numpy())
    pd.testing.assert_frame_equal(multi, before)
