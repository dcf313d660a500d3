"""Whole-release jobs behind the CLI: predict a split (one or several processes) and evaluate val + test."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import ReasonSegError

# Checkpoints known to have been trained on train+val (reference issue #74): their val numbers are contaminated.
SAW_VAL = ("LISA-7B-v1", "LISA-13B-llama2-v1")


def predict_release(data: Path, weights: Path, split: str, out: Path, protocol: str = "lisa",
                    prompt_mode: str = "teacher-forced", batch_size: int = 4, device: str = "cpu",
                    precision: str = "fp32", limit: int | None = None) -> int | None:
    """Write the predictions file of a split; returns the count on rank 0 (None on other ranks)."""
    import torch

    from ..dataset import load_split
    from ..submission import write_predictions
    from .infer import LisaPredictor, distributed_context, predict_split

    rank, world = distributed_context()
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    if device == "cuda" and world > 1:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    samples = load_split(data, split)
    samples = samples[:limit] if limit else samples
    predictor = LisaPredictor.from_pretrained(weights, device=device, precision=precision)
    predictions = predict_split(predictor, samples, protocol, prompt_mode, batch_size, rank, world)
    if rank != 0:
        return None
    write_predictions(out, predictions, split, f"lisa:{Path(weights).name}")
    return len(predictions)


def evaluate_release(data: Path, weights: Path, out: Path, paper_row: str = "LISA-7B", batch_size: int = 4,
                     device: str = "cpu", precision: str = "fp32", bootstrap: int = 1000
                     ) -> tuple[list[str], list[list[str]], list[str]]:
    """Predict + score val and test; the Table 1 rows (paper vs measured) and warnings."""
    from ..baselines.reported import PAPER_TABLE1, reported_row
    from ..metrics.report import table1, write_results
    from ..metrics.scoring import evaluate

    row = reported_row(paper_row)
    if row is None:
        raise ReasonSegError(f"no paper row {paper_row!r}", field="--paper-row",
                             hint="one of: " + ", ".join(r.method for r in PAPER_TABLE1))
    warnings = []
    if any(name in Path(weights).name for name in SAW_VAL):
        warnings.append(f"{Path(weights).name} was trained on train+val (reference issue #74): its val score is "
                        "contaminated; compare on test")
    out.mkdir(parents=True, exist_ok=True)
    measured = {}
    for split in ("val", "test"):
        if not (Path(data) / split).is_dir():
            warnings.append(f"no {split}/ folder in {data}: skipped")
            continue
        preds = out / f"{split}.predictions.json"
        predict_release(data, weights, split, preds, batch_size=batch_size, device=device, precision=precision)
        doc = evaluate(data, preds, split, bootstrap=bootstrap, method=f"lisa:{Path(weights).name}").document
        write_results(out / f"{split}.results.json", doc)
        measured[split] = doc
    results = {f"{row.method} (paper)": {s: {"groups": row.groups(s)} for s in measured},
               f"measured: {Path(weights).name}": measured}
    header, rows = table1(results, with_ci=True)
    return header, rows, warnings
