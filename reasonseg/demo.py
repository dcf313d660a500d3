"""The demo: the whole chain on the embedded synthetic release, from files to the Table 1 layout and reports."""
from __future__ import annotations

import html
import os
from dataclasses import dataclass
from pathlib import Path

from .baselines.predict import predict_samples
from .baselines.registry import MethodContext, get_method
from .dataset import atomic_write_text, load_split, read_manifest, write_manifest
from .errors import DatasetError
from .metrics.html import write_report
from .metrics.report import table1, write_results
from .metrics.scoring import evaluate
from .sample import write_sample_release
from .submission import write_predictions

DEMO_METHODS = ("empty", "full", "center-prior")
DEMO_SPLITS = ("val", "test")
SAMPLE_NAME = "reasonseg-sample"


@dataclass
class DemoResult:
    release: Path
    index: Path
    results: dict[str, dict[str, dict]]
    table: tuple[list[str], list[list[str]]]


def prepare_release(folder: Path) -> Path:
    """The synthetic release in `folder`: written once, reused on later runs (it is deterministic)."""
    if folder.exists() and any(folder.iterdir()):
        manifest = read_manifest(folder)
        if not manifest or manifest.get("name") != SAMPLE_NAME:
            raise DatasetError("folder exists and is not a reasonseg sample release", path=str(folder),
                               hint="choose another --out")
        return folder
    write_sample_release(folder)
    write_manifest(folder, name=SAMPLE_NAME, version="1", sources={"synthetic": "reasonseg.sample, seed 0"})
    return folder


def run_demo(out: str | os.PathLike, bootstrap: int = 1000,
             methods: tuple[str, ...] = DEMO_METHODS) -> DemoResult:
    out = Path(out)
    release = prepare_release(out / "release")
    results: dict[str, dict[str, dict]] = {}
    links = []
    for name in methods:
        method = get_method(name).build(MethodContext(release))
        for split in DEMO_SPLITS:
            preds_path = write_predictions(out / "predictions" / f"{name}-{split}.json",
                                           predict_samples(method, load_split(release, split)), split, name)
            evaluation = evaluate(release, preds_path, split, bootstrap=bootstrap)
            write_results(out / "results" / f"{name}-{split}.json", evaluation.document)
            report = write_report(out / "reports" / f"{name}-{split}", evaluation)
            results.setdefault(name, {})[split] = evaluation.document
            links.append((f"{name} · {split}", report.relative_to(out).as_posix()))
    table = table1(results)
    index = out / "index.html"
    atomic_write_text(index, _index_page(table, links))
    return DemoResult(release, index, results, table)


def _index_page(table: tuple[list[str], list[list[str]]], links: list[tuple[str, str]]) -> str:
    header, rows = table
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join("<td>" + html.escape(c).replace("\n", "<br><small>") + "</td>" for c in row)
                   + "</tr>" for row in rows)
    items = "".join(f'<li><a href="{html.escape(href)}">{html.escape(label)}</a></li>' for label, href in links)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>reasonseg demo</title>
<style>body {{ font-family: system-ui, sans-serif; margin: 2em; }} table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}</style></head><body>
<h1>reasonseg demo: baselines on the synthetic release</h1>
<p>gIoU and cIoU ×100 with 95% bootstrap intervals, protocol <code>lisa</code>, Table 1 layout.</p>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<h2>Reports</h2><ul>{items}</ul></body></html>
"""
