"""Validate the data frame and select the complete cases the model uses."""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import DataError, FormulaSyntaxError, ModelSpecificationError, UnknownColumnError
from ..formula.registry import structure_hint
from ..formula.terms import ParsedFormula
from .fixed import formulaic_formula

__all__ = ["ModelFrame", "model_frame", "required_columns"]


@dataclass(frozen=True)
class ModelFrame:
    """The rows and columns a model uses.

    Attributes
    ----------
    data : pandas.DataFrame
        A copy of the complete cases, restricted to the used columns.
    n_dropped : int
        Rows of the input dropped because a used column was missing.
    """

    data: pd.DataFrame
    n_dropped: int


_ANSI = re.compile(r"\x1b\[[0-9;]*m|[\u29da\u29db]")


def formulaic_message(exc: Exception) -> str:
    """formulaic's message without its terminal colour codes and markers, first paragraph only."""
    text = _ANSI.sub("", str(exc)).strip() or type(exc).__name__
    return text.split("\n\n")[0].replace("insuffient", "insufficient")


@functools.lru_cache(maxsize=256)
def _parsed_variables(text: str) -> frozenset[str]:
    """The data columns formulaic reads for ``text`` (parsing costs milliseconds; formulas repeat)."""
    return frozenset(formulaic_formula(text).required_variables)


def _formula_variables(text: str, formula: str) -> set[str]:
    try:
        return set(_parsed_variables(text))
    except Exception as exc:
        raise FormulaSyntaxError(
            f"formulaic cannot read '{text}' ({formulaic_message(exc)}); check for a missing operator, an empty "
            "term or a name with spaces (quote it with backticks: `my x`)", formula) from None


def _as_frame(data: object) -> pd.DataFrame:
    """The caller's DataFrame, or a DataFrame of a mapping of columns; anything else is refused."""
    if isinstance(data, pd.DataFrame):
        return data
    if isinstance(data, Mapping):
        try:
            return pd.DataFrame(data)
        except Exception as exc:
            raise DataError(f"cannot make a DataFrame of the dict passed as data ({exc}); pass a pandas "
                            "DataFrame or a dict of equally long columns") from None
    hint = " with column names, e.g. pd.DataFrame(array, columns=['y', 'x', 'g'])" if isinstance(
        data, (np.ndarray, list, tuple)) else ""
    hint = " (a Series is one column; pass the whole DataFrame, or series.to_frame())" if isinstance(
        data, pd.Series) else hint
    raise DataError(
        f"data must be a pandas DataFrame (or a dict of columns), got {type(data).__name__}; pass a DataFrame{hint}"
    )


def _unknown_name_error(name: str, parsed: ParsedFormula, data: pd.DataFrame) -> UnknownColumnError:
    """A column the data lacks, with close names; a name written as a call is an unknown function."""
    if re.search(r"(?<![\w.])" + re.escape(name) + r"\s*\(", parsed.formula):
        hint = structure_hint(name)
        if hint:
            return UnknownColumnError(f"'{name}' in the formula is not a function lmmformula knows; {hint}")
        return UnknownColumnError(
            f"'{name}' in the formula is called as a function but is neither a data column nor a function "
            f"formulaic knows; check the spelling, or use numpy's (np.{name}(x)) or a transform such as I(...)")
    close = difflib.get_close_matches(name, [str(x) for x in data.columns], n=3)
    hint = f"; did you mean {', '.join(repr(x) for x in close)}?" if close else (
        f"; the data has columns {', '.join(map(repr, list(data.columns)[:12]))}")
    return UnknownColumnError(f"column '{name}' named in the formula is not in the data{hint}")


def _check_hashable(col: pd.Series, column: str) -> None:
    """Object columns must hold scalars (a column of lists cannot be a factor or a number)."""
    if col.dtype != object:
        return
    try:
        pd.unique(col)
    except TypeError:
        bad = next(v for v in col if isinstance(v, (list, dict, set, np.ndarray)))
        raise DataError(
            f"column '{column}' holds {type(bad).__name__} values (e.g. {bad!r}), not numbers or labels; "
            f"expand them into separate columns or convert them, e.g. data['{column}'].astype(str)") from None


def _plain_dtypes(frame: pd.DataFrame) -> pd.DataFrame:
    """Convert pandas' nullable extension dtypes (``Int64``, ``Float64``, ``boolean``, ``string``) of the complete
    cases to the numpy dtypes formulaic understands; ``frame`` is already a copy."""
    for c, dtype in frame.dtypes.items():
        if isinstance(dtype, pd.StringDtype) and getattr(dtype, "na_value", pd.NA) is pd.NA:  # "string", not "str"
            frame[c] = frame[c].astype(object)
        elif isinstance(dtype, pd.BooleanDtype):
            frame[c] = frame[c].astype(bool)
        elif isinstance(dtype, pd.api.extensions.ExtensionDtype) and pd.api.types.is_numeric_dtype(dtype) and \
                not isinstance(dtype, pd.SparseDtype):
            frame[c] = frame[c].to_numpy(dtype=dtype.numpy_dtype if hasattr(dtype, "numpy_dtype") else float)
    return frame


def _named(text: str) -> set[str]:
    """Identifiers in ``text`` that are not called and not keyword names: the variables of transforms that
    formulaic does not report (``scale(y)``, ``poly(y, 2)``, ``bs(y, 3)``)."""
    quoted = set(re.findall(r"`([^`]*)`", text))  # a backticked name is one name, e.g. `Reaction lag`
    unquoted = re.sub(r"(['\"`]).*?\1", " ", text)
    return quoted | set(re.findall(r"(?<![\w.])([A-Za-z_][\w.]*)(?![\w.]*\s*\()(?!\s*=)", unquoted))


def required_columns(parsed: ParsedFormula) -> list[str]:
    """All data columns named in the formula, response first.

    Raises
    ------
    ModelSpecificationError
        Every column of the response also appears on the right-hand side (``y ~ x + y``, ``log(y) ~ scale(y)``;
        R drops a term identical to the response with a warning).  A response of several columns, e.g. the
        change score ``I(post - pre) ~ pre``, may share some of them with the right-hand side.
    """
    cols: set[str] = set()
    cols |= _formula_variables(f"{parsed.response} ~ {parsed.fixed}", parsed.formula)
    places = {c: "the fixed part" for c in _formula_variables(f"1 ~ {parsed.fixed}", parsed.formula)
              | _named(parsed.fixed)}
    for term in parsed.random:
        used = _formula_variables(term.expr, parsed.formula) | {p.variable for p in term.group}
        cols |= used
        for c in used | _named(term.expr):
            places.setdefault(c, f"the random term {term.written}")
    if parsed.residual is not None:
        cols |= {p.variable for p in parsed.residual.parts}
        for p in parsed.residual.parts:
            places.setdefault(p.variable, f"the residual term '{parsed.residual.text}'")
    resp = _formula_variables(f"{parsed.response} ~ 1", parsed.formula)
    named = resp | _named(parsed.response)  # formulaic reports no variable for scale(y) ~ ...
    if named and named <= set(places):
        first = sorted(named)[0]
        raise ModelSpecificationError(
            f"the response column '{first}' also appears on the right-hand side (in {places[first]}); a "
            "response cannot explain itself: remove it from the right-hand side")
    return sorted(resp) + sorted(cols - resp)


def model_frame(data: object, parsed: ParsedFormula) -> ModelFrame:
    """Check the data and keep the rows complete in every used column.

    Parameters
    ----------
    data : pandas.DataFrame or mapping of columns
        The caller's data; it is never modified.
    parsed : ParsedFormula

    Raises
    ------
    UnknownColumnError
        A formula column is not in the data (the message suggests close names).
    DataError
        Empty data, infinite values, or no complete rows.
    """
    data = _as_frame(data)
    if data.shape[0] == 0:
        raise DataError("the data frame has no rows; pass the data the model should be fitted to")
    columns = required_columns(parsed)
    if re.search(r"\boffset\s*\(", parsed.formula):
        raise ModelSpecificationError(
            "offset() terms are not supported; subtract the offset from the response instead"
        )
    if re.search(r"(?<![\w.])weights\s*\(", parsed.formula) and "weights" not in data.columns:
        raise ModelSpecificationError(
            "weights() in the formula: observation weights are not supported in this version; fit the "
            "unweighted model, or scale the response and covariates by sqrt(weight) for known residual variances"
        )
    repeated = set(data.columns[data.columns.duplicated()]) if data.columns.has_duplicates else set()
    duplicated = [c for c in columns if c in repeated]
    if duplicated:
        raise DataError(
            f"the data has more than one column named '{duplicated[0]}'; rename the duplicates"
        )
    missing = [c for c in columns if c not in data.columns]
    if missing:
        raise _unknown_name_error(missing[0], parsed, data)
    # formulaic does not report variables inside some transforms (``poly(x, 2)``): keep every data column named
    # in the formula as a variable (an identifier not followed by a call's parenthesis)
    named = re.findall(r"(?<![\w.])([A-Za-z_][\w.]*)(?![\w.]*\s*\()", parsed.formula)
    columns = columns + [c for c in dict.fromkeys(named) if c in data.columns and c not in columns]
    if "C" in columns:
        raise DataError(
            "a column named 'C' cannot be used: formulaic reserves C() for categorical coding (C(x)) and misreads "
            "the column; rename it, e.g. data.rename(columns={'C': 'C_'}), and use the new name in the formula")
    complete = np.ones(data.shape[0], dtype=bool)
    for c in columns:
        col = data[c]
        if isinstance(col, pd.DataFrame):  # a first-level label of multi-level columns with non-empty sub-labels
            full = ", ".join(repr((c, t)) for t in list(col.columns)[:3])
            raise DataError(
                f"'{c}' is the first level of multi-level column labels ({full}), which a formula cannot name; "
                "flatten the labels, e.g. "
                "data.columns = ['_'.join(map(str, t)).rstrip('_') for t in data.columns]")
        _check_hashable(col, c)
        if (pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
                and not pd.api.types.is_complex_dtype(col)):
            vals = col.to_numpy(dtype=float, na_value=np.nan)
            if np.isinf(vals).any():
                where = data.index[np.isinf(vals)][0]
                raise DataError(
                    f"column '{c}' has an infinite value (row {where!r}); replace it with NaN to drop the row "
                    "or with a finite value"
                )
            present = ~np.isnan(vals)
        else:
            present = col.notna().to_numpy()
        if not present.any():
            raise DataError(f"column '{c}' has only missing values; check the column or drop it from the formula")
        complete &= present
    if not complete.any():
        raise DataError(
            "no row is complete in all of the columns " + ", ".join(map(repr, columns)) + "; check for missing values"
        )
    where = [data.columns.get_loc(c) for c in columns]  # positions; a mask or slice for multi-level labels
    frame = data.take(where, axis=1) if all(isinstance(i, int) for i in where) else data.loc[:, columns]
    kept = frame.copy() if complete.all() else frame.loc[complete].copy()  # never a view of the caller's data
    kept = _plain_dtypes(kept)
    return ModelFrame(data=kept, n_dropped=int((~complete).sum()))
