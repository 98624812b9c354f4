"""The generated reference pages: up to date with the code, complete, and the check catches a stale page."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer

from ai_how.cli.main import app
from ai_how.config.models import ClusterConfig
from ai_how.docs_gen import cli_reference, config_reference
from ai_how.docs_gen.__main__ import DEFAULT_DOCS_DIR, main, stale_pages, write_pages

REPO = Path(__file__).resolve().parents[2]


def test_the_committed_reference_pages_are_up_to_date() -> None:
    stale = stale_pages(REPO / "docs")
    assert not stale, "regenerate with `make docs-reference`:\n" + "\n".join(stale.values())


def test_the_default_docs_dir_is_the_checkout_s() -> None:
    assert DEFAULT_DOCS_DIR == REPO / "docs"


def test_check_exits_1_with_a_diff_when_a_page_is_stale(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_pages(tmp_path)
    assert main(["--check", "--docs-dir", str(tmp_path)]) == 0
    page = tmp_path / "reference" / "configuration.md"
    page.write_text(page.read_text().replace("`mlops.serving.port`", "`mlops.serving.prot`"))
    assert main(["--check", "--docs-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "-| `mlops.serving.prot`" in out and "+| `mlops.serving.port`" in out


def test_the_module_runs_as_a_program(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ai_how.docs_gen", "--check", "--docs-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1 and "out of date" in done.stderr  # nothing generated there yet


def test_every_config_field_is_in_the_configuration_reference() -> None:
    text = config_reference.render()
    paths = {row.path for section in config_reference.sections() for row in section.rows}
    for path in paths:
        assert f"| `{path}` |" in text
    for name in ClusterConfig.model_fields:
        assert name in paths
    assert "mlops.serving.autoscaling.target_utilization" in paths
    assert "clusters.cloud.worker_nodes.gpu[]" in {s.path for s in config_reference.sections()}


def test_a_field_s_type_default_and_description_are_rendered() -> None:
    text = config_reference.render()
    assert (
        "| `mlops.serving.autoscaling.autoscaler` | one of `hpa`, `keda` | `hpa` | "
        "kserve: hpa (CPU/memory utilisation) or keda (in-flight requests). |" in text
    )
    assert "| `mlops.mlflow.port` | integer (≥ 1, ≤ 65535) | `5000` | — |" in text
    assert "| `metadata.name` | string (a DNS label" in text and "**required**" in text


def test_every_command_and_option_is_in_the_cli_reference() -> None:
    text = cli_reference.render()
    root = typer.main.get_command(app)
    pages = cli_reference.commands(root)
    assert len(pages) > 40
    for page in pages:
        assert f"## `{page.name}`" in text
        for param in page.command.params:
            if isinstance(param, click.Option) and not param.hidden:
                assert f"`{' / '.join([*param.opts, *param.secondary_opts])}" in text, (page.name, param.opts)
    assert "## `ai-how pipeline run`" in text and "`--stop-after TEXT`" in text
