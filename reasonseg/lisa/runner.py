"""Whole-release jobs behind the CLI: predict a split (one or several processes) and evaluate val + test."""
from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ReasonSegError


def _open(weights: Path, device: str, precision: str):
    """(predictor, rank, world) for this process; joins the process group when launched with several."""
    import torch

    from .infer import LisaPredictor, distributed_context

    rank, world = distributed_context()
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    if device == "cuda" and world > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    return LisaPredictor.from_pretrained(weights, device=device, precision=precision), rank, world


def _predict_file(predictor, rank: int, world: int, data: Path, split: str, out: Path, method: str,
                  protocol: str = "lisa", prompt_mode: str = "teacher-forced", batch_size: int = 4,
                  limit: int | None = None, progress_total=None) -> int | None:
    from ..sources import load_split
    from ..submission import write_predictions
    from .infer import predict_split

    samples = load_split(data, split)
    samples = samples[:limit] if limit else samples
    advance = None
    if progress_total is not None and rank == 0:  # rank 0 reports its share, so a log gets one line per step
        n_queries = sum(len(s.queries(protocol)) for s in samples)
        advance = progress_total(-(-n_queries // world))
    predictions = predict_split(predictor, samples, protocol, prompt_mode, batch_size, rank, world, advance)
    if rank != 0:
        return None
    write_predictions(out, predictions, split, method)
    return len(predictions)


def predict_release(data: Path, weights: Path, split: str, out: Path, protocol: str = "lisa",
                    prompt_mode: str = "teacher-forced", batch_size: int = 4, device: str = "cpu",
                    precision: str = "fp32", limit: int | None = None, progress_total=None) -> int | None:
    """Write the predictions file of a split; returns the count on rank 0 (None on other ranks).

    `progress_total(n)`, when given, is called once with the number of queries and returns `advance(k)`."""
    predictor, rank, world = _open(weights, device, precision)
    return _predict_file(predictor, rank, world, data, split, out, f"lisa:{Path(weights).name}", protocol,
                         prompt_mode, batch_size, limit, progress_total)


# ---------------------------------------------------------------------------------------------- reproduction

def paper_rows_for(config_doc: dict) -> list[str]:
    """The paper's rows a checkpoint compares with: its size and LLaVA base, zero-shot and fine-tuned. Sizes other
    than 13B (the tiny test models included) compare with 7B."""
    size = "13B" if int(config_doc.get("hidden_size", 0)) == 5120 else "7B"
    base = f"LISA-{size}" + ("" if config_doc.get("mm_projector_type", "linear") == "linear" else "-LLaVA1.5")
    return [base, f"{base} (ft)"]


@dataclass
class EvalReport:
    header: list[str]
    rows: list[list[str]]                         # the paper's rows first, then the measured one (with CIs)
    warnings: list[str] = field(default_factory=list)
    results: dict[str, Path] = field(default_factory=dict)       # split -> results JSON
    predictions: dict[str, Path] = field(default_factory=dict)   # split -> predictions JSON


def _prepare_eval_dir(out: Path, overwrite: bool, outputs: list[str]) -> None:
    """The folder rule, after the arguments are checked and before the model opens (no rank writes before then).
    `outputs` are the files this evaluation writes. A folder holding only other evaluations' files (other splits,
    the other benchmark) takes this one's beside them; every rank refuses, without `overwrite`, a folder holding any of
    `outputs` (it would replace them) or anything `lisa eval` does not write. With `overwrite` rank 0 removes
    `outputs` only: the other splits' predictions and results cost GPU hours and stay."""
    from ..errors import OutputError
    from ..outputs import check_output_dir, clear_outputs
    from .infer import distributed_context

    check_output_dir(out, overwrite=True)  # a file in the way is refused whatever the flag
    if not overwrite and out.is_dir():
        names = sorted(entry.name for entry in out.iterdir())
        replaced = [name for name in names if any(fnmatch.fnmatchcase(name, p) for p in outputs)]
        if replaced:
            raise OutputError(f"holds this evaluation's {', '.join(replaced)} already", path=str(out),
                              hint="pass --overwrite to replace them (the other files there are kept), or choose "
                                   "another --out")
        if any(not any(fnmatch.fnmatchcase(name, p) for p in EVAL_OUTPUTS) for name in names):
            check_output_dir(out, overwrite)  # not only evaluations: the usual non-empty refusal
    if distributed_context()[0] == 0:
        clear_outputs(out, outputs)


def release_eval_outputs(splits: list[str]) -> list[str]:
    """The files `lisa eval` writes for a ReasonSeg release: each split's predictions and results."""
    return [f"{split}.{kind}.json" for split in splits for kind in ("predictions", "results")]


def evaluate_release(data: Path, weights: Path, out: Path, paper_rows: list[str] | None = None, batch_size: int = 4,
                     device: str = "cpu", precision: str = "fp32", bootstrap: int = 1000,
                     overwrite: bool = False, rules: str | None = None) -> EvalReport:
    """Predict + score val and test with one loaded model; the measured row beside the paper's rows (Table 1
    layout, the measured cells with their bootstrap CIs), and warnings (a checkpoint that saw val, a missing split).
    Under torchrun every rank predicts its share; rank 0 scores and returns the report (the others an empty one).
    Other evaluations' files in `out` stay; this one's are replaced only with `overwrite` (see _prepare_eval_dir).
    `rules` (a profile of metrics.rules, default lisa) decide the scoring, and which texts are predicted."""
    from ..metrics.comparison import reported_rows
    from ..metrics.report import table1, write_results
    from ..metrics.rules import resolve_rules
    from ..metrics.scoring import evaluate
    from ..paper import PAPER_TABLE1, reported_row
    from .checkpoint import read_config, seen_splits

    weights, data, out = Path(weights), Path(data), Path(out)
    scoring = resolve_rules(rules)     # an unknown name is refused before the model opens
    doc = read_config(weights)
    names = list(paper_rows or paper_rows_for(doc))
    unknown = [n for n in names if reported_row(n) is None]
    if unknown:
        raise ReasonSegError(f"no paper row {unknown[0]!r}", field="--paper-row",
                             hint="one of: " + ", ".join(r.method for r in PAPER_TABLE1))
    report = EvalReport([], [])
    seen, why = seen_splits(weights)
    if "val" in seen:
        report.warnings.append(f"{weights.name} is known to have been trained on val ({why}); its val score is "
                               "contaminated: compare on test")
    splits = [s for s in ("val", "test") if (data / s).is_dir()]
    report.warnings += [f"no {s}/ folder in {data}: skipped" for s in ("val", "test") if s not in splits]
    if not splits:
        raise ReasonSegError("neither val/ nor test/ is in the release", path=str(data),
                             hint="pass the release root (the folder holding train/, val/, test/)")
    _prepare_eval_dir(out, overwrite, release_eval_outputs(splits))
    predictor, rank, world = _open(weights, device, precision)
    method = f"lisa:{weights.name}"
    measured = {}
    for split in splits:
        preds = out / f"{split}.predictions.json"
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
        _predict_file(predictor, rank, world, data, split, preds, method, scoring.protocol, batch_size=batch_size)
        if rank != 0:
            continue
        measured[split] = evaluate(data, preds, split, bootstrap=bootstrap, method=method, rules=scoring).document
        report.predictions[split] = preds
        report.results[split] = write_results(out / f"{split}.results.json", measured[split])
    if rank != 0:
        return report
    marked = "" if scoring.is_default() else f" [rules {scoring.label}]"     # the paper's rows are lisa's
    report.header, measured_rows = table1({f"measured: {weights.name}{marked}": measured}, with_ci=True)
    paper = {row[0]: row for row in reported_rows(report.header)}
    report.rows = [[f"{n} (paper)", *paper[n][1:]] for n in names] + measured_rows
    return report


# ---------------------------------------------------------------------------------------------- refCOCO family

# Every file `lisa eval` writes into its --out (any split): a folder holding only these takes another split's files.
EVAL_OUTPUTS = ("val.predictions.json", "val.results.json", "test.predictions.json", "test.results.json",
                "refcoco*_*.results.json")
# The splits the paper's Table 2 evaluates (docs/protocol.md §3, refCOCO family evaluation); refcocog is the umd split.
REFER_EVAL_SPLITS = {"refcoco": ("val", "testA", "testB"), "refcoco+": ("val", "testA", "testB"),
                     "refcocog": ("val", "test")}


def refer_results_name(dataset: str, split: str) -> str:
    return f"{dataset}_{split}.results.json"


def refer_split_matches(split: str, ref_split: str) -> bool:
    """The reference's split filter (its REFER.getRefIds): testA/testB/testC match any ref split containing the
    letter, `test` any containing `test`, the others only themselves."""
    if split in ("testA", "testB", "testC"):
        return split[-1] in ref_split
    if split == "test":
        return "test" in ref_split
    return ref_split == split


@dataclass
class ReferReport:
    header: list[str]
    rows: list[list[str]]            # the paper's rows, then the measured one
    scores: dict                     # {"n", "giou", "ciou"} (fractions) of the measured run
    results: Path                    # the results JSON (per-query IoU included)


def evaluate_refer(root: Path, dataset: str, split: str, weights: Path, out: Path, batch_size: int = 4,
                   device: str = "cpu", precision: str = "fp32", image_root: Path | None = None,
                   overwrite: bool = False) -> ReferReport:
    """Referring segmentation as the paper evaluates it: every sentence of every ref in the split is one query
    (teacher-forced `[SEG].` after the short validation question), cIoU = summed intersection over summed union and
    gIoU = mean per-query IoU (LISA's conventions), with the paper's Table 2 rows beside the measured one.

    `root` is the `refer_seg` folder (`<dataset>/refs(unc|umd).p`, `<dataset>/instances.json`, `images/...`).
    A ref's mask is the union of its polygons (the reference sums overlapping parts to 2; they are clipped to 1)."""
    import json

    from ..builders.qa.refer import SPLIT_BY, open_source, read_refs
    from ..metrics.metric import ReasonSegMetric
    from ..paper import refer_rows
    from .infer import LisaPredictor

    if dataset not in REFER_EVAL_SPLITS:
        raise ReasonSegError(f"unknown refer dataset {dataset!r}", field="dataset",
                             hint="one of: " + ", ".join(REFER_EVAL_SPLITS))
    if split not in REFER_EVAL_SPLITS[dataset]:
        raise ReasonSegError(f"{dataset} has no evaluation split {split!r}", field="--split",
                             hint="one of: " + ", ".join(REFER_EVAL_SPLITS[dataset]))
    root, weights, out = Path(root), Path(weights), Path(out)
    refs_path = root / dataset / f"refs({SPLIT_BY[dataset]}).p"
    present = sorted({str(ref["split"]) for ref in read_refs(refs_path)})
    wanted = tuple(s for s in present if refer_split_matches(split, s))
    if not wanted:
        raise ReasonSegError(f"no ref of {dataset} is in split {split!r} (the refs hold {', '.join(present)})",
                             path=str(refs_path))
    source = open_source(root, image_root, name=dataset, splits=wanted)
    _prepare_eval_dir(out, overwrite, [refer_results_name(dataset, split)])
    predictor = LisaPredictor.from_pretrained(weights, device=device, precision=precision)
    metric = ReasonSegMetric(bootstrap=0)
    queries = []
    for key in source.keys():
        item = source.load(key)
        image = source.image_root / item.image
        for start in range(0, len(item.targets), batch_size):
            chunk = item.targets[start:start + batch_size]
            masks = predictor.segment([(image, target.name, False) for target in chunk])
            for target, mask in zip(chunk, masks, strict=True):
                truth = item.mask(target.mask_key) > 0
                if mask.shape != truth.shape:
                    raise ReasonSegError(f"the image reads as {mask.shape[0]}x{mask.shape[1]} but instances.json "
                                         f"says {truth.shape[0]}x{truth.shape[1]}", path=str(image),
                                         sample_id=f"{dataset}/{key}")
                metric.update([mask], [truth])
                queries.append({"image_id": key, "ann_id": target.mask_key, "sentence": target.name})
    if not queries:
        raise ReasonSegError(f"split {split!r} of {dataset} has no sentence to evaluate", path=str(refs_path))
    doc = metric.compute()
    overall = doc["groups"]["overall"]
    scores = {"n": overall["n"], "giou": overall["giou"], "ciou": overall["ciou"]}
    for query, row in zip(queries, doc["queries"], strict=True):
        query["iou"] = row["iou"]
    out.mkdir(parents=True, exist_ok=True)
    results = out / refer_results_name(dataset, split)
    results.write_text(json.dumps({"dataset": dataset, "split": split, "split_by": SPLIT_BY[dataset],
                                   "weights": str(weights), **scores, "queries": queries}, indent=1) + "\n",
                       encoding="utf-8")
    header = ["method", f"{dataset} {split} cIoU", "gIoU", "queries"]
    rows = [[f"{method} (paper)", f"{ciou:.1f}", "", ""] for method, ciou in refer_rows(dataset, split)]
    rows.append([f"measured: {weights.name}", f"{100 * scores['ciou']:.1f}", f"{100 * scores['giou']:.1f}",
                 str(scores["n"])])
    return ReferReport(header, rows, scores, results)
