"""Shared pieces of the rephrase tests: small releases, a config against the stand-in server, a CLI runner."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from helpers import write_release

from reasonseg.builders.rephrase import RephraseConfig, RetryPolicy
from reasonseg.dataset import write_manifest

REPO = Path(__file__).resolve().parents[2]

SHORT = {"text": ["the red circle"], "is_sentence": False,
         "shapes": [{"label": "target", "points": [[1, 1], [20, 1], [20, 20]]}], "imagePath": "s1.jpg"}
LONG = {"text": ["What could you roll across the table in this picture?"], "is_sentence": True,
        "shapes": [{"label": "target", "points": [[1, 1], [20, 1], [20, 20]]}], "flags": {"kept": 1}}
FULL = {"text": ["a", "b", "c", "d", "e"], "is_sentence": False, "shapes": []}


def make_release(root: Path, train: dict[str, dict] | None = None, *, manifest: bool = True,
                 val: dict[str, dict] | None = None, classes: dict[str, list[str]] | None = None) -> Path:
    train = train if train is not None else {"s1": SHORT, "s2": LONG, "s3": FULL}
    write_release(root, "train", train, {sid: (32, 48) for sid in train})
    val = val if val is not None else {"v1": SHORT}
    write_release(root, "val", val, {sid: (32, 48) for sid in val})
    if manifest:
        write_manifest(root, name="test-release", version="1")
        if classes:
            data = json.loads((root / "manifest.json").read_text())
            data["sample_classes"] = classes
            (root / "manifest.json").write_text(json.dumps(data))
    return root


def many_samples(count: int) -> dict[str, dict]:
    """`count` samples with distinct first texts, alternating short and long."""
    out = {}
    for k in range(count):
        if k % 2:
            out[f"m{k:03d}"] = {"text": [f"the object number {k}"], "is_sentence": False, "shapes": []}
        else:
            out[f"m{k:03d}"] = {"text": [f"Which thing in scene {k} would keep you dry in the rain?"],
                                "is_sentence": True, "shapes": []}
    return out


def config(server, cache: Path, **overrides) -> RephraseConfig:
    values = dict(model="gpt-3.5-turbo", base_url=server.url, api_key="test-key", cache=cache, concurrency=4,
                  timeout_s=5.0, retry=RetryPolicy(max_attempts=4, base_s=0.01, cap_s=0.05))
    values.update(overrides)
    return RephraseConfig(**values)


def texts_of(root: Path, split: str = "train") -> dict[str, list[str]]:
    return {p.stem: json.loads(p.read_text(encoding="utf-8"))["text"] for p in sorted((root / split).glob("*.json"))}


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "reasonseg.cli", "rephrase", *args]


def run_cli(*args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(cli_command(*args), env=cli_env(**env), capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)
