"""Markdown text for the generated pages: escaping outside code spans, table cells, anchors."""

from __future__ import annotations

import re

# Characters Python-Markdown reads as markup in prose (emphasis, links, table cells); '<' and '>' (HTML) are
# not backslash-escapable there, so they become entities. Code spans are left as they are.
_SPECIAL = re.compile(r"([\\*_\[\]|])")
_ENTITIES = {"<": "&lt;", ">": "&gt;"}
_CODE_SPAN = re.compile(r"(`[^`]*`)")


def escape(text: str) -> str:
    """``text`` as literal Markdown: markup characters escaped outside `code spans`."""
    parts = []
    for part in _CODE_SPAN.split(text):
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            parts.append(part)
        else:
            escaped = _SPECIAL.sub(r"\\\1", part)
            parts.append("".join(_ENTITIES.get(char, char) for char in escaped))
    return "".join(parts)


def code(text: str) -> str:
    """``text`` as an inline code span."""
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def cell(text: str) -> str:
    """Text for one table cell: one line (paragraphs kept apart with <br>); "—" when empty."""
    lines = [line.strip() for line in text.strip().splitlines()]
    return " ".join(line if line else "<br><br>" for line in lines) or "—"


def anchor(text: str) -> str:
    """A stable HTML id from a dotted path or a command: lower case, words joined by '-'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "top"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown table. Cells come from ``escape`` and ``code``: a '|' in prose is escaped, and one inside a
    code span needs no escape (the tables extension does not split cells inside code spans)."""

    def row(cells: list[str]) -> str:
        return "| " + " | ".join(cells) + " |"

    return [row(header), "|" + "|".join("---" for _ in header) + "|", *(row(r) for r in rows)]
