"""The docs site: `mkdocs build --strict` succeeds, and every relative link in docs/ resolves."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
MKDOCS = Path(sys.executable).parent / "mkdocs"
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)


def nav_pages(nav: list[object]) -> set[str]:
    pages: set[str] = set()
    for item in nav:
        for value in item.values() if isinstance(item, dict) else [item]:
            pages |= nav_pages(value) if isinstance(value, list) else {str(value)}
    return pages


def relative_links(page: Path) -> list[tuple[str, Path]]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    found = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z]+:", target) or target.startswith("#"):
            continue
        found.append((target, (page.parent / target.split("#")[0]).resolve()))
    return found


def test_mkdocs_builds_in_strict_mode(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(MKDOCS), "build", "--strict", "-f", str(REPO / "mkdocs.yml"), "-d", str(tmp_path / "site")],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "NO_MKDOCS_2_WARNING": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "WARNING" not in done.stderr
    html = (tmp_path / "site" / "architecture" / "ml-workflow" / "index.html").read_text(encoding="utf-8")
    assert '<pre class="mermaid">' in html  # the Mermaid fence is handed to the theme's renderer
    assert (tmp_path / "site" / "reference" / "configuration" / "index.html").exists()


def test_every_page_under_docs_is_in_the_nav() -> None:
    config = yaml.load((REPO / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)  # ignores !!python tags
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert nav_pages(config["nav"]) == pages


def test_every_relative_link_in_the_docs_resolves() -> None:
    broken = [
        f"{page.relative_to(REPO)}: {target}"
        for page in sorted(DOCS.rglob("*.md"))
        for target, path in relative_links(page)
        if not path.exists()
    ]
    assert not broken


def test_the_link_check_finds_a_broken_link(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "See [the guide](guide.md#top), [a site](https://example.org) and\n```\n[not](a-link.md)\n```\n"
    )
    assert [target for target, path in relative_links(page) if not path.exists()] == ["guide.md#top"]
