"""Runnable shell blocks of a Markdown page, with the output each one must print.

The marking (invisible on GitHub and in the MkDocs site):

* ``<!-- runnable -->`` on its own line, then (after optional blank lines) a fenced ``bash`` or ``sh``
  block: the doc-test harness runs that block with bash, from the repository root.
* ``<!-- expect -->`` on its own line, then a fenced ``text`` block: lines the output (stdout and stderr)
  of the runnable block before it must contain, in order, each on a later output line than the one
  before. In an expected line ``…`` stands for any text and runs of blanks match any run of blanks, so
  the block reads as the output with the parts that differ between runs elided.

Blocks that are not marked (``make setup``, ``make test``, commands that need root, a SLURM cluster or
Kubernetes) are shown to readers and never run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

RUNNABLE = "<!-- runnable -->"
EXPECT = "<!-- expect -->"
SHELLS = ("bash", "sh", "shell", "console")
ELLIPSIS = "…"
_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")


@dataclass(frozen=True)
class Fence:
    line: int  # 1-based line of the opening fence
    info: str
    text: str
    marker: str | None  # the marker comment just before it (blank lines between allowed)


@dataclass
class RunnableBlock:
    doc: Path
    line: int
    code: str
    expect: list[str] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def fences(text: str) -> list[Fence]:
    """Every fenced block of ``text`` with the marker comment (if any) that precedes it."""
    lines = text.splitlines()
    found: list[Fence] = []
    marker: str | None = None
    index = 0
    while index < len(lines):
        stripped = lines[index].strip()
        opening = _FENCE.match(lines[index])
        if stripped in (RUNNABLE, EXPECT):
            marker = stripped
        elif opening:
            indent, fence = len(opening["indent"]), opening["fence"]
            body: list[str] = []
            index += 1
            while index < len(lines) and not _closes(lines[index], fence):
                body.append(lines[index][indent:] if lines[index][:indent].isspace() else lines[index])
                index += 1
            found.append(Fence(index - len(body), opening["info"].strip(), "\n".join(body) + "\n", marker))
            marker = None
        elif stripped:
            marker = None
        index += 1
    return found


def _closes(line: str, fence: str) -> bool:
    stripped = line.strip()
    return stripped.startswith(fence[0] * len(fence)) and set(stripped) == {fence[0]}


def runnable_blocks(doc: Path) -> list[RunnableBlock]:
    """The page's runnable blocks in order, each with the expected lines that follow it."""
    blocks: list[RunnableBlock] = []
    for fence in fences(doc.read_text(encoding="utf-8")):
        language = fence.info.split()[0] if fence.info else ""
        if fence.marker == RUNNABLE:
            if language not in SHELLS:
                raise ValueError(f"{doc}:{fence.line}: {RUNNABLE} marks a {language or 'plain'} block")
            blocks.append(RunnableBlock(doc, fence.line, fence.text))
        elif fence.marker == EXPECT:
            if not blocks:
                raise ValueError(f"{doc}:{fence.line}: {EXPECT} before any runnable block")
            blocks[-1].expect += [line for line in fence.text.splitlines() if line.strip()]
    return blocks


def _pattern(expected: str) -> re.Pattern[str]:
    parts = [r"\s+".join(re.escape(word) for word in part.split()) for part in expected.split(ELLIPSIS)]
    return re.compile(".*".join(parts))


def missing_lines(expect: list[str], output: str) -> list[str]:
    """The expected lines ``output`` lacks (in order: each must match a later line than the last)."""
    lines = output.splitlines()
    position = 0
    missing: list[str] = []
    for expected in expect:
        pattern = _pattern(expected)
        hit = next((i for i in range(position, len(lines)) if pattern.search(lines[i])), None)
        if hit is None:
            missing.append(expected)
        else:
            position = hit + 1
    return missing
