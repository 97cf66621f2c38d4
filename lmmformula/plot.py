"""Diagnostic plots of a fit (matplotlib, the optional extra ``pip install lmmformula[plot]``).

Every function takes a :class:`~lmmformula.FitResult`, draws on a new figure (or the ``ax`` given) and returns
the matplotlib Axes:

- :func:`variogram` - the sample semi-variogram surface by row and column displacement (field trials);
- :func:`residuals` - conditional residuals against fitted values;
- :func:`field` - residuals at their field positions (a heat map);
- :func:`shrinkage` - unshrunk estimates against BLUPs of one term, coloured by reliability;
- :func:`caterpillar` - the BLUPs of one term, sorted, with +-1.96 sqrt(PEV) intervals.
"""

from __future__ import annotations

import numpy as np

from .errors import ModelSpecificationError

__all__ = ["variogram", "residuals", "field", "shrinkage", "caterpillar"]


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - exercised only without the extra
        raise ModelSpecificationError(
            "plots need matplotlib: pip install 'lmmformula[plot]' (or pip install matplotlib)") from None
    return plt


def _axes(ax, projection=None):
    plt = _pyplot()
    if ax is not None:
        return ax
    fig = plt.figure(figsize=(6, 4.5))
    return fig.add_subplot(111, projection=projection)


def variogram(fit, row: str | None = None, col: str | None = None, max_lag: int | None = None, ax=None):
    """Surface of :meth:`FitResult.variogram` (3-D wireframe of ``gamma`` over the two displacements)."""
    vg = fit.variogram(row=row, col=col, max_lag=max_lag)
    table = vg.pivot(index="row_lag", columns="col_lag", values="gamma")
    ax = _axes(ax, projection="3d")
    C, R = np.meshgrid(table.columns.to_numpy(), table.index.to_numpy())
    ax.plot_wireframe(C, R, table.to_numpy(), color="tab:blue", linewidth=0.8)
    ax.set_xlabel("column displacement")
    ax.set_ylabel("row displacement")
    ax.set_zlabel("semi-variance")
    ax.set_title("Sample variogram of residuals")
    return ax


def residuals(fit, ax=None):
    """Conditional residuals against conditional fitted values."""
    ax = _axes(ax)
    ax.scatter(fit.fitted_values, fit.residuals, s=12, alpha=0.7)
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_xlabel("fitted value")
    ax.set_ylabel("residual")
    ax.set_title(fit.formula, fontsize=9)
    return ax


def field(fit, row: str | None = None, col: str | None = None, ax=None):
    """Residuals at their (row, column) positions; unobserved plots blank."""
    r, c = fit._positions(row, col)
    grid = np.full((r.max() + 1, c.max() + 1), np.nan)
    grid[r, c] = fit.residuals
    ax = _axes(ax)
    image = ax.imshow(grid, origin="lower", cmap="RdBu_r", aspect="auto")
    ax.figure.colorbar(image, ax=ax, label="residual")
    ax.set_xlabel("column")
    ax.set_ylabel("row")
    ax.set_title("Residuals in the field")
    return ax


def _effect(fit, term: str, effect: str | None) -> str:
    detail_cols = [c[len("blup("):-1] for c in fit.shrinkage_detail(term).columns if c.startswith("blup(")]
    if effect is None:
        return detail_cols[0]
    if effect not in detail_cols:
        raise ModelSpecificationError(f"term '{term}' has the effects {detail_cols}, not {effect!r}")
    return effect


def shrinkage(fit, term: str, effect: str | None = None, ax=None):
    """Unshrunk (fixed-effect) estimates against BLUPs of a term, coloured by reliability; the 1:1 line."""
    d = fit.shrinkage_detail(term)
    effect = _effect(fit, term, effect)
    x, y = d[f"unshrunk({effect})"], d[f"blup({effect})"]
    ax = _axes(ax)
    points = ax.scatter(x, y, c=d[f"reliability({effect})"], cmap="viridis", s=18, vmin=0, vmax=1)
    lim = np.nanmax(np.abs(np.concatenate([x, y]))) * 1.05 if len(x) else 1.0
    ax.plot([-lim, lim], [-lim, lim], color="grey", linewidth=0.8)
    ax.figure.colorbar(points, ax=ax, label="reliability")
    ax.set_xlabel("unshrunk estimate")
    ax.set_ylabel("BLUP")
    ax.set_title(f"Shrinkage: {term}, {effect}")
    return ax


def caterpillar(fit, term: str, effect: str | None = None, ax=None):
    """Sorted BLUPs of a term with +-1.96 sqrt(PEV) intervals."""
    d = fit.shrinkage_detail(term)
    effect = _effect(fit, term, effect)
    b = d[f"blup({effect})"].to_numpy()
    half = 1.96 * np.sqrt(d[f"pev({effect})"].to_numpy())
    order = np.argsort(b)
    ax = _axes(ax)
    pos = np.arange(b.size)
    ax.errorbar(b[order], pos, xerr=half[order], fmt="o", markersize=3, linewidth=0.8)
    ax.axvline(0.0, color="grey", linewidth=0.8)
    if b.size <= 40:
        ax.set_yticks(pos)
        ax.set_yticklabels(np.asarray(d.index)[order], fontsize=7)
    ax.set_xlabel("BLUP")
    ax.set_title(f"{term}: {effect}")
    return ax
