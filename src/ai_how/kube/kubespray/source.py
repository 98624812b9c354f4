"""Obtaining Kubespray: a git clone of the pinned tag (commit verified, cached) or the user's checkout, and the
venv with Kubespray's own pinned requirements (its ``ansible==…``, not ai-how's).

Kubespray is not on any package index; it is a git repository whose release tags are pinned here by commit,
so a moved tag or a wrong checkout is refused before anything runs against the VMs.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from ai_how.errors import AiHowError
from ai_how.fsutil import atomic_write_text
from ai_how.procs import run_logged

_STAMP = ".ai-how-requirements.sha256"


class KubesprayPin(Protocol):
    """Which Kubespray to use (``kubernetes.kubespray`` in the config, its commit resolved)."""

    @property
    def version(self) -> str: ...  # the release tag, e.g. v2.31.0

    @property
    def commit(self) -> str | None: ...  # the tag's commit, 40 hex digits

    @property
    def repository(self) -> str: ...  # a git URL

    @property
    def checkout(self) -> str | None: ...  # an existing checkout to use instead of cloning


def _git_env() -> dict[str, str]:
    return {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}  # never ask for credentials


def head_commit(directory: Path, *, log_path: Path) -> str | None:
    """The commit checked out in ``directory`` (None when it is not a git work tree)."""
    out: list[str] = []
    done = run_logged(
        ["git", "-C", str(directory), "rev-parse", "HEAD"],
        log_path=log_path,
        env=_git_env(),
        timeout_s=60,
        on_line=out.append,
    )
    if done.returncode != 0 or not out:
        return None
    return out[-1].strip().lower()


def _pinned_commit(pin: KubesprayPin) -> str:
    if not pin.commit:
        raise AiHowError(
            f"no commit is pinned for Kubespray {pin.version}",
            fix="set kubernetes.kubespray.commit to the 40-hex commit of that tag",
        )
    return pin.commit.lower()


def _require_playbook(directory: Path) -> Path:
    if not (directory / "cluster.yml").is_file():
        raise AiHowError(
            f"{directory} is not a Kubespray checkout (it has no cluster.yml)",
            fix="point kubernetes.kubespray.checkout at the root of a Kubespray clone, or remove it",
        )
    return directory


def _use_checkout(checkout: Path, pin: KubesprayPin, commit: str, log_path: Path) -> Path:
    if not checkout.is_dir():
        raise AiHowError(
            f"kubernetes.kubespray.checkout: {checkout} is not a directory",
            fix="clone Kubespray there, or remove kubernetes.kubespray.checkout to let ai-how clone it",
        )
    head = head_commit(checkout, log_path=log_path)
    if head != commit:
        raise AiHowError(
            f"kubernetes.kubespray.checkout: {checkout} is at commit {head or '(not a git checkout)'}, "
            f"not {commit} pinned for Kubespray {pin.version}",
            fix=f"`git -C {checkout} checkout {pin.version}` (that commit), or set kubernetes.kubespray.version "
            "and .commit to what is checked out",
        )
    return _require_playbook(checkout)


def obtain(pin: KubesprayPin, cache_dir: Path, *, log_path: Path, progress: Callable[[str], None]) -> Path:
    """The Kubespray directory to run: the configured checkout after verifying its commit, else a shallow
    clone of the pinned tag under ``cache_dir`` (reused while its HEAD is the pinned commit)."""
    commit = _pinned_commit(pin)
    if pin.checkout:
        checkout = Path(pin.checkout).expanduser().resolve()
        progress(f"using the Kubespray checkout {checkout}")
        return _use_checkout(checkout, pin, commit, log_path)
    target = cache_dir / f"kubespray-{pin.version}"
    if target.is_dir():
        if head_commit(target, log_path=log_path) == commit:
            progress(f"using the cached Kubespray {pin.version} ({target})")
            return _require_playbook(target)
        progress(f"the cached Kubespray in {target} is not at {commit}: cloning it again")
        shutil.rmtree(target)
    return _clone(pin, commit, target, log_path=log_path, progress=progress)


def _clone(
    pin: KubesprayPin, commit: str, target: Path, *, log_path: Path, progress: Callable[[str], None]
) -> Path:
    """``git clone --depth 1 --branch TAG`` into a temporary folder, verified, then renamed into place."""
    partial = target.with_name(f".{target.name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    progress(f"cloning Kubespray {pin.version} from {pin.repository}")
    command = ["git", "-c", "advice.detachedHead=false", "clone", "--depth", "1", "--branch", pin.version]
    done = run_logged(
        [*command, pin.repository, str(partial)], log_path=log_path, env=_git_env(), timeout_s=900
    )
    if done.returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise AiHowError(
            f"git could not clone Kubespray {pin.version} from {pin.repository}: {done.tail(1) or 'see the log'}",
            fix=f"check the network and kubernetes.kubespray.repository/version; see {log_path}",
        )
    head = head_commit(partial, log_path=log_path)
    if head != commit:
        shutil.rmtree(partial, ignore_errors=True)
        raise AiHowError(
            f"Kubespray {pin.version} from {pin.repository} is at commit {head}, not the pinned {commit}; "
            "the clone was removed",
            fix="if the tag was moved on purpose, review the release and set kubernetes.kubespray.commit "
            f"to {head}; otherwise check kubernetes.kubespray.repository",
        )
    os.replace(partial, target)
    return _require_playbook(target)


# --------------------------------------------------------------------------- Kubespray's own venv


def _requirements_sha256(requirements: Path) -> str:
    return hashlib.sha256(requirements.read_bytes()).hexdigest()


def ensure_venv(
    kubespray_dir: Path, venv_dir: Path, *, log_path: Path, progress: Callable[[str], None]
) -> Path:
    """A venv with Kubespray's ``requirements.txt`` installed; returns its ``bin`` folder (holding the
    ``ansible-playbook`` Kubespray expects). Recreated when requirements.txt changes (a sha256 stamp).

    pip runs with the user's environment, so ``PIP_INDEX_URL``/``PIP_NO_INDEX``/``PIP_FIND_LINKS`` apply.
    """
    requirements = kubespray_dir / "requirements.txt"
    if not requirements.is_file():
        raise AiHowError(
            f"{kubespray_dir} has no requirements.txt, so its Ansible version is unknown",
            fix="use a Kubespray release checkout (v2.30.0 or later)",
        )
    digest = _requirements_sha256(requirements)
    stamp = venv_dir / _STAMP
    bin_dir = venv_dir / "bin"
    if stamp.is_file() and stamp.read_text().strip() == digest and (bin_dir / "python").exists():
        progress(f"using Kubespray's venv {venv_dir}")
        return bin_dir
    if venv_dir.exists():
        why = "its requirements.txt changed" if stamp.is_file() else "the last install did not finish"
        progress(f"recreating Kubespray's venv {venv_dir} ({why})")
        shutil.rmtree(venv_dir)
    progress(f"creating Kubespray's venv {venv_dir} (pip install -r {requirements.name}; a few minutes)")
    pip = [str(bin_dir / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
    steps = {
        "python -m venv": [sys.executable, "-m", "venv", str(venv_dir)],
        "pip install -r requirements.txt": [*pip, "-r", str(requirements)],
    }
    for label, step in steps.items():
        done = run_logged(step, log_path=log_path, cwd=kubespray_dir, timeout_s=1800)
        if done.returncode != 0:
            raise AiHowError(
                f"creating Kubespray's venv failed at `{label}`: {done.tail(1) or 'see the log'}",
                fix=f"see {log_path}; pip needs the package index (or PIP_INDEX_URL/PIP_FIND_LINKS)",
            )
    atomic_write_text(stamp, digest + "\n")
    return bin_dir
