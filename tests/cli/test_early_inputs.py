"""Bad input to ``ai-how pipeline run`` fails in one line before a run exists or a service starts;
a missing optional dependency names the extra to install."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from ai_how.cli.main import app
from ai_how.layout import Layout
from ai_how.pipeline.runner import PipelineRun, RunOptions
from ai_how.pipeline.stages import STAGES
from ai_how.procs import port_open
from ai_how.state.store import StateStore
from tests.conftest import LOCAL
from tests.services import free_port

runner = CliRunner()


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The test's state directory, with the local config's MLflow and serving ports set to free ones."""
    port = free_port()
    monkeypatch.setenv("AI_HOW_MLFLOW_PORT", str(port))
    monkeypatch.setenv("AI_HOW_SERVING_PORT", str(free_port()))
    root = Path(os.environ["AI_HOW_STATE_DIR"])
    yield root
    if (root / "stack").exists():  # a regression started the stack: stop what it started
        runner.invoke(app, ["stack", "down", "-c", str(LOCAL)])


def assert_failed_before_anything_started(result: Result, state: Path, *expected: str) -> None:
    """Exit 1 or 2, one error line (plus its fix) with the expected text, no traceback, no run, no service."""
    output = result.output
    assert result.exit_code in (1, 2), output
    assert "Traceback" not in output and "internal error" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    for text in expected:
        assert text in output, output
    runs = state / "runs"
    assert not runs.exists() or not any(runs.iterdir()), list(runs.iterdir())
    assert not (state / "stack").exists() or not any((state / "stack").iterdir())
    assert not port_open("127.0.0.1", int(os.environ["AI_HOW_MLFLOW_PORT"]))


def pipeline_run(*args: str) -> Result:
    return runner.invoke(app, ["pipeline", "run", "-c", str(LOCAL), *args])


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--workload", "digits-cnn", "--set", "epochs=abc"],
            ["--set epochs=abc: epochs must be an integer (1..1000000)", "fix: e.g. --set epochs=12"],
        ),
        (
            ["--workload", "digits-cnn", "--set", "epoch=3"],
            [
                "digits-cnn has no option 'epoch'",
                "use one of: epochs, batch_size, lr, seed, mnist_dir, augment",
            ],
        ),
        (["--workload", "digits-cnn", "--set", "epochs=0"], ["epochs must be an integer (1..1000000)"]),
        (["--workload", "digits-cnn", "--set", "lr=1e9"], ["--set lr=1e9: lr must be a number (1e-08..10)"]),
        (["--workload", "llm-sft", "--model", "gpt-5"], ["model must be one of: tiny-llama"]),
        (["--workload", "digits-cnn", "--model", "tiny-llama"], ["digits-cnn has no option 'model'"]),
        (
            ["--workload", "digits-cnn", "--model-name", "Foo_Bar"],
            ["--model-name 'Foo_Bar' is not a valid model name", "e.g. --model-name foo-bar"],
        ),
        (["--workload", "nope"], ["unknown workload 'nope'", "use one of: digits-cnn, llm-sft"]),
        (
            ["--workload", "digits-cnn", "--stop-after", "regsiter"],
            ["--stop-after: unknown stage 'regsiter'", f"use one of: {', '.join(s.name for s in STAGES)}"],
        ),
    ],
    ids=[
        "type",
        "unknown-key",
        "range",
        "float-range",
        "choice",
        "model-for-classifier",
        "model-name",
        "workload",
        "stop-after",
    ],
)
def test_bad_input_fails_before_a_run_or_a_service(args: list[str], expected: list[str], state: Path) -> None:
    assert_failed_before_anything_started(pipeline_run(*args), state, *expected)


@pytest.fixture
def stopped_run(state: Path) -> str:
    """A digits-cnn run stopped after train (recorded only: no service is needed to refuse a resume)."""
    store = StateStore(state)
    options = RunOptions("digits-cnn", "digits", ["--epochs", "3"], {"gpus": 0, "processes": 1, "nodes": 1})
    run = PipelineRun.create(store, Layout(state), LOCAL, options, STAGES)
    with store.transaction(run.doc_name) as doc:
        doc.update(status="stopped", stopped_after="train")
    return run.run_id


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--set", "epochs=5"], "--set epochs=5 (run: 3)"),
        (["--gpus", "2"], "--gpus 2 (run: 0)"),
        (["--procs-per-node", "2"], "--procs-per-node 2 (run: 1)"),
        (["--workload", "llm-sft"], "--workload llm-sft (run: digits-cnn)"),
        (["--model-name", "other"], "--model-name other (run: digits)"),
    ],
)
def test_resume_refuses_options_that_differ_from_the_runs(
    args: list[str], expected: str, stopped_run: str, state: Path
) -> None:
    before = StateStore(state).read(f"runs/{stopped_run}")
    for run_ref in (stopped_run, "latest"):
        result = runner.invoke(app, ["pipeline", "run", "--resume", run_ref, *args])
        assert result.exit_code == 1, result.output
        assert (
            expected in result.output and f"--resume {stopped_run} keeps the run's options" in result.output
        )
        assert "drop them to resume" in result.output and "Traceback" not in result.output
    assert StateStore(state).read(f"runs/{stopped_run}") == before  # nothing ran, nothing was recorded
    assert not (state / "stack").exists() and not port_open(
        "127.0.0.1", int(os.environ["AI_HOW_MLFLOW_PORT"])
    )


# Blocks an import the way a missing package does: ModuleNotFoundError with the module's name.
BLOCK = textwrap.dedent(
    """
    import sys
    from importlib.abc import MetaPathFinder

    class Missing(MetaPathFinder):
        def __init__(self, *names):
            self.names = names

        def find_spec(self, fullname, path=None, target=None):
            if fullname.split(".")[0] in self.names:
                raise ModuleNotFoundError(f"No module named {fullname!r}", name=fullname)
            return None

    sys.meta_path.insert(0, Missing(*sys.argv[1].split(",")))
    for loaded in [m for m in sys.modules if m.split(".")[0] in sys.argv[1].split(",")]:
        del sys.modules[loaded]
    """
)


def run_blocked(blocked: str, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK + textwrap.dedent(code), blocked, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_missing_extra_in_a_command_names_the_extra() -> None:
    code = """
    from ai_how.cli.main import app

    @app.command("probe")
    def probe() -> None:
        import kserve  # noqa: F401

    app(["probe"])
    """
    done = run_blocked("kserve", code)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "ModuleNotFoundError" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [
        "error: module 'kserve' is not installed: this needs the 'serve' extra: pip install 'ai-how[serve]'"
    ]


def test_sync_to_s3_without_the_track_extra_names_it(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights.bin").write_bytes(b"\x00" * 10)
    code = """
    sys.argv = ["ai-how", "sync", sys.argv[2], "s3://bucket/models/m/v1"]
    from ai_how.cli.main import run
    run()
    """
    done = run_blocked("boto3,botocore", code, str(tmp_path / "model"))
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "needs the 'track' extra: pip install 'ai-how[track]'" in done.stderr


def test_unmapped_missing_module_is_still_one_line() -> None:
    code = """
    from ai_how.cli.main import app

    @app.command("probe")
    def probe() -> None:
        import not_an_ai_how_dependency  # noqa: F401

    app(["probe"])
    """
    done = run_blocked("not_an_ai_how_dependency", code)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "internal error: ModuleNotFoundError" in done.stderr


def test_missing_extra_in_a_training_job_names_the_extra(tmp_path: Path) -> None:
    code = """
    import runpy
    sys.argv = ["ai_how.workloads", "digits-cnn", "--output", sys.argv[2], "--epochs", "1"]
    runpy.run_module("ai_how.workloads", run_name="__main__")
    """
    done = run_blocked("torch", code, str(tmp_path / "out"))
    assert done.returncode == 2, done.stderr  # the executors' "bad input" code: they show the last line
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        "error: module 'torch' is not installed: this needs the 'train' extra: pip install 'ai-how[train]'"
    )
