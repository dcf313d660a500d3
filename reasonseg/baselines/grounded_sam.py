"""Grounded-SAM: Grounding DINO finds the best box for the instruction, SAM turns the box into a mask.

The paper's Grounded-SAM row (docs/protocol.md §6) prompts the detector with the query text itself. SAM's image encoder
dominates the cost, so its embedding is kept for the last image and reused by every query on that image.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import MethodError
from ..schema import Query, Sample
from .predict import MaskInfo, option, read_rgb, weight_path
from .registry import MethodContext, register
from .weights import SAM_DEFAULT, Slot, declare, quiet_transformers, resolve

DINO = Slot("dino", "IDEA-Research/grounding-dino-tiny", "hub", "Grounding DINO")
SAM = Slot("sam", SAM_DEFAULT, "sam", "segment-anything")
def sam_from_state_dict(state: dict):
    """A segment-anything `Sam` whose sizes are read off the checkpoint (vit_h, vit_l, vit_b or a smaller one)."""
    from ..sam import build_sam, sam_config_from_state_dict

    try:
        config = sam_config_from_state_dict(state)
    except (KeyError, IndexError) as exc:
        raise MethodError(f"not a segment-anything checkpoint (no {exc})",
                          hint="pass a sam_vit_*.pth file from the segment-anything release") from None
    return build_sam(config)


def load_sam(path: Path, device: str = "cpu"):
    """Read a `sam_vit_*.pth` (a `torch.save`d state dict), as segment-anything's own builders do."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad file
        raise MethodError(f"cannot read the SAM checkpoint: {exc}", path=str(path)) from None
    sam = sam_from_state_dict(state)
    sam.load_state_dict(state)
    return sam.to(device).eval()


class SamSegmenter:
    """Box prompts and automatic masks on one image at a time, with the image embedding kept for reuse."""

    def __init__(self, sam, reuse_embedding: bool = True):
        from segment_anything import SamPredictor

        self.sam = sam
        self.predictor = SamPredictor(sam)
        self.reuse_embedding = reuse_embedding
        self.encoder_runs = 0
        self._image_key: object = None

    def set_image(self, key: object, rgb: np.ndarray) -> None:
        if self.reuse_embedding and key == self._image_key:
            return
        self.predictor.set_image(rgb)
        self.encoder_runs += 1
        self._image_key = key

    def box_mask(self, box: Sequence[float], multimask: bool = False) -> tuple[np.ndarray, float]:
        """SAM's mask for an XYXY pixel box (the highest-scored of three when `multimask`)."""
        masks, scores, _ = self.predictor.predict(box=np.asarray(box, np.float32), multimask_output=multimask)
        best = int(np.argmax(scores))
        return masks[best], float(scores[best])

    def box_masks(self, box: Sequence[float]) -> list[np.ndarray]:
        """All four of SAM's answers to a box: the single-mask output and the three multimask outputs."""
        single, _, _ = self.predictor.predict(box=np.asarray(box, np.float32), multimask_output=False)
        multi, _, _ = self.predictor.predict(box=np.asarray(box, np.float32), multimask_output=True)
        return [single[0], *multi]


def build_segmenter(ctx: MethodContext, method: str, first_slot: bool = False) -> tuple[SamSegmenter, Path]:
    # A bare --weights (ctx.weights) is the first slot's: SAM's for the oracles, the detector's otherwise.
    path = resolve(method, SAM, weight_path(ctx, "sam") or (ctx.weights if first_slot else None))
    sam = load_sam(path, ctx.device)
    return SamSegmenter(sam, reuse_embedding=option(ctx, "reuse_embedding", True, bool)), path


def detector_prompt(text: str) -> str:
    """Grounding DINO's expected text: lower case, one space between words, ending with a period."""
    text = " ".join(text.lower().split()).rstrip(" .")
    return (text or "object") + "."


class BoxDetector:
    """Grounding DINO from a `save_pretrained` folder: the highest-scoring box for each (image, text)."""

    def __init__(self, path: Path, device: str = "cpu"):
        import torch
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        quiet_transformers()
        self.torch = torch
        self.device = device
        self.processor = AutoProcessor.from_pretrained(path, local_files_only=True)
        self.model = AutoModelForZeroShotObjectDetection.from_pretrained(path, local_files_only=True)
        self.model.to(device).eval()
        self.max_text_len = int(getattr(self.model.config, "max_text_len", 256))

    def best_boxes(self, images: Sequence[np.ndarray], texts: Sequence[str]) -> list[tuple[list[float] | None, float]]:
        inputs = self.processor(images=list(images), text=list(texts), return_tensors="pt", padding=True,
                                truncation=True, max_length=self.max_text_len).to(self.device)
        with self.torch.inference_mode():
            outputs = self.model(**inputs)
        found = self.processor.post_process_grounded_object_detection(
            outputs, inputs["input_ids"], threshold=0.0, text_threshold=0.0,
            target_sizes=[im.shape[:2] for im in images])
        out = []
        for result, image in zip(found, images, strict=True):
            scores = result["scores"]
            if len(scores) == 0:
                out.append((None, 0.0))
                continue
            best = int(scores.argmax())
            h, w = image.shape[:2]
            x0, y0, x1, y1 = (float(v) for v in result["boxes"][best].tolist())
            box = [min(max(x0, 0.0), w), min(max(y0, 0.0), h), min(max(x1, 0.0), w), min(max(y1, 0.0), h)]
            out.append((box, float(scores[best])))
        return out


class GroundedSam:
    """Detector text → best box → SAM box prompt. `phrases` (when given) replace the instruction as detector text."""

    def __init__(self, detector: BoxDetector, segmenter: SamSegmenter, weights: dict[str, str],
                 min_box_score: float = 0.0):
        self.detector = detector
        self.segmenter = segmenter
        self.weights = weights
        self.min_box_score = min_box_score

    def describe(self) -> dict:
        return {"weights": self.weights, "detector_text": "the query text", "min_box_score": self.min_box_score}

    def segment(self, pairs: Sequence[tuple[Sample, Query]], texts: Sequence[str],
                images: dict[str, np.ndarray] | None = None) -> list[MaskInfo]:
        images = dict(images or {})
        for sample, _ in pairs:
            if sample.id not in images:
                images[sample.id] = read_rgb(sample)
        prompts = [detector_prompt(t) for t in texts]
        boxes = self.detector.best_boxes([images[s.id] for s, _ in pairs], prompts)
        out = []
        for (sample, _), prompt, (box, score) in zip(pairs, prompts, boxes, strict=True):
            info = {"detector_text": prompt, "box": box, "box_score": round(score, 4)}
            if box is None or score < self.min_box_score or box[2] <= box[0] or box[3] <= box[1]:
                out.append(MaskInfo(np.zeros((sample.height, sample.width), bool), info))
                continue
            self.segmenter.set_image(sample.image_path, images[sample.id])
            mask, _ = self.segmenter.box_mask(box)
            out.append(MaskInfo(mask, info))
        return out

    def predict_batch(self, pairs: Sequence[tuple[Sample, Query]]) -> list[MaskInfo]:
        return self.segment(pairs, [q.text for _, q in pairs])

    def predict(self, sample: Sample, query: Query) -> MaskInfo:
        return self.predict_batch([(sample, query)])[0]


def build_grounded(ctx: MethodContext, method: str, bare_is_detector: bool = True) -> GroundedSam:
    bare = ctx.weights if bare_is_detector else None
    dino_path = resolve(method, DINO, weight_path(ctx, "dino") or bare)
    segmenter, sam_path = build_segmenter(ctx, method)
    return GroundedSam(BoxDetector(dino_path, ctx.device), segmenter, {"dino": str(dino_path), "sam": str(sam_path)},
                       option(ctx, "min_box_score", 0.0, float))


declare("grounded-sam", DINO, SAM)


@register("grounded-sam", "Grounding DINO best box for the query text, then a SAM box prompt (the paper's "
                          "Grounded-SAM row)", weights=f"{DINO.model_id} + {SAM.model_id}")
def build_grounded_sam(ctx: MethodContext) -> GroundedSam:
    return build_grounded(ctx, "grounded-sam")
