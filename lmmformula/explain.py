"""``LMM.explain()``: the model a formula implies, before any iteration.

Lists the fixed part, each random term (design size, levels, covariance ``G`` among its columns and
levels, number of parameters), the residual structure ``R``, the size and fill of the random block of
Henderson's equations and of its factor at the starting values, and the warnings and notes of
:mod:`lmmformula.confounding` (combinations whose parameters the data cannot separate).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .confounding import design_warnings, structure_name, term_text
from .engine.factor import DenseFactor

__all__ = ["ModelExplanation", "explain_model"]


@dataclass(frozen=True)
class ModelExplanation:
    """What :meth:`lmmformula.LMM.explain` found.

    Attributes
    ----------
    text : str
        The printed description.
    warnings : tuple of str
        Combinations the data cannot identify or that are probably not what was meant.
    notes : tuple of str
        Facts worth knowing that need no action (incomplete grids handled exactly, ...).
    n_covariance_parameters : int
        Covariance parameters including the residual variance.
    """

    text: str
    warnings: tuple[str, ...]
    notes: tuple[str, ...]
    n_covariance_parameters: int

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return (f"<ModelExplanation: {self.n_covariance_parameters} covariance parameters, "
                f"{len(self.warnings)} warning(s); print() it for the details>")


def _g_description(block, n_theta: int) -> str:
    m, name = block.n_columns, structure_name(block)
    among_columns = {
        "variance": "one variance",
        "us": f"unstructured {m} x {m} covariance",
        "diag": f"{m} independent variances",
        "ar1": f"AR1 correlation among the {m} columns, one variance",
        "cs": f"compound symmetry among the {m} columns, one variance",
        "toep": f"Toeplitz correlation among the {m} columns, one variance",
        "ma": f"banded (moving-average) correlation among the {m} columns, one variance",
        "fa": f"factor analytic covariance of the {m} columns",
    }[name]
    if block.known is not None:
        among_levels = f"known matrix among the {block.n_levels} levels (vm)"
    elif block.grid is not None:
        dims = " (x) ".join(f"{d.kind.upper()}({d.variable})" for d in block.grid.dimensions)
        among_levels = f"{dims} among the {block.n_levels} cells of the grid"
    else:
        among_levels = "independent levels"
    return f"{among_columns}; {among_levels}; {n_theta} parameter(s)"


def _scale_note(design) -> list[str]:
    X = design.fixed.X
    sd = X.std(axis=0)
    sd = sd[sd > 0]
    binary = np.all((X == 0) | (X == 1), axis=0)
    sd_cont = X[:, ~binary].std(axis=0) if (~binary).any() else np.zeros(0)
    sd_cont = sd_cont[sd_cont > 0]
    if sd_cont.size >= 1 and sd.size >= 2 and sd_cont.max() / sd.min() > 1e3:
        return [f"fixed-effect columns differ in scale by a factor {sd_cont.max() / sd.min():.3g}; rescaling "
                "covariates helps the numerics (as lme4 advises)"]
    return []


def explain_model(formula: str, design, covariances, mme, theta0: np.ndarray, factor) -> ModelExplanation:
    """The description of a built model (see the module docstring).

    Parameters
    ----------
    formula : str
    design : lmmformula.model.Design
    covariances : tuple
        ``term_covariance`` of each random block.
    mme : MixedModelEquations
    theta0 : ndarray
        Starting values (canonical).
    factor : factor of ``C_vv`` at the starting values, or None when it is not positive definite there.
    """
    fixed = design.fixed
    lines = [f"Model: {formula}",
             f"Data: {fixed.y.size} observations used ({design.n_dropped} rows dropped for missing values)",
             f"Response: {fixed.response}",
             f"Fixed effects: {fixed.X.shape[1]} columns ({', '.join(fixed.names[:6])}"
             f"{', ...' if len(fixed.names) > 6 else ''})"
             + (f"; aliased and dropped: {', '.join(fixed.dropped)}" if fixed.dropped else "")]
    n_params = 1
    if design.random:
        lines.append("Random terms:")
    for block, cov in zip(design.random, covariances):
        n_theta = cov.n_theta + (block.grid.n_params if block.grid is not None else 0)
        n_params += n_theta
        lines.append(f"  {term_text(block)}: {block.n_levels} levels x "
                     f"{block.n_columns} effect(s); Z {block.Z.shape[0]} x {block.Z.shape[1]} with "
                     f"{block.Z.nnz} non-zeros; G: {_g_description(block, n_theta)}")
    residual = design.residual
    if residual is None:
        lines.append("Residual: sigma^2 I (independent, one variance)")
    else:
        dims = " (x) ".join(f"{d.kind}({d.variable}, {d.size} positions)" for d in residual.dimensions)
        n_params += residual.n_params
        lines.append(f"Residual: {residual.text}: sigma^2 [{dims}]; {residual.n_params} parameter(s) + "
                     "residual variance")
    lines.append(f"Covariance parameters: {n_params} (including the residual variance)")
    q = mme.q
    if q:
        nnz_c = int(mme.cvv(theta0).nnz)
        if factor is None:
            fill = "; not positive definite at the starting values"
        elif isinstance(factor, DenseFactor):
            fill = "; factored densely (LAPACK)"
        else:
            fill = (f"; its sparse factor has {factor.nnz} stored entries "
                    f"({100.0 * factor.nnz / (q * (q + 1) / 2):.2f}% of a dense triangle)")
        lines.append(f"Mixed model equations: random block of order {q} with {nnz_c} non-zeros "
                     f"({100.0 * nnz_c / q ** 2:.2f}% full){fill}; {mme.p} fixed effects absorbed")
    else:
        lines.append(f"Mixed model equations: no random effects; {mme.p} fixed effects (generalised least squares)")
    warnings, notes = design_warnings(design)
    notes += _scale_note(design)
    for title, items in (("Warnings", warnings), ("Notes", notes)):
        if items:
            lines.append(f"{title}:")
            lines += [f"  - {item}" for item in items]
    return ModelExplanation(text="\n".join(lines), warnings=tuple(warnings), notes=tuple(notes),
                            n_covariance_parameters=n_params)

