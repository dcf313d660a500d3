"""Assemble a ReasonSeg release from OpenImages / ScanNet sources and an instruction manifest.

The instruction manifest is JSONL, one image-instruction-mask pair a line::

    {"source": "openimages", "image_id": "0001a2b3c4d5e6f7", "split": "validation",
     "targets": ["<MaskPath>", ...], "ignore": ["<MaskPath>"], "texts": ["..."], "is_sentence": true,
     "release_split": "test", "explanation": "optional"}
    {"source": "scannet", "scene": "scene0000_00", "frame": 100, "targets": [3], "texts": ["chair"],
     "is_sentence": false}

A target or ignore entry may also be an explicit polygon `[[x, y], ...]`; for ScanNet an int is an instance id of
`instance-filt` and `{"label": id}` selects a ScanNet label id of `label-filt`; a line carrying the worksheet's
`instances` list may name its targets by their 1-based number there.

The build streams: a first pass checks every line and keeps only small ids (name, split, ImageID) per pair; the
split assignment is made from those. A second pass resolves each line to a self-contained job (paths, no pixels)
and feeds the jobs, a few chunks at a time, to this process or a pool of workers (`runner`); each job writes its
own image and JSON (`pair`) and returns a small record, which goes straight to spool files (`streams`) from
which the manifest, explanatory/train.json and the build report are written at the end, byte for byte what
`dataset.write_manifest` and the in-memory report would give (`naive` builds that way; a test compares them).
Everything goes into a temporary folder beside `out`, renamed into place only when the whole release is done.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...dataset import MANIFEST, atomic_text_file, sha256_file
from ...errors import BuildError, ReasonSegError
from ...outputs import check_output_dir, place, temp_dir_for
from ...schema import EXPECTED_COUNTS, SPLITS
from .openimages import OpenImagesLayout
from .pair import Job, run_job
from .report import (
    FIDELITY_BINS,
    REPORT_JSON,
    REPORT_TEXT,
    Problem,
    ReportStream,
    build_report,
    problem_error,
    report_text,
    write_report,
)
from .runner import run_jobs
from .scannet import ScanNetLayout
from .source_index import MemoryIndex, OpenImagesIndex
from .streams import Spool, Streamed, write_json

__all__ = ["FIDELITY_BINS", "REPORT_JSON", "REPORT_TEXT", "SOURCES", "BuildResult", "Entry", "Job", "Problem",
           "Resolver", "assign_splits", "build_release", "build_report", "check_line", "demo_step", "plan_build",
           "read_instruction_manifest", "report_text", "run_job", "run_jobs", "write_report"]

SOURCES = ("openimages", "scannet")
SOURCE_NOTES = {
    "openimages": {"annotations_license": "CC BY 4.0 (Google)",
                   "images_license": "per image, listed as CC BY 2.0: see each JSON's source.license and author"},
    "scannet": {"license": "ScanNet Terms of Use: research only, no redistribution of frames or labels"},
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# ------------------------------------------------------------------------------------------ manifest lines

@dataclass
class Entry:
    """A checked manifest line, before its sources are opened."""

    line: int
    doc: dict
    source: str
    source_id: str
    is_sentence: bool
    release_split: str | None
    name: str = ""
    split: str = ""


def _is_polygon(item) -> bool:
    return (isinstance(item, list) and len(item) >= 3 and all(
        isinstance(p, (list, tuple)) and len(p) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in p) for p in item))


def check_line(doc, line: int) -> Entry:
    """Validate one parsed manifest line; BuildError names the field."""
    if not isinstance(doc, dict):
        raise BuildError("a manifest line must be a JSON object", field=None)
    source = doc.get("source")
    if source not in SOURCES:
        raise BuildError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}", field="source")
    if source == "openimages":
        image_id = doc.get("image_id")
        if not isinstance(image_id, str) or not image_id:
            raise BuildError("image_id must be the ImageID as a string (16 hex digits; leading zeros matter)",
                             field="image_id")
        if not isinstance(doc.get("split"), str) or not doc["split"]:
            raise BuildError("split (the OpenImages split: train, validation or test) is missing", field="split")
        source_id = image_id
    else:
        scene, frame = doc.get("scene"), doc.get("frame")
        if not isinstance(scene, str) or not scene:
            raise BuildError("scene must be a scene name such as scene0000_00", field="scene")
        if not isinstance(frame, int) or isinstance(frame, bool) or frame < 0:
            raise BuildError("frame must be a non-negative integer", field="frame")
        source_id = f"{scene}/{frame}"
    texts = doc.get("texts")
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
        raise BuildError("texts must be a non-empty list of non-blank strings", field="texts")
    if not isinstance(doc.get("is_sentence"), bool):
        raise BuildError("is_sentence must be true or false", field="is_sentence")
    targets = doc.get("targets")
    if not isinstance(targets, list) or not targets:
        raise BuildError("targets must name at least one mask, instance or polygon", field="targets")
    ignore = doc.get("ignore", [])
    if not isinstance(ignore, list):
        raise BuildError("ignore must be a list", field="ignore")
    release_split = doc.get("release_split")
    if release_split is not None and release_split not in SPLITS:
        raise BuildError(f"release_split {release_split!r} is not one of {', '.join(SPLITS)}", field="release_split")
    if "explanation" in doc and doc["explanation"] is not None and not isinstance(doc["explanation"], str):
        raise BuildError("explanation must be a string", field="explanation")
    name = doc.get("name")
    if name is not None and (not isinstance(name, str) or not _NAME.match(name) or ".jpg" in name
                             or "images" in name or name.endswith(".json")):
        raise BuildError("name must be letters, digits, '_', '-' or '.', without '.jpg' or 'images'", field="name")
    return Entry(line, doc, source, source_id, doc["is_sentence"], release_split)


def read_instruction_manifest(path: Path) -> Iterator[tuple[int, Entry | Problem]]:
    """(line number, Entry or Problem) for every non-blank line."""
    try:
        fh = open(path, encoding="utf-8")
    except OSError as exc:
        raise BuildError(f"cannot read the instruction manifest: {exc.strerror}", path=str(path)) from None
    with fh:
        for line_no, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                doc = json.loads(raw)
            except json.JSONDecodeError as exc:
                yield line_no, Problem(line_no, f"not valid JSON ({exc.msg} at column {exc.colno})")
                continue
            try:
                yield line_no, check_line(doc, line_no)
            except BuildError as exc:
                sid = doc.get("image_id") if isinstance(doc, dict) and isinstance(doc.get("image_id"), str) else None
                yield line_no, Problem(line_no, exc.message, sid, exc.field)


# ------------------------------------------------------------------------------------------------- splits

def apportion(total: int, weights: dict[str, float]) -> dict[str, int]:
    """Integers summing to `total` in proportion to the weights (largest remainder, ties in key order)."""
    keys = list(weights)
    weight_sum = sum(weights.values())
    if total <= 0 or weight_sum <= 0:
        return dict.fromkeys(keys, 0)
    exact = {k: total * weights[k] / weight_sum for k in keys}
    counts = {k: int(exact[k]) for k in keys}
    rest = total - sum(counts.values())
    for k in sorted(keys, key=lambda k: (-(exact[k] - counts[k]), keys.index(k)))[:rest]:
        counts[k] += 1
    return counts


def assign_splits(strata: list[tuple[str, bool, str | None]], seed: int = 0) -> list[str]:
    """A release split per pair: the given one when set, else seeded and stratified by (source, is_sentence).

    The whole manifest gets ReasonSeg's proportions (239/200/779 of 1218: exactly those for 1218 pairs); the
    free pairs fill what the fixed ones leave. Within each stratum, pairs are shuffled and then dealt along a
    smooth sequence, so every stratum gets each split's share to within about one pair.
    """
    n = len(strata)
    goal = apportion(n, {s: float(EXPECTED_COUNTS[s]) for s in SPLITS})
    out: list[str | None] = [fixed for _, _, fixed in strata]
    for s in out:
        if s is not None:
            goal[s] -= 1
    free = [i for i, (_, _, fixed) in enumerate(strata) if fixed is None]
    need = {s: max(goal[s], 0) for s in SPLITS}
    if sum(need.values()) != len(free):
        need = apportion(len(free), need if any(need.values()) else {s: float(EXPECTED_COUNTS[s]) for s in SPLITS})
    rng = np.random.default_rng(seed)
    order: list[int] = []
    for key in sorted({(src, sent) for src, sent, _ in (strata[i] for i in free)}):
        members = [i for i in free if strata[i][:2] == key]
        order.extend(members[k] for k in rng.permutation(len(members)))
    given = dict.fromkeys(SPLITS, 0)
    m = len(order)
    for step, i in enumerate(order):
        split = max(SPLITS, key=lambda s: (need[s] * (step + 1) / m - given[s], -SPLITS.index(s)))
        given[split] += 1
        out[i] = split
    return [str(s) for s in out]


# ---------------------------------------------------------------------------------------------------- jobs

@dataclass
class Resolver:
    """Turns checked entries into jobs. The CSV rows of the images the manifest names are kept in a temporary
    SQLite index (`source_index`), not in memory; the class names and the ScanNet TSV are small and fixed."""

    openimages: OpenImagesLayout | None
    scannet: ScanNetLayout | None
    zip_names: dict | None = None  # shard member names (None: the process-wide cache)
    _oi_index: OpenImagesIndex | MemoryIndex | None = None
    _oi_names: dict | None = None
    _sn_labels: object | None = None

    def prepare(self, oi_ids: dict[str, set[str]], uses_scannet: bool, work: Path | None) -> None:
        """Read the sources' CSVs once: `oi_ids` is split → the ImageIDs the manifest names. The rows are
        indexed in SQLite under `work`, or held in memory when `work` is None."""
        from .openimages import read_class_names
        from .scannet import read_label_tsv

        if self.openimages is not None:
            self._oi_index = MemoryIndex() if work is None else OpenImagesIndex(work / "openimages.sqlite")
            for split, ids in sorted(oi_ids.items()):
                self._oi_index.add_split(self.openimages, split, ids)
            self._oi_index.finish()
            classes = self.openimages.classes_csv()
            self._oi_names = read_class_names(classes) if classes else {}
        if self.scannet is not None and uses_scannet:
            self._sn_labels = read_label_tsv(self.scannet.path(self.scannet.labels_tsv))

    def close(self) -> None:
        if self._oi_index is not None:
            self._oi_index.close()

    def job(self, entry: Entry, out_dir: Path) -> Job:
        if entry.source == "openimages":
            return self._openimages_job(entry, out_dir)
        return self._scannet_job(entry, out_dir)

    def _openimages_job(self, e: Entry, out_dir: Path) -> Job:
        from .openimages import mask_location

        if self.openimages is None:
            raise BuildError("the line is an OpenImages pair but no OpenImages root was given",
                             field="source", hint="pass --openimages ROOT")
        doc, split, image_id = e.doc, e.doc["split"], e.doc["image_id"]
        image = self.openimages.image_path(split, image_id)
        if not image.is_file():
            raise BuildError("image not found", path=str(image), field="image_id")
        rows = self._oi_index.masks(split, image_id)
        instances = doc.get("instances") if isinstance(doc.get("instances"), list) else None
        folder = self.openimages.mask_folder(split)
        names = self._oi_names or {}

        def named(item, where: str):
            """A worksheet instance number → its MaskPath; anything else unchanged."""
            if isinstance(item, int) and not isinstance(item, bool) and instances is not None:
                if not 1 <= item <= len(instances):
                    raise BuildError(f"instance number {item} is not in the line's {len(instances)} instances",
                                     field=where)
                item = instances[item - 1]
                return item.get("mask") if isinstance(item, dict) else item
            return item

        def spec(item, where: str) -> tuple:
            if _is_polygon(item):
                return ("polygon", [[float(x), float(y)] for x, y in item])
            item = named(item, where)
            if not isinstance(item, str):
                raise BuildError(f"{item!r} is neither a MaskPath nor a polygon [[x, y], ...]", field=where)
            if item not in rows:
                raise BuildError(f"MaskPath {item!r} is not listed for image {image_id} in the segmentation CSV",
                                 field=where, hint="copy the MaskPath from the CSV or the worksheet")
            return ("binary", mask_location(folder, image_id, item, split, self.zip_names))

        targets = [spec(t, "targets") for t in doc["targets"]]
        ignore = [spec(t, "ignore") for t in doc.get("ignore", [])]
        attribution = self._oi_index.attribution(split, image_id)
        paths = [named(t, "targets") for t in doc["targets"] if not _is_polygon(t)]
        classes = sorted({names.get(rows[t], rows[t]) for t in paths if t in rows})
        source_doc = {"dataset": "openimages", "id": image_id, "split": split,
                      "license": attribution.get("license", ""), "author": attribution.get("author", ""),
                      "url": attribution.get("url", ""), "classes": classes}
        return Job(e.name, e.split, e.line, e.source, e.source_id, ("file", str(image)), targets, ignore,
                   list(doc["texts"]), e.is_sentence, source_doc, str(out_dir), doc.get("explanation"))

    def _scannet_job(self, e: Entry, out_dir: Path) -> Job:
        from .scannet import frame_locations

        if self.scannet is None:
            raise BuildError("the line is a ScanNet pair but no ScanNet root was given", field="source",
                             hint="pass --scannet ROOT")
        doc = e.doc

        def kind_of(item, where: str) -> str:
            if _is_polygon(item):
                return "polygon"
            if isinstance(item, int) and not isinstance(item, bool) and item > 0:
                return "instance"
            if isinstance(item, dict) and isinstance(item.get("label"), int) and item["label"] > 0:
                return "label"
            raise BuildError(f"{item!r} is neither an instance id (int > 0), {{'label': id}} nor a polygon",
                             field=where)

        kinds = {kind_of(t, f) for f in ("targets", "ignore") for t in doc.get(f, [])} - {"polygon"}
        locations = frame_locations(self.scannet, doc["scene"], doc["frame"], tuple(sorted(kinds)))
        labels = self._sn_labels

        def spec(item, where: str) -> tuple:
            kind = kind_of(item, where)
            if kind == "polygon":
                return ("polygon", [[float(x), float(y)] for x, y in item])
            return ("value", locations[kind], int(item["label"]) if kind == "label" else item)

        targets = [spec(t, "targets") for t in doc["targets"]]
        ignore = [spec(t, "ignore") for t in doc.get("ignore", [])]
        classes = sorted({labels.name(t["label"]) for t in doc["targets"] if isinstance(t, dict)}) if labels else []
        source_doc = {"dataset": "scannet", "id": e.source_id, "classes": classes}
        return Job(e.name, e.split, e.line, e.source, e.source_id, locations["color"], targets, ignore,
                   list(doc["texts"]), e.is_sentence, source_doc, str(out_dir), doc.get("explanation"))


# ---------------------------------------------------------------------------------------------- the build

@dataclass
class BuildResult:
    """Where the release is, and its report's counts and fidelity (`summary`); `report` reads the whole report
    (with its per-pair lists) from the release when asked for."""

    out: Path
    summary: dict
    _report: dict | None = field(default=None, repr=False)

    @property
    def report(self) -> dict:
        if self._report is None:
            self._report = json.loads((self.out / REPORT_JSON).read_text(encoding="utf-8"))
        return self._report

    @property
    def problems(self) -> list[dict]:
        return self.report["problems"] if self.summary["counts"]["problems"] else []


def _unique_name(entry: Entry, taken: set[str]) -> str:
    base = entry.doc.get("name") or (entry.doc["image_id"] if entry.source == "openimages"
                                     else f"{entry.doc['scene']}_{entry.doc['frame']}")
    name, k = base, 2
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    taken.add(name)
    return name


# What the release builders (build, import, naive) write into a release folder: an overwrite replaces these only.
RELEASE_OUTPUTS = ("train", "val", "test", "explanatory", MANIFEST, REPORT_JSON, REPORT_TEXT, "import_report.*")


def temp_dir_beside(out: Path) -> Path:
    """A scratch folder beside `out` (never inside it, where placing the release would clear it)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.work-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    return tmp


@dataclass
class Plan:
    """What the first pass over the manifest keeps: small ids per checked line, nothing per pixel or text."""

    lines: array = field(default_factory=lambda: array("q"))
    names: list[str] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)
    oi_ids: dict[str, set[str]] = field(default_factory=dict)
    uses_scannet: bool = False


def plan_build(manifest: Path, seed: int, on_problem: Callable[[Problem], None]) -> Plan:
    """Check every line (problems go to `on_problem`), name each pair and assign its release split."""
    plan, taken, strata = Plan(), set(), []
    for line_no, item in read_instruction_manifest(manifest):
        if isinstance(item, Problem):
            on_problem(item)
            continue
        strata.append((item.source, item.is_sentence, item.release_split))
        plan.lines.append(line_no)
        plan.names.append(_unique_name(item, taken))
        if item.source == "openimages":
            plan.oi_ids.setdefault(item.doc["split"], set()).add(item.doc["image_id"])
        else:
            plan.uses_scannet = True
    plan.splits = assign_splits(strata, seed)
    return plan


def _planned_entries(manifest: Path, plan: Plan) -> Iterator[Entry]:
    """The checked lines again (second pass), each with its name and split from the plan."""
    k = 0
    for line_no, item in read_instruction_manifest(manifest):
        if isinstance(item, Problem):
            continue
        if k >= len(plan.lines) or plan.lines[k] != line_no:
            raise BuildError("the instruction manifest changed while the build was reading it", path=str(manifest),
                             hint="build again once it is no longer being edited")
        item.name, item.split = plan.names[k], plan.splits[k]
        k += 1
        yield item


class ReleaseFiles:
    """What the release manifest and explanatory/train.json need, collected as records stream past."""

    def __init__(self, work: Path):
        self.files = Spool(work, "files")
        self.sample_sources = Spool(work, "sample-sources")
        self.explanations = Spool(work, "explanations")
        self.splits: dict[str, dict[str, int]] = {}
        self.sources: set[str] = set()

    def add(self, record: dict) -> None:
        for rel, digest in record["files"]:
            self.files.add([rel, digest])
        self.sample_sources.add([f"{record['split']}/{record['name']}", record["source"]])
        cell = self.splits.setdefault(record["split"], {"count": 0, "short": 0, "long": 0})
        cell["count"] += 1
        cell["long" if record["is_sentence"] else "short"] += 1
        self.sources.add(record["source"])
        if record.get("explanation"):
            self.explanations.add([record["name"], {"image": f"{record['name']}.jpg", "query": record["query"],
                                                    "outputs": record["explanation"]}])

    def write(self, root: Path, name: str, version: str) -> None:
        """explanatory/train.json (when the release has a train split) and manifest.json, as
        `dataset.write_manifest` would write them after reading the whole release back."""
        if "train" in self.splits:
            path = root / "explanatory" / "train.json"
            with atomic_text_file(path) as fh:
                write_json(fh, Streamed(item for _, item in self.explanations.sorted(lambda x: x[0])),
                           ensure_ascii=False)
                fh.write("\n")
            self.files.add([path.relative_to(root).as_posix(), sha256_file(path)])
        doc = {"name": name, "version": version,
               "splits": {s: self.splits[s] for s in SPLITS if s in self.splits},
               "files": Streamed(((k, v) for k, v in self.files.sorted(lambda x: x[0])), mapping=True),
               "sources": {s: SOURCE_NOTES[s] for s in sorted(self.sources)}}
        if self.sample_sources.count:
            doc["sample_sources"] = Streamed(((k, v) for k, v in self.sample_sources.sorted(lambda x: x[0])),
                                             mapping=True)
        with atomic_text_file(root / MANIFEST) as fh:
            write_json(fh, doc)
            fh.write("\n")

    def close(self) -> None:
        for spool in (self.files, self.sample_sources, self.explanations):
            spool.close()


def build_release(manifest: str | os.PathLike, out: str | os.PathLike, *,
                  openimages: OpenImagesLayout | None = None, scannet: ScanNetLayout | None = None,
                  workers: int = 1, keep_going: bool = False, seed: int = 0, name: str = "ReasonSeg",
                  version: str = "1.0", overwrite: bool = False,
                  progress: Callable[[int], None] | None = None) -> BuildResult:
    """Build a release folder at `out` (see the module docstring). Raises BuildError at the first problem
    unless `keep_going`, in which case every problem is listed in the report and the pairs without problems
    are written. `out` appears only once complete.

    Memory does not grow with the number of pairs beyond a few ids per pair (names, splits, ImageIDs for the
    CSV filter, one IoU): the manifest is read twice (check and plan, then build), source CSV rows live in a
    temporary SQLite index, and records, report lists and checksums are spooled to a work folder.
    """
    manifest, out = Path(manifest), Path(out)
    check_output_dir(out, overwrite, error=BuildError)
    try:
        manifest_digest = sha256_file(manifest)
    except OSError as exc:
        raise BuildError(f"cannot read the instruction manifest: {exc.strerror}", path=str(manifest)) from None
    work = temp_dir_beside(out)
    tmp = None
    report = ReportStream(work)
    collected = ReleaseFiles(work)
    resolver = Resolver(openimages, scannet)
    try:
        def on_problem(problem: Problem) -> None:
            if not keep_going:
                raise problem_error(problem, manifest)
            report.add_problem(problem)

        plan = plan_build(manifest, seed, on_problem)
        if not plan.lines and not report.problems.count:
            raise BuildError("the instruction manifest has no lines", path=str(manifest))
        resolver.prepare(plan.oi_ids, plan.uses_scannet, work)
        plan.oi_ids = {}  # indexed now
        tmp = temp_dir_for(out)

        def items() -> Iterator:
            for entry in _planned_entries(manifest, plan):
                try:
                    yield resolver.job(entry, tmp)
                except ReasonSegError as exc:
                    yield {"line": entry.line, "problem": Problem.of(exc, entry.line, entry.source_id).as_dict()}

        records = run_jobs(items(), workers, progress)
        try:
            for record in records:
                if "problem" in record:
                    on_problem(Problem(**{("source_id" if k == "id" else k): v
                                          for k, v in record["problem"].items()}))
                else:
                    report.add_record(record)
                    collected.add(record)
        finally:
            records.close()  # on an error: workers stop (and finish writing) before `tmp` is removed
        if not report.written:
            raise BuildError("no pair could be built", path=str(manifest),
                             hint=report.first_problem.render() if report.first_problem else None)
        for split in SPLITS:  # a failed write may leave an empty split folder behind
            if (tmp / split).is_dir() and split not in collected.splits:
                shutil.rmtree(tmp / split)
        collected.write(tmp, name, version)
        if sha256_file(manifest) != manifest_digest:
            raise BuildError("the instruction manifest changed while the build was reading it", path=str(manifest),
                             hint="build again once it is no longer being edited")
        summary = report.write(tmp, manifest_digest, work)
        place(tmp, out, RELEASE_OUTPUTS)
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        report.close()
        collected.close()
        resolver.close()
        shutil.rmtree(work, ignore_errors=True)
    return BuildResult(out, summary)


# ---------------------------------------------------------------------------------------------------- demo

def demo_step(out: str | os.PathLike) -> Path:
    """What the demo gains: synthetic OpenImages- and ScanNet-format sources → `build reasonseg` → a release.

    Writes `out/sources/` and `out/release/` (with its build report) and returns the release folder.
    """
    out = Path(out)
    from ...sample.bundle import write_build_sources

    oi_root, sn_root, manifest = write_build_sources(out / "sources")
    result = build_release(manifest, out / "release", openimages=OpenImagesLayout(oi_root),
                           scannet=ScanNetLayout(sn_root), name="reasonseg-built-sample", version="1",
                           overwrite=True)
    return result.out
