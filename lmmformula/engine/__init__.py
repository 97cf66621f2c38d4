"""Engine: assembly and factorization of the mixed model equations, REML/ML iterations."""

from .factor import DenseFactor, NotPositiveDefinite, SparseFactor, make_factor
from .em import em_step
from .information import variance_information
from .mme import Evaluation, MixedModelEquations
from .score import Derivatives
from .reml import IterationRecord, OptimizerResult, fit_variance_parameters
from .selinv import column_dots, takahashi

__all__ = [
    "DenseFactor",
    "SparseFactor",
    "NotPositiveDefinite",
    "make_factor",
    "MixedModelEquations",
    "Evaluation",
    "Derivatives",
    "variance_information",
    "em_step",
    "IterationRecord",
    "OptimizerResult",
    "fit_variance_parameters",
    "takahashi",
    "column_dots",
]
