"""The build report: problems, counts, polygon fidelity, pairs for review (JSON and a readable summary).

`build_report` / `report_text` make it from lists (what the naive build does); `ReportStream` makes the same bytes
while records stream past, keeping only counters and the IoUs (8 bytes a pair) in memory and the lists in spools.
"""
from __future__ import annotations

from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...dataset import atomic_text_file, sha256_file
from ...errors import BuildError, ReasonSegError
from ...schema import SPLITS
from .polygons import FIDELITY_THRESHOLD
from .streams import Spool, Streamed, write_json

REPORT_JSON = "build_report.json"
REPORT_TEXT = "build_report.txt"
REVIEW_KEYS = ("name", "split", "source", "id", "iou", "cause", "lost")
PAIR_KEYS = ("name", "split", "line", "source", "id", "iou", "shapes", "points")
FIDELITY_BINS = ((1.0, 1.0001, "1.0"), (0.99, 1.0, "[0.99, 1)"), (0.98, 0.99, "[0.98, 0.99)"),
                 (0.95, 0.98, "[0.95, 0.98)"), (0.9, 0.95, "[0.90, 0.95)"), (0.0, 0.9, "< 0.90"))


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one manifest line (or the inputs it names)."""

    line: int | None
    message: str
    source_id: str | None = None
    field: str | None = None
    path: str | None = None

    def as_dict(self) -> dict:
        return {"line": self.line, "id": self.source_id, "field": self.field, "path": self.path,
                "message": self.message}

    def render(self) -> str:
        where = [f"line {self.line}" if self.line else None, self.source_id, self.path,
                 f"field {self.field!r}" if self.field else None]
        return ": ".join(p for p in where if p) + ": " + self.message

    @classmethod
    def of(cls, exc: ReasonSegError, line: int | None, source_id: str | None) -> Problem:
        text = exc.message + (f" ({exc.hint})" if exc.hint else "")
        return cls(line, text, source_id, exc.field, exc.path)


def problem_error(problem: Problem, manifest: Path) -> BuildError:
    where = f"line {problem.line}" + (f" ({problem.source_id})" if problem.source_id else "")
    detail = f" [{problem.path}]" if problem.path else ""
    return BuildError(f"{where}: {problem.message}{detail}", path=str(manifest), field=problem.field,
                      hint="fix it, or pass --keep-going to list every problem")



def _problem_key(p: dict) -> tuple:
    return (p["line"] or 0, p["message"])


def _review_key(r: dict) -> tuple:
    return (r["iou"], r["name"])


def _fidelity(ious: np.ndarray, histogram: dict) -> dict:
    return {"threshold": FIDELITY_THRESHOLD, "min": round(float(ious.min()), 6) if ious.size else None,
            "median": round(float(np.median(ious)), 6) if ious.size else None,
            "mean": round(float(ious.mean()), 6) if ious.size else None, "histogram": histogram}


def _histogram(ious: np.ndarray) -> dict:
    return {label: int(np.count_nonzero((ious >= lo) & (ious < hi))) for lo, hi, label in FIDELITY_BINS}


def _add_count(counts: dict, record: dict) -> None:
    cell = counts.setdefault(record["split"], {}).setdefault(record["source"], {"short": 0, "long": 0})
    cell["long" if record["is_sentence"] else "short"] += 1


def build_report(records: list[dict], problems: list[Problem], manifest: Path) -> dict:
    """The report from every record (in manifest order) and problem, all in memory."""
    counts: dict = {}
    for r in records:
        _add_count(counts, r)
    ious = np.array([r["iou"] for r in records], float)
    review = [{k: r[k] for k in REVIEW_KEYS}
              for r in sorted(records, key=_review_key) if r["iou"] < FIDELITY_THRESHOLD]
    return {
        "format": "reasonseg-build-report", "version": 1,
        "manifest_sha256": sha256_file(manifest),
        "counts": {"pairs": len(records) + len(problems), "written": len(records), "problems": len(problems),
                   "reencoded_images": sum(r["reencoded"] for r in records),
                   "by_split": {s: counts[s] for s in SPLITS if s in counts}},
        "fidelity": _fidelity(ious, _histogram(ious)),
        "review": review,
        "problems": [p.as_dict() for p in problems],
        "pairs": [{k: r[k] for k in PAIR_KEYS} for r in sorted(records, key=lambda r: r["line"])],
    }


def report_text(report: dict) -> str:
    return "".join(_text_lines(report, report["review"], report["problems"]))


def _text_lines(head: dict, review: Iterable[dict], problems: Iterable[dict]) -> Iterable[str]:
    c, f = head["counts"], head["fidelity"]
    yield f"ReasonSeg build report: {c['written']} of {c['pairs']} pairs written, {c['problems']} problem(s)\n\n"
    for split, by_source in c["by_split"].items():
        parts = [f"{src} {v['short']} short + {v['long']} long" for src, v in by_source.items()]
        yield f"  {split:<5} {sum(v['short'] + v['long'] for v in by_source.values()):>5}  " + "; ".join(parts) + "\n"
    yield f"\nPolygon fidelity (IoU of the LISA redraw vs the source mask; review below {f['threshold']}):\n"
    yield f"  min {f['min']}  median {f['median']}  mean {f['mean']}\n"
    for label, n in f["histogram"].items():
        yield f"  {label:<14} {n}\n"
    for k, r in enumerate(review):
        if k == 0:
            yield "\nFor review:\n"
        yield f"  {r['split']}/{r['name']} ({r['source']} {r['id']}): IoU {r['iou']:.4f}, cause: {r['cause']}\n"
    for k, p in enumerate(problems):
        if k == 0:
            yield "\nProblems:\n"
        yield "  " + Problem(p["line"], p["message"], p["id"], p["field"], p["path"]).render() + "\n"


def write_report(folder: Path, report: dict) -> None:
    """Write a materialised report as build_report.json and .txt."""
    with atomic_text_file(folder / REPORT_JSON) as fh:
        write_json(fh, report, ensure_ascii=False)
        fh.write("\n")
    with atomic_text_file(folder / REPORT_TEXT) as fh:
        fh.writelines(report_text(report))


class ReportStream:
    """The report built while records and problems stream past (any order of arrival for problems; records in
    manifest order). Memory: counters, one float per written pair, and the first problem."""

    def __init__(self, work: Path):
        self.counts: dict = {}
        self.ious = array("d")
        self.reencoded = 0
        self.first_problem: Problem | None = None
        self.review = Spool(work, "review")
        self.problems = Spool(work, "problems")
        self.pairs = Spool(work, "pairs")

    def add_record(self, r: dict) -> None:
        _add_count(self.counts, r)
        self.ious.append(r["iou"])
        self.reencoded += bool(r["reencoded"])
        if r["iou"] < FIDELITY_THRESHOLD:
            self.review.add({k: r[k] for k in REVIEW_KEYS})
        self.pairs.add({k: r[k] for k in PAIR_KEYS})

    def add_problem(self, problem: Problem) -> None:
        if self.first_problem is None:
            self.first_problem = problem
        self.problems.add(problem.as_dict())

    @property
    def written(self) -> int:
        return len(self.ious)

    def head(self, manifest_sha256: str) -> dict:
        """The report without its three lists."""
        ious = np.frombuffer(self.ious, float) if self.ious else np.array([], float)
        n_problems = self.problems.count
        return {
            "format": "reasonseg-build-report", "version": 1, "manifest_sha256": manifest_sha256,
            "counts": {"pairs": self.written + n_problems, "written": self.written, "problems": n_problems,
                       "reencoded_images": self.reencoded,
                       "by_split": {s: self.counts[s] for s in SPLITS if s in self.counts}},
            "fidelity": _fidelity(ious, _histogram(ious)),
        }

    def write(self, folder: Path, manifest_sha256: str, work: Path) -> dict:
        """Write build_report.json and .txt into `folder`; return the head (counts and fidelity)."""
        head = self.head(manifest_sha256)
        review = Spool(work, "review-sorted")
        for item in self.review.sorted(_review_key):
            review.add(item)
        problems = Spool(work, "problems-sorted")
        for item in self.problems.sorted(_problem_key):
            problems.add(item)
        with atomic_text_file(folder / REPORT_JSON) as fh:
            write_json(fh, {**head, "review": Streamed(review), "problems": Streamed(problems),
                            "pairs": Streamed(self.pairs)}, ensure_ascii=False)
            fh.write("\n")
        with atomic_text_file(folder / REPORT_TEXT) as fh:
            fh.writelines(_text_lines(head, review, problems))
        return head

    def close(self) -> None:
        for spool in (self.review, self.problems, self.pairs):
            spool.close()
