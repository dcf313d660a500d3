"""The `rephrase` command: LLM rephrasing (or explanations) with a response cache and a cost ledger."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer


def register(app: typer.Typer, build_app: typer.Typer) -> None:
    """Add this stage's commands to the main app (and to `reasonseg build` where they build data)."""

    @app.command()
    def rephrase(
        data: Path = typer.Argument(..., help="release folder (its sample JSON files are rewritten in place)"),
        split: str = typer.Option("train", "--split", help="split to rephrase; val/test need --allow-eval-splits"),
        n: int = typer.Option(4, "--n", help="rephrasings to ask for per sample (at most 5 texts are kept)"),
        model: str = typer.Option("gpt-3.5-turbo", "--model", help="model name as the server knows it"),
        task: Literal["rephrase", "explain"] = typer.Option("rephrase", "--task",
                                 help="rephrase (add texts) or explain (write explanatory/train.json)"),
        base_url: str | None = typer.Option(None, "--base-url", envvar="OPENAI_BASE_URL",
                                            help="any OpenAI-compatible server, e.g. http://localhost:8000/v1"),
        concurrency: int = typer.Option(4, "--concurrency", help="requests in flight at once"),
        temperature: float = typer.Option(0.7, "--temperature", help="sampling temperature"),
        seed: int = typer.Option(0, "--seed", help="sampling seed sent to the server (part of the cache key)"),
        prompt: Path | None = typer.Option(None, "--prompt", help="prompt template file (default: shipped v1)"),
        cache: Path | None = typer.Option(None, "--cache",
                                          help="SQLite cache and ledger (default ~/.cache/reasonseg/rephrase.sqlite)"),
        prices: Path | None = typer.Option(None, "--prices", help="JSON price table overriding the shipped one"),
        budget_usd: float | None = typer.Option(None, "--budget-usd", help="stop before a call could pass this"),
        dry_run: bool = typer.Option(False, "--dry-run", help="count calls, tokens and cost; call nothing"),
        allow_eval_splits: bool = typer.Option(False, "--allow-eval-splits", help="allow val and test"),
        timeout: float = typer.Option(60.0, "--timeout", help="seconds per request"),
        max_attempts: int = typer.Option(6, "--max-attempts",
                                         help="tries per request on 429/5xx/timeouts/connection errors"),
        backoff: float = typer.Option(1.0, "--backoff", help="first backoff delay in seconds (doubles each try)"),
        check_retries: int = typer.Option(2, "--check-retries",
                                          help="new tries for a reply that fails the output checks"),
        retry_rejected: bool = typer.Option(False, "--retry-rejected", help="ask again for cached rejected items"),
        limit: int | None = typer.Option(None, "--limit", help="only the first N samples of the split"),
        as_json: bool = typer.Option(False, "--json", help="print the run report as JSON"),
    ):
        """Add LLM rephrasings to each sample's `text` list (original first, at most 5), or explanations.

        Every reply is cached in SQLite (a rerun never repeats a completed call) and every call is logged with
        its tokens and cost. The API key is read from OPENAI_API_KEY.

        Examples: reasonseg rephrase ReasonSeg/ --split train --n 4 --model gpt-3.5-turbo --dry-run ·
        reasonseg rephrase ReasonSeg/ --base-url http://localhost:8000/v1 --model Qwen2.5-7B-Instruct --task explain
        """
        import json
        import os
        import signal
        import threading

        from ..builders.rephrase import RephraseConfig, RetryPolicy, run_rephrase
        from ..extras import require_extra
        from .common import console, print_table, progress

        if not dry_run:
            require_extra("llm", "reasonseg rephrase (without --dry-run)")

        config = RephraseConfig(
            task=task, split=split, n=n, model=model, base_url=base_url, api_key=os.environ.get("OPENAI_API_KEY"),
            concurrency=concurrency, temperature=temperature, seed=seed, prompt=prompt, cache=cache, prices=prices,
            budget_usd=budget_usd, dry_run=dry_run, allow_eval_splits=allow_eval_splits, timeout_s=timeout,
            retry=RetryPolicy(max_attempts=max(1, max_attempts), base_s=max(0.0, backoff)),
            check_retries=max(0, check_retries), retry_rejected=retry_rejected, limit=limit)
        stop = threading.Event()

        def on_sigint(signum, frame):
            if stop.is_set():
                raise KeyboardInterrupt
            stop.set()
            typer.echo("stopping: finishing the calls in flight and writing their results "
                       "(Ctrl-C again to quit at once)", err=True)

        previous = signal.signal(signal.SIGINT, on_sigint) if not dry_run else None
        try:
            with progress(f"{task} {split}", None) as advance:
                last = [0]

                def on_progress(done: int, total: int) -> None:
                    advance(done - last[0])
                    last[0] = done

                report = run_rephrase(data, config, stop=stop, on_progress=on_progress)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        if as_json:
            from dataclasses import asdict

            typer.echo(json.dumps(asdict(report), indent=1))
        else:
            _print_report(report, print_table, console)
        if report.status == "interrupted":
            raise typer.Exit(130)


def _print_report(report, print_table, console) -> None:
    cost = f"${report.cost_usd:.4f}" if report.price_known else "unknown (no price for this model)"
    if report.dry_run:
        rows = [["samples", str(report.samples)], ["already complete", str(sum(report.skipped.values()))],
                ["in the cache", str(report.cached)], ["calls to make", str(report.to_call)],
                ["prompt tokens (est.)", str(report.prompt_tokens)],
                ["completion tokens (est.)", str(report.completion_tokens)], ["cost (est.)", cost]]
        print_table(["dry run", report.model], rows, title=f"{report.task} {report.split} · prompt "
                    f"{report.prompt_version} · nothing was sent")
        return
    rows = [["samples", str(report.samples)], ["skipped (5 texts / no text / explained)",
                                               "{full} / {no_text} / {explained}".format(**report.skipped)],
            ["from the cache", str(report.cached)], ["accepted", str(report.ok)],
            ["rejected", str(report.rejected)], ["failed", str(report.failed)],
            ["left for a later run", str(report.not_done)], ["HTTP calls", str(report.attempts)],
            ["retries", str(report.retries)], ["texts added", str(report.texts_added)],
            ["duplicates dropped", str(report.duplicates)], ["prompt tokens", str(report.prompt_tokens)],
            ["completion tokens", str(report.completion_tokens)], ["cost", cost],
            ["files rewritten", str(report.files_written)],
            ["manifest record", "written" if report.manifest_written else "unchanged"]]
    print_table(["run", report.status], rows,
                title=f"{report.task} {report.split} · {report.model} · prompt {report.prompt_version}")
    out = console()
    for name, reason in report.problems[:10]:
        out.print(f"{name}: {reason}", markup=False)
    if len(report.problems) > 10:
        out.print(f"… and {len(report.problems) - 10} more (see the ledger in {report.cache})", markup=False)
    if report.status == "budget":
        out.print("stopped at --budget-usd: rerun with a larger budget to continue (cached items cost nothing)",
                  markup=False)
