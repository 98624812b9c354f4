"""``${VAR}`` / ``${VAR:-default}`` expansion over parsed YAML, without touching ``os.environ``.

``$${`` writes a literal ``${``. Only string scalars are expanded, so YAML types
are decided by the schema (``port: ${PORT:-5000}`` becomes the int 5000 there).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_TOKEN = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{")

YamlPath = tuple[str | int, ...]


@dataclass(frozen=True)
class UnsetVariable:
    path: YamlPath
    variable: str


def expand(value: str, env: Mapping[str, str]) -> tuple[str, list[str]]:
    """Expand one string; return it and the names of variables that were unset with no default."""
    missing: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "$${":
            return "${"
        name, default = match.group(1), match.group(2)
        if name is None:  # a '${' that does not form a reference
            missing.append(token)
            return token
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        if name in env:  # set but empty, no default: empty is what the user asked for
            return ""
        missing.append(name)
        return token

    return _TOKEN.sub(substitute, value), missing


def expand_tree(data: Any, env: Mapping[str, str], path: YamlPath = ()) -> tuple[Any, list[UnsetVariable]]:
    """Return a copy of ``data`` with every string expanded, plus the unset variables found."""
    problems: list[UnsetVariable] = []
    if isinstance(data, str):
        text, missing = expand(data, env)
        problems.extend(UnsetVariable(path, name) for name in missing)
        return text, problems
    if isinstance(data, dict):
        out: dict[Any, Any] = {}
        for key, item in data.items():
            out[key], sub = expand_tree(item, env, (*path, str(key)))
            problems.extend(sub)
        return out, problems
    if isinstance(data, list):
        items = []
        for index, item in enumerate(data):
            expanded, sub = expand_tree(item, env, (*path, index))
            items.append(expanded)
            problems.extend(sub)
        return items, problems
    return data, problems
