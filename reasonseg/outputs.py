"""Output folders: the one rule every command that writes a folder follows.

A folder that holds anything is refused unless the user passed --overwrite. Overwriting replaces only what the
command itself writes: each command names its outputs (top-level names or glob patterns), and only entries matching
those names are removed; everything else in the folder (a .git, the user's notes, another tool's files) stays.
Commands that build in a temporary folder move each finished entry into place, so a failed run leaves the previous
outputs as they were.
"""
from __future__ import annotations

import errno
import fnmatch
import os
import secrets
import shutil
import sys
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


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step (Linux renameat2 with RENAME_EXCHANGE); False where that is not
    available (another system, an old kernel, a file system without it)."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_cwd, exchange = -100, 2
    if renameat2(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _swap_in(entry: Path, target: Path) -> None:
    """Put `entry` at `target`; an old `target` ends up at `entry`'s path. Atomic where the system can exchange
    two paths, or when a file replaces a file; else the old one is renamed aside just before."""
    if not os.path.lexists(target):
        os.replace(entry, target)
    elif not _exchange(entry, target):
        aside = entry.with_name(entry.name + ".old")
        if target.is_dir() and not target.is_symlink():
            os.replace(target, aside)
        os.replace(entry, target)


def place(tmp: Path, out: Path, outputs: Sequence[str]) -> None:
    """Move the finished entries of `tmp` into `out`: one rename when `out` does not exist, else each entry is
    swapped with its previous version, and this command's outputs (`outputs`) that the new run did not write are
    removed. The names listed in `outputs` are swapped last, in their order (the export's index.html comes last):
    a run killed midway leaves every entry whole, old or new, and `tmp` (holding the old ones) for the next run
    to clear."""
    if not out.exists():
        out.absolute().parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, out)
        return
    last = {name: n for n, name in enumerate(outputs)}
    entries = sorted(tmp.iterdir(), key=lambda entry: (last.get(entry.name, -1), entry.name))
    for entry in entries:
        _swap_in(entry, out / entry.name)
    written = {entry.name for entry in entries}
    for entry in sorted(out.iterdir()):
        if _owned(entry.name, outputs) and entry.name not in written and entry != tmp:
            _remove(entry)
    shutil.rmtree(tmp)


def _sibling_name(out: Path) -> Path:
    """A fresh temporary folder name beside `out` (not created)."""
    return out.absolute().parent / f"{TEMP_PREFIX}{out.name}-{os.getpid()}-{secrets.token_hex(4)}"


def temp_dir_for(out: Path) -> Path:
    """A new empty temporary folder for building `out`: beside it when `out` does not exist (so `place` is one
    rename), else inside it (so `--out .` works and entries move within one file system)."""
    if out.exists():
        tmp = out / f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}"
    else:
        out.absolute().parent.mkdir(parents=True, exist_ok=True)
        tmp = _sibling_name(out)
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


def _sibling_with_links(out: Path, outputs: Sequence[str]) -> Path | None:
    """A new folder beside `out` holding hard links to every entry of `out` that this command does not own (the
    user's files, recreated without a byte copied); None where that cannot be done (`out` is the current folder or
    a mount point, a file system without hard links, no room)."""
    if out.resolve() == Path.cwd().resolve() or os.path.ismount(out):
        return None
    tmp = _sibling_name(out)
    try:
        tmp.mkdir()
        shutil.copymode(out, tmp)
        for entry in out.iterdir():
            if _owned(entry.name, outputs):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.copytree(entry, tmp / entry.name, symlinks=True, copy_function=os.link)
            elif entry.is_symlink():
                os.symlink(os.readlink(entry), tmp / entry.name)
            else:
                os.link(entry, tmp / entry.name)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        return None
    return tmp


@contextmanager
def staged_whole_output_dir(out: str | os.PathLike, overwrite: bool, outputs: Sequence[str],
                            option: str = "--out", error: type[ReasonSegError] = OutputError) -> Iterator[Path]:
    """Like `staged_output_dir`, but a finished run replaces an existing `out` whole, in one exchange of two
    folders: a reader (or a kill) sees the old folder or the new one, never a mix of their entries. The user's
    entries are hard-linked into the new folder first, so they stay as they are. Where the system cannot link or
    exchange, the entries are swapped one by one (`place`)."""
    out = check_output_dir(out, overwrite, option, error)
    tmp = _sibling_with_links(out, outputs) if out.is_dir() else None
    if tmp is None:
        with staged_output_dir(out, overwrite, outputs, option, error) as folder:
            yield folder
        return
    try:
        yield tmp
        if not _exchange(tmp, out):
            for entry in list(tmp.iterdir()):
                if not _owned(entry.name, outputs):
                    _remove(entry)      # the links to the user's files: `out` keeps the originals
            place(tmp, out, outputs)
            return
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(tmp)      # the old folder, now at tmp's path (the user's files live on through their links)

