"""Whole-release jobs behind the CLI: predict a split (one or several processes) and evaluate val + test."""
from __future__ import annotations

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
                  limit: int | None = None) -> int | None:
    from ..dataset import load_split
    from ..submission import write_predictions
    from .infer import predict_split

    samples = load_split(data, split)
    samples = samples[:limit] if limit else samples
    predictions = predict_split(predictor, samples, protocol, prompt_mode, batch_size, rank, world)
    if rank != 0:
        return None
    write_predictions(out, predictions, split, method)
    return len(predictions)


def predict_release(data: Path, weights: Path, split: str, out: Path, protocol: str = "lisa",
                    prompt_mode: str = "teacher-forced", batch_size: int = 4, device: str = "cpu",
                    precision: str = "fp32", limit: int | None = None) -> int | None:
    """Write the predictions file of a split; returns the count on rank 0 (None on other ranks)."""
    predictor, rank, world = _open(weights, device, precision)
    return _predict_file(predictor, rank, world, data, split, out, f"lisa:{Path(weights).name}", protocol,
                         prompt_mode, batch_size, limit)


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


def evaluate_release(data: Path, weights: Path, out: Path, paper_rows: list[str] | None = None, batch_size: int = 4,
                     device: str = "cpu", precision: str = "fp32", bootstrap: int = 1000) -> EvalReport:
    """Predict + score val and test with one loaded model; the measured row beside the paper's rows (Table 1
    layout, the measured cells with their bootstrap CIs), and warnings (a checkpoint that saw val, a missing split).
    Under torchrun every rank predicts its share; rank 0 scores and returns the report (the others an empty one)."""
    from ..paper import PAPER_TABLE1, reported_row
    from ..metrics.comparison import reported_rows
    from ..metrics.report import table1, write_results
    from ..metrics.scoring import evaluate
    from .checkpoint import read_config, seen_splits

    weights, data, out = Path(weights), Path(data), Path(out)
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
    predictor, rank, world = _open(weights, device, precision)
    method = f"lisa:{weights.name}"
    measured = {}
    for split in splits:
        preds = out / f"{split}.predictions.json"
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
        _predict_file(predictor, rank, world, data, split, preds, method, batch_size=batch_size)
        if rank != 0:
            continue
        measured[split] = evaluate(data, preds, split, bootstrap=bootstrap, method=method).document
        report.predictions[split] = preds
        report.results[split] = write_results(out / f"{split}.results.json", measured[split])
    if rank != 0:
        return report
    report.header, measured_rows = table1({f"measured: {weights.name}": measured}, with_ci=True)
    paper = {row[0]: row for row in reported_rows(report.header)}
    report.rows = [[f"{n} (paper)", *paper[n][1:]] for n in names] + measured_rows
    return report
