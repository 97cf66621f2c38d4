"""The plot module draws every figure (skipped without matplotlib, the optional extra 'plot')."""

from __future__ import annotations

import pytest

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402

import lmmformula as lmf  # noqa: E402
from conftest import load_data  # noqa: E402
from lmmformula import plot  # noqa: E402


@pytest.fixture(scope="module")
def spatial_fit():
    return lmf.LMM.from_formula("yield ~ 1 + (1 | gen) + ar1(row):ar1(col)", load_data("slatehall")).fit()


@pytest.mark.parametrize("draw", [
    lambda f: plot.variogram(f),
    lambda f: plot.residuals(f),
    lambda f: plot.field(f),
    lambda f: plot.shrinkage(f, "gen"),
    lambda f: plot.caterpillar(f, "gen"),
])
def test_each_plot_saves_a_non_empty_png(spatial_fit, draw, tmp_path):
    ax = draw(spatial_fit)
    path = tmp_path / "figure.png"
    ax.figure.savefig(path)
    plt.close(ax.figure)
    assert path.stat().st_size > 5_000
    with open(path, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_plot_errors_name_the_problem(spatial_fit):
    with pytest.raises(lmf.LMMError, match="effects"):
        plot.shrinkage(spatial_fit, "gen", effect="Days")
    sleep = lmf.LMM.from_formula("Reaction ~ Days + (1 | Subject)", load_data("sleepstudy.csv")).fit()
    with pytest.raises(lmf.LMMError, match="name them"):
        plot.variogram(sleep)
