"""Inference for fixed effects: Satterthwaite and Kenward-Roger degrees of freedom, Wald F tests, type III
hypotheses."""

from .anova import combine_df, type3_hypotheses, wald_test
from .kenward_roger import KenwardRogerState, kenward_roger_state, kr_test
from .satterthwaite import SatterthwaiteState, contrast_df, satterthwaite_state

__all__ = ["SatterthwaiteState", "contrast_df", "satterthwaite_state", "combine_df", "type3_hypotheses",
           "wald_test", "KenwardRogerState", "kenward_roger_state", "kr_test"]
