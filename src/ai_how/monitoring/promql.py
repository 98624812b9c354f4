"""PromQL selectors built from parts, so one rule set can be scoped to one cluster's series."""

from __future__ import annotations

from dataclasses import dataclass

from ai_how.monitoring.metrics_catalog import CLUSTER_LABEL


def quoted(value: str) -> str:
    """A PromQL string literal."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def selector(metric: str, *matchers: str) -> str:
    """``metric{m1,m2}`` (or just ``metric``); matchers are written ``label="v"`` / ``label=~"re"``."""
    return f"{metric}{{{','.join(matchers)}}}" if matchers else metric


def eq(label: str, value: str) -> str:
    return f"{label}={quoted(value)}"


def regex(label: str, pattern: str) -> str:
    return f"{label}=~{quoted(pattern)}"


@dataclass(frozen=True)
class Scope:
    """Which series an expression reads: all of them, or only those of one ``cluster``.

    The HPC-side Prometheus holds only its own series (no scope). The cloud side also holds the HPC
    side's federated series, so its copy of the rules is scoped to its own cluster: recording rules must
    not produce a second series beside a federated one with the same labels, and the HPC side alerts on
    its own series through its own Alertmanager."""

    cluster: str | None = None

    def sel(self, metric: str, *matchers: str) -> str:
        if self.cluster is not None:
            matchers = (eq(CLUSTER_LABEL, self.cluster), *matchers)
        return selector(metric, *matchers)
