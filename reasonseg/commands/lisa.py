"""The `lisa` commands."""
from __future__ import annotations

import typer


def register(app: typer.Typer, build_app: typer.Typer) -> None:
    """Add this stage's commands to the main app (and to `reasonseg build` where they build data)."""
