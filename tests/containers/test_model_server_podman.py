"""A real model-server image, built by `ai-how image server` with podman from an mmdebstrap base (no
registry), whose container serves a digits model and answers V2 health as a non-root user.

Skipped, with the reason, where podman cannot run a container on this host. On the CI machine kind
(Debian 12 in a container: cgroup v1+v2 hybrid, no CAP_SYS_RESOURCE) podman needs runc and ulimits
within the host's hard limits: the test writes that containers.conf and points CONTAINERS_CONF at it,
as a user there would.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from ai_how.config.loader import load_config
from ai_how.kube import kserve
from ai_how.procs import free_port, http_ok, wait_until
from tests.conftest import EXAMPLE
from tests.services import AI_HOW
from tests.serving.llm_fixtures import digits_cnn, synced

BASE_IMAGE = "localhost/ai-how-test/debian-python:bookworm"
MIRROR = "http://deb.debian.org/debian"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]


def _podman(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *args], capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


def _containers_conf(path: Path) -> Path:
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    # runc could not set nproc even to the host's own hard limit here (EPERM); 4096 is below it.
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], 4096)
    lines = ["[containers]", f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]']
    if shutil.which("runc"):
        lines += ["[engine]", 'runtime = "runc"']
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def podman_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment podman runs in here, with a local base image; skips with the reason otherwise."""
    missing = [tool for tool in ("podman", "mmdebstrap") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (`apt-get install podman runc mmdebstrap`)")
    if os.geteuid() != 0:
        pytest.skip("needs root (rootless podman needs user namespaces, which this kind of host lacks)")
    work = tmp_path_factory.mktemp("podman")
    env = {**os.environ, "CONTAINERS_CONF": str(_containers_conf(work / "containers.conf"))}
    if _podman("image", "exists", BASE_IMAGE, env=env).returncode != 0:
        rootfs = work / "base.tar"
        made = subprocess.run(
            ["mmdebstrap", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
             "bookworm", str(rootfs), MIRROR],
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        if made.returncode != 0:
            pytest.skip(f"mmdebstrap could not make the base rootfs: {made.stderr.strip().splitlines()[-1:]}")
        imported = _podman("import", str(rootfs), BASE_IMAGE, env=env, timeout=300)
        rootfs.unlink()
        assert imported.returncode == 0, imported.stderr
    probe = _podman("run", "--rm", BASE_IMAGE, "python3", "-c", "print('ok')", env=env)
    if probe.returncode != 0 or probe.stdout.strip() != "ok":
        pytest.skip(f"podman cannot run a container here: {probe.stderr.strip()}")
    return env


@pytest.fixture(scope="module")
def server_image(podman_env: dict[str, str]) -> Iterator[tuple[str, dict[str, object]]]:
    tag = f"localhost/ai-how-test/model-server:{os.getpid()}"
    built = subprocess.run(
        [AI_HOW, "image", "server", "--tag", tag, "--builder", "podman", "--base-image", BASE_IMAGE,
         "--offline", "--torch-index-url", "", "--json"],
        capture_output=True, text=True, env=podman_env, timeout=1200, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    try:
        yield tag, json.loads(built.stdout)
    finally:
        _podman("rmi", "-f", tag, env=podman_env)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    """A synced digits model version: what KServe's storage-initializer puts in /mnt/models."""
    uri = synced(digits_cnn(tmp_path / "digits"), tmp_path / "objects", "digits-cnn/v1", 1)
    return Path(uri.removeprefix("file://"))


def test_built_image_serves_v2_health_as_a_non_root_user(
    server_image: tuple[str, dict[str, object]], podman_env: dict[str, str], model_dir: Path
) -> None:
    tag, report = server_image
    assert report["tag"] == tag and report["builder"] == "podman" and report["base_image"] == BASE_IMAGE
    inspect = "{{json .Config.User}} {{json .Config.Healthcheck.Test}}"
    user_json, check_json = _podman(
        "image", "inspect", "--format", inspect, tag, env=podman_env
    ).stdout.split(" ", 1)
    uid = json.loads(user_json).split(":")[0]
    assert uid.isdigit() and uid != "0" and json.loads(check_json)[0] == "CMD"

    # Exactly what KServe runs: the runtime's command and args (the image's entrypoint and CMD) + --name.
    runtime = kserve.serving_runtime(load_config(EXAMPLE, env={}).config)["spec"]["containers"][0]
    port = free_port()
    name = f"ai-how-test-{os.getpid()}"
    started = _podman(
        "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:{kserve.SERVER_PORT}",
        "-v", f"{model_dir}:/mnt/models:ro", "--entrypoint", json.dumps(runtime["command"]),
        tag, *runtime["args"], "--name=digits-cnn",
        env=podman_env,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(
            lambda: http_ok(f"{url}/v2/health/ready"), timeout_s=120, what="model server in the container"
        )
        assert http_ok(f"{url}/v2/health/live")
        assert http_ok(f"{url}/v2/models/digits-cnn/ready")
        assert _podman("exec", name, "id", "-u", env=podman_env).stdout.strip() == uid
        assert _podman("healthcheck", "run", name, env=podman_env).returncode == 0
    finally:
        logs = _podman("logs", name, env=podman_env)
        _podman("rm", "-f", name, env=podman_env)
    assert "Traceback" not in logs.stdout + logs.stderr
