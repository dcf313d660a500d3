"""The `qa` commands: `reasonseg build qa` (the template QA training set) and `reasonseg qa stats`."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

DEFAULT_LISA_SAMPLES = 1000

qa_app = typer.Typer(no_args_is_help=True, help="The template QA training set: statistics of a built set.")


def _pairs(values: list[str], option: str) -> dict[str, Path]:
    from ..errors import BuildError

    out: dict[str, Path] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise BuildError(f"{option} expects NAME=DIR, got {value!r}", field=option)
        if name in out:
            raise BuildError(f"{option} names {name!r} twice", field=option)
        out[name] = Path(path)
    return out


def build_qa_command(
        source: list[str] = typer.Option(..., "--source", help="NAME=DIR, repeatable. Names: ade20k, cocostuff, "
                                          "mapillary, paco_lvis, pascal_part, refcoco, refcoco+, refcocog, refclef, "
                                          "refer_seg (all four), llava_instruct, reason_seg"),
        out: Path = typer.Option(..., "--out", help="folder for qa.jsonl and build.json"),
        images: list[str] = typer.Option([], "--images", help="NAME=DIR: the image root of a source, when the "
                                         "images are not where the reference tree puts them"),
        mode: Literal["exhaustive", "lisa"] = typer.Option(
            "exhaustive", help="exhaustive (every target) or lisa (the reference's sampling)"),
        per_sample: int = typer.Option(3, "--per-sample", help="turns per record at most"),
        samples: int | None = typer.Option(
            None, help="lisa mode: number of records to draw (the first N draws of the stream a training run with the "
                       "same seed consumes) [default: 1000]"),
        seed: int = typer.Option(0, help="random seed: the same seed writes the same bytes"),
        workers: int = typer.Option(1, help="worker processes (the output does not depend on it)"),
        keep_going: bool = typer.Option(False, "--keep-going", help="skip bad items, listing them in build.json"),
        parquet: bool = typer.Option(False, "--parquet", help="also write qa.parquet (needs the hub extra)"),
        overwrite: bool = typer.Option(False, "--overwrite", help="replace this command's outputs in a non-empty "
                                       "--out (other files there are kept)"),
        explanatory: float = typer.Option(0.1, help="ReasonSeg: rate of explanation-only answers; -1 disables "
                                          "explanations"),
        refer_split: list[str] = typer.Option(["train"], "--refer-split", help="refer splits to read (repeatable; "
                                              "'all' for every split)"),
        rates: str = typer.Option("9,3,3,1", help="lisa mode: rates of sem_seg,refer_seg,vqa,reason_seg (numbers, "
                                  "e.g. 9,3,3,1 or 0.5,0.2,0.2,0.1)"),
        reasonseg_split: str = typer.Option("train", "--reasonseg-split", help="ReasonSeg split(s) read: train, or "
                                            "train_val as the released v1 models were trained")):
    """Generate the template QA training set (question, "[SEG]" answer, mask) from segmentation sources.

    Example: reasonseg build qa --source ade20k=dataset/ade20k --source refer_seg=dataset/refer_seg
    --source reason_seg=dataset/reason_seg/ReasonSeg --out qa/ --mode lisa --samples 10000 --seed 0
    """
    from ..builders.qa import BuildOptions, build_qa, open_sources
    from ..builders.qa.build import BUILD_FILE, PARQUET_FILE, QA_FILE
    from ..builders.qa.stats import PLOT_FILE, STATS_FILE
    from ..errors import BuildError
    from ..outputs import check_output_dir, staged_output_dir
    from .common import progress

    # What `build qa` and `qa stats` write into a QA folder: an overwrite clears exactly these (stale stats too).
    outputs = (QA_FILE, BUILD_FILE, PARQUET_FILE, STATS_FILE, PLOT_FILE)

    if samples is not None and mode != "lisa":
        raise BuildError("--samples applies to --mode lisa only (exhaustive mode writes every target)",
                         field="samples", hint="add --mode lisa, or leave out --samples")
    samples = DEFAULT_LISA_SAMPLES if samples is None else samples
    if parquet:
        from ..extras import require_extra

        require_extra("hub", "--parquet", ("pyarrow",))
    check_output_dir(out, overwrite)  # before reading any source
    try:
        rate_values = tuple(float(v) for v in rates.split(","))
    except ValueError:
        raise BuildError(f"--rates must be numbers such as 9,3,3,1, got {rates!r}", field="rates") from None
    options = BuildOptions(mode=mode, per_sample=per_sample, samples=samples, seed=seed, workers=workers,
                           keep_going=keep_going, explanatory=explanatory, rates=rate_values)
    options.check()
    sources = open_sources(_pairs(source, "--source"), _pairs(images, "--images"), tuple(refer_split),
                           reasonseg_split=reasonseg_split)
    total = samples if mode == "lisa" else sum(len(s.keys()) for s in sources)
    with progress("generating QA records", total) as advance, \
            staged_output_dir(out, overwrite, outputs) as folder:
        summary = build_qa(sources, folder, options, parquet=parquet, advance=advance)
    per = ", ".join(f"{name} {n}" for name, n in sorted(summary.per_source.items()))
    typer.echo(f"wrote {summary.records} records to {out / 'qa.jsonl'} ({per})")
    if summary.skipped:
        typer.echo(f"skipped {len(summary.skipped)} bad item(s), listed in {out / 'build.json'}; "
                   f"first: {summary.skipped[0]['reason']}")


@qa_app.command("stats")
def stats_command(folder: Path = typer.Argument(..., help="a folder written by `reasonseg build qa`"),
                  top: int = typer.Option(20, help="how many of the most frequent targets to list and plot"),
                  out: Path | None = typer.Option(None, "--out", help="where to write stats.json and the PNG "
                                                  "(default: the QA folder)"),
                  plot: bool = typer.Option(True, help="write class_frequency.png"),
                  overwrite: bool = typer.Option(False, "--overwrite", help="replace the statistics in a non-empty "
                                                 "--out (other files there are kept)"),
                  as_json: bool = typer.Option(False, "--json", help="print the statistics as JSON")):
    """Records, turns and masks per source, top targets, template usage, mask areas (+ a frequency PNG).

    Example: reasonseg qa stats qa/
    """
    import json

    from ..builders.qa.stats import PLOT_FILE, STATS_FILE, write_stats
    from .common import print_table

    if out is not None and out.resolve() != folder.resolve():  # the QA folder itself holds its statistics
        from ..outputs import prepare_output_dir

        prepare_output_dir(out, overwrite, (STATS_FILE, PLOT_FILE))
    stats, json_path, png = write_stats(folder, out, top, plot)
    if as_json:
        typer.echo(json.dumps(stats, indent=1, ensure_ascii=False))
        return
    header = ["source", "records", "turns", "masks", "with ignore", "skipped", "empty", "redrawn"]
    rows = [[name, *(str(c.get(k, 0)) for k in ("records", "turns", "masks", "with_ignore", "skipped",
                                                 "empty_items", "redrawn_items"))]
            for name, c in stats["sources"].items()]
    print_table(header, rows, title=f"{stats['records']} records in {folder}")
    print_table(["target", "turns"], [[t, str(n)] for t, n in stats["top_targets"]], title="most asked targets")
    print_table(["template", "uses"], [[t, str(n)] for t, n in stats["templates"].items()], title="templates")
    area = stats["mask_area"]
    print_table(["mask area (fraction of image)", "masks"], [[k, str(v)] for k, v in area["histogram"].items()],
                title=f"{area['count']} masks")
    typer.echo(f"statistics: {json_path}" + (f"\nplot: {png}" if png else ""))


def register(app: typer.Typer, build_app: typer.Typer) -> None:
    """Add this stage's commands to the main app (and to `reasonseg build` where they build data)."""
    build_app.command("qa")(build_qa_command)
    app.add_typer(qa_app, name="qa")
