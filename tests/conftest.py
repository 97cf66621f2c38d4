"""Shared helpers: golden values from lme4 and the datasets they were computed on."""

from __future__ import annotations

import json
import pathlib

import pandas as pd
import pytest

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
