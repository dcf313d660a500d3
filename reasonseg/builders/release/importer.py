"""Import the public ReasonSeg release: normalize it without changing any ground-truth pixel.

What changes: cp1252 annotation files are transcoded to UTF-8 (the text is decoded and re-encoded; no other
byte moves), `.JPG`/`.jpeg` names become `.jpg` (bytes kept) so the reference loader sees them, and a
`manifest.json` with checksums is added, with an import report. What never changes: image bytes, JSON content
(keys, points, labels, texts), so the rasterized ground truth is identical; `import_release` checks that per
sample. Known defects (shape-less JSONs, empty ground truth, orphans, non-JPEG images, blank texts, unknown
labels, degenerate polygons) are reported, not repaired.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...dataset import (
    IMAGE_SUFFIXES,
    KNOWN_LABELS,
    atomic_write_text,
    decode_annotation,
    image_size,
    parse_shapes,
    write_manifest,
)
from ...errors import BuildError, DatasetError
from ...outputs import check_output_dir, staged_output_dir
from ...schema import SPLITS
from .build import RELEASE_OUTPUTS

IMPORT_REPORT = "import_report.json"
IMPORT_TEXT = "import_report.txt"


@dataclass
class ImportResult:
    out: Path
    report: dict


def _gt(shapes, height: int, width: int) -> np.ndarray:
    from ...masks import rasterize_shapes

    return rasterize_shapes(shapes, height, width)


def import_release(src: str | os.PathLike, out: str | os.PathLike, *, name: str = "ReasonSeg",
                   version: str = "public", overwrite: bool = False) -> ImportResult:
    src, out = Path(src), Path(out)
    if not src.is_dir() or not any((src / s).is_dir() for s in SPLITS):
        raise BuildError("not a ReasonSeg release: no train/, val/ or test/ folder", path=str(src),
                         hint="point --from-release at the folder that holds the split folders")
    check_output_dir(out, overwrite, error=BuildError)
    defects: list[dict] = []
    counts: dict[str, dict] = {}
    sample_sources: dict[str, str] = {}

    def defect(kind: str, path: Path, message: str, sample_id: str | None = None) -> None:
        defects.append({"kind": kind, "file": path.relative_to(src).as_posix(), "id": sample_id, "message": message})

    with staged_output_dir(out, overwrite, RELEASE_OUTPUTS, error=BuildError) as tmp:
        for split in SPLITS:
            folder = src / split
            if not folder.is_dir():
                continue
            stats = counts.setdefault(split, {"samples": 0, "transcoded": 0, "renamed": 0, "no_shapes": 0,
                                              "empty_gt": 0})
            files = sorted(p for p in folder.iterdir() if p.is_file())
            images = {p.stem: p for p in files if p.suffix.lower() in IMAGE_SUFFIXES}
            jsons = {p.stem: p for p in files if p.suffix.lower() == ".json"}
            for stem in sorted(set(jsons) - set(images)):
                defect("orphan annotation", jsons[stem], "annotation has no image: left out", stem)
            for stem in sorted(set(images) - set(jsons)):
                defect("orphan image", images[stem], "image has no annotation: left out", stem)
            (tmp / split).mkdir()
            for stem in sorted(set(images) & set(jsons)):
                image, ann = images[stem], jsons[stem]
                is_jpeg = image.suffix.lower() in (".jpg", ".jpeg")
                if not is_jpeg:
                    defect("not jpeg", image, f"{image.suffix} image: the reference loader reads .jpg only; "
                           "kept as it is (converting would change pixels)", stem)
                raw = ann.read_bytes()
                decoded = decode_annotation(raw)
                if decoded is None:
                    defect("unreadable annotation", ann, "not valid JSON in UTF-8 or cp1252: left out", stem)
                    continue
                text, data, encoding = decoded
                try:
                    shapes = parse_shapes(data if isinstance(data, dict) else {}, ann, stem)
                    height, width = image_size(image)
                except DatasetError as exc:
                    defect("malformed", ann, exc.message + ": left out", stem)
                    continue
                out_json = tmp / split / f"{stem}.json"
                if encoding == "utf-8":
                    out_json.write_bytes(raw)
                else:
                    out_json.write_bytes(text.encode("utf-8"))
                    stats["transcoded"] += 1
                    defect("cp1252", ann, "encoded in cp1252: transcoded to UTF-8", stem)
                suffix = ".jpg" if is_jpeg else image.suffix
                if is_jpeg and image.suffix != ".jpg":
                    stats["renamed"] += 1
                    defect("suffix", image, f"renamed {image.name} to {stem}.jpg (bytes unchanged)", stem)
                shutil.copyfile(image, tmp / split / f"{stem}{suffix}")
                again = parse_shapes(json.loads(out_json.read_text(encoding="utf-8")), out_json, stem)
                if not np.array_equal(_gt(shapes, height, width), _gt(again, height, width)):
                    raise BuildError("normalizing changed the ground truth", path=str(ann), sample_id=stem)
                stats["samples"] += 1
                _sample_defects(data, shapes, height, width, ann, stem, stats, defect)
                src_doc = data.get("source") if isinstance(data, dict) else None
                dataset = src_doc.get("dataset") if isinstance(src_doc, dict) else src_doc
                if isinstance(dataset, str) and dataset:
                    sample_sources[f"{split}/{stem}"] = dataset
            if not any((tmp / split).iterdir()):
                (tmp / split).rmdir()
        explanatory = src / "explanatory" / "train.json"
        if explanatory.is_file():
            decoded = decode_annotation(explanatory.read_bytes())
            if decoded is None:
                raise BuildError("explanatory file is not valid JSON in UTF-8 or cp1252", path=str(explanatory))
            text, _, encoding = decoded
            if encoding != "utf-8":
                defect("cp1252", explanatory, "encoded in cp1252: transcoded to UTF-8")
            atomic_write_text(tmp / "explanatory" / "train.json", text)
        if not any((tmp / s).is_dir() for s in SPLITS):
            raise BuildError("no sample could be imported", path=str(src))
        write_manifest(tmp, name=name, version=version, sources={"import": {"from": "public ReasonSeg release"}},
                       sample_sources=sample_sources or None)
        report = {"format": "reasonseg-import-report", "version": 1, "counts": counts, "defects": defects}
        atomic_write_text(tmp / IMPORT_REPORT, json.dumps(report, ensure_ascii=False, indent=1) + "\n")
        atomic_write_text(tmp / IMPORT_TEXT, import_text(report))
    return ImportResult(out, report)


def _sample_defects(data, shapes, height, width, path, stem, stats, defect) -> None:
    if not data.get("shapes"):
        stats["no_shapes"] += 1
        defect("no shapes", path, "no shapes: empty ground truth (kept; LISA issue #157)", stem)
    elif not (_gt(shapes, height, width) == 1).any():
        stats["empty_gt"] += 1
        defect("empty gt", path, "no target pixel after rasterization (kept)", stem)
    texts = data.get("text")
    if not isinstance(texts, list) or not texts:
        defect("no text", path, "'text' is missing or empty: the lisa protocol scores text[0]", stem)
    elif any(not isinstance(t, str) or not t.strip() for t in texts):
        defect("blank text", path, "a text is blank", stem)
    for k, shape in enumerate(shapes):
        label = shape.label.lower()
        if label not in KNOWN_LABELS and "ignore" not in label:
            defect("unknown label", path, f"shapes[{k}] label {shape.label!r} is drawn as target", stem)
        if not shape.is_flag and len(shape.points) < 3:
            defect("degenerate polygon", path, f"shapes[{k}] has {len(shape.points)} point(s)", stem)


def import_text(report: dict) -> str:
    lines = ["ReasonSeg import report"]
    for split, c in report["counts"].items():
        lines.append(f"  {split:<5} {c['samples']:>5} samples, {c['transcoded']} transcoded, {c['renamed']} renamed, "
                     f"{c['no_shapes']} without shapes, {c['empty_gt']} with empty ground truth")
    if report["defects"]:
        lines += ["", "Defects:"]
        lines += [f"  {d['kind']}: {d['file']}: {d['message']}" for d in report["defects"]]
    return "\n".join(lines) + "\n"
