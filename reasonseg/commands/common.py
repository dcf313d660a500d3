"""Shared helpers of the command-line modules: console output, tables, progress bars."""
from __future__ import annotations

import sys
from contextlib import contextmanager


def console(stderr: bool = False):
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Piped output (logs, CI, files) is not wrapped at 80 columns: tables stay one line per row.
    width = None if stream.isatty() else 160
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=width)


def print_table(header: list[str], rows: list[list[str]], title: str | None = None) -> None:
    from rich.table import Table

    table = Table(title=title, show_lines=False)
    for i, name in enumerate(header):
        table.add_column(name, justify="left" if i == 0 else "right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    console().print(table)


@contextmanager
def progress(description: str, total: int):
    """A progress bar on a terminal; silent otherwise. Yields `advance(n)`."""
    if not sys.stderr.isatty():
        yield lambda n=1: None
        return
    from rich.progress import Progress

    with Progress(console=console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total)
        yield lambda n=1: bar.advance(task, n)
