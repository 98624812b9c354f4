"""``python -m ai_how.docs_gen [--check] [--docs-dir DIR]``: write the generated reference pages, or check them.

``--check`` writes nothing: it prints a unified diff of each stale page and exits 1 (CI runs it through
``tests/docs/test_reference.py``).
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections.abc import Callable
from pathlib import Path

from ai_how.docs_gen import cli_reference, config_reference
from ai_how.fsutil import atomic_write_text

PAGES: dict[str, Callable[[], str]] = {
    "reference/configuration.md": config_reference.render,
    "reference/cli.md": cli_reference.render,
}
DEFAULT_DOCS_DIR = Path(__file__).resolve().parents[3] / "docs"  # the checkout's docs/ (src/ai_how/docs_gen)


def stale_pages(docs_dir: Path) -> dict[str, str]:
    """{page: unified diff} for each generated page whose file differs from what the code generates now."""
    stale = {}
    for page, render in PAGES.items():
        path = docs_dir / page
        current = path.read_text(encoding="utf-8") if path.exists() else ""
        wanted = render()
        if current != wanted:
            diff = difflib.unified_diff(
                current.splitlines(keepends=True),
                wanted.splitlines(keepends=True),
                fromfile=f"{path} (committed)",
                tofile=f"{path} (generated)",
            )
            stale[page] = "".join(diff)
    return stale


def write_pages(docs_dir: Path) -> list[Path]:
    written = []
    for page, render in PAGES.items():
        path = docs_dir / page
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, render())
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ai_how.docs_gen", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 with a diff when a page is stale")
    parser.add_argument(
        "--docs-dir", type=Path, default=DEFAULT_DOCS_DIR, help="the docs folder (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_pages(args.docs_dir)
        for diff in stale.values():
            sys.stdout.write(diff)
        if stale:
            print(
                f"error: {', '.join(sorted(stale))} out of date with the code; "
                "regenerate with `make docs-reference` (python -m ai_how.docs_gen) and commit the result",
                file=sys.stderr,
            )
            return 1
        print(f"{len(PAGES)} generated pages up to date")
        return 0
    for path in write_pages(args.docs_dir):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
