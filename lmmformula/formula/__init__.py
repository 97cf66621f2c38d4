"""Formula language: split a mixed-model formula into fixed, random and residual parts."""

from .parser import parse_formula
from .registry import STRUCTURES, StructureSpec
from .terms import GroupPart, ParsedFormula, RandomTerm, ResidualTerm, StructureCall

__all__ = [
    "parse_formula",
    "STRUCTURES",
    "StructureSpec",
    "GroupPart",
    "ParsedFormula",
    "RandomTerm",
    "ResidualTerm",
    "StructureCall",
]
