"""In a torchrun job rank 0 alone writes the shared inputs and the outputs; the other ranks wait for it."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ai_how.workloads.llm_data import prepare_dataset, publish_dir

# Runs llm-sft's real input preparation under Distributed.rank_zero_prepares, as train() does, and
# records which ranks ran it and what every rank then read.
RANK_SCRIPT = textwrap.dedent(
    """
    import hashlib, json, sys
    from pathlib import Path
    from ai_how.workloads import llm_sft
    from ai_how.workloads.common import Distributed, WorkloadError, write_json

    args = llm_sft.parser().parse_args(sys.argv[1:])
    ddp = Distributed.from_env()

    def prepare():
        write_json(args.output / "prepared-by" / f"rank-{ddp.rank}.json", {})
        return llm_sft.prepare_inputs(args)

    try:
        inputs = ddp.rank_zero_prepares(prepare)
        data = Path(inputs["train_path"]).read_bytes() + Path(inputs["eval_path"]).read_bytes()
        seen = {
            "inputs": inputs,
            "data_sha": hashlib.sha256(data).hexdigest(),
            "base_config": json.loads((Path(inputs["base"]) / "config.json").read_text())["hidden_size"],
        }
    except WorkloadError as exc:
        seen = {"error": exc.message, "fix": exc.fix}
    write_json(args.output / "seen" / f"rank-{ddp.rank}.json", seen)
    ddp.finish()
    """
)


def torchrun(*args: str) -> subprocess.CompletedProcess[str]:
    """Two CPU ranks on this machine (gloo), as the local executor starts a data-parallel job."""
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    return subprocess.run(
        [*launcher, *args], capture_output=True, text=True, timeout=300, env=env, check=False
    )


def chat_jsonl(path: Path, rows: int = 30) -> Path:
    path.write_text(
        "".join(
            json.dumps(
                {
                    "messages": [
                        {"role": "user", "content": f"q{i}"},
                        {"role": "assistant", "content": f"a{i}"},
                    ]
                }
            )
            + "\n"
            for i in range(rows)
        )
    )
    return path


@pytest.mark.slow
def test_rank_zero_prepares_llm_inputs_and_the_other_rank_reads_them_complete(tmp_path: Path) -> None:
    script = tmp_path / "ranks.py"
    script.write_text(RANK_SCRIPT)
    out = tmp_path / "out"
    dataset = chat_jsonl(tmp_path / "chat.jsonl")
    done = torchrun(str(script), "--output", str(out), "--dataset", str(dataset))
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in (out / "prepared-by").iterdir()) == ["rank-0.json"]  # rank 0 alone wrote
    seen = [json.loads((out / "seen" / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert seen[0] == seen[1]  # the same paths, and the same complete bytes on both ranks
    assert seen[1]["data_sha"] == seen[1]["inputs"]["data_sha"] and seen[1]["base_config"] == 64
    assert (out / "oumi_train.yaml").is_file()
    leftovers = [p for p in out.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]
    assert leftovers == []


def test_a_failure_on_rank_zero_reaches_every_rank_without_a_hang(tmp_path: Path) -> None:
    script = tmp_path / "ranks.py"
    script.write_text(RANK_SCRIPT)
    out = tmp_path / "out"
    done = torchrun(str(script), "--output", str(out), "--dataset", str(tmp_path / "missing.jsonl"))
    assert done.returncode == 0, done.stderr[-3000:]
    for rank in (0, 1):
        seen = json.loads((out / "seen" / f"rank-{rank}.json").read_text())
        assert seen == {
            "error": f"dataset {tmp_path / 'missing.jsonl'} does not exist",
            "fix": "pass an existing JSONL file with --dataset",
        }


@pytest.mark.slow
def test_data_parallel_digits_job_writes_its_outputs_once(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = torchrun("-m", "ai_how.workloads", "digits-cnn", "--output", str(out), "--epochs", "1")
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["metrics"]["world_size"] == 2
    assert done.stdout.count("workload digits-cnn finished") == 1  # only rank 0 wrote the outputs
    assert sorted(p.name for p in (out / "model").iterdir()) == ["model.pt", "model_config.json"]


def test_prepared_dataset_files_hold_the_split_and_its_digest(tmp_path: Path) -> None:
    train, held_out, digest = prepare_dataset(chat_jsonl(tmp_path / "chat.jsonl", 40), tmp_path / "data", 0)
    assert len(train.read_text().splitlines()) == 36 and len(held_out.read_text().splitlines()) == 4
    assert digest == hashlib.sha256(train.read_bytes() + held_out.read_bytes()).hexdigest()
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["eval.jsonl", "train.jsonl"]


def test_publish_dir_keeps_the_first_complete_copy(tmp_path: Path) -> None:
    """Two jobs converting the same cached base model: the second keeps the first's and drops its own."""
    target = tmp_path / "base"
    for writer in ("first", "second"):
        build = tmp_path / f".base.{writer}.tmp"
        build.mkdir()
        (build / "config.json").write_text(writer)
        assert publish_dir(build, target) == target
        assert not build.exists()
    assert (target / "config.json").read_text() == "first"
    incomplete = tmp_path / ".base.third.tmp"
    incomplete.mkdir()
    (tmp_path / "empty-target").mkdir()
    (tmp_path / "empty-target" / "partial.bin").write_text("x")
    with pytest.raises(OSError):
        publish_dir(incomplete, tmp_path / "empty-target")
    assert not incomplete.exists()


def test_publish_dir_replace_swaps_in_a_rebuild(tmp_path: Path) -> None:
    target = tmp_path / "tiny-llama"
    for version in ("v1", "v2"):
        build = tmp_path / f".tiny-llama.{version}.tmp"
        build.mkdir()
        (build / "config.json").write_text(version)
        publish_dir(build, target, replace=True)
    assert (target / "config.json").read_text() == "v2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-llama"]  # nothing left aside
