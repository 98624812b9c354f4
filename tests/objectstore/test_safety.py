"""Sync never deletes what it did not write, and a manifest is untrusted input (file:// and real moto S3)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ai_how.cli.main import app
from ai_how.config.models import ObjectStore as StoreConfig
from ai_how.objectstore.base import ObjectStore, ObjectStoreError, open_store
from ai_how.objectstore.manifest import Manifest
from ai_how.objectstore.sync import sync_directory
from ai_how.objectstore.verified import download_verified
from tests.services import S3Server

runner = CliRunner()


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def contents(store: ObjectStore, prefix: str) -> dict[str, bytes]:
    """Every object under ``prefix`` (a directory) and its bytes."""
    out = {}
    for info in store.list(prefix):
        with store.open(info.key) as stream:
            out[info.key] = stream.read()
    return out


@pytest.fixture(params=["file", "s3"])
def models_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> tuple[ObjectStore, str]:  # (store, a prefix only this test uses)
    if request.param == "file":
        store, _ = open_store((tmp_path / "objects").as_uri())
        return store, "models/digits"
    config: StoreConfig = request.getfixturevalue("s3_config")
    store, _ = open_store("s3://models", config)
    return store, f"sibling-{tmp_path.name}/digits"


def test_sibling_prefix_keeps_every_object(models_store: tuple[ObjectStore, str], tmp_path: Path) -> None:
    store, base = models_store
    v10 = write_tree(tmp_path / "v10", {"weights.bin": os.urandom(3000), "sub/config.json": b"{}"})
    sync_directory(v10, store, f"{base}/v10")
    sibling = contents(store, f"{base}/v10")
    assert len(sibling) == 3  # two files and the manifest

    v1 = write_tree(tmp_path / "v1", {"weights.bin": os.urandom(2000)})
    sync_directory(v1, store, f"{base}/v1")
    assert contents(store, f"{base}/v10") == sibling
    # The pipeline prunes stale objects inside its own version prefix: never in v10.
    (v1 / "weights.bin").write_bytes(os.urandom(2000))
    report = sync_directory(v1, store, f"{base}/v1", delete=True)
    assert report.deleted == [] and report.stale == []
    assert contents(store, f"{base}/v10") == sibling
    assert set(contents(store, f"{base}/v1")) == {f"{base}/v1/weights.bin", f"{base}/v1/manifest.json"}
    # A prefix is a directory when listing, too (a trailing slash changes nothing).
    assert {i.key for i in store.list(f"{base}/v1/")} == {i.key for i in store.list(f"{base}/v1")}


def test_sync_keeps_objects_it_did_not_write_unless_asked(
    models_store: tuple[ObjectStore, str], tmp_path: Path
) -> None:
    store, base = models_store
    prefix = f"{base}/v2"
    source = write_tree(tmp_path / "src", {"a.bin": b"a" * 100, "b.bin": b"b" * 100})
    sync_directory(source, store, prefix)
    store.put_bytes(f"{prefix}/notes.txt", b"someone else's")
    (source / "b.bin").unlink()

    report = sync_directory(source, store, prefix)
    assert {f"{prefix}/b.bin", f"{prefix}/notes.txt"} <= set(contents(store, prefix))
    assert report.stale == ["b.bin", "notes.txt"] and report.deleted == []

    seen: list[tuple[str, str]] = []
    report = sync_directory(source, store, prefix, delete=True, on_file=lambda p, o: seen.append((p, o)))
    assert report.deleted == ["b.bin", "notes.txt"]
    assert [p for p, o in seen if o == "delete"] == ["b.bin", "notes.txt"]  # announced before removal
    assert set(contents(store, prefix)) == {f"{prefix}/a.bin", f"{prefix}/manifest.json"}


def test_delete_at_the_store_root_is_refused(tmp_path: Path) -> None:
    store, _ = open_store((tmp_path / "objects").as_uri())
    store.put_bytes("other/v1/weights.bin", b"keep me")
    source = write_tree(tmp_path / "src", {"a.bin": b"a"})
    with pytest.raises(ObjectStoreError, match="refusing to delete") as info:
        sync_directory(source, store, "", delete=True)
    assert info.value.fix and "PREFIX" in info.value.fix
    assert contents(store, "") == {"other/v1/weights.bin": b"keep me"}


# --------------------------------------------------------------------------- the CLI


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_cli_sync_deletes_nothing_without_delete(tmp_path: Path) -> None:
    source = write_tree(tmp_path / "src", {"a.bin": b"a" * 10, "b.bin": b"b" * 10})
    dest = (tmp_path / "store" / "m" / "v1").as_uri()
    assert cli("sync", str(source), dest)[0] == 0
    (source / "b.bin").unlink()
    (tmp_path / "store" / "m" / "v1" / "extra.txt").write_text("not from SRC")

    code, out = cli("sync", str(source), dest)
    assert (tmp_path / "store" / "m" / "v1" / "b.bin").exists()
    assert (tmp_path / "store" / "m" / "v1" / "extra.txt").exists()
    assert code == 0 and "2 not in SRC kept (--delete removes them)" in out

    code, out = cli("sync", str(source), dest, "--delete")
    assert code == 0, out
    assert f"delete: {dest}/b.bin" in out and f"delete: {dest}/extra.txt" in out
    assert sorted(p.name for p in (tmp_path / "store" / "m" / "v1").iterdir()) == ["a.bin", "manifest.json"]


def test_cli_delete_json_lists_what_was_removed(
    s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": s3_server.access_key,
        "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
        "AWS_DEFAULT_REGION": "us-east-1",
        "S3_ENDPOINT_URL": s3_server.endpoint,
    }.items():
        monkeypatch.setenv(name, value)
    s3 = s3_server.client()
    s3.create_bucket(Bucket="cli-delete")
    s3.put_object(Bucket="cli-delete", Key="m/v1/old.bin", Body=b"old")
    s3.put_object(Bucket="cli-delete", Key="m/v10/keep.bin", Body=b"sibling")
    source = write_tree(tmp_path / "src", {"a.bin": b"a"})

    code, out = cli("sync", str(source), "s3://cli-delete/m/v1", "--json")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="cli-delete")["Contents"]}
    assert {"m/v1/old.bin", "m/v10/keep.bin"} <= keys
    assert code == 0 and json.loads(out)["stale"] == ["old.bin"] and json.loads(out)["deleted"] == []
    code, out = cli("sync", str(source), "s3://cli-delete/m/v1", "--delete", "--json")
    assert code == 0 and json.loads(out)["deleted"] == ["old.bin"]
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket="cli-delete")["Contents"]}
    assert keys == {"m/v1/a.bin", "m/v1/manifest.json", "m/v10/keep.bin"}

    code, out = cli("sync", str(source), "s3://cli-delete", "--delete")
    assert code == 1 and "--delete refused" in out and "fix:" in out and "Traceback" not in out
    assert "m/v10/keep.bin" in {o["Key"] for o in s3.list_objects_v2(Bucket="cli-delete")["Contents"]}


def test_cli_delete_refuses_a_file_store_root(tmp_path: Path) -> None:
    source = write_tree(tmp_path / "src", {"a.bin": b"a"})
    store = tmp_path / "store"
    assert cli("sync", str(source), (store / "m" / "v1").as_uri())[0] == 0
    assert cli("sync", str(source), (store / "m" / "v2").as_uri())[0] == 0
    # store/m now holds two targets: it is a store root, and --delete there would remove both.
    code, out = cli("sync", str(source), (store / "m").as_uri(), "--delete")
    assert code == 1 and "--delete refused" in out
    assert (store / "m" / "v1" / "a.bin").exists() and (store / "m" / "v2" / "a.bin").exists()


# --------------------------------------------------------------------------- untrusted manifests


def entry(path: str, data: bytes) -> dict[str, object]:
    return {"path": path, "sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def snapshot(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("../../x", "'..' segment"),
        ("sub/../../../x", "'..' segment"),
        ("ABSOLUTE", "absolute path"),
        ("..\\..\\x", "backslash"),
        ("", "empty path"),
        ("ok.bin", "duplicate entry"),
    ],
)
def test_manifest_entry_is_refused_and_nothing_written_outside(bad: str, reason: str, tmp_path: Path) -> None:
    payload = b"attacker's bytes"
    if bad == "ABSOLUTE":
        bad = str(tmp_path / "outside.bin")
    store, _ = open_store((tmp_path / "objects").as_uri())
    store.put_bytes("m/v1/ok.bin", payload)
    store.put_bytes(f"m/v1/{bad.lstrip('/')}" if bad else "m/v1/empty", payload)  # the object it points at
    files = [entry("ok.bin", payload), entry(bad, payload)]
    store.put_bytes("m/v1/manifest.json", json.dumps({"format": 1, "meta": {}, "files": files}).encode())
    before = snapshot(tmp_path)

    dest = tmp_path / "download" / "a" / "b"
    with pytest.raises(ObjectStoreError) as info:
        download_verified(store, "m/v1", dest)
    assert repr(bad) in info.value.message and reason in info.value.message and info.value.fix
    assert snapshot(tmp_path) - before <= {"download", "download/a", "download/a/b"}  # nothing written


def test_manifest_traversal_through_s3_keys(s3_config: StoreConfig, tmp_path: Path) -> None:
    """S3 keys are not paths: an object named ``v1/../../x`` exists, and must not land outside dest."""
    store, _ = open_store("s3://models", s3_config)
    prefix = f"evil-{tmp_path.name}/v1"
    store.put_bytes(f"{prefix}/../../x", b"payload")
    manifest = {"format": 1, "meta": {}, "files": [entry("../../x", b"payload")]}
    store.put_bytes(f"{prefix}/manifest.json", json.dumps(manifest).encode())
    before = snapshot(tmp_path)
    with pytest.raises(ObjectStoreError, match=r"'\.\./\.\./x' is refused"):
        download_verified(store, prefix, tmp_path / "dl" / "a" / "b")
    assert snapshot(tmp_path) == before


def test_manifest_parser_rejects_bad_entries() -> None:
    good = entry("a.bin", b"a")
    with pytest.raises(ObjectStoreError, match=r"'a\.bin' is refused \(duplicate entry\)"):
        Manifest.from_bytes(json.dumps({"files": [good, good]}).encode(), "test")
    with pytest.raises(ObjectStoreError, match="no valid sha256"):
        Manifest.from_bytes(json.dumps({"files": [{**good, "sha256": "../x"}]}).encode(), "test")
    with pytest.raises(ObjectStoreError, match="no valid size"):
        Manifest.from_bytes(json.dumps({"files": [{**good, "size": -1}]}).encode(), "test")
    assert list(Manifest.from_bytes(json.dumps({"files": [good]}).encode(), "test").files) == ["a.bin"]


def test_download_through_a_symlinked_directory_is_refused(tmp_path: Path) -> None:
    store, _ = open_store((tmp_path / "objects").as_uri())
    source = write_tree(tmp_path / "src", {"sub/w.bin": b"weights"})
    sync_directory(source, store, "m/v1")
    dest = tmp_path / "dest"
    dest.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (dest / "sub").symlink_to(tmp_path / "elsewhere")  # a planted link inside the destination
    with pytest.raises(ObjectStoreError, match="leads outside the destination"):
        download_verified(store, "m/v1", dest)
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_download_temp_names_are_unique_and_cleaned_up(tmp_path: Path) -> None:
    store, _ = open_store((tmp_path / "objects").as_uri())
    source = write_tree(tmp_path / "src", {"w.bin": b"weights" * 100})
    sync_directory(source, store, "m/v1")
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / ".w.bin.part").write_bytes(b"another process's download")  # the old fixed temp name
    download_verified(store, "m/v1", dest)
    assert (dest / "w.bin").read_bytes() == b"weights" * 100
    assert (dest / ".w.bin.part").read_bytes() == b"another process's download"

    (tmp_path / "objects" / "m" / "v1" / "w.bin").write_bytes(b"rotten!" * 100)  # same size, other bytes
    (dest / "w.bin").unlink()
    with pytest.raises(ObjectStoreError, match="is corrupt"):
        download_verified(store, "m/v1", dest)
    assert sorted(p.name for p in dest.iterdir()) == [".w.bin.part"]  # no temp file of ours left behind


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_symlink_in_the_source_is_refused(kind: str, tmp_path: Path) -> None:
    secret = write_tree(tmp_path / "private", {"id_rsa": b"secret key"})
    source = write_tree(tmp_path / "src", {"w.bin": b"weights"})
    link: Callable[[], None] = (
        (lambda: (source / "key").symlink_to(secret / "id_rsa"))
        if kind == "file"
        else (lambda: (source / "keys").symlink_to(secret, target_is_directory=True))
    )
    link()
    store, _ = open_store((tmp_path / "objects").as_uri())
    with pytest.raises(ObjectStoreError, match="contains a symlink") as info:
        sync_directory(source, store, "m/v1")
    assert info.value.fix
    assert list(store.list("m")) == []
