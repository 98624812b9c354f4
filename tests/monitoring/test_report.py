"""`ai-how report RUN --html` on a run of the real pipeline (real MLflow, real model server, a real
`ai-how bench serve` result), and `ai-how monitoring open` with and without anything to open."""

from __future__ import annotations

import base64
import html
import json
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from ai_how.pipeline.stages import STAGES
from ai_how.procs import free_port
from tests.services import AI_HOW, Env, write_config

NO_DISPLAY = ("DISPLAY", "WAYLAND_DISPLAY", "BROWSER")


def probe_browser(folder: Path, names: tuple[str, ...] = ("probe",)) -> Path:
    """Executables that record the URL they are asked to open in ``folder/opened`` (one per line)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        script = folder / name
        script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$1" >> {folder / "opened"}\n')
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return folder / "opened"


def figure_png(page: str, metric: str) -> bytes:
    found = re.search(
        rf'<figure class="chart" data-metric="{metric}"[^>]*><img src="data:image/png;base64,([^"]+)"', page
    )
    assert found, f"no chart of {metric}"
    return base64.b64decode(found[1])


@pytest.mark.slow  # trains and serves a model: ~50-90 s beyond the shared services
def test_html_report_of_a_real_run_is_self_contained_and_built_from_its_sources(
    e2e: Env, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    e2e.pipeline("--workload", "digits-cnn", "--set", "epochs=6")
    run_id = e2e.latest_run()
    doc = e2e.run_doc(run_id)
    endpoint = doc["stages"]["promote"]["outputs"]["endpoint"]
    bench = tmp_path / "bench.json"
    bench.write_text(
        e2e.cli(
            "bench", "serve", "--url", endpoint, "--model", "digits-cnn", "--protocol", "v1",
            "--concurrency", "1,2", "--duration", "1", "--warmup", "0", "--json",
        ).stdout
    )  # fmt: skip

    result = json.loads(e2e.cli("report", "latest", "--html", "--bench", str(bench), "--json").stdout)

    assert result["run_id"] == run_id
    assert result["path"] == str(e2e.state_dir / "reports" / f"{run_id}.html")
    assert result["sections"] == ["stages", "training", "sync", "deploy", "verify", "latency"]
    page = Path(result["path"]).read_text()
    # nothing fetched from anywhere: every reference is inline data or an anchor, no script, no CSS import
    references = re.findall(r'\b(?:src|href)\s*=\s*["\']?([^"\'\s>]*)', page)
    assert references and all(r.startswith(("data:", "#")) for r in references), references
    assert not re.search(r"<script|<link|<iframe|url\(|@import", page, re.IGNORECASE)
    # the stage timeline: a lane with a bar for every stage, in pipeline order
    lanes = re.findall(
        r'<div class="lane" data-stage="([^"]+)"><span class="name">[^<]*</span><div class="track"><div class="bar"',
        page,
    )
    assert lanes == [s.name for s in STAGES]
    sync = doc["stages"]["sync"]["outputs"]
    assert sync["bytes_uploaded"] > 0 and f"({sync['bytes_uploaded']} bytes)" in page
    checks = doc["stages"]["verify"]["outputs"]["checks"]
    assert checks and all(html.escape(c["name"]) in page for c in checks)
    # the training curves are MLflow's recorded histories of the run
    port = yaml.safe_load(e2e.config.read_text())["mlops"]["mlflow"]["port"]
    mlflow_run = doc["stages"]["train"]["outputs"]["mlflow_run_id"]
    history = sorted(
        MlflowClient(f"http://127.0.0.1:{port}").get_metric_history(mlflow_run, "loss"), key=lambda m: m.step
    )
    assert len(history) > 1
    assert f'data-metric="loss" data-points="{len(history)}"' in page
    assert f"loss: {len(history)} steps, first {history[0].value:.4g}, last {history[-1].value:.4g}" in page
    assert figure_png(page, "loss").startswith(b"\x89PNG\r\n\x1a\n")
    assert f"from MLflow run {mlflow_run}" in page
    # latency by load point from the bench result
    for point in json.loads(bench.read_text())["points"]:
        assert f"<td>{point['point']}</td>" in page
        assert f'<td class="num">{point["latency_ms"]["p95"]:.1f}</td>' in page

    # MLflow unreachable: the curves come from the job's progress.jsonl, and the page says why
    dead = tmp_path / "dead-mlflow.yaml"
    config = yaml.safe_load(e2e.config.read_text())
    config["mlops"]["mlflow"]["port"] = free_port()
    dead.write_text(yaml.safe_dump(config))
    fallback = json.loads(
        e2e.cli("report", run_id, "-c", str(dead), "-o", str(tmp_path / "r.html"), "--json").stdout
    )
    assert "training" in fallback["sections"] and "progress.jsonl" in fallback["training_source"]
    offline = (tmp_path / "r.html").read_text()
    assert "does not answer" in offline and figure_png(offline, "loss").startswith(b"\x89PNG")

    # `monitoring open` with a browser: MLflow and the newest report are opened in it
    opened = probe_browser(tmp_path / "browser")
    shown = e2e.cli(
        "monitoring",
        "open",
        "-c",
        str(e2e.config),
        extra_env={"BROWSER": str(tmp_path / "browser" / "probe")},
    )
    assert opened.read_text().splitlines() == [f"http://127.0.0.1:{port}", Path(result["path"]).as_uri()]
    assert "(opened)" in shown.stdout


def test_a_missing_run_is_one_error_with_the_fix(tmp_path: Path) -> None:
    env = {**os.environ, "AI_HOW_STATE_DIR": str(tmp_path / "state")}
    for run, message, fix in (
        ("latest", "error: there is no pipeline run yet", "fix: start one with `ai-how pipeline run"),
        ("20990101-000000-x-0000", "error: no pipeline run '20990101-000000-x-0000'", "fix: start one"),
    ):
        done = subprocess.run(
            [AI_HOW, "report", run, "--html"], capture_output=True, text=True, env=env, check=False
        )
        assert done.returncode == 1
        assert done.stdout == ""
        lines = done.stderr.splitlines()
        assert len(lines) == 2 and lines[0].startswith(message) and lines[1].strip().startswith(fix), (
            done.stderr
        )
    assert not (tmp_path / "state" / "reports").exists()


def test_monitoring_open_with_nothing_running_says_how_to_start_it_and_opens_no_browser(
    tmp_path: Path,
) -> None:
    config_path = write_config(tmp_path / "cluster.yaml", mlflow_port=free_port(), serving_port=free_port())
    config = yaml.safe_load(config_path.read_text())
    prometheus, alertmanager = free_port(), free_port()
    config["monitoring"] = {
        "prometheus": {"enabled": True, "port": prometheus},
        "alertmanager": {"enabled": True, "port": alertmanager},
        "grafana": {"enabled": False},
    }
    config_path.write_text(yaml.safe_dump(config))
    opened = probe_browser(tmp_path / "bin", ("www-browser", "x-www-browser", "xdg-open", "lynx", "w3m"))
    page = tmp_path / "state" / "reports" / "some-run.html"  # the one thing there is to open
    page.parent.mkdir(parents=True)
    page.write_text("<!DOCTYPE html><title>r</title>")
    env = {k: v for k, v in os.environ.items() if k not in NO_DISPLAY}
    env |= {"AI_HOW_STATE_DIR": str(tmp_path / "state"), "PATH": f"{tmp_path / 'bin'}:{env['PATH']}"}

    done = subprocess.run(
        [AI_HOW, "monitoring", "open", "-c", str(config_path)],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    mlflow = config["mlops"]["mlflow"]["port"]
    assert lines[0].startswith("✗ MLflow UI") and f"http://127.0.0.1:{mlflow}: not answering" in lines[0]
    assert "make mlops-stack" in lines[0]
    assert lines[1].startswith("✗ Prometheus") and f":{prometheus}: not answering" in lines[1]
    assert lines[2].startswith("✗ Alertmanager") and f":{alertmanager}: not answering" in lines[2]
    assert lines[3].startswith("✓ latest run report") and lines[3].endswith(page.as_uri())
    assert lines[4:] == ["no browser here (no $DISPLAY or $BROWSER): open the URLs above yourself"]
    assert not opened.exists()  # no display: not even a console browser on PATH was started

    page.unlink()
    done = subprocess.run(
        [AI_HOW, "monitoring", "open", "-c", str(config_path)],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "ai-how report latest --html" in done.stdout.splitlines()[3]
    assert done.stdout.splitlines()[4:] == ["nothing to open yet"]
