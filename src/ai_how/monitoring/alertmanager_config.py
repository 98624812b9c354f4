"""``alertmanager.yml``: route alerts by severity to the config's receivers; secrets only by file reference.

A receiver's webhook URL and SMTP password live in environment variables (``webhook_url_env``,
``smtp_password_env``). The rendered config never holds them: it names files (``url_file``,
``auth_password_file``) that :func:`write_secret_files` writes at start (the embedded stack, mode 0600)
or that a Kubernetes Secret mounts (:func:`receivers_secret`, kube-prometheus-stack). ``url_file`` needs
Alertmanager 0.26 or later (kube-prometheus-stack 88.5.3 ships 0.34; Debian bookworm's 0.25 lacks it).
Alerts no receiver asked for go to the ``null`` receiver.
"""

from __future__ import annotations

import base64
import contextlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ai_how.config.models import Monitoring, Receiver
from ai_how.errors import AiHowError
from ai_how.kube.kserve import MANAGED_BY
from ai_how.monitoring.metrics_catalog import CLUSTER_LABEL, SEVERITY_LABEL

NULL_RECEIVER = "null"
RECEIVERS_SECRET = "ai-how-alertmanager-receivers"
# Where the Prometheus Operator mounts ``alertmanagerSpec.secrets`` in the Alertmanager pods.
OPERATOR_SECRETS_MOUNT = "/etc/alertmanager/secrets"


def webhook_file_name(receiver: Receiver) -> str:
    return f"{receiver.name}.webhook-url"


def smtp_password_file_name(receiver: Receiver) -> str:
    return f"{receiver.name}.smtp-password"


def secret_files(monitoring: Monitoring) -> dict[str, str]:
    """File name -> the environment variable its content comes from, for every receiver secret."""
    files: dict[str, str] = {}
    for receiver in monitoring.alertmanager.receivers:
        if receiver.webhook_url_env:
            files[webhook_file_name(receiver)] = receiver.webhook_url_env
        if receiver.email_to and receiver.smtp_password_env:
            files[smtp_password_file_name(receiver)] = receiver.smtp_password_env
    return files


def _check_receiver(receiver: Receiver, where: str) -> None:
    if receiver.name == NULL_RECEIVER:
        raise AiHowError(
            f"{where}.name: '{NULL_RECEIVER}' is the receiver ai-how routes unclaimed alerts to",
            fix="give the receiver another name",
        )
    if not receiver.webhook_url_env and not receiver.email_to:
        raise AiHowError(
            f"{where} ({receiver.name}) has neither webhook_url_env nor email_to: it would receive nothing",
            fix="set webhook_url_env: VAR (a webhook URL in $VAR) or email_to/email_from/smarthost",
        )
    if receiver.email_to and not (receiver.email_from and receiver.smarthost):
        raise AiHowError(
            f"{where} ({receiver.name}) sends email but lacks email_from or smarthost",
            fix="set email_from: alerts@example.org and smarthost: smtp.example.org:587",
        )


def _receiver(receiver: Receiver, secrets_dir: str) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": receiver.name}
    if receiver.webhook_url_env:
        entry["webhook_configs"] = [
            {"url_file": f"{secrets_dir}/{webhook_file_name(receiver)}", "send_resolved": True}
        ]
    if receiver.email_to:
        email: dict[str, Any] = {
            "to": receiver.email_to,
            "from": receiver.email_from,
            "smarthost": receiver.smarthost,
            "send_resolved": True,
        }
        if receiver.smtp_password_env:
            email["auth_username"] = receiver.email_from
            email["auth_password_file"] = f"{secrets_dir}/{smtp_password_file_name(receiver)}"
        entry["email_configs"] = [email]
    return entry


def alertmanager_config(monitoring: Monitoring, secrets_dir: str) -> dict[str, Any]:
    """The Alertmanager configuration; ``secrets_dir`` is where the receiver secret files are read from."""
    am = monitoring.alertmanager
    for index, receiver in enumerate(am.receivers):
        _check_receiver(receiver, f"monitoring.alertmanager.receivers[{index}]")
    routes = [
        {
            "receiver": receiver.name,
            "matchers": [f'{SEVERITY_LABEL}=~"{"|".join(receiver.severities)}"'],
            "continue": True,
        }
        for receiver in am.receivers
        if receiver.severities
    ]
    route: dict[str, Any] = {
        "receiver": NULL_RECEIVER,
        "group_by": ["alertname", CLUSTER_LABEL],
        "group_wait": am.group_wait,
        "group_interval": am.group_interval,
        "repeat_interval": am.repeat_interval,
    }
    if routes:
        route["routes"] = routes
    return {
        "route": route,
        "inhibit_rules": [
            {
                "source_matchers": [f'{SEVERITY_LABEL}="critical"'],
                "target_matchers": [f'{SEVERITY_LABEL}=~"warning|info"'],
                "equal": ["alertname", CLUSTER_LABEL],
            }
        ],
        "receivers": [
            {"name": NULL_RECEIVER},
            *(_receiver(receiver, secrets_dir) for receiver in am.receivers),
        ],
    }


def cloud_secrets_dir() -> str:
    """Where the receivers Secret appears inside kube-prometheus-stack's Alertmanager pods."""
    return f"{OPERATOR_SECRETS_MOUNT}/{RECEIVERS_SECRET}"


# --------------------------------------------------------------------------- secret values (at start)


def _secret_values(monitoring: Monitoring, environ: Mapping[str, str]) -> dict[str, str]:
    values: dict[str, str] = {}
    for file_name, variable in secret_files(monitoring).items():
        value = environ.get(variable)
        if not value:
            raise AiHowError(
                f"environment variable {variable} is not set (an Alertmanager receiver reads it: {file_name})",
                fix=f"export {variable}=... before starting the stack, or drop it from "
                "monitoring.alertmanager.receivers",
            )
        values[file_name] = value
    return values


def write_secret_files(
    monitoring: Monitoring, secrets_dir: Path, environ: Mapping[str, str] | None = None
) -> list[Path]:
    """Write each receiver secret from its environment variable into ``secrets_dir`` (mode 0600)."""
    values = _secret_values(monitoring, os.environ if environ is None else environ)
    secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    written = []
    for file_name, value in sorted(values.items()):
        path = secrets_dir / file_name
        fd, tmp = tempfile.mkstemp(prefix=f".{file_name}.", dir=secrets_dir)  # created 0600
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(value.encode("utf-8"))
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        written.append(path)
    return written


def receivers_secret(
    monitoring: Monitoring, namespace: str, environ: Mapping[str, str] | None = None
) -> dict[str, Any] | None:
    """The Secret kube-prometheus-stack's Alertmanager mounts (``alertmanagerSpec.secrets``), built from
    the environment at apply time (never rendered to a file); None when no receiver has a secret."""
    values = _secret_values(monitoring, os.environ if environ is None else environ)
    if not values:
        return None
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": RECEIVERS_SECRET, "namespace": namespace, "labels": dict(MANAGED_BY)},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in sorted(values.items())},
    }
