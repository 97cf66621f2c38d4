"""``python -m lmmformula``: fit the example field trial and print its summary."""

from __future__ import annotations

from . import LMM
from .datasets import load


def main() -> None:
    """Slate Hall wheat trial: varieties fixed; replicate, and rows and columns within replicates, random."""
    data = load("slatehall")
    formula = "yield ~ gen + (1 | rep) + (1 | rep:row) + (1 | rep:col)"
    fit = LMM.from_formula(formula, data).fit()
    print(fit.summary())


if __name__ == "__main__":
    main()
