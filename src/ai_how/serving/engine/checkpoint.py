"""An HF checkpoint directory read without transformers: config, weights, rotary tables, EOS ids.

Importing transformers costs seconds in the engine process (most of its cold start on a GPU machine
after torch itself), and our forward needs none of it: ``config.json`` is JSON, the weights are
safetensors (or a torch ``.bin``), and the default rotary table is one line of arithmetic. Only a
checkpoint with a scaled rotary embedding (linear, llama3, yarn, ...) imports transformers, to take
its tables from the same functions HF's own forward uses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch only where tensors are made: the HTTP processes read configs and EOS ids here
    from torch import Tensor

# Rotary types whose tables change with the sequence at run time: one table cannot serve them.
RUNTIME_ROPE = ("dynamic", "longrope")


class CheckpointError(ValueError):
    """The directory is not a checkpoint this engine can read (the message names the file and fix)."""


@dataclass
class Checkpoint:
    model_dir: Path
    config: dict[str, Any]
    weights: dict[str, Tensor]  # HF parameter names, on the CPU, as stored


def read_config(model_dir: Path) -> dict[str, Any]:
    path = Path(model_dir) / "config.json"
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            f"{path}: cannot read the model config ({exc}); is this an HF model directory?"
        ) from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: not a JSON object")
    return config


def read_weights(model_dir: Path) -> dict[str, Tensor]:
    """Every tensor of the checkpoint's ``model.safetensors`` (or its shards), else of its
    ``pytorch_model.bin`` (or its shards)."""
    import torch

    model_dir = Path(model_dir)
    weights: dict[str, Tensor] = {}
    shards = _shards(model_dir, "model.safetensors")
    if shards:
        from safetensors.torch import load_file

        for shard in shards:
            weights.update(load_file(shard))
        return weights
    bins = _shards(model_dir, "pytorch_model.bin")
    if not bins:
        raise CheckpointError(
            f"{model_dir}: no model.safetensors or pytorch_model.bin weights (or their shards)"
        )
    for shard in bins:
        weights.update(torch.load(shard, map_location="cpu", weights_only=True))
    return weights


def _shards(model_dir: Path, name: str) -> list[Path]:
    """The files of HF's checkpoint ``name``: its index's shards, else the file itself. Other weight
    files beside it (Mistral's ``consolidated.safetensors``, adapters) are not the model's."""
    index = model_dir / f"{name}.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{index}: not a weight index ({exc})") from None
        return [model_dir / shard for shard in sorted(set(weight_map.values()))]
    single = model_dir / name
    return [single] if single.is_file() else []


def load(model_dir: Path) -> Checkpoint:
    return Checkpoint(Path(model_dir), read_config(model_dir), read_weights(model_dir))


def rope_parameters(config: dict[str, Any]) -> dict[str, Any]:
    """The rotary settings in transformers 5's shape, from either ``rope_parameters`` or the older
    ``rope_theta`` + ``rope_scaling`` keys."""
    params = config.get("rope_parameters")
    if not isinstance(params, dict):
        params = dict(config.get("rope_scaling") or {})
        params.setdefault("rope_theta", config.get("rope_theta", 10000.0))
    params = dict(params)
    params["rope_type"] = params.get("rope_type") or params.get("type") or "default"
    return params


def rotary_tables(
    model_dir: Path, config: dict[str, Any], head_dim: int, positions: int
) -> tuple[Tensor, Tensor]:
    """cos, sin [positions, head_dim] in float32, as HF's rotary module computes them."""
    import torch

    params = rope_parameters(config)
    kind = params["rope_type"]
    if float(config.get("partial_rotary_factor", params.get("partial_rotary_factor", 1.0))) != 1.0:
        raise CheckpointError(
            "a partial rotary embedding (partial_rotary_factor) is not served by our engine"
        )
    if kind in RUNTIME_ROPE:
        raise CheckpointError(
            f"rope_type {kind!r} changes with the sequence length; serve it with --engine naive"
        )
    if kind == "default":
        base = float(params.get("rope_theta", 10000.0))
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float) / head_dim))
        scaling = 1.0
    else:
        inv_freq, scaling = _hf_rope(model_dir, kind)
    freqs = torch.arange(positions, dtype=torch.float)[:, None] * inv_freq[None, :].float()
    angles = torch.cat((freqs, freqs), dim=-1)
    return angles.cos() * scaling, angles.sin() * scaling


def _hf_rope(model_dir: Path, kind: str) -> tuple[Tensor, float]:
    """A scaled rotary embedding's inverse frequencies from transformers' own functions."""
    from transformers import AutoConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    if kind not in ROPE_INIT_FUNCTIONS:
        raise CheckpointError(f"rope_type {kind!r} is unknown to this transformers version")
    inv_freq, scaling = ROPE_INIT_FUNCTIONS[kind](AutoConfig.from_pretrained(model_dir), None)
    return inv_freq, float(scaling)


def eos_ids(model_dir: Path, tokenizer_eos: int | None) -> set[int]:
    """The ids that end a generation: the config's, the generation config's and the tokenizer's."""
    ids: set[int] = set()
    sources = [read_config(model_dir)]
    generation = Path(model_dir) / "generation_config.json"
    if generation.exists():
        try:
            sources.append(json.loads(generation.read_text()))
        except ValueError as exc:
            raise CheckpointError(f"{generation}: not JSON ({exc})") from None
    for source in sources:
        value = source.get("eos_token_id") if isinstance(source, dict) else None
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list):
            ids.update(v for v in value if isinstance(v, int))
    if tokenizer_eos is not None:
        ids.add(int(tokenizer_eos))
    return ids
