"""`reasonseg predict` (run a registered method over a split) and `reasonseg report` (compare results files)."""
from __future__ import annotations

from pathlib import Path

import typer

from ..errors import ReasonSegError
from .common import PROTOCOL_HELP, Protocol, RulesName, progress

ProtocolOpt = typer.Option("lisa", "--protocol", help=PROTOCOL_HELP)


def _options(values: list[str] | None) -> dict[str, str]:
    out = {}
    for value in values or ():
        key, sep, rest = value.partition("=")
        if not sep or not key:
            raise ReasonSegError(f"--set {value!r}: expected KEY=VALUE, e.g. --set threshold=0.4")
        out[key.strip()] = rest.strip()
    return out


def _list_methods(data: Path | None, weights: list[str] | None) -> None:
    from ..baselines.registry import MethodContext, methods
    from ..baselines.weights import find, parse_weight_flags, slots_of


    for info in methods().values():
        slots = slots_of(info.name)
        if slots:
            try:
                _, given = parse_weight_flags(weights, slots)
            except ReasonSegError:
                given = {}
            parts = [f"{s.name}={s.model_id}: " + ("present" if find(s, given.get(s.name)) else "missing")
                     for s in slots]
            weights_text = "; ".join(parts)
        else:
            present = info.weights_present(MethodContext(data or Path("."), Path(weights[0]) if weights else None))
            weights_text = "none needed" if present is None else f"{info.weights}: " + (
                "present" if present else "missing")
        # One line per method, so the list reads the same in a terminal, a log and a grep.
        typer.echo(f"{info.name:<18} {'[oracle] ' if info.oracle else ''}{info.description} "
                   f"(weights: {weights_text})")


def register(app: typer.Typer, build_app: typer.Typer) -> None:
    """Add `predict` and `report` to the main app."""

    @app.command()
    def predict(data: Path | None = typer.Argument(None, help="release folder (or its published Parquet form)"),
                method: str | None = typer.Option(None, "--method", help="registered method name (see --list)"),
                split: str | None = typer.Option(None, "--split", help="split to predict"),
                out: Path | None = typer.Option(None, "--out", help="predictions JSON to write"),
                protocol: Protocol = ProtocolOpt,
                weights: list[str] | None = typer.Option(
                    None, "--weights", help="weights: a folder/file for the method's first slot, or SLOT=PATH "
                                            "(repeatable: --weights dino=DIR --weights sam=FILE)"),
                device: str = typer.Option("cpu", help="torch device for model methods (cpu, cuda, cuda:1)"),
                batch_size: int = typer.Option(8, "--batch-size", min=1, help="queries per model call"),
                limit: int | None = typer.Option(None, min=1, help="predict only the first N images"),
                settings: list[str] | None = typer.Option(
                    None, "--set", help="method option KEY=VALUE (repeatable), e.g. threshold=0.4"),
                vlm_base_url: str | None = typer.Option(
                    None, "--vlm-base-url", help="OpenAI-compatible endpoint for vlm-grounded-sam's phrase step"),
                vlm_model: str | None = typer.Option(None, "--vlm-model", help="model name at --vlm-base-url"),
                restart: bool = typer.Option(False, help="discard the partial file of an interrupted run"),
                list_methods: bool = typer.Option(False, "--list", help="list the methods and their weights")):
        """Run a registered method over a split and write a predictions file.

        Weights come from --weights or the local Hugging Face cache; nothing is downloaded (HF_HUB_OFFLINE=1).
        An interrupted run keeps OUT.partial.jsonl and resumes from it when rerun with the same settings.

        Example: reasonseg predict --list

        Example: reasonseg predict ReasonSeg/ --method center-prior --split val --out preds.json

        Example: reasonseg predict ReasonSeg/ --method grounded-sam --weights sam=sam_vit_h_4b8939.pth --split test
        --out gsam.json --device cuda --batch-size 8
        """
        from ..baselines.weights import offline

        offline()
        if list_methods:
            _list_methods(data, weights)
            return
        missing = [name for name, value in (("DATA", data), ("--method", method), ("--split", split), ("--out", out))
                   if not value]
        if missing:
            raise ReasonSegError(f"predict needs {', '.join(missing)}",
                                 hint="e.g. reasonseg predict ReasonSeg/ --method center-prior --split val --out "
                                      "preds.json; `reasonseg predict --list` lists the methods")
        import warnings

        from ..baselines.predict import RunContext, method_meta, run_to_file
        from ..baselines.registry import get_method
        from ..baselines.weights import parse_weight_flags, slots_of
        from ..schema import canonical_split
        from ..sources import load_split, release_root

        data, split = release_root(data), canonical_split(split)  # a published form reads as its release folder
        info = get_method(method)
        if info.extra:
            from ..extras import require_extra

            require_extra(info.extra, f"--method {method}", ("torch", "transformers"))
        options = _options(settings)
        if vlm_base_url:
            options["vlm_base_url"] = vlm_base_url
        if vlm_model:
            options["vlm_model"] = vlm_model
        bare, named = parse_weight_flags(weights, slots_of(method))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            samples = load_split(data, split)
        for w in caught:
            typer.echo(f"warning: {w.message}", err=True)
        samples = samples[:limit] if limit else samples
        model = info.build(RunContext(data, bare, device, named, options))
        n_queries = sum(len(s.queries(protocol)) for s in samples)
        run_options = {**options, "limit": limit, "weights": {k: str(v) for k, v in named.items()},
                       "bare_weights": str(bare) if bare else None}
        with progress(f"{method} on {split}", n_queries) as advance:
            result = run_to_file(model, samples, out, split=split, method_name=method, protocol=protocol,
                                 batch_size=batch_size, options=run_options, meta=method_meta(model, method,
                                                                                              info.oracle),
                                 restart=restart, progress=advance)
        resumed = f" ({result.n_resumed} resumed from the partial file)" if result.n_resumed else ""
        flag = " [oracle: reads the ground truth]" if info.oracle else ""
        typer.echo(f"wrote {result.n_predicted + result.n_resumed} predictions to {out}{resumed}{flag}")

    @app.command()
    def report(data: Path = typer.Argument(..., help="release folder the results were scored on"),
               results: list[Path] = typer.Argument(..., help="results JSON files (from `reasonseg score --out`)"),
               out: Path = typer.Option(..., "--out", help="folder to write index.html and images into"),
               predictions: list[Path] | None = typer.Option(
                   None, "--predictions", help="predictions files, to draw masks in the gallery (matched to the "
                                               "results by sha256; a sibling predictions/ folder is searched too)"),
               reported: bool = typer.Option(True, help="show the paper's Table 1 rows beside the measured ones"),
               gallery: int = typer.Option(8, help="queries shown where the two compared methods disagree most"),
               resamples: int = typer.Option(2000, help="bootstrap resamples for the paired comparisons"),
               allow_different_data: bool = typer.Option(
                   False, "--allow-different-data", help="accept results scored on other annotations than DATA's"),
               rules: RulesName | None = typer.Option(
                   None, "--rules", help="the scoring rules every results file must be under [default: the ones "
                                         "they share; results under different rules are refused]"),
               overwrite: bool = typer.Option(False, "--overwrite", help="replace the page in a non-empty --out "
                                              "(other files there are kept)")):
        """One HTML page comparing several results files side by side.

        Table 1 layout with CIs, paired significance against the best method, a per-query IoU scatter of the two
        best methods, and a gallery of the queries where they disagree most. Oracles are flagged.

        Example: reasonseg report ReasonSeg/ gsam-val.json clipseg-val.json gsam-test.json --out report/
        """
        from ..metrics.comparison import write_comparison
        from ..outputs import staged_output_dir

        with staged_output_dir(out, overwrite, ("index.html", "gallery")) as folder:
            page = write_comparison(folder, data, results, predictions or (), show_reported=reported,
                                    n_gallery=gallery, n_resamples=resamples,
                                    allow_different_data=allow_different_data, rules=rules)
        typer.echo(f"wrote {out / page.name}")
