"""Property test: mutated configs never crash the CLI; the exit code is always 0, 1 or 2.

Derandomised with a fixed example budget and no example database: every run checks the same inputs,
so a failure reproduces and a pass means the same thing each time.
"""

from __future__ import annotations

import contextlib
import copy
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from ai_how.cli.main import app
from tests.conftest import EXAMPLE, LOCAL

# How the CLI reports an exception nobody anticipated (ai_how.cli.main.AiHowGroup): a bug, never valid output.
INTERNAL_ERROR = "internal error:"
BASES = [yaml.safe_load(EXAMPLE.read_text()), yaml.safe_load(LOCAL.read_text())]
runner = CliRunner()

interesting_text = st.sampled_from(
    [
        "",
        "${UNSET_AI_HOW_VAR}",
        "${X:-5}",
        "$${",
        "${",
        "192.168.100.0/24",
        "192.168.100.10",
        "0000:65:00.0",
        "10de",
        "gpu",
        "audio",
        "s3",
        "kserve",
        "slurm",
        "NoSchedule",
        "1.0",
        "-1",
        "1e9",
        "ünïcode",
        "a" * 300,
    ]
)
leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    interesting_text,
)
value = st.recursive(
    leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def all_paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, item in node.items():
            out += all_paths(item, (*prefix, key))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            out += all_paths(item, (*prefix, index))
    return out


def get(node: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        node = node[part]
    return node


@st.composite
def mutated_config(draw: st.DrawFn) -> Any:
    data = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 4))):
        paths = all_paths(data)
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["delete", "replace", "insert", "swap", "duplicate"]))
        if not path:
            if op == "replace":
                data = draw(value)
            continue
        parent = get(data, path[:-1])
        key = path[-1]
        if op == "delete":
            del parent[key]
        elif op == "replace":
            parent[key] = draw(value)
        elif op == "insert" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=10))] = draw(value)
        elif op == "swap":
            other = draw(st.sampled_from(paths))
            with contextlib.suppress(KeyError, IndexError, TypeError):
                parent[key] = copy.deepcopy(get(data, other))
        elif op == "duplicate" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[key]))
        if not isinstance(data, dict):
            break
    return data


@settings(
    max_examples=300,  # ~45 s here; the same 300 configs every run
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=mutated_config(), as_json=st.booleans(), force=st.booleans())
def test_mutated_configs_never_crash(data: Any, as_json: bool, force: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cluster.yaml"
        path.write_text(yaml.safe_dump(data, allow_unicode=True))
        args = ["validate", str(path)] + (["--json"] if as_json else []) + (["--force"] if force else [])
        result = runner.invoke(app, args)
    assert_handled(result)


def assert_handled(result: Result) -> None:
    """The CLI ended on purpose: a known exit code, and no unexpected exception behind a one-line message."""
    assert result.exit_code in (0, 1, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert INTERNAL_ERROR not in result.output, result.output


@settings(max_examples=200, derandomize=True, database=None, deadline=None)
@given(text=st.text(max_size=200))
def test_arbitrary_text_never_crashes(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cluster.yaml"
        path.write_text(text)
        result = runner.invoke(app, ["validate", str(path)])
    assert_handled(result)


def test_an_unexpected_exception_would_be_seen(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The check above can fail: an exception the CLI did not anticipate prints the marker it looks for."""
    from ai_how.cli import config_cmds

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(config_cmds, "check_file", broken)
    path = tmp_path / "cluster.yaml"
    path.write_text(LOCAL.read_text())
    result = runner.invoke(app, ["validate", str(path)])
    assert INTERNAL_ERROR in result.output
    with pytest.raises(AssertionError):
        assert_handled(result)
