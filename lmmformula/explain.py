"""``LMM.explain()``: the model a formula implies, before any iteration.

Lists the fixed part, each random term (design size, levels, covariance ``G`` among its columns and
levels, number of parameters), the residual structure ``R``, the size and fill of the random block of
Henderson's equations and of its factor at the starting values, and warnings for combinations whose
parameters the data cannot separate (confounded variances, positions in a non-numeric order, incomplete
grids, factors with very few levels).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .engine.factor import DenseFactor

__all__ = ["ModelExplanation", "explain_model"]

# structures whose per-column variances are free: their diagonal is confounded with an IID residual when
# each (level, column) cell holds one observation
_FREE_DIAGONAL = ("us", "diag", "cs", "toep", "ma", "fa")
_ORDERED_KINDS = ("ar1", "toep")
FEW_LEVELS = 5


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


def _structure_name(block) -> str:
    if block.structure is not None:
        return block.structure.name
    if block.n_columns == 1:
        return "variance"
    return "us" if block.correlated else "diag"


def _g_description(block, n_theta: int) -> str:
    m, name = block.n_columns, _structure_name(block)
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


def _position_labels(labels) -> list[float] | None:
    """Numbers parsed from level labels, or None when any label is not a number."""
    try:
        return [float(x) for x in labels]
    except (TypeError, ValueError):
        return None


def _order_warning(where: str, variable: str, labels) -> str | None:
    values = _position_labels(labels)
    if values is None or len(values) < 3 or all(np.diff(values) > 0):
        return None
    shown = ", ".join(list(labels)[:4])
    return (f"{where}: the positions of '{variable}' follow its category order ({shown}, ...), which is not "
            f"numeric order; convert '{variable}' to numbers or reorder its categories")


def _term_text(block) -> str:
    """The random term as written, e.g. ``(Days | Subject)`` or ``ar1(0 + factor(t) | s)``."""
    term = block.term
    if term is None:
        return f"(... | {block.name})"
    if term.structure is not None:
        return term.structure.text
    return f"({term.expr} {'|' if term.correlated else '||'} {block.name})"


def _column_labels(block) -> list[str]:
    return [m.group(1) if (m := re.search(r"\[(?:T\.)?(.*)\]$", c)) else c for c in block.columns]


def _random_warnings(design) -> tuple[list[str], list[str]]:
    warnings, notes = [], []
    residual = design.residual
    n = design.fixed.y.size
    for block in design.random:
        name = _structure_name(block)
        occupied = int(np.count_nonzero(np.diff(block.Z.tocsc().indptr)))
        replicated = n - occupied  # observations beyond the first in each (level, column) cell
        if residual is None and name in _FREE_DIAGONAL and block.n_columns > 1 and replicated < max(5, n // 10):
            warnings.append(
                f"{_term_text(block)}: only {replicated} of the {n} observations repeat a (level, column) cell, "
                f"so the diagonal of this {name} covariance and the residual variance are barely separable; "
                f"use a residual structure instead (e.g. '{block.factor.name}:{name}(...)' in place of the "
                "random term) or a structure with one variance such as ar1(...)")
        if block.factor.n_levels == n and block.n_columns == 1 and residual is not None and not any(
                d.kind == "ar1" for d in residual.dimensions):
            warnings.append(
                f"{_term_text(block)} has one level per observation (a nugget) next to the residual "
                f"'{residual.text}', whose own variances absorb it: the two are not separately identifiable; "
                "drop the nugget or use an ar1 residual")
        if residual is not None and block.columns == ("(Intercept)",) and block.known is None:
            message = _shared_intercept_warning(block, residual)
            if message:
                warnings.append(message)
        if block.structure is not None and block.structure.name in _ORDERED_KINDS + ("ma",):
            message = _order_warning(_term_text(block), block.structure.name, _column_labels(block))
            if message:
                warnings.append(message)
        if block.grid is not None:
            warnings += _grid_messages(_term_text(block), block.grid, notes, observed=None)
        if block.known is None and block.grid is None and 1 < block.n_levels < FEW_LEVELS:
            notes.append(f"{_term_text(block)} has only {block.n_levels} levels: its variance is poorly determined "
                         "(consider it a fixed effect)")
    return warnings, notes


def _shared_intercept_warning(block, residual) -> str | None:
    """A random intercept per group next to a residual whose within-group correlation already contains a
    constant part (cs, us, full Toeplitz) over the same groups: ``sigma_g^2 J`` is confounded with it."""
    groups = {d.variable for d in residual.dimensions if d.kind == "id"}
    if block.factor.name not in groups:
        return None
    for d in residual.dimensions:
        if d.kind in ("cs", "us") or (d.kind == "toep" and d.bands >= d.size - 1):
            return (f"{_term_text(block)} adds a constant covariance within each '{block.factor.name}', which the "
                    f"residual's {d.kind}({d.variable}) already contains: the two are not separately "
                    "identifiable; drop the random intercept or use ar1/diag in the residual")
    return None


def _grid_messages(where: str, grid, notes: list[str], observed: int | None) -> list[str]:
    warnings = []
    for d in grid.dimensions:
        if d.kind in _ORDERED_KINDS:
            message = _order_warning(where, d.variable, d.labels)
            if message:
                warnings.append(message)
    if observed is not None and observed < grid.n_cells:
        sizes = " x ".join(str(d.size) for d in grid.dimensions)
        notes.append(f"{where}: the {sizes} grid has {grid.n_cells} cells and {observed} observations; the "
                     f"{grid.n_cells - observed} unobserved cells are handled exactly (observed-data likelihood)")
    return warnings


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
        lines.append(f"  {_term_text(block)}: {block.n_levels} levels x "
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
    warnings, notes = _random_warnings(design)
    if residual is not None:
        warnings += _grid_messages("residual", residual, notes, observed=fixed.y.size)
    notes += _scale_note(design)
    for title, items in (("Warnings", warnings), ("Notes", notes)):
        if items:
            lines.append(f"{title}:")
            lines += [f"  - {item}" for item in items]
    return ModelExplanation(text="\n".join(lines), warnings=tuple(warnings), notes=tuple(notes),
                            n_covariance_parameters=n_params)

