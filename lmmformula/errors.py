"""Exceptions and warnings raised by lmmformula.

Every problem caused by the user's input is an :class:`LMMError`; each subclass
also derives from the built-in exception a Python user would expect
(``ValueError``, ``KeyError``), so ``except ValueError`` keeps working.
Messages name the problem, the offending value and the fix.
"""

from __future__ import annotations

__all__ = [
    "LMMError",
    "FormulaSyntaxError",
    "UnknownColumnError",
    "UnknownTermError",
    "DataError",
    "ModelSpecificationError",
    "LMMWarning",
    "RankDeficiencyWarning",
    "ConvergenceWarning",
]


class LMMError(Exception):
    """Base class of every bad-input error raised by lmmformula."""


class FormulaSyntaxError(LMMError, ValueError):
    """The formula cannot be parsed.

    The message shows the formula with a caret under the offending token.

    Parameters
    ----------
    message : str
        What is wrong and how to fix it.
    formula : str
        The formula as the user wrote it.
    position : int, optional
        0-based character offset of the offending token.
    """

    def __init__(self, message: str, formula: str = "", position: int | None = None):
        self.formula = formula
        self.position = position
        text = message
        if formula:
            text += "\n    " + formula
            if position is not None:
                text += "\n    " + " " * max(position, 0) + "^"
        super().__init__(text)


class UnknownColumnError(LMMError, KeyError):
    """A column named in the formula is not in the data."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class UnknownTermError(LMMError, KeyError):
    """A term asked of a fit (``fit.covariance("x")``) is not in the model."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class DataError(LMMError, ValueError):
    """The data cannot support the requested model (types, missing values, levels)."""


class ModelSpecificationError(LMMError, ValueError):
    """The formula is valid but the model it describes is not (yet) supported or not estimable."""


class LMMWarning(UserWarning):
    """Base class of warnings issued by lmmformula."""


class RankDeficiencyWarning(LMMWarning):
    """Aliased fixed-effect columns were dropped."""


class ConvergenceWarning(LMMWarning):
    """The REML/ML iterations stopped before meeting the convergence criterion."""

