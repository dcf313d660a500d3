"""The `build reasonseg`, `build candidates` and `publish` commands."""
from __future__ import annotations

from pathlib import Path

import typer


def _openimages_layout(root: Path | None, segmentation: str | None, attribution: str | None,
                       classes: str | None, images: str | None, masks: str | None):
    from ..builders.release.openimages import OpenImagesLayout

    if root is None:
        if any((segmentation, attribution, classes, images, masks)):
            from ..errors import BuildError

            raise BuildError("--oi-* options need --openimages ROOT")
        return None
    given = {"segmentation": segmentation, "attribution": attribution, "classes": classes, "images": images,
             "masks": masks}
    return OpenImagesLayout(root, **{k: v for k, v in given.items() if v})


def register(app: typer.Typer, build_app: typer.Typer) -> None:
    """Add this stage's commands to the main app (and to `reasonseg build` where they build data)."""

    @build_app.command("reasonseg")
    def build_reasonseg(
        manifest: Path | None = typer.Option(None, "--manifest", help="instruction manifest (JSONL)"),
        out: Path = typer.Option(..., "--out", help="release folder to create"),
        openimages: Path | None = typer.Option(None, "--openimages", help="OpenImages root"),
        oi_segmentation: str | None = typer.Option(
            None, help="segmentation CSV, may hold {split} [default: {split}-annotations-object-segmentation.csv]"),
        oi_attribution: str | None = typer.Option(
            None, help="attribution CSV [default: {split}-images-with-rotation.csv]"),
        oi_classes: str | None = typer.Option(
            None, help="class descriptions CSV, with or without header [default: class-descriptions-boxable.csv]"),
        oi_images: str | None = typer.Option(None, help="image folder [default: images/{split}]"),
        oi_masks: str | None = typer.Option(None, help="mask folder or shard folder [default: masks/{split}]"),
        scannet: Path | None = typer.Option(None, "--scannet", help="ScanNet v2 root"),
        scannet_labels: str | None = typer.Option(None, help="label TSV [default: scannetv2-labels.combined.tsv]"),
        scannet_scans: str | None = typer.Option(None, help="scene folder [default: scans]"),
        from_release: Path | None = typer.Option(None, "--from-release",
                                                 help="import the public ReasonSeg release from this folder"),
        workers: int = typer.Option(1, "--workers", min=1, help="worker processes"),
        keep_going: bool = typer.Option(False, "--keep-going", help="list every problem instead of stopping"),
        seed: int = typer.Option(0, help="seed of the split assignment"),
        name: str = typer.Option("ReasonSeg", help="release name in manifest.json"),
        version: str = typer.Option("1.0", help="release version in manifest.json"),
        overwrite: bool = typer.Option(False, "--overwrite", help="replace --out once the new build is complete"),
    ):
        """Build a ReasonSeg release from OpenImages / ScanNet annotations and an instruction manifest.

        Writes the public layout (train/ val/ test/ with .jpg + .json, explanatory/train.json), manifest.json with
        checksums, and build_report.json/.txt (counts, polygon fidelity, problems). Exits 1 when --keep-going
        collected problems.

        Example: reasonseg build reasonseg --openimages oi/ --scannet scannet/ --manifest pairs.jsonl --out ReasonSeg

        Example: reasonseg build reasonseg --from-release ReasonSeg-public/ --out ReasonSeg
        """
        from ..errors import BuildError
        from .common import console, progress

        if from_release is not None:
            from ..builders.release.importer import import_release

            if manifest or openimages or scannet:
                raise BuildError("--from-release imports a release: do not combine it with --manifest or sources")
            result = import_release(from_release, out, name=name, version=version if version != "1.0" else "public",
                                    overwrite=overwrite)
            typer.echo((out / "import_report.txt").read_text(encoding="utf-8"), nl=False)
            typer.echo(f"imported release: {result.out}")
            return
        if manifest is None:
            raise BuildError("--manifest is required (or --from-release)")
        if openimages is None and scannet is None:
            raise BuildError("give --openimages ROOT and/or --scannet ROOT")
        from ..builders.release.build import REPORT_TEXT, build_release
        from ..builders.release.scannet import ScanNetLayout

        oi = _openimages_layout(openimages, oi_segmentation, oi_attribution, oi_classes, oi_images, oi_masks)
        sn = None
        if scannet is not None:
            sn = ScanNetLayout(scannet, **{k: v for k, v in (("labels_tsv", scannet_labels),
                                                             ("scans", scannet_scans)) if v})
        lines = 0
        if manifest.is_file():  # counted line by line: the manifest is never held in memory
            with open(manifest, encoding="utf-8", errors="replace") as fh:
                lines = sum(1 for line in fh if line.strip())
        with progress("building", lines) as advance:
            result = build_release(manifest, out, openimages=oi, scannet=sn, workers=workers, keep_going=keep_going,
                                   seed=seed, name=name, version=version, overwrite=overwrite, progress=advance)
        console().print((result.out / REPORT_TEXT).read_text(encoding="utf-8"), end="", markup=False)
        typer.echo(f"release: {result.out}")
        if result.summary["counts"]["problems"]:
            raise typer.Exit(1)

    @build_app.command("candidates")
    def build_candidates(
        out: Path = typer.Option(..., "--out", help="worksheet folder to create"),
        openimages: Path | None = typer.Option(None, "--openimages", help="OpenImages root"),
        split: str = typer.Option("validation", help="OpenImages split"),
        scannet: Path | None = typer.Option(None, "--scannet", help="ScanNet v2 root (frames with instances)"),
        n: int = typer.Option(500, "--n", min=1, help="number of candidate images"),
        min_instances: int = typer.Option(2, help="fewest instances an image must have"),
        max_instances: int = typer.Option(20, help="most instances an image may have"),
        seed: int = typer.Option(0, help="random seed"),
        oi_segmentation: str | None = typer.Option(None, help="segmentation CSV (may hold {split})"),
        oi_classes: str | None = typer.Option(None, help="class descriptions CSV"),
        oi_images: str | None = typer.Option(None, help="image folder"),
        oi_masks: str | None = typer.Option(None, help="mask folder or shard folder"),
        overwrite: bool = typer.Option(False, "--overwrite", help="replace --out"),
    ):
        """Pick candidate images for annotators: a worksheet (JSONL rows ready to become manifest lines) and
        contact sheets with every instance outlined and numbered.

        Example: reasonseg build candidates --openimages oi/ --split validation --n 500 --out worksheet/
        """
        from ..builders.release.candidates import write_candidates
        from ..builders.release.scannet import ScanNetLayout
        from ..errors import BuildError

        if openimages is None and scannet is None:
            raise BuildError("give --openimages ROOT and/or --scannet ROOT")
        oi = _openimages_layout(openimages, oi_segmentation, None, oi_classes, oi_images, oi_masks)
        result = write_candidates(out, n=n, openimages=oi, split=split,
                                  scannet=ScanNetLayout(scannet) if scannet else None, seed=seed,
                                  min_instances=min_instances, max_instances=max_instances, overwrite=overwrite)
        typer.echo(f"{result['rows']} candidates ({result['classes']} classes): {out / 'worksheet.jsonl'}")
        typer.echo(f"contact sheets: {out / 'sheets'}/ and {out / 'index.html'}")

    @app.command()
    def publish(
        data: Path = typer.Argument(..., help="release folder"),
        out: Path = typer.Option(..., "--out", help="folder for the Parquet files, README.md and croissant.json"),
        repo_id: str | None = typer.Option(None, "--repo-id", help="Hugging Face dataset repo, e.g. me/reasonseg"),
        exclude_source: list[str] | None = typer.Option(
            None, "--exclude-source", help="leave out the rows of this source, e.g. scannet (repeatable); the card "
                                           "states the changed split sizes"),
        push: bool = typer.Option(False, "--push", help="upload --out to --repo-id (token from `hf auth login` or "
                                                        "HF_TOKEN)"),
        private: bool = typer.Option(False, "--private", help="create the repo as private when pushing"),
        overwrite: bool = typer.Option(False, "--overwrite", help="replace --out"),
        layout: str = typer.Option("reasonseg", "--layout", help="reasonseg (the faithful form, default) or seg-zero "
                                   "(the Hub mirrors' layout Seg-Zero and VisionReasoner evaluate on: one "
                                   "ReasonSeg_<split>/ per split, bool masks, first text only)"),
    ):
        """Export a release for the Hugging Face Hub: Parquet per split (train, validation, test), a dataset card,
        Croissant metadata, and the release's manifest. Warns about sources whose terms forbid redistribution.

        Example: reasonseg publish ReasonSeg/ --out hub/ --repo-id me/reasonseg --exclude-source scannet --push

        Example: reasonseg publish ReasonSeg/ --out mirrors/ --layout seg-zero
        """
        from ..extras import require_extra

        require_extra("hub", "reasonseg publish")
        from ..builders.publish import check_push, publish_release, push_to_hub
        from ..errors import BuildError
        from ..schema import HUB_SPLIT_NAMES

        if push and layout == "seg-zero":
            raise BuildError("--push uploads one dataset; --layout seg-zero writes one per split: push each "
                             "ReasonSeg_<split>/ folder as its own dataset repo", field="layout")
        if push:
            check_push(repo_id)  # before any work: a missing token should not cost a full export
        result = publish_release(data, out, repo_id=repo_id, exclude_sources=tuple(exclude_source or ()),
                                 overwrite=overwrite, layout=layout)
        for split, stats in result["splits"].items():
            left_out = result["excluded"].get(split, 0)
            name = f"ReasonSeg_{split}/ (split test)" if layout == "seg-zero" else HUB_SPLIT_NAMES[split]
            typer.echo(f"{name}: {stats['rows']} rows"
                       + (f" ({left_out} left out: {', '.join(result['excluded_sources'])})" if left_out else ""))
        typer.echo(f"wrote {out}")
        if push:
            url = push_to_hub(out, repo_id, private=private)
            typer.echo(f"pushed: {url}")

    @app.command("export-release")
    def export_release(
        published: str = typer.Argument(..., help="published folder (from `reasonseg publish`) or a Hub dataset id "
                                                  "already in the local Hugging Face cache"),
        out: Path = typer.Option(..., "--out", help="release folder to write (train/ val/ test/, manifest.json)"),
        overwrite: bool = typer.Option(False, "--overwrite", help="replace this command's outputs in --out"),
    ):
        """Write the release layout back from its published (Parquet) form: images and annotation files byte for
        byte, manifest.json and explanatory/train.json as published.

        Example: reasonseg export-release hub/ --out ReasonSeg
        """
        from ..published import export_release as export

        result = export(published, out, overwrite=overwrite)
        for split, n in result["splits"].items():
            typer.echo(f"{split}: {n} images")
        typer.echo(f"release: {out}")
