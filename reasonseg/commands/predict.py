"""`reasonseg predict`: run a registered method over a split and write a predictions file."""
from __future__ import annotations

from pathlib import Path

import typer

from ..errors import ReasonSegError
from .common import progress

ProtocolOpt = typer.Option("lisa", "--protocol", help="lisa (text[0] per image, the paper) or all-texts")


def register(app: typer.Typer, build_app: typer.Typer) -> None:
    """Add `predict` to the main app."""

    @app.command()
    def predict(data: Path | None = typer.Argument(None, help="release folder"),
                method: str | None = typer.Option(None, "--method", help="registered method name"),
                split: str | None = typer.Option(None, "--split", help="split to predict"),
                out: Path | None = typer.Option(None, "--out", help="predictions JSON to write"),
                protocol: str = ProtocolOpt,
                weights: Path | None = typer.Option(None, help="weights folder, for methods that need one"),
                device: str = typer.Option("cpu", help="torch device for model methods"),
                limit: int | None = typer.Option(None, help="predict only the first N images"),
                list_methods: bool = typer.Option(False, "--list", help="list the registered methods")):
        """Run a registered method over a split and write a predictions file.

        Example: reasonseg predict --method center-prior ReasonSeg/ --split val --out preds.json
        """
        from ..baselines.registry import MethodContext, get_method, methods

        if list_methods:
            for info in methods().values():
                ctx = MethodContext(data or Path("."), weights, device)
                present = info.weights_present(ctx)
                weights_text = "no weights" if present is None else f"weights {info.weights}: " + (
                    "present" if present else "missing")
                typer.echo(f"{info.name:<16} {'[oracle] ' if info.oracle else ''}{info.description} ({weights_text})")
            return
        if not (data and method and split and out):
            raise ReasonSegError("predict needs DATA, --method, --split and --out (or --list)")
        from ..baselines.predict import predict_samples
        from ..dataset import load_split
        from ..submission import write_predictions

        info = get_method(method)
        samples = load_split(data, split)
        samples = samples[:limit] if limit else samples
        model = info.build(MethodContext(data, weights, device))
        with progress(f"{method} on {split}", len(samples)) as advance:
            predictions = predict_samples(model, samples, protocol, advance)
        write_predictions(out, predictions, split, method)
        typer.echo(f"wrote {len(predictions)} predictions to {out}")
