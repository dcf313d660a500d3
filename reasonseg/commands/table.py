"""`reasonseg table`: the paper's Table 1 from results files, as CSV, Markdown or LaTeX."""
from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer


class TableFormat(str, Enum):
    csv = "csv"
    markdown = "markdown"
    latex = "latex"


def register(app: typer.Typer, build_app: typer.Typer) -> None:
    """Add `table` to the main app."""

    @app.command()
    def table(results: list[Path] = typer.Argument(..., help="results JSON files (from `reasonseg score --out`), or "
                                                                 "drift JSON files (`score --rules all --out`)"),
              fmt: TableFormat = typer.Option(TableFormat.markdown, "--format", help="output format"),
              paper: bool = typer.Option(False, "--paper", help="add the paper's reported Table 1 rows"),
              ci: bool = typer.Option(False, "--ci", help="add the 95% bootstrap intervals to each cell"),
              allow_mixed: bool = typer.Option(False, "--allow-mixed", help="tabulate results under different "
                                               "scoring rules (each row marked with its rules)"),
              out: Path | None = typer.Option(None, "--out", help="write the table to this file instead of stdout")):
        """Table 1 of the paper (val; test short, long, overall; gIoU and cIoU ×100) from results files.

        One row per method; each results file fills the columns of its split. Oracles are marked, and so are
        rows scored under other rules than lisa; results under different rules (or, with --paper, under other
        rules than the paper's) are refused without --allow-mixed.

        Drift documents (`reasonseg score --rules all --out drift.json`) are rendered as the drift table: one row
        per scorer's rules.

        Example: reasonseg table gsam-val.json gsam-test.json lisa-val.json lisa-test.json --format latex --paper
        """
        from ..dataset import atomic_write_text
        from ..metrics.tables import results_table

        text = results_table(results, fmt.value, with_ci=ci, reported=paper, allow_mixed=allow_mixed)
        if out:
            atomic_write_text(out, text)
            typer.echo(f"wrote {out}")
        else:   # method names come from results files: a terminal gets their control characters as escapes
            from ..text import display_text

            typer.echo(display_text(text, None, keep="\t\n\r"), nl=False)
