"""The CLI as a user runs it: exit codes, JSON, tables, schema, fast start."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from ai_how import __version__
from ai_how.cli.main import app
from tests.conftest import EXAMPLE, LOCAL

runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.stdout


def test_validate_example_prints_summary() -> None:
    result = runner.invoke(app, ["validate", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    assert (
        "valid" in result.stdout and "inference-cluster" in result.stdout and "time-shared" in result.stdout
    )


def test_validate_json(tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", str(LOCAL), "--json"])
    data = json.loads(result.stdout)
    assert result.exit_code == 0 and data["valid"] is True and data["errors"] == []


def test_validate_invalid_exit_1_with_paths(
    example_data: dict[str, Any], write_config: Callable[[dict[str, Any]], Path]
) -> None:
    example_data["clusters"]["cloud"]["network"]["subnet"] = "192.168.100.0/25"
    result = runner.invoke(app, ["validate", str(write_config(example_data)), "--json"])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["valid"] is False
    assert any(e["path"] == "clusters.cloud.network.subnet" and e["fix"] for e in data["errors"])
    text = runner.invoke(app, ["validate", str(write_config(example_data))])
    assert text.exit_code == 1 and "fix:" in text.stdout and "Traceback" not in text.output


def test_validate_unreadable_exit_2(tmp_path: Path) -> None:
    missing = runner.invoke(app, ["validate", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2 and "no such file" in missing.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("metadata: [")
    as_json = runner.invoke(app, ["validate", str(bad), "--json"])
    assert as_json.exit_code == 2 and json.loads(as_json.stdout)["unreadable"] is True


def test_plan_shows_both_clusters_and_shared_gpu() -> None:
    result = runner.invoke(app, ["plan", str(EXAMPLE)])
    assert result.exit_code == 0, result.output
    for text in (
        "HPC cluster: training-cluster",
        "CLOUD cluster: inference-cluster",
        "hpc-compute-01",
        "gpu-worker-2",
        "Tesla T4",
        "time-shared between",
        "Host capacity",
    ):
        assert text in result.stdout, text


def test_plan_json() -> None:
    result = runner.invoke(app, ["plan", str(EXAMPLE), "--json"])
    plan = json.loads(result.stdout)["plan"]
    assert {c["cluster"]: c["cpu_cores"] for c in plan["clusters"]} == {"hpc": 12, "cloud": 36}
    assert plan["peak"]["clusters"] == ["cloud"]
    assert plan["gpu_shares"][0]["time_shared"] is True


def test_config_schema_is_json_schema(tmp_path: Path) -> None:
    result = runner.invoke(app, ["config", "schema"])
    schema = json.loads(result.stdout)
    assert schema["title"] == "ClusterConfig" and "clusters" in schema["properties"]
    out = tmp_path / "schema.json"
    assert runner.invoke(app, ["config", "schema", "-o", str(out)]).exit_code == 0
    assert json.loads(out.read_text()) == schema


def test_help_does_not_import_heavy_libraries() -> None:
    code = (
        "import sys; from ai_how.cli.main import app\n"
        "from typer.testing import CliRunner\n"
        "r = CliRunner().invoke(app, ['--help']); assert r.exit_code == 0, r.output\n"
        "r = CliRunner().invoke(app, ['validate', sys.argv[1]]); assert r.exit_code == 0, r.output\n"
        "heavy = {'torch', 'mlflow', 'kserve', 'transformers', 'oumi', 'libvirt', 'boto3'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code, str(LOCAL)], check=True)


def test_console_script_runs() -> None:
    exe = Path(sys.executable).parent / "ai-how"
    out = subprocess.run([str(exe), "validate", str(LOCAL)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr


def test_sync_command_on_its_own(tmp_path: Path) -> None:
    source = tmp_path / "model"
    source.mkdir()
    (source / "weights.bin").write_bytes(b"\x00" * 1000)
    (source / "config.json").write_text("{}")
    dest = (tmp_path / "store").as_uri() + "/models/m/v1"
    first = json.loads(runner.invoke(app, ["sync", str(source), dest, "--json"]).stdout)
    assert first["uploaded"] == ["config.json", "weights.bin"]
    again = json.loads(runner.invoke(app, ["sync", str(source), dest, "--json"]).stdout)
    assert again["uploaded"] == [] and again["skipped"] == ["config.json", "weights.bin"]
    assert (tmp_path / "store" / "models" / "m" / "v1" / "manifest.json").exists()
    missing = runner.invoke(app, ["sync", str(tmp_path / "nope"), dest])
    assert missing.exit_code == 1 and "is not a directory" in missing.output
