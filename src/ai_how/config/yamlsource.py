"""Read a YAML file into plain data plus the line number of every key, for error messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ai_how.config.envexpand import YamlPath
from ai_how.errors import UnreadableInputError

MAX_CONFIG_BYTES = 4 * 1024 * 1024


@dataclass
class YamlSource:
    path: Path
    data: Any
    lines: dict[YamlPath, int] = field(default_factory=dict)

    def line_of(self, path: YamlPath) -> int | None:
        """Line of ``path``, or of its closest ancestor that exists in the file."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None


def _record_lines(node: yaml.Node, path: YamlPath, lines: dict[YamlPath, int]) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
            lines[(*path, key)] = key_node.start_mark.line + 1
            _record_lines(value_node, (*path, key), lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record_lines(item, (*path, index), lines)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys instead of silently keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # unhashable key: let the base class report it
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key '{key}'",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> YamlSource:
    """Parse ``path``; any failure to read it is an :class:`UnreadableInputError` (exit 2)."""
    try:
        if path.is_dir():
            raise UnreadableInputError(f"{path} is a directory.", fix="pass the path of a YAML file")
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise UnreadableInputError(
                f"{path} is larger than {MAX_CONFIG_BYTES // 1024 // 1024} MiB.", fix="pass a cluster config"
            )
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UnreadableInputError(f"{path}: no such file.", fix="check the path") from None
    except PermissionError:
        raise UnreadableInputError(f"{path}: permission denied.", fix="make the file readable") from None
    except UnicodeDecodeError as exc:
        raise UnreadableInputError(
            f"{path} is not UTF-8 text ({exc.reason}).", fix="save it as UTF-8"
        ) from None
    except OSError as exc:
        raise UnreadableInputError(f"{path}: {exc.strerror or exc}.") from None
    return parse_yaml(text, path)


def parse_yaml(text: str, path: Path) -> YamlSource:
    try:
        node = yaml.compose(text, Loader=_UniqueKeyLoader)
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise UnreadableInputError(
            f"{where}: invalid YAML: {exc.problem or exc}.", fix="correct the YAML syntax at that position"
        ) from None
    except yaml.YAMLError as exc:
        raise UnreadableInputError(f"{path}: invalid YAML: {exc}.") from None
    except RecursionError:
        raise UnreadableInputError(f"{path}: YAML nested too deeply.") from None
    if data is None:
        raise UnreadableInputError(f"{path} is empty.", fix="start from config/local.yaml")
    if not isinstance(data, dict):
        raise UnreadableInputError(
            f"{path}: the top level must be a mapping (metadata:, clusters:, ...), not a {type(data).__name__}.",
            fix="start from config/local.yaml",
        )
    lines: dict[YamlPath, int] = {}
    if node is not None:
        try:
            _record_lines(node, (), lines)
        except RecursionError:
            raise UnreadableInputError(f"{path}: YAML nested too deeply (or a recursive alias).") from None
    return YamlSource(path=path, data=data, lines=lines)
