"""Loading: YAML errors, ${VAR} expansion, schema errors with path, line and fix."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ai_how.config.envexpand import expand
from ai_how.config.loader import ConfigInvalidError, load_config
from ai_how.errors import ExitCode, UnreadableInputError
from tests.conftest import EXAMPLE, LOCAL


def test_shipped_configs_load() -> None:
    example = load_config(EXAMPLE, env={}).config
    assert example.clusters.hpc is not None and example.clusters.cloud is not None
    assert [w.name for w in example.clusters.cloud.worker_nodes.gpu] == ["gpu-worker-1", "gpu-worker-2"]
    # `ip:` (the seed's spelling for workers) is accepted as ip_address.
    assert str(example.clusters.cloud.worker_nodes.cpu[0].ip_address) == "192.168.200.11"
    local = load_config(LOCAL, env={}).config
    assert local.clusters.cloud is None and local.mlops.serving.backend == "local"


@pytest.mark.parametrize(
    ("text", "env", "expected"),
    [
        ("${A}", {"A": "x"}, "x"),
        ("${A:-d}", {}, "d"),
        ("${A:-d}", {"A": ""}, "d"),
        ("pre-${A}-post", {"A": "x"}, "pre-x-post"),
        ("$${A}", {"A": "x"}, "${A}"),
        ("${A:-}", {}, ""),
        ("no vars", {}, "no vars"),
    ],
)
def test_expand(text: str, env: dict[str, str], expected: str) -> None:
    assert expand(text, env) == (expected, [])


def test_expansion_types_follow_schema_and_environ_untouched(
    write_config: Callable[[dict[str, Any]], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AI_HOW_TEST_PORT", raising=False)
    path = write_config(
        {"metadata": {"name": "x"}, "mlops": {"serving": {"port": "${AI_HOW_TEST_PORT:-8123}"}}}
    )
    assert load_config(path).config.mlops.serving.port == 8123
    assert "AI_HOW_TEST_PORT" not in __import__("os").environ
    assert load_config(path, env={"AI_HOW_TEST_PORT": "9000"}).config.mlops.serving.port == 9000


def test_unset_variable_names_path_and_fix(write_config: Callable[[dict[str, Any]], Path]) -> None:
    path = write_config({"metadata": {"name": "x"}, "mlops": {"mlflow": {"tracking_uri": "${NOPE_URI}"}}})
    with pytest.raises(ConfigInvalidError) as info:
        load_config(path, env={})
    (finding,) = info.value.findings
    assert finding.where.startswith("mlops.mlflow.tracking_uri")
    assert "NOPE_URI" in finding.message and "NOPE_URI" in finding.fix
    assert finding.line == 5


def test_unknown_key_lists_allowed_and_suggests(
    write_config: Callable[[dict[str, Any]], Path], example_data: dict[str, Any]
) -> None:
    example_data["clusters"]["hpc"]["netwrok"] = example_data["clusters"]["hpc"].pop("network")
    with pytest.raises(ConfigInvalidError) as info:
        load_config(write_config(example_data), env={})
    messages = {(f.where.split(" ")[0], f.message, f.fix) for f in info.value.findings}
    unknown = [m for m in messages if m[0] == "clusters.hpc.netwrok"]
    assert unknown, messages
    assert "did you mean 'network'" in unknown[0][2]
    assert "compute_nodes" in unknown[0][2]  # the allowed keys are listed


def test_plaintext_secret_rejected(write_config: Callable[[dict[str, Any]], Path]) -> None:
    path = write_config({"metadata": {"name": "x"}, "mlops": {"postgresql": {"password": "mlflow"}}})
    with pytest.raises(ConfigInvalidError) as info:
        load_config(path, env={})
    finding = info.value.findings[0]
    assert finding.where.startswith("mlops.postgresql")
    assert "password_env" in finding.fix


def test_bad_values_name_field_and_fix(
    write_config: Callable[[dict[str, Any]], Path], example_data: dict[str, Any]
) -> None:
    example_data["clusters"]["hpc"]["network"]["subnet"] = "192.168.100.5/24"
    example_data["clusters"]["hpc"]["controller"]["ip_address"] = "not-an-ip"
    example_data["clusters"]["hpc"]["compute_nodes"][0]["pcie_passthrough"]["devices"][0]["pci_address"] = (
        "65:00.0"
    )
    with pytest.raises(ConfigInvalidError) as info:
        load_config(write_config(example_data), env={})
    by_path = {f.where.split(" ")[0]: f for f in info.value.findings}
    assert by_path["clusters.hpc.network.subnet"].fix == "write 192.168.100.0/24"
    assert "192.168.100.10" in by_path["clusters.hpc.controller.ip_address"].fix
    pci = by_path["clusters.hpc.compute_nodes[0].pcie_passthrough.devices[0].pci_address"]
    assert "0000:65:00.0" in pci.fix
    assert all(f.line for f in info.value.findings)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("metadata: {name: x\n", "invalid YAML"),
        ("", "is empty"),
        ("- a\n- b\n", "top level must be a mapping"),
        ("metadata: {name: x}\nmetadata: {name: y}\n", "duplicate key"),
    ],
)
def test_unreadable_files(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(content)
    with pytest.raises(UnreadableInputError) as info:
        load_config(path)
    assert fragment in str(info.value)
    assert info.value.exit_code == ExitCode.UNREADABLE


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UnreadableInputError, match="no such file"):
        load_config(tmp_path / "absent.yaml")


@pytest.mark.parametrize("value", [True, 3232261130, 1.5])
def test_addresses_must_be_text(
    write_config: Callable[[dict[str, Any]], Path], example_data: dict[str, Any], value: Any
) -> None:
    example_data["clusters"]["hpc"]["controller"]["ip_address"] = value
    example_data["clusters"]["hpc"]["network"]["subnet"] = value
    with pytest.raises(ConfigInvalidError) as info:
        load_config(write_config(example_data), env={})
    paths = {f.where.split(" ")[0] for f in info.value.findings}
    assert {"clusters.hpc.controller.ip_address", "clusters.hpc.network.subnet"} <= paths
    assert all("quote the address" in f.fix for f in info.value.findings if "ip_address" in f.where)
