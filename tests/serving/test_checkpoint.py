"""The engine reads HF checkpoints itself (no transformers in its process): same tables, ids and errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from ai_how.serving.engine import checkpoint
from ai_how.serving.engine.model import Decoder, UnsupportedModel
from tests.serving.llm_fixtures import tiny_llama


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_llama(tmp_path_factory.mktemp("tiny-llm"))


def _copy_with(model_dir: Path, tmp_path: Path, **changes: object) -> Path:
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    config.update(changes)
    (copy / "config.json").write_text(json.dumps(config))
    return copy


def _hf_tables(model_dir: Path, positions: int) -> tuple[torch.Tensor, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    lm = AutoModelForCausalLM.from_pretrained(model_dir)
    probe = torch.zeros(1, dtype=torch.float32)
    cos, sin = lm.model.rotary_emb(probe, torch.arange(positions)[None])
    return cos[0], sin[0]


@pytest.mark.parametrize(
    "rope",
    [
        None,  # the default table, computed without transformers
        {"rope_type": "linear", "factor": 4.0, "rope_theta": 5000.0},
        {
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
            "rope_theta": 500000.0,
        },
    ],
)
def test_rotary_tables_equal_the_models_own(model_dir: Path, tmp_path: Path, rope: dict | None) -> None:
    source = model_dir if rope is None else _copy_with(model_dir, tmp_path, rope_parameters=rope)
    config = checkpoint.read_config(source)
    cos, sin = checkpoint.rotary_tables(source, config, 16, 512)
    want_cos, want_sin = _hf_tables(source, 512)
    assert torch.equal(cos, want_cos) and torch.equal(sin, want_sin)


def test_older_configs_with_rope_theta_and_rope_scaling_are_read() -> None:
    old = {"rope_theta": 500.0, "rope_scaling": {"type": "linear", "factor": 2.0}}
    assert checkpoint.rope_parameters(old) == {
        "type": "linear",
        "factor": 2.0,
        "rope_theta": 500.0,
        "rope_type": "linear",
    }
    assert checkpoint.rope_parameters({})["rope_type"] == "default"


def test_tables_that_change_with_the_sequence_are_refused(model_dir: Path, tmp_path: Path) -> None:
    source = _copy_with(
        model_dir, tmp_path, rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 1e4}
    )
    with pytest.raises(checkpoint.CheckpointError, match=r"dynamic.*--engine naive"):
        Decoder.load(source, torch.device("cpu"), torch.float32)


def test_eos_ids_come_from_both_configs_and_the_tokenizer(model_dir: Path, tmp_path: Path) -> None:
    source = _copy_with(model_dir, tmp_path, eos_token_id=[2, 7])
    (source / "generation_config.json").write_text(json.dumps({"eos_token_id": 9}))
    assert checkpoint.eos_ids(source, 11) == {2, 7, 9, 11}
    assert checkpoint.eos_ids(model_dir, None) == {2}


def test_a_broken_checkpoint_is_named_with_its_file(model_dir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(checkpoint.CheckpointError, match=r"config\.json"):
        checkpoint.read_config(empty)
    (empty / "config.json").write_text((model_dir / "config.json").read_text())
    with pytest.raises(checkpoint.CheckpointError, match=r"no model\.safetensors"):
        checkpoint.read_weights(empty)
    untied = _copy_with(model_dir, tmp_path, tie_word_embeddings=False)  # then lm_head must be stored
    with pytest.raises(checkpoint.CheckpointError, match=r"lm_head\.weight"):
        Decoder.load(untied, torch.device("cpu"), torch.float32)
    other = tmp_path / "other"
    shutil.copytree(model_dir, other)
    (other / "config.json").write_text(
        json.dumps({**json.loads((model_dir / "config.json").read_text()), "model_type": "gpt2"})
    )
    with pytest.raises(UnsupportedModel, match="gpt2"):
        Decoder.load(other, torch.device("cpu"), torch.float32)


def test_the_engine_process_never_imports_transformers(model_dir: Path) -> None:
    """What the engine process runs (imports, checkpoint, decoder) leaves transformers unimported:
    seconds of a GPU server's cold start."""
    import subprocess
    import sys

    code = (
        "import sys, torch\n"
        "import ai_how.serving.engine.process, ai_how.serving.engine.core\n"
        "from ai_how.serving.engine.model import Decoder\n"
        f"Decoder.load({str(model_dir)!r}, torch.device('cpu'), torch.float32)\n"
        "print('transformers' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_only_the_checkpoints_own_weight_files_are_read(model_dir: Path, tmp_path: Path) -> None:
    """Sharded checkpoints follow their index; other weight files beside the model (Mistral's
    consolidated.safetensors, adapters) are not loaded."""
    from safetensors.torch import save_file

    sharded = tmp_path / "sharded"
    shutil.copytree(model_dir, sharded)
    (sharded / "model.safetensors").rename(sharded / "model-00001-of-00001.safetensors")
    keys = list(checkpoint.read_weights(model_dir))
    index = {"metadata": {}, "weight_map": dict.fromkeys(keys, "model-00001-of-00001.safetensors")}
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    save_file({"model.norm.weight": torch.zeros(3)}, str(sharded / "consolidated.safetensors"))
    weights = checkpoint.read_weights(sharded)
    assert sorted(weights) == sorted(keys) and weights["model.norm.weight"].shape == (64,)
    Decoder.load(sharded, torch.device("cpu"), torch.float32)


def test_qwen2_ignores_a_declared_window_unless_it_is_turned_on(model_dir: Path, tmp_path: Path) -> None:
    declared = _copy_with(model_dir, tmp_path, model_type="qwen2", sliding_window=64)
    Decoder.load(declared, torch.device("cpu"), torch.float32)  # Qwen2's use_sliding_window defaults to false
    (declared / "config.json").write_text(
        json.dumps({**json.loads((declared / "config.json").read_text()), "use_sliding_window": True})
    )
    with pytest.raises(UnsupportedModel, match="sliding-window"):
        Decoder.load(declared, torch.device("cpu"), torch.float32)


def test_hidden_gpus_mean_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from ai_how.serving.devices import gpu_expected

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert not gpu_expected("auto") and not gpu_expected("cpu") and gpu_expected("cuda:1")
