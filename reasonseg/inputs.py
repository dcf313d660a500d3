"""Input paths checked before they are opened.

A named pipe or a device as an input blocks its reader forever (or streams without end), and a symlink loop fails
deep inside pathlib; either is refused here as one line naming the path. A missing path passes: each reader says
in its own words what it expected there.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from .errors import ReasonSegError

_SPECIAL = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
            (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def check_input(path: str | os.PathLike, what: str, error: type[ReasonSegError] = ReasonSegError,
                field: str | None = None) -> Path:
    """`path` unless it leads into a symlink loop or exists as something other than a regular file or folder."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise error(f"{what} is a symlink loop (a link that points back to itself)", path=str(path),
                        field=field, hint="point it at the real file or folder") from None
        return path
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return path
    kind = next((name for test, name in _SPECIAL if test(mode)), "a special file")
    raise error(f"{what} is {kind}, not a regular file or folder", path=str(path), field=field,
                hint="save it to a file first")


__all__ = ["check_input"]
