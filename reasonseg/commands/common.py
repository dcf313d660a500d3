"""Shared helpers of the command-line modules: console output and tables.

Everything printed here is text, never rich markup: method names, folder names, sample ids and error messages come
from users and files, and a `[/x]` in one of them must print as written (not crash, not vanish); control and
format characters in them are shown as escapes (`reasonseg.text`).
"""
from __future__ import annotations

import inspect
from typing import Literal

from typer.core import TyperArgument, TyperOption

from .console import console
from .progress import progress

__all__ = ["HELP_OPTION_NAMES", "EmptyUnion", "Missing", "Precision", "Protocol", "RulesChoice", "RulesName",
           "console", "polish_help", "print_table", "progress", "reflow_help_texts"]

HELP_OPTION_NAMES = ["-h", "--help"]

# The choices of options shared by several commands (typer shows a Literal as a choice list and checks it).
Protocol = Literal["lisa", "all-texts"]
EmptyUnion = Literal["one", "zero", "skip"]
Precision = Literal["bf16", "fp16", "fp32"]
RulesName = Literal["lisa", "x-sam", "visionreasoner", "seg-zero", "mmdet-refseg"]   # metrics.rules.PROFILES
RulesChoice = Literal["lisa", "x-sam", "visionreasoner", "seg-zero", "mmdet-refseg", "all"]
Missing = Literal["error", "empty", "skip", "penalty"]
PROTOCOL_HELP = "lisa (text[0] per image, the paper) or all-texts"
RULES_HELP = ("whose scoring rules: lisa (the reference, default), x-sam, visionreasoner, seg-zero, mmdet-refseg "
              "(docs/protocol.md); --protocol, --empty-union and --missing override their axes")
SPLIT_HELP = "val, test, train, or joined such as train_val"


def print_table(header: list[str], rows: list[list[str]], title: str | None = None) -> None:
    from rich.table import Table
    from rich.text import Text

    from ..text import display_line, display_text

    # Text objects: the console's markup=False does not reach a table's title, headers and cells. Each is shown
    # escaped and capped (display_text): method and team names come from uploads and files.
    table = Table(title=Text(display_line(title)) if title is not None else None, show_lines=False)
    for i, name in enumerate(header):
        table.add_column(Text(display_text(name)), justify="left" if i == 0 else "right", no_wrap=True)
    for row in rows:   # a cell's own line breaks (a CI under its value) stay breaks; each line is escaped
        table.add_row(*(Text("\n".join(display_text(line) for line in cell.split("\n"))) for cell in row))
    console().print(table)


class _Argument(TyperArgument):
    """A positional shown in the usage line as click shows it: DATA, [DATA] when optional, DATA... when many."""

    def _usage_display_name(self) -> str:
        name = self.metavar or self.name.upper()
        name = name if self.required else f"[{name}]"
        return name + ("..." if self.nargs != 1 else "")


def reflow(text: str | None) -> str | None:
    """A docstring as help text: each paragraph one line (the terminal wraps it), rich markup shown as written.

    A paragraph that starts with a line holding only `\\b` (click's convention) keeps its line breaks.
    """
    if not text:
        return text
    from rich.markup import escape

    paragraphs = []
    for paragraph in inspect.cleandoc(text).partition("\f")[0].split("\n\n"):
        if paragraph.startswith("\b\n"):
            paragraphs.append(paragraph[2:])
        else:
            paragraphs.append(" ".join(paragraph.split()))
    return escape("\n\n".join(p for p in paragraphs if p))


def polish_help(command) -> None:
    """Give every command of the tree the parameters click users expect: positionals shown as `DATA`, no `<bool>`
    type beside flags. The help texts are reflowed by `reflow_help_texts`, only when help is to be shown."""
    # The help option is made on first use; made here (and kept by the command) so it is a flag like the others.
    help_option = command.get_help_option(command.context_class(command, help_option_names=HELP_OPTION_NAMES))
    for param in [*command.params, *([help_option] if help_option is not None else [])]:
        if isinstance(param, TyperArgument):
            if param.metavar is None:
                param.metavar = param.name.upper()
            param.__class__ = _Argument
        elif isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""
    for sub in getattr(command, "commands", {}).values():
        polish_help(sub)


def reflow_help_texts(command) -> None:
    """Reflow the help of every command of the tree and of its parameters (shown as written, never parsed as
    markup). Done only before help is shown: it costs a scoring run a fifth of its start-up."""
    command.help = reflow(command.help)
    for param in [*command.params, *([command._help_option] if getattr(command, "_help_option", None) else [])]:
        if getattr(param, "help", None):
            param.help = reflow(param.help)
    for sub in getattr(command, "commands", {}).values():
        reflow_help_texts(sub)
