"""The demo's LISA step: a tiny random-initialised model, a few CPU training steps, predictions on val and test."""
from __future__ import annotations

from pathlib import Path


def demo_step(out: Path, release: Path, steps: int = 4, qa: Path | None = None) -> dict:
    """Init a tiny LISA, train `steps` CPU steps on the release's train split (mixed half and half with the QA set
    `qa` when given, e.g. the folder of `reasonseg.builders.qa.demo.demo_step`), export, predict val and test.

    Returns {"method", "label", "predictions": {split: path}, "model", "run"}; the numbers mean nothing
    (random weights, tiny model): the step shows the pipeline end to end.
    """
    from ..dataset import load_split
    from ..submission import write_predictions
    from .checkpoint import init_release
    from .infer import LisaPredictor, predict_split
    from .train import export_run, load_config, train

    out = Path(out)
    base = init_release(out / "tiny-init", "tiny", "v1", overwrite=True)
    config = load_config(Path(__file__).parent / "configs" / "tiny.yaml", {
        "model": str(base), "out": str(out / "run"), "epochs": 1, "steps_per_epoch": steps, "warmup_steps": 1,
        "data": {"reasonseg": str(release), "val": None, "qa": str(qa) if qa else None, "reasonseg_rate": 0.5}})
    train(config, resume=False)
    model = export_run(out / "run", out / "tiny-trained", overwrite=True)
    predictor = LisaPredictor.from_pretrained(model)
    paths = {}
    for split in ("val", "test"):
        if (Path(release) / split).is_dir():
            preds = predict_split(predictor, load_split(release, split))
            paths[split] = write_predictions(out / f"lisa-tiny.{split}.json", preds, split, "lisa-tiny")
    return {"method": "lisa-tiny", "label": "LISA tiny, random weights + a few CPU steps (not a real model)",
            "predictions": paths, "model": model, "run": out / "run"}
