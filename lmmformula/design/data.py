"""Validate the data frame and select the complete cases the model uses."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
from formulaic import Formula

from ..errors import DataError, FormulaSyntaxError, ModelSpecificationError, UnknownColumnError
from ..formula.terms import ParsedFormula
from .fixed import to_formulaic

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


def _formula_variables(text: str, formula: str) -> set[str]:
    try:
        return set(Formula(to_formulaic(text)).required_variables)
    except Exception as exc:
        raise FormulaSyntaxError(f"formulaic cannot read '{text}': {exc}", formula) from None


def required_columns(parsed: ParsedFormula) -> list[str]:
    """All data columns named in the formula, response first."""
    cols: set[str] = set()
    cols |= _formula_variables(f"{parsed.response} ~ {parsed.fixed}", parsed.formula)
    for term in parsed.random:
        cols |= _formula_variables(term.expr, parsed.formula)
        cols |= {p.variable for p in term.group}
    if parsed.residual is not None:
        cols |= {p.variable for p in parsed.residual.parts}
    resp = _formula_variables(f"{parsed.response} ~ 1", parsed.formula)
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
    if not isinstance(data, pd.DataFrame):
        try:
            data = pd.DataFrame(data)
        except Exception:
            raise DataError(
                f"data must be a pandas DataFrame (or a dict of columns), got {type(data).__name__}"
            ) from None
    if data.shape[0] == 0:
        raise DataError("the data frame has no rows; pass the data the model should be fitted to")
    columns = required_columns(parsed)
    if re.search(r"\boffset\s*\(", parsed.formula):
        raise ModelSpecificationError(
            "offset() terms are not supported; subtract the offset from the response instead"
        )
    duplicated = [c for c in columns if (data.columns == c).sum() > 1]
    if duplicated:
        raise DataError(
            f"the data has more than one column named '{duplicated[0]}'; rename the duplicates"
        )
    missing = [c for c in columns if c not in data.columns]
    if missing:
        c = missing[0]
        close = difflib.get_close_matches(c, [str(x) for x in data.columns], n=3)
        hint = f"; did you mean {', '.join(repr(x) for x in close)}?" if close else (
            f"; the data has columns {', '.join(map(repr, list(data.columns)[:12]))}")
        raise UnknownColumnError(f"column '{c}' named in the formula is not in the data{hint}")
    # formulaic does not report variables inside some transforms (``poly(x, 2)``): keep every data column named
    # in the formula as a variable (an identifier not followed by a call's parenthesis)
    named = re.findall(r"(?<![\w.])([A-Za-z_][\w.]*)(?![\w.]*\s*\()", parsed.formula)
    columns = columns + [c for c in dict.fromkeys(named) if c in data.columns and c not in columns]
    if "C" in columns:
        raise DataError(
            "a column named 'C' cannot be used: formulaic reserves C() for categorical coding (C(x)) and misreads "
            "the column; rename it, e.g. data.rename(columns={'C': 'C_'}), and use the new name in the formula")
    frame = data.loc[:, columns]
    for c in columns:
        col = frame[c]
        if (pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
                and not pd.api.types.is_complex_dtype(col)):
            vals = col.to_numpy(dtype=float, na_value=np.nan)
            if np.isinf(vals).any():
                where = frame.index[np.isinf(vals)][0]
                raise DataError(
                    f"column '{c}' has an infinite value (row {where!r}); replace it with NaN to drop the row "
                    "or with a finite value"
                )
        if col.isna().all():
            raise DataError(f"column '{c}' has only missing values; check the column or drop it from the formula")
    complete = ~frame.isna().any(axis=1).to_numpy()
    if not complete.any():
        raise DataError(
            "no row is complete in all of the columns " + ", ".join(map(repr, columns)) + "; check for missing values"
        )
    kept = frame if complete.all() else frame.loc[complete].copy()  # frame is already a new object
    return ModelFrame(data=kept, n_dropped=int((~complete).sum()))
