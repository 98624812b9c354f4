"""The marking of runnable blocks and expected output (tests/docs/runnable.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.docs.runnable import fences, missing_lines, runnable_blocks

PAGE = """# Page

<!-- runnable -->

```bash
make something
```

<!-- expect -->

```text
✓ train … accuracy 0.9…
run …: succeeded
```

<!-- runnable -->
A sentence between the marker and the fence cancels the marker.

```bash
not run
```

```bash
not marked either
```

- a list item

  <!-- runnable -->

  ```bash
  echo indented
  ```
"""


def test_marked_blocks_are_runnable_with_their_expected_lines(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(PAGE)
    blocks = runnable_blocks(page)
    assert [(b.line, b.code) for b in blocks] == [(5, "make something\n"), (31, "echo indented\n")]
    assert blocks[0].expect == ["✓ train … accuracy 0.9…", "run …: succeeded"]
    assert blocks[1].expect == []
    assert len(fences(PAGE)) == 5


def test_an_expect_block_without_a_runnable_one_is_an_error(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("<!-- expect -->\n```text\nx\n```\n")
    with pytest.raises(ValueError, match=r"page\.md:2"):
        runnable_blocks(page)


def test_runnable_marks_only_shell_blocks(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("<!-- runnable -->\n```yaml\na: 1\n```\n")
    with pytest.raises(ValueError, match="marks a yaml block"):
        runnable_blocks(page)


OUTPUT = """▶ train run the workload
✓ train      66.32 s  job local-1; accuracy 0.9806, loss 0.08; MLflow run a2
✓ promote     0.39 s  digits-cnn v1 @production (was None)
run 20261207-digits-cnn-3382: succeeded
"""


def test_ellipsis_and_blanks_match_what_differs_between_runs() -> None:
    assert missing_lines(["✓ train … job local-…; accuracy 0.9…", "run …: succeeded"], OUTPUT) == []


def test_expected_lines_must_appear_in_order_and_exactly() -> None:
    assert missing_lines(["run …: succeeded", "✓ train"], OUTPUT) == ["✓ train"]
    assert missing_lines(["✓ promote … digits-cnn v2 @production"], OUTPUT) == [
        "✓ promote … digits-cnn v2 @production"
    ]
    assert missing_lines(["accuracy 0.9…, loss 0.08; MLflow (run)"], OUTPUT) == [
        "accuracy 0.9…, loss 0.08; MLflow (run)"
    ]
