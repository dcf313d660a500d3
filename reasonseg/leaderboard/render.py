"""HTML of the leaderboard (Jinja2, every value escaped) for the server and for the static export.

The same templates and the same table model serve both: the server links to `/submissions/<id>`, the export to
`submissions/<id>.html`, and the export writes the JSON the server's API returns next to the pages.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

from ..metrics.figures import histogram_model, histogram_svg
from ..metrics.report import TABLE1_COLUMNS, column_title
from ..outputs import staged_whole_output_dir
from ..paper import SOURCE
from ..text import display_text
from .board import BADGES, METRICS, RANKING_RULE, Entry, Significance, build_entries, split_rows
from .db import Database, SubmissionRow
from .intake import CHECKPOINT_CHOICES
from .worker import SERVED_SPLITS, public_aggregates

METRIC_TITLES = {"giou": "gIoU", "ciou": "cIoU"}
META_LABELS = (("model_size", "model size"), ("base_model", "base model"), ("training_data", "training data"),
               ("trained_on_val", "trained on val"), ("checkpoint_selected_on", "checkpoint chosen on"),
               ("prompt_mode", "prompt mode"), ("oracle", "oracle"), ("paper_url", "paper"), ("code_url", "code"),
               ("notes", "notes"))
HISTOGRAM_BINS = 10


def _shown(value):
    # Every value a page prints: text stored before ids and names were checked (or written by another tool) shows
    # its bidi overrides, zero-width and control characters as escapes, so that it cannot pass for other text.
    from markupsafe import Markup

    if isinstance(value, str) and not isinstance(value, Markup):
        return display_text(value, None, keep="\t\n\r")
    return value


def environment():
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                              autoescape=True, trim_blocks=True, lstrip_blocks=True,
                              undefined=jinja2.StrictUndefined, finalize=_shown)


_ENV = None


def _template(name: str):
    global _ENV
    if _ENV is None:
        _ENV = environment()
    return _ENV.get_template(name)


@dataclass(frozen=True)
class Links:
    """Where pages point: the live server, or the static export's relative files."""

    static: bool
    prefix: str = ""     # for pages one folder down in the export

    @property
    def home(self) -> str:
        return f"{self.prefix}index.html" if self.static else "/"

    @property
    def json(self) -> str:
        return f"{self.prefix}leaderboard.json" if self.static else "/api/leaderboard?split=test"

    def submission(self, submission_id: int) -> str:
        return f"{self.prefix}submissions/{submission_id}.html" if self.static else f"/submissions/{submission_id}"

    def team(self, name: str | None) -> str | None:
        """The team's page (every submission; in the export, every scored one)."""
        if name is None:
            return None
        return f"{self.prefix}teams/{team_file(name)}" if self.static else "/teams/" + quote(name, safe="")


def team_file(name: str) -> str:
    """A team page's file name in the export: readable, safe whatever the name holds, and one per name."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40]
    return f"{slug or 'team'}-{hashlib.sha256(name.encode('utf-8')).hexdigest()[:10]}.html"


def pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}"


def pct_ci(ci) -> str:
    if not ci or ci[0] != ci[0]:   # absent, or NaN when bootstrap was off
        return ""
    return f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def when(t: float | None) -> str:
    return "" if t is None else datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _index_rows(entries: list[Entry], links: Links) -> list[dict]:
    rows, rank = [], 0
    for entry in entries:
        if not entry.reported:
            rank += 1
        headline = entry.submissions.get("test") or entry.submissions.get("val")
        cells = []
        for split, group in TABLE1_COLUMNS:
            cell = entry.cells.get((split, group))
            for metric in METRICS:
                value = entry.value(split, group, metric)
                mark = entry.marks.get((split, group, metric))
                cells.append({
                    "text": pct(value) if value is not None else "–", "sort": "" if value is None else f"{value:.6f}",
                    "ci": pct_ci(cell.get(f"{metric}_ci")) if cell else "",
                    "mark": (f"not distinguishable from {mark.above}: difference {100 * mark.delta:+.1f}, 95% CI "
                             f"[{100 * mark.ci[0]:+.1f}, {100 * mark.ci[1]:+.1f}]") if mark else "",
                })
        checkpoint = entry.meta.get("checkpoint_selected_on", "")
        rows.append({
            "entry": entry, "rank": None if entry.reported else rank,
            "link": links.submission(headline.id) if headline else None,
            "split_links": [(s, links.submission(sub.id)) for s, sub in sorted(entry.submissions.items())
                            if len(entry.submissions) > 1],
            "cells": cells,
            "meta_cells": [str(entry.meta.get("model_size", "")), str(entry.meta.get("base_model", "")),
                           str(entry.meta.get("training_data", "")), str(checkpoint)],
        })
    return rows


def render_index(entries: list[Entry], links: Links, generated_at: str | None = None) -> str:
    return _template("index.html").render(
        rows=_index_rows(entries, links), columns=TABLE1_COLUMNS, metrics=METRICS,
        column_titles=[column_title(*c) for c in TABLE1_COLUMNS], metric_titles=METRIC_TITLES, links=links,
        static=links.static, refresh=None, generated_at=generated_at, source=SOURCE, ranking=RANKING_RULE)


def histogram(queries: list[dict], bins: int = HISTOGRAM_BINS, width: int = 420, height: int = 160) -> dict:
    """The per-query IoU histogram's model (the same one the score report draws, metrics/figures.py)."""
    return histogram_model((q.get("iou") for q in queries), bins, width, height)


def render_submission(sub: SubmissionRow, links: Links) -> str:
    """A submission's page: metadata, status, breakdown; the per-query IoU histogram on val only."""
    from markupsafe import Markup  # jinja2's own escaping type (the serve extra)

    summary = public_aggregates(sub) or {}
    groups = [{"name": name, "n": row.get("n", ""), "giou": pct(row.get("giou")), "ciou": pct(row.get("ciou")),
               "giou_ci": pct_ci(row.get("giou_ci")), "ciou_ci": pct_ci(row.get("ciou_ci"))}
              for name, row in summary.get("groups", {}).items()]
    queries = (sub.results or {}).get("queries", []) if sub.split == "val" else []
    drift = _drift(sub)
    meta = []
    for key, label in META_LABELS:
        if key in sub.meta:
            value = sub.meta[key]
            meta.append((label, ("yes" if value else "no") if isinstance(value, bool) else value))
    badges = [b for b in (BADGES["trained-on-val"] if sub.meta.get("trained_on_val") else None,
                          BADGES["test-checkpoint"] if sub.meta.get("checkpoint_selected_on") == "test" else None,
                          BADGES["oracle"] if sub.meta.get("oracle") else None) if b]
    return _template("submission.html").render(
        sub=sub, links=links, static=links.static, groups=groups, meta=meta, badges=badges, drift=drift,
        histogram=Markup(histogram_svg(histogram(queries))) if queries else None, team_link=links.team(sub.team),
        refresh=2 if sub.status in ("pending", "scoring") and not links.static else None,
        times={"created": when(sub.created_at), "finished": when(sub.finished_at)})


def _drift(sub: SubmissionRow) -> dict | None:
    """The drift table (every scorer's rules) of a val submission; never on test, whatever was stored."""
    rows = (sub.results or sub.summary or {}).get("drift") if sub.split == "val" else None
    if not rows:
        return None
    from ..metrics.drift import drift_table, refusals

    header, body = drift_table({"rows": rows})
    return {"header": header, "rows": body, "refusals": refusals({"rows": rows})}


def render_team(team: str, subs: list[SubmissionRow], links: Links) -> str:
    """Every submission of a team, newest first, with its overall scores as the table shows them."""
    rows = []
    for sub in reversed(subs):
        overall = (public_aggregates(sub) or {}).get("groups", {}).get("overall", {})
        rows.append({"sub": sub, "link": links.submission(sub.id), "when": when(sub.created_at),
                     "giou": pct(overall.get("giou")), "ciou": pct(overall.get("ciou"))})
    return _template("team.html").render(
        links=links, static=links.static, refresh=None, team=subs[0].team if subs else team, rows=rows,
        revoked=any(sub.team_revoked for sub in subs), ranking=RANKING_RULE)


def render_submit(splits: tuple[str, ...], max_upload_bytes: int, daily_limit: int) -> str:
    return _template("submit.html").render(
        links=Links(static=False), static=False, refresh=None, splits=splits, checkpoint_choices=CHECKPOINT_CHOICES,
        max_mb=max(1, max_upload_bytes // (1024 * 1024)), daily_limit=daily_limit)


def leaderboard_document(entries: list[Entry]) -> dict:
    return {"format": "reasonseg-leaderboard", "version": 1, "protocol": "lisa",
            "splits": {split: split_rows(entries, split) for split in SERVED_SPLITS}}


# In the order they are swapped into place: the pages first, the table (index.html) last.
STATIC_OUTPUTS = ("submissions", "teams", "leaderboard.json", "index.html")


def export_static(db: Database, out: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write the leaderboard as static files: index.html, submissions/<id>.html, teams/<name>.html and
    leaderboard.json.

    A non-empty `out` needs `overwrite`, which replaces only those four entries (a .git or other files stay). Built
    in a new folder beside `out` that holds links to the user's files, then the two folders are exchanged in one
    step: a failed or killed export leaves the old site or the new one, never a mix
    (`outputs.staged_whole_output_dir`). Only scored submissions appear, with the same aggregates the server shows
    (no per-query test results).
    """
    with staged_whole_output_dir(out, overwrite, STATIC_OUTPUTS) as tmp:
        (tmp / "submissions").mkdir()
        scored = {split: db.latest_scored(split) for split in SERVED_SPLITS}
        entries = build_entries(scored, Significance(loader=db.submission))
        stamp = when(datetime.now(timezone.utc).timestamp())
        (tmp / "index.html").write_text(render_index(entries, Links(static=True), stamp), encoding="utf-8")
        (tmp / "leaderboard.json").write_text(json.dumps(leaderboard_document(entries), indent=1) + "\n",
                                              encoding="utf-8")
        (tmp / "teams").mkdir()
        one_down = Links(static=True, prefix="../")
        by_team: dict[str, list[SubmissionRow]] = {}
        for sub in db.submissions(status="done", with_results=True):
            page = render_submission(sub, one_down)
            (tmp / "submissions" / f"{sub.id}.html").write_text(page, encoding="utf-8")
            by_team.setdefault(sub.team, []).append(sub)
        for team, subs in by_team.items():
            (tmp / "teams" / team_file(team)).write_text(render_team(team, subs, one_down), encoding="utf-8")
    return Path(out) / "index.html"


__all__ = ["render_index", "render_submission", "render_submit", "export_static", "Links"]
