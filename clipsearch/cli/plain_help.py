"""Plain help. Commands are listed with their whole summary, wrapped (`WholeSummaries`, the
class of every group), not cut at the terminal's width with "...". Values have plain names:
`--image PATH`, `-k, --top INTEGER`, `QUERY`, not typer's type tags (`<path>`,
`<list[Path]>`, `<str>`); `set_metavars` names them over the whole app, after every command
module has registered its commands (an option that names its own metavar keeps it).

typer shows an option's metavar instead of its type tag, but an argument's type tag beside
its metavar; `TyperArgument.display_type_rich` is given the option's rule (the pinned
typer's help is checked by tests/test_cli_help.py)."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
import typer.core
from typer.models import ArgumentInfo, OptionInfo

#: The value name shown for each type (a list shows its element's: the option repeats).
NAMES: dict[Any, str] = {str: "TEXT", int: "INTEGER", float: "NUMBER", Path: "PATH"}


def set_metavars(app: typer.Typer) -> None:
    """Give every option and argument of `app` (and of its sub-apps) a plain value name."""
    _arguments_show_their_metavar()
    for command in app.registered_commands:
        if command.callback is not None:
            _set(command.callback)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            set_metavars(group.typer_instance)


def _set(callback: Callable[..., Any]) -> None:
    hints = typing.get_type_hints(callback)
    for name, parameter in inspect.signature(callback).parameters.items():
        info = parameter.default
        if not isinstance(info, OptionInfo | ArgumentInfo) or info.metavar is not None:
            continue
        kind = _bare(hints.get(name))
        if kind is bool:
            continue  # a flag takes no value
        if isinstance(info, ArgumentInfo):
            info.metavar = name.upper()
        elif kind in NAMES:
            info.metavar = NAMES[kind]


def _bare(annotation: Any) -> Any:
    """`T` of `T`, `T | None`, `list[T]` and `list[T] | None`."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is list:
        return _bare(args[0])
    if len(args) == 1 and typing.get_origin(annotation) is not None:
        return _bare(args[0])
    return annotation


def _arguments_show_their_metavar() -> None:
    argument = typer.core.TyperArgument
    if getattr(argument, "_clipsearch_metavar", False) or not hasattr(
        argument, "display_type_rich"
    ):
        return  # done, or a typer that shows no type tags beside arguments
    shown = argument.display_type_rich

    def display_type_rich(self: typer.core.TyperArgument, ctx: Any) -> str | None:
        return None if self.metavar is not None else shown(self, ctx)

    argument.display_type_rich = display_type_rich  # type: ignore[method-assign,assignment]
    argument._clipsearch_metavar = True  # type: ignore[attr-defined]


class WholeSummaries(typer.core.TyperGroup):
    """A group whose `--help` lists each command with its whole first paragraph."""

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=400)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)
