"""Publish a release for the Hugging Face Hub: Parquet per split, a dataset card, Croissant metadata, upload.

`publish_release(data, out)` writes::

    out/data/{train,val,test}-00000-of-00001.parquet   one row per image (features below)
    out/README.md                                      dataset card: YAML metadata + datasheet sections
    out/croissant.json                                 Croissant 1.0 JSON-LD, sha256 per file

Row features: `id`, `image` (the original JPEG bytes, a `datasets.Image`), `ground_truth` (PNG, 8-bit, values
0 background / 1 target / 255 ignore, the LISA rasterization of the shapes; a `datasets.Image`, lossless),
`texts`, `is_sentence`, `shapes` (the polygons as JSON text), `height`, `width`, and `source_dataset`,
`source_id`, `source_license`, `source_author`, `source_url`. Rows are streamed to Parquet in small batches, so
memory does not grow with the release. `datasets`/`pyarrow` are imported here only (the `hub` extra).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..dataset import atomic_write_text, load_split, read_manifest, sha256_file
from ..errors import BuildError
from ..schema import SPLITS

BATCH = 32
CROISSANT_CONTEXT = {
    "@language": "en", "@vocab": "https://schema.org/", "citeAs": "cr:citeAs", "column": "cr:column",
    "conformsTo": "dct:conformsTo", "cr": "http://mlcommons.org/croissant/", "data": {"@id": "cr:data",
                                                                                     "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"}, "dct": "http://purl.org/dc/terms/",
    "examples": {"@id": "cr:examples", "@type": "@json"}, "extract": "cr:extract", "field": "cr:field",
    "fileProperty": "cr:fileProperty", "fileObject": "cr:fileObject", "fileSet": "cr:fileSet",
    "format": "cr:format", "includes": "cr:includes", "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath", "key": "cr:key", "md5": "cr:md5", "parentField": "cr:parentField",
    "path": "cr:path", "recordSet": "cr:recordSet", "references": "cr:references", "regex": "cr:regex",
    "repeated": "cr:repeated", "replace": "cr:replace", "sc": "https://schema.org/", "separator": "cr:separator",
    "source": "cr:source", "subField": "cr:subField", "transform": "cr:transform",
}
COLUMNS = (  # name, Croissant data type, description
    ("id", "sc:Text", "sample id: the image file stem in the release"),
    ("image", "sc:ImageObject", "the image, original JPEG bytes"),
    ("ground_truth", "sc:ImageObject", "PNG mask: 0 background, 1 target, 255 ignore (LISA rasterization)"),
    ("texts", "sc:Text", "instructions; the lisa protocol scores texts[0]"),
    ("is_sentence", "sc:Boolean", "true for a long implicit sentence, false for a short phrase"),
    ("shapes", "sc:Text", "the release JSON's polygons, as JSON text"),
    ("height", "sc:Integer", "image height in pixels"),
    ("width", "sc:Integer", "image width in pixels"),
    ("source_dataset", "sc:Text", "openimages, scannet, or empty when unknown"),
    ("source_id", "sc:Text", "OpenImages ImageID or <scene>/<frame>"),
    ("source_license", "sc:Text", "licence of the image, as listed by the source"),
    ("source_author", "sc:Text", "author of the image, as listed by the source"),
    ("source_url", "sc:Text", "landing page of the image"),
)


def features():
    from datasets import Features, Image, List, Value

    return Features({
        "id": Value("string"), "image": Image(), "ground_truth": Image(), "texts": List(Value("string")),
        "is_sentence": Value("bool"), "shapes": Value("string"), "height": Value("int32"), "width": Value("int32"),
        "source_dataset": Value("string"), "source_id": Value("string"), "source_license": Value("string"),
        "source_author": Value("string"), "source_url": Value("string"),
    })


def _row(sample, manifest_sources: dict) -> dict:
    import cv2

    from ..dataset import read_annotation
    from ..masks import rasterize_shapes

    doc, _ = read_annotation(sample.json_path)
    source = doc.get("source") if isinstance(doc.get("source"), dict) else {}
    gt = rasterize_shapes(sample.shapes, sample.height, sample.width)
    ok, png = cv2.imencode(".png", gt)
    if not ok:
        raise BuildError("ground truth does not encode as PNG", sample_id=sample.id)
    shapes = [{"label": s.label, "points": [list(p) for p in s.points]} for s in sample.shapes]
    return {
        "id": sample.id,
        "image": {"bytes": sample.image_path.read_bytes(), "path": sample.image_path.name},
        "ground_truth": {"bytes": png.tobytes(), "path": f"{sample.id}.png"},
        "texts": list(sample.texts), "is_sentence": sample.is_sentence,
        "shapes": json.dumps(shapes, ensure_ascii=False), "height": sample.height, "width": sample.width,
        "source_dataset": str(source.get("dataset") or manifest_sources.get(f"{sample.split}/{sample.id}") or ""),
        "source_id": str(source.get("id", "")), "source_license": str(source.get("license", "")),
        "source_author": str(source.get("author", "")), "source_url": str(source.get("url", "")),
    }


def write_split_parquet(samples, path: Path, manifest_sources: dict) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = features().arrow_schema
    n = 0
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, len(samples), BATCH):
            rows = [_row(s, manifest_sources) for s in samples[start:start + BATCH]]
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))
            n += len(rows)
    return n


def publish_release(data: str | os.PathLike, out: str | os.PathLike, *, repo_id: str | None = None,
                    overwrite: bool = False) -> dict:
    """Write Parquet, README.md and croissant.json for the release at `data` into `out` (atomically)."""
    from .release.build import _fresh_dir, _place, temp_dir_beside

    data, out = Path(data), Path(out)
    if not data.is_dir():
        raise BuildError("release folder not found", path=str(data))
    _fresh_dir(out, overwrite)
    manifest = read_manifest(data) or {}
    manifest_sources = manifest.get("sample_sources") if isinstance(manifest.get("sample_sources"), dict) else {}
    tmp = temp_dir_beside(out)
    try:
        (tmp / "data").mkdir()
        splits: dict[str, int] = {}
        sources: dict[str, int] = {}
        for split in SPLITS:
            if not (data / split).is_dir():
                continue
            samples = load_split(data, split)
            splits[split] = write_split_parquet(samples, tmp / "data" / f"{split}-00000-of-00001.parquet",
                                                manifest_sources)
            for s in samples:
                key = s.source or "unknown"
                sources[key] = sources.get(key, 0) + 1
        if not splits:
            raise BuildError("no train/, val/ or test/ folder in the release", path=str(data))
        files = sorted((tmp / "data").iterdir())
        info = {"name": manifest.get("name", "ReasonSeg"), "version": str(manifest.get("version", "")),
                "repo_id": repo_id, "splits": splits, "sources": sources,
                "files": {f"data/{p.name}": sha256_file(p) for p in files}}
        atomic_write_text(tmp / "README.md", dataset_card(info))
        atomic_write_text(tmp / "croissant.json", json.dumps(croissant(info), indent=1) + "\n")
        for path in (tmp / "README.md", tmp / "croissant.json"):
            path.chmod(0o644)  # temp files are created private; published files are meant to be read
        _place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if n < limit:
            return label
    return "100K<n<1M"


def dataset_card(info: dict) -> str:
    total = sum(info["splits"].values())
    source_datasets = ["extended|open-images"] if "openimages" in info["sources"] else []
    source_datasets += ["extended|scannet"] if "scannet" in info["sources"] else []
    yaml = [
        "---", "license: other", "license_name: mixed-source-terms",
        "license_details: see the Licences section of this card",
        "language:", "- en", "pretty_name: " + json.dumps(f"{info['name']} (reasoning segmentation)"),
        "task_categories:", "- image-segmentation", "task_ids:", "- semantic-segmentation",
        "size_categories:", f"- {_size_category(total)}", "source_datasets:",
        *(f"- {s}" for s in source_datasets or ["original"]),
        "annotations_creators:", "- expert-generated", "language_creators:", "- expert-generated",
        "- machine-generated", "multilinguality:", "- monolingual", "tags:", "- reasoning-segmentation",
        "- referring-segmentation", "configs:", "- config_name: default", "  data_files:",
        *(line for split in info["splits"] for line in
          (f"  - split: {split}", f"    path: data/{split}-*.parquet")),
        "---",
    ]
    counts = "\n".join(f"| {split} | {n} |" for split, n in info["splits"].items())
    by_source = ", ".join(f"{k}: {v}" for k, v in sorted(info["sources"].items()))
    body = f"""
# {info['name']}

Reasoning segmentation: each image comes with instructions that describe a target implicitly ("the thing that
keeps the rider's head safe") or name it ("helmet"), and a ground-truth mask of the target. This is the format of
the ReasonSeg benchmark (LISA, CVPR 2024), exported by `reasonseg publish` (release version {info['version'] or 'n/a'}).

| split | images |
|---|---|
{counts}

## Motivation
ReasonSeg measures whether a model can segment what an instruction implies rather than names. This export makes
the release loadable with `datasets.load_dataset` without the original folder layout or code.

## Composition
One row per image: `image` (JPEG), `ground_truth` (PNG with 0 background, 1 target, 255 ignore, exactly the
reference rasterization of `shapes`), `texts` (the evaluated query is `texts[0]`), `is_sentence` (long vs short
query, the short/long split of Table 1), `shapes` (polygons as JSON), `height`, `width`, and where each image came
from (`source_*`). Images by source: {by_source}. Known defects of the public release (for example two test
images without shapes, i.e. empty ground truth) are kept, not repaired.

## Collection process
Images come from OpenImages (instance masks) and ScanNet v2 (2D label/instance projections). Annotators wrote the
instructions and chose target instances; masks were converted to polygons and checked by redrawing them the way
the reference does (pairs below 0.98 IoU are listed in the build report).

## Uses
Evaluation of reasoning-segmentation models (gIoU, cIoU over `texts[0]`) and fine-tuning on the train split. The
val and test splits should not be used for training.

```python
from datasets import load_dataset
ds = load_dataset("parquet", data_files={{"val": "data/val-*.parquet"}})["val"]
import numpy as np; mask = np.array(ds[0]["ground_truth"])   # 0 / 1 / 255
```

## Limitations
Polygons cannot express holes, so masks with holes are filled. The instructions are in English and were written
by a small group of annotators; their style and the image sources bias what "reasoning" means here. Image sources
carry their own demographic and geographic biases.

## Licences
- OpenImages: annotations CC BY 4.0 (Google); images are listed as CC BY 2.0, per image: `source_license` and
  `source_author` give each image's terms and attribution. Verify the licence of each image before reuse.
- ScanNet v2: ScanNet Terms of Use (research only; no redistribution of frames or labels without agreement).
  Rows with `source_dataset == "scannet"` must not be redistributed outside those terms.
- Instructions and masks of this release: as stated by the publisher of the release.

## Files
{chr(10).join(f"- `{name}`: {digest}" for name, digest in info['files'].items())}
"""
    return "\n".join(yaml) + "\n" + body


def croissant(info: dict) -> dict:
    distribution = [{"@type": "cr:FileObject", "@id": name, "name": name, "contentUrl": name,
                     "encodingFormat": "application/x-parquet", "sha256": digest.split(":", 1)[1]}
                    for name, digest in info["files"].items()]
    fields = []
    for column, dtype, description in COLUMNS:
        # Every split file has the same columns: one FileSet is the source of them all.
        field = {"@type": "cr:Field", "@id": f"default/{column}", "name": column, "description": description,
                 "dataType": dtype, "source": {"fileSet": {"@id": "parquet-files"}, "extract": {"column": column}}}
        if column == "texts":
            field["repeated"] = True
        fields.append(field)
    file_set = {"@type": "cr:FileSet", "@id": "parquet-files", "name": "parquet-files",
                "containedIn": [{"@id": d["@id"]} for d in distribution],
                "encodingFormat": "application/x-parquet", "includes": "data/*.parquet"}
    return {
        "@context": CROISSANT_CONTEXT, "@type": "sc:Dataset", "conformsTo": "http://mlcommons.org/croissant/1.0",
        "name": info["name"], "version": info["version"] or "1.0",
        "description": "Reasoning segmentation: images, implicit instructions and ground-truth masks (ReasonSeg "
                       "format).",
        "license": "https://creativecommons.org/licenses/by/4.0/",
        "url": f"https://huggingface.co/datasets/{info['repo_id']}" if info.get("repo_id") else "",
        "citeAs": "Lai et al., LISA: Reasoning Segmentation via Large Language Model, CVPR 2024",
        "distribution": [*distribution, file_set],
        "recordSet": [{"@type": "cr:RecordSet", "@id": "default", "name": "default",
                       "description": "one record per image", "field": fields}],
    }


def hub_token() -> str | None:
    return os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN") or None


def check_push(repo_id: str | None) -> str:
    """The token for an upload to `repo_id`; BuildError when either is missing."""
    if not repo_id:
        raise BuildError("--push needs --repo-id (e.g. --repo-id your-name/reasonseg)")
    token = hub_token()
    if not token:
        raise BuildError("no Hugging Face token in the environment", field="HF_TOKEN",
                         hint="create a write token at huggingface.co/settings/tokens and export HF_TOKEN=...")
    return token


def push_to_hub(folder: str | os.PathLike, repo_id: str | None, *, private: bool = False) -> str:
    """Upload a published folder as a dataset repo; the token comes from HF_TOKEN (or HUGGING_FACE_HUB_TOKEN)."""
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
