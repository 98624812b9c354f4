"""Errors every layer raises and the CLI turns into one-line messages and exit codes."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Process exit codes shared by every command."""

    OK = 0
    FAILED = 1  # the input was read but is invalid, or the operation failed
    UNREADABLE = 2  # the input could not be read at all (missing file, bad YAML, bad usage)
    INTERRUPTED = 130


class AiHowError(Exception):
    """An expected failure with a message meant for the user (no traceback)."""

    exit_code: ExitCode = ExitCode.FAILED

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return f"{self.message} Fix: {self.fix}" if self.fix else self.message


class UnreadableInputError(AiHowError):
    """A file that cannot be read or parsed (exit 2)."""

    exit_code = ExitCode.UNREADABLE


class StateError(AiHowError):
    """The state store is unusable (wrong format version, corrupt file, lock failure)."""
