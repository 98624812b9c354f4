"""llm-sft: supervised fine-tuning through Oumi (``trainer_type: TRL_SFT``) on a chat JSONL dataset.

The Oumi ``TrainingConfig`` is built from Oumi's own dataclasses and saved next to
the model as ``oumi_train.yaml`` (so the same run can be repeated with ``oumi train -c``).
Model: a tiny Llama built offline (default) or SmolLM2-135M (``--model smollm2-135m``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from ai_how.fsutil import atomic_write_text
from ai_how.workloads import llm_data
from ai_how.workloads.common import Distributed, WorkloadError, copy_atomic, write_json
from ai_how.workloads.options import Option, build_parser
from ai_how.workloads.progress import relay_trainer_log

MODELS = ("tiny-llama", "smollm2-135m", "smollm-135m-shape")
# The job's options, declared once: the parser below and `ai-how pipeline run --set` both read them.
OPTIONS = [
    Option("model", "str", "tiny-llama", "base model", choices=MODELS),
    Option("dataset", "path", None, "chat JSONL; default: chatterbot-corpus English"),
    Option("limit", "int", 0, "use at most this many conversations (0 = all)", minimum=0, maximum=10**9),
    Option("max_steps", "int", 120, "optimizer steps", minimum=1, maximum=10**7),
    Option("batch_size", "int", 8, "examples per device and step", minimum=1, maximum=65536),
    Option("lr", "float", 3e-3, "learning rate", minimum=1e-8, maximum=10),
    Option("max_length", "int", 128, "tokens per example", minimum=8, maximum=131072),
    Option("logging_steps", "int", 5, "steps between loss records", minimum=1, maximum=10**7),
    Option("seed", "int", 0, "random seed", minimum=0, maximum=2**32 - 1),
    Option("dtype", "str", "float32", "weights dtype (bfloat16 on GPUs)", choices=("float32", "bfloat16")),
]
# Files that make up a servable HF model directory.
SERVABLE = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
)


def oumi_config(args: argparse.Namespace, base: Path, train_path: Path, output_dir: Path) -> Any:
    from oumi.core.configs import (
        DataParams,
        DatasetParams,
        DatasetSplitParams,
        ModelParams,
        TrainingConfig,
        TrainingParams,
    )
    from oumi.core.configs.params.training_params import TrainerType

    return TrainingConfig(
        model=ModelParams(
            model_name=str(base),
            model_max_length=args.max_length,
            torch_dtype_str=args.dtype,
            load_pretrained_weights=True,
            tokenizer_pad_token="<|endoftext|>" if args.model == "smollm2-135m" else None,
            trust_remote_code=False,
        ),
        data=DataParams(
            train=DatasetSplitParams(
                datasets=[DatasetParams(dataset_name="text_sft_jsonl", dataset_path=str(train_path))]
            )
        ),
        training=TrainingParams(
            trainer_type=TrainerType.TRL_SFT,
            output_dir=str(output_dir),
            max_steps=args.max_steps,
            per_device_train_batch_size=args.batch_size,
            gradient_accumulation_steps=1,
            learning_rate=args.lr,
            warmup_steps=0,
            logging_steps=args.logging_steps,
            save_steps=0,
            save_final_model=True,
            enable_mlflow=False,  # ai-how logs the whole history to MLflow in one batch afterwards
            enable_tensorboard=False,
            enable_wandb=False,
            dataloader_num_workers=0,
            seed=args.seed,
            run_name="ai-how-llm-sft",
            include_performance_metrics=False,
        ),
    )


def _history(output_dir: Path) -> list[dict[str, Any]]:
    state = output_dir / "trainer_state.json"
    if not state.exists():
        return []
    return list(json.loads(state.read_text()).get("log_history", []))


def prepare_inputs(args: argparse.Namespace) -> dict[str, str]:
    """Write the shared inputs (train/eval split, base model with its tokenizer, the Oumi config) and
    return their paths. In a data-parallel job only rank 0 runs this; the other ranks wait for it."""
    work = args.output / "work"
    train_path, eval_path, data_sha = llm_data.prepare_dataset(
        args.dataset, work / "data", args.limit, args.seed
    )
    if args.model == "tiny-llama":
        base = llm_data.build_tiny_llama(train_path, work / "base-model", args.seed)
    elif args.model == "smollm-135m-shape":  # SmolLM-135M's architecture, random init (GPU benchmarks)
        base = llm_data.build_tiny_llama(
            train_path, work / "base-model", args.seed, llm_data.SMOLLM_135M_SHAPE
        )
    else:
        cache = Path(os.environ.get("AI_HOW_MODEL_CACHE", Path.home() / ".ai-how" / "models"))
        base = llm_data.smollm2_base(cache)
    config_path = args.output / "oumi_train.yaml"
    with tempfile.TemporaryDirectory(dir=args.output) as scratch:  # Oumi writes YAML to a path
        draft = Path(scratch) / "oumi_train.yaml"
        oumi_config(args, base, train_path, work / "oumi").to_yaml(str(draft))
        atomic_write_text(config_path, draft.read_text(encoding="utf-8"))
    return {
        "train_path": str(train_path),
        "eval_path": str(eval_path),
        "data_sha": data_sha,
        "base": str(base),
        "config_path": str(config_path),
    }


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Fine-tune through Oumi; under torchrun rank 0 prepares the inputs and only rank 0 writes ``model/``."""
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    if args.model not in MODELS:
        raise WorkloadError(f"unknown model {args.model!r}", fix=f"use one of: {', '.join(MODELS)}")
    args.output.mkdir(parents=True, exist_ok=True)
    ddp = Distributed.from_env()
    inputs = ddp.rank_zero_prepares(lambda: prepare_inputs(args))
    ddp.release()  # Oumi initialises (and later destroys) its own process group
    train_path, eval_path = Path(inputs["train_path"]), Path(inputs["eval_path"])
    oumi_out = args.output / "work" / "oumi"
    config = oumi_config(args, Path(inputs["base"]), train_path, oumi_out)

    from oumi.train import train as oumi_train

    start = time.monotonic()
    with (
        relay_trainer_log(
            oumi_out / "metrics_rank0000.jsonl",  # Oumi's MetricsLoggerCallback, rank 0
            args.output,
            total_steps=args.max_steps,
            samples_per_step=args.batch_size * ddp.world_size,
        )
        if ddp.is_main
        else contextlib.nullcontext()
    ):
        oumi_train(config)
    elapsed = time.monotonic() - start

    if ddp.is_main:
        _write_model(args, oumi_out, Path(inputs["config_path"]))
    history = _history(oumi_out)
    losses = [float(h["loss"]) for h in history if "loss" in h]
    return {
        "metrics": {
            "steps": args.max_steps,
            "loss": losses,
            "training_time_seconds": round(elapsed, 3),
            "train_loss": next((float(h["train_loss"]) for h in history if "train_loss" in h), None),
        },
        "params": {
            "model": args.model,
            "max_steps": args.max_steps,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "max_length": args.max_length,
            "seed": args.seed,
            "trainer_type": "TRL_SFT",
            "dataset": str(args.dataset) if args.dataset else "chatterbot-corpus/english",
            "train_examples": sum(1 for _ in train_path.open()),
            "eval_path": str(eval_path),
        },
        "dataset_sha256": inputs["data_sha"],
        "kind": "llm",
    }


def _write_model(args: argparse.Namespace, oumi_out: Path, config_path: Path) -> None:
    """Copy the servable files Oumi saved into ``model/`` (each file atomically), with ai-how's metadata."""
    model_dir = args.output / "model"
    for name in SERVABLE:
        if (oumi_out / name).exists():
            copy_atomic(oumi_out / name, model_dir / name)
    copy_atomic(config_path, model_dir / "oumi_train.yaml")
    if not (model_dir / "model.safetensors").exists():
        raise WorkloadError(f"Oumi saved no model.safetensors in {oumi_out}")
    write_json(model_dir / "ai_how_model.json", {"kind": "llm", "base": args.model})


def parser() -> argparse.ArgumentParser:
    return build_parser("llm-sft", __doc__, OPTIONS)
