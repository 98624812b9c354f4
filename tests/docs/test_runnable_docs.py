"""Docs that run: every block marked ``<!-- runnable -->`` in docs/getting-started.md and in part 1 of
docs/tutorials/08-oumi-training-to-inference.md (the embedded default) runs here, in order, and prints
what its ``<!-- expect -->`` block says (the marking is described in tests/docs/runnable.py).

* Both pages run in ONE fresh state directory (``AI_HOW_STATE_DIR`` in a tmp dir), from the repository
  root, with bash, ``.venv/bin`` first on ``PATH`` and the offline variables the Makefile exports.
* ``config/local.yaml`` reads its ports from ``AI_HOW_MLFLOW_PORT`` and ``AI_HOW_SERVING_PORT``, and the
  pages write ``${AI_HOW_SERVING_PORT:-8080}``; the harness sets both to free ports, so it never
  collides with a stack already running on 5000/8080. Nothing in the pages is rewritten.
* ``make setup`` and ``make test`` are not marked runnable (this harness runs inside ``make test``);
  neither are the SLURM (part 2) and KServe (part 3) steps.
* Whatever the pages started is stopped with ``ai-how stack down`` when the module ends, pass or fail.

A failure names the page and line of the block, the block, the expected lines that are missing (or
the exit status) and the tail of its output. The whole run trains two models (about 4-5 minutes on 2
cores), so it is marked slow: ``make test-slow`` / CI's slow step runs it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.docs.runnable import RunnableBlock, missing_lines, runnable_blocks

REPO = Path(__file__).resolve().parents[2]
GETTING_STARTED = REPO / "docs" / "getting-started.md"
TUTORIAL = REPO / "docs" / "tutorials" / "08-oumi-training-to-inference.md"
OFFLINE = {
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
}
BLOCK_TIMEOUT_S = 900
TAIL_LINES = 40


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class DocShell:
    env: dict[str, str]
    state_dir: Path

    def run(self, block: RunnableBlock) -> None:
        try:
            result = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", block.code],
                cwd=REPO,
                env=self.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=BLOCK_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            output = exc.output if isinstance(exc.output, str) else (exc.output or b"").decode()
            pytest.fail(_report(block, f"ran past {BLOCK_TIMEOUT_S} s", output))
        if result.returncode != 0:
            pytest.fail(_report(block, f"exited with status {result.returncode}", result.stdout))
        missing = missing_lines(block.expect, result.stdout)
        if missing:
            lines = "\n".join(f"    {line}" for line in missing)
            pytest.fail(
                _report(block, f"printed none of these expected lines (in order):\n{lines}", result.stdout)
            )


def _report(block: RunnableBlock, what: str, output: str) -> str:
    code = "\n".join(f"    {line}" for line in block.code.rstrip().splitlines())
    tail = "\n".join(f"    | {line}" for line in output.rstrip().splitlines()[-TAIL_LINES:])
    return f"{block.where}: the block\n{code}\n{what}\noutput (last {TAIL_LINES} lines):\n{tail}"


@pytest.fixture(scope="module")
def shell(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DocShell]:
    state_dir = tmp_path_factory.mktemp("doc-state")
    env = {
        **os.environ,
        **OFFLINE,
        "AI_HOW_STATE_DIR": str(state_dir),
        "AI_HOW_MLFLOW_PORT": str(_free_port()),
        "AI_HOW_SERVING_PORT": str(_free_port()),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    for leaked in ("MLFLOW_TRACKING_URI", "AI_HOW_CONFIG"):
        env.pop(leaked, None)
    try:
        yield DocShell(env, state_dir)
    finally:
        subprocess.run(
            ["ai-how", "stack", "down", "-c", "config/local.yaml"],
            cwd=REPO,
            env=env,
            capture_output=True,
            timeout=120,
            check=False,
        )


def test_pages_mark_their_steps_runnable() -> None:
    """The harness has something to run, and every expected block follows a runnable one."""
    started, tutorial = runnable_blocks(GETTING_STARTED), runnable_blocks(TUTORIAL)
    assert any("pipeline run -c config/local.yaml --workload digits-cnn" in b.code for b in started)
    assert any("--workload llm-sft" in b.code for b in tutorial)
    assert all("make setup" not in b.code and "make test" not in b.code for b in started + tutorial)


@pytest.mark.slow
def test_getting_started_runs(shell: DocShell) -> None:
    for block in runnable_blocks(GETTING_STARTED):
        shell.run(block)


@pytest.mark.slow
def test_tutorial_08_part_1_runs(shell: DocShell) -> None:
    for block in runnable_blocks(TUTORIAL):
        shell.run(block)


def test_only_part_1_of_the_tutorial_is_runnable() -> None:
    """Parts 2 (SLURM, root) and 3 (Kubernetes) cannot run on the embedded default."""
    part_2 = (
        TUTORIAL.read_text(encoding="utf-8").splitlines().index("## Part 2: the same with SLURM training")
    )
    assert all(block.line < part_2 for block in runnable_blocks(TUTORIAL))


def test_a_block_that_prints_something_else_fails_with_its_page_and_line(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "# t\n\n<!-- runnable -->\n\n```bash\necho 'run 42: failed'\n```\n\n<!-- expect -->\n\n"
        "```text\nrun …: succeeded\n```\n"
    )
    (block,) = runnable_blocks(page)
    with pytest.raises(pytest.fail.Exception) as failure:
        DocShell(dict(os.environ), tmp_path).run(block)
    assert f"{page}:5" in str(failure.value)
    assert "run …: succeeded" in str(failure.value)
    assert "| run 42: failed" in str(failure.value)


def test_a_block_that_exits_non_zero_fails_with_its_output(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("<!-- runnable -->\n```bash\necho before\nfalse\necho after\n```\n")
    (block,) = runnable_blocks(page)
    with pytest.raises(pytest.fail.Exception) as failure:
        DocShell(dict(os.environ), tmp_path).run(block)
    assert "exited with status 1" in str(failure.value)
    assert "| before" in str(failure.value)
    assert "after" not in str(failure.value).split("output")[-1]
