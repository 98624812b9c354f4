"""Each workload declares its options once; the job's parser and the CLI's --set checks both come from it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ai_how.workloads import WORKLOADS, load
from ai_how.workloads.options import Option, OptionError, from_argv, to_argv

# One non-default value per option of each workload.
OTHER_VALUES: dict[str, dict[str, Any]] = {
    "digits-cnn": {
        "epochs": 7,
        "batch_size": 16,
        "lr": 0.05,
        "seed": 3,
        "mnist_dir": Path("/data/mnist"),
        "augment": 2,
    },
    "llm-sft": {
        "model": "smollm2-135m",
        "dataset": Path("/data/chat.jsonl"),
        "limit": 100,
        "max_steps": 9,
        "batch_size": 2,
        "lr": 1e-4,
        "max_length": 64,
        "logging_steps": 1,
        "seed": 5,
        "dtype": "bfloat16",
    },
}


@pytest.mark.parametrize("workload", sorted(WORKLOADS))
def test_declared_options_round_trip_through_the_jobs_parser(workload: str) -> None:
    module = load(workload)
    options: list[Option] = module.OPTIONS
    assert sorted(o.name for o in options) == sorted(OTHER_VALUES[workload])  # every option is covered here
    defaults = vars(module.parser().parse_args(["--output", "out"]))
    assert defaults == {"output": Path("out")} | {o.name: o.default for o in options}
    values = OTHER_VALUES[workload]
    argv = to_argv(options, values)
    parsed = vars(module.parser().parse_args(["--output", "out", *argv]))
    assert parsed == {"output": Path("out")} | values
    assert from_argv(options, argv) == values  # what resume reads back from a run document


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--epochs", "abc"], "epochs must be an integer (1..1000000)"),
        (["--epochs", "0"], "epochs must be an integer (1..1000000)"),
        (["--lr", "0"], "lr must be a number (1e-08..10)"),
        (["--augment", "101"], "augment must be an integer (0..100)"),
    ],
)
def test_job_parser_rejects_what_the_cli_rejects(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        load("digits-cnn").parser().parse_args(["--output", "out", *argv])
    assert caught.value.code == 2 and message in capsys.readouterr().err


def test_option_parse_and_describe() -> None:
    ratio = Option("ratio", "float", 0.5, "a ratio", minimum=0, maximum=1)
    assert ratio.parse("0.25") == 0.25 and ratio.parse("1") == 1.0
    assert ratio.accepts() == "a number (0..1)"
    for bad in ("1.5", "-0.1", "nan", "inf", "", "x"):
        with pytest.raises(OptionError, match=r"^ratio must be a number \(0\.\.1\)$"):
            ratio.parse(bad)
    open_ended = Option("n", "int", 1, "a count", minimum=1)
    assert open_ended.accepts() == "an integer (1..)" and open_ended.parse("1000000000") == 10**9
    assert Option("s", "str", "", "free text").parse("") == ""


def test_workload_modules_import_without_numpy_or_torch() -> None:
    """The CLI reads the declarations before a run starts: no training library may load for that."""
    code = (
        "import sys\n"
        "from ai_how.workloads import digits_cnn, llm_sft\n"
        "digits_cnn.parser(); llm_sft.parser()\n"
        "loaded = {'numpy', 'torch', 'transformers', 'oumi', 'sklearn'} & set(sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
