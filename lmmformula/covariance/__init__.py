"""Covariance parameterisations of random terms (and, later, residual structures)."""

from .blocks import BlockCovariance

__all__ = ["BlockCovariance"]
