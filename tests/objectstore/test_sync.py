"""Sync against a real S3 endpoint (moto, with credential checks) and the file:// store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ai_how.config.models import ObjectStore as StoreConfig
from ai_how.failpoints import FailpointError
from ai_how.objectstore.base import ObjectStoreError, open_store
from ai_how.objectstore.sync import sync_directory
from ai_how.objectstore.verified import download_verified, read_manifest, verify_target
from tests.services import S3Server


def test_sync_is_content_based_and_verified(model_dir: Path, s3_config: StoreConfig, tmp_path: Path) -> None:
    store, prefix = open_store(f"s3://models/sync-{tmp_path.name}/v1", s3_config)
    first = sync_directory(model_dir, store, prefix)
    assert first.uploaded == sorted(["sub/config.json", *[f"shard-{i}.bin" for i in range(6)]])
    manifest = read_manifest(store, prefix)
    assert set(manifest.files) == set(first.uploaded) and manifest.digest == first.manifest_digest
    # Unchanged content is detected by sha256 and not sent again.
    second = sync_directory(model_dir, store, prefix)
    assert second.uploaded == [] and len(second.skipped) == 7
    # A changed file is re-sent; a removed one stays in the target (reported) unless delete is asked.
    (model_dir / "shard-0.bin").write_bytes(b"new content")
    (model_dir / "shard-5.bin").unlink()
    third = sync_directory(model_dir, store, prefix)
    assert third.uploaded == ["shard-0.bin"] and third.stale == ["shard-5.bin"] and third.deleted == []
    assert store.head(f"{prefix}/shard-5.bin") is not None
    fourth = sync_directory(model_dir, store, prefix, delete=True)
    assert fourth.uploaded == [] and fourth.deleted == ["shard-5.bin"]
    assert store.head(f"{prefix}/shard-5.bin") is None
    assert verify_target(store, prefix)[1] == {}


def test_large_file_goes_multipart_and_verifies(
    tmp_path: Path, s3_config: StoreConfig, s3_server: S3Server
) -> None:
    from ai_how.objectstore import s3store

    big = tmp_path / "big"
    big.mkdir()
    (big / "weights.bin").write_bytes(os.urandom(s3store.MULTIPART_THRESHOLD + 1024))
    store, prefix = open_store(f"s3://models/big-{tmp_path.name}", s3_config)
    sync_directory(big, store, prefix)
    head = s3_server.client().head_object(Bucket="models", Key=f"{prefix}/weights.bin")
    assert head["ETag"].strip('"').endswith("-2")  # two parts
    assert verify_target(store, prefix)[1] == {}


def test_interrupted_sync_resumes_without_resending(
    model_dir: Path, s3_config: StoreConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, prefix = open_store(f"s3://models/resume-{tmp_path.name}", s3_config)
    state = tmp_path / "sync-state.json"
    monkeypatch.setenv("AI_HOW_FAILPOINTS", "sync.file_done=3:raise")
    with pytest.raises(FailpointError):
        sync_directory(model_dir, store, prefix, state_path=state, workers=1)
    assert store.head(f"{prefix}/manifest.json") is None  # an interrupted target never looks complete
    monkeypatch.delenv("AI_HOW_FAILPOINTS")
    import json

    verified_before = set(json.loads(state.read_text())["verified"])
    assert len(verified_before) == 3
    resumed = sync_directory(model_dir, store, prefix, state_path=state, workers=1)
    assert not verified_before & set(resumed.uploaded)
    # Files the worker finished after the failure but before the cancel are skipped by their sha256
    # (how many depends on scheduling); every other file is uploaded again.
    assert verified_before <= set(resumed.skipped)
    assert set(resumed.uploaded) | set(resumed.skipped) == set(read_manifest(store, prefix).files)
    assert verify_target(store, prefix)[1] == {}


def test_corrupted_object_is_detected(model_dir: Path, tmp_path: Path) -> None:
    store, _prefix = open_store((tmp_path / "objects").as_uri())
    sync_directory(model_dir, store, "m/v1")
    target = tmp_path / "objects" / "m" / "v1" / "shard-2.bin"
    data = bytearray(target.read_bytes())
    data[100] ^= 0x01  # one flipped bit
    target.write_bytes(bytes(data))
    problems = verify_target(store, "m/v1")[1]
    assert list(problems) == ["shard-2.bin"] and "sha256" in problems["shard-2.bin"]
    with pytest.raises(ObjectStoreError, match=r"shard-2\.bin .* is corrupt"):
        download_verified(store, "m/v1", tmp_path / "download")


def test_wrong_credentials_name_the_variables(
    model_dir: Path, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("T_S3_KEY", s3_server.access_key)
    monkeypatch.setenv("T_S3_SECRET", "not-the-secret")
    config = StoreConfig.model_validate(
        {
            "backend": "s3",
            "endpoint": s3_server.endpoint,
            "credentials": {"access_key_id_env": "T_S3_KEY", "secret_access_key_env": "T_S3_SECRET"},
        }
    )
    store, prefix = open_store(f"s3://models/creds-{tmp_path.name}", config)
    with pytest.raises(ObjectStoreError) as info:
        sync_directory(model_dir, store, prefix)
    assert "rejected the credentials" in info.value.message
    assert "T_S3_KEY and T_S3_SECRET" in (info.value.fix or "")


def test_unreachable_endpoint(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    config = StoreConfig.model_validate({"backend": "s3", "endpoint": "http://127.0.0.1:9"})
    store, prefix = open_store("s3://models/x", config)
    with pytest.raises(ObjectStoreError, match=r"cannot reach the S3 endpoint http://127\.0\.0\.1:9"):
        sync_directory(model_dir, store, prefix)


def test_missing_credentials(model_dir: Path, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    store, prefix = open_store("s3://models/nocreds", StoreConfig(backend="s3", endpoint=s3_server.endpoint))
    with pytest.raises(ObjectStoreError, match="no S3 credentials"):
        sync_directory(model_dir, store, prefix)
