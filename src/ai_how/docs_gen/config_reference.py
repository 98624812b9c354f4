"""The configuration reference: every field of ``cluster.yaml`` from the pydantic models, section by section.

Sections follow the YAML: one per nested model, at its dotted path (``mlops.serving.autoscaling``);
a model met again at another path (a VM spec, a PCI device) gets a short section pointing at the first.
"""

from __future__ import annotations

import inspect
import types
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
import yaml
from pydantic import AliasChoices, BaseModel, StringConstraints
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined, to_jsonable_python

from ai_how.config.models import PATTERN_HINTS, ClusterConfig
from ai_how.docs_gen.markdown import anchor, cell, code, escape, table

_SCALARS: dict[type, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    IPv4Address: "IPv4 address",
    IPv4Network: "IPv4 network (CIDR)",
}
_BOUNDS = (
    (annotated_types.Gt, "gt", ">"),
    (annotated_types.Ge, "ge", "≥"),
    (annotated_types.Lt, "lt", "<"),
    (annotated_types.Le, "le", "≤"),
)


@dataclass(frozen=True)
class FieldRow:
    path: str
    type: str
    default: str
    description: str


@dataclass
class Section:
    path: str  # dotted path of the model in cluster.yaml; "" for the document itself
    model: type[BaseModel]
    rows: list[FieldRow] = field(default_factory=list)
    same_as: str | None = None  # the path where this model's fields are listed

    @property
    def title(self) -> str:
        return code(self.path) if self.path else "Top level"


def section_anchor(path: str) -> str:
    return anchor(path) if path else "top-level"


def yaml_value(value: Any) -> str:
    """A value as it is written in cluster.yaml (YAML flow style, one line)."""
    text = yaml.safe_dump(to_jsonable_python(value), default_flow_style=True, sort_keys=False, width=10_000)
    return text.strip().removesuffix("...").strip()


def _constraints(metadata: list[Any]) -> list[str]:
    notes = []
    for item in metadata:
        for kind, attr, symbol in _BOUNDS:
            if isinstance(item, kind):
                notes.append(f"{symbol} {getattr(item, attr)}")
        if isinstance(item, StringConstraints) and item.pattern:
            hint = PATTERN_HINTS.get(str(item.pattern))
            notes.append(escape(hint) if hint else f"matching {code(str(item.pattern))}")
        if getattr(item, "strict", None) is True and not isinstance(item, StringConstraints):
            notes.append('strict: no quoted `"yes"`')
    return notes


def _nested_models(annotation: Any) -> list[tuple[type[BaseModel], str]]:
    """The models a field holds, each with the path suffix of where it sits (``[]`` for list items)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _nested_models(args[0])
    if origin in (Union, types.UnionType):
        return [found for arg in args for found in _nested_models(arg)]
    if origin is list:
        return [(model, "[]" + suffix) for model, suffix in _nested_models(args[0])]
    if origin is dict:
        return [(model, ".<key>" + suffix) for model, suffix in _nested_models(args[1])]
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return [(annotation, "")]
    return []


def type_text(annotation: Any, metadata: list[Any], link: str | None = None) -> str:
    """A field's type in a user's words: scalar names, literal choices, bounds and patterns, model links."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return type_text(args[0], [*metadata, *args[1:]], link)
    notes = _constraints(metadata)
    suffix = f" ({', '.join(notes)})" if notes else ""
    if origin in (Union, types.UnionType):
        parts = [type_text(arg, metadata, link) for arg in args if arg is not type(None)]
        optional = " or `null`" if type(None) in args else ""
        return " or ".join(parts) + optional
    if origin is Literal:
        choices = ", ".join(code(yaml_value(value)) for value in args)
        return choices if len(args) == 1 else f"one of {choices}"
    if origin is list:
        return f"list of {type_text(args[0], [], link)}{suffix}"
    if origin is dict:
        return f"map of {type_text(args[0], [], None)} to {type_text(args[1], [], link)}{suffix}"
    if inspect.isclass(annotation) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{link})" if link else annotation.__name__
    if annotation is Any:
        return "any"
    return _SCALARS.get(annotation, getattr(annotation, "__name__", str(annotation))) + suffix


def default_text(info: FieldInfo) -> str:
    if info.is_required():
        return "**required**"
    value = info.default_factory() if info.default_factory is not None else info.default  # type: ignore[call-arg]
    if value is PydanticUndefined:
        return "—"
    if isinstance(value, BaseModel):
        return "see its section"
    return code(yaml_value(value))


def description_text(info: FieldInfo) -> str:
    text = escape(info.description) if info.description else ""
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        others = [str(choice) for choice in alias.choices if isinstance(choice, str)][1:]
        if others:
            text = f"{text} Also accepted as {', '.join(code(name) for name in others)}.".strip()
    return cell(text)


def sections(root: type[BaseModel] = ClusterConfig) -> list[Section]:
    """Every model reachable from ``root``, depth first in field order."""
    found: list[Section] = []
    first_path: dict[type[BaseModel], str] = {}

    def visit(model: type[BaseModel], path: str) -> None:
        if model in first_path:
            found.append(Section(path, model, same_as=first_path[model]))
            return
        first_path[model] = path
        section = Section(path, model)
        found.append(section)
        children: list[tuple[type[BaseModel], str]] = []
        for name, info in model.model_fields.items():
            field_path = f"{path}.{name}" if path else name
            nested = [(sub, field_path + suffix) for sub, suffix in _nested_models(info.annotation)]
            link = section_anchor(nested[0][1]) if nested else None
            section.rows.append(
                FieldRow(
                    field_path,
                    type_text(info.annotation, list(info.metadata), link),
                    default_text(info),
                    description_text(info),
                )
            )
            children += nested
        for sub, sub_path in children:
            visit(sub, sub_path)

    visit(root, "")
    return found


def _model_doc(model: type[BaseModel]) -> str:
    doc = model.__dict__.get("__doc__")
    return escape(inspect.cleandoc(doc).replace("``", "`")) if doc else ""


HEADER = """\
# Configuration reference

<!-- Generated by `python -m ai_how.docs_gen` from `ai_how.config.models`; do not edit by hand. -->

Every key of `cluster.yaml`, section by section, as the typed models in
`src/ai_how/config/models.py` define it. Every section rejects keys it does not list, and no key
holds a secret: credentials are named by environment variable (`*_env`) or by Kubernetes Secret
(`kubernetes_secret`). `ai-how validate CONFIG` checks a file against all of this plus the rules that
need the whole config (subnet overlaps, GPU sharing, capacity); `ai-how config schema` prints the same
models as a JSON Schema for editors. `${VAR}` and `${VAR:-default}` are expanded in every value.

A path ending in `[]` is an item of a list; `<key>` stands for a key of a map. "—" marks a field
without a description in the models.
"""


def render() -> str:
    lines = [HEADER]
    for section in sections():
        lines.append(f"## {section.title} {{#{section_anchor(section.path)}}}")
        lines.append("")
        if section.same_as is not None:
            target = section.same_as
            lines.append(
                f"Same fields as [{code(target)}](#{section_anchor(target)}) ({section.model.__name__}), "
                f"under `{section.path}`."
            )
            lines.append("")
            continue
        doc = _model_doc(section.model)
        if doc:
            lines += [doc, ""]
        rows = [[code(row.path), row.type, row.default, row.description] for row in section.rows]
        lines += table(["key", "type", "default", "description"], rows)
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
