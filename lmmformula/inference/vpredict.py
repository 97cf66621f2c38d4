"""Functions of covariance parameters with delta-method standard errors (ASReml's ``vpredict``).

For ``f(psi)`` with ``Cov(psi_hat) = A``, ``SE(f) = sqrt(g'Ag)`` with ``g`` the gradient of ``f`` (central
differences).  The expression is parsed with Python's ``ast`` and evaluated on a whitelist of operations: no
attribute access, no calls other than a few numpy functions.
"""

from __future__ import annotations

import ast
import re

import numpy as np

from ..errors import ModelSpecificationError

__all__ = ["evaluate_expression"]

_FUNCTIONS = {"sqrt": np.sqrt, "log": np.log, "exp": np.exp, "abs": np.abs}
_NODES = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.Name, ast.Load, ast.Call, ast.Add, ast.Sub,
          ast.Mult, ast.Div, ast.Pow, ast.USub, ast.UAdd)


def _compile(text: str, labels: list[str]):
    """Replace labels (longest first) by placeholders and compile the checked expression.

    Messages quote the expression as the user wrote it (placeholders turned back into labels)."""
    original = text.strip()
    placeholders = {}
    for i, label in sorted(enumerate(labels), key=lambda x: -len(x[1])):
        token = f"_p{i}_"
        pattern = r"(?<![\w.:])" + re.escape(label) + r"(?![\w.:(])"
        text, count = re.subn(pattern, token, text)
        if count:
            placeholders[token] = i

    def shown(node) -> str:
        return re.sub(r"_p(\d+)_", lambda m: labels[int(m.group(1))], ast.unparse(node))

    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ModelSpecificationError(
            f"cannot parse the expression '{original}' ({exc.msg}); write arithmetic of the labels of "
            "variance_components, e.g. 'h2 = gen / (gen + residual)'") from None
    for node in ast.walk(tree):
        if not isinstance(node, _NODES):
            raise ModelSpecificationError(
                f"'{shown(node)}' is not allowed in a vpredict expression (use + - * / **, numbers, "
                f"{', '.join(_FUNCTIONS)} and the labels of variance_components)")
        if isinstance(node, ast.Name) and node.id not in placeholders and node.id not in _FUNCTIONS:
            raise ModelSpecificationError(
                f"unknown name '{node.id}' in a vpredict expression; use the labels of variance_components: "
                f"{', '.join(labels)}")
        if isinstance(node, ast.Call) and not (isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS):
            raise ModelSpecificationError(
                f"'{shown(node.func)}' may not be called in a vpredict expression; only "
                f"{', '.join(_FUNCTIONS)} may be called")
    return compile(tree, "<vpredict>", "eval"), placeholders


def evaluate_expression(expression: str, labels: list[str], values: np.ndarray,
                        cov: np.ndarray) -> tuple[str, float, float]:
    """Name, value and delta-method standard error of ``expression`` (``"name = f(labels)"`` or ``"f(...)"``).

    Parameters
    ----------
    expression : str
    labels : list of str
        Names of the parameters, in the order of ``values``.
    values : ndarray
        Estimates.
    cov : ndarray
        Their sampling covariance.
    """
    if not isinstance(expression, str) or not expression.strip():
        raise ModelSpecificationError(f"vpredict needs an expression such as 'h2 = gen / (gen + residual)', "
                                      f"got {expression!r}")
    name, _, rhs = expression.partition("=") if re.match(r"^\s*[A-Za-z_]\w*\s*=[^=]", expression) else ("", "",
                                                                                                      expression)
    code, placeholders = _compile(rhs, labels)

    def f(x):
        env = {token: x[i] for token, i in placeholders.items()}
        env.update(_FUNCTIONS)
        with np.errstate(all="ignore"):
            return float(eval(code, {"__builtins__": {}}, env))  # noqa: S307 - checked AST, whitelisted names

    values = np.asarray(values, dtype=float)
    value = f(values)
    g = np.zeros(values.size)
    for i in placeholders.values():
        h = 1e-6 * max(abs(values[i]), 1e-8)
        e = np.zeros(values.size)
        e[i] = h
        g[i] = (f(values + e) - f(values - e)) / (2.0 * h)
    se = float(np.sqrt(max(g @ cov @ g, 0.0))) if np.all(np.isfinite(cov[np.ix_(g != 0, g != 0)])) else np.nan
    return (name.strip() or rhs.strip()), value, se
