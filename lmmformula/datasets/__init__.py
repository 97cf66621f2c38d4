"""Small field-trial data sets shipped with lmmformula.

The trials come unchanged from the R package agridat 1.27 (MIT licence, see
``data/LICENSE-agridat.md``); the agridat help page of the same name documents
each one and cites its source.

==================  =====  ================================================================
name                plots  description
==================  =====  ================================================================
slatehall           150    spring wheat, 25 varieties, 6 reps, 15 rows x 10 cols
                           (Gilmour, Cullis & Verbyla 1997)
stroup_nin          242    Nebraska wheat 1989, 56 varieties, 4 reps, 11 x 22; fill plots NA
durban_rowcol       544    lettuce, 272 varieties, 2 reps, 16 rows x 34 beds
serpentine          330    wheat, 108 varieties, 3 reps, 22 rows x 15 cols
cullis_earlygen     670    unreplicated early-generation wheat, 532 lines + checks, 67 x 10
besag_met           1188   corn multi-environment trial, 64 varieties, 6 counties
==================  =====  ================================================================
"""

from __future__ import annotations

import pathlib

import pandas as pd

from ..errors import DataError

__all__ = ["load", "available"]

_FILES = {
    "slatehall": "gilmour.slatehall.txt",
    "stroup_nin": "stroup.nin.txt",
    "durban_rowcol": "durban.rowcol.txt",
    "serpentine": "gilmour.serpentine.txt",
    "cullis_earlygen": "cullis.earlygen.txt",
    "besag_met": "besag.met.txt",
}
_DIR = pathlib.Path(__file__).parent / "data"


def available() -> list[str]:
    """Names accepted by :func:`load`."""
    return sorted(_FILES)


def load(name: str) -> pd.DataFrame:
    """Load a shipped data set as a new DataFrame (``NA`` becomes missing).

    Parameters
    ----------
    name : str
        One of :func:`available`.
    """
    if name not in _FILES:
        raise DataError(f"unknown data set {name!r}; available: {', '.join(available())}")
    return pd.read_csv(_DIR / _FILES[name], sep=r"\s+", na_values=["NA"])
