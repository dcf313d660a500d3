"""A static HTML report of one evaluation: the table, an IoU histogram, and overlays of the worst and best queries."""
from __future__ import annotations

import html
import os
from pathlib import Path

import numpy as np

from ..dataset import atomic_write_text
from ..masks import intervals_to_mask
from .figures import histogram_model, histogram_svg
from .groundtruth import query_kind
from .iou import SIZE_CLASSES
from .report import split_table
from .rules import rules_of_document
from .scoring import Evaluation

SIZE_NOTE = "; ".join(f"{name}: {rule}" for name, rule in SIZE_CLASSES.items())

GT_COLOUR = (255, 255, 0)      # BGR cyan: ground truth outline, over a black stroke
PRED_COLOUR = (0, 0, 230)      # BGR: prediction fill
IGNORE_COLOUR = (160, 160, 160)
MAX_OVERLAY_SIDE = 480


def _css(bgr: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*bgr[::-1])


def overlay_legend() -> str:
    """What the overlay colours mean, in the overlays' own colours (shared by the report and the comparison)."""
    return ('<p class="legend">'
            f'<span><span class="swatch" style="background:{_css(PRED_COLOUR)};opacity:0.6"></span> prediction</span>'
            f'<span><span class="swatch" style="border:2px solid {_css(GT_COLOUR)};outline:1px solid #000">'
            "</span> ground truth (outline)</span>"
            f'<span><span class="swatch" style="background:{_css(IGNORE_COLOUR)}"></span> ignore region</span></p>')


LEGEND_CSS = (".legend > span { margin-right: 12px; } .legend .swatch { display: inline-block; width: 14px; "
              "height: 14px; vertical-align: middle; margin-right: 4px; box-sizing: border-box; }")


def render_overlay(image: np.ndarray, target: np.ndarray, ignore: np.ndarray, prediction: np.ndarray
                   ) -> np.ndarray:
    """The image with the prediction filled in red, ignore in grey and the ground truth outlined in green."""
    import cv2

    out = image.copy()
    for mask, colour, alpha in ((ignore, IGNORE_COLOUR, 0.5), (prediction, PRED_COLOUR, 0.45)):
        sel = mask.astype(bool)
        out[sel] = (out[sel] * (1 - alpha) + np.array(colour) * alpha).astype(np.uint8)
    contours, _ = cv2.findContours(target.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    thickness = max(1, round(max(image.shape[:2]) / 300))
    cv2.drawContours(out, contours, -1, (0, 0, 0), thickness + 2)
    cv2.drawContours(out, contours, -1, GT_COLOUR, thickness)
    scale = MAX_OVERLAY_SIDE / max(out.shape[:2])
    if scale < 1:
        out = cv2.resize(out, (round(out.shape[1] * scale), round(out.shape[0] * scale)),
                         interpolation=cv2.INTER_AREA)
    return out


def drift_table_html(document: dict) -> str:
    """The drift table (every scorer's rules on one predictions file) as an HTML section."""
    from .drift import REFERENCE, drift_table, refusals

    header, rows = drift_table(document)
    notes = "".join(f"<li>{html.escape(line)}</li>" for line in refusals(document))
    return (f"<h2>Under every scorer's rules</h2><p>The same predictions scored as each scorer's own code scores "
            f"them (docs/protocol.md); ×100, Δ in points from <code>{REFERENCE}</code>; - where a scorer computes "
            "no cIoU.</p><table id=\"drift\"><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header)
            + "</tr></thead><tbody>" + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                                               for row in rows)
            + "</tbody></table>" + (f"<ul class=\"refused\">{notes}</ul>" if notes else ""))


def write_drift_report(out_dir: str | os.PathLike, gt, preds, drift: dict, *, method: str | None = None,
                       **options) -> Path:
    """The report of `score --rules all`: the report of the first profile that scores the file (lisa unless it
    refuses), with the drift table."""
    from .rules import PROFILES
    from .scoring import evaluate_predictions

    name = next((row["rules"] for row in drift["rows"] if "error" not in row), "lisa")
    evaluation = evaluate_predictions(gt, preds, rules=PROFILES[name], method=method, **options)
    return write_report(out_dir, evaluation, drift=drift)


def write_report(out_dir: str | os.PathLike, evaluation: Evaluation, n_examples: int = 6,
                 title: str | None = None, drift: dict | None = None) -> Path:
    """Write `index.html` and `overlays/*.png` into out_dir; returns the page's path. With a drift document
    (`metrics.drift`), the page shows the drift table too."""
    import cv2

    out_dir = Path(out_dir)
    (out_dir / "overlays").mkdir(parents=True, exist_ok=True)
    doc, gt, preds = evaluation.document, evaluation.ground_truth, evaluation.predictions
    policy, rules = doc["empty_union"], rules_of_document(doc)
    ranked = sorted(evaluation.scores, key=lambda s: (rules.iou(s) is None, rules.iou(s) or 0.0, s.id))
    ranked = [s for s in ranked if rules.iou(s) is not None]
    worst = ranked[:n_examples]
    best = ranked[::-1][:n_examples] if len(ranked) > n_examples else []
    sections = []
    for heading, chosen in (("Worst queries", worst), ("Best queries", best)):
        figures = []
        for s in chosen:
            mask = gt.masks[s.id]
            image = cv2.imread(str(gt.root / mask.image), cv2.IMREAD_COLOR)
            if image is None:
                image = np.full((mask.height, mask.width, 3), 255, np.uint8)
            pred = preds.masks.get((s.id, s.text_index))
            pred_mask = (intervals_to_mask(pred.intervals, mask.height, mask.width) if pred is not None
                         else np.zeros((mask.height, mask.width), np.uint8))
            overlay = render_overlay(image, intervals_to_mask(mask.target, mask.height, mask.width),
                                     intervals_to_mask(mask.ignore, mask.height, mask.width), pred_mask)
            name = f"{s.id}__{s.text_index}.png"
            cv2.imwrite(str(out_dir / "overlays" / name), overlay)
            text = mask.texts[s.text_index] if s.text_index < len(mask.texts) else ""
            kind = query_kind(s.is_sentence)
            figures.append(
                f'<figure><img src="overlays/{html.escape(name)}" alt="overlay of {html.escape(s.id)}">'
                f"<figcaption><b>{html.escape(s.id)}</b> ({kind}) IoU {rules.iou(s):.3f}<br>"
                f"{html.escape(text)}</figcaption></figure>")
        if figures:
            sections.append(f"<h2>{heading}</h2><div class='gallery'>{''.join(figures)}</div>")
    header, rows = split_table(doc)
    table = ("<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr></thead><tbody>"
             + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
             + "</tbody></table>")
    ious = [rules.iou(s) for s in evaluation.scores if rules.iou(s) is not None]
    name = title or f"{doc.get('method') or 'predictions'} on {doc['split']}"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(name)} · reasonseg</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}
.gallery {{ display: flex; flex-wrap: wrap; gap: 12px; }} figure {{ margin: 0; max-width: 480px; }}
figcaption {{ font-size: 0.85em; }} {LEGEND_CSS}
</style></head><body>
<h1>{html.escape(name)}</h1>
<p>Rules <code>{html.escape(rules_of_document(doc).label)}</code>, protocol
<code>{html.escape(doc['protocol'])}</code>, empty union scores <code>{html.escape(policy)}</code>,
{doc['bootstrap']['resamples']} bootstrap resamples of images ({doc['bootstrap']['confidence']:.0%} intervals).
Values ×100.</p>
{table}
<p><small>small / medium / large: {html.escape(SIZE_NOTE)}.</small></p>
{drift_table_html(drift) if drift else ""}
<h2>Per-query IoU</h2>{histogram_svg(histogram_model(ious, bins=20))}
{overlay_legend()}
{''.join(sections)}
<p><small>predictions {html.escape(doc.get('predictions_sha256') or 'in memory (no file)')}
· reasonseg {html.escape(doc['reasonseg_version'])}</small></p>
</body></html>
"""
    index = out_dir / "index.html"
    atomic_write_text(index, page)
    return index
