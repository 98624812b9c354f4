"""``ai-how evaluate`` scores on the held-out split the training run recorded, and refuses when it is gone."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from ai_how.cli.main import app
from ai_how.errors import AiHowError
from ai_how.evaluation.run import held_out_split
from ai_how.tracking import PRODUCTION, Tracker
from tests.conftest import LOCAL

runner = CliRunner()


def registered_llm(tracking_uri: str, eval_path: str | None) -> None:
    """An llm version @production whose training run recorded ``eval_path`` (real MLflow, SQLite store)."""
    tracker = Tracker(tracking_uri, "ai-how")
    run_id = tracker.start_run("run-1", "llm-sft-run-1", {"ai_how.workload": "llm-sft"})
    tracker.log_batch(
        run_id, params={} if eval_path is None else {"eval_path": eval_path}, metrics={}, tags={}
    )
    tracker.finish_run(run_id)
    ref = tracker.register(
        "chat",
        run_id,
        f"runs:/{run_id}/model",
        {"ai_how.kind": "llm", "ai_how.storage_uri": "file:///nowhere/models/chat/v1"},
        "test",
    )
    tracker.set_alias("chat", ref.version, PRODUCTION)


@pytest.fixture
def sqlite_config(tmp_path: Path, write_config: Callable[[dict[str, Any]], Path]) -> tuple[Path, str]:
    data = copy.deepcopy(yaml.safe_load(LOCAL.read_text()))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    data["mlops"]["mlflow"]["tracking_uri"] = uri
    return write_config(data), uri


@pytest.mark.parametrize("recorded", ["missing-file", "not-recorded"])
def test_evaluate_refuses_when_the_recorded_split_is_gone(
    recorded: str, tmp_path: Path, sqlite_config: tuple[Path, str]
) -> None:
    config, uri = sqlite_config
    registered_llm(uri, str(tmp_path / "gone" / "eval.jsonl") if recorded == "missing-file" else None)
    result = runner.invoke(app, ["evaluate", "-c", str(config), "--model-name", "chat", "--json"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and "--dataset FILE.jsonl" in result.output
    if recorded == "missing-file":
        assert (
            f"the held-out split {tmp_path / 'gone' / 'eval.jsonl'} recorded by the training run"
            in result.output
        )
        assert "refusing to score on a new split" in result.output
    else:
        assert "recorded no held-out split" in result.output
    state = Path(os.environ["AI_HOW_STATE_DIR"])
    assert not (state / "evaluations").exists()  # no new split was written, nothing was scored
    assert not (state / "serving" / "eval-cache").exists()  # and the model was not even downloaded


def test_evaluate_rejects_a_bad_model_name_before_anything() -> None:
    result = runner.invoke(app, ["evaluate", "-c", str(LOCAL), "--model-name", "Chat_Bot"])
    assert result.exit_code == 1 and "e.g. --model-name chat-bot" in result.output


def test_held_out_split_returns_the_recorded_file(tmp_path: Path) -> None:
    split = tmp_path / "eval.jsonl"
    split.write_text(json.dumps({"messages": []}) + "\n")
    assert held_out_split({"eval_path": str(split)}, "chat", 1) == split
    split.unlink()
    with pytest.raises(AiHowError, match="is missing; refusing to score on a new split"):
        held_out_split({"eval_path": str(split)}, "chat", 1)
