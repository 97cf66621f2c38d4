"""The fixed-effect design X and the response y, through formulaic.

Treatment contrasts with the first sorted level as reference (formulaic's and
R's default).  Columns that are linearly dependent on earlier columns are
dropped and named in a :class:`RankDeficiencyWarning`, as lme4 does.
"""

from __future__ import annotations

import copy
import functools
import numbers
import re
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import pandas as pd
from formulaic import Formula, ModelSpec

from ..errors import DataError, FormulaSyntaxError, RankDeficiencyWarning
from ..sparsepattern import sparse_if_mostly_zero

__all__ = ["FixedDesign", "build_fixed", "r_style_name", "to_formulaic", "model_matrix_for"]

_R_FACTOR = re.compile(r"\bfactor\(")


def to_formulaic(text: str) -> str:
    """Rewrite R idioms formulaic does not know: ``factor(x)`` becomes ``C(x)``."""
    return _R_FACTOR.sub("C(", text)


@functools.lru_cache(maxsize=256)
def formulaic_formula(text: str) -> Formula:
    """formulaic's parse of ``text`` (R idioms rewritten), kept: parsing costs part of a millisecond, formulas
    repeat, and building model matrices does not change a Formula."""
    return Formula(to_formulaic(text))


def _restore_r_calls(name: str, original: str) -> str:
    """Name columns of ``factor(x)`` as R does (``factor(x)2``): only the calls the user wrote as ``factor``."""
    for arg in _factor_arguments(original):
        name = name.replace(f"C({arg})", f"factor({arg})")
    return name


@functools.lru_cache(maxsize=256)
def _factor_arguments(original: str) -> tuple[str, ...]:
    """The arguments of the ``factor(...)`` calls written in ``original``."""
    return tuple(re.findall(r"\bfactor\(([^()]*)\)", original))

_TREATMENT = re.compile(r"\[T\.([^\]]*)\]")
_FULL = re.compile(r"\[([^\]]*)\]")


@functools.lru_cache(maxsize=65536)
def r_style_name(name: str) -> str:
    """Translate a formulaic column name to R's convention.

    ``Intercept`` -> ``(Intercept)``, ``Sex[T.Male]`` -> ``SexMale``,
    ``a[b]`` (full dummy coding) -> ``ab``; other names are unchanged.
    """
    if name == "Intercept":
        return "(Intercept)"
    parts = []
    for piece in name.split(":"):
        piece = _TREATMENT.sub(lambda m: m.group(1), piece)
        piece = _FULL.sub(lambda m: m.group(1), piece)
        parts.append(piece)
    return ":".join(parts)


@dataclass(frozen=True)
class FixedDesign:
    """Response and fixed-effect design.

    Attributes
    ----------
    y : ndarray, shape (n,)
    X : ndarray, shape (n, p)
        Full-rank design (aliased columns removed).
    names : tuple of str
        Column names of ``X`` in R's convention.
    spec : formulaic.ModelSpec
        The right-hand-side spec, kept to build X for new data.
    kept : ndarray of int
        Positions of the kept columns in the spec's full column list.
    dropped : tuple of str
        Names of aliased columns that were dropped.
    response : str
    X_sparse : scipy.sparse.csc_matrix or None
        ``X`` as a sparse matrix when it is mostly zeros (indicator columns of a factor with many levels).
    """

    y: np.ndarray
    X: np.ndarray
    names: tuple[str, ...]
    spec: ModelSpec
    kept: np.ndarray
    dropped: tuple[str, ...]
    response: str
    X_sparse: sp.csc_matrix | None = None


def build_fixed(frame: pd.DataFrame, response: str, fixed: str, formula: str) -> FixedDesign:
    """Build ``y`` and ``X`` for ``response ~ fixed`` on the complete cases.

    Raises
    ------
    DataError
        Non-numeric or constant response, or a transform producing missing values.
    """
    _check_response_column(frame, response)
    _check_fixed_columns(frame, fixed)
    response_is_column = response in frame.columns  # read directly (numeric, checked above): formulaic builds only X
    try:
        with np.errstate(all="ignore"):
            mm = formulaic_formula(fixed if response_is_column else f"{response} ~ {fixed}").get_model_matrix(
                frame, na_action="raise", output="numpy")
    except Exception as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if any(w in msg.lower() for w in ("missing", "nan", "null")):
            raise DataError(
                f"evaluating the fixed part '{response} ~ {fixed}' produced missing values ({msg}); "
                "check transforms such as log() of non-positive values"
            ) from None
        raise FormulaSyntaxError(f"formulaic cannot build the fixed part '{fixed}': {msg}", formula) from None
    lhs, rhs = (frame[response].to_numpy(dtype=float, na_value=np.nan)[:, None], mm) if response_is_column \
        else (mm.lhs, mm.rhs)
    if lhs.shape[1] != 1:
        raise DataError(
            f"the response '{response}' must be one numeric column, got {lhs.shape[1]} columns; "
            "convert it with pd.to_numeric or choose a numeric response"
        )
    if np.iscomplexobj(np.asarray(lhs)):
        raise DataError(f"the response '{response}' is complex; a linear mixed model needs a real response")
    y = np.asarray(lhs, dtype=float).ravel()
    if not np.all(np.isfinite(y)):
        bad = int(np.flatnonzero(~np.isfinite(y))[0])
        raise DataError(
            f"the response '{response}' has non-finite values after transformation ({float(y[bad])!r} in row "
            f"{frame.index[bad]!r}); check transforms such as log() of zero or negative values, or drop those rows")
    if np.ptp(y) == 0:
        raise DataError(f"the response '{response}' is constant ({float(y[0])!r}); a variance cannot be estimated. "
                        "Check the response column and the rows used")
    _check_magnitude(y, f"the response '{response}'")
    spread = float(np.std(y))
    if spread < _TINY_LIMIT:
        raise DataError(f"the response '{response}' varies only by {spread:.3g}; its squared deviations underflow "
                        "double precision in the REML iterations: rescale it (e.g. multiply by a power of ten)")
    X = np.asarray(rhs, dtype=float)
    _check_single_levels(rhs.model_spec, fixed)
    if X.size and max(float(X.max()), -float(X.min())) > _SCALE_LIMIT:  # name the first offending column
        j = int(np.argmax(np.abs(X).max(axis=0) > _SCALE_LIMIT))
        _check_magnitude(X[:, j], f"the fixed-effect column '{r_style_name(str(rhs.model_spec.column_names[j]))}'")
    full_names = [str(c) for c in rhs.model_spec.column_names]
    sparse = sparse_if_mostly_zero(X)
    kept = _independent_columns(X, sparse)
    full_names = [_restore_r_calls(c, fixed) for c in full_names]
    kept_set = set(kept)
    dropped = tuple(r_style_name(full_names[j]) for j in range(X.shape[1]) if j not in kept_set)
    if dropped:
        warnings.warn(
            f"fixed-effect model matrix is rank deficient; dropping {len(dropped)} aliased column(s): "
            + ", ".join(dropped),
            RankDeficiencyWarning,
            stacklevel=3,
        )
    return FixedDesign(
        y=y,
        X=np.ascontiguousarray(X if len(kept) == X.shape[1] else X[:, kept]),
        names=tuple(r_style_name(full_names[j]) for j in kept),
        spec=rhs.model_spec,
        kept=np.asarray(kept, dtype=int),
        dropped=dropped,
        response=response,
        X_sparse=None if sparse is None else (sparse if len(kept) == X.shape[1] else sparse[:, kept]),
    )


_TINY_LIMIT = 1e-60  # a response spread below this underflows in sums of squares of its deviations
_SCALE_LIMIT = 1e100  # squares and cross-products of larger values overflow double precision


def _check_magnitude(values: np.ndarray, what: str) -> None:
    """Refuse values whose cross-products overflow (the REML iterations would produce inf and NaN)."""
    big = float(np.max(np.abs(values))) if values.size else 0.0
    if big > _SCALE_LIMIT:
        raise DataError(f"{what} has values as large as {big:.3g}, whose squares overflow double precision; "
                        "rescale it (e.g. divide by a power of ten)")


def _is_datetime_like(col: pd.Series) -> bool:
    return (pd.api.types.is_datetime64_any_dtype(col) or pd.api.types.is_timedelta64_dtype(col)
            or isinstance(col.dtype, pd.PeriodDtype))


def _check_response_column(frame: pd.DataFrame, response: str) -> None:
    """A response that is a column must be numeric (checked before formulaic, which fails on dates)."""
    if response not in frame.columns:
        return
    raw = frame[response]
    if _is_datetime_like(raw) or not pd.api.types.is_numeric_dtype(raw) or pd.api.types.is_bool_dtype(raw) \
            or pd.api.types.is_complex_dtype(raw):
        raise DataError(
            f"the response '{response}' must be one numeric column, got {raw.dtype}; "
            "convert it with pd.to_numeric or choose a numeric response"
        )


def _check_fixed_columns(frame: pd.DataFrame, fixed: str) -> None:
    """Dates in the fixed part, and numbers stored as ``object`` written as covariates, are refused with the fix.

    formulaic multiplies a datetime column by its coefficient (a numpy error), and treats an ``object`` column as a
    factor even when it holds numbers (one coefficient per distinct value).
    """
    for name in frame.columns:
        if not re.search(r"(?<![\w.])" + re.escape(str(name)) + r"(?![\w.])", fixed):
            continue
        col = frame[name]
        if _is_datetime_like(col):
            raise DataError(
                f"column '{name}' in the fixed part is {col.dtype}; convert it to a number (days since the "
                f"start: (data['{name}'] - data['{name}'].min()).dt.days; a timedelta: data['{name}'].dt.days), or to labels with .astype(str) for a factor")
        wrapped = re.search(r"\b(C|factor|as\.factor)\(\s*" + re.escape(str(name)) + r"\b", fixed)
        if col.dtype == object and not wrapped and _measurements(col):
            raise DataError(
                f"column '{name}' holds numbers stored with dtype object, which would make it a factor with "
                f"{col.nunique()} levels; convert it with pd.to_numeric(data['{name}']) for a covariate, or write "
                f"factor({name}) for a factor")


def _measurements(col: pd.Series) -> bool:
    """An ``object`` column of numbers with a fractional value: a measurement, not labels (whole numbers stored
    as objects may be identifiers, which formulaic rightly treats as a factor)."""
    if not col.size or not all(isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) for v in col):
        return False
    return any(not float(v).is_integer() for v in col)


def _check_single_levels(spec, fixed: str) -> None:
    """A factor of the fixed part with one level has no contrast (formulaic silently gives it no column)."""
    for factor, state in spec.factor_contrasts.items():
        levels = list(getattr(state, "levels", []) or [])
        if len(levels) < 2:
            raise DataError(
                f"the factor '{_restore_r_calls(str(factor), fixed)}' in the fixed part has {len(levels)} level ({', '.join(map(repr, levels))}) "
                "in the rows used, so it has no effect to estimate; drop it from the formula or check the data "
                "(rows with a missing value in a used column are dropped)")


def _independent_columns(X: np.ndarray, sparse: sp.csc_matrix | None = None, tol: float = 1e-7) -> list[int]:
    """Keep each column that is not in the span of the columns kept before it.

    A column is aliased when its distance from the span of the earlier kept
    columns, relative to its norm, is below ``tol`` (so, as in lme4, the later
    of two aliased columns is the one dropped).  ``sparse`` is ``X`` as a sparse matrix when it is mostly zeros.
    """
    n, p = X.shape
    if p == 0:
        return []
    XtX = (sparse.T @ sparse).toarray() if sparse is not None else None  # indicator columns: formed sparsely
    norms = np.sqrt(np.diag(XtX)) if XtX is not None else np.linalg.norm(X, axis=0)
    if p <= n and np.all(norms > 0):
        XtX = X.T @ X if XtX is None else XtX
        # fastest path: the Cholesky factor of X'X has R_jj = the distance of column j from the span of the
        # earlier ones, accurate to ~eps cond(X)^2 only, so it is trusted only when every column is clearly
        # independent (R_jj > 1e-4 |x_j|); LAPACK on the symmetric matrix's Fortran view (the same diagonal)
        chol, info = scipy.linalg.lapack.dpotrf(XtX.T, lower=True)
        r = np.diag(chol)
        if info == 0 and np.all(r > 1e-4 * norms):
            return list(range(p))
    if p <= n:  # fast path: an unpivoted QR with no small |R_jj| means every column is independent
        r = np.abs(np.diag(scipy.linalg.qr(X, mode="r")[0]))
        if np.all(r > tol * norms):
            return list(range(p))
    # otherwise Gram-Schmidt (twice) against the columns kept so far: an aliased column must not take a
    # direction that a later, independent column needs
    Q = np.empty((n, min(n, p)))
    kept: list[int] = []
    for j in range(p):
        if norms[j] == 0 or len(kept) == Q.shape[1]:
            continue
        Qk = Q[:, :len(kept)]
        resid = X[:, j] - Qk @ (Qk.T @ X[:, j])
        resid -= Qk @ (Qk.T @ resid)
        r = np.linalg.norm(resid)
        if r > tol * norms[j]:
            Q[:, len(kept)] = resid / r
            kept.append(j)
    return kept


def _check_new_types(spec, data: pd.DataFrame, what: str) -> None:
    """Columns of newdata must be of the kind the fit saw: numbers where the fit had a covariate, finite."""
    factors = {v for f in spec.factor_contrasts for v in spec.factor_variables.get(f, ())}
    for v in sorted(spec.required_variables):
        if v not in data.columns or v in factors:
            continue
        col = data[v]
        if not pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
            raise DataError(f"column '{v}' of newdata is {col.dtype}, but the fit used it as a numeric covariate in "
                            f"the {what} part; convert it with pd.to_numeric(newdata['{v}'])")
        vals = col.to_numpy(dtype=float, na_value=np.nan)
        if np.isinf(vals).any():
            raise DataError(f"column '{v}' of newdata has an infinite value (row "
                            f"{data.index[np.isinf(vals)][0]!r}); replace it with a finite value or drop the row")


def model_matrix_for(spec, data: pd.DataFrame, what: str) -> np.ndarray:
    """``spec`` applied to new data; a factor level the fit never saw is an error (formulaic would give NaN).

    formulaic updates a spec's encoder state when it meets unexpected data, so a copy is used: bad newdata must
    not change later results of the fit (``predict_means``, ``anova``).
    """
    _check_new_types(spec, data, what)
    spec = copy.deepcopy(spec)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            M = np.asarray(spec.get_model_matrix(data, na_action="raise", output="numpy"), dtype=float)
        except Exception as exc:
            raise DataError(f"cannot build the {what} design for newdata ({str(exc).splitlines()[0][:200]}); "
                            "give newdata the columns and types of the data the model was fitted to") from None
    unseen = [str(w.message).split(":", 1)[-1].split(".")[0].strip() for w in caught
              if "outside of the nominated levels" in str(w.message)]
    if unseen or not np.all(np.isfinite(M)):
        raise DataError(f"newdata has factor levels the fit never saw ({'; '.join(unseen) or 'non-finite values'})"
                        f" in the {what} part; a fixed factor needs levels seen in the fit")
    return M
