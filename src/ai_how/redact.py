"""Secrets out of anything a person or a log reads: URI passwords and the values of secret variables."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

MASK = "***"
# scheme://user:password@host -> scheme://user:***@host
_URI_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)(?P<password>[^@\s/]+)@")
# Variables whose values are secrets by name alone (PGPASSWORD, AWS_SECRET_ACCESS_KEY, HF_TOKEN, ...).
_SECRET_NAME = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|CREDENTIAL|PRIVATE_KEY|API_KEY", re.IGNORECASE)
_MIN_SECRET_LEN = 4  # shorter values would mask ordinary words
_registered: set[str] = set()


def is_secret_name(name: str) -> bool:
    """True when an environment variable's name says it holds a secret, or a config named it as one."""
    return bool(_SECRET_NAME.search(name)) or name in _registered


def register_secret_names(names: Iterable[str]) -> None:
    """Treat these environment variables as secrets too (e.g. the config's ``*_env`` fields)."""
    _registered.update(n for n in names if n)


def secret_env_names(config: Any) -> set[str]:
    """The variable names that a config's ``*_env`` fields point at (pydantic model or plain data)."""
    data = config.model_dump() if hasattr(config, "model_dump") else config
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if isinstance(key, str) and key.endswith("_env") and isinstance(value, str):
                    found.add(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(data)
    return found


def secret_values(env: Mapping[str, str] | None = None) -> list[str]:
    """The secret values in ``env`` (default: this process's environment), longest first."""
    values: set[str] = set()
    for source in (os.environ, env or {}):
        for name, value in source.items():
            if is_secret_name(name) and len(value) >= _MIN_SECRET_LEN:
                values |= {value, quote(value, safe="")}
    return sorted(values, key=len, reverse=True)


def redact(text: str, env: Mapping[str, str] | None = None) -> str:
    """``text`` with URI passwords and the values of secret variables (``env`` and os.environ) masked."""
    text = _URI_PASSWORD.sub(lambda m: m.group("head") + MASK + "@", text)
    for value in secret_values(env):
        text = text.replace(value, MASK)
    return text
