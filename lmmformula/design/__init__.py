"""Design: the rows used, the fixed-effect matrix X and the sparse random-effect blocks Z."""

from .data import ModelFrame, model_frame, required_columns
from .fixed import FixedDesign, build_fixed, r_style_name
from .random import GroupingFactor, RandomBlock, build_random, grouping_factor

__all__ = [
    "ModelFrame",
    "model_frame",
    "required_columns",
    "FixedDesign",
    "build_fixed",
    "r_style_name",
    "GroupingFactor",
    "RandomBlock",
    "build_random",
    "grouping_factor",
]
