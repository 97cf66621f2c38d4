"""Shared helpers: golden values from lme4 and the datasets they were computed on."""

from __future__ import annotations

import json
import pathlib

import os

import numpy as np
import pandas as pd
import pytest
from hypothesis import settings

# CI draws the same examples on every run (a red build is reproducible); HYPOTHESIS_PROFILE=explore draws new
# examples each run, for hunting defects locally.
settings.register_profile("ci", derandomize=True, database=None)
settings.register_profile("explore")
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

HERE = pathlib.Path(__file__).parent
GOLDEN = json.loads((HERE / "golden" / "lme4.json").read_text())
# Columns with numeric labels that lme4 treated as factors (see tests/golden/generate_lme4.R).
FACTOR_COLUMNS = {"ChickWeight.csv": ["Diet"], "cake.csv": ["temperature"]}


def load_data(name: str) -> pd.DataFrame:
    if not name.endswith(".csv"):
        from lmmformula.datasets import load

        return load(name)
    df = pd.read_csv(HERE / "data" / name)
    for col in FACTOR_COLUMNS.get(name, []):
        df[col] = df[col].astype("category")
    return df


def lme4_group_to_term(group: str, terms: list[str]) -> str:
    """lme4 writes the nested term of ``a/b`` as ``b:a``; ``||`` adds ``.1`` suffixes."""
    base = group.split(".")[0] if group not in terms else group
    if base in terms:
        return base
    rev = ":".join(reversed(base.split(":")))
    if rev in terms:
        return rev
    raise KeyError(group)


def level_to_ours(level: str, group: str, term: str) -> str:
    return level if group == term else ":".join(reversed(level.split(":")))


@pytest.fixture(scope="session")
def golden():
    return GOLDEN


def dense_V(fit) -> np.ndarray:
    """``V = Z G Z' + sigma^2 R~`` built densely from a fit's estimates (small models only)."""
    mme = fit.mme
    Z = mme.Z.toarray()
    G = np.zeros((mme.q, mme.q))
    for k, blk in enumerate(mme.blocks):
        s0, s1 = mme.offsets[k], mme.offsets[k + 1]
        K = np.eye(blk.n_levels) if blk.known is None else np.linalg.inv(blk.known.precision.toarray())
        G[s0:s1, s0:s1] = np.kron(K, fit.term_covariance(k))
    R = np.eye(mme.n)
    res = mme.residual
    if res is not None:
        C = np.ones((1, 1))
        rho = iter(fit.residual_correlations.values())
        for d in res.dimensions:
            i = np.arange(d.size)
            if d.kind == "ar1":
                C = np.kron(C, next(rho) ** np.abs(i[:, None] - i[None, :]))
            elif d.kind == "cs":
                C = np.kron(C, (1.0 - (r := next(rho))) * np.eye(d.size) + r)
            elif d.kind == "id":
                C = np.kron(C, np.eye(d.size))
            else:  # us, diag, toep: the dimension's own dense matrix (checked against nlme separately)
                C = np.kron(C, d.matrix(res.split(mme.eta(fit.theta))[res.dimensions.index(d)]))
        R = C[np.ix_(res.cells, res.cells)]
    return Z @ G @ Z.T + fit.sigma2 * R


def dense_loglik(fit) -> tuple[float, np.ndarray]:
    """The oracle: -1/2 [(n-p) log 2pi + log|V| + log|X'V^-1X| + y'Py] (REML) or
    -1/2 [n log 2pi + log|V| + (y-Xb)'V^-1(y-Xb)] (ML) from a dense V; returns (loglik, GLS b)."""
    return gaussian_loglik(dense_V(fit), fit.mme.X, fit.mme.y, fit.method)


def gaussian_loglik(V: np.ndarray, X: np.ndarray, y: np.ndarray, method: str) -> tuple[float, np.ndarray]:
    """REML or ML log-likelihood of ``y ~ N(X b, V)`` from a dense ``V``, and the GLS estimate ``b``."""
    Vi = np.linalg.inv(V)
    XtViX = X.T @ Vi @ X
    b = np.linalg.solve(XtViX, X.T @ Vi @ y)
    r = y - X @ b
    n, p = X.shape
    if method == "REML":
        ll = -0.5 * ((n - p) * np.log(2 * np.pi) + np.linalg.slogdet(V)[1] + np.linalg.slogdet(XtViX)[1]
                     + r @ Vi @ r)
    else:
        ll = -0.5 * (n * np.log(2 * np.pi) + np.linalg.slogdet(V)[1] + r @ Vi @ r)
    return ll, b
