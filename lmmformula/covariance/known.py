"""Known covariance matrices among the levels of a grouping: relationship matrices (``vm``).

A term ``(expr | vm(animal, "A"))`` has effects ``u ~ N(0, K (x) Sigma)`` where ``K`` is the known
matrix passed as ``matrices={"A": ...}``.  The engine needs the precision ``K^-1`` (sparse for a
pedigree, Henderson 1976) and ``log|K|``.  Levels are the matrix's labels, so animals without records
(ancestors) get effects too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.linalg
import scipy.sparse as sp

from ..errors import DataError

__all__ = ["KnownMatrix", "known_matrix"]


def _level(value) -> str:
    """Level label as the design writes it (integral floats without '.0')."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


@dataclass(frozen=True, eq=False)
class KnownMatrix:
    """A labelled known covariance matrix, held through its precision.

    Attributes
    ----------
    labels : tuple of str
    precision : scipy.sparse.csc_matrix
        ``K^-1``.
    logdet : float
        ``log|K|``.
    diagonal : ndarray
        ``diag(K)`` (``1 + F`` for a numerator relationship matrix).
    """

    labels: tuple[str, ...]
    precision: sp.csc_matrix
    logdet: float
    diagonal: np.ndarray

    @classmethod
    def from_precision(cls, precision, labels, diagonal=None) -> "KnownMatrix":
        """From a sparse (or dense) precision ``K^-1``, e.g. from :func:`lmmformula.pedigree.inverse_relationship`."""
        P = sp.csc_matrix(precision, dtype=float)
        labels = tuple(_level(x) for x in labels)
        if len(set(labels)) != len(labels):
            raise DataError("the known matrix has duplicated labels; each level needs one row and column")
        if P.shape != (len(labels), len(labels)):
            raise DataError(f"precision matrix of shape {P.shape} does not match {len(labels)} labels")
        from ..engine.factor import NotPositiveDefinite, make_factor

        try:
            fac = make_factor(P.tocsc(), dense_below=2000)
            logdet = -fac.logdet()
            if diagonal is None:
                S = fac.selected_inverse()
                diagonal = np.asarray(S.diagonal() if sp.issparse(S) else np.diag(S))
        except NotPositiveDefinite:
            raise DataError("the known matrix is not positive definite; check it (or add a small ridge)") from None
        return cls(labels=labels, precision=P, logdet=float(logdet), diagonal=np.asarray(diagonal, dtype=float))

    @classmethod
    def from_covariance(cls, K: pd.DataFrame) -> "KnownMatrix":
        """From a labelled dense covariance (relationship matrix, GRM); inverted densely."""
        labels = tuple(_level(x) for x in K.index)
        if len(set(labels)) != len(labels):
            raise DataError("the known matrix has duplicated labels; each level needs one row and column")
        if [_level(x) for x in K.columns] != list(labels):
            raise DataError("a known matrix must have the same labels on its rows and columns, in the same order")
        M = K.to_numpy(dtype=float)
        if not np.allclose(M, M.T, atol=1e-10 * max(1.0, np.abs(M).max())):
            raise DataError("the known matrix is not symmetric")
        try:
            chol = scipy.linalg.cholesky(M, lower=True)
        except np.linalg.LinAlgError:
            raise DataError(
                "the known matrix is not positive definite (e.g. a genomic relationship matrix of rank < n); "
                "blend it with the identity or the pedigree matrix, e.g. 0.99 * G + 0.01 * I"
            ) from None
        inv = scipy.linalg.cho_solve((chol, True), np.eye(M.shape[0]))
        P = sp.csc_matrix(0.5 * (inv + inv.T))
        return cls(labels=labels, precision=P, logdet=float(2 * np.log(np.diag(chol)).sum()),
                   diagonal=np.diag(M).copy())


def known_matrix(value, name: str) -> KnownMatrix:
    """Normalise what a user passed in ``matrices={name: value}``."""
    if isinstance(value, KnownMatrix):
        return value
    if isinstance(value, pd.DataFrame):
        return KnownMatrix.from_covariance(value)
    raise DataError(
        f"matrices[{name!r}] must be a labelled pandas DataFrame (a covariance such as A or a GRM) or the "
        f"result of lmmformula.pedigree.inverse_relationship(); got {type(value).__name__}"
    )
