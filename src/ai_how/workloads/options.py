"""A workload's options, declared once: the job's argparse parser and the CLI's ``--set`` checks come from here.

Each workload module lists its ``OPTIONS`` (name, type, range or choices, default, help). The
job builds its parser with :func:`build_parser`; ``ai-how pipeline run --set KEY=VALUE`` checks
every value with :meth:`Option.parse` before a run exists, so both read the same declaration.
This module stays light (no numpy/torch): the CLI imports it.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

OptionType = Literal["int", "float", "str", "path"]
_NOUN = {"int": "an integer", "float": "a number", "str": "a string", "path": "a path"}


class OptionError(ValueError):
    """A value that does not fit its declared option (the message names the option and what it accepts)."""


@dataclass(frozen=True)
class Option:
    """One workload option: ``--set NAME=VALUE`` in the CLI, ``--name-with-dashes VALUE`` in the job."""

    name: str  # python name, e.g. "batch_size"
    type: OptionType
    default: Any
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def accepts(self) -> str:
        """What a valid value looks like, e.g. ``an integer (1..1000)`` or ``one of: a, b``."""
        if self.choices:
            return f"one of: {', '.join(self.choices)}"
        noun = _NOUN[self.type]
        if self.minimum is None and self.maximum is None:
            return noun
        low = "" if self.minimum is None else _number(self.minimum)
        high = "" if self.maximum is None else _number(self.maximum)
        return f"{noun} ({low}..{high})"

    def parse(self, text: str) -> Any:
        """The typed value of ``text``; raises OptionError naming the option and what it accepts."""
        problem = f"{self.name} must be {self.accepts()}"
        if self.choices:
            if text not in self.choices:
                raise OptionError(problem)
            return text
        if self.type == "str":
            return text
        if self.type == "path":
            if not text.strip():
                raise OptionError(problem)
            return Path(text).expanduser()
        try:
            value: float = int(text) if self.type == "int" else float(text)
        except ValueError:
            raise OptionError(problem) from None
        if math.isnan(value) or math.isinf(value):
            raise OptionError(problem)
        if (self.minimum is not None and value < self.minimum) or (
            self.maximum is not None and value > self.maximum
        ):
            raise OptionError(problem)
        return value

    def render(self, value: Any) -> str:
        """The value as the job's command line carries it (paths made absolute)."""
        if isinstance(value, Path):
            return str(value if value.is_absolute() else Path.cwd() / value)
        return str(value)

    def argparse_type(self, text: str) -> Any:
        try:
            return self.parse(text)
        except OptionError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(value)


def find(options: Sequence[Option], key: str) -> Option | None:
    """The option a ``--set`` key names (``max_steps`` and ``max-steps`` alike)."""
    wanted = key.strip().replace("-", "_")
    return next((o for o in options if o.name == wanted), None)


def build_parser(prog: str, description: str | None, options: Sequence[Option]) -> argparse.ArgumentParser:
    """The job's parser: ``--output DIR`` plus one flag per declared option."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--output", type=Path, required=True)
    for option in options:
        parser.add_argument(
            option.flag,
            dest=option.name,
            type=option.argparse_type,
            default=option.default,
            help=f"{option.help} ({option.accepts()}; default {option.default})",
        )
    return parser


def to_argv(options: Sequence[Option], values: Mapping[str, Any]) -> list[str]:
    """``--flag value`` pairs for ``values``, in declaration order (so equal settings give equal argv)."""
    argv: list[str] = []
    for option in options:
        if option.name in values:
            argv += [option.flag, option.render(values[option.name])]
    return argv


def from_argv(options: Sequence[Option], argv: Sequence[str]) -> dict[str, Any]:
    """The typed values of recorded ``--flag value`` pairs (unknown or unparsable ones kept as text)."""
    values: dict[str, Any] = {}
    for flag, text in zip(argv[::2], argv[1::2], strict=False):
        option = find(options, flag.removeprefix("--"))
        if option is None:
            values[flag.removeprefix("--").replace("-", "_")] = text
            continue
        try:
            values[option.name] = option.parse(text)
        except OptionError:
            values[option.name] = text
    return values
