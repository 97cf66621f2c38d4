"""The only module that touches formulaic's tokenizer.

formulaic's tokenizer knows Python calls, quoting and operators; we use it to
split the right-hand side of a formula into tokens with source positions,
and never parse what it already parses.
"""

from __future__ import annotations

from dataclasses import dataclass

from formulaic.parser.algos.tokenize import tokenize as _formulaic_tokenize

from ..errors import FormulaSyntaxError

__all__ = ["Token", "tokenize"]


@dataclass(frozen=True)
class Token:
    """A token with its kind and half-open source span ``[start, end)``."""

    text: str
    kind: str  # "name", "python", "value", "operator", "context"
    start: int
    end: int

    def is_op(self, *ops: str) -> bool:
        return self.kind == "operator" and self.text in ops

    def is_open(self) -> bool:
        return self.kind == "context" and self.text == "("

    def is_close(self) -> bool:
        return self.kind == "context" and self.text == ")"


def tokenize(text: str, offset: int = 0) -> list[Token]:
    """Tokenize ``text`` with formulaic; positions are shifted by ``offset``.

    Raises
    ------
    FormulaSyntaxError
        When formulaic cannot tokenize the text.
    """
    try:
        raw = list(_formulaic_tokenize(text))
    except Exception as exc:  # formulaic raises several exception types here
        raise FormulaSyntaxError(f"cannot read the formula: {exc}", text) from None
    out = []
    for t in raw:
        kind = t.kind.name.lower() if hasattr(t.kind, "name") else str(t.kind).lower()
        start = t.source_start if t.source_start is not None else 0
        end = (t.source_end + 1) if t.source_end is not None else start + len(t.token)
        end = _include_closing_quote(text, start, end)
        out.append(Token(str(t.token), kind, start + offset, end + offset))
    return out


def _include_closing_quote(text: str, start: int, end: int) -> int:
    """formulaic's span of a quoted name (```my x```) stops before the closing quote; include it."""
    if 0 <= start < len(text) and text[start] in "`'\"" and end < len(text) and text[end] == text[start]:
        return end + 1
    return end
