"""The CLI reference: every command and sub-command of ``ai-how`` with its help, arguments and options.

Read from the click command that typer builds (``typer.main.get_command``), so it lists exactly what
``ai-how ... --help`` offers; hidden commands and options are left out.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import PurePath

import click
import typer

from ai_how.docs_gen.markdown import anchor, cell, code, escape, table


@dataclass(frozen=True)
class CommandPage:
    path: list[str]  # ["ai-how", "pipeline", "run"]
    command: click.Command
    context: click.Context

    @property
    def name(self) -> str:
        return " ".join(self.path)


def commands(root: click.Command, name: str = "ai-how") -> list[CommandPage]:
    """The root and every visible sub-command, depth first in the order ``--help`` lists them."""
    found: list[CommandPage] = []

    def visit(command: click.Command, path: list[str], parent: click.Context | None) -> None:
        context = click.Context(command, info_name=path[-1], parent=parent)
        found.append(CommandPage(path, command, context))
        if isinstance(command, click.Group):
            for sub_name in command.list_commands(context):
                sub = command.get_command(context, sub_name)
                if sub is not None and not sub.hidden:
                    visit(sub, [*path, sub_name], context)

    visit(root, [name], None)
    return found


def help_text(text: str | None) -> str:
    """A command's help as Markdown paragraphs (click's ``\\b`` no-rewrap markers dropped)."""
    if not text:
        return ""
    lines = [line for line in inspect.cleandoc(text).splitlines() if line.strip() != "\b"]
    return escape("\n".join(lines))


def _type_text(param: click.Parameter) -> str:
    if isinstance(param, click.Option) and param.is_flag:
        return "flag"
    kind = param.type
    if isinstance(kind, click.Choice):
        text = "one of " + ", ".join(code(str(choice)) for choice in kind.choices)
    elif isinstance(kind, click.IntRange | click.FloatRange):
        base = "integer" if isinstance(kind, click.IntRange) else "number"
        text = f"{base} {code(kind._describe_range())}"
    elif isinstance(kind, click.Path):
        text = "path"
    else:
        text = {"text": "text", "integer": "integer", "float": "number", "boolean": "boolean"}.get(
            kind.name, kind.name
        )
    if getattr(param, "multiple", False) or param.nargs == -1:
        text += ", repeatable"
    return text


def _default_text(param: click.Parameter) -> str:
    if param.required:
        return "**required**"
    default = param.default
    if (
        callable(default)
        or default is None
        or (isinstance(param, click.Option) and param.show_default is False)
    ):
        return "—"
    if isinstance(param, click.Option) and param.is_flag and param.secondary_opts:
        return code(param.opts[0] if default else param.secondary_opts[0])
    if isinstance(param, click.Option) and param.is_flag:
        return "off" if not default else "on"
    if isinstance(default, PurePath):
        return code(str(default))
    if isinstance(default, list | tuple):
        return code(" ".join(str(item) for item in default)) if default else "—"
    return code(str(default))


def _metavar(param: click.Parameter) -> str:
    if param.metavar:
        return param.metavar
    kind = param.type
    if isinstance(kind, click.Path):
        return "PATH"
    if isinstance(kind, click.IntRange):
        return "INTEGER"
    if isinstance(kind, click.FloatRange):
        return "FLOAT"
    return kind.name.upper()


def _param_name(param: click.Parameter) -> str:
    if isinstance(param, click.Argument):
        return code(param.human_readable_name)
    names = " / ".join([*param.opts, *param.secondary_opts])
    if isinstance(param, click.Option) and not param.is_flag:
        names = f"{names} {_metavar(param)}"
    return code(names)


def _param_help(param: click.Parameter) -> str:
    text = escape(getattr(param, "help", None) or "")
    envvar = getattr(param, "envvar", None)
    if isinstance(envvar, str):
        text = f"{text} Environment variable: {code(envvar)}.".strip()
    return cell(text)


def render_command(page: CommandPage) -> list[str]:
    command, context = page.command, page.context
    lines = [f"## `{page.name}` {{#{anchor(page.name)}}}", ""]
    usage = " ".join([page.name, *command.collect_usage_pieces(context)])
    lines += ["```text", f"Usage: {usage}", "```", ""]
    body = help_text(command.help)
    if body:
        lines += [body, ""]
    params = [p for p in command.get_params(context) if not getattr(p, "hidden", False) and p.name != "help"]
    if params:
        rows = [[_param_name(p), _type_text(p), _default_text(p), _param_help(p)] for p in params]
        lines += table(["argument or option", "type", "default", "description"], rows)
        lines.append("")
    if isinstance(command, click.Group):
        rows = []
        for sub_name in command.list_commands(context):
            sub = command.get_command(context, sub_name)
            if sub is None or sub.hidden:
                continue
            full = f"{page.name} {sub_name}"
            summary = sub.get_short_help_str(limit=10_000)
            rows.append([f"[{code(full)}](#{anchor(full)})", cell(escape(summary))])
        lines += table(["command", "what it does"], rows)
        lines.append("")
    return lines


HEADER = """\
# CLI reference

<!-- Generated by `python -m ai_how.docs_gen` from `ai_how.cli.main.app`; do not edit by hand. -->

Every command of `ai-how`, as `ai-how COMMAND --help` shows it. The options of the root command
(`--state-dir`, `--debug`) go before the command: `ai-how --state-dir /srv/ai-how pipeline status`.
Bad input ends with one line naming the cause and its fix; exit codes: 0 success, 1 failed or invalid,
2 unreadable input or usage error.
"""


def render() -> str:
    from ai_how.cli.main import app

    lines = [HEADER]
    for page in commands(typer.main.get_command(app)):
        lines += render_command(page)
    return "\n".join(lines).rstrip() + "\n"
