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
from pathlib import Path

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
    """`results` maps a method label to split → results document (see `comparison.results_by_row`)."""
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


def results_table(paths: Sequence, fmt: str = "markdown", with_ci: bool = False, reported: bool = False,
                  allow_mixed: bool = False) -> str:
    """Read results files and render Table 1 (one row per method, oracles marked), or drift documents
    (`score --rules all --out`) as the drift table.

    Rows scored under other rules than `lisa` are marked with their rules; results under different rules (or
    under other rules than the paper's rows, with `reported`) are refused unless `allow_mixed`.
    """
    from .comparison import load_entries, results_by_row
    from .drift import is_drift

    documents = [_peek(path) for path in paths]
    drifts = [(path, doc) for path, doc in zip(paths, documents, strict=True) if is_drift(doc)]
    if drifts:
        if len(drifts) != len(paths):
            raise ResultsError("drift documents and results files cannot share one table",
                               path=str(next(p for p, d in zip(paths, documents, strict=True) if not is_drift(d))),
                               hint="tabulate them separately")
        return drift_tables(drifts, fmt)
    entries = load_entries(paths)
    check_rules(entries, reported, allow_mixed)
    return render_table(table1_data(results_by_row(entries), with_ci, reported), fmt)


def _peek(path) -> dict | None:
    """The document's JSON when it reads as JSON (else None: the results reader says what is wrong)."""
    import json

    from ..inputs import check_input

    try:
        with open(check_input(path, "results file", ResultsError), encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def check_rules(entries, reported: bool, allow_mixed: bool) -> None:
    """Refuse one table over results under different rules, or beside the paper's (lisa) rows, unless allowed."""
    from .rules import check_one_rules, document_rules_label

    if not allow_mixed:
        check_one_rules({str(e.path): document_rules_label(e.document) for e in entries}, beside_paper=reported,
                        hint="pass --allow-mixed to tabulate them side by side, each marked with its rules")


DRIFT_COLUMNS = ("method", "split")


def drift_tables(documents: Sequence[tuple], fmt: str) -> str:
    """Drift documents as one table: method, split, then the drift table's columns (×100, Δ in points)."""
    from .drift import check_drift, drift_table

    header, rows = None, []
    for path, doc in documents:
        head, body = drift_table(check_drift(doc, str(path)))
        header = [*DRIFT_COLUMNS, *head]
        rows += [[doc.get("method") or Path(path).stem, str(doc.get("split")), *row] for row in body]
    renderers = {"csv": _plain_csv, "markdown": _plain_markdown, "latex": _plain_latex}
    if fmt not in renderers:
        raise ResultsError(f"unknown table format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return renderers[fmt](header, rows)


def _plain_csv(header: list[str], rows: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([header, *rows])
    return out.getvalue()


def _plain_markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(map(_markdown_escape, header)) + " |",
             "|" + "|".join([":---"] * len(DRIFT_COLUMNS) + [":---"] + ["---:"] * (len(header) - 3)) + "|"]
    lines += ["| " + " | ".join(map(_markdown_escape, row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _plain_latex(header: list[str], rows: list[list[str]]) -> str:
    lines = [r"\begin{tabular}{lll" + "r" * (len(header) - 3) + "}", r"\toprule",
             " & ".join(latex_escape(h).replace("Δ", r"$\Delta$") for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(c) for c in row) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"
