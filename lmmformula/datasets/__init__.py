"""Small data sets shipped with lmmformula: real field trials and two simulated studies.

The trials come unchanged from the R package agridat 1.27 (MIT licence, see
``data/LICENSE-agridat.md``); the agridat help page of the same name documents
each one and cites its source.  ``growth`` and ``animal`` are simulated by
``scripts/make_simulated_datasets.py`` (seed and generating values there and below).

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
growth              328    simulated repeated measures: 60 subjects, treatments A/B, weeks
                           0, 2, 4, 6, 8, 12 (each visit after week 0 missed with
                           probability 0.08: 32 of 360); true model
                           ``y ~ treatment * week + (week | subject) + subject:ar1(week)``
                           with intercept 20, slopes 0.5 (A) and 0.8 (B) per week,
                           var(intercept) 4, var(week) 0.09, cov 0.3, AR1 correlation 0.5
                           per 2 weeks, residual SD 1.5
animal              1200   simulated pedigree and records: ``animal, sire, dam`` (``0`` =
                           unknown; 200 founders without records), ``herd`` (10), ``sex``,
                           ``weight``; additive variance 0.4, residual 0.6, for
                           ``weight ~ herd + sex + (1 | vm(animal, "A"))`` with
                           ``A = pedigree.inverse_relationship(data[["animal", "sire", "dam"]])``
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
    "growth": "growth.csv",
    "animal": "animal.csv",
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
    path = _DIR / _FILES[name]
    if path.suffix == ".csv":
        return pd.read_csv(path, dtype={"animal": str, "sire": str, "dam": str})
    return pd.read_csv(path, sep=r"\s+", na_values=["NA"])
