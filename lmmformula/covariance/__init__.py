"""Covariance parameterisations of random terms and of the residual."""

from .blocks import BlockCovariance
from .correlation import Correlation
from .structured import StructuredCovariance
from .terms import term_covariance

__all__ = ["BlockCovariance", "Correlation", "StructuredCovariance", "term_covariance"]
