"""One call that takes a config file to a verdict: schema errors and semantic findings alike."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ai_how.config.findings import Finding, Severity
from ai_how.config.loader import ConfigInvalidError, load_config
from ai_how.config.validate import ValidationReport, validate


@dataclass
class CheckResult:
    path: Path
    findings: list[Finding]
    report: ValidationReport | None  # None when the schema itself was invalid

    @property
    def valid(self) -> bool:
        return not any(f.severity is Severity.ERROR for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        def of(severity: Severity) -> list[dict[str, Any]]:
            return [f.to_json() for f in self.findings if f.severity is severity]

        data: dict[str, Any] = {
            "valid": self.valid,
            "config": str(self.path),
            "errors": of(Severity.ERROR),
            "warnings": of(Severity.WARNING),
            "notes": of(Severity.INFO),
        }
        if self.report is not None:
            plan = self.report.plan
            data["summary"] = {
                "name": self.report.loaded.config.metadata.name,
                "clusters": {
                    t.cluster: {"name": t.name, "vms": t.vms, "gpus": t.gpus} for t in plan.clusters
                },
                "peak": {
                    "clusters": plan.peak.clusters,
                    "cpu_cores": plan.peak.cpu_cores,
                    "memory_gb": plan.peak.memory_gb,
                    "disk_gb": plan.peak.disk_gb,
                },
                "host": {
                    "cpu_cores": plan.host.cpu_cores,
                    "memory_gb": plan.host.memory_gb,
                    "disk_gb": plan.host.disk_gb,
                    "source": plan.host.source,
                },
            }
        return data


def check_file(path: Path, *, force: bool = False, disk_path: Path | None = None) -> CheckResult:
    """Load and validate ``path``. Raises UnreadableInputError only when the file cannot be read/parsed."""
    try:
        loaded = load_config(path)
    except ConfigInvalidError as exc:
        return CheckResult(path, exc.findings, None)
    report = validate(loaded, force=force, disk_path=disk_path)
    return CheckResult(path, report.findings, report)
