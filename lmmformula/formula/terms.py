"""Frozen values produced by the formula parser.

A formula ``y ~ fixed + (expr | group) + residual`` becomes a
:class:`ParsedFormula` holding the response text, the fixed part as a
formulaic-compatible string, the random terms and at most one residual term.
Nothing here looks at data.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["StructureCall", "GroupPart", "RandomTerm", "ResidualTerm", "ParsedFormula"]


@dataclass(frozen=True)
class StructureCall:
    """A call of a registered covariance structure, e.g. ``ar1(row)``.

    Attributes
    ----------
    name : str
        Structure name (a key of :data:`lmmformula.formula.registry.STRUCTURES`).
    args : tuple of str
        Positional arguments as written (the first is the variable or term).
    text : str
        The call exactly as written in the formula.
    position : int
        Offset of the call in the formula (for error carets).
    """

    name: str
    args: tuple[str, ...]
    text: str
    position: int


@dataclass(frozen=True)
class GroupPart:
    """One factor of a grouping, either a plain column or a structured factor."""

    variable: str
    structure: StructureCall | None = None

    @property
    def label(self) -> str:
        """The part as it appears in term names."""
        return self.structure.text if self.structure is not None else self.variable


@dataclass(frozen=True)
class RandomTerm:
    """A random-effect term ``(expr | g1:g2)``.

    Attributes
    ----------
    expr : str
        Left side of the bar, as written (``"1"``, ``"Days"``, ``"0 + x"``).
    group : tuple of GroupPart
        Factors whose interaction defines the levels (``a/b`` has already been
        expanded into two terms).
    correlated : bool
        False for ``||`` (uncorrelated columns).
    structure : StructureCall or None
        A structure wrapping the whole term (G-side among columns), e.g. ``ar1(0 + t | s)``.
    position : int
        Offset of the term in the formula.
    """

    expr: str
    group: tuple[GroupPart, ...]
    correlated: bool = True
    structure: StructureCall | None = None
    position: int = 0

    @property
    def group_name(self) -> str:
        """The grouping as written, e.g. ``"batch:cask"``."""
        return ":".join(p.label for p in self.group)

    @property
    def written(self) -> str:
        """The term as written (up to spacing), e.g. ``"(1 + x | g)"`` or ``"diag(1 + x | g)"``."""
        if self.structure is not None:
            return self.structure.text
        return f"({self.expr} {'|' if self.correlated else '||'} {self.group_name})"


@dataclass(frozen=True)
class ResidualTerm:
    """The residual (R-side) term: structures and plain factors joined by ``:``."""

    parts: tuple[GroupPart, ...]
    text: str
    position: int


@dataclass(frozen=True)
class ParsedFormula:
    """The result of parsing a formula; see :func:`lmmformula.formula.parse_formula`."""

    formula: str
    response: str
    fixed: str
    random: tuple[RandomTerm, ...] = field(default_factory=tuple)
    residual: ResidualTerm | None = None
