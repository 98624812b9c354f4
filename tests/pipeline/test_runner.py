"""The pipeline runner on its own: resume invalidates what an upstream re-run makes stale, and an
unexpected failure leaves its traceback in the stage log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ai_how.config.loader import load_config
from ai_how.errors import AiHowError
from ai_how.layout import Layout
from ai_how.pipeline.runner import PipelineRun, RunOptions, Stage, StageContext, StageFailedError
from ai_how.state.store import StateStore
from tests.conftest import LOCAL


class Quiet:
    def stage_started(self, stage: Stage) -> None: ...

    def stage_finished(self, stage: Stage, record: dict[str, Any]) -> None: ...

    def log_line(self, stage: Stage, line: str) -> None: ...


def stages(inputs: dict[str, Any], fail: set[str]) -> list[Stage]:
    def make(name: str) -> Stage:
        def run(ctx: StageContext) -> dict[str, Any]:
            if name in fail:
                raise KeyError(f"boom in {name}")  # an unexpected error, not an AiHowError
            return {"value": inputs[name]}

        return Stage(name, name, lambda ctx: {"input": inputs[name]}, run)

    return [make(n) for n in ("a", "b", "c")]


def execute(run: PipelineRun, plan: list[Stage], *, resume: bool, debug: bool = False) -> dict[str, Any]:
    loaded = load_config(LOCAL)
    return run.execute(plan, loaded.config, loaded.path, Quiet(), resume=resume, debug=debug)


@pytest.fixture
def run(tmp_path: Path) -> PipelineRun:
    store = StateStore(tmp_path / "state")
    plan = stages({"a": 1, "b": 1, "c": 1}, set())
    return PipelineRun.create(store, Layout(store.root), LOCAL, RunOptions("digits-cnn", "m"), plan)


def test_an_upstream_rerun_resets_downstream_records_before_it_runs(run: PipelineRun) -> None:
    execute(run, stages({"a": 1, "b": 1, "c": 1}, set()), resume=False)
    # a's input changed, and b now fails: c must not keep its old "succeeded" record from old inputs.
    with pytest.raises(StageFailedError):
        execute(run, stages({"a": 2, "b": 1, "c": 1}, {"b"}), resume=True)
    doc = run.read()
    assert doc["stages"]["a"]["outputs"] == {"value": 2}
    assert doc["stages"]["b"]["status"] == "failed"
    assert doc["stages"]["c"] == {"status": "pending", "invalidated_by": "a"}


def test_an_unexpected_failure_leaves_its_traceback_in_the_stage_log(
    run: PipelineRun, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(StageFailedError) as failure:
        execute(run, stages({"a": 1, "b": 1, "c": 1}, {"b"}), resume=False)
    assert failure.value.message == "stage b failed: KeyError: 'boom in b'"
    log = (run.run_dir / "logs" / "b.log").read_text()
    assert "Traceback (most recent call last)" in log and "boom in b" in log
    assert "Traceback" not in capsys.readouterr().err  # only with --debug

    with pytest.raises(StageFailedError):
        execute(run, stages({"a": 1, "b": 1, "c": 1}, {"b"}), resume=True, debug=True)
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_an_expected_failure_is_one_line_without_traceback(run: PipelineRun) -> None:
    def refuse(ctx: StageContext) -> dict[str, Any]:
        raise AiHowError("the dataset is missing", fix="pass --set dataset=PATH")

    plan = [Stage("a", "a", lambda ctx: {}, refuse)]
    with pytest.raises(StageFailedError, match="stage a failed: the dataset is missing"):
        execute(run, plan, resume=False)
    assert "Traceback" not in (run.run_dir / "logs" / "a.log").read_text()


def test_a_finished_stage_whose_result_went_away_runs_again_on_resume(run: PipelineRun) -> None:
    """E.g. deploy finished, then its server was stopped: resume must deploy again, not skip it."""
    calls: list[str] = []
    alive = {"b": True}

    def plan() -> list[Stage]:
        def make(name: str) -> Stage:
            def run_stage(ctx: StageContext) -> dict[str, Any]:
                calls.append(name)
                return {}

            valid = (lambda ctx: alive["b"]) if name == "b" else None
            return Stage(name, name, lambda ctx: {}, run_stage, still_valid=valid)

        return [make(n) for n in ("a", "b", "c")]

    execute(run, plan(), resume=False)
    execute(run, plan(), resume=True)
    assert calls == ["a", "b", "c"]  # all skipped on the first resume
    alive["b"] = False
    execute(run, plan(), resume=True)
    assert calls == ["a", "b", "c", "b", "c"]
