"""A validation finding: what is wrong, where in the YAML, and how to fix it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from ai_how.config.envexpand import YamlPath


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


def format_path(path: YamlPath) -> str:
    """``("clusters", "cloud", "worker_nodes", "gpu", 0, "ip")`` -> ``clusters.cloud.worker_nodes.gpu[0].ip``."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "<root>"


@dataclass
class Finding:
    severity: Severity
    path: YamlPath
    message: str
    fix: str = ""
    code: str = ""
    line: int | None = field(default=None)
    related: list[YamlPath] = field(default_factory=list)

    @property
    def where(self) -> str:
        text = format_path(self.path)
        return f"{text} (line {self.line})" if self.line else text

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["path"] = format_path(self.path)
        data["related"] = [format_path(p) for p in self.related]
        return data


def error(
    path: YamlPath, message: str, fix: str, code: str, related: list[YamlPath] | None = None
) -> Finding:
    return Finding(Severity.ERROR, path, message, fix, code, related=related or [])


def warning(
    path: YamlPath, message: str, fix: str, code: str, related: list[YamlPath] | None = None
) -> Finding:
    return Finding(Severity.WARNING, path, message, fix, code, related=related or [])


def info(path: YamlPath, message: str, code: str, related: list[YamlPath] | None = None) -> Finding:
    return Finding(Severity.INFO, path, message, "", code, related=related or [])
