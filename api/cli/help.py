"""How ``--help`` reads: Rich panels on a terminal, plain text everywhere else.

On a terminal, Typer draws the help with Rich (panels, colours, Markdown). In a pipe,
a file or a test's capture, the same help is written as plain text with the same
sections, in the same order: one section per ``rich_help_panel`` of commands and
options. Rendering with Rich costs about 0.1 s of CPU per call (importing Rich,
its Markdown parser and its traceback module, then laying the panels out), more
than the rest of ``eraser --help``; a script or ``eraser ... --help | grep`` gets
the text at once, without box-drawing characters.

Every command and group of the tree uses these classes (``cls=Command``,
``cls=Group``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING

from typer.core import TyperCommand, TyperGroup

if TYPE_CHECKING:
    from typer._click import Command as ClickCommand
    from typer._click import Context, HelpFormatter, Parameter
else:
    ClickCommand = object  # the mixin's methods reach Typer's classes through super()

#: The sections of arguments, options and commands that name no panel.
ARGUMENTS = "Arguments"
OPTIONS = "Options"
COMMANDS = "Commands"
#: A command's first sentence is shown whole (wrapped), as in the Rich panels.
SHORT_HELP = 300


def on_terminal() -> bool:
    """Whether the help goes to a terminal (where Rich draws it)."""
    return sys.stdout.isatty()


def _write_sections(
    formatter: HelpFormatter, rows: Iterable[tuple[str, tuple[str, str]]], first: str
) -> None:
    """Write ``(section, (term, text))`` rows: the ``first`` section, then the others
    in the order they first appear (as the Rich panels are)."""
    sections: dict[str, list[tuple[str, str]]] = {first: []}
    for section, row in rows:
        sections.setdefault(section, []).append(row)
    for title, entries in sections.items():
        if entries:
            with formatter.section(title):
                formatter.write_dl(entries)


def _parameter_rows(
    params: Iterable[Parameter], ctx: Context, kind: str, default: str
) -> Iterable[tuple[str, tuple[str, str]]]:
    for param in params:
        record = param.get_help_record(ctx)
        if record is not None and param.param_type_name == kind:
            yield getattr(param, "rich_help_panel", None) or default, record


def _flags_without_pydantic(params: Iterable[Parameter]) -> None:
    """Let a group's boolean flags (``--help``, ``--install-completion``, ...) take
    their value as it is. Typer converts every parameter's value through a pydantic
    adapter it builds on first use, a flag's absent value included: for a group that
    costs importing pydantic (about 0.06 s) before ``eraser worker --help`` can answer.
    A flag's value is already a bool (or None); anything else is still refused."""
    try:
        from typer._coercion import PassThroughRuntimeParam  # noqa: PLC0415
        from typer.core import _TyperParameter  # noqa: PLC0415
    except ImportError:  # a Typer without these internals: its own conversion stays
        return
    for param in params:
        if (
            isinstance(param, _TyperParameter)
            and param.type_descriptor.annotation is bool
            and getattr(param, "_runtime_param", False) is None
        ):
            param._runtime_param = PassThroughRuntimeParam(
                parameter_info=param.type_descriptor.parameter_info, annotation=bool
            )


class _PlainOutsideTerminal(ClickCommand):
    """Rich help on a terminal (the next class's), plain text elsewhere."""

    def format_help(self, ctx: Context, formatter: HelpFormatter) -> None:
        if on_terminal():
            super().format_help(ctx, formatter)
            return
        self.format_usage(ctx, formatter)
        self.format_help_text(ctx, formatter)
        self.format_options(ctx, formatter)
        self.format_epilog(ctx, formatter)

    def format_options(self, ctx: Context, formatter: HelpFormatter) -> None:
        params = self.get_params(ctx)
        _write_sections(formatter, _parameter_rows(params, ctx, "argument", ARGUMENTS), ARGUMENTS)
        _write_sections(formatter, _parameter_rows(params, ctx, "option", OPTIONS), OPTIONS)


class Command(_PlainOutsideTerminal, TyperCommand):
    """A command whose plain help groups its options by panel."""


class Group(_PlainOutsideTerminal, TyperGroup):
    """A group whose plain help lists its commands by panel."""

    def format_options(self, ctx: Context, formatter: HelpFormatter) -> None:
        super().format_options(ctx, formatter)
        self.format_commands(ctx, formatter)

    def parse_args(self, ctx: Context, args: list[str]) -> list[str]:
        _flags_without_pydantic(self.get_params(ctx))
        return super().parse_args(ctx, args)

    def format_commands(self, ctx: Context, formatter: HelpFormatter) -> None:
        commands = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                commands.append((name, command))
        if not commands:
            return
        rows = (
            (
                getattr(command, "rich_help_panel", None) or COMMANDS,
                (name, command.get_short_help_str(SHORT_HELP)),
            )
            for name, command in commands
        )
        _write_sections(formatter, rows, COMMANDS)
