"""Output folders: the one rule every command that writes a folder follows.

A folder that holds anything is refused unless the user passed --overwrite. Overwriting replaces only what the
command itself writes: each command names its outputs (top-level names or glob patterns), and only entries matching
those names are removed; everything else in the folder (a .git, the user's notes, another tool's files) stays.
Commands that build in a temporary folder move each finished entry into place, so a failed run leaves the previous
outputs as they were.
"""
from __future__ import annotations

import fnmatch
import os
import secrets
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from .errors import OutputError, ReasonSegError

TEMP_PREFIX = ".reasonseg-tmp-"


def _owned(name: str, outputs: Sequence[str]) -> bool:
    return name.startswith(TEMP_PREFIX) or any(fnmatch.fnmatchcase(name, pattern) for pattern in outputs)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def check_output_dir(out: str | os.PathLike, overwrite: bool, option: str = "--out",
                     error: type[ReasonSegError] = OutputError) -> Path:
    """Refuse `out` when it is a file, or a folder holding anything while `overwrite` is false. `error` is the typed
    error of the calling stage (OutputError by default)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise error("is a file, not a folder", path=str(out), field=option, hint=f"choose a folder for {option}")
    if out.is_dir() and not overwrite and any(out.iterdir()):
        raise error("output folder is not empty", path=str(out),
                    hint=f"choose a new {option}, or pass --overwrite to replace this command's outputs in it")
    return out


def clear_outputs(out: Path, outputs: Sequence[str], keep: Path | None = None) -> None:
    """Remove the entries of `out` that match `outputs` (and temp folders of killed runs), except `keep`."""
    if out.is_dir():
        for entry in sorted(out.iterdir()):
            if _owned(entry.name, outputs) and entry != keep:
                _remove(entry)


def prepare_output_dir(out: str | os.PathLike, overwrite: bool, outputs: Sequence[str],
                       option: str = "--out") -> Path:
    """For commands that write in place: check `out`, remove this command's previous outputs, create it."""
    out = check_output_dir(out, overwrite, option)
    clear_outputs(out, outputs)
    out.mkdir(parents=True, exist_ok=True)
    return out


def place(tmp: Path, out: Path, outputs: Sequence[str]) -> None:
    """Move the finished entries of `tmp` into `out`: one rename when `out` does not exist, else this command's
    previous outputs (`outputs`, plus every name `tmp` holds) are removed and each entry is moved in."""
    if not out.exists():
        out.absolute().parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, out)
        return
    clear_outputs(out, [*outputs, *(entry.name for entry in tmp.iterdir())], keep=tmp)
    for entry in sorted(tmp.iterdir()):
        os.replace(entry, out / entry.name)
    tmp.rmdir()


def temp_dir_for(out: Path) -> Path:
    """A new empty temporary folder for building `out`: beside it when `out` does not exist (so `place` is one
    rename), else inside it (so `--out .` works and entries move within one file system)."""
    if out.exists():
        tmp = out / f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    else:
        out.absolute().parent.mkdir(parents=True, exist_ok=True)
        tmp = out.absolute().parent / f"{TEMP_PREFIX}{out.name}-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    return tmp


@contextmanager
def staged_output_dir(out: str | os.PathLike, overwrite: bool, outputs: Sequence[str], option: str = "--out",
                      error: type[ReasonSegError] = OutputError) -> Iterator[Path]:
    """Yield a temporary folder to write into; when the block ends without an error its entries replace this
    command's outputs in `out` (`place`). On an error nothing in `out` changes."""
    out = check_output_dir(out, overwrite, option, error)
    tmp = temp_dir_for(out)
    try:
        yield tmp
        place(tmp, out, outputs)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
