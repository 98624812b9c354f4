"""Load ``cluster.yaml``: read, expand ``${VAR}``, validate the schema, report every problem with its line."""

from __future__ import annotations

import difflib
import os
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ai_how.config.envexpand import YamlPath, expand_tree
from ai_how.config.findings import Finding, error, format_path
from ai_how.config.models import PATTERN_HINTS, ClusterConfig
from ai_how.config.yamlsource import YamlSource, read_yaml
from ai_how.errors import AiHowError, ExitCode


class ConfigInvalidError(AiHowError):
    """The file was read, but the config is invalid (exit 1). Carries every finding."""

    exit_code = ExitCode.FAILED

    def __init__(self, path: Path, findings: list[Finding]) -> None:
        first = findings[0] if findings else None
        detail = f": {first.where}: {first.message}" if first else ""
        more = f" (and {len(findings) - 1} more)" if len(findings) > 1 else ""
        super().__init__(f"{path} is invalid{detail}{more}", fix=first.fix if first else None)
        self.path = path
        self.findings = findings


@dataclass
class LoadedConfig:
    source: YamlSource
    config: ClusterConfig

    @property
    def path(self) -> Path:
        return self.source.path


def load_config(path: Path | str, env: Mapping[str, str] | None = None) -> LoadedConfig:
    """Load and schema-validate a config. Raises UnreadableInputError (exit 2) or ConfigInvalidError (exit 1)."""
    source = read_yaml(Path(path))
    data, unset = expand_tree(source.data, os.environ if env is None else env)
    findings = [
        error(
            u.path,
            f"environment variable '{u.variable}' is not set"
            if not u.variable.startswith("$")
            else "'${' does not start a valid ${VAR} reference",
            f"export {u.variable}=... or write ${{{u.variable}:-default}}"
            if not u.variable.startswith("$")
            else "write $${ for a literal '${'",
            "env_unset",
        )
        for u in unset
    ]
    config: ClusterConfig | None = None
    try:
        config = ClusterConfig.model_validate(data)
    except ValidationError as exc:
        findings.extend(schema_findings(exc))
    for finding in findings:
        finding.line = source.line_of(finding.path)
    if findings or config is None:
        raise ConfigInvalidError(source.path, findings)
    return LoadedConfig(source=source, config=config)


# --------------------------------------------------------------------------- schema errors -> findings


def _unwrap(annotation: Any) -> Any:
    """Strip Optional/Annotated so the model class or container underneath is visible."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation


def model_at(path: YamlPath, root: type[BaseModel] = ClusterConfig) -> type[BaseModel] | None:
    """The config model class found at ``path`` (None if the path leaves the model tree)."""
    current: Any = root
    for part in path:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            if not isinstance(part, str):
                return None
            field = next(
                (f for name, f in current.model_fields.items() if name == part or _alias_names(f, part)), None
            )
            if field is None:
                return None
            current = field.annotation
        elif typing.get_origin(current) is list:
            current = typing.get_args(current)[0]
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _alias_names(field: Any, name: str) -> bool:
    choices = getattr(field.validation_alias, "choices", None) or []
    return name in choices


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _fix_for(err: Any, path: YamlPath) -> tuple[str, str]:
    """(message, fix) for one pydantic error."""
    kind, msg, ctx = err["type"], err["msg"], err.get("ctx") or {}
    value = err.get("input")
    key = path[-1] if path else ""
    parent = format_path(path[:-1])
    if kind == "missing":
        return f"required key '{key}' is missing", f"add '{key}:' under {parent} (see `ai-how config schema`)"
    if kind == "extra_forbidden":
        model = model_at(path[:-1])
        allowed = sorted(model.model_fields) if model else []
        close = difflib.get_close_matches(str(key), allowed, n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        return (
            f"unknown key '{key}'",
            f"{hint}remove it; allowed keys under {parent}: {', '.join(allowed)}",
        )
    if kind in ("plaintext_secret", "replicas_order", "network_required", "subnet_host_bits", "login_format"):
        text = msg
        if kind == "subnet_host_bits":
            return text, f"write {ctx.get('net')}"
        main, _, fix = text.partition("; ")
        return main, fix or "see `ai-how config schema`"
    if kind == "string_pattern_mismatch":
        hint = PATTERN_HINTS.get(str(ctx.get("pattern", "")), f"a value matching {ctx.get('pattern')}")
        return f"invalid value {_shown(value)}", f"write {hint}"
    if kind == "literal_error":
        return f"invalid value {_shown(value)}", f"use one of: {ctx.get('expected', '')}"
    if kind == "ip_text":
        return msg, "quote the address, e.g. ip_address: 192.168.100.10"
    if kind.startswith("ip_v4_address"):
        return f"{_shown(value)} is not an IPv4 address", "write an address like 192.168.100.10"
    if kind.startswith("ip_v4_network"):
        return f"{_shown(value)} is not an IPv4 network", "write a network like 192.168.100.0/24"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping, got {_shown(value)}", f"write '{key}:' followed by indented keys"
    if kind == "list_type":
        return f"expected a list, got {_shown(value)}", "write a YAML list ('- item' lines or [a, b])"
    if kind in ("bool_type", "bool_parsing"):
        return f"expected true or false, got {_shown(value)}", "write true or false, without quotes"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected a whole number, got {_shown(value)}", "write a whole number"
    if kind in ("greater_than", "greater_than_equal", "less_than_equal", "less_than"):
        return f"{msg.lower()}, got {_shown(value)}", msg
    if kind in ("string_type",):
        return f"expected text, got {_shown(value)}", "quote the value or write text"
    return f"{msg} (got {_shown(value)})", "see `ai-how config schema` for the allowed values"


def schema_findings(exc: ValidationError) -> list[Finding]:
    findings = []
    for err in exc.errors(include_url=False):
        path: YamlPath = tuple(p for p in err["loc"] if isinstance(p, int) or "[" not in str(p))
        message, fix = _fix_for(err, path)
        findings.append(error(path, message, fix, f"schema.{err['type']}"))
    return findings
