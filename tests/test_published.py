"""Published ASReml analyses of real trials, reproduced.

Gilmour, Cullis & Verbyla (1997), model 4 for the Slate Hall trial (agridat ``gilmour.slatehall``):
``asreml(yield ~ gen + lin(row), random = ~ dev(row) + dev(col), rcov = ~ ar1(xf):ar1(yf))`` with
``xf = factor(col)``, ``yf = factor(row)``.  The printed values below are those of the agridat documentation's
example for that data set (``vc(m4)`` and ``coef(m4)$fixed[1]``, ASReml 3), rounded as printed there.
"""

from __future__ import annotations

import pytest

import lmmformula as lmf
from lmmformula.datasets import load

# term, parameter, published estimate, published standard error (as printed: 3-4 significant digits)
SLATEHALL_MODEL_4 = [
    ("row", "variance", 20290, 10260),
    ("col", "variance", 2519, 1959),
    ("residual", "variance", 23950, 4616),
    ("residual", "rho(col)", 0.439, 0.113),
    ("residual", "rho(row)", 0.125, 0.117),
]


def test_slatehall_model_4_of_gilmour_cullis_verbyla_1997():
    fit = lmf.LMM.from_formula("yield ~ gen + row + (1 | row) + (1 | col) + ar1(col):ar1(row)",
                               load("slatehall")).fit()
    assert fit.converged
    vc = fit.variance_components.set_index(["term", "parameter"])
    for term, parameter, estimate, se in SLATEHALL_MODEL_4:
        ours = vc.loc[(term, parameter)]
        assert ours["estimate"] == pytest.approx(estimate, rel=5e-3, abs=5e-4), (term, parameter)
        assert ours["std_error"] == pytest.approx(se, rel=5e-3, abs=5e-4), (term, parameter)
    # linear row trend: 31.72252 in the published output (sign switched there by the row ordering)
    assert abs(fit.fixed_effects.loc["row", "estimate"]) == pytest.approx(31.72252, rel=1e-5)
