"""Fixtures of the object-store tests: a model directory and a store config for the real moto S3."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ai_how.config.models import ObjectStore as StoreConfig
from tests.services import S3Server


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    root = tmp_path / "model"
    (root / "sub").mkdir(parents=True)
    for i in range(6):
        (root / f"shard-{i}.bin").write_bytes(os.urandom(50_000 + i))
    (root / "sub" / "config.json").write_text('{"a": 1}')
    return root


@pytest.fixture
def s3_config(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> StoreConfig:
    monkeypatch.setenv("T_S3_KEY", s3_server.access_key)
    monkeypatch.setenv("T_S3_SECRET", s3_server.secret_key)
    return StoreConfig.model_validate(
        {
            "backend": "s3",
            "endpoint": s3_server.endpoint,
            "credentials": {"access_key_id_env": "T_S3_KEY", "secret_access_key_env": "T_S3_SECRET"},
        }
    )
