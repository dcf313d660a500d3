"""The `cache` commands: see and clear what reasonseg keeps between runs (reasonseg/cache.py)."""
from __future__ import annotations

from typing import Literal

import typer

from .common import print_table

cache_app = typer.Typer(no_args_is_help=True, help="The cache reasonseg keeps between runs: see it, clear it.")
Kind = Literal["all", "ground-truth", "published", "calibration"]


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f}"


@cache_app.command("info")
def cache_info():
    """List the cache's entries: split ground truth, releases restored from published folders, CLIPSeg
    calibrations, with their sizes.

    Example: reasonseg cache info
    """
    from ..cache import KINDS, cache_entries, default_cache_dir

    entries = cache_entries()
    rows = [[kind, str(sum(e.kind == kind for e in entries)),
             _megabytes(sum(e.bytes for e in entries if e.kind == kind))] for kind in KINDS]
    print_table(["kind", "entries", "MB"], rows, title=f"cache: {default_cache_dir()}")


@cache_app.command("clear")
def cache_clear(kind: Kind = typer.Option("all", "--kind", help="clear only this kind")):
    """Remove cached entries (only the names reasonseg writes; anything else in the folder is left alone). Each is
    rebuilt when next needed.

    Example: reasonseg cache clear --kind published
    """
    from ..cache import KINDS, clear_cache, default_cache_dir

    removed = clear_cache(kinds=KINDS if kind == "all" else (kind,))
    typer.echo(f"removed {len(removed)} entries ({_megabytes(sum(e.bytes for e in removed))} MB) from "
               f"{default_cache_dir()}")


def register(app: typer.Typer, build_app: typer.Typer) -> None:
    """Add this stage's commands to the main app."""
    app.add_typer(cache_app, name="cache")
