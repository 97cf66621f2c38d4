"""Combinations of terms whose parameters the data cannot separate, found before fitting.

Each check takes the built design (random blocks, residual structure, fixed part) and returns messages that
name the terms and the fix: confounded variances (unreplicated cells next to an independent residual, a
random term that repeats a residual structure, the same grouping under two names, a random intercept inside
an unstructured term, a field repeated as residual, ``fa`` beyond the Ledermann bound, too few groups for an
unstructured residual), positions in a non-numeric order, and notes on grids.  ``LMM.explain`` prints them;
``LMM.fit`` repeats the warnings.
"""

from __future__ import annotations

import re

import numpy as np

__all__ = ["design_warnings", "structure_name", "term_text", "position_labels", "FEW_LEVELS"]

# structures whose per-column variances are free: their diagonal is confounded with an IID residual when
# each (level, column) cell holds one observation
_FREE_DIAGONAL = ("us", "diag", "cs", "toep", "ma", "fa")
_ORDERED_KINDS = ("ar1", "toep")
FEW_LEVELS = 5


def structure_name(block) -> str:
    if block.structure is not None:
        return block.structure.name
    if block.n_columns == 1:
        return "variance"
    return "us" if block.correlated else "diag"


def position_labels(labels) -> list[float] | None:
    """Numbers parsed from level labels, or None when any label is not a number."""
    try:
        return [float(x) for x in labels]
    except (TypeError, ValueError):
        return None


def _natural_key(label: str) -> tuple:
    """``t2`` before ``t10``: digits compare as numbers."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.findall(r"\d+|\D+", label))


def _order_warning(where: str, variable: str, labels) -> str | None:
    """Positions taken from a category order that is not the numeric (or natural) order of the labels."""
    labels = [str(x) for x in labels]
    if len(labels) < 3:
        return None
    values = position_labels(labels)
    if values is not None:
        in_order = bool(np.all(np.diff(values) > 0))
    elif all(re.search(r"\d", x) for x in labels):
        in_order = labels == sorted(labels, key=_natural_key)
    else:
        return None
    if in_order:
        return None
    shown = ", ".join(labels[:4])
    return (f"{where}: the positions of '{variable}' follow its category order ({shown}, ...), which is not "
            f"numeric order; convert '{variable}' to numbers or reorder its categories")


def term_text(block) -> str:
    """The random term as written, e.g. ``(Days | Subject)`` or ``ar1(0 + factor(t) | s)``."""
    term = block.term
    if term is None:
        return f"(... | {block.name})"
    if term.structure is not None:
        return term.structure.text
    return f"({term.expr} {'|' if term.correlated else '||'} {block.name})"


def _column_variable(block) -> str:
    """The variable whose levels are a term's columns: ``n`` of ``ar1(0 + n | s)``."""
    left = block.structure.args[0].split("|")[0] if block.structure is not None else ""
    return left.split("+")[-1].strip()


def _column_labels(block) -> list[str]:
    """Level labels of a term's columns: ``factor(t)10`` or ``n[T.10]`` give ``10``."""
    prefix = _column_variable(block)
    out = []
    for column in block.columns:
        bracket = re.search(r"\[(?:T\.)?(.*)\]$", column)
        if bracket:
            out.append(bracket.group(1))
        elif prefix and column.startswith(prefix):
            out.append(column[len(prefix):])
        else:
            out.append(column)
    return out


def _random_warnings(design) -> tuple[list[str], list[str]]:
    warnings, notes = [], []
    residual = design.residual
    n = design.fixed.y.size
    for block in design.random:
        text = term_text(block)
        checks = (_unreplicated_cells(block, residual, n), _nugget(block, residual, n),
                  _within_group_overlap(block, residual), _aliased_with_fixed(block, design.fixed.X),
                  _field_without_nugget(block, residual))
        warnings += [message for message in checks if message]
        if block.structure is not None and block.structure.name in _ORDERED_KINDS + ("ma",):
            message = _order_warning(text, _column_variable(block), _column_labels(block))
            if message:
                warnings.append(message)
        if block.grid is not None:
            warnings += _grid_messages(text, block.grid, notes, observed=None)
        if block.known is None and block.grid is None and 1 < block.n_levels < FEW_LEVELS:
            notes.append(f"{text} has only {block.n_levels} levels: its variance is poorly determined "
                         "(consider it a fixed effect)")
    return warnings, notes


def _grouping_variables(block) -> set[str]:
    return set(block.factor.name.split(":"))


def _residual_groups(residual) -> set[str]:
    """The variables whose combinations are the independent groups of a residual structure."""
    return {d.variable for d in residual.dimensions if d.kind == "id"}


def _same_or_finer(block, residual) -> bool:
    """True when every level of the term lies within one group of the residual structure."""
    groups = _residual_groups(residual)
    return bool(groups) and _grouping_variables(block) >= groups


def _unreplicated_cells(block, residual, n: int) -> str | None:
    """A term with a free variance per column (us, diag, fa; cs and Toeplitz through ``1 - rho``) whose
    (level, column) cells hold one observation each: its diagonal is confounded with an independent residual,
    and a saturated term with any residual structure over the same groups."""
    name = structure_name(block)
    if name not in _FREE_DIAGONAL or block.n_columns < 2 or block.known is not None or block.grid is not None:
        return None
    Z = block.Z.tocsr(copy=True)
    Z.eliminate_zeros()
    if not (np.all(Z.data == 1.0) and np.all(np.diff(Z.indptr) == 1)):
        return None  # only for indicator columns (0 + factor(t)): one column per observation
    replicated = n - int(np.count_nonzero(np.diff(Z.tocsc().indptr)))
    if replicated >= max(5, n // 10):
        return None
    if residual is None:
        degree = "not separable" if replicated == 0 else "barely separable"
        return (f"{term_text(block)}: only {replicated} of the {n} observations share a level and a column "
                f"with another, so the diagonal of this {name} covariance and the residual variance are {degree}; "
                f"use a residual structure instead (e.g. '{block.factor.name}:{name}(...)' in place of "
                "the random term) or a structure with one variance such as ar1(...)")
    saturated = name in ("us", "diag", "fa") or (name in ("cs", "toep") and any(
        d.kind in ("cs", "us") for d in residual.dimensions))
    if saturated and _same_or_finer(block, residual):
        return (f"{term_text(block)} models the covariance among the positions within '{block.factor.name}' "
                f"(one observation each), and the residual '{residual.text}' models the same covariance again: the "
                "two are not separately identifiable; keep one of them")
    return None


def _nugget(block, residual, n: int) -> str | None:
    if block.factor.n_levels == n and block.n_columns == 1 and residual is not None and not any(
            d.kind == "ar1" for d in residual.dimensions):
        return (f"{term_text(block)} has one level per observation (a nugget) next to the residual "
                f"'{residual.text}', whose own variances absorb it: the two are not separately identifiable; "
                "drop the nugget or use an ar1 residual")
    return None


def _within_group_overlap(block, residual) -> str | None:
    """A random term within the groups of a residual structure that already contains its covariance: any term
    next to an unstructured (``us``) residual, or a random intercept next to ``cs`` or a full Toeplitz
    (``sigma_g^2 J`` is part of both)."""
    if residual is None or block.known is not None or not _same_or_finer(block, residual):
        return None
    for d in residual.dimensions:
        intercept_only = block.columns == ("(Intercept)",)
        if d.kind == "us" or (intercept_only and (d.kind == "cs" or (d.kind == "toep" and d.bands >= d.size - 1))):
            what = "a constant covariance" if intercept_only else "a covariance"
            return (f"{term_text(block)} adds {what} within each '{block.factor.name}', which the residual's "
                    f"{d.kind}({d.variable}) already contains: the two are not separately identifiable; drop the "
                    "random term or use ar1/diag in the residual")
    return None


ALIAS_CHECK_MAX = 2_000_000  # entries of the dense indicator matrix the check may build


def _aliased_with_fixed(block, X: np.ndarray) -> str | None:
    """A random intercept whose levels the fixed part already separates (e.g. ``factor(g) + (1 | g)``): REML
    sees no information on its variance."""
    if block.columns != ("(Intercept)",) or block.known is not None or block.grid is not None:
        return None
    n, L = block.Z.shape
    if X.shape[1] < L or n * L > ALIAS_CHECK_MAX or L >= n:
        return None  # L independent indicator columns cannot lie in the span of fewer than L fixed columns
    Q, _ = np.linalg.qr(X)
    Z = block.Z.toarray()
    leftover = Z - Q @ (Q.T @ Z)
    if np.abs(leftover).max() < 1e-8:
        return (f"the fixed part already separates the levels of '{block.factor.name}' (e.g. "
                f"factor({block.factor.name}) among the fixed effects), so the variance of {term_text(block)} is "
                "not identifiable; remove one of the two")
    return None


def _field_without_nugget(block, residual) -> str | None:
    """A correlated random field with one observation per cell next to an independent residual: the residual
    variance runs to zero (README, Limitations)."""
    if block.grid is None or residual is not None:
        return None
    if np.diff(block.Z.tocsc().indptr).max(initial=0) > 1:
        return None
    return (f"{term_text(block)} has at most one observation per cell next to an independent residual: the "
            "residual variance tends to 0 and the fit may not converge; put the field in the residual instead, "
            "e.g. '(1 | plot) + ar1(row):ar1(col)'")


def _too_few_groups(residual) -> list[str]:
    """An unstructured residual dimension of size m needs more than m independent groups: with m or fewer, the
    sample covariance is singular and the likelihood grows without bound as the estimate approaches it."""
    out = []
    grid_position = np.column_stack([d.positions for d in residual.dimensions])
    group_dims = [i for i, d in enumerate(residual.dimensions) if d.kind == "id"]
    n_groups = len({tuple(row) for row in grid_position[:, group_dims]}) if group_dims else 1
    for d in residual.dimensions:
        if d.kind == "us" and n_groups <= d.size:
            out.append(f"residual: us({d.variable}) has {d.size} positions but only {n_groups} independent "
                       f"group(s): its {d.size} x {d.size} covariance cannot be estimated (the likelihood has no "
                       f"maximum); use a structure with fewer parameters (ar1, cs, toep, diag) or more groups")
    return out


def _grid_messages(where: str, grid, notes: list[str], observed: int | None) -> list[str]:
    warnings = []
    for d in grid.dimensions:
        if d.kind in _ORDERED_KINDS:
            message = _order_warning(where, d.variable, d.labels)
            if message:
                warnings.append(message)
            used = np.unique(d.positions).size
            if used >= 3 and d.size >= 2 * used - 1:
                numbers = position_labels(d.labels[:2])
                step = f"{numbers[1] - numbers[0]:g}" if numbers else f"from {d.labels[0]} to {d.labels[1]}"
                notes.append(f"{where}: the {used} values of '{d.variable}' sit on a grid of {d.size} positions "
                             f"(step {step}, the smallest spacing between values), so AR1 lags count in that step; "
                             "if one stray value set the step, correct it")
    if observed is not None and observed < grid.n_cells:
        sizes = " x ".join(str(d.size) for d in grid.dimensions)
        notes.append(f"{where}: the {sizes} grid has {grid.n_cells} cells and {observed} observations; the "
                     f"{grid.n_cells - observed} unobserved cells are handled exactly (observed-data likelihood)")
    return warnings


def design_warnings(design) -> tuple[list[str], list[str]]:
    """The warnings and notes of :func:`explain_model` that need no factorization (``LMM.fit`` repeats the
    warnings as :class:`~lmmformula.LMMWarning`)."""
    warnings, notes = _random_warnings(design)
    warnings += _same_partitions(design.random) + _intercept_inside(design.random)
    warnings += _duplicate_field(design.random, design.residual) + _too_many_factors(design.random)
    if design.residual is not None:
        warnings += _grid_messages("residual", design.residual, notes, observed=design.fixed.y.size)
        warnings += _too_few_groups(design.residual)
    return warnings, notes


def _column_supports(block) -> list[bytes] | None:
    """The rows of each column of an indicator design (all stored values 1), else None."""
    Z = block.Z.tocsc(copy=True)
    Z.eliminate_zeros()
    if block.known is not None or block.grid is not None or not np.all(Z.data == 1.0):
        return None
    return [Z.indices[Z.indptr[j]:Z.indptr[j + 1]].tobytes() for j in range(Z.shape[1])]


def _same_partitions(blocks) -> list[str]:
    """Two indicator terms where every column of one is a column of the other (``(1 | subject) +
    (1 | treatment:subject)`` with subjects nested in treatments, or ``(1 | gen:env) + diag(0 + env | gen)``):
    the same effects counted twice."""
    out = []
    if len(blocks) < 2:
        return out
    supports = [_column_supports(b) for b in blocks]
    for i, a in enumerate(blocks):
        for j, b in enumerate(blocks):
            if i >= j or supports[i] is None or supports[j] is None:
                continue
            sa, sb = set(supports[i]), set(supports[j])
            if sa <= sb or sb <= sa:
                out.append(f"{term_text(a)} and {term_text(b)} give the same effects (every column of one design is "
                           "a column of the other, e.g. the same grouping under two names): their variances are not "
                           "separately identifiable; keep one")
    return out


_ABSORBS_INTERCEPT = ("us", "cs", "toep", "fa")


def _intercept_inside(blocks) -> list[str]:
    """A random intercept next to a term on the same grouping whose columns add up to it and whose covariance
    (unstructured, compound symmetry, Toeplitz, factor analytic) already has a constant part: ``(1 | gen) +
    us(0 + env | gen)``."""
    out = []
    for a in blocks:
        if a.columns != ("(Intercept)",) or a.known is not None or a.grid is not None:
            continue
        for b in blocks:
            if b is a or b.n_columns < 2 or structure_name(b) not in _ABSORBS_INTERCEPT:
                continue
            same = len(np.unique(np.column_stack([a.factor.codes, b.factor.codes]), axis=0)) == a.n_levels
            if not same or a.n_levels != b.n_levels:
                continue
            ones = np.ones(b.X.shape[0])
            coef = np.linalg.lstsq(b.X, ones, rcond=None)[0]
            if np.abs(b.X @ coef - ones).max() < 1e-8:
                out.append(f"{term_text(a)} adds a constant covariance within each '{a.factor.name}', which the "
                           f"{structure_name(b)} covariance of {term_text(b)} already contains: the two are not "
                           "separately identifiable; drop the random intercept (or use diag(...) for the other)")
    return out


def _duplicate_field(blocks, residual) -> list[str]:
    """The same correlated grid as a random field and as the residual, with no nugget to tell them apart."""
    if residual is None:
        return []
    mine = sorted((d.variable, d.kind) for d in residual.dimensions)
    return [f"{term_text(b)} is the residual's {residual.text} again: the field and the residual have the same "
            "correlation and their variances are not separately identifiable; keep one, or add a nugget "
            "(1 | plot) and drop the other"
            for b in blocks if b.grid is not None and sorted((d.variable, d.kind) for d in b.grid.dimensions) == mine]


def _too_many_factors(blocks) -> list[str]:
    """A factor-analytic term with more parameters than its covariance matrix has entries (Ledermann bound)."""
    out = []
    for b in blocks:
        if structure_name(b) != "fa":
            continue
        m, k = b.n_columns, int(b.structure.args[1])
        free = m * k - k * (k - 1) // 2 + m
        if free > m * (m + 1) // 2:
            out.append(f"{term_text(b)} has {free} parameters for a {m} x {m} covariance ({m * (m + 1) // 2} "
                       f"entries): the loadings are not identifiable; use fewer factors (at most those with "
                       f"m*k - k(k-1)/2 + m <= m(m+1)/2) or us(...)")
    return out
