"""Table-driven tests of the formula parser."""

from __future__ import annotations

import pytest

from lmmformula import FormulaSyntaxError, LMMError, parse_formula


def _terms(formula):
    p = parse_formula(formula)
    return p.fixed, [(t.expr, t.group_name, t.correlated) for t in p.random], (
        p.residual.text if p.residual else None)


@pytest.mark.parametrize(
    "formula, fixed, random, residual",
    [
        ("y ~ x + (1 | g)", "x", [("1", "g", True)], None),
        ("y ~ (1 | g)", "1", [("1", "g", True)], None),
        ("Reaction ~ Days + (Days | Subject)", "Days", [("Days", "Subject", True)], None),
        ("y ~ x + (x || g)", "x", [("x", "g", False)], None),
        ("y ~ 1 + (1 | a/b)", "1", [("1", "a", True), ("1", "a:b", True)], None),
        ("y ~ 1 + (1 | a/b/c)", "1", [("1", "a", True), ("1", "a:b", True), ("1", "a:b:c", True)], None),
        ("y ~ 1 + (1 | a:b)", "1", [("1", "a:b", True)], None),
        ("y ~ a*b - 1 + (0 + x | g) + (1 | h)", "a*b - 1", [("0 + x", "g", True), ("1", "h", True)], None),
        ("y ~ log(x) + C(f) + (1|g)", "log(x) + C(f)", [("1", "g", True)], None),
        ("y ~ variety + (1|plot) + ar1(row):ar1(col)", "variety", [("1", "plot", True)], "ar1(row):ar1(col)"),
        ("y ~ x + Subject:us(age)", "x", [], "Subject:us(age)"),
        ("y ~ x + (1 | ar1(row):ar1(col))", "x", [("1", "ar1(row):ar1(col)", True)], None),
        ('y ~ x + (1 | vm(animal, "A"))', "x", [("1", 'vm(animal, "A")', True)], None),
        ("y ~ x + ar1(0 + t | s)", "x", [("0 + t", "s", True)], None),
        ("y ~ x + fa(0 + env | gen, 2)", "x", [("0 + env", "gen", True)], None),
        ("y ~ x + (1 + x | g) + (1 | h) + (1 | g:h)", "x", [("1 + x", "g", True), ("1", "h", True),
                                                            ("1", "g:h", True)], None),
    ],
)
def test_split(formula, fixed, random, residual):
    got_fixed, got_random, got_residual = _terms(formula)
    assert got_fixed == fixed
    assert got_random == random
    assert got_residual == residual


def test_structure_is_recorded():
    p = parse_formula("y ~ x + fa(0 + env | gen, 2)")
    assert p.random[0].structure.name == "fa"
    assert p.random[0].structure.args[1] == "2"
    p = parse_formula("y ~ x + ar1(row):ar1(col)")
    assert [part.structure.name for part in p.residual.parts] == ["ar1", "ar1"]
    assert [part.variable for part in p.residual.parts] == ["row", "col"]


@pytest.mark.parametrize(
    "formula, caret_at",
    [
        ("y ~ x + (1 | g", "("),
        ("y ~ x + 1 | g)", ")"),
        ("y ~ x | g", "|"),
        ("y ~ (1 | g | h)", "| h"),
        ("y ~ x + ar1(r):ar1(c) + ar1(t)", "ar1(t)"),
        ("y ~ fa(0 + env | gen)", "fa("),
        ("y ~ x + (1 | fa(gen))", "fa("),
        ("y ~ x + (1 | foo(g))", "foo"),
        ("y ~ x + (1 | )", "|"),
        ("y ~ x + ( | g)", "|"),
        ("y ~ x + ar1(r) * z", "*"),
        ("y ~ x + (1 | a//b)", "/"),
        ("y ~ x - (1 | g)", "("),
    ],
)
def test_syntax_errors_point_at_the_token(formula, caret_at):
    with pytest.raises(FormulaSyntaxError) as err:
        parse_formula(formula)
    assert isinstance(err.value, LMMError) and isinstance(err.value, ValueError)
    lines = str(err.value).splitlines()
    assert lines[-2].strip() == formula.strip()
    caret = lines[-1].index("^") - 4
    assert formula[caret:].startswith(caret_at), (formula, caret)


@pytest.mark.parametrize("formula", ["y x + (1|g)", "~ x + (1 | g)", "y ~ x ~ z", "y ~ "])
def test_malformed_formulas(formula):
    with pytest.raises(FormulaSyntaxError):
        parse_formula(formula)


def test_not_a_string():
    with pytest.raises(FormulaSyntaxError):
        parse_formula(3)
