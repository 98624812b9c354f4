"""Where everything lives under the state directory (one place computes these paths)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def stack(self) -> Path:  # pid files and logs of local services
        return self.root / "stack"

    @property
    def mlflow(self) -> Path:  # SQLite database and local artifacts of the local MLflow server
        return self.root / "mlflow"

    @property
    def serving(self) -> Path:  # pid files, logs and model cache of local model servers
        return self.root / "serving"

    @property
    def objects(self) -> Path:  # the file:// object store of the embedded default
        return self.root / "objects"

    @property
    def models(self) -> Path:  # converted base models (e.g. SmolLM2 from GGUF)
        return self.root / "models"

    @property
    def shared(self) -> Path:  # stands in for the HPC shared filesystem (BeeGFS) in local mode
        return self.root / "shared"

    def cluster_dir(self, side: str) -> Path:  # a VM cluster's SSH key, seeds, console logs, pool
        return self.root / "clusters" / side

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id
