"""Uploads are verified by the server's SHA-256 checksum (no read-back), and corruption is still caught."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from ai_how.config.models import ObjectStore as StoreConfig
from ai_how.failpoints import FailpointError
from ai_how.objectstore.base import SourceChangedError, open_store
from ai_how.objectstore.s3store import S3Store
from ai_how.objectstore.sync import sync_directory
from ai_how.objectstore.verified import read_manifest, verify_target
from tests.services import S3Server


def count_calls(store: S3Store) -> Counter[str]:
    """Requests the store's client sends, by operation (GetObject, HeadObject, PutObject, ...)."""
    calls: Counter[str] = Counter()

    def seen(model: Any, **_: Any) -> None:
        calls[model.name] += 1

    store.client.meta.events.register("before-call.s3", seen)
    return calls


def test_server_checksum_replaces_the_read_back(
    model_dir: Path, s3_config: StoreConfig, tmp_path: Path
) -> None:
    store, prefix = open_store(f"s3://models/checksum-{tmp_path.name}/v1", s3_config)
    assert isinstance(store, S3Store)
    calls = count_calls(store)
    state = tmp_path / "state.json"
    report = sync_directory(model_dir, store, prefix, state_path=state)
    assert len(report.uploaded) == 7
    assert calls["GetObject"] == 0, "an upload the server confirmed was read back"
    assert calls["PutObject"] == 8  # seven files and the manifest: one request each
    # The checksum the server returned is recorded with each file.
    records = json.loads(state.read_text())["verified"]
    for rel, record in records.items():
        digest = hashlib.sha256((model_dir / rel).read_bytes()).digest()
        assert record["checksum"] == base64.b64encode(digest).decode() and record["sha256"] == digest.hex()

    # A re-sync without the local state (another machine) lists once instead of a HEAD per file.
    calls.clear()
    again = sync_directory(model_dir, store, prefix, state_path=tmp_path / "elsewhere.json")
    assert again.uploaded == [] and len(again.skipped) == 7
    assert calls["ListObjectsV2"] == 1 and calls["HeadObject"] == 1 and calls["PutObject"] == 0
    assert verify_target(store, prefix)[1] == {}


def test_multipart_upload_is_confirmed_by_part_checksums(
    tmp_path: Path, s3_config: StoreConfig, s3_server: S3Server
) -> None:
    from ai_how.objectstore import s3store

    big = tmp_path / "big"
    big.mkdir()
    data = os.urandom(2 * s3store.MULTIPART_CHUNK + 1000)
    (big / "weights.bin").write_bytes(data)
    store, prefix = open_store(f"s3://models/mp-{tmp_path.name}", s3_config)
    assert isinstance(store, S3Store)
    calls = count_calls(store)
    sync_directory(big, store, prefix)
    assert calls["UploadPart"] == 3 and calls["GetObject"] == 0
    body = s3_server.client().get_object(Bucket="models", Key=f"{prefix}/weights.bin")["Body"].read()
    assert hashlib.sha256(body).digest() == hashlib.sha256(data).digest()


def test_a_file_rewritten_during_the_sync_is_refused_not_stored(
    s3_config: StoreConfig, s3_server: S3Server, tmp_path: Path
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for i in range(40):  # the single worker is busy with these while the last file is rewritten
        (source / f"a-{i:02d}.bin").write_bytes(os.urandom(1000))
    (source / "z-last.bin").write_bytes(b"version1" * 100)
    store, prefix = open_store(f"s3://models/changing-{tmp_path.name}", s3_config)
    sync_directory(source, store, prefix)
    # Version 2 of every file, same sizes: each is hashed to compare with the store, then sent.
    for i in range(40):
        (source / f"a-{i:02d}.bin").write_bytes(os.urandom(1000))
    (source / "z-last.bin").write_bytes(b"version2" * 100)

    def rewrite_last(path: str, outcome: str) -> None:
        if path == "a-00.bin":
            (source / "z-last.bin").write_bytes(b"version3" * 100)  # after it was hashed, before it is sent

    with pytest.raises(SourceChangedError, match=r"z-last\.bin changed while it was being synced"):
        sync_directory(source, store, prefix, workers=1, on_file=rewrite_last)
    s3 = s3_server.client()
    body = s3.get_object(Bucket="models", Key=f"{prefix}/z-last.bin")["Body"].read()
    assert body == b"version1" * 100, "bytes that do not match the hash the sync compared were stored"
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="models", Prefix=f"{prefix}/")["Contents"]}
    assert f"{prefix}/manifest.json" not in keys  # the target does not look complete


@pytest.mark.parametrize("backend", ["file", "s3"])
def test_store_refuses_bytes_that_do_not_match_the_sha256(backend: str, tmp_path: Path, request: Any) -> None:
    uri = (tmp_path / "objects").as_uri() if backend == "file" else f"s3://models/mismatch-{tmp_path.name}"
    store, _ = open_store(uri, request.getfixturevalue("s3_config") if backend == "s3" else None)
    path = tmp_path / "w.bin"
    path.write_bytes(b"what is on disk now")
    with pytest.raises(SourceChangedError):
        store.put_file("m/w.bin", path, hashlib.sha256(b"what the manifest says").hexdigest())
    assert store.head("m/w.bin") is None


def test_resume_resends_what_changed_in_the_store_since_it_was_recorded(
    model_dir: Path,
    s3_config: StoreConfig,
    s3_server: S3Server,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store, prefix = open_store(f"s3://models/tampered-{tmp_path.name}", s3_config)
    state = tmp_path / "state.json"
    monkeypatch.setenv("AI_HOW_FAILPOINTS", "sync.file_done=3:raise")
    with pytest.raises(FailpointError):
        sync_directory(model_dir, store, prefix, state_path=state, workers=1)
    monkeypatch.delenv("AI_HOW_FAILPOINTS")
    recorded = sorted(json.loads(state.read_text())["verified"])
    assert len(recorded) == 3
    # Behind the sync's back: one recorded object is removed, another replaced (same size, no metadata).
    s3 = s3_server.client()
    s3.delete_object(Bucket="models", Key=f"{prefix}/{recorded[0]}")
    size = (model_dir / recorded[1]).stat().st_size
    s3.put_object(Bucket="models", Key=f"{prefix}/{recorded[1]}", Body=b"x" * size)

    resumed = sync_directory(model_dir, store, prefix, state_path=state, workers=1)
    assert {recorded[0], recorded[1]} <= set(resumed.uploaded)
    assert recorded[2] in resumed.skipped
    assert verify_target(store, prefix)[1] == {}
    assert set(read_manifest(store, prefix).files) == set(resumed.uploaded) | set(resumed.skipped)


def test_state_is_written_in_batches_but_the_first_files_one_by_one(tmp_path: Path) -> None:
    from ai_how.objectstore.manifest import ManifestEntry
    from ai_how.objectstore.sync import _SyncState

    path = tmp_path / "state.json"
    state = _SyncState(path, "target")
    writes = []
    for i in range(200):
        state.mark(ManifestEntry(f"f{i}", "0" * 64, 1), None, None)
        writes.append(len(json.loads(path.read_text())["verified"]) if path.exists() else 0)
    assert writes[:8] == list(range(1, 9))  # a crash early loses nothing
    assert len(set(writes)) < 60  # not a rewrite per file
    assert all(i + 1 - w <= max(1, (i + 1) // 8) + 1 for i, w in enumerate(writes))  # bounded loss
    state.flush()
    assert len(json.loads(path.read_text())["verified"]) == 200


def test_a_changed_record_for_a_path_already_recorded_reaches_the_disk(tmp_path: Path) -> None:
    """Re-marking a path (same size, new content) must be written, or a later resume trusts stale content."""
    from ai_how.objectstore.manifest import ManifestEntry
    from ai_how.objectstore.sync import _SyncState

    state_path = tmp_path / "state.json"
    state = _SyncState(state_path, "file:///t/")
    state.mark(ManifestEntry("w.bin", "a" * 64, 10), None, None)
    state.flush()
    state.mark(ManifestEntry("w.bin", "b" * 64, 10), None, None)
    state.flush()
    assert _SyncState(state_path, "file:///t/").verified["w.bin"]["sha256"] == "b" * 64
