"""Training progress of running jobs: the last line of each running train stage's ``progress.jsonl``.

The job's output folder is where the train stage puts it (``<shared storage>/models/<model>/<run>``);
the shared storage comes from the config the run was started with (recorded in its document), or
from the exporter's ``--config`` when given.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client.core import GaugeMetricFamily, Metric

from ai_how.errors import AiHowError
from ai_how.workloads.progress import PROGRESS_FILE, last_progress

if TYPE_CHECKING:
    from ai_how.config.models import ClusterConfig

GAUGES = (
    ("ai_how_training_loss", "Training loss at the job's last logging step", "loss"),
    (
        "ai_how_training_samples_per_second",
        "Training throughput at the last logging step",
        "samples_per_second",
    ),
    ("ai_how_training_step", "The job's last logged step (epoch for digits-cnn)", "step"),
    # A run whose process died stays "running" in its document: this shows its progress went stale.
    (
        "ai_how_training_last_update_timestamp_seconds",
        "When the job last logged progress (Unix time)",
        "time",
    ),
)


class TrainingOutputs:
    """Finds a run's training output folder; configs are loaded once per file version."""

    def __init__(self, state_dir: Path, config_path: Path | None = None) -> None:
        self.state_dir, self.config_path = state_dir, config_path
        self._configs: dict[tuple[str, float], ClusterConfig | None] = {}

    def _config(self, path: Path) -> ClusterConfig | None:
        from ai_how.config.loader import load_config

        try:
            key = (str(path), path.stat().st_mtime)
        except OSError:
            return None
        if key not in self._configs:
            try:
                self._configs[key] = load_config(path).config
            except AiHowError:
                self._configs[key] = None
        return self._configs[key]

    def output_dir(self, doc: dict[str, Any]) -> Path | None:
        from ai_how.executors.base import shared_root

        path = self.config_path or (Path(doc["config"]) if doc.get("config") else None)
        config = self._config(path) if path is not None else None
        if config is None or not doc.get("model_name") or not doc.get("run_id"):
            return None
        return (
            Path(shared_root(config, self.state_dir)) / "models" / str(doc["model_name"]) / str(doc["run_id"])
        )


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def training_metrics(runs: list[dict[str, Any]], outputs: TrainingOutputs) -> Iterator[Metric]:
    """Loss, samples/s, step and progress of every run whose train stage is running."""
    families = {key: GaugeMetricFamily(name, doc, labels=["run", "model"]) for name, doc, key in GAUGES}
    ratio = GaugeMetricFamily(
        "ai_how_training_progress_ratio",
        "Logged steps / all steps of the running job",
        labels=["run", "model"],
    )
    for doc in runs:
        if doc["stages"].get("train", {}).get("status") != "running" or doc.get("status") != "running":
            continue
        folder = outputs.output_dir(doc)
        record = last_progress(folder / PROGRESS_FILE) if folder is not None else None
        if record is None:
            continue
        labels = [str(doc["run_id"]), str(doc["model_name"])]
        for key, family in families.items():
            if (value := _number(record.get(key))) is not None:
                family.add_metric(labels, value)
        step, total = _number(record.get("step")), _number(record.get("total_steps"))
        if step is not None and total:
            ratio.add_metric(labels, min(1.0, step / total))
    yield from families.values()
    yield ratio
