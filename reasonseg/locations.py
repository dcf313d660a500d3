"""Whether a name given for a data source is a local path or a Hugging Face Hub dataset id, and the error for a
path that does not exist.

A name is a path when it starts with `./`, `../`, `/` or `~`, is `.` or `..`, has a first part that exists as a
local folder, or is not of the form `owner/name`. Only an `owner/name` (or `hf://datasets/owner/name`) that
matches nothing local is a Hub id: a mistyped `rs/relase` beside an existing `rs/` is reported as a missing path
with a "did you mean" from its folder, never as a dataset to download.
"""
from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

from .errors import DatasetError

HUB_ID = re.compile(r"^(?:hf:/+datasets/)?([A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)$")  # Path() folds "//"
_PATH_PREFIXES = ("./", "../", "/", "~", ".\\", "..\\")


def hub_id(name: str | os.PathLike) -> str | None:
    """The `owner/name` that `name` stands for when it is a Hub dataset id rather than a local path; else None."""
    text = os.fspath(name)
    if text in (".", "..") or text.startswith(_PATH_PREFIXES) or Path(text).exists():
        return None
    match = HUB_ID.match(text)
    if match is None:
        return None
    first = Path(text).parts[0]
    return None if first != "hf:" and Path(first).is_dir() else match.group(1)


def missing_path_error(name: str | os.PathLike, what: str = "release folder") -> DatasetError:
    """`name` reported as a path that does not exist, with the closest name in the deepest folder that does."""
    close = close_path(name)
    # No `path=`: the message names it, and the CLI adds no second "did you mean" of its own.
    return DatasetError(f"{os.fspath(name)}: {what} not found",
                        hint=f"did you mean {close}?" if close else "check the path")


def close_path(name: str | os.PathLike) -> Path | None:
    """`name` with its first missing part replaced by the closest name in the folder above it; None when no name
    there is close."""
    path = Path(os.path.expanduser(os.fspath(name)))
    parts = path.parts
    for depth in range(len(parts) - 1, -1, -1):
        parent = Path(*parts[:depth]) if depth else Path(".")
        if not parent.is_dir():
            continue
        try:
            names = sorted(entry.name for entry in os.scandir(parent) if not entry.name.startswith("."))
        except OSError:
            return None
        close = difflib.get_close_matches(parts[depth], names, n=1, cutoff=0.6)
        return Path(*parts[:depth], close[0], *parts[depth + 1:]) if close else None
    return None
