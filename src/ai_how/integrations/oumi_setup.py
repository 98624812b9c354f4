"""``ai-how oumi config``: the files that let Oumi run on the ai-how cluster (CLOUD-5.1).

Writes, into one directory:
- ``oumi_extra_deps.txt``: names this package's Oumi cloud module (Oumi's ``OUMI_EXTRA_DEPS_FILE``);
- ``env.sh``: exports OUMI_EXTRA_DEPS_FILE, AI_HOW_CONFIG and AI_HOW_STATE_DIR;
- ``oumi_config.yaml``: an Oumi ``TrainingConfig`` (TRL_SFT) on a chat dataset and a base model prepared here;
- ``job.yaml``: an Oumi ``JobConfig`` with ``resources.cloud: ai-how`` that runs ``oumi train -c oumi_config.yaml``.
Both YAML files are loaded back through Oumi's own classes, so they hold only keys Oumi accepts.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from ai_how.config.loader import LoadedConfig
from ai_how.errors import AiHowError
from ai_how.executors.base import shared_root
from ai_how.fsutil import atomic_write_text
from ai_how.integrations import oumi_cloud_path
from ai_how.workloads import llm_data


@dataclass
class OumiFiles:
    directory: Path
    env: Path
    training: Path
    job: Path
    cluster: str


def write_oumi_config(
    loaded: LoadedConfig, state_dir: Path, out: Path, *, gpus: int = 0, max_steps: int = 10
) -> OumiFiles:
    config = loaded.config
    hpc = config.clusters.hpc
    if hpc is None or hpc.scheduler != "slurm":
        raise AiHowError(
            f"{loaded.path}: the Oumi cloud runs jobs on SLURM, but clusters.hpc.scheduler is not slurm",
            fix="set clusters.hpc.scheduler: slurm (and slurm.login for a remote login node)",
        )
    from oumi.core.configs import JobConfig, TrainingConfig

    from ai_how.workloads.llm_sft import oumi_config

    out = out.resolve()
    shared = Path(shared_root(config, state_dir))
    train_path, _, _ = llm_data.prepare_dataset(None, shared / "datasets" / "chatterbot", limit=0)
    base = llm_data.build_tiny_llama(train_path, shared / "models" / "base" / "tiny-llama")
    args = argparse.Namespace(
        model="tiny-llama",
        max_length=128,
        max_steps=max_steps,
        batch_size=8,
        lr=1e-3,
        logging_steps=5,
        seed=0,
        dtype="float32",
    )
    training = oumi_config(args, base, train_path, shared / "models" / "oumi-launch" / "output")
    training_path = out / "oumi_config.yaml"
    out.mkdir(parents=True, exist_ok=True)
    training.to_yaml(str(training_path))
    TrainingConfig.from_yaml(str(training_path))  # only keys Oumi accepts

    deps = out / "oumi_extra_deps.txt"
    atomic_write_text(deps, f"{oumi_cloud_path()}\n")
    oumi = Path(hpc.slurm.python or sys.executable).parent / "oumi"  # the oumi next to the jobs' Python
    job = {
        "name": f"{config.metadata.name}-sft",
        "num_nodes": 1,
        "resources": {"cloud": "ai-how", **({"accelerators": f"gpu:{gpus}"} if gpus else {})},
        "working_dir": str(out),
        "envs": {
            "DO_NOT_TRACK": "1",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
        },
        "run": f"{shlex.quote(str(oumi))} train -c {shlex.quote(str(training_path))}",
    }
    job_path = out / "job.yaml"
    atomic_write_text(job_path, yaml.safe_dump(job, sort_keys=False))
    JobConfig.from_yaml(str(job_path)).finalize_and_validate()
    env = out / "env.sh"
    atomic_write_text(
        env,
        "".join(
            f"export {k}={shlex.quote(v)}\n"
            for k, v in {
                "OUMI_EXTRA_DEPS_FILE": str(deps),
                "AI_HOW_CONFIG": str(loaded.path.resolve()),
                "AI_HOW_STATE_DIR": str(state_dir.resolve()),
                "DO_NOT_TRACK": "1",
            }.items()
        ),
    )
    return OumiFiles(out, env, training_path, job_path, hpc.name)
