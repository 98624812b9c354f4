"""Checks of what a user types, done before a run is created or a service starts: one line each, with the fix.

Light on purpose (no torch, numpy, mlflow): the CLI calls these first.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ai_how.errors import AiHowError
from ai_how.kube.kserve import ISVC_NAME, MAX_ISVC_NAME
from ai_how.workloads import WORKLOADS
from ai_how.workloads.options import Option, OptionError, find, from_argv, to_argv

# A DNS-1123 label: model names become Kubernetes names, file names and URL path segments.
# A model name becomes a KServe InferenceService name: one rule for every backend (kube.kserve's).
_DNS_LABEL = ISVC_NAME
MAX_NAME = MAX_ISVC_NAME


def suggest_name(name: str) -> str:
    """The nearest DNS-1123 label to ``name`` (``Foo_Bar`` -> ``foo-bar``), or ``model`` when nothing is left."""
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower())
    label = re.sub(r"-{2,}", "-", label).strip("-")
    if label[:1].isdigit():
        label = f"m-{label}"
    return label[:MAX_NAME].strip("-") or "model"


def check_model_name(name: str, flag: str = "--model-name") -> str:
    """``name`` when it can name a KServe InferenceService (a DNS-1035 label short enough for the objects
    KServe derives from it); else one clear error."""
    if len(name) <= MAX_NAME and _DNS_LABEL.match(name):
        return name
    raise AiHowError(
        f"{flag} {name!r} is not a valid model name: use lowercase letters, digits and '-', starting with "
        f"a letter and ending with a letter or digit, at most {MAX_NAME} characters (it becomes a Kubernetes "
        "name, a file name and a URL)",
        fix=f"e.g. {flag} {suggest_name(name)}",
    )


def check_workload(name: str) -> str:
    """``name`` when it is a known workload."""
    if name not in WORKLOADS:
        raise AiHowError(f"--workload: unknown workload {name!r}", fix=f"use one of: {', '.join(WORKLOADS)}")
    return name


def check_stage(name: str, stages: Sequence[str], flag: str = "--stop-after") -> str:
    """``name`` when it is one of ``stages``."""
    if name not in stages:
        raise AiHowError(f"{flag}: unknown stage {name!r}", fix=f"use one of: {', '.join(stages)}")
    return name


def workload_options(workload: str) -> list[Option]:
    """The options ``workload`` declares (its module's ``OPTIONS``; importing it loads no torch)."""
    module = importlib.import_module(WORKLOADS[check_workload(workload)].module)
    return list(module.OPTIONS)


def parse_settings(workload: str, settings: Sequence[str], model: str | None = None) -> dict[str, Any]:
    """Typed values of ``--set KEY=VALUE`` items (and ``--model``), each checked against the declaration."""
    options = workload_options(workload)
    items = [*([f"model={model}"] if model is not None else []), *settings]
    values: dict[str, Any] = {}
    for item in items:
        option, value = _parse_item(workload, options, item)
        if option.name in values and option.render(values[option.name]) != option.render(value):
            raise AiHowError(
                f"--set {item} contradicts {option.name}={values[option.name]} given before",
                fix=f"give {option.name} once",
            )
        values[option.name] = value
    return values


def _parse_item(workload: str, options: Sequence[Option], item: str) -> tuple[Option, Any]:
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise AiHowError(f"--set {item!r} is not KEY=VALUE", fix="write e.g. --set epochs=3")
    option = find(options, key)
    if option is None:
        raise AiHowError(
            f"--set {key.strip()}: {workload} has no option {key.strip()!r}",
            fix=f"use one of: {', '.join(o.name for o in options)}",
        )
    try:
        return option, option.parse(text)
    except OptionError as exc:
        raise AiHowError(f"--set {item}: {exc}", fix=f"e.g. --set {option.name}={option.default}") from None


def workload_argv(workload: str, settings: Sequence[str], model: str | None = None) -> list[str]:
    """The job's ``--flag value`` arguments for checked settings, in declaration order."""
    return to_argv(workload_options(workload), parse_settings(workload, settings, model))


@dataclass
class ResumeRequest:
    """What ``pipeline run --resume`` was given besides the run (None: not given)."""

    workload: str | None = None
    model_name: str | None = None
    model: str | None = None
    settings: list[str] = field(default_factory=list)
    resources: Mapping[str, int | None] = field(default_factory=dict)  # gpus / processes / nodes


_RESOURCE_FLAGS = {"gpus": "--gpus", "processes": "--procs-per-node", "nodes": "--nodes"}
_RESOURCE_DEFAULTS = {"gpus": 0, "processes": 1, "nodes": 1}


def check_resume(doc: Mapping[str, Any], given: ResumeRequest) -> None:
    """Refuse options a resumed run would silently ignore: each that differs from the run's is named
    with the run's value; equal ones are harmless and accepted."""
    run_id = doc.get("run_id", "?")
    differ: list[str] = []
    if given.workload is not None and given.workload != doc.get("workload"):
        differ.append(f"--workload {given.workload} (run: {doc.get('workload')})")
    if given.model_name is not None and given.model_name != doc.get("model_name"):
        differ.append(f"--model-name {given.model_name} (run: {doc.get('model_name')})")
    recorded_resources = doc.get("resources", {})
    for key, flag in _RESOURCE_FLAGS.items():
        wanted = given.resources.get(key)
        had = recorded_resources.get(key, _RESOURCE_DEFAULTS[key])
        if wanted is not None and wanted != had:
            differ.append(f"{flag} {wanted} (run: {had})")
    differ += _differing_settings(doc, given)
    if differ:
        raise AiHowError(
            f"--resume {run_id} keeps the run's options, so these would be ignored: {'; '.join(differ)}",
            fix="drop them to resume the run as it was, or start a new run with them "
            "(ai-how pipeline run -c CONFIG --workload W ...)",
        )


def _differing_settings(doc: Mapping[str, Any], given: ResumeRequest) -> list[str]:
    if not given.settings and given.model is None:
        return []
    workload = str(doc.get("workload", ""))
    wanted = parse_settings(workload, given.settings, given.model)
    recorded = from_argv(workload_options(workload), list(doc.get("workload_args", [])))
    differ = []
    for option in workload_options(workload):
        if option.name not in wanted:
            continue
        value, had = wanted[option.name], recorded.get(option.name, option.default)
        if had is None or option.render(value) != option.render(had):
            shown = (
                f"--model {value}"
                if option.name == "model" and given.model
                else f"--set {option.name}={value}"
            )
            differ.append(f"{shown} (run: {'not set' if had is None else had})")
    return differ
