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
    def from_covariance(cls, K: pd.DataFrame, name: str = "") -> "KnownMatrix":
        """From a labelled dense covariance (relationship matrix, GRM); inverted densely.

        Raises
        ------
        DataError
            Not square, labels that differ between rows and columns or repeat, non-numeric or missing entries,
            not symmetric, not positive definite; the message names the matrix and the offending entry.
        """
        what = f"the known matrix {name!r}" if name else "the known matrix"
        if K.shape[0] != K.shape[1]:
            raise DataError(f"{what} has shape {K.shape}; it must be square, with one row and one column per level")
        labels = tuple(_level(x) for x in K.index)
        if len(set(labels)) != len(labels):
            dup = pd.Series(labels)[pd.Series(labels).duplicated()].iloc[0]
            raise DataError(f"{what} has duplicated labels ({dup!r} appears more than once); each level needs "
                            "one row and column")
        if [_level(x) for x in K.columns] != list(labels):
            raise DataError(f"{what} must have the same labels on its rows and columns, in the same order; "
                            "reorder it with K.loc[labels, labels]")
        try:
            M = K.to_numpy(dtype=float)
        except (TypeError, ValueError):
            bad = next(c for c in K.columns if not pd.api.types.is_numeric_dtype(K[c]))
            raise DataError(f"{what} has non-numeric entries (column {_level(bad)!r} is {K[bad].dtype}); convert "
                            "it with K.astype(float)") from None
        if not np.all(np.isfinite(M)):
            i, j = np.argwhere(~np.isfinite(M))[0]
            raise DataError(f"{what} has a missing or infinite entry ({labels[i]!r}, {labels[j]!r}); every entry "
                            "must be a finite number")
        asym = np.abs(M - M.T)
        if asym.max() > 1e-10 * max(1.0, np.abs(M).max()):
            i, j = np.unravel_index(np.argmax(asym), asym.shape)
            raise DataError(f"{what} is not symmetric (entry ({labels[i]!r}, {labels[j]!r}) is {M[i, j]:g}, "
                            f"({labels[j]!r}, {labels[i]!r}) is {M[j, i]:g}); symmetrise it, e.g. (K + K.T) / 2")
        try:
            chol = scipy.linalg.cholesky(M, lower=True)
        except np.linalg.LinAlgError:
            low = float(np.linalg.eigvalsh(M)[0])
            raise DataError(
                f"{what} is not positive definite (smallest eigenvalue {low:.3g}), as a genomic relationship "
                "matrix of rank < n is; blend it with the identity or the pedigree matrix, e.g. 0.99 * G + 0.01 * I"
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
        return KnownMatrix.from_covariance(value, name)
    hint = (" (an unlabelled array: wrap it as pd.DataFrame(K, index=levels, columns=levels))"
            if isinstance(value, np.ndarray) or sp.issparse(value) else "")
    raise DataError(
        f"matrices[{name!r}] must be a labelled pandas DataFrame (a covariance such as A or a GRM) or the "
        f"result of lmmformula.pedigree.inverse_relationship(); got {type(value).__name__}{hint}"
    )
