"""The per-query IoU histogram, as one SVG for every page that shows it (score report, leaderboard).

The model (bar geometry and counts) is separate from the drawing, so tests and templates can read the numbers.
Tick labels are the exact fractions (0.25, not 0.2) and the plot keeps a margin on both sides, so the end
labels are never clipped.
"""
from __future__ import annotations

import html
from collections.abc import Iterable

TICKS = (0.0, 0.25, 0.5, 0.75, 1.0)
MARGIN = 18          # px left and right of the plot: room for the centred end labels
TOP = 20             # px above the tallest bar: room for its count
BOTTOM = 38          # px below the bars: tick labels and the caption


def histogram_model(ious: Iterable[float | None], bins: int = 10, width: int = 420, height: int = 160) -> dict:
    """Counts of IoU values in `bins` equal bins over [0, 1] (None skipped; values outside clipped) and the bars'
    geometry in a plot `width` x `height` px placed MARGIN px from the left and TOP px from the top."""
    counts = [0] * bins
    for iou in ious:
        if iou is not None:
            counts[min(bins - 1, max(0, int(min(iou, 1.0) * bins)))] += 1
    top = max(counts) or 1
    step = width / bins
    bars = []
    for i, count in enumerate(counts):
        h = round(height * count / top)
        bars.append({"x": round(MARGIN + i * step, 1), "y": TOP + height - h, "w": round(step - 2, 1), "h": h,
                     "count": count, "lo": f"{i / bins:g}", "label": f"{i / bins:g}–{(i + 1) / bins:g}"})
    return {"bars": bars, "width": width, "height": height + TOP, "total": sum(counts)}


def histogram_svg(model: dict, element_id: str = "histogram", caption: str = "IoU of each query") -> str:
    """The model as an inline SVG: one <rect> per bar (with its count above it), ticks at 0, 0.25, ... 1."""
    width, base = model["width"], model["height"]
    parts = []
    for bar in model["bars"]:
        parts.append(f'<rect x="{bar["x"]}" y="{bar["y"]}" width="{bar["w"]}" height="{bar["h"]}" fill="#4a7bb7">'
                     f'<title>IoU {bar["label"]}: {bar["count"]} queries</title></rect>')
        if bar["count"]:
            parts.append(f'<text class="count" x="{bar["x"] + bar["w"] / 2:.1f}" y="{bar["y"] - 3}" font-size="10" '
                         f'text-anchor="middle">{bar["count"]}</text>')
    parts.append(f'<line x1="{MARGIN}" y1="{base}" x2="{MARGIN + width}" y2="{base}" stroke="#888"/>')
    for t in TICKS:
        x = MARGIN + t * width
        parts.append(f'<line x1="{x:.1f}" y1="{base}" x2="{x:.1f}" y2="{base + 4}" stroke="#888"/>'
                     f'<text class="tick" x="{x:.1f}" y="{base + 16}" font-size="10" text-anchor="middle">{t:g}</text>')
    parts.append(f'<text class="caption" x="{MARGIN + width / 2:.1f}" y="{base + BOTTOM - 4}" font-size="11" '
                 f'text-anchor="middle">{html.escape(caption)} ({model["total"]} queries)</text>')
    return (f'<svg id="{html.escape(element_id)}" class="histogram" width="{width + 2 * MARGIN}" '
            f'height="{base + BOTTOM}" role="img" aria-label="histogram of per-query IoU">{"".join(parts)}</svg>')
