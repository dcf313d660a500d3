"""`qa stats`: what a QA set holds, per source; and a class-frequency bar chart (PNG, drawn with OpenCV)."""
from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

import numpy as np

from ...masks import rle_counts
from .items import GROUPS
from .reader import QADataset

AREA_BINS = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0)
STATS_FILE, PLOT_FILE = "stats.json", "class_frequency.png"


def _area_fraction(rle: dict) -> float:
    runs = rle_counts(rle)
    h, w = rle["size"]
    return float(runs[1::2].sum()) / max(h * w, 1)


def target_key(name: str) -> str:
    """One name per target however a source phrases it: lower case, no articles, and "the antenna of the car"
    read as "car antenna" (PASCAL-Part's "<part> of <object>" against PACO's "<object> <part>")."""
    words = [w for w in name.lower().replace("_", " ").split() if w not in ("a", "an", "the")]
    part, of, whole = " ".join(words).partition(" of ")
    return f"{whole} {part}" if of and part and whole else " ".join(words)


def qa_stats(folder: str | os.PathLike, top: int = 20) -> dict:
    """Records, turns and masks per source, most frequent targets, template usage, mask-area distribution, and
    the skips / empty items / redraws that build.json recorded."""
    data = QADataset(folder, decode_masks=False)
    per_source: dict[str, Counter] = {}
    targets, templates, areas = Counter(), Counter(), []
    for raw in data.raw_records():
        counts = per_source.setdefault(raw["source"], Counter())
        counts["records"] += 1
        counts["turns"] += len(raw["conversations"]) // 2
        counts["masks"] += len(raw["masks"])
        counts["with_ignore"] += raw.get("ignore") is not None
        targets.update(target_key(t) for t in raw["targets"])
        for pair in raw["templates"]:
            templates.update(pair)
        areas.extend(_area_fraction(m) for m in raw["masks"])
    build = data.build
    groups = {name: s.get("group") for name, s in build.get("sources", {}).items()}
    for name, counts in per_source.items():
        counts["skipped"] = sum(s["source"] == name for s in build.get("skipped", []))
        counts["empty_items"] = build.get("empty_items", {}).get(name, 0)
        counts["redrawn_items"] = build.get("redrawn_items", {}).get(name, 0)
    area = np.array(areas, float)
    hist = np.histogram(area, bins=AREA_BINS)[0] if area.size else np.zeros(len(AREA_BINS) - 1, int)
    n = sum(c["records"] for c in per_source.values())
    by_group = Counter()
    for name, counts in per_source.items():
        by_group[groups.get(name) or "unknown"] += counts["records"]
    return {
        "folder": str(Path(folder)),
        "records": n,
        "groups": {g: by_group[g] for g in (*GROUPS, "unknown") if by_group[g]},
        "sources": {name: dict(per_source[name]) for name in sorted(per_source)},
        "top_targets": targets.most_common(top),
        "distinct_targets": len(targets),
        "templates": dict(sorted(templates.items())),
        "mask_area": {
            "count": int(area.size),
            "quantiles": ({q: float(np.quantile(area, float(q))) for q in ("0", "0.1", "0.5", "0.9", "1")}
                          if area.size else {}),
            "histogram": {f"{lo:g}-{hi:g}": int(c)
                          for lo, hi, c in zip(AREA_BINS[:-1], AREA_BINS[1:], hist, strict=True)},
        },
        "skipped": build.get("skipped", []),
        "build_options": build.get("options", {}),
    }


def write_stats(folder: str | os.PathLike, out: str | os.PathLike | None = None, top: int = 20,
                plot: bool = True) -> tuple[dict, Path, Path | None]:
    """qa_stats written as stats.json (+ class_frequency.png) into `out` (default: the QA folder)."""
    from ...dataset import atomic_write_text

    stats = qa_stats(folder, top)
    out = Path(out or folder)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / STATS_FILE, json.dumps(stats, indent=1, ensure_ascii=False) + "\n")
    png = None
    if plot and stats["top_targets"]:
        png = out / PLOT_FILE
        write_bar_chart(png, stats["top_targets"], f"{stats['records']} records: most asked targets")
    return stats, out / STATS_FILE, png


def write_bar_chart(path: Path, rows: list[tuple[str, int]], title: str) -> None:
    """A horizontal bar chart as PNG, drawn with OpenCV (matplotlib is not a dependency)."""
    import cv2

    bar_h, left, width, top_margin = 22, 260, 900, 44
    height = top_margin + bar_h * len(rows) + 16
    img = np.full((height, width, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(img, title[:90], (10, 28), font, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    peak = max(c for _, c in rows) or 1
    for k, (name, count) in enumerate(rows):
        y = top_margin + k * bar_h
        label = name if len(name) <= 32 else name[:29] + "..."
        label = label.encode("ascii", "replace").decode()
        cv2.putText(img, label, (10, y + 15), font, 0.45, (40, 40, 40), 1, cv2.LINE_AA)
        length = int((width - left - 70) * count / peak)
        cv2.rectangle(img, (left, y + 3), (left + max(length, 1), y + bar_h - 3), (180, 120, 40), -1)
        cv2.putText(img, str(count), (left + length + 6, y + 15), font, 0.45, (40, 40, 40), 1, cv2.LINE_AA)
    ok, buf = cv2.imencode(".png", img)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buf.tobytes())
    os.replace(tmp, path)
