"""Results: the fitted model, its tables and their rendering."""

from .fit import FitResult
from .summary import Summary

__all__ = ["FitResult", "Summary"]
