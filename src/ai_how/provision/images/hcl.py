"""HCL2 native syntax from plain data: blocks with labels, attributes, lists and objects.

Strings are quoted and escaped, including ``${`` and ``%{`` (written ``$${``/``%%{`` so Packer does not
interpolate them); an ``Expr`` is written as it is (``var.name``, ``"${path.root}/x"``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

_INDENT = "  "


@dataclass(frozen=True)
class Expr:
    """An HCL expression written verbatim (a reference or a template with interpolation)."""

    text: str

    @staticmethod
    def template(text: str) -> Expr:
        """A quoted string whose ``${...}`` parts are interpolated (only quotes and backslashes escaped)."""
        return Expr('"' + _escape_chars(text) + '"')


@dataclass(frozen=True)
class Block:
    type: str
    labels: tuple[str, ...] = ()
    attributes: Mapping[str, Any] = field(default_factory=dict)
    blocks: Sequence[Block] = ()


def _escape_chars(text: str) -> str:
    out = []
    for char in text:
        if char == "\\":
            out.append("\\\\")
        elif char == '"':
            out.append('\\"')
        elif char == "\n":
            out.append("\\n")
        elif char == "\r":
            out.append("\\r")
        elif char == "\t":
            out.append("\\t")
        elif ord(char) < 0x20:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return "".join(out)


def quote(text: str) -> str:
    """A literal HCL string: nothing in it is interpolated."""
    return '"' + _escape_chars(text).replace("${", "$${").replace("%{", "%%{") + '"'


def value(item: Any, depth: int = 0) -> str:
    if isinstance(item, Expr):
        return item.text
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, int | float):
        return repr(item)
    if isinstance(item, str):
        return quote(item)
    if isinstance(item, Mapping):
        pad = _INDENT * (depth + 1)
        inner = "".join(f"{pad}{quote(str(k))} = {value(v, depth + 1)}\n" for k, v in item.items())
        return "{\n" + inner + _INDENT * depth + "}"
    if isinstance(item, Sequence):
        parts = [value(v, depth + 1) for v in item]
        flat = "[" + ", ".join(parts) + "]"
        if len(flat) <= 80 and "\n" not in flat:
            return flat
        pad = _INDENT * (depth + 1)
        return "[\n" + "".join(f"{pad}{p},\n" for p in parts) + _INDENT * depth + "]"
    raise TypeError(f"no HCL form for {type(item).__name__}")


def _block(block: Block, depth: int) -> list[str]:
    pad = _INDENT * depth
    head = " ".join([block.type, *(quote(label) for label in block.labels)])
    lines = [f"{pad}{head} {{"]
    width = max((len(name) for name in block.attributes), default=0)
    for name, item in block.attributes.items():
        lines.append(f"{pad}{_INDENT}{name.ljust(width)} = {value(item, depth + 1)}")
    for child in block.blocks:
        if len(lines) > 1:
            lines.append("")
        lines.extend(_block(child, depth + 1))
    lines.append(f"{pad}}}")
    return lines


def render(blocks: Sequence[Block], *, header: str = "") -> str:
    """An HCL2 file of top-level ``blocks`` (a ``#`` comment header first when given)."""
    out = [f"# {line}".rstrip() for line in header.splitlines()]
    if out:
        out.append("")
    for index, block in enumerate(blocks):
        if index:
            out.append("")
        out.extend(_block(block, 0))
    return "\n".join(out) + "\n"
