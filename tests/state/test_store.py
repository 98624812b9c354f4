"""The state store: atomic, locked, versioned."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest

from ai_how.errors import StateError
from ai_how.fsutil import atomic_write_text
from ai_how.state.store import FORMAT_VERSION, StateStore

INCREMENTS = 150


def _bump(root: str, key: str, barrier: multiprocessing.synchronize.Barrier) -> None:  # type: ignore[name-defined]
    store = StateStore(Path(root))
    barrier.wait()
    for _ in range(INCREMENTS):
        with store.transaction("state") as doc:
            doc.setdefault("counters", {}).setdefault("shared", 0)
            doc["counters"]["shared"] += 1
            doc["counters"][key] = doc["counters"].get(key, 0) + 1


def test_concurrent_writers_in_two_processes_lose_nothing(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_bump, args=(str(tmp_path), f"p{i}", barrier)) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    data = StateStore(tmp_path).read("state")
    assert data["counters"] == {"shared": 2 * INCREMENTS, "p0": INCREMENTS, "p1": INCREMENTS}


def test_layout_is_versioned_json(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    with store.transaction() as doc:
        doc["clusters"] = {"hpc": {"status": "running"}}
    with store.transaction("runs/20261123-abc") as doc:
        doc["stages"] = []
    envelope = json.loads((tmp_path / "state.json").read_text())
    assert envelope == {
        "format_version": FORMAT_VERSION,
        "data": {"clusters": {"hpc": {"status": "running"}}},
    }
    assert store.names("runs") == ["runs/20261123-abc"]
    assert not list(tmp_path.rglob("*.tmp"))


def test_failed_transaction_writes_nothing(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.write("state", {"a": 1})
    with pytest.raises(RuntimeError), store.transaction() as doc:
        doc["a"] = 2
        raise RuntimeError("boom")
    assert store.read() == {"a": 1}


def test_atomic_write_keeps_old_file_when_write_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "f.json"
    atomic_write_text(target, "old")

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]  # temp file cleaned up


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("{not json", "corrupt"),
        ('{"format_version": 99, "data": {}}', "format version 99"),
        ('["x"]', "not an ai-how state document"),
    ],
)
def test_unusable_files_give_clear_errors(tmp_path: Path, content: str, fragment: str) -> None:
    (tmp_path / "state.json").write_text(content)
    with pytest.raises(StateError, match=fragment):
        StateStore(tmp_path).read()


def test_document_names_cannot_escape_the_state_dir(tmp_path: Path) -> None:
    with pytest.raises(StateError):
        StateStore(tmp_path).read("../etc/passwd")
