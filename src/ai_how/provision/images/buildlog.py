"""An image build's log: every command of the build runs through it, and a failure names the log."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from ai_how.errors import AiHowError
from ai_how.procs import run_logged


class BuildLog:
    """Runs commands with their output appended to one log file (``ai_how.procs.run_logged``)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def start(self) -> None:
        """Begin a fresh log (a rebuild does not append to the previous attempt's)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("", encoding="utf-8")

    def note(self, text: str) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(f"# {text}\n")

    def run(
        self,
        cmd: Sequence[str],
        *,
        what: str,
        timeout_s: float = 600,
        on_line: Callable[[str], None] | None = None,
        check: bool = True,
    ) -> list[str]:
        """Run ``cmd``; return its output lines. With ``check``, a non-zero exit raises one line naming
        ``what`` and the log."""
        lines: list[str] = []

        def collect(line: str) -> None:
            lines.append(line)
            if on_line is not None:
                on_line(line)

        done = run_logged(cmd, log_path=self.path, timeout_s=timeout_s, on_line=collect)
        if check and done.returncode != 0:
            last = next((line.strip() for line in reversed(lines) if line.strip()), "")
            raise AiHowError(
                f"{what} failed ({cmd[0]} exited {done.returncode}{': ' + last if last else ''})",
                fix=f"see the build log {self.path}",
            )
        return lines
