"""Property-based tests over random formulas and data (issue #6).

A hypothesis strategy draws a small model together with its data: the number of groups, balanced or
unbalanced group sizes, missing rows, crossed or nested groupings, a fixed part (intercept only, a covariate,
a factor, factor * covariate) and one covariance construct from the README's syntax table.  The draw is a plain
``spec`` dict of numbers and names; :func:`make_case` turns it into (formula, data, matrices) deterministically,
so that a subprocess can rebuild the same case from the spec alone.

Invariants, one test each:

* no exception other than an ``LMMError`` (degenerate data included); a ``ConvergenceWarning`` iff not converged;
* the log-likelihood at the estimates equals a dense brute-force REML/ML, and the estimate is a local maximum;
* shuffling the rows changes nothing;
* fitting the same input twice gives bit-identical estimates (in one process and across processes);
* the input DataFrame (and known matrix) is never modified;
* fit -> to_json -> from_json restores every estimate bit for bit.
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import lmmformula as lmf
from conftest import dense_V, gaussian_loglik

HERE = Path(__file__).parent


def _settings(n: int):
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


# ------------------------------------------------------------------------------------------------------------
# The constructs.  Each maps to the covariance part of the formula and the layout of its data:
#   "groups": subjects g with positions t (gaps when unbalanced), a crossed or nested factor h, a factor f;
#   "series": like "groups" but one observation per (g, t) cell (a residual structure within subject);
#   "grid":   a small incomplete row x column field in random row order, genotypes gen;
#   "vm":     groups g with a known covariance K among the levels (labelled DataFrame, extra ancestors).
# ------------------------------------------------------------------------------------------------------------
CONSTRUCTS = {
    "intercept": ("(1 | g)", "groups"),
    "slope": ("(1 + x | g)", "groups"),
    "crossed": ("(1 | g) + (1 | h)", "groups"),
    "nested": ("(1 | g/h)", "groups"),
    "uncorrelated": ("(x || g)", "groups"),
    "us": ("us(0 + f | g)", "groups"),
    "diag": ("diag(0 + f | g)", "groups"),
    "cs": ("cs(0 + f | g)", "groups"),
    "ar1_g": ("ar1(0 + factor(t) | g)", "groups"),
    "toep_g": ("toep(0 + factor(t) | g)", "groups"),
    "fa": ("fa(0 + f | g, 1)", "groups"),
    "ar1_r": ("(1 | g) + g:ar1(t)", "series"),
    "cs_r": ("g:cs(t)", "series"),
    "us_r": ("g:us(t)", "series"),
    "diag_r": ("g:diag(t)", "series"),
    "toep_r": ("g:toep(t)", "series"),
    "ma_r": ("g:ma(t, 1)", "series"),
    "field": ("ar1(row):ar1(col)", "grid"),
    "field_gen": ("(1 | gen) + ar1(row):ar1(col)", "grid"),
    "vm": ('(1 | vm(g, "K"))', "vm"),
}
KINDS = tuple(CONSTRUCTS)
FIXED = ("1", "x", "f", "f * x")
DEGENERATE = ("const_x", "const_y", "single_level", "all_missing", "dup_rows", "tiny", "nan_x")


@st.composite
def specs(draw, kinds=KINDS, degenerate=False):
    """A small random model and data, as a plain dict (see :func:`make_case`)."""
    kind = draw(st.sampled_from(kinds))
    layout = CONSTRUCTS[kind][1]
    spec = {
        "kind": kind,
        "fixed": draw(st.sampled_from(FIXED)),
        "seed": draw(st.integers(0, 2**31 - 1)),
        "balanced": draw(st.booleans()),
        "n_missing": draw(st.integers(0, 3)),
        "degenerate": draw(st.sampled_from(DEGENERATE)) if degenerate else None,
        "n_f": draw(st.integers(2, 3)),
    }
    if layout == "grid":
        spec.update(n_row=draw(st.integers(3, 7)), n_col=draw(st.integers(3, 7)),
                    n_empty=draw(st.integers(0, 4)), n_gen=draw(st.integers(2, 6)))
    else:
        # a residual structure within subject has several parameters (toep on 5 positions: 5): >= 5 subjects
        # g:us(t) has t(t+1)/2 parameters: 3 positions and 7 subjects (more parameters than that on these data sizes
        # rarely converge within MAX_ITER, and each of their iterations is slow)
        lo, hi_t = (7, 3) if kind == "us_r" else (5 if layout == "series" else 3, 5)
        spec.update(n_groups=draw(st.integers(lo, 9)), n_t=draw(st.integers(3, hi_t)),
                    reps=1 if layout == "series" else draw(st.integers(1, 2)),
                    crossed=draw(st.booleans()), n_h=draw(st.integers(2, 4)),
                    n_extra=draw(st.integers(0, 2)))
    return spec


def _lags(m: int) -> np.ndarray:
    i = np.arange(m)
    return np.abs(i[:, None] - i[None, :])


def make_case(spec: dict) -> tuple[str, pd.DataFrame, dict | None]:
    """(formula, data, matrices) of a spec; deterministic in the spec."""
    rng = np.random.default_rng(spec["seed"])
    covpart, layout = CONSTRUCTS[spec["kind"]]
    n_f = spec["n_f"]
    matrices = None
    if layout == "grid":
        n_row, n_col = spec["n_row"], spec["n_col"]
        cells = [(r, c) for r in range(1, n_row + 1) for c in range(1, n_col + 1)]
        n_empty = min(spec["n_empty"], len(cells) - 4)
        keep = np.sort(rng.choice(len(cells), len(cells) - n_empty, replace=False))
        rows = np.array([cells[i][0] for i in keep])
        cols = np.array([cells[i][1] for i in keep])
        n = rows.size
        gen = rng.integers(0, spec["n_gen"], n)
        rho_r, rho_c = rng.uniform(-0.3, 0.8, 2)
        C = np.kron(rho_r ** _lags(n_row), rho_c ** _lags(n_col))
        field = np.linalg.cholesky(C) @ rng.normal(size=n_row * n_col)
        e = field[(rows - 1) * n_col + (cols - 1)]
        x = rng.normal(size=n).round(3)
        f = rng.integers(0, n_f, n)
        y = 2.0 + 0.5 * x + 0.3 * f + rng.normal(0, rng.uniform(0, 1.5), spec["n_gen"])[gen] + e
        data = pd.DataFrame({"y": y, "x": x, "f": [f"f{k}" for k in f], "row": rows, "col": cols,
                             "gen": [f"G{k}" for k in gen]})
    else:
        n_g, n_t, reps = spec["n_groups"], spec["n_t"], spec["reps"]
        g_list, t_list = [], []
        for i in range(n_g):
            if spec["balanced"]:
                ts = np.arange(n_t)
            else:  # a random subset of the positions (gaps in the series), at least two
                ts = np.sort(rng.choice(n_t, rng.integers(2, n_t + 1), replace=False))
            ts = np.repeat(ts, reps)
            g_list.append(np.full(ts.size, i))
            t_list.append(ts)
        g, t = np.concatenate(g_list), np.concatenate(t_list)
        n = g.size
        x = rng.normal(size=n).round(3)
        f = rng.integers(0, n_f, n)
        # h: crossed with g in "(1 | g) + (1 | h)"; its labels repeat across groups, so "(1 | g/h)" nests it
        h_lab = [f"h{k}" for k in rng.integers(0, spec["n_h"], n)]
        sd = rng.uniform(0.0, 1.5, 4)
        rho = rng.uniform(-0.3, 0.8)
        Cs = np.linalg.cholesky(rho ** _lags(n_t))
        u = rng.normal(size=(n_g, n_t)) @ Cs.T
        cell = h_lab if spec["crossed"] else [f"g{a}:{b}" for a, b in zip(g, h_lab)]  # h or g:h effects
        h_eff = {lab: rng.normal(0, sd[2]) for lab in sorted(set(cell))}  # sorted: no hash-seed dependence
        y = (1.0 + 0.5 * x + 0.3 * f + sd[0] * rng.normal(size=n_g)[g] + sd[1] * rng.normal(size=n_g)[g] * x
             + sd[3] * u[g, t] + np.array([h_eff[lab] for lab in cell]) + rng.normal(size=n))
        data = pd.DataFrame({"y": y, "x": x, "f": [f"f{k}" for k in f], "g": [f"g{k}" for k in g], "t": t,
                             "h": h_lab})
        if layout == "vm":
            labels = [f"g{k}" for k in range(n_g + spec["n_extra"])]
            B = rng.normal(size=(len(labels), len(labels)))
            K = B @ B.T / len(labels) + 0.5 * np.eye(len(labels))
            order = rng.permutation(len(labels))
            labels = [labels[i] for i in order]
            matrices = {"K": pd.DataFrame(K, index=labels, columns=labels)}
    # missing values in used columns (rows dropped)
    for _ in range(spec["n_missing"]):
        col = ["y", "x", "f"][rng.integers(0, 3)]
        data.loc[data.index[rng.integers(0, len(data))], col] = np.nan if col != "f" else None
    deg = spec.get("degenerate")
    if deg == "const_x":
        data["x"] = 1.0
    elif deg == "const_y":
        data["y"] = 3.0
    elif deg == "single_level":
        for col in ("g", "gen", "h"):
            if col in data:
                data[col] = data[col].iloc[0]
        data["f"] = "f0"
    elif deg == "all_missing":
        data["y"] = np.nan
    elif deg == "dup_rows":
        data = pd.concat([data, data.iloc[: max(1, len(data) // 4)]], ignore_index=True)
    elif deg == "tiny":
        data = data.iloc[:3]
    elif deg == "nan_x":
        data.loc[data.index[: len(data) - 2], "x"] = np.nan
    # rows in random order, a non-default index
    data = data.iloc[rng.permutation(len(data))]
    data.index = rng.permutation(len(data)) * 3 + 7
    formula = f"y ~ {spec['fixed']} + {covpart}"
    return formula, data, matrices


MAX_ITER = 50  # converged fits take 4-15 iterations; bounds the time of the few that do not converge


def fit_case(formula, data, matrices, method="REML"):
    return lmf.LMM.from_formula(formula, data, matrices=matrices).fit(method=method, max_iter=MAX_ITER)


def fit_or_none(spec, method="REML"):
    """The fit of a spec, or None when the package refuses the model with an LMMError."""
    formula, data, matrices = make_case(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lmf.LMMWarning)
        try:
            return fit_case(formula, data, matrices, method)
        except lmf.LMMError:
            return None


# ------------------------------------------------------------------------------------------------------------
# 1. No exception other than LMMError
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@_settings(4)
@given(drawn=st.data(), method=st.sampled_from(["REML", "ML"]))
def test_no_crash_other_than_lmm_error(kind, drawn, method):
    spec = drawn.draw(specs((kind,), degenerate=True) | specs((kind,)))
    event(f"kind={spec['kind']}, degenerate={spec['degenerate']}")
    formula, data, matrices = make_case(spec)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fit = fit_case(formula, data, matrices, method)
        except lmf.LMMError as err:
            event(f"refused: {type(err).__name__}")
            return
        # the tables a user looks at first must not crash either
        fe = fit.fixed_effects
        vc = fit.variance_components
        fit.random_effects
        fit.summary()
    assert np.isfinite(fit.loglik)
    assert np.all(np.isfinite(fe.estimate))
    assert np.all(np.isfinite(vc.estimate))
    assert fit.sigma2 > 0
    convergence = [w for w in caught if issubclass(w.category, lmf.ConvergenceWarning)]
    assert bool(convergence) == (not fit.converged)


# ------------------------------------------------------------------------------------------------------------
# 2. The dense oracle: conftest's dense_V, and an independent V built from the data and the reported tables
# ------------------------------------------------------------------------------------------------------------
def _positions(values: np.ndarray) -> np.ndarray:
    """README: positions of ar1/toep come from a numeric column divided by its smallest spacing (gaps kept)."""
    u = np.unique(values)
    step = np.diff(u).min() if u.size > 1 else 1.0
    return np.rint((values - u[0]) / step).astype(int)


def _band_matrix(lag: np.ndarray, rhos: list[float]) -> np.ndarray:
    """Toeplitz correlation from rho1, rho2, ... (zero beyond the last band)."""
    r = np.concatenate([[1.0], rhos, np.zeros(int(lag.max()) + 1)])
    return r[lag]


def _term_matrix(kind: str, blk, vc: pd.DataFrame, frame: pd.DataFrame) -> np.ndarray:
    """The within-level covariance of a random term from its ``variance_components`` rows (README names)."""
    rows = vc[vc.term == blk.name].set_index("parameter")["estimate"]
    cols = ["Intercept" if c == "(Intercept)" else c for c in blk.columns]
    m = len(cols)
    if kind in ("ar1_g", "toep_g"):
        t_vals = np.array([float(c[len("factor(t)"):]) for c in cols])
        pos = _positions(t_vals)
        lag = np.abs(pos[:, None] - pos[None, :])
        if kind == "ar1_g":
            return rows["variance"] * rows["rho(t)"] ** lag
        return rows["variance"] * _band_matrix(lag, [rows[f"rho{k}(t)"] for k in range(1, m)])
    if kind == "cs":
        return rows["variance"] * np.where(np.eye(m, dtype=bool), 1.0, rows["rho(f)"])
    if kind == "fa":
        labels = [c[1:] for c in cols]  # ff0 -> f0
        lam = np.array([rows[f"loading1({lab})"] for lab in labels])
        return np.outer(lam, lam) + np.diag([rows[f"psi({lab})"] for lab in labels])
    if m == 1:
        return np.array([[rows["variance"] if "variance" in rows else rows[f"var({cols[0]})"]]])
    G = np.diag([rows[f"var({c})"] for c in cols])
    for i in range(m):
        for j in range(i + 1, m):
            key = f"cov({cols[i]},{cols[j]})"
            if key in rows:
                G[i, j] = G[j, i] = rows[key]
    return G


def _term_columns(blk, frame: pd.DataFrame) -> np.ndarray:
    out = []
    for c in blk.columns:
        if c in ("(Intercept)", "Intercept"):
            out.append(np.ones(len(frame)))
        elif c == "x":
            out.append(frame["x"].to_numpy(float))
        elif c.startswith("factor(t)"):
            out.append((frame["t"].to_numpy(float) == float(c[len("factor(t)"):])).astype(float))
        elif c.startswith("f"):
            out.append((frame["f"].to_numpy() == c[1:]).astype(float))
        else:
            raise AssertionError(f"unexpected column {c}")
    return np.column_stack(out)


def _grouping_labels(name: str, frame: pd.DataFrame) -> np.ndarray:
    if name.startswith("vm("):
        name = "g"
    parts = name.split(":")
    return np.array([":".join(str(frame[p].iloc[i]) for p in parts) for i in range(len(frame))])


def _residual_matrix(kind: str, fit, frame: pd.DataFrame) -> np.ndarray:
    vc = fit.variance_components
    rv = vc[vc.term == "residual"].set_index("parameter")["estimate"]
    n = len(frame)
    if kind in ("field", "field_gen"):
        pr, pc = _positions(frame["row"].to_numpy(float)), _positions(frame["col"].to_numpy(float))
        return (rv["variance"] * rv["rho(row)"] ** np.abs(pr[:, None] - pr[None, :])
                * rv["rho(col)"] ** np.abs(pc[:, None] - pc[None, :]))
    if CONSTRUCTS[kind][1] != "series":
        return rv["variance"] * np.eye(n)
    t = frame["t"].to_numpy(float)
    levels = np.unique(t)
    m = levels.size
    if kind in ("ar1_r", "toep_r", "ma_r"):
        pos = _positions(t)
        lag = np.abs(pos[:, None] - pos[None, :])
        if kind == "ar1_r":
            C = rv["variance"] * rv["rho(t)"] ** lag
        else:
            bands = [rv[k] for k in rv.index if k.startswith("rho")]
            if kind == "ma_r":
                assert len(bands) == 1, rv
            C = rv["variance"] * _band_matrix(lag, bands)
    else:
        lab = [f"t={v:g}" for v in levels]
        S = np.zeros((m, m))
        for i in range(m):
            S[i, i] = rv[f"var({lab[i]})"] if kind != "cs_r" else rv["variance"]
            for j in range(m):
                if i != j:
                    if kind == "cs_r":
                        S[i, j] = rv["variance"] * rv["rho(t)"]
                    elif kind == "us_r":
                        S[i, j] = rv[f"cov({lab[min(i, j)]},{lab[max(i, j)]})"]
        idx = np.searchsorted(levels, t)
        C = S[idx[:, None], idx[None, :]]
    g = frame["g"].to_numpy()
    return np.where(g[:, None] == g[None, :], C, 0.0)


def independent_V(fit, kind: str, matrices) -> np.ndarray:
    """``V = sum_k Z_k (K_k (x) G_k) Z_k' + R``: Z from the data, G_k and R from ``variance_components``,
    K from the matrix the user passed.  Shares only the level and column labels with the package."""
    frame = fit.frame
    assert np.array_equal(frame["y"].to_numpy(float), fit.mme.y)
    V = _residual_matrix(kind, fit, frame)
    vc = fit.variance_components
    for blk in fit.mme.blocks:
        G = _term_matrix(kind, blk, vc, frame)
        labels = list(blk.factor.levels)
        codes = pd.Index(labels).get_indexer(_grouping_labels(blk.name, frame))
        assert (codes >= 0).all()
        Xk = _term_columns(blk, frame)
        if blk.known is not None:
            K = matrices["K"].loc[labels, labels].to_numpy()
        else:
            K = np.eye(len(labels))
        # Cov(Xk_i u_{l_i}, Xk_j u_{l_j}) = K[l_i, l_j] Xk_i' G Xk_j
        V = V + K[codes[:, None], codes[None, :]] * (Xk @ G @ Xk.T)
    return V


def _is_local_maximum(fit) -> None:
    """No small move of theta (within bounds) increases the log-likelihood (as test_properties.py)."""
    mme = fit.mme
    rng = np.random.default_rng(0)
    for _ in range(10):
        cand = mme.canonical(np.clip(fit.theta + rng.normal(0, 1e-3, fit.theta.size), mme.lower, mme.upper))
        try:
            dev = mme.evaluate(cand).deviance
        except np.linalg.LinAlgError:
            continue
        assert -0.5 * dev <= fit.loglik + 1e-9 * max(1.0, abs(fit.loglik)), (cand, fit.theta)


@pytest.mark.parametrize("kind", KINDS)
@_settings(3)
@given(drawn=st.data(), method=st.sampled_from(["REML", "ML"]))
def test_loglik_equals_dense_brute_force_and_is_a_maximum(kind, drawn, method):
    spec = drawn.draw(specs((kind,)))
    formula, data, matrices = make_case(spec)
    fit = fit_or_none(spec, method)
    event(f"kind={spec['kind']}, fitted={fit is not None}, converged={fit is not None and fit.converged}")
    if fit is None:
        return
    V = dense_V(fit)
    V2 = independent_V(fit, spec["kind"], matrices)
    # both sides lose about cond * eps digits when V or X'V^-1X is nearly singular (a boundary estimate)
    cond_v = np.linalg.cond(V)
    X = fit.mme.X
    cond_b = np.linalg.cond(X.T @ np.linalg.solve(V, X)) if X.shape[1] else 1.0
    for W in (V, V2):
        ll, b = gaussian_loglik(W, X, fit.mme.y, fit.method)
        assert fit.loglik == pytest.approx(ll, rel=1e-6, abs=1e-8 + 1e-14 * cond_v)
        np.testing.assert_allclose(fit.fixed_effects.estimate, b, rtol=1e-6,
                                   atol=(1e-8 + 1e-14 * cond_v * cond_b) * (1 + np.abs(b).max()))
    if fit.converged:
        _is_local_maximum(fit)


# ------------------------------------------------------------------------------------------------------------
# 3. Row order
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@_settings(2)
@given(drawn=st.data(), rnd=st.randoms(use_true_random=False))
def test_row_permutation_changes_nothing(kind, drawn, rnd):
    spec = drawn.draw(specs((kind,)))
    formula, data, matrices = make_case(spec)
    perm = list(range(len(data)))
    rnd.shuffle(perm)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lmf.LMMWarning)
        try:
            a = fit_case(formula, data, matrices)
        except lmf.LMMError as err:
            with pytest.raises(type(err)):
                fit_case(formula, data.iloc[perm], matrices)
            return
        b = fit_case(formula, data.iloc[perm], matrices)
    if not (a.converged and b.converged):
        # the last iterate of a fit that stopped at max_iter (tiny data, an estimate creeping along the edge of
        # the parameter space, e.g. a Toeplitz matrix at the edge of positive definiteness) is not an estimate
        return
    assert b.loglik == pytest.approx(a.loglik, abs=1e-8)
    fa, fb = a.fixed_effects.estimate, b.fixed_effects.estimate
    assert list(fa.index) == list(fb.index)
    np.testing.assert_allclose(fb, fa, rtol=1e-6, atol=1e-8 * (1 + np.abs(fa).max()))
    va, vb = a.variance_components, b.variance_components
    assert list(zip(va.term, va.parameter)) == list(zip(vb.term, vb.parameter))
    np.testing.assert_allclose(vb.estimate, va.estimate, rtol=1e-5, atol=1e-7 * np.abs(va.estimate).max())


# ------------------------------------------------------------------------------------------------------------
# 4. Reproducibility
# ------------------------------------------------------------------------------------------------------------
def _estimates(fit) -> dict[str, np.ndarray]:
    return {"theta": fit.theta, "loglik": np.array([fit.loglik]),
            "fixed_effects": fit.fixed_effects[["estimate", "std_error"]].to_numpy(),
            "variance_components": fit.variance_components[["estimate", "std_error"]].to_numpy()}


@pytest.mark.parametrize("kind", KINDS)
@_settings(2)
@given(drawn=st.data())
def test_identical_input_gives_bit_identical_estimates(kind, drawn):
    spec = drawn.draw(specs((kind,)))
    a, b = fit_or_none(spec), fit_or_none(spec)
    assert (a is None) == (b is None)
    if a is None:
        return
    ea, eb = _estimates(a), _estimates(b)
    for key in ea:
        assert np.array_equal(ea[key], eb[key], equal_nan=True), key


# fixed cases of six constructs (G-side, R-side, field, known matrix), fitted in two fresh interpreters
_SUBPROCESS_KINDS = ("slope", "nested", "fa", "ar1_r", "field_gen", "vm")
_SUBPROCESS_SPECS = [
    {"kind": kind, "fixed": FIXED[i % len(FIXED)], "seed": 1000 + i, "balanced": bool(i % 2), "n_missing": i % 3,
     "degenerate": None, "n_f": 3, "n_row": 5, "n_col": 4, "n_empty": 2, "n_gen": 4, "n_groups": 6, "n_t": 4,
     "reps": 1 if CONSTRUCTS[kind][1] == "series" else 2, "crossed": kind != "nested", "n_h": 3, "n_extra": 1}
    for i, kind in enumerate(_SUBPROCESS_KINDS)
]

_SCRIPT = """
import json, sys, warnings
sys.path.insert(0, {tests!r})
warnings.simplefilter("ignore")
from test_random_formulas import fit_or_none
out = []
for spec in json.loads({specs!r}):
    fit = fit_or_none(spec)
    out.append(None if fit is None else [float(v).hex() for v in [fit.loglik, *fit.theta,
               *fit.fixed_effects.estimate, *fit.variance_components.estimate]])
print(json.dumps(out))
"""


def _hex_estimates(fit) -> list[str] | None:
    if fit is None:
        return None
    return [float(v).hex() for v in [fit.loglik, *fit.theta, *fit.fixed_effects.estimate,
                                     *fit.variance_components.estimate]]


def test_bit_identical_across_processes():
    script = _SCRIPT.format(tests=str(HERE), specs=json.dumps(_SUBPROCESS_SPECS))
    runs = []
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert runs[0] == runs[1]
    assert all(r is not None for r in runs[0])  # the cases are fitted, not all refused
    here = [_hex_estimates(fit_or_none(spec)) for spec in _SUBPROCESS_SPECS]
    assert here == runs[0]


# ------------------------------------------------------------------------------------------------------------
# 5. The input is never modified
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@_settings(2)
@given(drawn=st.data())
def test_input_is_never_modified(kind, drawn):
    spec = drawn.draw(specs((kind,), degenerate=True) | specs((kind,)))
    formula, data, matrices = make_case(spec)
    before = data.copy(deep=True)
    before_m = copy.deepcopy(matrices)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", lmf.LMMWarning)
        try:
            fit = fit_case(formula, data, matrices)
            fit.fixed_effects, fit.variance_components, fit.random_effects, fit.shrinkage
            fit.residuals, fit.fitted_values, fit.summary()
            fit.predict(data.dropna())
        except lmf.LMMError:
            pass
    pd.testing.assert_frame_equal(data, before)
    if matrices is not None:
        pd.testing.assert_frame_equal(matrices["K"], before_m["K"])


# ------------------------------------------------------------------------------------------------------------
# 6. JSON round trip (FitResult.to_json / FitResult.from_json, issue #6)
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@_settings(2)
@given(drawn=st.data(), method=st.sampled_from(["REML", "ML"]))
def test_json_round_trip_restores_everything(kind, drawn, method):
    spec = drawn.draw(specs((kind,)))
    formula, data, matrices = make_case(spec)
    fit = fit_or_none(spec, method)
    if fit is None:
        return
    text = fit.to_json()
    assert isinstance(text, str)
    json.loads(text)
    with warnings.catch_warnings():  # rebuilding the model repeats its design warnings (aliased columns)
        warnings.simplefilter("ignore", lmf.RankDeficiencyWarning)
        restored = lmf.FitResult.from_json(text, data=data, matrices=matrices)
    assert restored.formula == fit.formula and restored.method == fit.method
    assert np.array_equal(restored.theta, fit.theta)
    assert restored.loglik == fit.loglik
    assert restored.converged == fit.converged and restored.n_iter == fit.n_iter
    pd.testing.assert_frame_equal(restored.fixed_effects, fit.fixed_effects, check_exact=True)
    pd.testing.assert_frame_equal(restored.variance_components, fit.variance_components, check_exact=True)
    assert restored.random_effects.keys() == fit.random_effects.keys()
    for term in fit.random_effects:
        pd.testing.assert_frame_equal(restored.random_effects[term], fit.random_effects[term], check_exact=True)
    stored = lmf.FitResult.from_json(text)
    assert stored.formula == fit.formula and stored.method == fit.method
    assert stored.loglik == fit.loglik and np.array_equal(stored.theta, fit.theta)
    assert stored.converged == fit.converged and stored.n_iter == fit.n_iter
    pd.testing.assert_frame_equal(stored.fixed_effects, fit.fixed_effects, check_exact=True)
    pd.testing.assert_frame_equal(stored.variance_components, fit.variance_components, check_exact=True)
