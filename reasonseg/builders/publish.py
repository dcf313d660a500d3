"""Publish a release for the Hugging Face Hub: Parquet per split, a dataset card, Croissant metadata, upload.

`publish_release(data, out)` writes::

    out/data/{train,validation,test}-00000-of-00001.parquet   one row per image (COLUMNS below)
    out/README.md                  dataset card: YAML metadata, the numbers of this build, features, licences
    out/croissant.json             Croissant 1.0 JSON-LD: one record set per split, sha256 per file
    out/manifest.json              the release's manifest (restricted to the published rows)
    out/explanatory/train.json     the release's explanations (restricted to the published rows)

The Hub names the validation split `validation`; the release folder stays `val/` (`schema.canonical_split`).
Every row keeps its annotation file's bytes, so `reasonseg.published.export_release` writes the release back
byte for byte, and scoring the published form gives the numbers of the folder form.

`layout="seg-zero"` writes the Hub mirrors' layout that Seg-Zero and VisionReasoner evaluate on instead
(`reasonseg.builders.seg_zero`: one `ReasonSeg_<split>/` dataset per split, bool masks, first text only).

The licence of each row follows its source (`SOURCE_TERMS`): the card, the Croissant file and the published
manifest all say the same thing, computed from the sources present. A source whose terms forbid redistribution
(ScanNet) triggers a `PublishWarning`; `exclude_sources` leaves its rows out, and the card then states how the
split sizes differ from the release's.
"""
from __future__ import annotations

import datetime
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..dataset import MANIFEST, load_split, read_annotation, read_manifest, sha256_file
from ..errors import BuildError
from ..schema import HUB_SPLIT_NAMES, SPLITS, Sample

BATCH = 32
EXPLANATORY = "explanatory/train.json"
CITATION = """@inproceedings{lai2024lisa,
  title     = {LISA: Reasoning Segmentation via Large Language Model},
  author    = {Lai, Xin and Tian, Zhuotao and Chen, Yukang and Li, Yanwei and Yuan, Yuhui and Liu, Shu and Jia, Jiaya},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2024}
}"""
# Ground-truth PNGs are palette images: the pixel values stay 0 / 1 / 255 (what `np.array` gives back), while a
# viewer shows background black, target white and ignore grey instead of three near-black shades.
GT_PALETTE = {0: (0, 0, 0), 1: (255, 255, 255), 255: (128, 128, 128)}


@dataclass(frozen=True)
class SourceTerms:
    title: str
    terms: str                      # what the card says
    licence_urls: tuple[str, ...]   # what the Croissant file says
    redistributable: bool | None    # None: not known


SOURCE_TERMS = {
    "openimages": SourceTerms(
        "OpenImages", "annotations CC BY 4.0 (Google); images listed as CC BY 2.0, each with its own licence and "
        "author in `source_license` / `source_author`: verify each image's licence before reuse",
        ("https://creativecommons.org/licenses/by/4.0/", "https://creativecommons.org/licenses/by/2.0/"), True),
    "scannet": SourceTerms(
        "ScanNet v2", "ScanNet Terms of Use (a signed agreement; research only; no redistribution of frames or "
        "labels without ScanNet's agreement)", ("https://kaldir.vc.in.tum.de/scannet/ScanNet_TOS.pdf",), False),
}
UNKNOWN_SOURCE = SourceTerms(
    "source not recorded", "not recorded by the release (images of the public ReasonSeg release come from "
    "OpenImages and ScanNet); their terms are those of the release this was built from", (), None)

# name, datasets feature (as the card shows it), Croissant data type, description
COLUMNS = (
    ("id", "string", "sc:Text", "sample id: the image file stem in the release"),
    ("image", "Image", "sc:ImageObject", "the image, the release's file bytes"),
    ("ground_truth", "Image", "sc:ImageObject",
     "palette PNG of the LISA rasterization of `shapes`: 0 background (black), 1 target (white), 255 ignore (grey)"),
    ("texts", "list of string", "sc:Text", "instructions; the lisa protocol scores texts[0]"),
    ("is_sentence", "bool", "sc:Boolean", "true for a long implicit sentence, false for a short phrase"),
    ("shapes", "list of {label: string, points: list of [x, y] float64}", "nested",
     "the annotation's polygons, pixel coordinates as stored"),
    ("height", "int32", "sc:Integer", "image height in pixels"),
    ("width", "int32", "sc:Integer", "image width in pixels"),
    ("source_dataset", "string", "sc:Text", "openimages, scannet, or empty when the release does not record it"),
    ("source_id", "string", "sc:Text", "OpenImages ImageID or <scene>/<frame>"),
    ("source_license", "string", "sc:Text", "licence of the image, as listed by the source"),
    ("source_author", "string", "sc:Text", "author of the image, as listed by the source"),
    ("source_url", "string", "sc:Text", "landing page of the image"),
    ("annotation", "binary", "sc:Text", "the release's annotation JSON file, byte for byte"),
)


class PublishWarning(UserWarning):
    """Something about a publication its author must decide on (e.g. terms that forbid redistribution)."""


def features():
    from datasets import Features, Image, List, Value

    return Features({
        "id": Value("string"), "image": Image(), "ground_truth": Image(), "texts": List(Value("string")),
        "is_sentence": Value("bool"),
        "shapes": List({"label": Value("string"), "points": List(List(Value("float64")))}),
        "height": Value("int32"), "width": Value("int32"),
        "source_dataset": Value("string"), "source_id": Value("string"), "source_license": Value("string"),
        "source_author": Value("string"), "source_url": Value("string"), "annotation": Value("binary"),
    })


def parquet_name(split: str) -> str:
    return f"data/{HUB_SPLIT_NAMES[split]}-00000-of-00001.parquet"


def ground_truth_png(sample: Sample) -> tuple[bytes, bool]:
    """The palette PNG of a sample's LISA mask, and whether the mask has a target pixel."""
    import io

    from PIL import Image

    from ..masks import rasterize_shapes

    gt = rasterize_shapes(sample.shapes, sample.height, sample.width)
    image = Image.fromarray(gt, mode="P")
    palette = bytearray(256 * 3)
    for value, rgb in GT_PALETTE.items():
        palette[3 * value:3 * value + 3] = bytes(rgb)
    image.putpalette(bytes(palette))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue(), bool((gt == 1).any())


def _row(sample: Sample) -> tuple[dict, bool]:
    doc, _ = read_annotation(sample.json_path)
    source = doc.get("source") if isinstance(doc.get("source"), dict) else {}
    png, has_target = ground_truth_png(sample)
    row = {
        "id": sample.id,
        "image": {"bytes": sample.image_path.read_bytes(), "path": sample.image_path.name},
        "ground_truth": {"bytes": png, "path": f"{sample.id}.png"},
        "texts": list(sample.texts), "is_sentence": sample.is_sentence,
        "shapes": [{"label": s.label, "points": [list(p) for p in s.points]} for s in sample.shapes],
        "height": sample.height, "width": sample.width,
        "source_dataset": str(source.get("dataset") or sample.source or ""),
        "source_id": str(source.get("id", "")), "source_license": str(source.get("license", "")),
        "source_author": str(source.get("author", "")), "source_url": str(source.get("url", "")),
        "annotation": sample.json_path.read_bytes(),
    }
    return row, has_target


def write_split_parquet(samples: list[Sample], path: Path) -> dict:
    """Stream `samples` into one Parquet file; returns the split's numbers for the card."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = features().arrow_schema
    stats = {"rows": 0, "short": 0, "long": 0, "empty_gt": 0, "sources": {}}
    path.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, len(samples), BATCH):
            rows = []
            for sample in samples[start:start + BATCH]:
                row, has_target = _row(sample)
                rows.append(row)
                stats["long" if sample.is_sentence else "short"] += 1
                stats["empty_gt"] += not has_target
                source = sample.source or "unknown"
                stats["sources"][source] = stats["sources"].get(source, 0) + 1
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))
            stats["rows"] += len(rows)
    return stats


# ---------------------------------------------------------------------------------------------------- publish

LAYOUTS = ("reasonseg", "seg-zero")


def publish_release(data: str | os.PathLike, out: str | os.PathLike, *, repo_id: str | None = None,
                    exclude_sources: tuple[str, ...] = (), overwrite: bool = False, layout: str = "reasonseg") -> dict:
    """Write the published form of the release at `data` into `out` (`layout`: "reasonseg", the faithful form, or
    "seg-zero", the Hub mirrors' layout); nothing appears in `out` on an error.

    Warns (PublishWarning) when rows come from a source whose terms forbid redistribution.
    """
    from ..extras import require_extra
    from ..outputs import check_output_dir, staged_output_dir

    require_extra("hub", "reasonseg publish", ("datasets", "pyarrow"))
    if layout not in LAYOUTS:
        raise BuildError(f"--layout {layout!r} is not one of {', '.join(LAYOUTS)}", field="layout")
    data = Path(data)
    if not data.is_dir() or not any((data / split).is_dir() for split in SPLITS):
        raise BuildError("not a release folder: no train/, val/ or test/ in it", path=str(data))
    check_output_dir(out, overwrite)
    manifest = read_manifest(data)
    everything = {split: load_split(data, split) for split in SPLITS if (data / split).is_dir()}
    known = {s.source or "unknown" for samples in everything.values() for s in samples}
    unknown = sorted(set(exclude_sources) - known)
    if unknown:
        raise BuildError(f"--exclude-source {unknown[0]!r}: no row comes from it; sources: {', '.join(sorted(known))}")
    kept = {split: [s for s in samples if (s.source or "unknown") not in exclude_sources]
            for split, samples in everything.items()}
    excluded = {split: len(everything[split]) - len(kept[split]) for split in everything}
    if layout == "seg-zero":
        return _publish_mirrors(data, out, overwrite, kept, excluded, exclude_sources, manifest)
    outputs = ("data", "README.md", "croissant.json", MANIFEST, "explanatory")
    with staged_output_dir(out, overwrite, outputs) as tmp:
        splits = {split: write_split_parquet(samples, tmp / parquet_name(split))
                  for split, samples in kept.items() if samples}
        if not splits:
            raise BuildError("every row is excluded: nothing to publish", path=str(data))
        extra_files = _copy_release_files(data, tmp, manifest, kept, excluded)
        info = {
            "name": (manifest or {}).get("name", "ReasonSeg"), "version": str((manifest or {}).get("version", "")),
            "repo_id": repo_id, "date": _release_date(data), "splits": splits,
            "release_counts": {split: len(samples) for split, samples in everything.items()},
            "excluded_sources": sorted(exclude_sources), "excluded": excluded,
            "licences": licences(splits, (manifest or {}).get("sources")),
            "files": {name: sha256_file(tmp / name) for name in [*(parquet_name(s) for s in splits), *extra_files]},
        }
        (tmp / "README.md").write_text(dataset_card(info), encoding="utf-8")
        (tmp / "croissant.json").write_text(json.dumps(croissant(info), indent=1) + "\n", encoding="utf-8")
    for warning in redistribution_warnings(info):
        warnings.warn(warning, PublishWarning, stacklevel=2)
    return info


def _publish_mirrors(data: Path, out, overwrite: bool, kept: dict[str, list[Sample]], excluded: dict[str, int],
                     exclude_sources: tuple[str, ...], manifest: dict | None) -> dict:
    from ..outputs import staged_output_dir
    from ..sources import MIRROR_FOLDER
    from .seg_zero import write_mirrors

    with staged_output_dir(out, overwrite, tuple(MIRROR_FOLDER.format(split=s) for s in SPLITS)) as tmp:
        splits = write_mirrors(kept, tmp)
        if not splits:
            raise BuildError("every row is excluded: nothing to publish", path=str(data))
    info = {"layout": "seg-zero", "splits": splits, "excluded": excluded, "excluded_sources": sorted(exclude_sources),
            "licences": licences(splits, (manifest or {}).get("sources"))}
    for warning in redistribution_warnings(info):
        warnings.warn(warning, PublishWarning, stacklevel=3)
    return info


def _release_date(data: Path) -> str:
    """The release's date: its manifest's modification day, so that a rerun writes the same bytes."""
    path = data / MANIFEST if (data / MANIFEST).is_file() else data
    return datetime.datetime.fromtimestamp(path.stat().st_mtime, datetime.timezone.utc).date().isoformat()


def _copy_release_files(data: Path, tmp: Path, manifest: dict | None, kept: dict[str, list[Sample]],
                        excluded: dict[str, int]) -> list[str]:
    """manifest.json and explanatory/train.json beside the Parquet files: verbatim when every row is published,
    else restricted to the published rows (the manifest's split counts and checksums then describe those)."""
    written = []
    explanatory = data / EXPLANATORY
    if explanatory.is_file():
        target = tmp / EXPLANATORY
        target.parent.mkdir()
        if not any(excluded.values()):
            target.write_bytes(explanatory.read_bytes())
        else:
            train_names = {s.image_path.name for s in kept.get("train", [])}
            entries = json.loads(explanatory.read_text(encoding="utf-8"))
            entries = [e for e in entries if not isinstance(e, dict) or e.get("image") in train_names]
            target.write_text(json.dumps(entries, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(EXPLANATORY)
    if manifest is not None:
        if not any(excluded.values()):
            (tmp / MANIFEST).write_bytes((data / MANIFEST).read_bytes())
        else:
            (tmp / MANIFEST).write_text(json.dumps(_restricted_manifest(manifest, data, tmp, kept), indent=1) + "\n",
                                        encoding="utf-8")
        written.append(MANIFEST)
    return written


def _restricted_manifest(manifest: dict, data: Path, tmp: Path, kept: dict[str, list[Sample]]) -> dict:
    published = {s.source or "unknown" for samples in kept.values() for s in samples}
    files = {}
    for samples in kept.values():
        for s in samples:
            for path in (s.image_path, s.json_path):
                rel = path.relative_to(data).as_posix()
                files[rel] = manifest.get("files", {}).get(rel) or sha256_file(path)
    if (tmp / EXPLANATORY).is_file():
        files[EXPLANATORY] = sha256_file(tmp / EXPLANATORY)
    out = dict(manifest)
    out["splits"] = {split: {"count": len(samples), "short": sum(not s.is_sentence for s in samples),
                             "long": sum(s.is_sentence for s in samples)} for split, samples in kept.items() if samples}
    out["files"] = dict(sorted(files.items()))
    if isinstance(manifest.get("sources"), dict):
        out["sources"] = {k: v for k, v in manifest["sources"].items() if k in published}
    if isinstance(manifest.get("sample_sources"), dict):
        keep = {f"{split}/{s.id}" for split, samples in kept.items() for s in samples}
        out["sample_sources"] = {k: v for k, v in manifest["sample_sources"].items() if k in keep}
    return out


# --------------------------------------------------------------------------------------------------- licences

def licences(splits: dict[str, dict], manifest_sources: dict | None = None) -> list[dict]:
    """One entry per source present in the published rows: rows, terms, licence URLs, redistribution.

    The terms come from SOURCE_TERMS; the release manifest's own wording for a source, when it has one, is kept
    beside them so that the card says what the release said."""
    rows: dict[str, int] = {}
    for stats in splits.values():
        for source, n in stats["sources"].items():
            rows[source] = rows.get(source, 0) + n
    out = []
    for source in sorted(rows):
        terms = SOURCE_TERMS.get(source, UNKNOWN_SOURCE)
        note = (manifest_sources or {}).get(source)
        out.append({"source": source, "title": terms.title, "rows": rows[source], "terms": terms.terms,
                    "urls": list(terms.licence_urls), "redistributable": terms.redistributable,
                    "release_note": "; ".join(f"{k}: {v}" for k, v in note.items()) if isinstance(note, dict)
                    else None})
    return out


def redistribution_warnings(info: dict) -> list[str]:
    return [f"{entry['rows']} published row(s) come from {entry['title']}, whose terms forbid redistribution "
            f"({entry['terms']}): publish them only under those terms, or leave them out with "
            f"--exclude-source {entry['source']}"
            for entry in info["licences"] if entry["redistributable"] is False]


# ------------------------------------------------------------------------------------------------------- card

def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < limit:
            return label
    return "100K<n<1M"


def dataset_card(info: dict) -> str:
    splits = info["splits"]
    total = sum(s["rows"] for s in splits.values())
    present = {entry["source"] for entry in info["licences"]}
    source_datasets = [f"extended|{name}" for source, name in (("openimages", "open-images"), ("scannet", "scannet"))
                       if source in present]
    yaml = [
        "---", "license: other", "license_name: per-source-terms",
        "license_details: " + json.dumps("each row carries its source's terms; see the Licences section"),
        "language:", "- en", "pretty_name: " + json.dumps(f"{info['name']} (reasoning segmentation)"),
        "task_categories:", "- image-segmentation", "task_ids:", "- semantic-segmentation",
        "size_categories:", f"- {_size_category(total)}", "source_datasets:",
        *(f"- {s}" for s in source_datasets or ["original"]),
        "annotations_creators:", "- expert-generated", "language_creators:", "- expert-generated",
        "- machine-generated", "multilinguality:", "- monolingual", "tags:", "- reasoning-segmentation",
        "- referring-segmentation", "configs:", "- config_name: default", "  data_files:",
        *(line for split in splits for line in
          (f"  - split: {HUB_SPLIT_NAMES[split]}", f"    path: data/{HUB_SPLIT_NAMES[split]}-*.parquet")),
        "---",
    ]
    all_sources = sorted({k for s in splits.values() for k in s["sources"]})
    header = ["split (folder)", "rows", "short", "long", "empty ground truth", *all_sources]
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for split, s in splits.items():
        cells = [f"{HUB_SPLIT_NAMES[split]} ({split}/)", s["rows"], s["short"], s["long"], s["empty_gt"],
                 *(s["sources"].get(k, 0) for k in all_sources)]
        table.append("| " + " | ".join(map(str, cells)) + " |")
    empty = sum(s["empty_gt"] for s in splits.values())
    empty_text = (f"{empty} row(s) have an empty ground truth (no target pixel, e.g. an annotation without shapes); "
                  "they are kept as the release has them: under the lisa protocol such a query scores 1.0 only for "
                  "an empty prediction." if empty else "Every row has at least one target pixel.")
    changed = ""
    if info["excluded_sources"]:
        lines = [f"- {HUB_SPLIT_NAMES[split]}: {info['release_counts'][split]} in the release, "
                 f"{info['release_counts'][split] - n} published" for split, n in info["excluded"].items()]
        changed = ("\n**This publication leaves out the rows from " + ", ".join(info["excluded_sources"]) +
                   "**, so its split sizes differ from the release's and its scores are not comparable to numbers "
                   "reported on the full release:\n" + "\n".join(lines) + "\n")
    features_text = "\n".join(f"| `{name}` | {feature} | {description} |"
                              for name, feature, _, description in COLUMNS)
    licence_text = "\n".join(
        f"- **{e['title']}** (`source_dataset == \"{e['source'] if e['source'] != 'unknown' else ''}\"`, "
        f"{e['rows']} rows): {e['terms']}."
        + (f" The release's manifest says: {e['release_note']}." if e["release_note"] else "")
        + (" **Redistribution is not allowed by these terms.**" if e["redistributable"] is False else "")
        for e in info["licences"])
    val_split = HUB_SPLIT_NAMES["val"]
    body = f"""
# {info['name']}

Reasoning segmentation: each image comes with instructions that describe a target implicitly ("the thing that
keeps the rider's head safe") or name it ("helmet"), and a ground-truth mask of the target. This is the format of
the ReasonSeg benchmark (LISA, CVPR 2024), exported by `reasonseg publish` (release version {info['version'] or 'n/a'},
{info['date']}).

{chr(10).join(table)}
{changed}
## Motivation
ReasonSeg measures whether a model can segment what an instruction implies rather than names. This export makes
the release loadable with `datasets.load_dataset` and `mlcroissant` without the original folder layout or code.

## Composition
{total} rows, one per image. The Hub's `{val_split}` split is the release's `val/` folder; `reasonseg` accepts
both names. {empty_text} The evaluated query of a row is `texts[0]`; `is_sentence` gives the short/long split of
Table 1.

### Features

| column | feature | meaning |
|---|---|---|
{features_text}

## Collection process
Images come from OpenImages (instance masks) and ScanNet v2 (2D label/instance projections). Annotators wrote the
instructions and chose target instances; masks were converted to polygons and checked by redrawing them the way
the reference does (pairs below 0.98 IoU are listed in the build report).

## Uses
Evaluation of reasoning-segmentation models (gIoU, cIoU over `texts[0]`) and fine-tuning on the train split. The
validation and test splits should not be used for training.

```python
from datasets import load_dataset
ds = load_dataset("{info['repo_id'] or 'path/to/this/folder'}", split="{val_split}")
import numpy as np; mask = np.array(ds[0]["ground_truth"])   # 0 / 1 / 255
```

Scoring needs no conversion: `reasonseg score {info['repo_id'] or 'FOLDER'} preds.json --split {val_split}` reads this
form (a local folder, or the Hub dataset once it is in the local Hugging Face cache), and
`reasonseg export-release FOLDER --out ReasonSeg` writes the release layout back, annotations byte for byte.

## Limitations
Polygons cannot express holes, so masks with holes are filled. The instructions are in English and were written
by a small group of annotators; their style and the image sources bias what "reasoning" means here. Image sources
carry their own demographic and geographic biases.

## Licences
Each row's terms are those of its source:

{licence_text}
- Instructions and masks of this release: as stated by the publisher of the release.

## Citation
```bibtex
{CITATION}
```

## Files
{chr(10).join(f"- `{name}`: {digest}" for name, digest in info['files'].items())}
"""
    return "\n".join(yaml) + "\n" + body


# -------------------------------------------------------------------------------------------------- croissant

CROISSANT_CONTEXT = {
    "@language": "en", "@vocab": "https://schema.org/", "citeAs": "cr:citeAs", "column": "cr:column",
    "conformsTo": "dct:conformsTo", "cr": "http://mlcommons.org/croissant/", "data": {"@id": "cr:data",
                                                                                     "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"}, "dct": "http://purl.org/dc/terms/",
    "equivalentProperty": "cr:equivalentProperty", "rai": "http://mlcommons.org/croissant/RAI/",
    "samplingRate": "cr:samplingRate", "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract", "field": "cr:field",
    "fileProperty": "cr:fileProperty", "fileObject": "cr:fileObject", "fileSet": "cr:fileSet",
    "format": "cr:format", "includes": "cr:includes", "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath", "key": "cr:key", "md5": "cr:md5", "parentField": "cr:parentField",
    "path": "cr:path", "recordSet": "cr:recordSet", "references": "cr:references", "regex": "cr:regex",
    "repeated": "cr:repeated", "replace": "cr:replace", "sc": "https://schema.org/", "separator": "cr:separator",
    "source": "cr:source", "subField": "cr:subField", "transform": "cr:transform",
}


def _croissant_fields(record_set: str, file_id: str) -> list[dict]:
    fields = []
    for column, _, dtype, description in COLUMNS:
        source = {"fileObject": {"@id": file_id}, "extract": {"column": column}}
        if dtype == "nested":  # shapes: a list of {label, points}, each part read from the struct by jsonPath
            parts = (("label", "sc:Text", False), ("points", "sc:Float", True))
            fields.append({"@type": "cr:Field", "@id": f"{record_set}/{column}", "name": f"{record_set}/{column}",
                           "description": description, "repeated": True, "subField": [
                               {"@type": "cr:Field", "@id": f"{record_set}/{column}/{part}",
                                "name": f"{record_set}/{column}/{part}", "dataType": part_type,
                                **({"repeated": True} if repeated else {}),
                                "source": {**source, "transform": {"jsonPath": part}}}
                               for part, part_type, repeated in parts]})
            continue
        if dtype == "sc:ImageObject":
            source["transform"] = {"jsonPath": "bytes"}  # a datasets.Image cell is a struct {bytes, path}
        field = {"@type": "cr:Field", "@id": f"{record_set}/{column}", "name": f"{record_set}/{column}",
                 "description": description, "dataType": dtype, "source": source}
        if column == "texts":
            field["repeated"] = True
        fields.append(field)
    return fields


def croissant(info: dict) -> dict:
    distribution, record_sets = [], []
    for split in info["splits"]:
        name, hub = parquet_name(split), HUB_SPLIT_NAMES[split]
        distribution.append({"@type": "cr:FileObject", "@id": name, "name": name, "contentUrl": name,
                             "encodingFormat": "application/x-parquet",
                             "sha256": info["files"][name].split(":", 1)[1]})
        record_sets.append({"@type": "cr:RecordSet", "@id": hub, "name": hub,
                            "description": f"the {hub} split (release folder {split}/), one record per image",
                            "field": _croissant_fields(hub, name)})
    licence_urls = sorted({url for entry in info["licences"] for url in entry["urls"]})
    sizes = ", ".join(f"{HUB_SPLIT_NAMES[s]} {v['rows']}" for s, v in info["splits"].items())
    description = (f"Reasoning segmentation in the ReasonSeg format: images, implicit instructions and "
                   f"ground-truth masks ({sizes} rows). Licences per source: "
                   + "; ".join(f"{e['title']} ({e['rows']} rows): {e['terms']}" for e in info["licences"]) + ".")
    if info["excluded_sources"]:
        description += (" Rows from " + ", ".join(info["excluded_sources"]) + " are left out, so split sizes "
                        "differ from the release's.")
    return {
        "@context": CROISSANT_CONTEXT, "@type": "sc:Dataset", "conformsTo": "http://mlcommons.org/croissant/1.0",
        "name": info["name"], "version": _semver(info["version"]), "description": description,
        "license": licence_urls,
        "url": f"https://huggingface.co/datasets/{info['repo_id']}" if info.get("repo_id")
        else "https://github.com/dvlab-research/LISA",
        "datePublished": info["date"], "citeAs": CITATION,
        "distribution": distribution, "recordSet": record_sets,
    }


def _semver(version: str) -> str:
    """Croissant wants MAJOR.MINOR.PATCH; "1" and "1.0" become "1.0.0", anything else "0.0.0"."""
    parts = version.split(".") if version else []
    if parts and len(parts) <= 3 and all(p.isdigit() for p in parts):
        return ".".join(parts + ["0"] * (3 - len(parts)))
    return "0.0.0"


# ------------------------------------------------------------------------------------------------------- push

def hub_token() -> str | None:
    """The token `hf auth login` stored, or HF_TOKEN from the environment (huggingface_hub decides)."""
    from huggingface_hub import get_token

    return get_token()


def check_push(repo_id: str | None) -> str:
    """The token for an upload to `repo_id`; BuildError when either is missing."""
    from ..extras import require_extra

    require_extra("hub", "reasonseg publish --push", ("huggingface_hub",))
    if not repo_id:
        raise BuildError("--push needs --repo-id (e.g. --repo-id your-name/reasonseg)")
    token = hub_token()
    if not token:
        raise BuildError("no Hugging Face token: neither `hf auth login` nor HF_TOKEN gave one", field="HF_TOKEN",
                         hint="run `hf auth login` with a write token, or export HF_TOKEN=...")
    return token


def push_to_hub(folder: str | os.PathLike, repo_id: str | None, *, private: bool = False) -> str:
    """Upload a published folder as a dataset repo with the token of `hub_token()`."""
    token = check_push(repo_id)
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="dataset",
                          commit_message="reasonseg publish")
    except (HfHubHTTPError, OSError, ValueError) as exc:
        raise BuildError(f"upload to {repo_id} failed: {exc}", path=str(folder)) from None
    return f"https://huggingface.co/datasets/{repo_id}"
