"""Generated alertmanager.yml: amtool accepts it, routes go by severity to the config's receivers, and no
secret value ever reaches a rendered file (receivers read files the stack writes from the environment)."""

from __future__ import annotations

import re
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ai_how.config.models import ClusterConfig, Monitoring, Receiver
from ai_how.errors import AiHowError
from ai_how.monitoring.alertmanager_config import (
    alertmanager_config,
    receivers_secret,
    secret_files,
    write_secret_files,
)
from ai_how.monitoring.render import dump_yaml, write_render
from tests.monitoring.tools import example_config, tool

WEBHOOK_MARKER = "https://hooks.example.org/SECRET-WEBHOOK-MARKER-7f3a"
PASSWORD_MARKER = "SMTP-PASSWORD-MARKER-91c2"
ENV = {"OPS_WEBHOOK_URL": WEBHOOK_MARKER, "OPS_SMTP_PASSWORD": PASSWORD_MARKER}


def _receivers() -> list[Receiver]:
    return [
        Receiver(name="pager", webhook_url_env="OPS_WEBHOOK_URL", severities=["critical"]),
        Receiver(
            name="ops-mail",
            email_to="ops@example.org",
            email_from="alerts@example.org",
            smarthost="smtp.example.org:587",
            smtp_password_env="OPS_SMTP_PASSWORD",
            severities=["critical", "warning"],
        ),
    ]


def _config(receivers: list[Receiver] | None = None) -> ClusterConfig:
    config = example_config()
    am = config.monitoring.alertmanager.model_copy(
        update={"receivers": _receivers() if receivers is None else receivers}
    )
    return config.model_copy(update={"monitoring": config.monitoring.model_copy(update={"alertmanager": am})})


def _monitoring(receivers: list[Receiver] | None = None) -> Monitoring:
    return _config(receivers).monitoring


def _amtool_version() -> tuple[int, int]:
    out = subprocess.run([tool("amtool"), "--version"], capture_output=True, text=True, check=False)
    found = re.search(r"version (\d+)\.(\d+)", out.stdout + out.stderr)
    assert found, out
    return int(found.group(1)), int(found.group(2))


def _checkable(path: Path, tmp_path: Path) -> Path:
    """``url_file`` needs Alertmanager 0.26; an older amtool (Debian bookworm: 0.25) checks everything else
    with the webhook URL inlined as a placeholder."""
    if _amtool_version() >= (0, 26):
        return path
    document = yaml.safe_load(path.read_text())
    for receiver in document["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = "http://placeholder.invalid/"
            del hook["url_file"]
    copy = tmp_path / "alertmanager-0.25.yml"
    copy.write_text(dump_yaml(document))
    return copy


def _amtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("amtool"), *map(str, args)], capture_output=True, text=True, check=False, timeout=60
    )


def test_amtool_accepts_the_rendered_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    write_render(_config(), out, state_dir=tmp_path / "state")
    result = _amtool("check-config", _checkable(out / "alertmanager" / "alertmanager.yml", tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 receivers" in result.stdout


@pytest.mark.parametrize(
    ("severity", "receivers"),
    [("critical", "pager,ops-mail"), ("warning", "ops-mail"), ("info", "null")],
)
def test_alerts_route_by_severity_to_the_config_s_receivers(
    tmp_path: Path, severity: str, receivers: str
) -> None:
    path = tmp_path / "alertmanager.yml"
    path.write_text(dump_yaml(alertmanager_config(_monitoring(), str(tmp_path / "secrets"))))
    result = _amtool(
        "config", "routes", "test", f"--config.file={_checkable(path, tmp_path)}",
        f"severity={severity}", "alertname=NodeDown", "cluster=hpc",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receivers


def test_secrets_are_file_references_and_no_value_reaches_any_rendered_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "out"
    write_render(_config(), out, state_dir=tmp_path / "state")
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) > 10
    for path in files:
        text = path.read_text()
        assert WEBHOOK_MARKER not in text and "SECRET-WEBHOOK-MARKER" not in text, path
        assert PASSWORD_MARKER not in text, path
    document = yaml.safe_load((out / "alertmanager" / "alertmanager.yml").read_text())
    by_name = {r["name"]: r for r in document["receivers"]}
    secrets = tmp_path / "state" / "monitoring" / "secrets"
    assert by_name["pager"]["webhook_configs"] == [
        {"url_file": f"{secrets}/pager.webhook-url", "send_resolved": True}
    ]
    email = by_name["ops-mail"]["email_configs"][0]
    assert email["auth_password_file"] == f"{secrets}/ops-mail.smtp-password"
    assert "auth_password" not in email
    # the cloud copy reads the receivers Secret the operator mounts
    secret = yaml.safe_load((out / "kubernetes" / "alertmanager-config.yaml").read_text())
    cloud = yaml.safe_load(secret["stringData"]["alertmanager.yaml"])
    hook = cloud["receivers"][1]["webhook_configs"][0]
    assert hook["url_file"] == "/etc/alertmanager/secrets/ai-how-alertmanager-receivers/pager.webhook-url"


def test_the_stack_writes_the_secret_files_privately_from_the_environment(tmp_path: Path) -> None:
    written = write_secret_files(_monitoring(), tmp_path / "secrets", ENV)
    assert sorted(p.name for p in written) == ["ops-mail.smtp-password", "pager.webhook-url"]
    assert (tmp_path / "secrets" / "pager.webhook-url").read_text() == WEBHOOK_MARKER
    for path in written:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert secret_files(_monitoring()) == {
        "pager.webhook-url": "OPS_WEBHOOK_URL",
        "ops-mail.smtp-password": "OPS_SMTP_PASSWORD",
    }


def test_a_missing_environment_variable_names_it(tmp_path: Path) -> None:
    with pytest.raises(AiHowError, match="OPS_SMTP_PASSWORD"):
        write_secret_files(_monitoring(), tmp_path, {"OPS_WEBHOOK_URL": WEBHOOK_MARKER})
    assert not (tmp_path / "pager.webhook-url").exists()


def test_the_receivers_secret_for_kubernetes_is_built_from_the_environment() -> None:
    secret = receivers_secret(_monitoring(), "monitoring", ENV)
    assert secret is not None
    assert secret["metadata"] == {
        "name": "ai-how-alertmanager-receivers",
        "namespace": "monitoring",
        "labels": {"app.kubernetes.io/managed-by": "ai-how"},
    }
    assert sorted(secret["data"]) == ["ops-mail.smtp-password", "pager.webhook-url"]
    assert receivers_secret(_monitoring([]), "monitoring", {}) is None


def test_without_receivers_every_alert_goes_to_the_null_receiver(tmp_path: Path) -> None:
    document: dict[str, Any] = alertmanager_config(_monitoring([]), "/unused")
    assert document["route"]["receiver"] == "null"
    assert "routes" not in document["route"]
    assert document["receivers"] == [{"name": "null"}]
    am = example_config().monitoring.alertmanager
    assert (document["route"]["group_wait"], document["route"]["repeat_interval"]) == (
        am.group_wait,
        am.repeat_interval,
    )


@pytest.mark.parametrize(
    ("receiver", "message"),
    [
        (Receiver(name="nothing"), "neither webhook_url_env nor email_to"),
        (Receiver(name="mail", email_to="a@example.org"), "lacks email_from or smarthost"),
        (Receiver(name="null", webhook_url_env="X"), "'null' is the receiver"),
    ],
)
def test_unusable_receivers_are_errors_naming_the_field(receiver: Receiver, message: str) -> None:
    with pytest.raises(AiHowError, match=message) as info:
        alertmanager_config(_monitoring([receiver]), "/unused")
    assert "monitoring.alertmanager.receivers[0]" in info.value.message
