"""Engine: assembly and factorization of the mixed model equations, REML/ML iterations."""

from .factor import DenseFactor, NotPositiveDefinite, SparseFactor, make_factor
from .mme import Derivatives, Evaluation, MixedModelEquations, variance_information
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
    "IterationRecord",
    "OptimizerResult",
    "fit_variance_parameters",
    "takahashi",
    "column_dots",
]
