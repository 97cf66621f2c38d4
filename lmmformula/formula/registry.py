"""The registry of covariance-structure names known to the formula language.

The parser recognises these names wherever a structure may appear
(the residual term, the group side of a bar, around a random term).  Each
entry records the arity the formula must respect, so that ``fa(x)`` without
``k`` is a syntax error no matter where it is written.  Which structures the
engine can estimate is a separate question answered by
:mod:`lmmformula.covariance`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["StructureSpec", "STRUCTURES", "is_structure_name", "integer_argument"]


@dataclass(frozen=True)
class StructureSpec:
    """How a structure call is written.

    Parameters
    ----------
    name : str
        Reserved function name in formulas.
    min_args, max_args : int
        Number of positional arguments, counting the variable (or the random
        term ``expr | group``) as the first.
    meaning : str
        One-line description used in error messages and documentation.
    """

    name: str
    min_args: int
    max_args: int
    meaning: str


STRUCTURES: dict[str, StructureSpec] = {
    s.name: s
    for s in (
        StructureSpec("id", 1, 1, "identity (independent, one variance)"),
        StructureSpec("diag", 1, 1, "heterogeneous variances, one per level"),
        StructureSpec("cs", 1, 1, "compound symmetry (uniform correlation)"),
        StructureSpec("ar1", 1, 1, "first-order autoregressive correlation"),
        StructureSpec("toep", 1, 2, "Toeplitz correlation, all bands or the first q"),
        StructureSpec("ma", 2, 2, "moving-average banded correlation of order q"),
        StructureSpec("us", 1, 1, "unstructured covariance"),
        StructureSpec("fa", 2, 2, "factor analytic covariance with k factors"),
        StructureSpec("vm", 2, 2, "known relationship matrix passed in `matrices`"),
    )
}


# Structures of other packages a user may write, and what to write here instead.
FOREIGN_STRUCTURES = {
    "idv": "id(x)", "idh": "diag(x)", "cor": "cs(x)", "corv": "cs(x)", "corh": "cs(x) with diag(x)",
    "ar1v": "ar1(x)", "ar1h": "ar1(x)", "ar": "ar1(x)", "at": "a grouping per level, e.g. (0 + env | g)",
    "ou": "ar1(x) on a regular grid (no Ornstein-Uhlenbeck)", "exp": "ar1(x) on a regular grid (no exponential)",
    "gau": "not available (no Gaussian correlation)", "mat": "not available (no Matern correlation)",
    "rr": "fa(0 + x | g, k)", "homdiag": "diag(x)", "hetar": "ar1(x) with diag(x)", "corAR1": "g:ar1(t)",
    "corCompSymm": "g:cs(t)", "corSymm": "g:us(t)", "pdDiag": "(x || g)", "pdSymm": "(x | g)",
}


def structure_hint(name: str) -> str:
    """What to write instead of another package's structure ``name`` (empty when ``name`` is not one)."""
    known = ", ".join(STRUCTURES)
    if name in FOREIGN_STRUCTURES:
        return (f"'{name}(...)' is another package's structure; write {FOREIGN_STRUCTURES[name]} here "
                f"(structures: {known})")
    if name.lower() in STRUCTURES:
        return f"structure names are lower case: write {name.lower()}(...) (structures: {known})"
    return ""


def is_structure_name(name: str) -> bool:
    """Return True when ``name`` is a reserved structure function."""
    return name in STRUCTURES


def integer_argument(call, high: int, what: str, context: str) -> int:
    """The call's second argument as an integer in ``1..high`` (a number of bands or factors).

    Raises
    ------
    ModelSpecificationError
        Naming the call, the admissible range and the value written.
    """
    from ..errors import ModelSpecificationError

    text = call.args[1].strip()
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 1 <= value <= high:
        raise ModelSpecificationError(
            f"the number of {what} in '{call.text}' must be an integer from 1 to {high} ({context}), got {text!r}"
        )
    return value
