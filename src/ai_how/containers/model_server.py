"""The model-server image: its build context (Containerfile, requirements, wheels) and its build and push.

The context is assembled in a temporary directory: ``containers/model-server/{Containerfile,
requirements.txt}`` and ``wheels/`` holding the ai-how wheel (``pip wheel --no-deps`` of this
checkout). With ``offline`` the host's pip also downloads every dependency into ``wheels/`` (it sees
the host's indexes and local wheel directories), and the build runs with no network and no index:
the image's Python must then be the host's minor version (the CPU base is Python 3.11).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import ai_how
from ai_how.containers.builders import Builder, find_builder, host_failure_fix
from ai_how.errors import AiHowError
from ai_how.procs import run_logged


@dataclass(frozen=True)
class Variant:
    base_image: str
    torch_index_url: str  # '' = the default index (PyPI's Linux torch wheels are the CUDA builds)


VARIANTS = {
    "cpu": Variant("docker.io/library/python:3.11-slim-bookworm", "https://download.pytorch.org/whl/cpu"),
    "cuda": Variant("docker.io/nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04", ""),
}
CONTEXT_FILES = ("Containerfile", "requirements.txt")
STEP_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class ServerImageRequest:
    tag: str
    variant: str = "cpu"
    base_image: str | None = None  # None: the variant's
    torch_index_url: str | None = None  # None: the variant's
    offline: bool = False
    push: bool = False
    builder: str = "auto"


@dataclass(frozen=True)
class BuiltServerImage:
    tag: str
    builder: str
    variant: str
    base_image: str
    build_seconds: float
    pushed: bool
    log: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def source_tree() -> Path:
    """The ai-how checkout this package runs from (its pyproject.toml and containers/model-server/)."""
    root = Path(ai_how.__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file() or not containers_dir(root).is_dir():
        raise AiHowError(
            f"no ai-how checkout around {Path(ai_how.__file__).parent} (containers/model-server/ is missing)",
            fix="run `ai-how image server` from an editable install of the ai-how repository (`make setup`)",
        )
    return root


def containers_dir(root: Path) -> Path:
    return root / "containers" / "model-server"


def build_args(request: ServerImageRequest) -> dict[str, str]:
    """The Containerfile's ARGs for this request."""
    if request.variant not in VARIANTS:
        raise AiHowError(
            f"--variant {request.variant}: unknown variant", fix=f"use one of {', '.join(VARIANTS)}"
        )
    variant = VARIANTS[request.variant]
    index = variant.torch_index_url if request.torch_index_url is None else request.torch_index_url
    return {
        "BASE_IMAGE": request.base_image or variant.base_image,
        "VARIANT": request.variant,
        "TORCH_INDEX_URL": index,
        "PIP_OFFLINE": "1" if request.offline else "0",
    }


def _step(cmd: list[str], what: str, log: Path, report: Callable[[str], None]) -> None:
    done = run_logged(cmd, log_path=log, on_line=report, timeout_s=STEP_TIMEOUT_S)
    if done.returncode != 0:
        fix = host_failure_fix(log) or f"see the build log {log}"
        raise AiHowError(f"{what} failed (exit {done.returncode})", fix=fix)


def make_context(
    dest: Path, request: ServerImageRequest, *, log: Path, report: Callable[[str], None]
) -> None:
    """Fill ``dest`` with the Containerfile, requirements.txt and wheels/ for ``request``."""
    root = source_tree()
    for name in CONTEXT_FILES:
        shutil.copy2(containers_dir(root) / name, dest / name)
    wheels = dest / "wheels"
    wheels.mkdir()
    pip = [sys.executable, "-m", "pip"]
    report(f"[image] building the ai-how wheel from {root}")
    _step(
        [*pip, "wheel", "--no-deps", "-q", "-w", str(wheels), str(root)], "pip wheel of ai-how", log, report
    )
    built = sorted(wheels.glob("ai_how-*.whl"))
    if len(built) != 1:
        raise AiHowError(
            f"pip wheel left {len(built)} ai-how wheels in {wheels}", fix=f"see the build log {log}"
        )
    if not request.offline:
        return
    index = build_args(request)["TORCH_INDEX_URL"]
    report("[image] downloading the image's dependencies with this host's pip (--offline)")
    _step(
        [
            *pip,
            "download",
            "-q",
            "-d",
            str(wheels),
            *([f"--extra-index-url={index}"] if index else []),
            "-r",
            str(dest / "requirements.txt"),
            f"ai-how[serve] @ {built[0].as_uri()}",
        ],
        "pip download of the image's dependencies",
        log,
        report,
    )


def build_server_image(
    request: ServerImageRequest, *, log_dir: Path, report: Callable[[str], None]
) -> BuiltServerImage:
    """Build (and with ``request.push`` push) the model-server image with the host's builder."""
    args = build_args(request)
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"model-server-{request.variant}.log"
    log.write_text("")  # one build per log
    builder: Builder = find_builder(request.builder, log_path=log)
    report(
        f"[image] {builder.name} builds {request.tag} ({request.variant}, FROM {args['BASE_IMAGE']}); log {log}"
    )
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ai-how-model-server.") as tmp:
        context = Path(tmp)
        make_context(context, request, log=log, report=report)
        cmd = builder.build_cmd(
            containerfile=context / "Containerfile",
            context=context,
            tag=request.tag,
            build_args=args,
            offline=request.offline,
        )
        _step(cmd, f"{builder.name} build of {request.tag}", log, report)
    seconds = time.monotonic() - start
    if request.push:
        report(f"[image] {builder.name} pushes {request.tag}")
        _step(builder.push_cmd(request.tag), f"{builder.name} push of {request.tag}", log, report)
    return BuiltServerImage(
        tag=request.tag,
        builder=builder.name,
        variant=request.variant,
        base_image=args["BASE_IMAGE"],
        build_seconds=seconds,
        pushed=request.push,
        log=str(log),
    )
