"""The top-level ``edgeops`` group, which imports a command's module only when that command runs.

Building every command up front meant importing ten modules and turning some forty functions into Click
commands (signature inspection, type hints) for each run, about as long as importing Typer itself; a command
needs only its own. ``edgeops --help`` lists the commands from the one-line summaries in ``SUBCOMMANDS``
without importing them.
"""

import importlib
from typing import Any, ClassVar

import typer
from typer import _click
from typer.core import TyperCommand, TyperGroup

from edgeops.cli.heap import long_lived_imports


def load_command(name: str, target: str, summary: str | None) -> _click.Command:
    """The Click command for ``module`` (its ``app``, a Typer group whose help is ``summary``) or
    ``module:function`` (one command: its docstring is the help, ``summary`` the line in a listing)."""
    module_name, _, attr = target.partition(":")
    with long_lived_imports():
        module = importlib.import_module(module_name)
    if attr:
        single = typer.Typer(add_completion=False)
        single.command(name, short_help=summary)(getattr(module, attr))
        command = typer.main.get_command(single)
    else:  # a group even with one command (``pipeline run``), as ``add_typer`` made it
        command = typer.main.get_group(module.app)
        command.help = summary or command.help
    command.name = name
    return command


class LazyGroup(TyperGroup):
    """``entries``: name → (target, summary), in the order ``edgeops --help`` lists them. An entry without a
    summary (None) is imported even to be listed, for its help."""

    entries: ClassVar[dict[str, tuple[str, str | None]]] = {}

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self._listing = False

    def list_commands(self, ctx: _click.Context) -> list[str]:
        return [*self.commands, *(name for name in self.entries if name not in self.commands)]

    def get_command(self, ctx: _click.Context, cmd_name: str) -> _click.Command | None:
        if cmd_name in self.commands or cmd_name not in self.entries:
            return self.commands.get(cmd_name)
        target, summary = self.entries[cmd_name]
        if self._listing and summary:
            return TyperCommand(name=cmd_name, help=summary)  # a help line only: nothing imported
        command = self.commands[cmd_name] = load_command(cmd_name, target, summary)
        return command

    def format_help(self, ctx: _click.Context, formatter: _click.HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False

    def resolve_command(self, ctx: _click.Context, args: list[str]) -> tuple[str | None, _click.Command | None,
                                                                               list[str]]:
        """Typer's own suggests from the commands already built; ours are built on demand."""
        try:
            return self._click_resolve_command(ctx, args)
        except _click.exceptions.UsageError as exc:
            from difflib import get_close_matches  # only for a typo (difflib imports heapq: ~1 ms)

            matches = get_close_matches(args[0], self.list_commands(ctx)) if args else []
            if matches:
                exc.message = exc.message.rstrip(".") + ". Did you mean " + ", ".join(map(repr, matches)) + "?"
            raise
