"""Table 1 of the paper from results files, as CSV, Markdown or LaTeX, ready for a paper or a README.

Columns follow the paper: val, then test short / long / overall queries, each with gIoU and cIoU (×100, one
decimal). Splits nobody scored are left out; other splits (e.g. train) come last. The paper's own rows
(reasonseg/paper.py) can follow the measured ones, marked as reported.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import ResultsError
from .report import column_title, format_metric, table1_columns

FORMATS = ("csv", "markdown", "latex")
METRICS = (("giou", "gIoU"), ("ciou", "cIoU"))


@dataclass(frozen=True)
class Table:
    columns: list[tuple[str, str]]      # (split, group) pairs, each spanning gIoU and cIoU
    measured: list[list[str]]           # method, then gIoU and cIoU per column
    reported: list[list[str]]           # the paper's rows, same shape

    def column_titles(self) -> list[str]:
        return [column_title(split, group) for split, group in self.columns]


def _cells(groups_by_split: dict[str, dict], columns, with_ci: bool) -> list[str]:
    cells = []
    for split, group in columns:
        row = groups_by_split.get(split, {}).get(group)
        for metric, _ in METRICS:
            cells.append(format_metric(row, metric, with_ci) if row else "-")
    return cells


def table1_data(results: dict[str, dict[str, dict]], with_ci: bool = False, reported: bool = False) -> Table:
    """`results` maps a method label to split → results document (see `comparison.load_entries`)."""
    if not results:
        raise ResultsError("no results to tabulate")
    columns = table1_columns(results)
    measured = [[method, *_cells({s: d.get("groups", {}) for s, d in by_split.items()}, columns, with_ci)]
                for method, by_split in results.items()]
    paper = []
    if reported:
        from ..paper import PAPER_TABLE1

        for row in PAPER_TABLE1:
            groups = {split: row.groups(split) for split in ("val", "test")}
            # Reported numbers have no n and no CI: give format_metric a row it prints as is.
            groups = {s: {g: {**v, "n": 1} for g, v in gs.items()} for s, gs in groups.items()}
            paper.append([row.method, *_cells(groups, columns, False)])
    return Table(columns, measured, paper)


def _csv(table: Table) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["method", *(f"{t} {m}" for t in table.column_titles() for _, m in METRICS), "source"])
    for row in table.measured:
        writer.writerow([*row, "measured"])
    for row in table.reported:
        writer.writerow([*row, "reported"])
    return out.getvalue()


def _markdown_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|")


def _markdown(table: Table) -> str:
    header = ["method", *(f"{t} {m}" for t in table.column_titles() for _, m in METRICS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([":---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(_markdown_escape(c) for c in row) + " |" for row in table.measured]
    lines += ["| " + " | ".join([f"{_markdown_escape(row[0])} (reported)", *row[1:]]) + " |"
              for row in table.reported]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def _latex_cell(text: str) -> str:
    value, _, ci = text.partition(" [")
    return latex_escape(value) + (rf" {{\scriptsize [{latex_escape(ci)}}}" if ci else "")


def _latex(table: Table) -> str:
    n = len(table.columns)
    lines = [r"\begin{tabular}{l" + "cc" * n + "}", r"\toprule",
             "Method & " + " & ".join(rf"\multicolumn{{2}}{{c}}{{{latex_escape(t)}}}" for t in table.column_titles())
             + r" \\",
             " ".join(rf"\cmidrule(lr){{{2 + 2 * i}-{3 + 2 * i}}}" for i in range(n)),
             " & " + " & ".join(m for _ in range(n) for _, m in METRICS) + r" \\", r"\midrule"]
    lines += [" & ".join([latex_escape(row[0]), *map(_latex_cell, row[1:])]) + r" \\" for row in table.measured]
    if table.reported:
        lines += [r"\midrule", rf"\multicolumn{{{1 + 2 * n}}}{{l}}{{\textit{{reported in the paper}}}} \\"]
        lines += [" & ".join([latex_escape(row[0]), *map(_latex_cell, row[1:])]) + r" \\" for row in table.reported]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def render_table(table: Table, fmt: str) -> str:
    """The table as CSV, GitHub Markdown, or a LaTeX tabular (booktabs)."""
    renderers = {"csv": _csv, "markdown": _markdown, "latex": _latex}
    if fmt not in renderers:
        raise ResultsError(f"unknown table format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return renderers[fmt](table)


def results_table(paths: Sequence, fmt: str = "markdown", with_ci: bool = False, reported: bool = False) -> str:
    """Read results files and render Table 1 (one row per method, oracles marked)."""
    from .comparison import load_entries

    results: dict[str, dict[str, dict]] = {}
    for e in load_entries(paths):
        results.setdefault(f"{e.label} [oracle]" if e.oracle else e.label, {})[e.split] = e.document
    return render_table(table1_data(results, with_ci, reported), fmt)
