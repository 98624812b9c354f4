"""`ai-how exporter pipeline`: metrics from run documents written by the real pipeline runner, the
production version from promotes and rollbacks, and training progress of a running train stage from
the progress.jsonl the real digits-cnn workload writes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ai_how.config.loader import load_config
from ai_how.errors import AiHowError
from ai_how.layout import Layout
from ai_how.monitoring.exporters.pipeline import DURATION_BUCKETS, pipeline_registry
from ai_how.pipeline.runner import PipelineRun, RunOptions, Stage, StageContext, StageFailedError
from ai_how.pipeline.stages import training_output
from ai_how.procs import free_port, wait_port
from ai_how.state.store import StateStore
from ai_how.workloads.progress import PROGRESS_FILE, append_progress, last_progress, relay_trainer_log
from tests.conftest import LOCAL
from tests.services import AI_HOW

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
STAGE_NAMES = ("train", "register", "sync", "deploy", "verify", "promote")


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def scrape(state_dir: Path) -> Samples:
    return parse(generate_latest(pipeline_registry(state_dir)).decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[name, tuple(sorted(labels.items()))]


class Quiet:
    def stage_started(self, stage: Stage) -> None: ...

    def stage_finished(self, stage: Stage, record: dict[str, Any]) -> None: ...

    def log_line(self, stage: Stage, line: str) -> None: ...


def outputs_like_the_real_stages(
    model: str, version: int, files: int, size: int
) -> dict[str, dict[str, Any]]:
    """What stages.py returns per stage (the fields the exporter reads, in their real shapes)."""
    uploaded = [f"model/file{i}" for i in range(files)]
    return {
        "train": {
            "model_dir": "/x/model",
            "job_id": "local-1",
            "kind": "classifier",
            "metrics": {"loss": 0.1},
        },
        "register": {"model_name": model, "version": version, "source": "runs:/r/model", "production": None},
        "sync": {
            "uri": f"file:///objects/models/{model}/v{version}",
            "manifest_sha256": "ab" * 32,
            "uploaded": uploaded,
            "skipped": [],
            "stale": [],
            "deleted": [],
            "bytes_uploaded": size,
            "manifest_digest": "ab" * 32,
            "duration_s": 0.01,
        },
        "deploy": {"backend": "local", "endpoint": "http://127.0.0.1:1", "ready_seconds": 0.5},
        "verify": {"checks": []},
        "promote": {"model_name": model, "version": version, "previous_production": version - 1 or None},
    }


def pipeline_run(
    store: StateStore,
    model: str,
    outputs: dict[str, dict[str, Any]],
    *,
    fail: str | None = None,
    during: dict[str, Callable[[StageContext], None]] | None = None,
) -> dict[str, Any]:
    """One run through the real runner (its documents, times and statuses), with stand-in stage bodies."""

    def make(name: str) -> Stage:
        def run(ctx: StageContext) -> dict[str, Any]:
            if during and name in during:
                during[name](ctx)
            if name == fail:
                raise AiHowError(f"{name} broke")
            return outputs[name]

        return Stage(name, name, lambda ctx: {"stage": name}, run)

    plan = [make(name) for name in STAGE_NAMES]
    run = PipelineRun.create(store, Layout(store.root), LOCAL, RunOptions("digits-cnn", model), plan)
    loaded = load_config(LOCAL)
    try:
        return run.execute(plan, loaded.config, loaded.path, Quiet(), resume=False)
    except StageFailedError:
        return run.read()


def test_runs_stages_syncs_and_durations_come_from_the_run_documents(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    first = pipeline_run(store, "digits", outputs_like_the_real_stages("digits", 1, files=3, size=1000))
    second = pipeline_run(store, "digits", outputs_like_the_real_stages("digits", 2, files=2, size=500))
    broken = pipeline_run(store, "digits", outputs_like_the_real_stages("digits", 3, 1, 1), fail="sync")
    other = pipeline_run(
        store, "chat", outputs_like_the_real_stages("chat", 1, files=4, size=7), fail="verify"
    )
    assert [d["status"] for d in (first, second, broken, other)] == [
        "succeeded",
        "succeeded",
        "failed",
        "failed",
    ]

    samples = scrape(store.root)
    assert value(samples, "ai_how_pipeline_exporter_scrape_error") == 0
    assert value(samples, "ai_how_pipeline_runs", status="succeeded") == 2
    assert value(samples, "ai_how_pipeline_runs", status="failed") == 2
    assert value(samples, "ai_how_pipeline_runs", status="running") == 0
    assert value(samples, "ai_how_pipeline_stages", stage="sync", status="succeeded") == 3
    assert value(samples, "ai_how_pipeline_stages", stage="sync", status="failed") == 1
    assert value(samples, "ai_how_pipeline_stages", stage="promote", status="pending") == 2
    assert value(samples, "ai_how_pipeline_stage_failures_total", stage="sync") == 1
    assert value(samples, "ai_how_pipeline_stage_failures_total", stage="verify") == 1
    assert value(samples, "ai_how_pipeline_stage_failures_total", stage="train") == 0
    # Syncs: bytes and files of the successful syncs; a failed sync counts as a failure, not as bytes.
    assert value(samples, "ai_how_sync_bytes_total", model="digits") == 1500
    assert value(samples, "ai_how_sync_files_total", model="digits") == 5
    assert value(samples, "ai_how_sync_failures_total", model="digits") == 1
    assert value(samples, "ai_how_sync_bytes_total", model="chat") == 7
    assert value(samples, "ai_how_sync_failures_total", model="chat") == 0
    # Durations: one observation per finished (succeeded or failed) stage, with the recorded seconds.
    docs = (first, second, broken, other)
    syncs = [d["stages"]["sync"]["duration_s"] for d in docs]
    assert value(samples, "ai_how_pipeline_stage_duration_seconds_count", stage="sync") == 4
    assert value(samples, "ai_how_pipeline_stage_duration_seconds_sum", stage="sync") == pytest.approx(
        sum(syncs)
    )
    assert value(samples, "ai_how_pipeline_stage_duration_seconds_count", stage="promote") == 2
    for bound in DURATION_BUCKETS:
        assert value(
            samples, "ai_how_pipeline_stage_duration_seconds_bucket", stage="sync", le=repr(bound)
        ) == sum(s <= bound for s in syncs)
    last = datetime.fromisoformat(second["updated"]).timestamp()
    assert value(samples, "ai_how_pipeline_last_success_timestamp_seconds", model="digits") == last
    assert ("ai_how_pipeline_last_success_timestamp_seconds", (("model", "chat"),)) not in samples


def test_production_version_follows_promotes_then_rollbacks(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    pipeline_run(store, "digits", outputs_like_the_real_stages("digits", 1, 1, 1))
    pipeline_run(store, "digits", outputs_like_the_real_stages("digits", 2, 1, 1))
    pipeline_run(store, "digits", outputs_like_the_real_stages("digits", 3, 1, 1), fail="verify")
    assert value(scrape(store.root), "ai_how_model_production_version", model="digits") == 2
    # `ai-how pipeline rollback` records itself in the state document (pipeline/operations.py).
    later = (datetime.now(UTC) + timedelta(seconds=2)).strftime("%Y%m%d-%H%M%S")
    with store.transaction() as doc:
        doc.setdefault("rollbacks", []).append(
            {"model": "digits", "from": 2, "to": 1, "at": later, "endpoint": "http://127.0.0.1:1"}
        )
    assert value(scrape(store.root), "ai_how_model_production_version", model="digits") == 1


def test_a_running_train_stage_shows_the_workloads_progress(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    seen: dict[str, Any] = {}

    def train_for_real(ctx: StageContext) -> None:
        """Run the real digits-cnn workload where the train stage puts it, then scrape while train still runs."""
        output = training_output(ctx)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "ai_how.workloads",
                "digits-cnn",
                "--output",
                str(output),
                "--epochs",
                "3",
            ],
            check=True,
            capture_output=True,
        )
        seen["metrics"] = json.loads((output / "metrics.json").read_text())
        seen["samples"] = scrape(store.root)
        seen["run"] = ctx.run_id

    doc = pipeline_run(
        store, "digits", outputs_like_the_real_stages("digits", 1, 1, 1), during={"train": train_for_real}
    )
    labels = {"run": seen["run"], "model": "digits"}
    during = seen["samples"]
    assert value(during, "ai_how_pipeline_runs", status="running") == 1
    assert value(during, "ai_how_pipeline_stages", stage="train", status="running") == 1
    assert value(during, "ai_how_training_step", **labels) == 3
    assert value(during, "ai_how_training_progress_ratio", **labels) == 1.0
    assert value(during, "ai_how_training_loss", **labels) == pytest.approx(seen["metrics"]["loss"][-1])
    assert value(during, "ai_how_training_samples_per_second", **labels) > 0
    assert value(during, "ai_how_training_last_update_timestamp_seconds", **labels) > 0
    # Once train has finished, the run no longer reports training progress.
    assert doc["status"] == "succeeded"
    after = scrape(store.root)
    assert not any(name.startswith("ai_how_training_") and dict(lbl) == labels for name, lbl in after)


def test_progress_lines_half_written_are_skipped(tmp_path: Path) -> None:
    append_progress(tmp_path, step=1, total_steps=10, loss=2.5, samples_per_second=100.0)
    append_progress(tmp_path, step=2, total_steps=10, loss=2.0, samples_per_second=110.0)
    with (tmp_path / PROGRESS_FILE).open("a") as handle:
        handle.write('{"step": 3, "loss": 1.')  # a writer caught mid-line
    record = last_progress(tmp_path / PROGRESS_FILE)
    assert record is not None and (record["step"], record["loss"]) == (2, 2.0)
    assert last_progress(tmp_path / "missing.jsonl") is None


def test_the_llm_trainer_log_is_relayed_as_progress(tmp_path: Path) -> None:
    """llm-sft: Oumi's MetricsLoggerCallback lines (HF trainer logs) become progress lines with samples/s."""
    source = tmp_path / "oumi" / "metrics_rank0000.jsonl"
    source.parent.mkdir()
    # As Oumi writes them: json.dumps(metrics) + "\n" per logging step, then the trainer's summary.
    lines = [
        {"loss": 3.0 / step, "grad_norm": 1.0, "learning_rate": 0.003, "epoch": step / 20, "step": step}
        for step in (5, 10)
    ] + [{"train_runtime": 1.0, "train_loss": 0.4, "step": 10}]
    relay = relay_trainer_log(source, tmp_path / "out", total_steps=20, samples_per_step=8, interval_s=0.05)
    with relay, source.open("a") as handle:
        handle.writelines(json.dumps(line) + "\n" for line in lines)
    record = last_progress(tmp_path / "out" / PROGRESS_FILE)
    assert record is not None
    assert (record["step"], record["total_steps"], record["loss"]) == (10, 20, 0.3)
    assert record["samples_per_second"] > 0


def test_llm_sft_writes_progress_from_oumis_trainer_log(tmp_path: Path) -> None:
    """The real llm-sft workload (tiny Llama through Oumi): its progress.jsonl has every logging step."""
    pytest.importorskip("oumi")
    output = tmp_path / "job"
    subprocess.run(
        [
            *(sys.executable, "-m", "ai_how.workloads", "llm-sft", "--output", str(output)),
            *("--max-steps", "6", "--logging-steps", "2", "--limit", "32"),
        ],
        check=True,
        capture_output=True,
    )
    lines = [json.loads(line) for line in (output / PROGRESS_FILE).read_text().splitlines()]
    assert [(line["step"], line["total_steps"]) for line in lines] == [(2, 6), (4, 6), (6, 6)]
    losses = json.loads((output / "metrics.json").read_text())["loss"]
    assert [line["loss"] for line in lines] == pytest.approx(losses)
    assert all(line["samples_per_second"] > 0 for line in lines)


def test_a_corrupt_state_is_a_scrape_error_not_a_failed_scrape(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    pipeline_run(store, "digits", outputs_like_the_real_stages("digits", 1, 1, 1))
    (store.root / "runs" / "broken.json").write_text("{not json")
    samples = scrape(store.root)
    assert value(samples, "ai_how_pipeline_unreadable_runs") == 1
    assert value(samples, "ai_how_pipeline_runs", status="succeeded") == 1  # one bad file hides nothing
    (store.root / "state.json").write_text("{not json")
    samples = scrape(store.root)
    assert value(samples, "ai_how_pipeline_exporter_scrape_error") == 1


def test_the_cli_serves_the_state_dir_over_http_and_stops_on_sigterm(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    pipeline_run(store, "digits", outputs_like_the_real_stages("digits", 4, 2, 10))
    port = free_port()
    proc = subprocess.Popen(
        [AI_HOW, "--state-dir", str(store.root), "exporter", "pipeline", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_port(port, timeout_s=60)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
            assert response.status == 200
            samples = parse(response.read().decode())
    finally:
        proc.send_signal(signal.SIGTERM)
        output = proc.communicate(timeout=30)[0].decode()
    assert proc.returncode == 0, output
    assert value(samples, "ai_how_pipeline_runs", status="succeeded") == 1
    assert value(samples, "ai_how_model_production_version", model="digits") == 4
    assert value(samples, "ai_how_sync_files_total", model="digits") == 2
