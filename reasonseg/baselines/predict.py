"""Run a registered method over a split and write a predictions file.

Queries are predicted in batches (methods may implement `predict_batch`). Long runs append every finished batch to
`<out>.partial.jsonl`; a rerun with the same method, split, protocol and options skips the queries already there,
and the final predictions file is written atomically, after which the partial file is removed.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..dataset import atomic_write_text
from ..errors import MethodError
from ..schema import Prediction, Query, Sample
from ..submission import FORMAT, VERSION, prediction_from_mask
from .registry import Method, MethodContext

PARTIAL_FORMAT = "reasonseg-predictions-partial"


@dataclass(frozen=True)
class RunContext(MethodContext):
    """A MethodContext with the named weight slots (`--weights NAME=PATH`) and free options (`--set KEY=VALUE`)."""

    weight_paths: dict[str, Path] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)


def weight_path(ctx: MethodContext, slot: str) -> Path | None:
    return getattr(ctx, "weight_paths", {}).get(slot)


def option(ctx: MethodContext, key: str, default, kind: Callable = str):
    """A `--set KEY=VALUE` option converted with `kind`; a malformed value is a user error."""
    raw = getattr(ctx, "options", {}).get(key)
    if raw is None:
        return default
    if kind is bool:
        return str(raw).lower() in ("1", "true", "yes", "on")
    try:
        return kind(raw)
    except (TypeError, ValueError):
        raise MethodError(f"option {key}={raw!r} is not a valid {kind.__name__}", field=key) from None


class MaskInfo(NamedTuple):
    """A mask with what the method wants recorded beside it (a phrase, a box, a score)."""

    mask: np.ndarray
    info: dict


def read_rgb(sample: Sample) -> np.ndarray:
    """The sample's image as an H x W x 3 RGB uint8 array (EXIF orientation applied, as sizes are)."""
    from PIL import Image, ImageOps

    try:
        with Image.open(sample.image_path) as im:
            return np.array(ImageOps.exif_transpose(im).convert("RGB"))  # writable: torch warns on read-only
    except OSError as exc:
        raise MethodError(f"cannot read image: {exc}", path=str(sample.image_path), sample_id=sample.id) from None


def _check(mask: np.ndarray, sample: Sample) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.shape != (sample.height, sample.width):
        raise MethodError(f"method returned a {'x'.join(map(str, mask.shape))} mask for a "
                          f"{sample.height}x{sample.width} image", sample_id=sample.id)
    return mask


def predict_batch(method: Method, pairs: Sequence[tuple[Sample, Query]]) -> list[tuple[np.ndarray, dict]]:
    """Masks (and recorded info) for a batch of queries, with the method's batch path when it has one."""
    if hasattr(method, "predict_batch"):
        outputs = method.predict_batch(list(pairs))
    else:
        outputs = [method.predict(sample, query) for sample, query in pairs]
    out = []
    for (sample, _), output in zip(pairs, outputs, strict=True):
        mask, info = (output.mask, output.info) if isinstance(output, MaskInfo) else (output, {})
        out.append((_check(mask, sample), info))
    return out


def predict_samples(method: Method, samples: Iterable[Sample], protocol: str = "lisa",
                    progress: Callable[[int], None] | None = None, batch_size: int = 1) -> list[Prediction]:
    """One prediction per scored query (text 0 under `lisa`, every text under `all-texts`), in memory."""
    pairs = [(s, q) for s in samples for q in s.queries(protocol)]
    predictions = []
    for start in range(0, len(pairs), max(batch_size, 1)):
        batch = pairs[start:start + max(batch_size, 1)]
        for (sample, query), (mask, _) in zip(batch, predict_batch(method, batch), strict=True):
            predictions.append(prediction_from_mask(sample.id, query.text_index, mask))
        if progress:
            progress(len(batch))
    return predictions


# ------------------------------------------------------------------------------------------- resumable runs

def partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial.jsonl")


def run_fingerprint(method: str, split: str, protocol: str, options: dict | None = None) -> str:
    """What a partial file must match to be resumed: results from other settings are never mixed in."""
    text = json.dumps({"method": method, "split": split, "protocol": protocol, "options": options or {}},
                      sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _read_partial(path: Path, fingerprint: str) -> tuple[dict[tuple[str, int], dict], int]:
    """Finished entries of a partial file and the byte length of its complete lines (a torn last line is dropped)."""
    entries: dict[tuple[str, int], dict] = {}
    good = 0
    with open(path, "rb") as fh:
        for n, line in enumerate(fh):
            if not line.endswith(b"\n"):
                break  # interrupted mid-write: the line is redone
            try:
                record = json.loads(line)
            except (UnicodeDecodeError, json.JSONDecodeError):
                break
            if n == 0:
                if record.get("format") != PARTIAL_FORMAT or record.get("fingerprint") != fingerprint:
                    raise MethodError("a partial file of a run with other settings is in the way", path=str(path),
                                      hint="pass --restart to discard it, or rerun with the same method, split, "
                                           "protocol and options")
            else:
                entries[(record["id"], int(record["text_index"]))] = record
            good += len(line)
    return entries, good


@dataclass
class RunResult:
    out: Path
    n_predicted: int        # computed in this run
    n_resumed: int          # taken from the partial file


def run_to_file(method: Method, samples: Sequence[Sample], out: str | os.PathLike, *, split: str, method_name: str,
                protocol: str = "lisa", batch_size: int = 1, options: dict | None = None, meta: dict | None = None,
                restart: bool = False, progress: Callable[[int], None] | None = None) -> RunResult:
    """Predict every query of `samples` into a predictions file, resumably (see the module docstring).

    The method's `describe()` (when it has one), updated with `meta`, is written as the file's `meta`; the info a
    method records per query (e.g. the phrase of vlm-grounded-sam) goes into each prediction's `info`. Readers of
    the contract ignore both.
    """
    out = Path(out)
    partial = partial_path(out)
    fingerprint = run_fingerprint(method_name, split, protocol, options)
    done: dict[tuple[str, int], dict] = {}
    if partial.exists() and not restart:
        done, good = _read_partial(partial, fingerprint)
        with open(partial, "r+b") as fh:
            fh.truncate(good)
    else:
        partial.parent.mkdir(parents=True, exist_ok=True)
        header = {"format": PARTIAL_FORMAT, "fingerprint": fingerprint, "method": method_name, "split": split,
                  "protocol": protocol}
        partial.write_text(json.dumps(header) + "\n", encoding="utf-8")
    pairs = [(s, q) for s in samples for q in s.queries(protocol)]
    todo = [(s, q) for s, q in pairs if q.key not in done]
    if progress and len(pairs) > len(todo):
        progress(len(pairs) - len(todo))
    size = max(int(batch_size), 1)
    with open(partial, "a", encoding="utf-8") as fh:
        for start in range(0, len(todo), size):
            batch = todo[start:start + size]
            lines = []
            for (sample, query), (mask, info) in zip(batch, predict_batch(method, batch), strict=True):
                pred = prediction_from_mask(sample.id, query.text_index, mask)
                record = {"id": pred.id, "text_index": pred.text_index, "mask": pred.rle}
                if info:
                    record["info"] = info
                done[query.key] = record
                lines.append(json.dumps(record, default=_jsonable) + "\n")
            fh.write("".join(lines))
            fh.flush()
            os.fsync(fh.fileno())
            if progress:
                progress(len(batch))
    document = {"format": FORMAT, "version": VERSION, "split": split, "method": method_name,
                "predictions": [done[q.key] for _, q in pairs]}
    recorded = dict(method.describe()) if callable(getattr(method, "describe", None)) else {}
    recorded.update(meta or {})
    if recorded:
        document["meta"] = recorded
    atomic_write_text(out, json.dumps(document, default=_jsonable))
    partial.unlink(missing_ok=True)
    return RunResult(out, len(todo), len(pairs) - len(todo))


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def method_meta(method: Method, name: str, oracle: bool) -> dict:
    """The file-level record of a run: the method's own description (weights, threshold) and the oracle flag."""
    meta = {"method": name, "oracle": oracle}
    describe = getattr(method, "describe", None)
    if callable(describe):
        meta.update(describe())
    return meta


# ------------------------------------------------------------------------------------------------- the demo

DEMO_MODEL_METHODS = ("clipseg", "grounded-sam", "vlm-grounded-sam", "oracle-box-sam", "oracle-sam-best")
# Small automatic-mask settings: random weights pass no quality filter, and 16 points keep the demo fast.
DEMO_OPTIONS = {"points_per_side": "4", "pred_iou_thresh": "0", "stability_score_thresh": "0"}
RANDOM_WEIGHTS = "random weights"


def demo_step(out: Path, release: Path, splits: Sequence[str] = ("val", "test"),
              methods: Sequence[str] = DEMO_MODEL_METHODS, bootstrap: int = 200) -> dict:
    """Build tiny random-initialised models, run the model methods on `release`, score them.

    Returns {"label": "random weights", "weights": {slot: path}, "methods": {name: {split: {"predictions": path,
    "results": path}}}}. The numbers only show that the pipeline runs end to end; the label says so.
    """
    import torch

    from .weights import offline, write_tiny_weights

    offline()
    out, release = Path(out), Path(release)
    threads = torch.get_num_threads()
    # Models of a few kilobytes run 10x faster on one thread than on many contending ones; restored below.
    torch.set_num_threads(1)
    try:
        return _demo_runs(out, release, splits, methods, bootstrap, write_tiny_weights(out / "weights"))
    finally:
        torch.set_num_threads(threads)


def _demo_runs(out: Path, release: Path, splits: Sequence[str], methods: Sequence[str], bootstrap: int,
               weights: dict[str, Path]) -> dict:
    from ..dataset import load_split
    from ..metrics.report import write_results
    from ..metrics.scoring import evaluate
    from .registry import get_method
    from .weights import slots_of

    done: dict[str, dict[str, dict[str, Path]]] = {}
    for name in methods:
        info = get_method(name)
        slot_paths = {s.name: weights[s.name] for s in slots_of(name) if s.name in weights}
        ctx = RunContext(release, None, "cpu", slot_paths, dict(DEMO_OPTIONS))
        method = info.build(ctx)
        meta = {**method_meta(method, name, info.oracle), "weights_label": RANDOM_WEIGHTS}
        for split in splits:
            preds = run_to_file(method, load_split(release, split), out / "predictions" / f"{name}-{split}.json",
                                split=split, method_name=f"{name} ({RANDOM_WEIGHTS})", batch_size=4,
                                options=DEMO_OPTIONS, meta=meta, restart=True).out
            evaluation = evaluate(release, preds, split, bootstrap=bootstrap)
            results = write_results(out / "results" / f"{name}-{split}.json", evaluation.document)
            done.setdefault(name, {})[split] = {"predictions": preds, "results": results}
    return {"label": RANDOM_WEIGHTS, "weights": weights, "methods": done}
