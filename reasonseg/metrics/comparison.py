"""One HTML page comparing several results files: Table 1 layout with CIs, the paper's reported rows beside the
measured ones, paired significance against the best method of each split, a per-query IoU scatter of the two best
methods and a gallery of the queries where they disagree most. Oracles are flagged and never chosen as "best".

Results files hold per-query I and U but no masks: the gallery draws masks when the predictions files are given
(or sit in a sibling `predictions/` folder under the same name) and match the results' `predictions_sha256`.
"""
from __future__ import annotations

import hashlib
import html
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..dataset import atomic_write_text
from ..errors import ResultsError
from .groundtruth import query_kind
from .html import LEGEND_CSS, overlay_legend
from .report import read_results, scores_from_results, table1
from .stats import P_VALUE_NOTE, image_sums, paired_comparison


@dataclass
class Entry:
    label: str
    split: str
    path: Path
    document: dict
    oracle: bool
    predictions: Path | None = None


def _is_oracle(method: str, document: dict) -> bool:
    if document.get("oracle"):
        return True
    name = method.split(" (")[0]
    try:
        from ..baselines.registry import methods

        info = methods().get(name)
    except Exception:  # noqa: BLE001 - a broken optional method module must not break a report
        info = None
    return bool(info and info.oracle) or name.startswith("oracle")


def _sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def load_entries(paths: Sequence[str | os.PathLike], predictions: Sequence[str | os.PathLike] = ()) -> list[Entry]:
    by_hash = {}
    for p in predictions:
        by_hash[_sha256(Path(p))] = Path(p)
    entries, seen = [], set()
    for raw in paths:
        path = Path(raw)
        doc = read_results(path)
        method = doc.get("method") or path.stem
        label = method if (method, doc["split"]) not in seen else f"{method} [{path.stem}]"
        seen.add((method, doc["split"]))
        want = doc.get("predictions_sha256")
        found = by_hash.get(want)
        for candidate in (path.parent.parent / "predictions" / path.name, path.parent / f"{path.stem}.preds.json"):
            if found is None and candidate.is_file() and _sha256(candidate) == want:
                found = candidate
        entries.append(Entry(label, doc["split"], path, doc, _is_oracle(method, doc), found))
    if not entries:
        raise ResultsError("no results files to compare")
    return entries


def foreign_entries(entries: Sequence[Entry], data_root: Path, allow: bool = False) -> list[Entry]:
    """The entries scored on other annotations than data_root's split (raises unless `allow`)."""
    from .groundtruth import load_ground_truth
    from .report import check_same_data

    fingerprints = {}
    foreign = []
    for e in entries:
        if e.split not in fingerprints:
            fingerprints[e.split] = load_ground_truth(data_root, e.split).fingerprint
        if not check_same_data(e.document, fingerprints[e.split], str(e.path), allow):
            foreign.append(e)
    return foreign


def _display(entry: Entry) -> str:
    return f"{entry.label} [oracle]" if entry.oracle else entry.label


def results_by_row(entries: Sequence[Entry]) -> dict[str, dict[str, dict]]:
    """Table 1's input: a row label (oracles and rules other than lisa marked) -> split -> results document."""
    from .rules import rules_marked

    results: dict[str, dict[str, dict]] = {}
    for e in entries:
        results.setdefault(rules_marked(_display(e), e.document), {})[e.split] = e.document
    return results


def measured_table(entries: Sequence[Entry]) -> tuple[list[str], list[list[str]]]:
    return table1(results_by_row(entries))


def reported_rows(header: Sequence[str]) -> list[list[str]]:
    """The paper's Table 1 rows (reasonseg/paper.py) in the measured table's columns; other columns are blank."""
    from ..paper import PAPER_TABLE1

    rows = []
    for row in PAPER_TABLE1:
        cells = [row.method]
        for column in header[1:]:
            split, _, group = column.partition(" ")
            cell = row.groups(split).get(group or "overall") if split in ("val", "test") else None
            cells.append(f"{100 * cell['giou']:.1f} / {100 * cell['ciou']:.1f}" if cell else "")
        rows.append(cells)
    return rows


def best_of(entries: Sequence[Entry]) -> Entry | None:
    candidates = [e for e in entries if not e.oracle] or list(entries)
    return max(candidates, key=lambda e: e.document["groups"]["overall"]["giou"]) if candidates else None


def significance(entries: Sequence[Entry], n_resamples: int = 2000, seed: int = 0) -> list[dict]:
    """Per split: every method against the best non-oracle one (paired over images; B − best). The same test as
    `compare` (`stats.paired_comparison`) with the same default resamples and seed, so both print the same p."""
    rows = []
    for split in sorted({e.split for e in entries}):
        members = [e for e in entries if e.split == split]
        best = best_of(members)
        if best is None:
            continue
        base = image_sums(scores_from_results(best.document, str(best.path)), best.document.get("empty_union", "one"))
        for e in members:
            if e is best:
                continue
            other = image_sums(scores_from_results(e.document, str(e.path)), e.document.get("empty_union", "one"))
            try:
                diffs = paired_comparison(base, other, n_resamples, seed=seed)
            except ResultsError as exc:
                rows.append({"split": split, "best": _display(best), "method": _display(e), "error": exc.message})
                continue
            rows.append({"split": split, "best": _display(best), "method": _display(e),
                         **{d.metric: d for d in diffs}})
    return rows


def _query_ious(entry: Entry) -> dict[tuple[str, int], float]:
    return {(q["id"], int(q["text_index"])): q["iou"] for q in entry.document["queries"] if q.get("iou") is not None}


def scatter_svg(a: Entry, b: Entry, plot: int = 260, left: int = 56, bottom: int = 46, top: int = 12,
                right: int = 14) -> str:
    """Per-query IoU of b against a. The axis titles sit outside the tick labels' margin, so they never overlap."""
    ia, ib = _query_ious(a), _query_ious(b)
    keys = sorted(set(ia) & set(ib))
    width, height = left + plot + right, top + plot + bottom

    def x(v):
        return left + plot * min(max(v, 0.0), 1.0)

    def y(v):
        return top + plot - plot * min(max(v, 0.0), 1.0)

    dots = "".join(f'<circle cx="{x(ia[k]):.1f}" cy="{y(ib[k]):.1f}" r="3" fill="#4a7bd0" fill-opacity="0.6">'
                   f"<title>{html.escape(k[0])}#{k[1]}: {ia[k]:.3f} vs {ib[k]:.3f}</title></circle>" for k in keys)
    ticks = "".join(f'<text class="xtick" x="{x(t):.0f}" y="{top + plot + 15}" font-size="10" '
                    f'text-anchor="middle">{t:g}</text>'
                    f'<text class="ytick" x="{left - 6}" y="{y(t) + 3:.0f}" font-size="10" '
                    f'text-anchor="end">{t:g}</text>'
                    for t in (0, 0.5, 1))
    return (f'<svg class="scatter" width="{width}" height="{height}" role="img" aria-label="per-query IoU of '
            f'{html.escape(a.label)} against {html.escape(b.label)}">'
            f'<rect x="{left}" y="{top}" width="{plot}" height="{plot}" fill="none" stroke="#999"/>'
            f'<line x1="{x(0)}" y1="{y(0)}" x2="{x(1)}" y2="{y(1)}" stroke="#bbb" stroke-dasharray="4 3"/>'
            f"{dots}{ticks}"
            f'<text class="xtitle" x="{left + plot / 2}" y="{height - 8}" font-size="11" text-anchor="middle">'
            f"{html.escape(a.label)} IoU</text>"
            f'<text class="ytitle" x="14" y="{top + plot / 2}" font-size="11" text-anchor="middle" '
            f'transform="rotate(-90 14 {top + plot / 2})">{html.escape(b.label)} IoU</text></svg>')


def disagreements(a: Entry, b: Entry, n: int) -> list[tuple[tuple[str, int], float, float]]:
    ia, ib = _query_ious(a), _query_ious(b)
    keys = sorted(set(ia) & set(ib), key=lambda k: (-abs(ia[k] - ib[k]), k))
    return [(k, ia[k], ib[k]) for k in keys[:n]]


def _gallery(out_dir: Path, data_root: Path, a: Entry, b: Entry, n: int) -> str:
    import cv2

    from ..masks import intervals_to_mask
    from ..submission import read_predictions
    from .groundtruth import load_ground_truth
    from .html import render_overlay

    chosen = disagreements(a, b, n)
    if not chosen:
        return ""
    gt = load_ground_truth(data_root, a.split)
    preds = {e.label: read_predictions(e.predictions) if e.predictions else None for e in (a, b)}
    (out_dir / "gallery").mkdir(parents=True, exist_ok=True)
    figures = []
    for (sid, k), iou_a, iou_b in chosen:
        mask = gt.masks.get(sid)
        if mask is None:
            continue
        image = cv2.imread(str(gt.root / mask.image), cv2.IMREAD_COLOR)
        if image is None:
            image = np.full((mask.height, mask.width, 3), 255, np.uint8)
        target = intervals_to_mask(mask.target, mask.height, mask.width)
        ignore = intervals_to_mask(mask.ignore, mask.height, mask.width)
        panels = []
        for entry, value in ((a, iou_a), (b, iou_b)):
            found = preds[entry.label].masks.get((sid, k)) if preds[entry.label] else None
            pred = (intervals_to_mask(found.intervals, mask.height, mask.width) if found is not None
                    else np.zeros((mask.height, mask.width), np.uint8))
            name = f"{sid}__{k}__{'ab'[entry is b]}.png"
            cv2.imwrite(str(out_dir / "gallery" / name), render_overlay(image, target, ignore, pred))
            note = "" if found is not None else " (mask not drawn: predictions file not given)"
            panels.append(f'<figure><img src="gallery/{html.escape(name)}" alt="{html.escape(entry.label)} on '
                          f'{html.escape(sid)}"><figcaption>{html.escape(entry.label)}: IoU {value:.3f}'
                          f"{html.escape(note)}</figcaption></figure>")
        text = mask.texts[k] if k < len(mask.texts) else ""
        figures.append(f'<div class="pair"><p><b>{html.escape(sid)}</b>#{k} ({query_kind(mask.is_sentence)})'
                       f" Δ {iou_b - iou_a:+.3f}: {html.escape(text)}</p>{''.join(panels)}</div>")
    return "".join(figures)


def _cell(text: str) -> str:
    return "<td>" + html.escape(text).replace("\n", "<br><small>") + "</td>"


def _diff_cell(d) -> str:
    return (f"<td>{100 * d.delta:+.1f} [{100 * d.ci[0]:+.1f}, {100 * d.ci[1]:+.1f}]"
            f"{' *' if d.p_value < 0.05 else ''}<br><small>p = {d.p_value:.4f}</small></td>")


def write_comparison(out_dir: str | os.PathLike, data_root: str | os.PathLike, results: Sequence[str | os.PathLike],
                     predictions: Sequence[str | os.PathLike] = (), show_reported: bool = True, n_gallery: int = 8,
                     n_resamples: int = 2000, title: str | None = None,
                     allow_different_data: bool = False, rules: str | None = None) -> Path:
    """Write `index.html` (+ `gallery/*.png`) into out_dir; returns the page's path.

    Results scored on other annotations than data_root's are refused (`ResultsError` naming both hashes) unless
    `allow_different_data`, in which case the page says which ones.
    """
    out_dir, data_root = Path(out_dir), Path(data_root)
    entries = load_entries(results, predictions)
    from .rules import check_one_rules, document_rules_label

    # One page compares numbers under one set of rules (`rules`, when named); non-lisa rows are marked.
    check_one_rules({str(e.path): document_rules_label(e.document) for e in entries}, wanted=rules,
                    hint="score them under one --rules")
    other_data = foreign_entries(entries, data_root, allow_different_data)
    out_dir.mkdir(parents=True, exist_ok=True)
    header, rows = measured_table(entries)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join('<tr class="measured">' + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
    if show_reported:
        from ..paper import SOURCE

        body += (f'<tr><th colspan="{len(header)}" class="section">reported in the paper (not re-measured): '
                 f"{html.escape(SOURCE)}</th></tr>")
        body += "".join('<tr class="reported">' + "".join(_cell(c) for c in row) + "</tr>"
                        for row in reported_rows(header))
    sig_rows = []
    for r in significance(entries, n_resamples):
        if "error" in r:
            sig_rows.append(f"<tr><td>{r['split']}</td><td>{html.escape(r['method'])}</td>"
                            f"<td colspan=2>{html.escape(r['error'])}</td></tr>")
        else:
            sig_rows.append(f"<tr><td>{r['split']}</td><td>{html.escape(r['method'])} − {html.escape(r['best'])}"
                            f"</td>{_diff_cell(r['giou'])}{_diff_cell(r['ciou'])}</tr>")
    # The scatter and gallery compare the two best methods of the split with the most methods.
    split = max(sorted({e.split for e in entries}), key=lambda s: (sum(e.split == s for e in entries), s == "test"))
    members = sorted([e for e in entries if e.split == split and not e.oracle] or
                     [e for e in entries if e.split == split],
                     key=lambda e: -e.document["groups"]["overall"]["giou"])
    pair_html = "<p>Only one method on this split: nothing to pair.</p>"
    if len(members) >= 2:
        a, b = members[1], members[0]
        pair_html = (f"<h2>Per-query IoU on {html.escape(split)}: {html.escape(a.label)} vs {html.escape(b.label)}"
                     f"</h2>{scatter_svg(a, b)}<h2>Where they disagree most</h2>"
                     f"{overlay_legend()}<div class='gallery'>{_gallery(out_dir, data_root, a, b, n_gallery)}</div>")
    name = title or "reasonseg: methods compared"
    foreign_note = (f'<p class="warning"><b>Scored on other data</b> than this release (allowed by the user): '
                    f"{html.escape(', '.join(_display(e) for e in other_data))}. Their numbers are not comparable "
                    "and their gallery masks may not match.</p>" if other_data else "")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1em; }} td, th {{ border: 1px solid #ccc; padding: 4px 8px; }}
td {{ text-align: right; }} td:first-child {{ text-align: left; }} tr.reported td {{ color: #666; }}
th.section {{ text-align: left; font-weight: normal; font-style: italic; background: #f4f4f4; }}
.gallery {{ display: flex; flex-direction: column; gap: 12px; }} .pair {{ display: flex; flex-wrap: wrap; gap: 8px; }}
.pair p {{ width: 100%; margin: 0; }} figure {{ margin: 0; max-width: 480px; }} figcaption {{ font-size: 0.85em; }}
{LEGEND_CSS} .warning {{ color: #a00; }}
</style></head><body>
<h1>{html.escape(name)}</h1>
<p>gIoU / cIoU ×100, Table 1 layout; 95% bootstrap intervals over images on the second line. Rows marked [oracle]
read the ground truth: they are ceilings, not methods. Data: <code>{html.escape(str(data_root))}</code>.</p>
{foreign_note}
<table id="table1"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<h2>Against the best method of each split</h2>
<p>Difference to the best non-oracle method (×100) with its 95% interval and p-value ({html.escape(P_VALUE_NOTE)};
{n_resamples} resamples, as <code>reasonseg compare</code>); * marks p &lt; 0.05.</p>
<table id="significance"><thead><tr><th>split</th><th>method − best</th><th>ΔgIoU</th><th>ΔcIoU</th></tr></thead>
<tbody>{''.join(sig_rows)}</tbody></table>
{pair_html}
</body></html>
"""
    index = out_dir / "index.html"
    atomic_write_text(index, page)
    return index
