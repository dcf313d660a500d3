"""The `lisa` commands: init, chat, predict, train, export, eval."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from .common import PROTOCOL_HELP, RULES_HELP, Precision, Protocol, RulesName

DEVICE_HELP = "torch device (default: cuda when available, else cpu)"
PRECISION_HELP = "bf16, fp16 or fp32 (default: bf16 on cuda, fp32 on cpu, as the original)"


def needs_model_extra() -> None:
    """Each lisa command's first step (not the group's: a group's check runs before `-h` is read, and help must
    work on the scoring-only install)."""
    from ..extras import name_deepspeed_accelerator, require_extra

    require_extra("model", "reasonseg lisa")
    name_deepspeed_accelerator()


def resolve_device(device: str | None, precision: str | None) -> tuple[str, str]:
    """The device and precision a LISA command runs with when the user left them out."""
    from ..lisa.infer import default_device, default_precision

    device = device or default_device()
    return device, precision or default_precision(device)


def register(app: typer.Typer, build_app: typer.Typer) -> None:
    """Add this stage's commands to the main app (and to `reasonseg build` where they build data)."""
    lisa = typer.Typer(help="The LISA reference model: init, chat, predict, train, export, eval.",
                       no_args_is_help=True)
    app.add_typer(lisa, name="lisa")


    @lisa.command()
    def init(out: Path = typer.Option(..., "--out", help="folder to write (new or empty, or --overwrite)"),
             size: Literal["tiny", "7b", "13b"] = typer.Option("tiny", help="tiny, 7b or 13b"),
             llava: Literal["v1", "v1.5"] = typer.Option(
                 "v1", help="v1 (CLIP-224, linear projector) or v1.5 (CLIP-336, MLP)"),
             seed: int = typer.Option(0, help="random seed"),
             max_shard_size: str = typer.Option("10GB", help="shard the weights above this size"),
             safetensors: bool = typer.Option(False, help="write safetensors instead of pytorch_model*.bin"),
             overwrite: bool = typer.Option(False, "--overwrite", help="replace the model files in a non-empty "
                                            "--out (other files there are kept)")):
        """Write a random-initialised LISA in the released layout (for tests, the demo, GPU benchmarks).

        Example: reasonseg lisa init --size tiny --llava v1 --out tiny-lisa
        """
        needs_model_extra()
        from ..errors import ReasonSegError
        from ..lisa.checkpoint import init_release

        try:
            path = init_release(out, size, llava, seed=seed, max_shard_size=max_shard_size, safetensors=safetensors,
                                overwrite=overwrite)
        except ValueError as exc:
            raise ReasonSegError(str(exc)) from None
        typer.echo(f"wrote a random-initialised {size} LISA (LLaVA {llava}) to {path}")

    @lisa.command()
    def chat(weights: Path | None = typer.Option(None, "--weights", help="released-layout LISA folder"),
             model: Path | None = typer.Option(None, "--model", hidden=True, help="old name of --weights"),
             image: Path | None = typer.Option(None, help="image file"),
             query: str | None = typer.Option(None, help="one question; interactive when left out"),
             out: Path = typer.Option(Path("lisa-chat"), help="folder for mask and overlay PNGs"),
             overwrite: bool = typer.Option(False, "--overwrite", help="replace an earlier chat's PNGs and "
                                            "transcript in a non-empty --out (other files there are kept)"),
             device: str | None = typer.Option(None, help=DEVICE_HELP),
             precision: Precision | None = typer.Option(None, help=PRECISION_HELP),
             load_in_8bit: bool = typer.Option(False, "--load-in-8bit", help="8-bit weights for every Linear "
                                               "outside SAM (GPU, bitsandbytes)"),
             load_in_4bit: bool = typer.Option(False, "--load-in-4bit", help="4-bit NF4 weights, fp16 compute, "
                                               "for every Linear outside SAM (GPU, bitsandbytes)"),
             max_new_tokens: int = typer.Option(512, help="generation limit (the original's 512)"),
             conv_type: Literal["llava_v1", "llava_llama_2"] = typer.Option(
                 "llava_v1", help="llava_v1 or llava_llama_2 (the LLaMA-2 models)"),
             vision_tower: str | None = typer.Option(None, help="CLIP folder or hub id instead of config.json's")):
        """Ask LISA about an image; writes one mask PNG and one overlay PNG per [SEG] of each reply.

        Without --query it is a conversation: each question sees the earlier turns; an empty line, `exit` or end of
        input ends it, `new` starts over. OUT/chat.json keeps the transcript.

        Example: reasonseg lisa chat --weights tiny-lisa --image photo.jpg --query "Where can I sit?"
        """
        needs_model_extra()
        from ..errors import ReasonSegError
        from ..lisa.chat_cli import run_chat

        weights = weights or model
        if weights is None:
            raise ReasonSegError("lisa chat needs --weights DIR (a released-layout LISA folder)", field="--weights",
                                 hint="make a tiny one with `reasonseg lisa init --out DIR`")
        device, precision = resolve_device(device, precision)

        def ask(prompt: str) -> str | None:
            try:
                return typer.prompt(prompt, default="", show_default=False)
            except typer.Abort:  # end of input (or Ctrl-C): the session ends normally
                typer.echo("")
                return None

        run_chat(weights, image, query, out, device, precision, 8 if load_in_8bit else (4 if load_in_4bit else None),
                 max_new_tokens, echo=typer.echo, ask=ask, conv_type=conv_type, vision_tower=vision_tower,
                 overwrite=overwrite)

    @lisa.command("predict")
    def predict_cmd(data: Path = typer.Argument(..., help="release folder"),
                    weights: Path = typer.Option(..., "--weights", help="released-layout LISA folder"),
                    split: str = typer.Option("val", help="split to predict"),
                    out: Path = typer.Option(..., "--out", help="predictions JSON to write"),
                    protocol: Protocol = typer.Option("lisa", help=PROTOCOL_HELP),
                    prompt_mode: Literal["teacher-forced", "generate"] = typer.Option(
                        "teacher-forced", help="teacher-forced or generate"),
                    batch_size: int = typer.Option(4, help="queries per forward pass"),
                    device: str | None = typer.Option(None, help=DEVICE_HELP + " (cuda: one GPU per rank under "
                                                                  "torchrun)"),
                    precision: Precision | None = typer.Option(None, help=PRECISION_HELP),
                    limit: int | None = typer.Option(None, help="only the first N images")):
        """Batched LISA prediction over a split (several GPUs with torchrun: each query predicted once).

        Example: reasonseg lisa predict ReasonSeg --weights LISA-7B-v1 --split test --out p.json --device cuda

        Several GPUs: torchrun --nproc_per_node 8 $(which reasonseg) lisa predict ... (same options).
        """
        needs_model_extra()
        from contextlib import ExitStack

        from ..lisa.runner import predict_release
        from .common import progress

        device, precision = resolve_device(device, precision)
        with ExitStack() as stack:  # the bar or log lines start once the split is read
            n = predict_release(data, weights, split, out, protocol, prompt_mode, batch_size, device, precision, limit,
                                progress_total=lambda total: stack.enter_context(progress(f"LISA on {split}", total)))
        if n is not None:
            typer.echo(f"wrote {n} predictions to {out}")

    @lisa.command("train")
    def train_cmd(config: Path = typer.Option(..., "--config", help="training YAML (see reasonseg/lisa/configs)"),
                  no_resume: bool = typer.Option(False, "--no-resume", help="start over even if a checkpoint exists")):
        """Train LISA (LoRA + decoder) with the reference recipe; resumes from the run's last checkpoint.

        Example: reasonseg lisa train --config reasonseg/lisa/configs/tiny.yaml
        """
        needs_model_extra()
        from ..lisa.train import load_config, train

        result = train(load_config(config), resume=not no_resume,
                       on_step=lambda s: typer.echo(f"step {s['step']} loss {s['loss']:.4f} lr {s['lr']:.2e}"))
        for v in result.val:
            typer.echo(f"val at step {v['step']}: gIoU {100 * v['giou']:.1f} cIoU {100 * v['ciou']:.1f}")
        typer.echo(f"run folder: {result.out} (step {result.step})")

    @lisa.command()
    def export(run: Path = typer.Argument(..., help="training run folder"),
               out: Path = typer.Option(..., "--out", help="folder for the released layout"),
               checkpoint: str | None = typer.Option(None, help="tag, best or latest (default best, else latest)"),
               max_shard_size: str = typer.Option("10GB", help="shard the weights above this size"),
               safetensors: bool = typer.Option(False, help="write safetensors"),
               overwrite: bool = typer.Option(False, "--overwrite", help="replace the model files in a non-empty "
                                              "--out (other files there are kept)")):
        """Merge a run's LoRA into its start model and write the released layout.

        Example: reasonseg lisa export runs/lisa-tiny --out lisa-tiny-ft
        """
        needs_model_extra()
        from ..lisa.train import export_run

        path = export_run(run, out, checkpoint, max_shard_size, safetensors, overwrite=overwrite)
        typer.echo(f"wrote {path}")

    @lisa.command("eval")
    def eval_cmd(data: Path = typer.Argument(..., help="release folder with val and test, or refcoco, refcoco+, "
                                                     "refcocog (with --refer-root and --split)"),
                 weights: Path = typer.Option(..., "--weights", help="released-layout LISA folder"),
                 out: Path = typer.Option(Path("lisa-eval"), help="folder for predictions and results"),
                 overwrite: bool = typer.Option(False, "--overwrite", help="replace the files of the split(s) "
                                                "being evaluated (other splits' files are kept; without it they are "
                                                "added beside them)"),
                 paper_row: list[str] | None = typer.Option(
                     None, "--paper-row", help="the paper's row(s) to print beside (repeatable; default: the "
                                               "checkpoint's size and LLaVA base, zero-shot and ft)"),
                 batch_size: int = typer.Option(4, help="queries per forward pass"),
                 device: str | None = typer.Option(None, help=DEVICE_HELP),
                 precision: Precision | None = typer.Option(None, help=PRECISION_HELP),
                 bootstrap: int = typer.Option(1000, help="bootstrap resamples for the CIs"),
                 rules: RulesName | None = typer.Option(None, "--rules", help=f"ReasonSeg only: {RULES_HELP}"),
                 split: str = typer.Option("val", help="refCOCO family only: val, testA, testB (refcocog: val, test)"),
                 refer_root: Path | None = typer.Option(None, "--refer-root",
                                                        help="refCOCO family only: the refer_seg folder")):
        """Predict and score val and test; print the paper's rows beside the measured one (Table 1 layout, CIs).

        Warns when the checkpoint is known to have been trained on val (the released v1 models, or an export
        whose config.json lists val in reasonseg_seen_splits).

        Example: reasonseg lisa eval ReasonSeg --weights LISA-7B-v1 --device cuda --precision bf16

        refCOCO family (the paper's Table 2: every sentence one query, cIoU and gIoU, the paper's cIoU beside):
        reasonseg lisa eval refcoco --refer-root dataset/refer_seg --split testA --weights LISA-7B-v1
        """
        needs_model_extra()
        from ..lisa.runner import REFER_EVAL_SPLITS, evaluate_refer, evaluate_release
        from .common import print_table

        device, precision = resolve_device(device, precision)
        if str(data) in REFER_EVAL_SPLITS and not (data / "val").is_dir():
            if refer_root is None:
                from ..errors import ReasonSegError

                raise ReasonSegError(f"{data} needs --refer-root (the folder holding {data}/ and images/)",
                                     field="--refer-root")
            refer = evaluate_refer(refer_root, str(data), split, weights, out, batch_size, device, precision,
                                   overwrite=overwrite)
            print_table(refer.header, refer.rows, title=f"LISA on {data} {split} (x100; the paper reports cIoU)")
            typer.echo(f"results: {refer.results}")
            return

        report = evaluate_release(data, weights, out, paper_row, batch_size, device, precision, bootstrap,
                                  overwrite=overwrite, rules=rules)
        if not report.rows:
            return  # a non-zero rank under torchrun: rank 0 prints
        for w in report.warnings:
            typer.echo(f"warning: {w}", err=True)
        print_table(report.header, report.rows, title=f"LISA on {data} (gIoU / cIoU x100; CIs: 95% bootstrap)")
        for split, path in report.results.items():
            typer.echo(f"{split}: {report.predictions[split]} -> {path}")
