"""llm-sft: supervised fine-tuning through Oumi (``trainer_type: TRL_SFT``) on a chat JSONL dataset.

The Oumi ``TrainingConfig`` is built from Oumi's own dataclasses and saved next to
the model as ``oumi_train.yaml`` (so the same run can be repeated with ``oumi train -c``).
Model: a tiny Llama built offline (default) or SmolLM2-135M (``--model smollm2-135m``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from ai_how.workloads import llm_data
from ai_how.workloads.common import WorkloadError

MODELS = ("tiny-llama", "smollm2-135m", "smollm-135m-shape")
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


def train(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    if args.model not in MODELS:
        raise WorkloadError(f"unknown model {args.model!r}", fix=f"use one of: {', '.join(MODELS)}")
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
    oumi_out = work / "oumi"
    config = oumi_config(args, base, train_path, oumi_out)
    config_path = args.output / "oumi_train.yaml"
    args.output.mkdir(parents=True, exist_ok=True)
    config.to_yaml(str(config_path))

    from oumi.train import train as oumi_train

    start = time.monotonic()
    oumi_train(config)
    elapsed = time.monotonic() - start

    model_dir = args.output / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    for name in SERVABLE:
        if (oumi_out / name).exists():
            shutil.copy2(oumi_out / name, model_dir / name)
    shutil.copy2(config_path, model_dir / "oumi_train.yaml")
    if not (model_dir / "model.safetensors").exists():
        raise WorkloadError(f"Oumi saved no model.safetensors in {oumi_out}")
    (model_dir / "ai_how_model.json").write_text(json.dumps({"kind": "llm", "base": args.model}) + "\n")
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
        "dataset_sha256": data_sha,
        "kind": "llm",
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llm-sft", description=__doc__)
    p.add_argument("--output", type=Path, required=True)
    p.add_argument("--model", default="tiny-llama", help=f"base model: {', '.join(MODELS)}")
    p.add_argument(
        "--dataset", type=Path, default=None, help="chat JSONL; default: chatterbot-corpus English"
    )
    p.add_argument("--limit", type=int, default=0, help="use at most this many conversations (0 = all)")
    p.add_argument("--max-steps", type=int, default=120)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--logging-steps", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="bfloat16 on GPUs")
    return p
