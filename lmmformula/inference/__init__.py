"""Inference for fixed effects: Satterthwaite degrees of freedom."""

from .satterthwaite import SatterthwaiteState, contrast_df, satterthwaite_state

__all__ = ["SatterthwaiteState", "contrast_df", "satterthwaite_state"]
