"""The naive build: the same release as `build_release`, made the obvious way. The benchmark's baseline.

Same inputs, same checks, same polygons, same fidelity check, same report and manifest, byte for byte (a test
holds both to that). What it does not do is everything that makes `build_release` fast and flat:
- one process; every manifest line, record and problem is kept in lists, and the CSV rows in dicts;
- every image is fully decoded (to learn its size) and every mask fully decoded by Pillow and resized to the
  image on its own, with no reuse between pairs: a shard's member list is read again for every pair, the zip
  opened again for every mask, a ScanNet label image decoded again for every id;
- polygons and the fidelity check (with its diagnosis, for every pair) run on whole-image arrays;
- the manifest is written by `dataset.write_manifest`, which reads every sample of the release back.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from ...dataset import atomic_write_text, write_manifest
from ...errors import BuildError, ReasonSegError
from ...outputs import check_output_dir, staged_output_dir
from .build import (
    RELEASE_OUTPUTS,
    SOURCE_NOTES,
    Entry,
    Problem,
    Resolver,
    _unique_name,
    assign_splits,
    build_report,
    problem_error,
    read_instruction_manifest,
    write_report,
)
from .openimages import OpenImagesLayout
from .pair import Job, jpeg_of, read_image_bytes
from .scannet import ScanNetLayout


def _full_region(specs: list[tuple], height: int, width: int, label: str):
    from ...schema import Shape
    from .openimages import decode_mask_pillow, fit_mask, read_location_bytes
    from .scannet import read_label_png

    region = np.zeros((height, width), bool)
    shapes = []
    for spec in specs:
        if spec[0] == "polygon":
            shapes.append(Shape(label, tuple(map(tuple, spec[1]))))
            continue
        loc = spec[1]
        where = loc[1]
        if spec[0] == "binary":
            mask = decode_mask_pillow(read_location_bytes(loc), where)
        else:
            mask = read_label_png(loc) == spec[2]
            if not mask.any():
                raise BuildError(f"value {spec[2]} does not occur in this frame's "
                                 f"{Path(where.split('::')[-1]).parent} image", path=where, field="targets")
        region |= fit_mask(mask, height, width, where)
    return region, shapes


def naive_pair(job: Job) -> dict:
    """One pair, whole images all the way."""
    import cv2

    from ...masks import rasterize_shapes
    from .polygons import polygonize

    data = read_image_bytes(job)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise BuildError("image does not decode", path=job.image[1])
    height, width = image.shape[:2]
    jpeg, reencoded = jpeg_of(data, job.image[1])
    target, target_polys = _full_region(job.targets, height, width, "target")
    ignore, ignore_polys = _full_region(job.ignore, height, width, "ignore")
    extra = target_polys + ignore_polys
    drawn = rasterize_shapes(extra, height, width)
    full_target, full_ignore = target | (drawn == 1), ignore | (drawn == 255)
    if not (full_target & ~full_ignore).any():
        raise BuildError("the targets cover no pixel outside the ignore regions", field="targets")
    shapes, fidelity = polygonize(target, ignore if ignore.any() else None, extra, full_target=full_target,
                                  full_ignore=full_ignore, diagnose_all=True)
    folder = Path(job.out_dir) / job.split
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"text": job.texts, "is_sentence": job.is_sentence, "shapes": shapes, "source": job.source_doc,
           "imagePath": f"{job.name}.jpg", "imageHeight": height, "imageWidth": width}
    (folder / f"{job.name}.jpg").write_bytes(jpeg)
    (folder / f"{job.name}.json").write_bytes(json.dumps(doc, ensure_ascii=False).encode("utf-8"))
    return {"line": job.line, "name": job.name, "split": job.split, "source": job.source, "id": job.source_id,
            "is_sentence": job.is_sentence, "iou": fidelity.iou, "cause": fidelity.cause, "lost": fidelity.lost,
            "shapes": len(shapes), "points": sum(len(s["points"]) for s in shapes), "reencoded": reencoded}


def naive_build(manifest: str | os.PathLike, out: str | os.PathLike, *,
                openimages: OpenImagesLayout | None = None, scannet: ScanNetLayout | None = None,
                keep_going: bool = False, seed: int = 0, name: str = "ReasonSeg", version: str = "1.0",
                overwrite: bool = False) -> dict:
    """Build the release at `out` the naive way; return its report (a dict, all in memory)."""
    manifest, out = Path(manifest), Path(out)
    check_output_dir(out, overwrite, error=BuildError)
    entries: list[Entry] = []
    problems: list[Problem] = []

    def problem(p: Problem) -> None:
        if not keep_going:
            raise problem_error(p, manifest)
        problems.append(p)

    for _, item in read_instruction_manifest(manifest):
        if isinstance(item, Problem):
            problem(item)
        else:
            entries.append(item)
    if not entries and not problems:
        raise BuildError("the instruction manifest has no lines", path=str(manifest))
    splits = assign_splits([(e.source, e.is_sentence, e.release_split) for e in entries], seed)
    taken: set[str] = set()
    for e, split in zip(entries, splits, strict=True):
        e.split, e.name = split, _unique_name(e, taken)
    oi_ids: dict[str, set[str]] = {}
    for e in entries:
        if e.source == "openimages":
            oi_ids.setdefault(e.doc["split"], set()).add(e.doc["image_id"])
    resolver = Resolver(openimages, scannet)
    resolver.prepare(oi_ids, any(e.source == "scannet" for e in entries), None)
    try:
        with staged_output_dir(out, overwrite, RELEASE_OUTPUTS, error=BuildError) as tmp:
            jobs = []
            for e in entries:
                resolver.zip_names = {}  # no shard index kept from one pair to the next
                try:
                    jobs.append(resolver.job(e, tmp))
                except ReasonSegError as exc:
                    problem(Problem.of(exc, e.line, e.source_id))
            records = []
            for job in jobs:
                try:
                    records.append(naive_pair(job))
                except ReasonSegError as exc:
                    for suffix in (".jpg", ".json"):
                        (tmp / job.split / f"{job.name}{suffix}").unlink(missing_ok=True)
                    problem(Problem.of(exc, job.line, job.source_id))
            if not records:
                raise BuildError("no pair could be built", path=str(manifest),
                                 hint=problems[0].render() if problems else None)
            for split in {j.split for j in jobs} - {r["split"] for r in records}:
                shutil.rmtree(tmp / split, ignore_errors=True)
            explanations = {e.name: e.doc.get("explanation") for e in entries}
            texts = {e.name: e.doc["texts"][0] for e in entries}
            explanatory = [{"image": f"{r['name']}.jpg", "query": texts[r["name"]], "outputs": explanations[r["name"]]}
                           for r in sorted(records, key=lambda r: r["name"])
                           if r["split"] == "train" and explanations[r["name"]]]
            if any(r["split"] == "train" for r in records):
                atomic_write_text(tmp / "explanatory" / "train.json",
                                  json.dumps(explanatory, ensure_ascii=False, indent=1) + "\n")
            write_manifest(tmp, name=name, version=version,
                           sources={s: SOURCE_NOTES[s] for s in sorted({r["source"] for r in records})},
                           sample_sources={f"{r['split']}/{r['name']}": r["source"] for r in records})
            report = build_report(records, sorted(problems, key=lambda p: (p.line or 0, p.message)), manifest)
            write_report(tmp, report)
    finally:
        resolver.close()
    return report
