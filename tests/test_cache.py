"""`reasonseg cache info|clear` as a user runs them: the entries real runs leave (a split's ground truth, a release
restored from a published folder), their sizes, clearing by kind, files reasonseg did not write left alone, and
scoring that rebuilds what was cleared with the same numbers."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import assert_one_line_error

from reasonseg.builders.publish import publish_release
from reasonseg.sample import write_sample_release

pytest.importorskip("pyarrow")
EXE = str(Path(sys.executable).with_name("reasonseg"))
COUNTS = {"train": 2, "val": 3, "test": 3}


def run(cache: Path, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "REASONSEG_CACHE": str(cache), "COLUMNS": "200"}
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, env=env, timeout=300)


def counts(cache: Path) -> dict[str, int]:
    proc = run(cache, "cache", "info")
    assert proc.returncode == 0, proc.stderr
    rows = [line.split("│")[1:-1] for line in proc.stdout.splitlines() if line.count("│") == 4]
    return {kind.strip(): int(n) for kind, n, _ in rows if kind.strip() != "kind"}


def test_info_and_clear_by_kind_leave_foreign_files_and_scoring_rebuilds(tmp_path):
    release = write_sample_release(tmp_path / "release", counts=COUNTS)
    published = tmp_path / "hub"
    publish_release(release, published)
    cache = tmp_path / "cache"
    preds = tmp_path / "preds.json"
    assert run(cache, "predict", release, "--method", "center-prior", "--split", "val", "--out", preds).returncode == 0
    first = run(cache, "score", release, preds, "--json")
    assert first.returncode == 0, first.stderr
    assert run(cache, "score", published, preds, "--json").returncode == 0    # restores the release into the cache
    foreign = [cache / "notes.txt", cache / "gt-mine.npz", cache / "published" / "mine" / "x.json"]
    for path in foreign:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("not reasonseg's")

    before = counts(cache)
    assert before["ground-truth"] == 2 and before["published"] == 1 and before["calibration"] == 0, before
    restored = next(p for p in (cache / "published").iterdir() if p.name != "mine")
    assert (restored / "val").is_dir()

    cleared = run(cache, "cache", "clear", "--kind", "ground-truth")
    assert cleared.returncode == 0 and "removed 2 entries" in cleared.stdout, cleared.stdout + cleared.stderr
    assert counts(cache) == {**before, "ground-truth": 0}
    assert restored.is_dir()

    again = run(cache, "score", release, preds, "--json")      # rebuilt, same numbers
    assert json.loads(again.stdout)["groups"] == json.loads(first.stdout)["groups"]
    assert run(cache, "cache", "clear").returncode == 0
    assert counts(cache) == {"ground-truth": 0, "published": 0, "calibration": 0}
    assert not restored.exists() and all(path.read_text() == "not reasonseg's" for path in foreign)


def test_clear_names_the_kinds_it_knows(tmp_path):
    proc = run(tmp_path / "cache", "cache", "clear", "--kind", "everything")
    assert_one_line_error(proc, "ground-truth")
