"""The stack as components in apply order, and ``stack render``: one plain YAML file per component (or a
folder with the chart pin and values), a kustomization of the manifests, and a README with the order and
the helm commands. Secrets are never rendered: manifests name them, ``stack up`` creates them from the
environment. Output is deterministic (sorted keys, fixed order), so committed renders diff cleanly."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ai_how.config.models import ClusterConfig
from ai_how.errors import AiHowError
from ai_how.fsutil import atomic_write_text
from ai_how.kube.helm import HelmChart, chart_install_command
from ai_how.kube.kserve import MANAGED_BY
from ai_how.kube.stack import kserve_charts, mlflow, networkpolicies, objectstore, postgresql
from ai_how.kube.stack.common import kubernetes_version, postgres_secret_name, s3_secret, stack
from ai_how.kube.validation import validate_objects

CRD_SERVICEMONITOR = "servicemonitors.monitoring.coreos.com"


@dataclass(frozen=True)
class ChartRelease:
    chart: HelmChart
    values: dict[str, Any] | None  # None: the chart's defaults (no values file)


@dataclass(frozen=True)
class Component:
    """One step of `stack up`: Helm releases first (they bring CRDs and controllers), then objects."""

    name: str
    order: int
    objects: list[dict[str, Any]] = field(default_factory=list)
    charts: list[ChartRelease] = field(default_factory=list)
    needs_crd: str | None = None  # a CRD the objects need that no component here installs

    @property
    def path(self) -> str:
        """File (objects only) or folder (with charts) of the component in a render."""
        stem = f"{self.order:02d}-{self.name}"
        return stem if self.charts else f"{stem}.yaml"


def namespace_objects(config: ClusterConfig) -> list[dict[str, Any]]:
    kube = stack(config)
    names = dict.fromkeys([kube.namespace, config.mlops.serving.namespace, kube.monitoring_namespace])
    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {**MANAGED_BY, "ai-how.io/stack-component": "namespaces"}},
        }
        for name in names
    ]


def stack_components(config: ClusterConfig) -> list[Component]:
    """Every component in dependency order."""
    if config.clusters.cloud is None:
        raise AiHowError(
            "the config has no clusters.cloud section: there is no cluster to put the MLOps stack on",
            fix="add the cloud cluster (see config/example-cluster.yaml)",
        )
    components = [
        Component("namespaces", 0, namespace_objects(config)),
        Component("objectstore", 10, objectstore.objectstore_objects(config)),
        Component("postgresql", 20, postgresql.postgresql_objects(config)),
        Component(
            "mlflow", 30, charts=[ChartRelease(mlflow.mlflow_chart(config), mlflow.mlflow_values(config))]
        ),
        Component(
            "kserve",
            40,
            kserve_charts.kserve_objects(config),
            charts=[
                ChartRelease(kserve_charts.KSERVE_CRD, None),
                ChartRelease(kserve_charts.KSERVE, kserve_charts.kserve_values(config)),
            ],
        ),
        Component("networkpolicies", 50, networkpolicies.networkpolicies(config)),
    ]
    if stack(config).service_monitors:
        components.append(
            Component("monitors", 60, objectstore.objectstore_monitors(config), needs_crd=CRD_SERVICEMONITOR)
        )
    return components


def all_objects(components: list[Component]) -> Iterator[dict[str, Any]]:
    for component in components:
        yield from component.objects


class InvalidRender(AiHowError):
    """Rendered objects that fail validation; ``problems`` has one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(
            f"{len(problems)} rendered object(s) are invalid (first: {problems[0]})",
            fix="this is a bug in ai-how's manifests for this config: please report it with the config",
        )
        self.problems = problems


def rendered_problems(
    config: ClusterConfig, components: list[Component], crd_dir: Path | None = None
) -> list[str]:
    """Problems of every rendered object: core kinds strictly for the config's Kubernetes version, custom
    resources when ``crd_dir`` has their CRDs."""
    return validate_objects(
        all_objects(components), kubernetes_version=kubernetes_version(config), crd_dir=crd_dir
    )


class _Dumper(yaml.SafeDumper):
    """Plain YAML a user reads: no anchors/aliases for repeated label maps, scripts as literal blocks."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _str)


def _dump(documents: list[dict[str, Any]]) -> str:
    return yaml.dump_all(documents, Dumper=_Dumper, sort_keys=True, default_flow_style=False, width=120)


def _dump_one(document: dict[str, Any]) -> str:
    return yaml.dump(document, Dumper=_Dumper, sort_keys=True, default_flow_style=False, width=120)


def _chart_file(chart: HelmChart) -> str:
    pin = {
        "release": chart.release,
        "chart": chart.chart,
        "version": chart.version,
        "namespace": chart.namespace,
    }
    if chart.repo:
        pin["repo"] = chart.repo
    return _dump_one(pin)


def render_files(config: ClusterConfig, components: list[Component]) -> dict[str, str]:
    """Relative path -> text of every rendered file."""
    files: dict[str, str] = {}
    manifests: list[str] = []
    steps: list[str] = []
    for component in components:
        if not component.charts:
            files[component.path] = _dump(component.objects)
            manifests.append(component.path)
            steps.append(f"kubectl apply --server-side --field-manager=ai-how -f {component.path}")
            continue
        for release in component.charts:
            name = release.chart.release
            files[f"{component.path}/{name}.chart.yaml"] = _chart_file(release.chart)
            values_path = f"{component.path}/{name}.values.yaml"
            files[values_path] = _dump_one(release.values or {})
            steps.append(" ".join(chart_install_command(release.chart, values_path)))
        if component.objects:
            objects_path = f"{component.path}/objects.yaml"
            files[objects_path] = _dump(component.objects)
            manifests.append(objects_path)
            steps.append(f"kubectl apply --server-side --field-manager=ai-how -f {objects_path}")
    files["kustomization.yaml"] = yaml.safe_dump(
        {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": manifests},
        sort_keys=False,
    )
    files["README.txt"] = _readme(config, steps)
    return files


def _readme(config: ClusterConfig, steps: list[str]) -> str:
    pg, creds = config.mlops.postgresql, config.mlops.object_store.credentials
    kube = stack(config)
    secrets = [
        f"  {kube.namespace}/{postgres_secret_name(config)}: keys username, password "
        f"(`ai-how cloud stack up` creates it from ${pg.password_env})",
        f"  {kube.namespace}/{s3_secret(config)} and {config.mlops.serving.namespace}/{s3_secret(config)}: "
        f"keys AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (from ${creds.access_key_id_env}, "
        f"${creds.secret_access_key_env})",
    ]
    return "\n".join(
        [
            "The ai-how MLOps stack, rendered from the config by `ai-how cloud stack render`.",
            "`ai-how cloud stack up CONFIG` applies it in this order and waits for each step; by hand:",
            "",
            *[f"  {i}. {step}" for i, step in enumerate(steps, 1)],
            "",
            "Secrets are not in this folder; these must exist before step 2:",
            *secrets,
            "",
            "KServe's webhooks need cert-manager in the cluster (Kubespray: cert_manager_enabled).",
            f"The ServiceMonitors need the Prometheus Operator's CRDs ({CRD_SERVICEMONITOR}).",
            "",
        ]
    )


def write_render(config: ClusterConfig, out_dir: Path) -> list[Path]:
    """Validate and write the stack to ``out_dir``; the paths written, in apply order."""
    components = stack_components(config)
    problems = rendered_problems(config, components)
    if problems:
        raise InvalidRender(problems)
    written = []
    for relative, text in render_files(config, components).items():
        path = out_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
        written.append(path)
    return written
