"""Candidate images for annotators: a worksheet of manifest-ready rows and contact sheets.

`write_candidates(out, n, openimages=layout, split=...)` picks up to `n` images that have between
`min_instances` and `max_instances` instance masks, preferring images whose classes are still rare among the
picks (seeded, so the same inputs give the same worksheet), and writes::

    out/worksheet.jsonl     one row per image: a manifest line with empty `texts`/`targets`, plus `instances`
                            (numbered from 1: MaskPath and class) so `targets: [2]` can name instance 2
    out/sheets/<id>.jpg     the image with every instance outlined and numbered
    out/index.html          all sheets on one page (the contact sheet)

ScanNet frames (with `scannet=`) are offered the same way, their instances being `instance-filt` ids.
"""
from __future__ import annotations

import html
import json
import os
from pathlib import Path

import numpy as np

from ...dataset import atomic_write_text
from .openimages import OpenImagesLayout
from .scannet import ScanNetLayout

PALETTE = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212))


def _pick(pool: list[tuple[str, list[str]]], n: int, seed: int) -> list[int]:
    """Greedy, seeded: each pick maximises the number of its classes not yet seen (rare classes first)."""
    rng = np.random.default_rng(seed)
    order = [int(i) for i in rng.permutation(len(pool))]
    seen: dict[str, int] = {}
    picked: list[int] = []
    remaining = order
    while remaining and len(picked) < n:
        def gain(i: int) -> float:
            return sum(1.0 / (1 + seen.get(c, 0)) for c in set(pool[i][1]))
        best = max(remaining, key=lambda i: (gain(i), -remaining.index(i)))
        picked.append(best)
        remaining = [i for i in remaining if i != best]
        for c in set(pool[best][1]):
            seen[c] = seen.get(c, 0) + 1
    return picked


def _sheet(image: np.ndarray, masks: list[np.ndarray], numbers: list[int]) -> np.ndarray:
    import cv2

    sheet = image.copy()
    for k, mask in zip(numbers, masks, strict=True):
        colour = PALETTE[(k - 1) % len(PALETTE)][::-1]
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(sheet, contours, -1, colour, 2)
        ys, xs = np.nonzero(mask)
        if len(xs):
            x, y = int(np.median(xs)), int(np.median(ys))
            scale = max(0.5, min(image.shape[:2]) / 400)
            cv2.putText(sheet, str(k), (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 4, cv2.LINE_AA)
            cv2.putText(sheet, str(k), (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, 2, cv2.LINE_AA)
    return sheet


def _openimages_pool(layout: OpenImagesLayout, split: str, lo: int, hi: int) -> list[tuple[str, list, dict]]:
    from .openimages import read_class_names, read_mask_rows

    rows = read_mask_rows(layout.segmentation_csv(split))
    classes = layout.classes_csv()
    names = read_class_names(classes) if classes else {}
    pool = []
    for image_id in sorted(rows):
        instances = rows[image_id]
        if lo <= len(instances) <= hi and layout.image_path(split, image_id).is_file():
            labels = [names.get(r.label, r.label) for r in instances]
            pool.append((image_id, labels, {"rows": instances}))
    return pool


def _scannet_pool(layout: ScanNetLayout, lo: int, hi: int) -> list[tuple[str, list, dict]]:
    from .scannet import frame_locations, read_label_png, read_label_tsv

    labels = read_label_tsv(layout.path(layout.labels_tsv))
    pool = []
    scans = layout.path(layout.scans)
    for scene_dir in sorted(p for p in scans.iterdir() if p.is_dir()) if scans.is_dir() else []:
        frames = sorted(int(p.stem) for p in (scene_dir / "color").glob("*.jpg")) if (scene_dir / "color").is_dir() \
            else []
        for frame in frames:
            locations = frame_locations(layout, scene_dir.name, frame)
            instance, label = read_label_png(locations["instance"]), read_label_png(locations["label"])
            ids = [int(v) for v in np.unique(instance) if v != 0]
            if lo <= len(ids) <= hi:
                names = [labels.name(int(np.bincount(label[instance == i].ravel()).argmax())) for i in ids]
                pool.append((f"{scene_dir.name}/{frame}", names, {"ids": ids, "locations": locations}))
    return pool


def write_candidates(out: str | os.PathLike, n: int = 500, *, openimages: OpenImagesLayout | None = None,
                     split: str = "validation", scannet: ScanNetLayout | None = None, seed: int = 0,
                     min_instances: int = 2, max_instances: int = 20, overwrite: bool = False) -> dict:
    import cv2

    from ...errors import BuildError
    from ...outputs import check_output_dir, staged_output_dir
    from .openimages import decode_mask, fit_mask, mask_location, read_location_bytes
    from .scannet import read_label_png

    out = Path(out)
    check_output_dir(out, overwrite, error=BuildError)
    pool = []
    if openimages is not None:
        pool += [("openimages", *p) for p in _openimages_pool(openimages, split, min_instances, max_instances)]
    if scannet is not None:
        pool += [("scannet", *p) for p in _scannet_pool(scannet, min_instances, max_instances)]
    picks = _pick([(p[1], p[2]) for p in pool], n, seed)
    with staged_output_dir(out, overwrite, ("worksheet.jsonl", "index.html", "sheets"), error=BuildError) as tmp:
        (tmp / "sheets").mkdir()
        rows, cards = [], []
        for i in picks:
            source, key, class_names, extra = pool[i]
            if source == "openimages":
                image_path = openimages.image_path(split, key)
                image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
                h, w = image.shape[:2]
                folder = openimages.mask_folder(split)
                masks = []
                for r in extra["rows"]:
                    loc = mask_location(folder, key, r.mask_path, split)
                    masks.append(fit_mask(decode_mask(read_location_bytes(loc), loc[1]), h, w, loc[1]))
                instances = [{"n": k, "mask": r.mask_path, "class": c}
                             for k, (r, c) in enumerate(zip(extra["rows"], class_names, strict=True), start=1)]
                row = {"source": "openimages", "image_id": key, "split": split}
                sheet_name = key
            else:
                from .scannet import read_color

                data = read_color(extra["locations"]["color"])
                image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
                values = read_label_png(extra["locations"]["instance"])
                masks = [values == v for v in extra["ids"]]
                # Numbered by instance id, so `targets: [n]` is the instance id a ScanNet manifest line expects.
                instances = [{"n": v, "instance": v, "class": c}
                             for v, c in zip(extra["ids"], class_names, strict=True)]
                scene, frame = key.split("/")
                row = {"source": "scannet", "scene": scene, "frame": int(frame)}
                sheet_name = f"{scene}_{frame}"
            sheet = _sheet(image, masks, [x["n"] for x in instances])
            ok, jpeg = cv2.imencode(".jpg", sheet, [cv2.IMWRITE_JPEG_QUALITY, 88])
            (tmp / "sheets" / f"{sheet_name}.jpg").write_bytes(jpeg.tobytes())
            row.update({"instances": instances, "targets": [], "ignore": [], "texts": [], "is_sentence": None,
                        "contact_sheet": f"sheets/{sheet_name}.jpg"})
            rows.append(row)
            legend = ", ".join(f"{x['n']}: {html.escape(x['class'])}" for x in instances)
            cards.append(f'<figure><img src="sheets/{sheet_name}.jpg" loading="lazy"><figcaption>'
                         f"<b>{html.escape(key)}</b><br>{legend}</figcaption></figure>")
        atomic_write_text(tmp / "worksheet.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        atomic_write_text(tmp / "index.html", _index(cards))
    return {"rows": len(rows), "classes": len({c for i in picks for c in pool[i][2]})}


def _index(cards: list[str]) -> str:
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>ReasonSeg candidates</title>"
            "<style>body{font-family:system-ui,sans-serif;margin:1em}main{display:grid;grid-template-columns:"
            "repeat(auto-fill,minmax(320px,1fr));gap:12px}img{width:100%}figure{margin:0}</style></head><body>"
            "<h1>Candidate images</h1><p>Write an instruction for each image and name its target instances by "
            "number in <code>worksheet.jsonl</code> (<code>targets</code>).</p><main>" + "".join(cards)
            + "</main></body></html>\n")
