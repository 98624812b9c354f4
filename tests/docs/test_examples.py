"""examples/ never drifts from ai-how's renderers: regenerated files equal the committed ones, every sbatch
script parses with ``bash -n``, every manifest passes the project's schema checks."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from ai_how.kube.validation import validate_objects

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
CRD_DIR = REPO.parent / "shared" / "schemas"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("examples_generate", EXAMPLES / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("examples")
    _generator().generate(out)
    return out


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.suffix in (".sbatch", ".yaml"))


def test_committed_examples_equal_what_the_renderers_write(generated: Path) -> None:
    committed = _files(EXAMPLES)
    assert committed == _files(generated), "run: .venv/bin/python examples/generate.py"
    for name in committed:
        assert (EXAMPLES / name).read_text() == (generated / name).read_text(), (
            f"examples/{name} differs from what ai-how renders now: run .venv/bin/python examples/generate.py"
        )


def test_the_seed_training_and_inference_examples_exist() -> None:
    assert _files(EXAMPLES) == [
        "inference/digits-cnn-cpu.yaml",
        "inference/smollm-sft-gpu.yaml",
        "training/digits_cnn_ddp.sbatch",
        "training/digits_cnn_single_gpu.sbatch",
        "training/smollm_sft_multi_gpu.sbatch",
        "training/smollm_sft_single_gpu.sbatch",
    ]


@pytest.mark.parametrize("name", sorted(p.name for p in (EXAMPLES / "training").glob("*.sbatch")))
def test_sbatch_scripts_parse_with_bash(name: str) -> None:
    result = subprocess.run(
        ["bash", "-n", str(EXAMPLES / "training" / name)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_sbatch_scripts_ask_for_the_gpus_and_launcher_they_say() -> None:
    scripts = {p.name: p.read_text() for p in (EXAMPLES / "training").glob("*.sbatch")}
    assert "#SBATCH --gres=gpu:1" in scripts["digits_cnn_single_gpu.sbatch"]
    assert "srun" not in scripts["digits_cnn_single_gpu.sbatch"]
    assert "--nproc_per_node 2" in scripts["digits_cnn_ddp.sbatch"]
    assert "#SBATCH --gres=gpu:2" in scripts["smollm_sft_multi_gpu.sbatch"]
    assert "oumi distributed torchrun" in scripts["smollm_sft_multi_gpu.sbatch"]
    for text in scripts.values():
        assert "apptainer exec --nv /mnt/beegfs/containers/" in text
        assert "export HF_HUB_OFFLINE=1" in text


def _manifests() -> dict[str, list[dict[str, object]]]:
    return {
        p.name: [d for d in yaml.safe_load_all(p.read_text()) if d]
        for p in sorted((EXAMPLES / "inference").glob("*.yaml"))
    }


def test_manifests_pass_the_core_schema_checks() -> None:
    for name, objects in _manifests().items():
        assert validate_objects(objects, kubernetes_version="1.35") == [], name


def test_manifests_pass_the_kserve_crd_schemas() -> None:
    if not (CRD_DIR.is_dir() and any(CRD_DIR.rglob("*.yaml"))):
        pytest.skip(f"no CRD schemas at {CRD_DIR} (the shared schema folder of the checkout)")
    for name, objects in _manifests().items():
        assert {str(o["kind"]) for o in objects} == {"ServiceAccount", "ServingRuntime", "InferenceService"}
        assert validate_objects(objects, kubernetes_version="1.35", crd_dir=CRD_DIR) == [], name


def test_cpu_example_asks_for_no_gpu_and_llm_example_for_one() -> None:
    manifests = _manifests()

    def predictor(name: str) -> dict[str, object]:
        isvc = next(o for o in manifests[name] if o["kind"] == "InferenceService")
        return isvc["spec"]["predictor"]  # type: ignore[index,no-any-return]

    cpu, gpu = predictor("digits-cnn-cpu.yaml"), predictor("smollm-sft-gpu.yaml")
    assert "nvidia.com/gpu" not in str(cpu["model"])
    assert "tolerations" not in cpu
    assert gpu["model"]["resources"]["limits"]["nvidia.com/gpu"] == "1"  # type: ignore[index]
    assert gpu["tolerations"]
