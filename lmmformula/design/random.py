"""Random-effect design blocks: grouping factors as integer codes, Z as scipy.sparse.

For a term ``(expr | g)`` with ``m`` columns in the model matrix of ``expr``
and ``L`` observed levels of ``g``, the block ``Z_k`` is ``n x (L*m)`` with
columns ordered level-major (level 0's ``m`` effects, then level 1's, ...),
as in lme4: ``Z_k[i, g_i*m + j] = X_k[i, j]``.  Every (row, level, column)
triple is stored even when the value is zero, so the sparsity pattern is
structural and does not change with the data values.
"""

from __future__ import annotations

import functools

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..covariance.known import KnownMatrix, known_matrix
from ..covariance.grids import build_grid
from ..covariance.residual import ResidualStructure
from ..errors import DataError, FormulaSyntaxError, ModelSpecificationError
from ..formula.registry import integer_argument
from ..formula.terms import RandomTerm, StructureCall
from .fixed import _restore_r_calls, formulaic_formula, model_matrix_for, r_style_name
from .identifiability import check_identifiable, check_overlapping_terms

__all__ = ["GroupingFactor", "RandomBlock", "grouping_factor", "build_random", "block_design_for"]


@dataclass(frozen=True)
class GroupingFactor:
    """Integer codes of a (possibly interacted) grouping factor.

    Attributes
    ----------
    name : str
        The grouping as written, e.g. ``"batch:cask"``.
    codes : ndarray of int, shape (n,)
    levels : tuple of str
        Observed levels in sorted order; interaction levels are joined by ``:``.
    """

    name: str
    codes: np.ndarray
    levels: tuple[str, ...]

    @property
    def n_levels(self) -> int:
        return len(self.levels)


@dataclass(frozen=True)
class RandomBlock:
    """One random term's design.

    Attributes
    ----------
    name : str
        Unique term name (``"Subject"``; a repeated grouping gets ``".1"``).
    factor : GroupingFactor
    columns : tuple of str
        Names of the term's effects, e.g. ``("(Intercept)", "Days")``.
    X : ndarray, shape (n, m)
        The term's model matrix (left side of the bar).
    Z : scipy.sparse.csc_matrix, shape (n, L*m)
    correlated : bool
        False for ``||``: the effects' covariance is diagonal.
    known : KnownMatrix or None
        Known covariance among the levels (``vm``); its labels are the levels.
    grid : ResidualStructure or None
        A structured grouping such as ``ar1(row):ar1(col)``: the levels are the cells of its full grid
        (observed or not) and their correlation is the Kronecker product of the dimensions'.
    column_positions : tuple of int or None
        Positions of the columns for ``ar1``/``toep``/``ma`` among the columns: from the values of a
        numeric variable (gaps kept), else consecutive in category order.
    structure : StructureCall or None
        A correlation structure among the columns (``ar1``, ``cs``, ``toep``, ``ma``), e.g.
        ``ar1(0 + factor(time) | subject)``; None for ``|``, ``||``, ``us(...)`` and ``diag(...)``.
    term : RandomTerm or None
        The parsed term (kept to build the block's design for new data).
    spec : formulaic.ModelSpec or None
        The spec of the left side ``X`` (its encoding of factors, reused for new data).
    """

    name: str
    factor: GroupingFactor
    columns: tuple[str, ...]
    X: np.ndarray
    Z: sp.csc_matrix
    correlated: bool
    known: KnownMatrix | None = None
    structure: StructureCall | None = None
    grid: ResidualStructure | None = None
    column_positions: tuple[int, ...] | None = None
    term: RandomTerm | None = None
    spec: object = None

    @property
    def n_columns(self) -> int:
        return len(self.columns)

    @property
    def written(self) -> str:
        """The term as written in the formula (its name when built without one)."""
        return self.term.written if self.term is not None else self.name

    @property
    def n_levels(self) -> int:
        return self.factor.n_levels


def _label(value) -> str:
    """Level label as R prints it: integral floats without a trailing '.0'."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _codes(col: pd.Series) -> tuple[np.ndarray, list[str]]:
    if isinstance(col.dtype, pd.CategoricalDtype):
        col = col.cat.remove_unused_categories()
    try:
        codes, uniques = pd.factorize(col, sort=True)
    except TypeError:  # values that cannot be sorted together, e.g. 1 and "1"
        codes, uniques = pd.factorize(col, sort=False)
    textual = not pd.api.types.is_numeric_dtype(uniques.dtype)  # Python strings at once (arrow-backed columns)
    labels = [_label(u) for u in (uniques.tolist() if textual else uniques)]
    if len(set(labels)) < len(labels):
        same = next(lab for lab in labels if labels.count(lab) > 1)
        raise DataError(f"the grouping column '{col.name}' holds different values that print alike ({same!r}, e.g. "
                        f"the number 1 and the text '1'); convert it to one type, e.g. df['{col.name}'].astype(str)")
    return codes.astype(np.int64), labels


def grouping_factor(frame: pd.DataFrame, variables: tuple[str, ...], name: str) -> GroupingFactor:
    """Integer codes of the interaction of ``variables`` (observed combinations only)."""
    per = [_codes(frame[v]) for v in variables]
    if len(per) == 1:
        codes, labels = per[0]
        return GroupingFactor(name=name, codes=codes, levels=tuple(labels))
    stacked = np.column_stack([c for c, _ in per])
    combos, codes = np.unique(stacked, axis=0, return_inverse=True)
    labels = tuple(":".join(per[k][1][combo[k]] for k in range(len(per))) for combo in combos)
    return GroupingFactor(name=name, codes=codes.ravel().astype(np.int64), levels=labels)


# Structures around a random term that are the plain bar forms: us(x | g) is (x | g), diag(x | g) is (x || g).
_COLUMN_ALIASES = {"us": True, "diag": False}


def _known_factor(frame: pd.DataFrame, variable: str, known: KnownMatrix, name: str) -> GroupingFactor:
    """Codes of ``variable`` into the labels of a known matrix (all labels are levels)."""
    index = {lab: i for i, lab in enumerate(known.labels)}
    values = [_label(v) for v in frame[variable]]
    missing = sorted({v for v in values if v not in index})
    if missing:
        raise DataError(
            f"{len(missing)} level(s) of '{variable}' are not in the known matrix of '{name}' (e.g. "
            f"{', '.join(map(repr, missing[:3]))}); the matrix must have a row and column for every level"
        )
    return GroupingFactor(name=name, codes=np.array([index[v] for v in values], dtype=np.int64),
                          levels=known.labels)


def build_random(frame: pd.DataFrame, terms: tuple[RandomTerm, ...], formula: str,
                 matrices: dict | None = None, unit_level_ok: bool = False) -> tuple[RandomBlock, ...]:
    """Build the design block of every random term.

    ``unit_level_ok`` allows a grouping with one level per observation (a nugget), which is
    identifiable next to a correlated residual structure.

    Raises
    ------
    ModelSpecificationError
        For covariance structures on random terms (not estimable in this version).
    DataError
        A grouping factor with fewer than two levels, or with as many levels as observations.
    """
    blocks: list[RandomBlock] = []
    seen: dict[str, int] = {}
    n = frame.shape[0]
    for term in terms:
        known = _known_for(term, matrices or {})
        correlated = term.correlated
        if term.structure is not None and term.structure.name in _COLUMN_ALIASES:
            correlated = _COLUMN_ALIASES[term.structure.name]
        column_structure = (term.structure if term.structure is not None
                            and term.structure.name not in _COLUMN_ALIASES else None)
        grid = _grid_for(frame, term) if known is None else None
        group_name = term.group_name
        count = seen.get(group_name, 0)
        seen[group_name] = count + 1
        name = group_name if count == 0 else f"{group_name}.{count}"
        if known is not None:
            factor = _known_factor(frame, term.group[0].variable, known, group_name)
        elif grid is not None:
            factor = GroupingFactor(name=group_name, codes=grid.cells, levels=grid.cell_labels())
        else:
            factor = grouping_factor(frame, tuple(p.variable for p in term.group), group_name)
        if factor.n_levels < 2:
            raise DataError(
                f"grouping factor '{group_name}' in '({term.expr} | {group_name})' has {factor.n_levels} level; "
                "a random effect needs at least 2. Drop the term or check the data"
            )
        Xk, columns, spec = _term_matrix(frame, term, formula)
        if factor.n_levels >= n and known is None and grid is None and not unit_level_ok:
            raise DataError(
                f"grouping factor '{group_name}' has {factor.n_levels} levels for {n} observations, so its "
                "random effect cannot be separated from the residual; drop the term or use a grouping "
                "with repeated observations"
            )
        m = Xk.shape[1]
        if known is None and grid is None and column_structure is None and (factor.n_levels * m > n or (factor.n_levels * m == n and not unit_level_ok)):
            raise DataError(
                f"the term '({term.expr} | {group_name})' has {factor.n_levels * m} random effects for {n} "
                "observations, so its variances cannot be separated from the residual variance; "
                "simplify the term or use a grouping with more observations per level"
            )
        if known is None and grid is None and column_structure is None:
            check_identifiable(factor, Xk, columns, term, group_name, correlated)
        positions = None
        if column_structure is not None:
            _check_column_structure(column_structure, columns, term, group_name)
            if column_structure.name in ("ar1", "toep", "ma"):
                positions = _column_positions(frame, term, columns, group_name)
        rows = np.repeat(np.arange(n), m)
        cols = (factor.codes[:, None] * m + np.arange(m)[None, :]).ravel()
        Z = sp.csc_matrix((Xk.ravel(), (rows, cols)), shape=(n, factor.n_levels * m))
        Z.sort_indices()
        blocks.append(RandomBlock(name=name, factor=factor, columns=columns, X=Xk, Z=Z,
                                  correlated=correlated, known=known, structure=column_structure, grid=grid,
                                  column_positions=positions, term=term, spec=spec))
    check_overlapping_terms(blocks)
    return tuple(blocks)


def _grid_for(frame: pd.DataFrame, term: RandomTerm) -> ResidualStructure | None:
    """The grid of a structured grouping (a grouping with an ar1/cs/toep/ma part), else None."""
    if not any(p.structure is not None for p in term.group):
        return None
    return build_grid(frame, term.group, f"({term.expr} | {term.group_name})", grouping=True)


def left_variable(expr: str) -> str:
    """The variable of a term's left side (``0 + factor(time)`` -> ``time``), else the text itself."""
    text = re.sub(r"^\s*(0|-\s*1)\s*\+\s*|\s*[+-]\s*(0|1)\s*$", "", expr).strip()
    call = re.fullmatch(r"(?:factor|C|as\.factor)\((\w+)\)", text)
    return call.group(1) if call else text


def _column_positions(frame: pd.DataFrame, term: RandomTerm, columns: tuple[str, ...],
                      group: str) -> tuple[int, ...]:
    """Positions of the columns of ``ar1(0 + factor(t) | g)``: numeric values divided by their smallest
    spacing (a gap stays a gap, as in a residual ``g:ar1(t)``), or the order of an ordered Categorical."""
    var = left_variable(term.expr)
    where = f"'{term.structure.text}'"
    if "(Intercept)" in columns or var not in frame.columns:
        raise ModelSpecificationError(
            f"{where} needs one column per position, as in {term.structure.name}(0 + factor(time) | {group}); "
            f"its left side '{term.expr}' gives the columns {', '.join(columns)}"
        )
    col = frame[var]
    if pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col):
        values = np.unique(col.to_numpy(dtype=float))
        step = np.min(np.diff(values)) if values.size > 1 else 1.0
        pos = (values - values[0]) / step
        if np.max(np.abs(pos - np.round(pos))) > 1e-6:
            raise DataError(
                f"the values of '{var}' in {where} are not on a regular grid (smallest spacing {step:g}); "
                "round them or use an ordered Categorical"
            )
        pos = np.round(pos).astype(int)
    elif isinstance(col.dtype, pd.CategoricalDtype) and col.dtype.ordered:
        pos = np.arange(len(col.cat.remove_unused_categories().cat.categories))
    elif isinstance(col.dtype, pd.CategoricalDtype):
        raise DataError(
            f"the positions of {where} come from '{var}', an unordered Categorical whose category order is not "
            "declared as an order in time or space; make it ordered (col.cat.as_ordered(), with the categories in "
            "time order) or use a numeric column"
        )
    else:
        raise DataError(
            f"the positions of {where} come from '{var}', a {col.dtype} column whose text order (e.g. t1, t10, "
            "t2) is not an order in time or space; use a numeric column or an ordered pandas Categorical"
        )
    if pos.size != len(columns):
        raise ModelSpecificationError(
            f"{where} has {len(columns)} columns but '{var}' has {pos.size} values; write the left side as "
            f"0 + factor({var})"
        )
    return tuple(int(p) for p in pos)


def _check_column_structure(call: StructureCall, columns: tuple[str, ...], term: RandomTerm, group: str) -> None:
    """A correlation among columns needs two columns; a band count must be an integer in 1..m-1."""
    m = len(columns)
    if m < 2:
        raise DataError(
            f"'{call.text}' puts a correlation among the columns of '({term.expr} | {group})', which has "
            f"{m} column; use a factor on the left, e.g. {call.name}(0 + factor(time) | {group})"
        )
    if call.name == "fa":
        integer_argument(call, m - 1, "factors", f"the term has {m} columns")
    elif len(call.args) > 1:
        integer_argument(call, m - 1, "bands", f"the term has {m} columns")


def _known_for(term: RandomTerm, matrices: dict) -> KnownMatrix | None:
    """The known matrix of a ``vm`` grouping, or None."""
    vm = [p for p in term.group if p.structure is not None and p.structure.name == "vm"]
    if not vm:
        return None
    if len(term.group) != 1:
        raise ModelSpecificationError(
            f"vm() must be the whole grouping, as in '(1 | vm(animal, \"A\"))', not part of '{term.group_name}'"
        )
    key = vm[0].structure.args[1].strip().strip("\"'")
    if key not in matrices:
        raise ModelSpecificationError(
            f"'{vm[0].structure.text}' names the matrix {key!r}, which is not in matrices= "
            f"(given: {', '.join(map(repr, matrices)) or 'none'}); pass LMM.from_formula(..., matrices={{{key!r}: A}})"
        )
    return known_matrix(matrices[key], key)


def block_design_for(block: RandomBlock, frame: pd.DataFrame) -> tuple[sp.csc_matrix, np.ndarray, np.ndarray]:
    """The block's ``Z`` for the rows of ``frame`` (new data), a mask of rows whose level was not in the fit, and
    the rows of the term's left side.

    Levels are matched by label (the interaction of the grouping variables, a known matrix's labels, or a
    grid cell ``row=1:col=2``); a row with a new level gets no column (its random effect is predicted at 0).
    """
    n = frame.shape[0]
    Xk = model_matrix_for(block.spec, frame, f"random term '({block.term.expr} | {block.term.group_name})'")
    term = block.term
    if block.grid is not None:
        labels = [":".join(f"{d.variable}={_label(v)}" for d, v in zip(block.grid.dimensions, row))
                  for row in frame[[d.variable for d in block.grid.dimensions]].itertuples(index=False)]
    else:
        cols = [frame[p.variable] for p in term.group]
        labels = [":".join(_label(v) for v in row) for row in zip(*cols)]
    index = {lev: i for i, lev in enumerate(block.factor.levels)}
    codes = np.array([index.get(lab, -1) for lab in labels], dtype=np.int64)
    seen = codes >= 0
    m = block.n_columns
    rows = np.repeat(np.flatnonzero(seen), m)
    cols = (codes[seen][:, None] * m + np.arange(m)[None, :]).ravel()
    Z = sp.csc_matrix((Xk[seen].ravel(), (rows, cols)), shape=(n, block.n_levels * m))
    return Z, ~seen, Xk


@functools.lru_cache(maxsize=1)
def _intercept_spec():
    """formulaic's spec of the left side ``1`` (it holds no state of the data)."""
    return formulaic_formula("1").get_model_matrix(pd.DataFrame(index=range(1)), output="numpy").model_spec


def _term_matrix(frame: pd.DataFrame, term: RandomTerm, formula: str):
    if term.expr.strip() == "1":  # a random intercept, the commonest term: its column without formulaic's work
        spec = _intercept_spec()
        return np.ones((frame.shape[0], 1)), tuple(r_style_name(str(c)) for c in spec.column_names), spec
    try:
        mm = formulaic_formula(term.expr).get_model_matrix(frame, na_action="raise", output="numpy")
    except Exception as exc:
        raise FormulaSyntaxError(
            f"formulaic cannot build the random term's left side '{term.expr}': {str(exc).splitlines()[0]}",
            formula,
            term.position,
        ) from None
    Xk = np.asarray(mm, dtype=float)
    names = tuple(r_style_name(_restore_r_calls(str(c), term.expr)) for c in mm.model_spec.column_names)
    if Xk.shape[1] > 1 and np.linalg.matrix_rank(Xk) < Xk.shape[1]:
        raise DataError(
            f"the columns {', '.join(names)} of the random term '({term.expr} | {term.group_name})' are "
            "linearly dependent (e.g. a constant covariate next to the intercept), so their variances are "
            "not identifiable; remove the redundant column from the term"
        )
    if Xk.shape[1] == 0:
        raise FormulaSyntaxError(
            f"the random term '({term.expr} | {term.group_name})' has no columns; "
            "write '(1 | g)' for an intercept",
            formula,
            term.position,
        )
    return np.ascontiguousarray(Xk), names, mm.model_spec
