"""Helm releases ai-how installs, run on the control plane over SSH (Kubespray's ``helm_enabled`` put helm
there; no helm binary is needed on the workstation).

A :class:`HelmChart` pins the chart, version and repository; :func:`install_over_ssh` copies the values
file to the control plane and runs an idempotent ``helm upgrade --install --wait --atomic``.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ai_how.errors import AiHowError
from ai_how.fsutil import atomic_write_text
from ai_how.procs import run_logged
from ai_how.provision.cloudinit import ADMIN_USER
from ai_how.provision.ssh import ssh_command, ssh_options

# Where Kubespray leaves the admin kubeconfig on every control-plane node.
CONTROL_PLANE_KUBECONFIG = "/etc/kubernetes/admin.conf"


@dataclass(frozen=True)
class HelmChart:
    release: str
    chart: str
    version: str
    repo: str
    namespace: str


def helm_install_command(
    release: str,
    chart: str,
    version: str,
    namespace: str,
    values_path: str,
    repo: str,
    *,
    kubeconfig: str | None = None,
    timeout: str = "15m",
) -> list[str]:
    """argv of an idempotent ``helm upgrade --install``: ``--repo`` fetches the chart without a
    ``helm repo add`` left behind, ``--wait --atomic`` rolls a failed install back,
    ``--create-namespace`` makes a first run work. Paths are on the machine that runs it."""
    argv = ["helm", "upgrade", "--install", release, chart]
    if repo:  # an OCI chart (chart = oci://...) is named whole and has no --repo
        argv += ["--repo", repo]
    argv += ["--version", version]
    argv += ["--namespace", namespace, "--create-namespace", "--values", values_path]
    argv += ["--wait", "--atomic", "--timeout", timeout]
    if kubeconfig:
        argv += ["--kubeconfig", kubeconfig]
    return argv


def chart_install_command(chart: HelmChart, values_path: str, *, kubeconfig: str | None = None) -> list[str]:
    return helm_install_command(
        chart.release,
        chart.chart,
        chart.version,
        chart.namespace,
        values_path,
        chart.repo,
        kubeconfig=kubeconfig,
    )


def install_over_ssh(
    chart: HelmChart,
    values: Mapping[str, Any],
    *,
    host: str,
    ssh_key: Path,
    known_hosts: Path,
    workdir: Path,
    log_path: Path,
    progress: Callable[[str], None],
) -> None:
    """Write ``values`` to ``workdir``, copy it to ``host`` and install ``chart`` there with sudo helm."""
    local = workdir / f"{chart.release}.values.yaml"
    atomic_write_text(local, yaml.safe_dump(dict(values), sort_keys=False))
    remote = f"/tmp/ai-how-{chart.release}.values.yaml"
    copy = [
        "scp",
        "-i",
        str(ssh_key),
        *ssh_options(known_hosts=known_hosts),
        str(local),
        f"{ADMIN_USER}@{host}:{remote}",
    ]
    if run_logged(copy, log_path=log_path, timeout_s=120).returncode != 0:
        raise AiHowError(f"could not copy {local} to {host}", fix=f"see {log_path}")
    progress(f"helm: installing {chart.chart} {chart.version} as {chart.namespace}/{chart.release}")
    helm = chart_install_command(chart, remote, kubeconfig=CONTROL_PLANE_KUBECONFIG)
    remote_cmd = "sudo " + shlex.join(helm)
    done = run_logged(
        [*ssh_command(host, key=ssh_key, known_hosts=known_hosts), remote_cmd],
        log_path=log_path,
        timeout_s=1800,
    )
    if done.returncode != 0:
        raise AiHowError(
            f"helm could not install {chart.chart} {chart.version} on {host}: {done.tail(3)}",
            fix=f"see {log_path}; rerun `ai-how cloud deploy CONFIG --tags none` after fixing it",
        )


def helm_uninstall_command(
    chart: HelmChart, *, kubeconfig: str | None = None, timeout: str = "10m"
) -> list[str]:
    """argv of ``helm uninstall`` that succeeds when the release is already gone."""
    argv = ["helm", "uninstall", chart.release, "--namespace", chart.namespace, "--ignore-not-found"]
    argv += ["--wait", "--timeout", timeout]
    if kubeconfig:
        argv += ["--kubeconfig", kubeconfig]
    return argv


def uninstall_over_ssh(
    chart: HelmChart,
    *,
    host: str,
    ssh_key: Path,
    known_hosts: Path,
    log_path: Path,
    progress: Callable[[str], None],
) -> None:
    """Uninstall ``chart``'s release on ``host`` with sudo helm (nothing happens when it is not installed)."""
    progress(f"helm: uninstalling {chart.namespace}/{chart.release}")
    remote_cmd = "sudo " + shlex.join(helm_uninstall_command(chart, kubeconfig=CONTROL_PLANE_KUBECONFIG))
    done = run_logged(
        [*ssh_command(host, key=ssh_key, known_hosts=known_hosts), remote_cmd],
        log_path=log_path,
        timeout_s=900,
    )
    if done.returncode != 0:
        raise AiHowError(
            f"helm could not uninstall {chart.namespace}/{chart.release} on {host}: {done.tail(3)}",
            fix=f"see {log_path}",
        )
