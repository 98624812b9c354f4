"""The model-server image: the Containerfile agrees with the ServingRuntime, builder detection, and a real
podman build whose container answers V2 health (skipped, with the reason, where podman cannot run here).

The parse tests check only facts that break the runtime when changed: KServe runs the ServingRuntime's
command and args in this image as a non-root numeric user and probes /v2/health/ready on 8080.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from ai_how.config.loader import load_config
from ai_how.containers import builders, model_server
from ai_how.containers.model_server import VARIANTS, ServerImageRequest, build_args
from ai_how.errors import AiHowError
from ai_how.kube import kserve
from tests.conftest import EXAMPLE, REPO
from tests.services import AI_HOW

CONTAINER_DIR = REPO / "containers" / "model-server"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str


def parse_containerfile(text: str) -> list[Instruction]:
    """Instructions in order: comments dropped, backslash continuations joined."""
    instructions: list[Instruction] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, value = full.partition(" ")
        instructions.append(Instruction(keyword.upper(), value.strip()))
    assert not pending, "the Containerfile ends inside a continued line"
    return instructions


def arg_defaults(instructions: list[Instruction]) -> dict[str, str]:
    defaults = {}
    for ins in instructions:
        if ins.keyword == "ARG":
            name, _, default = ins.value.partition("=")
            defaults[name] = default
    return defaults


def expand(value: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables[m.group(1) or m.group(2)], value)


def env_of(instructions: list[Instruction]) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword == "ENV":
            for pair in shlex.split(ins.value):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


@pytest.fixture(scope="module")
def containerfile() -> list[Instruction]:
    return parse_containerfile((CONTAINER_DIR / "Containerfile").read_text())


@pytest.fixture(scope="module")
def runtime_container() -> dict[str, object]:
    runtime = kserve.serving_runtime(load_config(EXAMPLE, env={}).config)
    container: dict[str, object] = runtime["spec"]["containers"][0]
    return container


def one(instructions: list[Instruction], keyword: str) -> str:
    found = [i.value for i in instructions if i.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {found}"
    return found[0]


# --------------------------------------------------------------------------- the Containerfile


def test_from_is_a_build_arg_defaulting_to_the_cpu_variants_base(containerfile: list[Instruction]) -> None:
    first_from = next(i for i, ins in enumerate(containerfile) if ins.keyword == "FROM")
    assert containerfile[first_from].value == "${BASE_IMAGE}"
    before = arg_defaults(containerfile[:first_from])
    assert before["BASE_IMAGE"] == VARIANTS["cpu"].base_image
    assert one(containerfile, "FROM") == "${BASE_IMAGE}"  # one stage: what is built is what runs


def test_every_build_arg_ai_how_passes_is_declared(containerfile: list[Instruction]) -> None:
    # docker and podman ignore an undeclared --build-arg (a warning only): the variant would silently not apply.
    declared = set(arg_defaults(containerfile))
    for variant in VARIANTS:
        assert set(build_args(ServerImageRequest(tag="t", variant=variant, offline=True))) <= declared
    assert arg_defaults(containerfile)["TORCH_INDEX_URL"] == VARIANTS["cpu"].torch_index_url


def test_user_is_numeric_and_not_root(containerfile: list[Instruction]) -> None:
    # runAsNonRoot: the kubelet refuses a named user it cannot prove non-root, and UID 0.
    user = expand(one(containerfile, "USER"), arg_defaults(containerfile))
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, user
    assert gid == "" or gid.isdigit()
    last_user = max(i for i, ins in enumerate(containerfile) if ins.keyword == "USER")
    assert not [ins for ins in containerfile[last_user:] if ins.keyword == "RUN"], (
        "RUN after USER runs as the user"
    )


def test_entrypoint_and_cmd_are_the_serving_runtimes_command_and_args(
    containerfile: list[Instruction], runtime_container: dict[str, object]
) -> None:
    assert json.loads(one(containerfile, "ENTRYPOINT")) == runtime_container["command"]
    assert json.loads(one(containerfile, "CMD")) == runtime_container["args"]


def test_exposes_and_health_checks_the_runtimes_port_and_probe(
    containerfile: list[Instruction], runtime_container: dict[str, object]
) -> None:
    port = kserve.SERVER_PORT
    assert runtime_container["ports"] == [{"containerPort": port, "protocol": "TCP"}]
    assert one(containerfile, "EXPOSE").split() == [str(port)]
    probe = runtime_container["readinessProbe"]
    assert isinstance(probe, dict)
    check = one(containerfile, "HEALTHCHECK")
    _, _, command = check.partition(" CMD ")
    exec_form = json.loads(command)
    assert exec_form[0] == "python" and f"http://127.0.0.1:{port}{probe['httpGet']['path']}" in exec_form[-1]


def test_python_on_path_is_the_image_venv_and_runs_offline(containerfile: list[Instruction]) -> None:
    env = env_of(containerfile)
    assert env["PATH"].split(":")[0] == f"{env['VIRTUAL_ENV']}/bin"
    run_lines = " ".join(i.value for i in containerfile if i.keyword == "RUN")
    assert f"python3 -m venv {env['VIRTUAL_ENV']}" in run_lines
    assert {"DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}.items() <= env.items()
    assert '"ai-how[serve] @ file://${wheel}"' in run_lines


def test_copied_files_are_the_context_the_builder_assembles(containerfile: list[Instruction]) -> None:
    sources = {ins.value.split()[0] for ins in containerfile if ins.keyword == "COPY"}
    assert sources == {*model_server.CONTEXT_FILES} - {"Containerfile"} | {"wheels/"}
    assert all((CONTAINER_DIR / name).is_file() for name in model_server.CONTEXT_FILES)


def test_image_requirements_hold_the_projects_pins() -> None:
    image = _requirements(CONTAINER_DIR / "requirements.txt")
    project = _requirements(REPO / "requirements" / "constraints.txt")
    assert image["torch"] == project["torch"] == "==2.13.0"
    assert image["kserve"] == project["kserve"] and image["aiohttp"] == project["aiohttp"]
    assert "torchvision" not in image  # breaks `import transformers` on CPU torch (platform notes §2.1)


def _requirements(path: Path) -> dict[str, str]:
    pins = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#")[0].strip()
        if line:
            name = re.match(r"[A-Za-z0-9_.-]+", line)
            assert name
            pins[name.group(0).lower()] = line[name.end() :].strip()
    return pins


# --------------------------------------------------------------------------- builders


def test_no_builder_says_what_to_install(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    with pytest.raises(AiHowError) as caught:
        builders.find_builder("auto", log_path=tmp_path / "log", env={"PATH": str(empty)})
    assert "no container builder (podman, buildah or docker)" in caught.value.message
    assert caught.value.fix and "apt-get install podman" in caught.value.fix
    assert "\n" not in str(caught.value)
    with pytest.raises(AiHowError, match="unknown builder"):
        builders.find_builder("kaniko", log_path=tmp_path / "log", env={"PATH": str(empty)})


def _bin_with(tmp_path: Path, *tools: str) -> Path | None:
    """A PATH directory holding only links to these real tools (None when one is not installed)."""
    directory = tmp_path / "bin"
    directory.mkdir(exist_ok=True)
    for tool in tools:
        real = shutil.which(tool)
        if real is None:
            return None
        (directory / tool).symlink_to(real)
    return directory


def test_a_docker_client_without_daemon_is_not_a_builder(tmp_path: Path) -> None:
    directory = _bin_with(tmp_path, "docker")
    if directory is None:
        pytest.skip("no docker client on this host")
    env = {"PATH": str(directory), "DOCKER_HOST": f"unix://{tmp_path}/no-daemon.sock"}
    with pytest.raises(AiHowError) as caught:
        builders.find_builder("auto", log_path=tmp_path / "log", env=env)
    assert "no Docker daemon answers" in caught.value.message and caught.value.fix == builders.INSTALL_FIX


def test_auto_prefers_podman_and_commands_keep_the_healthcheck(tmp_path: Path) -> None:
    directory = _bin_with(tmp_path, "podman")
    if directory is None:
        pytest.skip("podman is not installed (`apt-get install podman`)")
    builder = builders.find_builder("auto", log_path=tmp_path / "log", env={"PATH": str(directory)})
    assert builder.name == "podman"
    cmd = builder.build_cmd(
        containerfile=Path("/c/Containerfile"),
        context=Path("/c"),
        tag="x:1",
        build_args={"A": "b"},
        offline=True,
    )
    # OCI-format images drop HEALTHCHECK: podman and buildah must write the Docker format.
    assert cmd[:2] == [builder.executable, "build"] and cmd[cmd.index("--format") + 1] == "docker"
    assert cmd[cmd.index("--network") + 1] == "none" and cmd[-1] == "/c"
    assert builder.push_cmd("x:1") == [builder.executable, "push", "x:1"]


def test_known_host_failures_get_their_fix(tmp_path: Path) -> None:
    log = tmp_path / "build.log"
    log.write_text(
        "STEP 8/17: RUN ...\nError: crun: cgroups in hybrid mode not supported, drop all controllers\n"
    )
    fix = builders.host_failure_fix(log)
    assert fix and "runc" in fix and "CONTAINERS_CONF" in fix
    log.write_text(
        "runc create failed: error setting rlimits for ready process: error setting rlimit type 6\n"
    )
    assert "default_ulimits" in (builders.host_failure_fix(log) or "")
    log.write_text("Error: something else\n")
    assert builders.host_failure_fix(log) is None


def test_unknown_variant_is_refused() -> None:
    with pytest.raises(AiHowError, match="--variant rocm"):
        build_args(ServerImageRequest(tag="t", variant="rocm"))
    cuda = build_args(ServerImageRequest(tag="t", variant="cuda"))
    assert "nvidia/cuda" in cuda["BASE_IMAGE"] and cuda["TORCH_INDEX_URL"] == ""


def test_cli_without_a_builder_exits_1_with_what_to_install(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    env = {"PATH": str(empty), "AI_HOW_STATE_DIR": str(tmp_path / "state"), "HOME": str(tmp_path)}
    done = subprocess.run(
        [AI_HOW, "image", "server", "--config", str(EXAMPLE)],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1 and done.stdout == ""
    assert "no container builder (podman, buildah or docker)" in done.stderr
    assert "apt-get install podman" in done.stderr and "Traceback" not in done.stderr
