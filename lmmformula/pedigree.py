"""The inverse numerator relationship matrix ``A^-1`` from a pedigree, built directly and sparse.

With animals ordered so that parents precede their offspring, ``A = T D T'`` where ``T`` is unit lower
triangular and ``D`` holds the Mendelian-sampling variances

    d_i = 1/2 - (F_s + F_d) / 4     (both parents known)
    d_i = 3/4 - F_p / 4             (one parent p known)
    d_i = 1                         (no parent known),

so ``A^-1 = T^-T D^-1 T^-1`` has, per animal with ``alpha = 1 / d_i``, the contributions ``alpha`` at (i, i),
``-alpha/2`` between i and each known parent and ``alpha/4`` between each pair of known parents
(Henderson 1976; Quaas 1976).  Inbreeding coefficients ``F`` come from the algorithm of Meuwissen & Luo
(1992): ``F_i + 1 = sum_j L_ij^2 d_j`` over the ancestors j of i, traced from the youngest, with ``L`` the
rows of ``T``.  ``log|A| = sum_i log d_i``.
"""

from __future__ import annotations

import heapq

import numpy as np
import pandas as pd
import scipy.sparse as sp
from numba import njit

from .covariance.known import KnownMatrix
from .errors import DataError

__all__ = ["inverse_relationship", "order_pedigree"]

_UNKNOWN = {"", "0", "NA", "nan", "None", "<NA>", "."}


def _is_unknown(value) -> bool:
    if value is None or (isinstance(value, (float, np.floating)) and np.isnan(value)):
        return True
    return _id(value) in _UNKNOWN


def _id(value) -> str:
    """Identifier as text; integral floats (a column made float by a missing value) lose their '.0'."""
    if isinstance(value, (float, np.floating)) and np.isfinite(value) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def order_pedigree(pedigree: pd.DataFrame, animal: str = "animal", sire: str = "sire",
                   dam: str = "dam") -> tuple[list[str], np.ndarray, np.ndarray]:
    """Labels ordered parents-first, and 1-based parent indices (0 = unknown).

    Parents that are not listed as animals are added as founders.

    Raises
    ------
    DataError
        Missing columns, duplicated animals, an animal that is its own ancestor.
    """
    if not isinstance(pedigree, pd.DataFrame):
        raise DataError(f"the pedigree must be a pandas DataFrame, got {type(pedigree).__name__}; pass "
                        "pd.DataFrame(rows, columns=['animal', 'sire', 'dam'])")
    for col in (animal, sire, dam):
        if col not in pedigree.columns:
            raise DataError(f"the pedigree has no column '{col}'; pass animal=, sire=, dam= with its column names")
    if pedigree.shape[0] == 0:
        raise DataError("the pedigree has no rows; pass one row per animal (animal, sire, dam)")
    bad = [a for a in pedigree[animal] if _is_unknown(a)]
    if bad:
        raise DataError(f"the pedigree has an animal with a missing or zero identifier ({bad[0]!r}); "
                        "every row needs an animal id")
    ids = [_id(a) for a in pedigree[animal]]
    if len(set(ids)) != len(ids):
        dup = pd.Series(ids)[pd.Series(ids).duplicated()].iloc[0]
        raise DataError(f"animal {dup!r} appears more than once in the pedigree; keep one row per animal")
    parents = {}
    for a, s, d in zip(ids, pedigree[sire], pedigree[dam]):
        ps = None if _is_unknown(s) else _id(s)
        pd_ = None if _is_unknown(d) else _id(d)
        if a in (ps, pd_):
            raise DataError(f"animal {a!r} is listed as its own parent; correct its sire or dam (unknown: 0 or NA)")
        parents[a] = (ps, pd_)
    for s, d in list(parents.values()):
        for p in (s, d):
            if p is not None and p not in parents:
                parents[p] = (None, None)
    depth: dict[str, int] = {}
    for start in parents:
        stack = [start]
        on_path = set()
        while stack:
            a = stack[-1]
            if a in depth:
                stack.pop()
                continue
            on_path.add(a)
            pending = [p for p in parents[a] if p is not None and p not in depth]
            if any(p in on_path for p in pending):
                raise DataError(f"the pedigree has a loop through animal {a!r} (an animal is its own ancestor); "
                                "check the parents of the animals in the loop")
            if pending:
                stack.extend(pending)
                continue
            depth[a] = 1 + max([depth[p] for p in parents[a] if p is not None], default=-1)
            on_path.discard(a)
            stack.pop()
    order = sorted(parents, key=lambda a: (depth[a], a))
    index = {a: i + 1 for i, a in enumerate(order)}
    s_idx = np.array([index[parents[a][0]] if parents[a][0] else 0 for a in order], dtype=np.int64)
    d_idx = np.array([index[parents[a][1]] if parents[a][1] else 0 for a in order], dtype=np.int64)
    return order, s_idx, d_idx


@njit(cache=True)
def _inbreeding(sire, dam):
    """Meuwissen & Luo (1992). ``sire``/``dam`` are 1-based with 0 unknown; returns F and d."""
    n = sire.shape[0]
    F = np.zeros(n + 1)
    F[0] = -1.0
    d = np.zeros(n + 1)
    L = np.zeros(n + 1)
    for i in range(1, n + 1):
        s = sire[i - 1]
        m = dam[i - 1]
        d[i] = 0.5 - 0.25 * (F[s] + F[m])
        if s == 0 or m == 0:
            F[i] = 0.0
            continue
        if i > 1 and sire[i - 2] == s and dam[i - 2] == m:
            F[i] = F[i - 1]
            continue
        heap = [-i]
        L[i] = 1.0
        seen = [i]
        r = 0.0
        last = -1
        while len(heap) > 0:
            j = -heapq.heappop(heap)
            if j == last:
                continue
            last = j
            sj = sire[j - 1]
            dj = dam[j - 1]
            if sj > 0:
                if L[sj] == 0.0:
                    seen.append(sj)
                L[sj] += 0.5 * L[j]
                heapq.heappush(heap, -sj)
            if dj > 0:
                if L[dj] == 0.0:
                    seen.append(dj)
                L[dj] += 0.5 * L[j]
                heapq.heappush(heap, -dj)
            r += L[j] * L[j] * d[j]
        F[i] = r - 1.0
        for k in seen:
            L[k] = 0.0
    return F[1:], d[1:]


def inverse_relationship(pedigree: pd.DataFrame, animal: str = "animal", sire: str = "sire",
                         dam: str = "dam") -> KnownMatrix:
    """Sparse ``A^-1`` of a pedigree, labelled by animal, for ``matrices={"A": ...}``.

    Parameters
    ----------
    pedigree : pandas.DataFrame
        One row per animal; unknown parents as missing, ``0``, ``"0"`` or ``"NA"``.
    animal, sire, dam : str
        Column names.

    Returns
    -------
    KnownMatrix
        ``precision`` is ``A^-1``, ``diagonal`` is ``1 + F`` (inbreeding), ``labels`` are in
        parents-first order.
    """
    order, s, m = order_pedigree(pedigree, animal, sire, dam)
    F, d = _inbreeding(s, m)
    n = len(order)
    alpha = 1.0 / d
    i = np.arange(n)
    rows, cols, vals = [i], [i], [alpha]
    for p in (s, m):
        known = p > 0
        pi = p[known] - 1
        rows += [i[known], pi]
        cols += [pi, i[known]]
        vals += [-0.5 * alpha[known], -0.5 * alpha[known]]
    for p in (s, m):
        for q in (s, m):
            both = (p > 0) & (q > 0)
            rows.append(p[both] - 1)
            cols.append(q[both] - 1)
            vals.append(0.25 * alpha[both])
    Ainv = sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    Ainv.sum_duplicates()
    return KnownMatrix(labels=tuple(order), precision=Ainv, logdet=float(np.log(d).sum()), diagonal=1.0 + F)
