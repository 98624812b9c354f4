"""Strict checks of what ai-how renders for Kubernetes: objects against their schemas, Helm values against
the chart's defaults (and its JSON Schema where it ships one).

* Core kinds (``v1``, ``apps/v1``, ``batch/v1``, ``networking.k8s.io/v1``, ...) with ``kubernetes-validate``
  in strict mode (unknown fields fail) for the cluster's Kubernetes version (major.minor).
* Custom resources (``serving.kserve.io``, ``monitoring.coreos.com``) with ``jsonschema`` against the
  ``openAPIV3Schema`` of their CRD files in ``crd_dir`` (searched recursively). CRD schemas leave objects
  open unless they say otherwise; here every object schema that lists ``properties`` and does not say
  ``x-kubernetes-preserve-unknown-fields`` is closed, so a typo (``minReplica``, ``endpoint``) fails.
* Helm values: every key must exist in the chart's default values (:func:`check_values_keys`); a chart
  that ships ``values.schema.json`` also gets the merged values checked with it (:func:`check_values_schema`).

Every function returns problems as one line each, ``Kind namespace/name: json.path: message``; an empty
list means valid. Nothing here talks to a cluster.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from ai_how.errors import AiHowError

DEFAULT_KUBERNETES_VERSION = "1.35"
# API groups whose objects are custom resources: validated against CRD files, not kubernetes-validate.
CRD_GROUPS = frozenset({"serving.kserve.io", "monitoring.coreos.com"})


def major_minor(version: str) -> str:
    """``v1.35.4`` -> ``1.35``."""
    parts = version.lstrip("v").split(".")
    if len(parts) < 2 or not all(p.isdigit() for p in parts[:2]):
        raise AiHowError(
            f"{version!r} is not a Kubernetes version", fix="use MAJOR.MINOR[.PATCH], e.g. 1.35.4"
        )
    return ".".join(parts[:2])


def _where(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    name = str(meta.get("name", "?"))
    if meta.get("namespace"):
        name = f"{meta['namespace']}/{name}"
    return f"{obj.get('kind', '?')} {name}"


def _json_path(parts: Iterable[Any]) -> str:
    text = "$"
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _group(api_version: str) -> str:
    return api_version.split("/", maxsplit=1)[0] if "/" in api_version else ""


def validate_objects(
    objects: Iterable[Mapping[str, Any]],
    *,
    kubernetes_version: str = DEFAULT_KUBERNETES_VERSION,
    crd_dir: Path | None = None,
) -> list[str]:
    """Problems of ``objects``: core kinds always, custom resources when ``crd_dir`` is given (without it
    they are skipped; the product does not ship CRD files, tests pass ``../shared/schemas``)."""
    problems: list[str] = []
    for obj in objects:
        api_version = str(obj.get("apiVersion", ""))
        if _group(api_version) in CRD_GROUPS or (crd_dir is not None and _has_crd(crd_dir, obj)):
            if crd_dir is not None:
                problems += validate_custom_resource(obj, crd_dir)
            continue
        problems += validate_core_object(obj, kubernetes_version)
    return problems


def validate_core_object(obj: Mapping[str, Any], kubernetes_version: str) -> list[str]:
    """One built-in object, strictly, with kubernetes-validate's schemas for that version."""
    try:
        import kubernetes_validate
        from kubernetes_validate import utils as kv_utils
    except ModuleNotFoundError as exc:
        raise AiHowError(
            f"module {exc.name!r} is not installed: kubernetes-validate comes with the 'infra' extra",
            fix="pip install 'ai-how[infra]'",
        ) from None
    version = major_minor(kubernetes_version)
    try:
        kubernetes_validate.validate(dict(obj), version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{_where(obj)}: {_json_path(exc.path)}: {exc.message}"]
    except kv_utils.SchemaNotFoundError as exc:
        return [f"{_where(obj)}: {exc.message}"]
    except kv_utils.VersionNotSupportedError:
        raise AiHowError(
            f"kubernetes-validate has no schemas for Kubernetes {version}",
            fix="upgrade kubernetes-validate (pip install -U kubernetes-validate), "
            "or check clusters.cloud.kubernetes_config.version",
        ) from None
    return []


# --------------------------------------------------------------------------- custom resources


@functools.cache
def _crd_schemas(crd_dir: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> the closed openAPIV3Schema, for every CRD file under ``crd_dir``."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(crd_dir.rglob("*.yaml")):
        try:
            docs = list(yaml.safe_load_all(path.read_text()))
        except yaml.YAMLError:
            continue
        for doc in docs:
            if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
                continue
            spec = doc.get("spec") or {}
            kind = (spec.get("names") or {}).get("kind")
            for version in spec.get("versions") or []:
                schema = (version.get("schema") or {}).get("openAPIV3Schema")
                if kind and schema:
                    schemas[(f"{spec['group']}/{version['name']}", kind)] = closed_schema(schema)
    return schemas


def _has_crd(crd_dir: Path, obj: Mapping[str, Any]) -> bool:
    return (str(obj.get("apiVersion")), str(obj.get("kind"))) in _crd_schemas(crd_dir.resolve())


def closed_schema(schema: Any) -> Any:
    """A copy of an OpenAPI v3 schema where objects that list their properties reject any other key."""
    if isinstance(schema, list):
        return [closed_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    result = {
        k: closed_schema(v) for k, v in schema.items() if k not in ("properties", "additionalProperties")
    }
    if "properties" in schema:
        result["properties"] = {k: closed_schema(v) for k, v in schema["properties"].items()}
    if "additionalProperties" in schema:
        result["additionalProperties"] = closed_schema(schema["additionalProperties"])
    elif "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
        result["additionalProperties"] = False
    return result


def validate_custom_resource(obj: Mapping[str, Any], crd_dir: Path) -> list[str]:
    """One custom resource against its CRD's schema (closed), with metadata checked by the core rules."""
    import jsonschema

    key = (str(obj.get("apiVersion")), str(obj.get("kind")))
    schema = _crd_schemas(Path(crd_dir).resolve()).get(key)
    if schema is None:
        return [f"{_where(obj)}: no CRD for {key[1]} ({key[0]}) under {crd_dir}"]
    body = copy.deepcopy(dict(obj))
    body.pop("metadata", None)  # the CRD schema says only `type: object`; names are checked below
    validator = jsonschema.Draft7Validator(schema)
    problems = [
        f"{_where(obj)}: {_json_path(err.absolute_path)}: {err.message}"
        for err in sorted(validator.iter_errors(body), key=lambda e: list(map(str, e.absolute_path)))
    ]
    meta = obj.get("metadata") or {}
    if not meta.get("name"):
        problems.append(f"{_where(obj)}: $.metadata.name: required")
    unknown = set(meta) - {"name", "namespace", "labels", "annotations"}
    problems += [f"{_where(obj)}: $.metadata.{k}: not a field ai-how sets" for k in sorted(unknown)]
    return problems


# --------------------------------------------------------------------------- helm values


def check_values_keys(
    values: Mapping[str, Any], defaults: Mapping[str, Any], *, chart: str = "chart"
) -> list[str]:
    """Keys of ``values`` that the chart's default values do not have (a typo Helm would ignore silently).

    Below a default that is an empty map, a list or a scalar (``nodeSelector: {}``, ``resources: {}``,
    ``hosts: [...]``) any content is accepted: those are free-form in every chart."""
    problems: list[str] = []

    def walk(given: Mapping[str, Any], known: Mapping[str, Any], path: list[str]) -> None:
        for key, value in given.items():
            if key not in known:
                problems.append(
                    f"{chart} values: {_json_path([*path, key])}: not a key of the chart's values"
                )
                continue
            default = known[key]
            if isinstance(value, Mapping) and isinstance(default, Mapping) and default:
                walk(value, default, [*path, key])

    walk(values, defaults, [])
    return problems


def merged_values(defaults: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """What Helm hands the templates: maps merged key by key, anything else (lists too) replaced."""
    result = copy.deepcopy(dict(defaults))
    for key, value in values.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merged_values(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def check_values_schema(
    values: Mapping[str, Any], defaults: Mapping[str, Any], schema: Mapping[str, Any], *, chart: str = "chart"
) -> list[str]:
    """The chart's ``values.schema.json`` on the merged values, as ``helm install`` checks them."""
    import jsonschema

    validator_class = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    validator = validator_class(schema)
    return [
        f"{chart} values: {_json_path(err.absolute_path)}: {err.message}"
        for err in validator.iter_errors(merged_values(defaults, values))
    ]
