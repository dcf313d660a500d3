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

The build runs in three steps: check every line (cheap), resolve each pair to a self-contained job (paths, no
pixels), then run the jobs (serially or in worker processes), each of which writes its own image and JSON.
Everything goes into a temporary folder beside `out`, renamed into place only when the whole release is done.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..dataset import atomic_write_text, image_size, write_manifest
from ..errors import BuildError, ReasonSegError
from ..schema import EXPECTED_COUNTS, SPLITS, Shape
from .openimages import OpenImagesLayout
from .polygons import FIDELITY_THRESHOLD
from .scannet import ScanNetLayout

SOURCES = ("openimages", "scannet")
REPORT_JSON = "build_report.json"
REPORT_TEXT = "build_report.txt"
SOURCE_NOTES = {
    "openimages": {"annotations_license": "CC BY 4.0 (Google)",
                   "images_license": "per image, listed as CC BY 2.0: see each JSON's source.license and author"},
    "scannet": {"license": "ScanNet Terms of Use: research only, no redistribution of frames or labels"},
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# ------------------------------------------------------------------------------------------------ problems

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
class Job:
    """Everything one worker needs to write one sample: paths and values, no pixels."""

    name: str
    split: str
    line: int
    source: str
    source_id: str
    image: tuple[str, str]  # ("file", path) | ("sens", "path::frame")
    targets: list[tuple]  # ("binary", loc) | ("value", loc, v) | ("polygon", points)
    ignore: list[tuple]
    texts: list[str]
    is_sentence: bool
    source_doc: dict
    out_dir: str


@dataclass
class Resolver:
    """Turns checked entries into jobs; holds the CSV indices of the sources (filtered to what is needed)."""

    openimages: OpenImagesLayout | None
    scannet: ScanNetLayout | None
    _oi_rows: dict = field(default_factory=dict)
    _oi_attr: dict = field(default_factory=dict)
    _oi_names: dict | None = None
    _sn_labels: object | None = None

    def prepare(self, entries: list[Entry]) -> None:
        from .openimages import read_attribution, read_class_names, read_mask_rows
        from .scannet import read_label_tsv

        if self.openimages is not None:
            by_split: dict[str, set[str]] = {}
            for e in entries:
                if e.source == "openimages":
                    by_split.setdefault(e.doc["split"], set()).add(e.doc["image_id"])
            for split, ids in sorted(by_split.items()):
                self._oi_rows[split] = read_mask_rows(self.openimages.segmentation_csv(split), ids)
                attr = self.openimages.attribution_csv(split)
                self._oi_attr[split] = read_attribution(attr, ids) if attr else {}
            classes = self.openimages.classes_csv()
            self._oi_names = read_class_names(classes) if classes else {}
        if self.scannet is not None and any(e.source == "scannet" for e in entries):
            self._sn_labels = read_label_tsv(self.scannet.path(self.scannet.labels_tsv))

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
        rows = {r.mask_path: r for r in self._oi_rows[split].get(image_id, [])}
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
            return ("binary", mask_location(folder, image_id, item, split))

        targets = [spec(t, "targets") for t in doc["targets"]]
        ignore = [spec(t, "ignore") for t in doc.get("ignore", [])]
        attribution = self._oi_attr.get(split, {}).get(image_id, {})
        paths = [named(t, "targets") for t in doc["targets"] if not _is_polygon(t)]
        classes = sorted({names.get(rows[t].label, rows[t].label) for t in paths if t in rows})
        source_doc = {"dataset": "openimages", "id": image_id, "split": split,
                      "license": attribution.get("license", ""), "author": attribution.get("author", ""),
                      "url": attribution.get("url", ""), "classes": classes}
        return Job(e.name, e.split, e.line, e.source, e.source_id, ("file", str(image)), targets, ignore,
                   list(doc["texts"]), e.is_sentence, source_doc, str(out_dir))

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
                   list(doc["texts"]), e.is_sentence, source_doc, str(out_dir))


# --------------------------------------------------------------------------------------------- one sample

def _jpeg_bytes(job: Job) -> tuple[bytes, bool]:
    """The image as JPEG bytes: the original bytes when they already are JPEG (re-encoded = False)."""
    import cv2

    from .scannet import read_color

    kind, where = job.image
    try:
        data = read_color(job.image) if kind == "sens" else Path(where).read_bytes()
    except OSError as exc:
        raise BuildError(f"cannot read the image: {exc.strerror}", path=where) from None
    if data[:3] == b"\xff\xd8\xff":
        return data, False
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise BuildError("image does not decode", path=where)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not ok:
        raise BuildError("image does not encode as JPEG", path=where)
    return encoded.tobytes(), True


def _region(specs: list[tuple], height: int, width: int, label: str, cache: dict
            ) -> tuple[np.ndarray, list[Shape]]:
    """Union of the mask specs at the image size, and the explicit polygons (kept as shapes)."""
    from .openimages import decode_mask, fit_mask, read_location_bytes
    from .scannet import read_label_png

    region = np.zeros((height, width), bool)
    shapes: list[Shape] = []
    for spec in specs:
        if spec[0] == "polygon":
            shapes.append(Shape(label, tuple(map(tuple, spec[1]))))
            continue
        loc = spec[1]
        where = loc[1]
        if spec[0] == "binary":
            mask = decode_mask(read_location_bytes(loc), where)
        else:
            if loc not in cache:
                cache[loc] = read_label_png(loc)
            values = cache[loc]
            mask = values == spec[2]
            if not mask.any():
                raise BuildError(f"value {spec[2]} does not occur in this frame's {Path(where.split('::')[-1]).parent}"
                                 f" image", path=where, field="targets")
        region |= fit_mask(mask, height, width, where)
    return region, shapes


def run_job(job: Job) -> dict:
    """Write one sample's image and JSON; return its record (or its problem). Nothing is written on error."""
    try:
        return _run_job(job)
    except ReasonSegError as exc:
        return {"line": job.line, "problem": Problem.of(exc, job.line, job.source_id).as_dict()}


def _run_job(job: Job) -> dict:
    from ..masks import rasterize_shapes
    from .polygons import polygonize

    jpeg, reencoded = _jpeg_bytes(job)
    folder = Path(job.out_dir) / job.split
    folder.mkdir(parents=True, exist_ok=True)
    image_path = folder / f"{job.name}.jpg"
    image_path.write_bytes(jpeg)
    try:
        height, width = image_size(image_path)
        cache: dict = {}
        target, target_polys = _region(job.targets, height, width, "target", cache)
        ignore, ignore_polys = _region(job.ignore, height, width, "ignore", cache)
        extra = target_polys + ignore_polys
        if extra:
            drawn = rasterize_shapes(extra, height, width)
            full_target, full_ignore = target | (drawn == 1), ignore | (drawn == 255)
        else:
            full_target, full_ignore = target, ignore
        if not (full_target & ~full_ignore).any():
            raise BuildError("the targets cover no pixel outside the ignore regions", field="targets")
        shapes, fidelity = polygonize(target, ignore if ignore.any() else None, extra,
                                      full_target=full_target, full_ignore=full_ignore)
        doc = {"text": job.texts, "is_sentence": job.is_sentence, "shapes": shapes, "source": job.source_doc,
               "imagePath": f"{job.name}.jpg", "imageHeight": height, "imageWidth": width}
        (folder / f"{job.name}.json").write_bytes(json.dumps(doc, ensure_ascii=False).encode("utf-8"))
    except BaseException:
        image_path.unlink(missing_ok=True)
        raise
    return {"line": job.line, "name": job.name, "split": job.split, "source": job.source, "id": job.source_id,
            "is_sentence": job.is_sentence, "iou": fidelity.iou, "cause": fidelity.cause, "lost": fidelity.lost,
            "shapes": len(shapes), "points": sum(len(s["points"]) for s in shapes), "reencoded": reencoded,
            "size": [height, width]}


def run_jobs(jobs: list[Job], workers: int, advance: Callable[[int], None] | None = None) -> Iterator[dict]:
    """Records in job order, from this process or a pool of `workers` processes."""
    if workers <= 1 or len(jobs) <= 1:
        for job in jobs:
            record = run_job(job)
            if advance:
                advance(1)
            yield record
        return
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers) as pool:
        for record in pool.map(run_job, jobs, chunksize=max(1, min(16, len(jobs) // (4 * workers)))):
            if advance:
                advance(1)
            yield record


# ---------------------------------------------------------------------------------------------- the build

@dataclass
class BuildResult:
    out: Path
    report: dict

    @property
    def problems(self) -> list[dict]:
        return self.report["problems"]


def _unique_names(entries: list[Entry]) -> None:
    taken: set[str] = set()
    for e in entries:
        base = e.doc.get("name") or (e.doc["image_id"] if e.source == "openimages"
                                     else f"{e.doc['scene']}_{e.doc['frame']}")
        name, k = base, 2
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        e.name = name


def _fresh_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise BuildError("output folder exists and is not empty", path=str(out),
                         hint="choose a new --out, or pass --overwrite to replace it")


def _place(tmp: Path, out: Path) -> None:
    """Move the finished build into place; an old `out` is replaced only after the new one is complete."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{secrets.token_hex(4)}"
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def temp_dir_beside(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.build-{os.getpid()}-{secrets.token_hex(4)}"
    tmp.mkdir()
    return tmp


def build_release(manifest: str | os.PathLike, out: str | os.PathLike, *,
                  openimages: OpenImagesLayout | None = None, scannet: ScanNetLayout | None = None,
                  workers: int = 1, keep_going: bool = False, seed: int = 0, name: str = "ReasonSeg",
                  version: str = "1.0", overwrite: bool = False,
                  progress: Callable[[int], None] | None = None) -> BuildResult:
    """Build a release folder at `out` (see the module docstring). Raises BuildError at the first problem
    unless `keep_going`, in which case every problem is listed in the report and the pairs without problems
    are written. `out` appears only once complete."""
    manifest, out = Path(manifest), Path(out)
    _fresh_dir(out, overwrite)
    entries: list[Entry] = []
    problems: list[Problem] = []
    for _, item in read_instruction_manifest(manifest):
        if isinstance(item, Problem):
            if not keep_going:
                raise problem_error(item, manifest)
            problems.append(item)
        else:
            entries.append(item)
    if not entries and not problems:
        raise BuildError("the instruction manifest has no lines", path=str(manifest))

    for e, split in zip(entries, assign_splits([(e.source, e.is_sentence, e.release_split) for e in entries],
                                                seed), strict=True):
        e.split = split
    _unique_names(entries)
    resolver = Resolver(openimages, scannet)
    resolver.prepare(entries)

    tmp = temp_dir_beside(out)
    try:
        jobs: list[Job] = []
        for e in entries:
            try:
                jobs.append(resolver.job(e, tmp))
            except ReasonSegError as exc:
                problem = Problem.of(exc, e.line, e.source_id)
                if not keep_going:
                    raise problem_error(problem, manifest) from None
                problems.append(problem)
        records = []
        for record in run_jobs(jobs, workers, progress):
            if "problem" in record:
                problem = Problem(**{("source_id" if k == "id" else k): v for k, v in record["problem"].items()})
                if not keep_going:
                    raise problem_error(problem, manifest)
                problems.append(problem)
            else:
                records.append(record)
        if not records:
            raise BuildError("no pair could be built", path=str(manifest),
                             hint=problems[0].render() if problems else None)
        explanations = {e.name: e.doc.get("explanation") for e in entries}
        texts = {e.name: e.doc["texts"][0] for e in entries}
        explanatory = [{"image": f"{r['name']}.jpg", "query": texts[r["name"]], "outputs": explanations[r["name"]]}
                       for r in sorted(records, key=lambda r: r["name"])
                       if r["split"] == "train" and explanations[r["name"]]]
        if any(r["split"] == "train" for r in records):
            atomic_write_text(tmp / "explanatory" / "train.json",
                              json.dumps(explanatory, ensure_ascii=False, indent=1) + "\n")
        used = sorted({r["source"] for r in records})
        write_manifest(tmp, name=name, version=version, sources={s: SOURCE_NOTES[s] for s in used},
                       sample_sources={f"{r['split']}/{r['name']}": r["source"] for r in records})
        report = build_report(records, sorted(problems, key=lambda p: (p.line or 0, p.message)), manifest)
        atomic_write_text(tmp / REPORT_JSON, json.dumps(report, ensure_ascii=False, indent=1) + "\n")
        atomic_write_text(tmp / REPORT_TEXT, report_text(report))
        _place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return BuildResult(out, report)


# -------------------------------------------------------------------------------------------------- report

def _sha256(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


FIDELITY_BINS = ((1.0, 1.0001, "1.0"), (0.99, 1.0, "[0.99, 1)"), (0.98, 0.99, "[0.98, 0.99)"),
                 (0.95, 0.98, "[0.95, 0.98)"), (0.9, 0.95, "[0.90, 0.95)"), (0.0, 0.9, "< 0.90"))


def build_report(records: list[dict], problems: list[Problem], manifest: Path) -> dict:
    counts: dict = {}
    for r in records:
        cell = counts.setdefault(r["split"], {}).setdefault(r["source"], {"short": 0, "long": 0})
        cell["long" if r["is_sentence"] else "short"] += 1
    ious = np.array([r["iou"] for r in records], float)
    histogram = {label: int(np.count_nonzero((ious >= lo) & (ious < hi))) for lo, hi, label in FIDELITY_BINS}
    review = [{k: r[k] for k in ("name", "split", "source", "id", "iou", "cause", "lost")}
              for r in sorted(records, key=lambda r: (r["iou"], r["name"])) if r["iou"] < FIDELITY_THRESHOLD]
    return {
        "format": "reasonseg-build-report", "version": 1,
        "manifest_sha256": _sha256(manifest),
        "counts": {"pairs": len(records) + len(problems), "written": len(records), "problems": len(problems),
                   "reencoded_images": sum(r["reencoded"] for r in records),
                   "by_split": {s: counts[s] for s in SPLITS if s in counts}},
        "fidelity": {"threshold": FIDELITY_THRESHOLD, "min": round(float(ious.min()), 6) if ious.size else None,
                     "median": round(float(np.median(ious)), 6) if ious.size else None,
                     "mean": round(float(ious.mean()), 6) if ious.size else None, "histogram": histogram},
        "review": review,
        "problems": [p.as_dict() for p in problems],
        "pairs": [{k: r[k] for k in ("name", "split", "line", "source", "id", "iou", "shapes", "points")}
                  for r in sorted(records, key=lambda r: r["line"])],
    }


def report_text(report: dict) -> str:
    c, f = report["counts"], report["fidelity"]
    lines = [f"ReasonSeg build report: {c['written']} of {c['pairs']} pairs written, {c['problems']} problem(s)", ""]
    for split, by_source in c["by_split"].items():
        parts = [f"{src} {v['short']} short + {v['long']} long" for src, v in by_source.items()]
        lines.append(f"  {split:<5} {sum(v['short'] + v['long'] for v in by_source.values()):>5}  " + "; ".join(parts))
    lines += ["", f"Polygon fidelity (IoU of the LISA redraw vs the source mask; review below {f['threshold']}):",
              f"  min {f['min']}  median {f['median']}  mean {f['mean']}"]
    lines += [f"  {label:<14} {n}" for label, n in f["histogram"].items()]
    if report["review"]:
        lines += ["", "For review:"]
        lines += [f"  {r['split']}/{r['name']} ({r['source']} {r['id']}): IoU {r['iou']:.4f}, cause: {r['cause']}"
                  for r in report["review"]]
    if report["problems"]:
        lines += ["", "Problems:"]
        lines += ["  " + Problem(p["line"], p["message"], p["id"], p["field"], p["path"]).render()
                  for p in report["problems"]]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------- demo

def write_demo_sources(out: str | os.PathLike, seed: int = 0,
                       scannet_size: tuple[int, int] | None = None) -> tuple[Path, Path, Path]:
    """The synthetic OpenImages and ScanNet sources and their instruction manifest under `out`:
    (openimages root, scannet root, manifest path)."""
    from ..sample import openimages as oi
    from ..sample import scannet as sn

    out = Path(out)
    oi_root = oi.write_openimages_source(out / "openimages", seed=seed)
    sn_root = sn.write_scannet_source(out / "scannet", seed=seed, **({"size": scannet_size} if scannet_size else {}))
    manifest = oi.write_manifest_jsonl(out / "instructions.jsonl", oi.manifest_lines(oi_root) + sn.manifest_lines())
    return oi_root, sn_root, manifest


def demo_step(out: str | os.PathLike) -> Path:
    """What the demo gains: synthetic OpenImages- and ScanNet-format sources → `build reasonseg` → a release.

    Writes `out/sources/` and `out/release/` (with its build report) and returns the release folder.
    """
    out = Path(out)
    oi_root, sn_root, manifest = write_demo_sources(out / "sources")
    result = build_release(manifest, out / "release", openimages=OpenImagesLayout(oi_root),
                           scannet=ScanNetLayout(sn_root), name="reasonseg-built-sample", version="1",
                           overwrite=True)
    return result.out
