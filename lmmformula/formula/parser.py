"""Split an lme4-style formula into fixed, random and residual parts.

The grammar (lme4's ``findbars``/``nobars`` idea, extended with structures)::

    formula   := response "~" summand (("+" | "-") summand)*
    summand   := "(" expr ("|" | "||") group ")"          random term
               | STRUCT "(" expr "|" group ["," arg] ")"   structured random term
               | part (":" part)*  with >= 1 STRUCT call   residual term
               | anything else                             fixed part (formulaic)
    group     := segment ("/" segment)*                    a/b -> a, a:b
    segment   := part (":" part)*
    part      := NAME | STRUCT "(" NAME ["," arg]* ")"

``STRUCT`` is one of the reserved names of :mod:`.registry`.  The fixed part
is handed to formulaic unchanged.
"""

from __future__ import annotations

import re

from ..errors import FormulaSyntaxError
from .registry import structure_hint, STRUCTURES, is_structure_name
from .terms import GroupPart, ParsedFormula, RandomTerm, ResidualTerm, StructureCall
from .tokens import Token, tokenize

__all__ = ["parse_formula"]

_CALL = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_.]*)\s*\((.*)\)\s*$", re.S)


def parse_formula(formula: str) -> ParsedFormula:
    """Parse a mixed-model formula.

    Parameters
    ----------
    formula : str
        For example ``"y ~ variety + (1 | block) + ar1(row):ar1(col)"``.

    Returns
    -------
    ParsedFormula

    Raises
    ------
    FormulaSyntaxError
        With a caret under the offending token.
    """
    if not isinstance(formula, str):
        raise FormulaSyntaxError(
            f"the formula must be a string such as 'y ~ x + (1 | g)', got {type(formula).__name__}"
        )
    _check_parentheses(formula)
    tilde = [m.start() for m in re.finditer("~", formula)]
    if len(tilde) != 1:
        pos = tilde[1] if len(tilde) > 1 else None
        raise FormulaSyntaxError(
            "a formula needs exactly one '~' between the response and the predictors, "
            "e.g. 'y ~ x + (1 | g)'",
            formula,
            pos,
        )
    response = formula[: tilde[0]].strip()
    if not response:
        raise FormulaSyntaxError("the response (left of '~') is missing; write it before the '~', e.g. "
                                 "'y ~ x + (1 | g)'", formula, 0)
    rhs_start = tilde[0] + 1
    tokens = tokenize(formula[rhs_start:], offset=rhs_start)
    _check_operators(formula, tokens)
    if not tokens:
        raise FormulaSyntaxError("nothing on the right of '~'; write 'y ~ 1' for an intercept-only model", formula, len(formula) - 1)

    fixed_pieces: list[str] = []
    random: list[RandomTerm] = []
    residual: ResidualTerm | None = None
    for sign, chunk in _split_summands(formula, tokens):
        kind = _classify(formula, chunk)
        if kind == "fixed":
            _refuse_bars_in_fixed(formula, chunk)
            text = formula[chunk[0].start : chunk[-1].end].strip()
            fixed_pieces.append(f"{sign} {text}" if fixed_pieces or sign == "-" else text)
            continue
        if sign == "-":
            raise FormulaSyntaxError(
                "random and residual terms cannot be subtracted; remove the '-'", formula, chunk[0].start
            )
        if kind == "random":
            random.extend(_parse_random(formula, chunk))
        elif kind == "structured_random":
            random.extend(_parse_structured_random(formula, chunk[0]))
        else:
            if residual is not None:
                raise FormulaSyntaxError(
                    f"two residual terms ('{residual.text}' and "
                    f"'{formula[chunk[0].start:chunk[-1].end]}'); a model has one residual structure, "
                    "join dimensions with ':' (e.g. ar1(row):ar1(col))",
                    formula,
                    chunk[0].start,
                )
            residual = _parse_residual(formula, chunk)
    fixed = " ".join(fixed_pieces).strip()
    if not fixed or fixed.startswith("-"):
        fixed = "1 " + fixed if fixed else "1"
    return ParsedFormula(formula=formula, response=response, fixed=fixed, random=tuple(random), residual=residual)


def _check_operators(formula: str, tokens: list[Token]) -> None:
    """Refuse operators formulaic merged with a bar (``(1 | /g)`` gives the token ``|/``)."""
    for tok in tokens:
        if tok.kind == "operator" and "|" in tok.text and tok.text not in ("|", "||"):
            raise FormulaSyntaxError(
                f"'{tok.text}' is not an operator: a grouping factor is missing after the bar; "
                "write e.g. '(1 | a/b)' or '(1 | a:b)'",
                formula,
                tok.start,
            )


def _check_parentheses(formula: str) -> None:
    stack: list[int] = []
    quote: str | None = None
    for i, ch in enumerate(formula):
        if quote:
            if ch == quote:
                quote = None
            continue
        if ch in "\"'`":
            quote = ch
        elif ch == "(":
            stack.append(i)
        elif ch == ")":
            if not stack:
                raise FormulaSyntaxError("unbalanced parentheses: this ')' has no matching '('; remove it or add the "
                                         "'(' it closes", formula, i)
            stack.pop()
    if stack:
        raise FormulaSyntaxError("unbalanced parentheses: this '(' is never closed; add the missing ')'",
                                 formula, stack[-1])


def _split_summands(formula: str, tokens: list[Token]) -> list[tuple[str, list[Token]]]:
    """Split tokens at top-level ``+``/``-`` into (sign, tokens) chunks."""
    out: list[tuple[str, list[Token]]] = []
    depth = 0
    sign = "+"
    current: list[Token] = []
    for tok in tokens:
        if tok.is_open():
            depth += 1
        elif tok.is_close():
            depth -= 1
        if depth == 0 and tok.is_op("+", "-"):
            if current:
                out.append((sign, current))
            elif tok.text == "+" or sign == "-":
                raise FormulaSyntaxError(f"'{tok.text}' with nothing before it", formula, tok.start)
            sign, current = tok.text, []
            continue
        if depth == 0 and tok.is_op("|", "||"):
            raise FormulaSyntaxError(
                "a random term must be in parentheses, e.g. '(1 | g)'", formula, tok.start
            )
        current.append(tok)
    if not current:
        raise FormulaSyntaxError("the formula ends with an operator", formula, tokens[-1].start)
    out.append((sign, current))
    return out


def _refuse_bars_in_fixed(formula: str, chunk: list[Token]) -> None:
    """A '|' inside a call of the fixed part (glmmTMB's ``exp(t + 0 | g)``, ``I(a | b)``) would reach formulaic as
    a bitwise or: refuse it."""
    for tok in chunk:
        call = _call(tok)
        if call is not None and "|" in call[1]:
            hint = structure_hint(call[0])
            raise FormulaSyntaxError(
                f"'|' inside '{call[0]}(...)' in the fixed part; random terms are written '(expr | group)', with a "
                f"structure around them such as ar1(0 + factor(t) | g)" + (f"; {hint}" if hint else ""),
                formula, tok.start)


def _call(tok: Token) -> tuple[str, str] | None:
    """Return (function name, argument text) when ``tok`` is a Python call token."""
    if tok.kind != "python":
        return None
    m = _CALL.match(tok.text)
    return (m.group(1), m.group(2)) if m else None


def _is_structure_token(tok: Token) -> bool:
    call = _call(tok)
    return call is not None and is_structure_name(call[0])


def _bar_positions(tokens: list[Token]) -> list[Token]:
    """Bars at depth 1 inside a parenthesised chunk."""
    depth, bars = 0, []
    for tok in tokens:
        if tok.is_open():
            depth += 1
        elif tok.is_close():
            depth -= 1
        elif depth == 1 and tok.is_op("|", "||"):
            bars.append(tok)
    return bars


def _classify(formula: str, chunk: list[Token]) -> str:
    first = chunk[0]
    if first.is_open() and chunk[-1].is_close() and _closes_at_end(chunk):
        if _bar_positions(chunk):
            return "random"
        return "fixed"
    structs = [t for t in chunk if _is_structure_token(t)]
    if len(chunk) == 1 and structs and "|" in _call(first)[1]:
        return "structured_random"
    if structs:
        for t in chunk:
            if t.is_op(":") or t.kind == "name" or _is_structure_token(t):
                continue
            raise FormulaSyntaxError(
                f"'{t.text}' cannot be combined with a covariance structure here; a residual term "
                "joins structures and factors with ':' only (e.g. ar1(row):ar1(col)), and a structured "
                "random term is written like ar1(0 + time | subject)",
                formula,
                t.start,
            )
        return "residual"
    return "fixed"


def _closes_at_end(chunk: list[Token]) -> bool:
    depth = 0
    for i, tok in enumerate(chunk):
        if tok.is_open():
            depth += 1
        elif tok.is_close():
            depth -= 1
            if depth == 0 and i != len(chunk) - 1:
                return False
    return True


def _parse_random(formula: str, chunk: list[Token], structure: StructureCall | None = None) -> list[RandomTerm]:
    bars = _bar_positions(chunk)
    if len(bars) > 1:
        raise FormulaSyntaxError("a random term has one '|'; this one is extra", formula, bars[1].start)
    bar = bars[0]
    lhs = formula[chunk[0].end : bar.start].strip()
    if not lhs:
        raise FormulaSyntaxError("nothing on the left of '|'; write '(1 | g)' for a random intercept", formula, bar.start)
    group_tokens = [t for t in chunk[1:-1] if t.start >= bar.end]
    if not group_tokens:
        raise FormulaSyntaxError("nothing on the right of '|'; name the grouping factor, e.g. '(1 | g)'", formula, bar.start)
    groups = _parse_group(formula, group_tokens)
    return [
        RandomTerm(expr=lhs, group=g, correlated=bar.text == "|", structure=structure, position=chunk[0].start)
        for g in groups
    ]


def _parse_structured_random(formula: str, tok: Token) -> list[RandomTerm]:
    name, inner = _call(tok)
    open_at = tok.start + tok.text.index("(")
    inner_tokens = tokenize(inner, offset=open_at + 1)
    args = _split_args(inner_tokens)
    spec = STRUCTURES[name]
    if not spec.min_args <= len(args) <= spec.max_args:
        _arity_error(formula, name, len(args), tok.start)
    term_tokens = args[0]
    bars = [t for t in term_tokens if t.is_op("|", "||")]
    if len(bars) != 1:
        raise FormulaSyntaxError(f"'{name}(...)' around a random term needs exactly one '|'", formula, tok.start)
    if bars[0].text == "||":
        raise FormulaSyntaxError(f"'||' inside '{name}(...)' is ambiguous; use '|'", formula, bars[0].start)
    extra = tuple(formula[a[0].start : a[-1].end].strip() for a in args[1:])
    call = StructureCall(name=name, args=(formula[term_tokens[0].start:term_tokens[-1].end],) + extra,
                         text=tok.text, position=tok.start)
    fake = [Token("(", "context", open_at, open_at + 1), *term_tokens, Token(")", "context", tok.end - 1, tok.end)]
    return _parse_random(formula, fake, structure=call)


def _split_args(tokens: list[Token]) -> list[list[Token]]:
    args: list[list[Token]] = [[]]
    depth = 0
    for t in tokens:
        if t.is_open():
            depth += 1
        elif t.is_close():
            depth -= 1
        if depth == 0 and t.kind == "operator" and t.text == ",":
            args.append([])
            continue
        args[-1].append(t)
    return [a for a in args if a] if any(args) else []


def _arity_error(formula: str, name: str, n: int, pos: int) -> None:
    spec = STRUCTURES[name]
    want = str(spec.min_args) if spec.min_args == spec.max_args else f"{spec.min_args} to {spec.max_args}"
    hint = {"fa": " (e.g. fa(env, 2) for two factors)", "ma": " (e.g. ma(time, 2))",
            "vm": ' (e.g. vm(animal, "A") with matrices={"A": A})'}.get(name, "")
    raise FormulaSyntaxError(
        f"'{name}' ({spec.meaning}) takes {want} argument(s), got {n}{hint}", formula, pos
    )


def _parse_part(formula: str, tok: Token) -> GroupPart:
    if tok.kind == "name":
        return GroupPart(variable=tok.text.strip("`"))
    call = _call(tok)
    if call is not None and is_structure_name(call[0]):
        name, inner = call
        open_at = tok.start + tok.text.index("(")
        args = _split_args(tokenize(inner, offset=open_at + 1)) if inner.strip() else []
        spec = STRUCTURES[name]
        if not spec.min_args <= len(args) <= spec.max_args:
            _arity_error(formula, name, len(args), tok.start)
        if len(args[0]) != 1 or args[0][0].kind != "name":
            raise FormulaSyntaxError(
                f"the first argument of '{name}' must be a column name; compute a transformed position as a "
                f"column first (e.g. data['t2'] = ...) and write {name}(t2)", formula, args[0][0].start
            )
        texts = tuple(formula[a[0].start : a[-1].end].strip() for a in args)
        return GroupPart(variable=texts[0].strip("`"),
                         structure=StructureCall(name=name, args=texts, text=tok.text, position=tok.start))
    if call is not None:
        hint = (f"; a grouping is always a factor, so write the column alone: '{call[1].strip()}'"
                if call[0] in ("factor", "C", "as.factor") else "")
        raise FormulaSyntaxError(
            f"unknown structure or function '{call[0]}' in a grouping; known structures are "
            + ", ".join(STRUCTURES) + hint,
            formula,
            tok.start,
        )
    raise FormulaSyntaxError(
        f"'{tok.text}' cannot appear in a grouping; use column names joined by ':' or '/'",
        formula,
        tok.start,
    )


def _parse_group(formula: str, tokens: list[Token]) -> list[tuple[GroupPart, ...]]:
    """``a/b:c`` -> [(a,), (a, b, c)]; ``a:b`` -> [(a, b)]."""
    segments: list[list[GroupPart]] = [[]]
    expect_part = True
    for tok in tokens:
        if tok.is_op("/", ":"):
            if expect_part:
                raise FormulaSyntaxError(f"'{tok.text}' needs a factor on each side", formula, tok.start)
            if tok.text == "/":
                segments.append([])
            expect_part = True
            continue
        if not expect_part:
            raise FormulaSyntaxError(
                f"unexpected '{tok.text}' in the grouping; join factors with ':' or '/'", formula, tok.start
            )
        segments[-1].append(_parse_part(formula, tok))
        expect_part = False
    if expect_part:
        raise FormulaSyntaxError("the grouping ends with an operator", formula, tokens[-1].start)
    groups, acc = [], []
    for seg in segments:
        acc = acc + seg
        groups.append(tuple(acc))
    return groups


def _parse_residual(formula: str, chunk: list[Token]) -> ResidualTerm:
    parts = []
    expect_part = True
    for tok in chunk:
        if tok.is_op(":"):
            if expect_part:
                raise FormulaSyntaxError("':' needs a factor on each side", formula, tok.start)
            expect_part = True
            continue
        if not expect_part:
            raise FormulaSyntaxError(f"unexpected '{tok.text}'; join factors with ':'", formula, tok.start)
        parts.append(_parse_part(formula, tok))
        expect_part = False
    if expect_part:
        raise FormulaSyntaxError("the residual term ends with ':'", formula, chunk[-1].start)
    text = formula[chunk[0].start : chunk[-1].end]
    return ResidualTerm(parts=tuple(parts), text=text, position=chunk[0].start)
