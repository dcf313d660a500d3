"""The demo's rephrasing step: a dry run priced for gpt-3.5-turbo, then a real run against the offline stand-in.

The stand-in (`standin.StandInServer`) is a deterministic rule-based OpenAI-compatible server on 127.0.0.1, not a
language model: the step shows the pipeline (HTTP, checks, cache, manifest record), not rephrasing quality.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from .run import RephraseConfig, run_rephrase
from .standin import STANDIN_MODEL, StandInServer


def demo_step(out: Path, release: Path) -> dict:
    """Copy `release` to `out/release-rephrased`, dry-run it for gpt-3.5-turbo, rephrase its train split through
    the offline stand-in, rerun it (all from the cache), and return the counts."""
    out = Path(out)
    target = out / "release-rephrased"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(release, target)
    cache = out / "rephrase-cache.sqlite"
    cache.unlink(missing_ok=True)
    dry = run_rephrase(target, RephraseConfig(split="train", n=3, model="gpt-3.5-turbo", dry_run=True,
                                              cache=cache))
    with StandInServer() as server:
        config = RephraseConfig(split="train", n=3, model=STANDIN_MODEL, base_url=server.url,
                                api_key="offline-stand-in", concurrency=8, cache=cache)
        first = run_rephrase(target, config)
        again = run_rephrase(target, config)
        requests = len(server.log)
    return {
        "release": str(target),
        "server": f"offline stand-in (deterministic rules, not an LLM) at {server.url}",
        "dry_run": {"model": dry.model, "samples": dry.samples, "calls": dry.to_call,
                    "prompt_tokens": dry.prompt_tokens, "completion_tokens": dry.completion_tokens,
                    "estimated_cost_usd": round(dry.cost_usd, 6)},
        "rephrased": {"samples": first.samples, "items": first.items, "skipped_full": first.skipped.get("full", 0),
                      "calls": first.attempts, "ok": first.ok, "rejected": first.rejected,
                      "texts_added": first.texts_added, "files_written": first.files_written},
        "rerun": {"cached": again.cached, "calls": again.attempts, "texts_added": again.texts_added},
        "server_requests": requests,
    }
