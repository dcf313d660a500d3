"""The rich console every command prints through (tables, progress bars), at the bottom of the command modules:
`progress` and `common` use it, it uses neither."""
from __future__ import annotations

import sys


def console(stderr: bool = False):
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Piped output (logs, CI, files) is not wrapped at 80 columns: tables stay one line per row.
    width = None if stream.isatty() else 160
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=width, markup=False, emoji=False)
