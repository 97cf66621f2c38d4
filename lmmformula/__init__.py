"""lmmformula: linear mixed models from lme4-style formulas, fitted by sparse REML.

>>> import lmmformula as lmf
>>> fit = lmf.LMM.from_formula("Reaction ~ Days + (Days | Subject)", data).fit()  # doctest: +SKIP
>>> fit.summary()  # doctest: +SKIP
"""

from .errors import (
    ConvergenceWarning,
    DataError,
    FormulaSyntaxError,
    LMMError,
    LMMWarning,
    ModelSpecificationError,
    RankDeficiencyWarning,
    UnknownColumnError,
    UnknownTermError,
)
from .formula import parse_formula
from .model import LMM
from .inference.compare import compare  # noqa: E402  (after the model: inference uses the design)
from .results import FitResult

__version__ = "0.1.0"

__all__ = [
    "LMM",
    "FitResult",
    "compare",
    "parse_formula",
    "LMMError",
    "FormulaSyntaxError",
    "UnknownColumnError",
    "UnknownTermError",
    "DataError",
    "ModelSpecificationError",
    "LMMWarning",
    "RankDeficiencyWarning",
    "ConvergenceWarning",
    "__version__",
]
