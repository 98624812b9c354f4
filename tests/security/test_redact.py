"""Secret masking for logs and status output: URI passwords and the values of secret variables."""

from __future__ import annotations

import pytest

from ai_how import redact as redact_module
from ai_how.config.loader import load_config
from ai_how.redact import MASK, redact, register_secret_names, secret_env_names
from tests.conftest import EXAMPLE


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql+psycopg2://mlflow:pa%40ss@db:5432/m", "postgresql+psycopg2://mlflow:***@db:5432/m"),
        ("s3://key:secret@bucket/x and http://u:p@h/", "s3://key:***@bucket/x and http://u:***@h/"),
        ("http://host:5000/path", "http://host:5000/path"),  # a port is not a password
        ("no uri here: user:pass", "no uri here: user:pass"),
    ],
)
def test_uri_passwords_are_masked(text: str, expected: str) -> None:
    assert redact(text, {}) == expected


def test_values_of_secret_variables_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redact_module, "_registered", set())  # no names registered by other tests
    monkeypatch.setenv("SOME_API_TOKEN", "tok-123456")
    text = "--token tok-123456 --pw hunter2!x --key AKIAXYZ --plain value"
    env = {"PGPASSWORD": "hunter2!x", "CLUSTER_S3_KEY": "AKIAXYZ", "OTHER": "value"}
    masked = redact(text, env)
    assert "tok-123456" not in masked and "hunter2!x" not in masked and "value" in masked
    assert "AKIAXYZ" in masked  # not a secret by its name ...
    register_secret_names(["CLUSTER_S3_KEY"])  # ... until a config names it in a *_env field
    assert "AKIAXYZ" not in redact(text, env) and MASK in redact(text, env)


def test_percent_encoded_secrets_are_masked_too() -> None:
    assert redact("postgresql://u@h/?password=p%40ss%2Fw0rd", {"DB_PASSWORD": "p@ss/w0rd"}).endswith(MASK)


def test_the_config_names_its_secret_variables() -> None:
    names = secret_env_names(load_config(EXAMPLE).config)
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_DB_PASSWORD"} <= names
