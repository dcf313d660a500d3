"""The demo: the whole chain on the embedded synthetic data, from source files to the Table 1 layout, reports and
the leaderboard page.

Stages run in the order data flows. A stage whose extra is not installed is skipped with the install command, so
`reasonseg demo` works on the core install and shows everything on `.[all]`.
"""
from __future__ import annotations

import html
import json
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .baselines.predict import predict_samples
from .baselines.registry import MethodContext, get_method
from .dataset import atomic_write_text, load_split, read_manifest, validate_release
from .errors import DatasetError
from .extras import missing_modules, name_deepspeed_accelerator
from .metrics.html import write_report
from .metrics.report import table1, write_results
from .metrics.scoring import DEGENERATE_WARNING, evaluate
from .outputs import prepare_output_dir
from .sample.bundle import SAMPLE_NAME, write_sample_release_with_manifest
from .submission import write_predictions

DEMO_METHODS = ("empty", "full", "center-prior")
DEMO_SPLITS = ("val", "test")


@dataclass
class StageNote:
    title: str
    lines: list[str]
    links: list[tuple[str, str]] = field(default_factory=list)   # (label, path relative to the demo folder)


@dataclass
class DemoResult:
    release: Path
    index: Path
    results: dict[str, dict[str, dict]]
    table: tuple[list[str], list[list[str]]]
    notes: list[StageNote]


def prepare_release(folder: Path) -> Path:
    """The synthetic release in `folder`: written once, reused on later runs (it is deterministic)."""
    if folder.exists() and any(folder.iterdir()):
        manifest = read_manifest(folder)
        if not manifest or manifest.get("name") != SAMPLE_NAME:
            raise DatasetError("folder exists and is not a reasonseg sample release", path=str(folder),
                               hint="choose another --out")
        return folder
    return write_sample_release_with_manifest(folder)


def _stage(notes: list[StageNote], title: str, needs: tuple[str, ...], extra: str,
           run: Callable[[], StageNote]) -> None:
    missing = missing_modules(*needs)
    if missing:
        notes.append(StageNote(title, [f"skipped: needs {', '.join(missing)} (pip install 'reasonseg[{extra}]')"]))
        return
    notes.append(run())


def _build_stage(out: Path) -> StageNote:
    from .builders.release.build import demo_step

    built = demo_step(out / "build")
    report = validate_release(built, strict=True)
    counts = ", ".join(f"{s} {v['count']}" for s, v in report.splits.items())
    return StageNote("build: OpenImages + ScanNet format sources → ReasonSeg release",
                     [f"{built.relative_to(out)}: {counts}; validate --strict: {'OK' if report.ok else 'FAILED'}"],
                     [("build report", (built / "build_report.txt").relative_to(out).as_posix())])


def _qa_stage(out: Path) -> StageNote:
    from .builders.qa.demo import demo_step

    qa = demo_step(out / "qa-build")
    stats = json.loads((qa / "stats.json").read_text(encoding="utf-8"))
    groups = ", ".join(f"{g} {n}" for g, n in stats["groups"].items())
    return StageNote("build qa: template QA set from ADE20K, COCO-Stuff, PACO, PASCAL-Part, refCOCO*, LLaVA formats",
                     [f"{qa.relative_to(out)}/qa.jsonl: {stats['records']} records (lisa mode; {groups})"],
                     [("class frequency", (qa / "class_frequency.png").relative_to(out).as_posix())])


def _rephrase_stage(out: Path, release: Path) -> StageNote:
    from .builders.rephrase.demo import demo_step

    result = demo_step(out / "rephrase", release)
    dry, done, again = result["dry_run"], result["rephrased"], result["rerun"]
    return StageNote("rephrase: train instructions through an OpenAI-compatible server", [
        f"dry run for {dry['model']}: {dry['calls']} calls, ~${dry['estimated_cost_usd']:.4f}",
        f"{result['server']}: {done['calls']} calls, {done['texts_added']} texts added",
        f"rerun: {again['calls']} calls ({again['cached']} answered from the cache)"])


def _baselines_stage(out: Path, release: Path, bootstrap: int
                     ) -> tuple[dict[str, dict[str, dict]], dict[str, dict[str, Path]], StageNote]:
    results: dict[str, dict[str, dict]] = {}
    predictions: dict[str, dict[str, Path]] = {}
    links = []
    for name in DEMO_METHODS:
        method = get_method(name).build(MethodContext(release))
        for split in DEMO_SPLITS:
            preds_path = write_predictions(out / "predictions" / f"{name}-{split}.json",
                                           predict_samples(method, load_split(release, split)), split, name)
            evaluation = evaluate(release, preds_path, split, bootstrap=bootstrap)
            write_results(out / "results" / f"{name}-{split}.json", evaluation.document)
            report = write_report(out / "reports" / f"{name}-{split}", evaluation)
            results.setdefault(name, {})[split] = evaluation.document
            predictions.setdefault(name, {})[split] = preds_path
            links.append((f"{name} · {split}", report.relative_to(out).as_posix()))
    from .metrics.comparison import write_comparison

    comparison = write_comparison(out / "comparison", release, sorted((out / "results").glob("*.json")),
                                  sorted((out / "predictions").glob("*.json")))
    links.insert(0, ("side-by-side comparison (reasonseg report)", comparison.relative_to(out).as_posix()))
    note = StageNote("baselines → predictions → scores", [f"{len(results)} methods × {len(DEMO_SPLITS)} splits scored"
                                                         f" ({bootstrap} bootstrap resamples)"], links)
    return results, predictions, note


def _model_baselines_stage(out: Path, release: Path, results: dict[str, dict[str, dict]]) -> StageNote:
    from .baselines.predict import demo_step
    from .metrics.report import read_results

    run = demo_step(out / "model-baselines", release)
    for name, by_split in run["methods"].items():
        for split, paths in by_split.items():
            results.setdefault(f"{name} ({run['label']})", {})[split] = read_results(paths["results"])
    return StageNote(f"model baselines with {run['label']}: tiny models saved and reloaded like real checkpoints",
                     [f"{', '.join(run['methods'])}: the pipeline runs end to end; the numbers mean nothing"])


def _lisa_stage(out: Path, release: Path, results: dict[str, dict[str, dict]], bootstrap: int) -> StageNote:
    from .lisa.demo import demo_step

    qa = out / "qa-build" / "qa"
    run = demo_step(out / "lisa", release, qa=qa if (qa / "qa.jsonl").is_file() else None)
    for split, preds in run["predictions"].items():
        evaluation = evaluate(release, preds, split, bootstrap=bootstrap)
        write_results(out / "results" / f"{run['method']}-{split}.json", evaluation.document)
        results.setdefault(f"{run['method']} (random weights)", {})[split] = evaluation.document
    return StageNote("LISA: lisa init --size tiny → a few CPU training steps on the QA set and ReasonSeg train → "
                     "export → predict → score",
                     [f"{run['label']}: model at {Path(run['model']).relative_to(out)}"])


def _leaderboard_stage(out: Path, release: Path, predictions: dict[str, dict[str, Path]], bootstrap: int
                       ) -> StageNote:
    from .leaderboard.demo import demo_step

    # The rule baselines' metadata, so the board's columns say what each row is.
    meta = {name: {"model_size": "no model", "base_model": f"a rule: {get_method(name).description}",
                   "training_data": "train split (mean target mask)" if name == "center-prior" else "none"}
            for name in predictions}
    index = demo_step(out / "leaderboard", release, predictions, meta=meta, bootstrap=bootstrap)
    return StageNote("leaderboard: served on 127.0.0.1, submitted through the client, exported",
                     [f"static page: {index.relative_to(out)}"], [("leaderboard", index.relative_to(out).as_posix())])


# What the demo writes into its folder. The synthetic release is left out: it is deterministic and checked by name
# (`prepare_release`), so a rerun reuses it instead of writing it again.
DEMO_OUTPUTS = ("build", "qa-build", "rephrase", "predictions", "results", "reports", "comparison", "model-baselines",
                "lisa", "leaderboard", "index.html")


def run_demo(out: str | os.PathLike, bootstrap: int = 1000, overwrite: bool = False) -> DemoResult:
    """Every stage on the synthetic release, into `out` (new or empty, or with `overwrite` a previous demo's folder:
    its outputs are replaced, other files kept)."""
    out = prepare_output_dir(out, overwrite, DEMO_OUTPUTS)
    release = prepare_release(out / "release")
    with warnings.catch_warnings():
        # The demo's baselines predict nothing (`empty`), everything (`full`) or, with random weights, masks that
        # mean nothing, by design: the scorer's warning that a threshold slipped would be a false alarm here.
        warnings.filterwarnings("ignore", message=DEGENERATE_WARNING)
        name_deepspeed_accelerator()
        return _run_stages(out, release, bootstrap)


def _run_stages(out: Path, release: Path, bootstrap: int) -> DemoResult:
    notes: list[StageNote] = []
    _stage(notes, "build", (), "all", lambda: _build_stage(out))
    _stage(notes, "build qa", (), "all", lambda: _qa_stage(out))
    _stage(notes, "rephrase", ("openai",), "llm", lambda: _rephrase_stage(out, release))
    results, predictions, note = _baselines_stage(out, release, bootstrap)
    notes.append(note)
    _stage(notes, "model baselines", ("torch", "transformers", "segment_anything"), "model",
           lambda: _model_baselines_stage(out, release, results))
    _stage(notes, "lisa", ("torch", "transformers", "segment_anything", "peft"), "model",
           lambda: _lisa_stage(out, release, results, bootstrap))
    _stage(notes, "leaderboard", ("fastapi", "uvicorn", "sqlalchemy", "jinja2", "multipart"), "serve",
           lambda: _leaderboard_stage(out, release, predictions, bootstrap))
    table = table1(results)
    index = out / "index.html"
    atomic_write_text(index, _index_page(table, notes))
    return DemoResult(release, index, results, table, notes)


def _index_page(table: tuple[list[str], list[list[str]]], notes: list[StageNote]) -> str:
    header, rows = table
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join("<td>" + html.escape(c).replace("\n", "<br><small>") + "</td>" for c in row)
                   + "</tr>" for row in rows)
    stages = []
    for note in notes:
        items = "".join(f"<li>{html.escape(line)}</li>" for line in note.lines)
        items += "".join(f'<li><a href="{html.escape(href)}">{html.escape(label)}</a></li>'
                         for label, href in note.links)
        stages.append(f"<h3>{html.escape(note.title)}</h3><ul>{items}</ul>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>reasonseg demo</title>
<style>body {{ font-family: system-ui, sans-serif; margin: 2em; }} table {{ border-collapse: collapse; }}
td, th {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}</style></head><body>
<h1>reasonseg demo on the synthetic release</h1>
<p>gIoU / cIoU ×100 with 95% bootstrap intervals, protocol <code>lisa</code>, Table 1 layout.</p>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<h2>Stages</h2>{''.join(stages)}</body></html>
"""
