"""X-SAM's prediction dump read as a predictions file.

X-SAM's reasoning-segmentation evaluator writes a JSON list of records
`{"image_id": "<id>.jpg", "sample_id": <text index>, "pred_mask": <COCO RLE>}`: the image's file name and the
index of the text the mask answers (each text of an image is its own sample there). Each record becomes the
COCO-style results entry (`image_id` = sample id, `text_index`, `segmentation`) that `reasonseg.submission`
reads, so it goes through the very checks our files go through: unknown id, text index, mask size, RLE,
duplicates, each one line.
"""
from __future__ import annotations

from pathlib import PurePosixPath

from .dataset import IMAGE_SUFFIXES
from .errors import SubmissionError

FIELDS = ("image_id", "sample_id", "pred_mask")


def is_xsam_record(entry) -> bool:
    """Whether a JSON list's entry is an X-SAM record (it has `pred_mask` where COCO results have
    `segmentation`)."""
    return isinstance(entry, dict) and "pred_mask" in entry


def xsam_as_coco(entry: dict, n: int, where: str) -> dict:
    """An X-SAM record as a COCO-style results entry; the sample id is the image file name without its image
    suffix."""
    missing = [name for name in FIELDS if name not in entry]
    if missing:
        raise SubmissionError(f"an X-SAM record needs {', '.join(FIELDS)}; {missing[0]!r} is missing", path=where,
                              field=f"[{n}].{missing[0]}")
    image_id = entry["image_id"]
    if not isinstance(image_id, str) or not image_id:
        raise SubmissionError("'image_id' must be the image's file name, e.g. \"abc123.jpg\"", path=where,
                              field=f"[{n}].image_id")
    name = PurePosixPath(image_id)
    sample_id = name.stem if name.suffix.lower() in IMAGE_SUFFIXES else image_id
    return {"image_id": sample_id, "text_index": entry["sample_id"], "segmentation": entry["pred_mask"]}
