"""Can the data identify a random term's covariance?  Checks run while the design is built.

A term ``(x | g)`` has covariance ``S`` among its ``m`` columns; ``S`` is identifiable iff no ``S != 0`` gives
``X_l S X_l' = 0`` in every level ``l`` (``X_l`` the term's rows of level ``l``).  Two plain terms of one grouping
that give the same column a random effect are not identifiable either.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from ..errors import DataError, ModelSpecificationError

if TYPE_CHECKING:  # types only: random.py imports this module
    from ..formula.terms import RandomTerm
    from .random import GroupingFactor, RandomBlock

__all__ = ["check_identifiable", "check_overlapping_terms", "IDENTIFIABILITY_MAX_COLUMNS"]


def _plain(block: RandomBlock) -> bool:
    return block.known is None and block.grid is None and block.structure is None


def check_overlapping_terms(blocks: list[RandomBlock]) -> None:
    """Two plain terms of one grouping may not give the same column a random effect (e.g. ``(1 | g) + (1 | g)``):
    the two variances would only be identified through their sum."""
    for i, a in enumerate(blocks):
        for b in blocks[i + 1:]:
            if not (_plain(a) and _plain(b)):
                continue
            if {p.variable for p in a.term.group} != {p.variable for p in b.term.group}:
                continue
            shared = [c for c in a.columns if c in b.columns]
            if shared:
                raise ModelSpecificationError(
                    f"the random terms '({a.term.expr} | {a.term.group_name})' and '({b.term.expr} | "
                    f"{b.term.group_name})' both give {', '.join(map(repr, shared))} a random effect per level of "
                    f"'{a.term.group_name}', so their variances are not separately identifiable; keep each column "
                    "in one term only (e.g. '(1 + x | g)', or '(1 | g) + (0 + x | g)' for uncorrelated effects)")


def _level_gram(factor: GroupingFactor, Xk: np.ndarray) -> np.ndarray:
    """Per-level ``X_l'X_l`` of the term's (column-scaled) model matrix, shape ``(levels, m * m)``; one column
    pair at a time (memory ``O(n)``, no ``n x m x m`` array)."""
    n, m = Xk.shape
    scale = np.sqrt(np.mean(Xk ** 2, axis=0))
    Xs = Xk / np.where(scale > 0, scale, 1.0)
    indicator = sp.csr_matrix((np.ones(n), (factor.codes, np.arange(n))), shape=(factor.n_levels, n))
    G = np.empty((factor.n_levels, m * m))
    for a in range(m):
        for b in range(a, m):
            G[:, a * m + b] = G[:, b * m + a] = indicator @ (Xs[:, a] * Xs[:, b])
    return G


def _unidentified_direction(G: np.ndarray, m: int, correlated: bool) -> np.ndarray | None:
    """A covariance matrix ``S != 0`` with ``X_l S X_l' = 0`` in every level (not identifiable), else None.

    ``S`` is identifiable iff ``sum_l tr(G_l S G_l S) > 0`` for every symmetric (diagonal, for ``||``) ``S != 0``,
    with ``G_l = X_l'X_l``: the quadratic form ``sum_l G_l (x) G_l`` restricted to those matrices."""
    T = (G.T @ G).reshape(m, m, m, m).transpose(0, 2, 1, 3).reshape(m * m, m * m)  # sum_l kron(G_l, G_l)
    pairs = [(a, b) for a in range(m) for b in range(a, m)] if correlated else [(a, a) for a in range(m)]
    D = np.zeros((m * m, len(pairs)))
    for k, (a, b) in enumerate(pairs):
        D[a * m + b, k] = D[b * m + a, k] = 1.0
    w, V = np.linalg.eigh(D.T @ T @ D)
    if w[0] > 1e-9 * max(w[-1], 1e-300):
        return None
    S = np.zeros((m, m))
    for k, (a, b) in enumerate(pairs):
        S[a, b] = S[b, a] = V[k, 0]
    return S


IDENTIFIABILITY_MAX_COLUMNS = 8  # the check costs levels * m**4


def check_identifiable(factor: GroupingFactor, Xk: np.ndarray, columns: tuple[str, ...], term: RandomTerm,
                        group: str, correlated: bool) -> None:
    """Refuse a term whose covariance the design cannot identify, e.g. a random slope on a factor (or covariate)
    that does not vary within the levels of the grouping, next to a random intercept.

    Raises
    ------
    DataError
        Naming the columns involved and the fix.
    """
    m = Xk.shape[1]
    if m < 2 or m > IDENTIFIABILITY_MAX_COLUMNS:
        return
    basis, R = Xk, None
    if correlated:
        # an unstructured covariance is identifiable iff it is in any basis of the columns: orthonormalise them, so
        # that nearly collinear columns (a covariate around 1000 next to the intercept) are not mistaken for
        # dependent ones
        Q, R = np.linalg.qr(Xk)
        d = np.abs(np.diag(R))
        if d.min() > 1e-10 * d.max():
            basis = Q
        else:
            R = None
    G = _level_gram(factor, basis)
    S = _unidentified_direction(G, m, correlated)
    if S is None:
        return
    if R is not None:  # back to the coordinates of the columns: Xk = Q R, so Q S Q' = Xk R^-1 S R^-T Xk'
        T = scipy.linalg.solve_triangular(R, S)  # R^-1 S (R is m x m upper triangular)
        S = scipy.linalg.solve_triangular(R, T.T).T
    weight = np.abs(S).max(axis=1)
    involved = [columns[a] for a in range(m) if weight[a] > 1e-3 * weight.max()]
    counts = np.bincount(factor.codes, minlength=factor.n_levels)
    means = np.asarray(sp.csr_matrix((np.ones(len(factor.codes)), (factor.codes, np.arange(len(factor.codes)))),
                                     shape=(factor.n_levels, len(factor.codes))) @ Xk) / np.maximum(counts, 1)[:, None]
    within = np.abs(Xk - means[factor.codes]).max(axis=0)
    constant = [c for j, c in enumerate(columns) if c != "(Intercept)" and c in involved
                and within[j] <= 1e-10 * max(np.abs(Xk[:, j]).max(), 1e-300)]
    reason = (f"{', '.join(map(repr, constant))} {'does' if len(constant) == 1 else 'do'} not vary within the levels "
              f"of '{group}', so " if constant else "")
    diag_ok = correlated and _unidentified_direction(_level_gram(factor, Xk), m, False) is None
    fix = ("drop the columns that do not vary within levels from the random term (keep them in the fixed part)"
           + (f", or make the effects uncorrelated: '({term.expr} || {group})'" if diag_ok else ""))
    raise DataError(
        f"the covariance of the random term '({term.expr} | {group})' is not identifiable: {reason}the "
        f"(co)variances of {', '.join(map(repr, involved))} cannot be separated from the data; {fix}")
