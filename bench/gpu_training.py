"""GPU training benchmark: digits-cnn on 1 GPU vs data parallel on N GPUs (the seed's MLOPS-2.1 speedup).

Runs the same commands the executors run (``python -m ai_how.workloads`` and, for N > 1,
``torchrun --standalone --nproc_per_node N``) on MNIST-scale data (``--augment``: 32x32 digits,
shifted and noisy copies), and prints one JSON document: per-run wall time, training time,
samples/s, held-out accuracy, and the speedup of N GPUs over one.

    PYTHONPATH=src python3 bench/gpu_training.py --gpus 2 --augment 40 --epochs 3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(nproc: int, args: argparse.Namespace, out: Path) -> dict[str, object]:
    workload = [
        "-m",
        "ai_how.workloads",
        "digits-cnn",
        "--output",
        str(out),
        "--epochs",
        str(args.epochs),
        "--augment",
        str(args.augment),
        "--batch-size",
        str(args.batch_size),
    ]
    env = dict(os.environ)
    if nproc == 1:
        env["CUDA_VISIBLE_DEVICES"] = "0"
        command = [sys.executable, *workload]
    else:
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(nproc),
            *workload,
        ]
    started = time.monotonic()
    subprocess.run(command, check=True, env=env)
    wall = time.monotonic() - started
    metrics = json.loads((out / "metrics.json").read_text())
    return {
        "gpus": nproc,
        "wall_s": round(wall, 2),
        "train_s": metrics["training_time_seconds"],
        "samples_per_s": metrics["samples_per_second"],
        "world_size": metrics["world_size"],
        "held_out_accuracy": round(metrics["accuracy"][-1], 4),
        "final_loss": round(metrics["loss"][-1], 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gpus", type=int, default=2)
    parser.add_argument("--augment", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128, help="per GPU")
    args = parser.parse_args()
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        runs = [run(1, args, Path(tmp) / "one")]
        if args.gpus > 1:
            runs.append(run(args.gpus, args, Path(tmp) / "many"))
    report: dict[str, object] = {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "augment": args.augment,
        "epochs": args.epochs,
        "batch_per_gpu": args.batch_size,
        "runs": runs,
    }
    if len(runs) == 2:
        report["speedup_train"] = round(float(runs[0]["train_s"]) / float(runs[1]["train_s"]), 2)  # type: ignore[arg-type]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
