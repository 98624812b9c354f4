"""What a user types is checked before anything starts: model names, workloads, stages, --set, resume options."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ai_how.errors import AiHowError
from ai_how.pipeline import inputs
from ai_how.workloads import llm_sft


@pytest.mark.parametrize("name", ["digits-cnn", "llm-sft", "a", "m1", "a" * 45, "abc-9"])
def test_dns_labels_are_accepted(name: str) -> None:
    assert inputs.check_model_name(name) == name


@pytest.mark.parametrize(
    ("name", "suggested"),
    [
        ("Foo_Bar", "foo-bar"),
        ("-lead", "lead"),
        ("trail-", "trail"),
        ("a.b", "a-b"),
        ("a/../b", "a-b"),
        ("", "model"),
        ("x" * 46, "x" * 45),
        ("0abc-9", "m-0abc-9"),  # KServe wants a letter first
        ("ünï", "n"),
    ],
)
def test_bad_model_names_fail_with_a_valid_suggestion(name: str, suggested: str) -> None:
    with pytest.raises(AiHowError) as caught:
        inputs.check_model_name(name)
    assert "--model-name" in caught.value.message and "at most 45" in caught.value.message
    assert caught.value.fix == f"e.g. --model-name {suggested}"
    assert inputs.check_model_name(suggested) == suggested  # the suggestion itself is valid


def test_workload_and_stage_checks_name_the_choices() -> None:
    with pytest.raises(AiHowError, match="unknown workload 'nope'") as workload:
        inputs.check_workload("nope")
    assert workload.value.fix == "use one of: digits-cnn, llm-sft"
    with pytest.raises(AiHowError, match="--stop-after: unknown stage 'trian'") as stage:
        inputs.check_stage("trian", ["train", "register"])
    assert stage.value.fix == "use one of: train, register"


@pytest.mark.parametrize(
    ("workload", "item", "message"),
    [
        ("digits-cnn", "epochs=abc", "--set epochs=abc: epochs must be an integer (1..1000000)"),
        ("digits-cnn", "epochs=0", "--set epochs=0: epochs must be an integer (1..1000000)"),
        ("digits-cnn", "epochs=2.5", "epochs must be an integer"),
        ("digits-cnn", "lr=-1", "--set lr=-1: lr must be a number (1e-08..10)"),
        ("digits-cnn", "lr=nan", "lr must be a number"),
        ("digits-cnn", "lr=inf", "lr must be a number"),
        ("digits-cnn", "mnist_dir=", "mnist_dir must be a path"),
        ("llm-sft", "dtype=float16", "--set dtype=float16: dtype must be one of: float32, bfloat16"),
        ("llm-sft", "model=gpt-5", "model must be one of: tiny-llama, smollm2-135m, smollm-135m-shape"),
        ("digits-cnn", "epochs", "--set 'epochs' is not KEY=VALUE"),
        ("digits-cnn", "=3", "is not KEY=VALUE"),
    ],
)
def test_bad_settings_name_the_option_and_what_it_accepts(workload: str, item: str, message: str) -> None:
    with pytest.raises(AiHowError) as caught:
        inputs.workload_argv(workload, [item])
    assert message in caught.value.message and caught.value.fix


def test_unknown_setting_lists_the_known_keys() -> None:
    with pytest.raises(AiHowError, match="digits-cnn has no option 'epoch'") as caught:
        inputs.workload_argv("digits-cnn", ["epoch=3"])
    assert caught.value.fix == "use one of: epochs, batch_size, lr, seed, mnist_dir, augment"
    with pytest.raises(AiHowError, match="digits-cnn has no option 'model'"):  # --model is llm-sft's
        inputs.workload_argv("digits-cnn", [], model="smollm2-135m")


def test_settings_become_the_jobs_arguments_in_declaration_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = inputs.workload_argv(
        "llm-sft", ["max-steps=5", "dataset=chat.jsonl", "lr=1e-3"], model="smollm2-135m"
    )
    assert argv == [
        "--model",
        "smollm2-135m",
        "--dataset",
        str(tmp_path / "chat.jsonl"),  # relative paths are made absolute: the job runs elsewhere
        "--max-steps",
        "5",
        "--lr",
        "0.001",
    ]
    # The same argv through the job's own parser gives the same typed values.
    args = llm_sft.parser().parse_args(["--output", "out", *argv])
    assert (args.model, args.dataset, args.max_steps, args.lr) == (
        "smollm2-135m",
        tmp_path / "chat.jsonl",
        5,
        0.001,
    )
    assert args.batch_size == 8  # not given: the declared default
    # Settings given in another order or spelling record the same argv (the same train input hash).
    assert argv == inputs.workload_argv(
        "llm-sft", ["lr=0.001", "max_steps=5", f"dataset={tmp_path / 'chat.jsonl'}", "model=smollm2-135m"]
    )


def test_contradicting_model_and_set_model_are_refused() -> None:
    with pytest.raises(AiHowError, match="contradicts model=smollm2-135m"):
        inputs.workload_argv("llm-sft", ["model=tiny-llama"], model="smollm2-135m")
    assert inputs.workload_argv("llm-sft", ["model=tiny-llama"], model="tiny-llama") == [
        "--model",
        "tiny-llama",
    ]


RUN: dict[str, Any] = {
    "run_id": "20250101-000000-digits-cnn-abcd",
    "workload": "digits-cnn",
    "model_name": "digits",
    "workload_args": ["--epochs", "3", "--lr", "0.01"],
    "resources": {"gpus": 0, "processes": 1, "nodes": 1},
}


@pytest.mark.parametrize(
    ("given", "named"),
    [
        (inputs.ResumeRequest(settings=["epochs=5"]), "--set epochs=5 (run: 3)"),
        (inputs.ResumeRequest(settings=["batch_size=32"]), "--set batch_size=32 (run: 64)"),
        (inputs.ResumeRequest(settings=["mnist_dir=/data"]), "--set mnist_dir=/data (run: not set)"),
        (inputs.ResumeRequest(resources={"gpus": 2}), "--gpus 2 (run: 0)"),
        (inputs.ResumeRequest(resources={"processes": 4}), "--procs-per-node 4 (run: 1)"),
        (inputs.ResumeRequest(resources={"nodes": 2}), "--nodes 2 (run: 1)"),
        (inputs.ResumeRequest(workload="llm-sft"), "--workload llm-sft (run: digits-cnn)"),
        (inputs.ResumeRequest(model_name="other"), "--model-name other (run: digits)"),
    ],
)
def test_resume_refuses_options_it_would_ignore(given: inputs.ResumeRequest, named: str) -> None:
    with pytest.raises(AiHowError) as caught:
        inputs.check_resume(RUN, given)
    assert named in caught.value.message and RUN["run_id"] in caught.value.message
    assert caught.value.fix is not None and "new run" in caught.value.fix


def test_resume_accepts_options_equal_to_the_runs() -> None:
    inputs.check_resume(
        RUN,
        inputs.ResumeRequest(
            workload="digits-cnn",
            model_name="digits",
            settings=["epochs=3", "lr=1e-2", "seed=0"],  # seed=0 is the declared default the run used
            resources={"gpus": 0, "processes": 1, "nodes": None},
        ),
    )
    inputs.check_resume(RUN, inputs.ResumeRequest())


def test_resume_names_every_differing_option_in_one_message() -> None:
    with pytest.raises(AiHowError) as caught:
        inputs.check_resume(RUN, inputs.ResumeRequest(settings=["epochs=4"], resources={"gpus": 1}))
    assert "--gpus 1 (run: 0); --set epochs=4 (run: 3)" in caught.value.message
    assert "\n" not in caught.value.message


def test_resume_of_llm_run_names_model_flag() -> None:
    run = RUN | {"workload": "llm-sft", "workload_args": ["--model", "tiny-llama"]}
    with pytest.raises(AiHowError, match=r"--model smollm2-135m \(run: tiny-llama\)"):
        inputs.check_resume(run, inputs.ResumeRequest(model="smollm2-135m"))
    inputs.check_resume(run, inputs.ResumeRequest(model="tiny-llama"))


def test_inputs_module_imports_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "from ai_how.pipeline import inputs\n"
        "inputs.workload_argv('digits-cnn', ['epochs=2']); inputs.workload_argv('llm-sft', ['max_steps=2'])\n"
        "heavy = {'torch', 'numpy', 'mlflow', 'transformers', 'oumi', 'sklearn', 'boto3', 'kserve'}\n"
        "loaded = heavy & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
