"""Does LISA training learn to read the query, or a shortcut? A tiny random LISA trained on CPU, three measurements.

The data (`reasonseg sample --grounding N`): scenes of three objects, all drawn alike, every object the target of its
own sample, so only the query tells which object is meant. Two arms train the same recipe from the same start model:

- `real`: the true queries;
- `control`: the train queries shuffled across samples (the masks stay), so the text carries no information about
  the target: whatever this arm scores comes from the image alone (an image-only shortcut).

Measured on val (true queries, teacher-forced `[SEG].` as `lisa eval` predicts), against the targets of the issue:

1. val gIoU of `real` minus the center-prior baseline's (target: +20 points);
2. val gIoU of `real` minus `control`'s (target: +10 points);
3. query-swap hit rate: each object of a val scene is queried in turn; a hit is a prediction whose IoU with the queried
   object beats its IoU with both other objects (target: >= 70 %; chance 33 %). Also reported: the mean IoU between
   the masks predicted for different queries on one image (1.0 = the query changes nothing).

Training data (`--data`): `fixed` (default) trains each arm from a fixed QA set that `prepare` builds once with
`reasonseg build qa --mode exhaustive` (every train sample once, its texts and templates drawn once, repeated every
epoch; the control arm's set is built from the shuffled release); `fresh` reads the release as `data.reasonseg`, so
texts and templates are drawn anew every time a sample is seen (the reference's way; with it this tiny random model's
prompt stays the same for every query, see docs/lisa.md).

The start model (`prepare`): `lisa init --size tiny`, then a language-only stage (`--language-steps`, default 800):
its LLM alone learns, with next-token loss, to answer the QA builder's questions about each train text by repeating
the text where the answer has `[SEG]` (`language_sequences`): a random tiny LLM's state hardly depends on the query
(LISA starts from a pretrained LLaVA instead). The arms then keep that LLM frozen (`--llm frozen`, default) and
train `text_hidden_fcs` and the mask decoder: trained with the mask loss, the tiny LLM makes its `[SEG]` state the
same for every query within the first 50 steps (`lisa_collapse_probe.py`; docs/lisa.md has the measurements).
`--llm trained` trains `--trainable` too. `--recipe reference` trains with the product's reference settings instead
(fresh draws, lr 3e-4, warmup 100, text loss 1.0, the reference's trainable set with LoRA, the LLM trained).

Usage (the work folder must be outside the repository; the arms run as two processes, one torch thread each):

    python benchmarks/lisa_learns_task.py all --work /tmp/lisa-learns --seed 0 \\
        --png docs/img/lisa_learns_task.png --json benchmarks/results/lisa_learns_task.json

Subcommands: `prepare` (data + start model), `train --arm real|control`, `report` (curves PNG + JSON); `all` runs
them in order with both arms in parallel.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ARMS = ("real", "control")
TARGETS = {"giou_minus_center_prior": 20.0, "giou_minus_control": 10.0, "swap_hit_rate": 70.0}


def recipe(args) -> dict:
    """The training config both arms share (the arm picks the train release and the run folder)."""
    return {
        "model": str(Path(args.work) / "start-model"), "base": None, "vision_tower": None,
        "engine": "torch", "precision": "fp32", "device": "cpu", "threads": 1,
        "lr": args.lr, "betas": [0.9, 0.95], "weight_decay": 0.0, "warmup_steps": args.warmup,
        "epochs": 1, "steps_per_epoch": args.steps, "batch_size": args.batch_size, "grad_accumulation": 1,
        "grad_clip": 1.0, "model_max_length": 512,
        "lora": {"r": 8, "alpha": 16, "dropout": 0.05, "targets": ["q_proj", "v_proj"]},
        "loss": {"ce": args.ce, "bce": 2.0, "dice": 0.5}, "gradient_checkpointing": False,
        "val_batch_size": 8, "seed": args.seed, "trainable": args.trainable, "val_every": args.val_every,
        "max_minutes": args.minutes,
    }


# ---------------------------------------------------------------------------------------------- prepare

def shuffled_copy(release: Path, out: Path, seed: int) -> None:
    """`release` with train/ only, each train sample's `text` replaced by another sample's (a derangement)."""
    from reasonseg.dataset import write_manifest

    shutil.copytree(release / "train", out / "train")
    docs = sorted((out / "train").glob("*.json"))
    texts = [json.loads(p.read_text(encoding="utf-8"))["text"] for p in docs]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(docs))
    order = np.roll(order, 1)[np.argsort(order)]  # sample i takes the texts of the one after it in a random cycle
    for path, source in zip(docs, order, strict=True):
        doc = json.loads(path.read_text(encoding="utf-8"))
        doc["text"] = texts[int(source)]
        path.write_text(json.dumps(doc), encoding="utf-8")
    write_manifest(out, name="reasonseg-grounding-shuffled", version="1",
                   sources={"control": "train texts shuffled across samples"})


def build_fixed_qa(release: Path, out: Path, seed: int) -> None:
    """The fixed training set of one arm, built by the product CLI: every train sample once, its texts and templates
    drawn once (`build qa --mode exhaustive`), repeated unchanged every epoch."""
    cli = Path(sys.executable).parent / "reasonseg"
    subprocess.run([str(cli), "build", "qa", "--source", f"reason_seg={release}", "--mode", "exhaustive",
                    "--out", str(out), "--seed", str(seed)], check=True)


# ---------------------------------------------------------------------------------------------- language stage

def _echo(text: str) -> str:
    """The query as the answer repeats it, its leading article dropped (so the first word is a cue: colour or kind)."""
    return text[4:] if text.startswith("the ") else text


def language_sequences(release: Path, tokenizer, seed: int) -> list[tuple[list[int], list[int]]]:
    """The language-only training sequences: per train sample and text, a question of the QA builder's templates
    about the text, and an answer template whose `[SEG]` is replaced by the text itself (leading article dropped),
    tokenized as `lisa train` tokenizes (llava_v1, the original's labels: the answer only); no image. So the state
    that will predict `[SEG]` is first trained to predict the queried object's words."""
    from reasonseg.builders.qa.templates import seg_answer, short_question
    from reasonseg.dataset import load_split
    from reasonseg.lisa.conversation import render, seg_token_id, tokenize

    seg = seg_token_id(tokenizer)
    rng = np.random.default_rng(seed)
    out = []
    for sample in load_split(release, "train"):
        for text in sample.texts:
            question, _ = short_question(rng, text)
            answer, _ = seg_answer(rng)
            tok = tokenize(tokenizer, render([(question, answer)], True)[0], with_labels=True)
            at = tok.input_ids.index(seg)
            echo = tokenizer.encode(_echo(text), add_special_tokens=False)
            out.append((tok.input_ids[:at] + echo + tok.input_ids[at + 1:],
                        tok.labels[:at] + echo + tok.labels[at + 1:]))
    return out


def pretrain_language(work: Path, steps: int, lr: float, batch: int, seed: int) -> dict:
    """Train the start model's LLM alone (next-token loss, AdamW, linear decay) on `language_sequences`, and write
    the result as the arms' start model; the LLM is all that changes. Returns the first and last losses."""
    import torch
    from transformers import CLIPImageProcessor

    from reasonseg.lisa.checkpoint import load_lisa, save_lisa
    from reasonseg.lisa.conversation import IGNORE_INDEX

    torch.manual_seed(seed)
    loaded = load_lisa(work / "random-model")
    llm = loaded.model.llm
    llm.train()
    sequences = language_sequences(work / "release", loaded.tokenizer, seed)
    optimizer = torch.optim.AdamW(llm.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: max(0.0, 1 - k / steps))
    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(steps):
        picked = [sequences[int(i)] for i in rng.integers(len(sequences), size=batch)]
        width = max(len(ids) for ids, _ in picked)
        ids = torch.full((batch, width), loaded.tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full((batch, width), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((batch, width), dtype=torch.long)
        for n, (seq, lab) in enumerate(picked):
            ids[n, :len(seq)], labels[n, :len(lab)], attention[n, :len(seq)] = (
                torch.tensor(seq), torch.tensor(lab), 1)
        loss = llm(input_ids=ids, attention_mask=attention, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(llm.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    processor = CLIPImageProcessor.from_pretrained(loaded.vision_tower_path)
    save_lisa(loaded.model, loaded.tokenizer, work / "start-model", image_processor=processor, overwrite=True)
    return {"steps": steps, "lr": lr, "batch_size": batch, "sequences": len(sequences),
            "loss_first": float(np.mean(losses[:20])), "loss_last": float(np.mean(losses[-20:]))}


def prepare(args) -> None:
    from reasonseg.lisa.checkpoint import init_release
    from reasonseg.sample.grounding import write_grounding_release

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    release = write_grounding_release(work / "release", {"train": args.train_scenes, "val": args.val_scenes},
                                      seed=args.seed)
    shuffled_copy(release, work / "release-shuffled", args.seed)
    for arm in ARMS:
        build_fixed_qa(work / ("release" if arm == "real" else "release-shuffled"), work / f"qa-{arm}", args.seed)
    if args.language_steps:
        init_release(work / "random-model", "tiny", "v1", seed=args.seed)
        language = pretrain_language(work, args.language_steps, args.language_lr, 32, args.seed)
        (work / "language.json").write_text(json.dumps(language, indent=1) + "\n", encoding="utf-8")
        print(f"language stage: {language}", flush=True)
    else:
        init_release(work / "start-model", "tiny", "v1", seed=args.seed)
    (work / "recipe.json").write_text(json.dumps(recipe(args), indent=1) + "\n", encoding="utf-8")
    (work / "experiment.json").write_text(json.dumps({"llm": args.llm, "language_steps": args.language_steps,
                                                      "language_lr": args.language_lr}) + "\n", encoding="utf-8")
    print(f"prepared {work}", flush=True)


# ---------------------------------------------------------------------------------------------- train

def freeze_llm_in_training() -> None:
    """Make this process's `lisa train` runs keep every LLM weight frozen (LoRA, embeddings and lm_head included), so
    only `text_hidden_fcs` and the mask decoder learn. The product has no such setting (its `reference` set always
    trains the LLM's LoRA, embeddings and lm_head); the experiment wraps the one function that decides."""
    import reasonseg.lisa.train as train_module

    chosen = train_module.set_trainable

    def without_llm(model, groups=("reference",)) -> list[str]:
        names = chosen(model, groups)
        for name, param in model.named_parameters():
            if name.startswith("llm."):
                param.requires_grad_(False)
        return [n for n in names if not n.startswith("llm.")]

    train_module.set_trainable = without_llm


def train_arm(args) -> None:
    import torch

    from reasonseg.lisa.train import load_config, train

    torch.set_num_threads(1)
    work = Path(args.work)
    if json.loads((work / "experiment.json").read_text(encoding="utf-8"))["llm"] == "frozen":
        freeze_llm_in_training()
    doc = json.loads((work / "recipe.json").read_text(encoding="utf-8"))
    if args.data == "fixed":
        train_data = {"qa": str(work / f"qa-{args.arm}")}
    else:  # fresh draws, the reference's way: each sample's texts and templates drawn anew every time it is seen
        train_data = {"reasonseg": str(work / ("release" if args.arm == "real" else "release-shuffled")),
                      "reasonseg_split": "train"}
    doc["data"] = {**train_data, "val": str(work / "release"), "val_split": "val"}
    doc["out"] = str(work / f"run-{args.arm}")
    config_path = work / f"{args.arm}.yaml"
    import yaml

    config_path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    started = time.monotonic()
    result = train(load_config(config_path), resume=False,
                   on_step=lambda s: print(f"[{args.arm}] step {s['step']} loss {s['loss']:.4f}", flush=True)
                   if s["step"] % 50 == 0 else None)
    swap = swap_test(work, args.arm)
    summary = {"arm": args.arm, "steps": result.step, "train_wall_s": round(time.monotonic() - started, 1),
               "val": result.val, **swap}
    (work / f"{args.arm}.summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in summary.items() if k != "val"}), flush=True)


def swap_test(work: Path, arm: str) -> dict:
    """Export the run's last checkpoint, predict val through `LisaPredictor`, and measure the query swaps."""
    from reasonseg.dataset import load_split
    from reasonseg.lisa.infer import LisaPredictor, predict_split
    from reasonseg.lisa.train import export_run
    from reasonseg.masks import decode_rle, rasterize_shapes
    from reasonseg.sample.grounding import read_scenes
    from reasonseg.schema import TARGET

    exported = export_run(work / f"run-{arm}", work / f"model-{arm}", checkpoint="latest", overwrite=True)
    predictor = LisaPredictor.from_pretrained(exported)
    samples = {s.id: s for s in load_split(work / "release", "val")}
    predictions = {p.id: p for p in predict_split(predictor, list(samples.values()), batch_size=8)}
    hits, total, same_image_iou = 0, 0, []
    for scene in read_scenes(work / "release", "val"):
        objects = [rasterize_shapes(samples[i].shapes, samples[i].height, samples[i].width) == TARGET for i in scene]
        predicted = [decode_rle(predictions[i].rle).astype(bool) for i in scene]
        for k, mask in enumerate(predicted):
            ious = [_iou(mask, obj) for obj in objects]
            hits += int(ious[k] > max(iou for j, iou in enumerate(ious) if j != k))
            total += 1
        same_image_iou += [_iou(predicted[a], predicted[b]) for a in range(len(scene)) for b in range(a)]
    return {"swap_hits": hits, "swap_queries": total, "swap_hit_rate": 100.0 * hits / max(total, 1),
            "same_image_prediction_iou": float(np.mean(same_image_iou))}


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


# ---------------------------------------------------------------------------------------------- report

def center_prior_giou(work: Path) -> float:
    from reasonseg.baselines.trivial import CenterPrior
    from reasonseg.dataset import load_split
    from reasonseg.metrics.groundtruth import load_ground_truth
    from reasonseg.metrics.scoring import evaluate_predictions
    from reasonseg.submission import prediction_from_mask

    prior = CenterPrior.from_train(load_split(work / "release", "train"))
    val = load_split(work / "release", "val")
    preds = [prediction_from_mask(s.id, q.text_index, prior.predict(s, q)) for s in val for q in s.queries("lisa")]
    gt = load_ground_truth(work / "release", "val", cache_dir=None)
    return 100.0 * evaluate_predictions(gt, preds, bootstrap=0).document["groups"]["overall"]["giou"]


def _metrics(work: Path, arm: str) -> tuple[list[dict], list[dict]]:
    lines = [json.loads(x) for x in (work / f"run-{arm}" / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [x for x in lines if "loss" in x], [x for x in lines if x.get("split") == "val"]


def _panel(series: list[tuple[str, tuple[int, int, int], list[float], list[float]]], title: str, ylabel: str,
           hline: tuple[str, float] | None = None, size: tuple[int, int] = (300, 440)) -> np.ndarray:
    """One line chart (white background, BGR) drawn with OpenCV: x = wall-clock minutes."""
    import cv2

    h, w = size
    left, right, top, bottom = 52, 12, 26, 34
    image = np.full((h, w, 3), 255, np.uint8)
    xs = [x for _, _, sx, _ in series for x in sx] or [0.0, 1.0]
    ys = [y for _, _, _, sy in series for y in sy] + ([hline[1]] if hline else [])
    x0, x1 = 0.0, max(max(xs), 1e-6)
    y0, y1 = min(0.0, min(ys)), max(ys) * 1.08 or 1.0

    def at(x: float, y: float) -> tuple[int, int]:
        return (int(left + (x - x0) / (x1 - x0) * (w - left - right)),
                int(h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom)))

    font, grey = cv2.FONT_HERSHEY_SIMPLEX, (90, 90, 90)
    cv2.rectangle(image, at(x0, y0), at(x1, y1), grey, 1)
    for k in range(5):
        y = y0 + (y1 - y0) * k / 4
        cv2.putText(image, f"{y:.1f}", (4, at(x0, y)[1] + 4), font, 0.35, grey, 1, cv2.LINE_AA)
        x = x0 + (x1 - x0) * k / 4
        cv2.putText(image, f"{x:.0f}", (at(x, y0)[0] - 6, h - bottom + 14), font, 0.35, grey, 1, cv2.LINE_AA)
    cv2.putText(image, title, (left, 16), font, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(image, f"wall-clock minutes; y: {ylabel}", (left, h - 6), font, 0.35, grey, 1, cv2.LINE_AA)
    legend = []
    if hline:
        cv2.line(image, at(x0, hline[1]), at(x1, hline[1]), (150, 150, 150), 1, cv2.LINE_AA)
        legend.append((hline[0], (150, 150, 150)))
    for name, colour, sx, sy in series:
        points = np.array([at(x, y) for x, y in zip(sx, sy, strict=True)], np.int32)
        cv2.polylines(image, [points], False, colour, 2, cv2.LINE_AA)
        if len(points) < 30:
            for p in points:
                cv2.circle(image, tuple(int(v) for v in p), 3, colour, -1, cv2.LINE_AA)
        legend.append((name, colour))
    for k, (name, colour) in enumerate(legend):
        cv2.putText(image, name, (w - right - 150, top + 14 + 14 * k), font, 0.38, colour, 1, cv2.LINE_AA)
    return image


def report(args) -> dict:
    import cv2

    work = Path(args.work)
    summaries = {arm: json.loads((work / f"{arm}.summary.json").read_text()) for arm in ARMS}
    prior = center_prior_giou(work)
    real, control = summaries["real"], summaries["control"]
    final = {arm: 100.0 * s["val"][-1]["giou"] for arm, s in summaries.items()}
    scenes = json.loads((work / "release" / "scenes.json").read_text())
    numbers = {
        "val_giou": final, "center_prior_giou": prior,
        "giou_minus_center_prior": final["real"] - prior, "giou_minus_control": final["real"] - final["control"],
        "swap_hit_rate": real["swap_hit_rate"], "swap_hit_rate_control": control["swap_hit_rate"],
        "same_image_prediction_iou": {arm: s["same_image_prediction_iou"] for arm, s in summaries.items()},
        "targets": TARGETS, "steps": {arm: s["steps"] for arm, s in summaries.items()},
        "train_wall_minutes": {arm: round(s["train_wall_s"] / 60, 1) for arm, s in summaries.items()},
        "recipe": json.loads((work / "recipe.json").read_text()), "data_path": args.data, "recipe_name": args.recipe,
        "experiment": json.loads((work / "experiment.json").read_text()),
        "language_stage": (json.loads((work / "language.json").read_text())
                           if (work / "language.json").exists() else None),
        "data": {"train_scenes": len(scenes["train"]), "val_scenes": len(scenes["val"]), "objects_per_scene": 3},
        "machine": args.machine, "commit": args.commit,
    }
    numbers["reached"] = {k: numbers[k] >= v for k, v in TARGETS.items()}
    colours = {"real": (180, 110, 30), "control": (20, 120, 240)}
    loss_series, val_series = [], []
    for arm in ARMS:
        steps, vals = _metrics(work, arm)
        loss = np.array([s["loss"] for s in steps])
        kernel = max(1, min(25, len(loss)))
        minutes = [s["elapsed_s"] / 60 for s in steps][kernel - 1:]
        loss_series.append((arm, colours[arm], minutes, list(np.convolve(loss, np.ones(kernel) / kernel, "valid"))))
        label = "control (shuffled queries)" if arm == "control" else "real"
        val_series.append((label, colours[arm], [v["elapsed_s"] / 60 for v in vals], [100 * v["giou"] for v in vals]))
    figure = np.concatenate([_panel(loss_series, "training loss (moving mean of 25 steps)", "loss"),
                             _panel(val_series, "val gIoU, true queries", "gIoU x100",
                                    ("center prior", prior))], axis=1)
    Path(args.png).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.png), figure, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(numbers, indent=1) + "\n", encoding="utf-8")
    print(json.dumps({k: numbers[k] for k in ("val_giou", "center_prior_giou", "giou_minus_center_prior",
                                              "giou_minus_control", "swap_hit_rate", "swap_hit_rate_control",
                                              "same_image_prediction_iou", "train_wall_minutes", "reached")},
                     indent=1))
    return numbers


# ---------------------------------------------------------------------------------------------- main

def run_all(args) -> None:
    prepare(args)
    script = [sys.executable, __file__, "train", "--work", args.work, "--data", args.data, "--recipe", args.recipe]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([*script, "--arm", arm], env=env) for arm in ARMS]
    codes = [p.wait() for p in procs]
    if any(codes):
        sys.exit(f"an arm failed: exit codes {codes}")
    report(args)


def reference_recipe(args) -> None:
    """`--recipe reference`: after the language stage, the product's reference settings where they are not about
    scale (fresh draws through `data.reasonseg`, its lr, warmup and text-loss weight, the reference's trainable set
    with LoRA, the LLM trained); the data size, steps, batch and budget stay the script's."""
    from reasonseg.lisa.train import TrainConfig

    product = TrainConfig()
    args.lr, args.warmup, args.ce = product.lr, product.warmup_steps, product.loss["ce"]
    args.trainable, args.llm, args.data = list(product.trainable), "trained", "fresh"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("prepare", "train", "report", "all"))
    parser.add_argument("--work", required=True, help="work folder (outside the repository)")
    parser.add_argument("--arm", choices=ARMS, help="train: which arm")
    parser.add_argument("--data", choices=("fixed", "fresh"), default="fixed",
                        help="train: a fixed QA set built once by `reasonseg build qa` (default), or fresh draws of "
                             "texts and templates every time a sample is seen (the reference's way; see docs/lisa.md)")
    parser.add_argument("--train-scenes", type=int, default=400)
    parser.add_argument("--val-scenes", type=int, default=200)
    parser.add_argument("--steps", type=int, default=600, help="optimizer steps (the LR schedule spans them)")
    parser.add_argument("--val-every", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--ce", type=float, default=0.0,
                        help="weight of the text loss (the reference: 1.0; see docs/lisa.md for why 0 here)")
    parser.add_argument("--minutes", type=float, default=12.5, help="training wall-clock budget per arm")
    parser.add_argument("--commit", default=None, help="the code's git commit, recorded in the JSON")
    parser.add_argument("--trainable", nargs="+", default=["reference", "llm"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--llm", choices=("frozen", "trained"), default="frozen",
                        help="prepare: the arms keep the (language-trained) LLM frozen and train text_hidden_fcs and "
                             "the mask decoder (default; see docs/lisa.md for why), or also train --trainable")
    parser.add_argument("--language-steps", type=int, default=800,
                        help="prepare: first train the tiny LLM on language alone for this many steps (0: none)")
    parser.add_argument("--language-lr", type=float, default=1e-3)
    parser.add_argument("--png", default="lisa_learns_task.png")
    parser.add_argument("--json", default="lisa_learns_task.json")
    parser.add_argument("--machine", default="2-core CPU shared with other jobs, 1 torch thread per arm")
    parser.add_argument("--recipe", choices=("experiment", "reference"), default="experiment",
                        help="reference: the product's reference settings after the language stage (see "
                             "reference_recipe); overrides --lr, --warmup, --ce, --trainable, --llm and --data")
    args = parser.parse_args()
    if args.recipe == "reference":
        reference_recipe(args)
    {"prepare": prepare, "train": train_arm, "report": report, "all": run_all}[args.command](args)


if __name__ == "__main__":
    main()
