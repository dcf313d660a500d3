"""The command line as a user runs it: real processes, exit codes, one-line errors, files written."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import assert_one_line_error

from reasonseg.sample import write_sample_release

EXE = str(Path(sys.executable).with_name("reasonseg"))


def run(*args, env=None, cwd=None):
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return write_sample_release(tmp_path_factory.mktemp("cli") / "release")


@pytest.fixture()
def cache_env(tmp_path, monkeypatch):
    import os

    return {**os.environ, "REASONSEG_CACHE": str(tmp_path / "cache")}


def test_help_lists_every_command():
    proc = run("--help")
    assert proc.returncode == 0
    for command in ("demo", "sample", "validate", "score", "compare", "predict"):
        assert command in proc.stdout


def test_sample_refuses_a_non_empty_folder(release):
    assert_one_line_error(run("sample", "--out", release), str(release), "not empty")


def test_validate_reports_counts_and_known_defects(release):
    proc = run("validate", release)
    assert proc.returncode == 0, proc.stdout
    assert "empty ground truth" in proc.stdout and "cp1252" in proc.stdout
    doc = json.loads(run("validate", release, "--json").stdout)
    assert doc["splits"]["val"]["count"] == 24 and doc["splits"]["test"]["expected"] == 779


def test_validate_fails_on_an_orphan_annotation(tmp_path, release):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(release, copy)
    next((copy / "val").glob("*.jpg")).unlink()
    proc = run("validate", copy)
    assert proc.returncode == 1 and "no image beside it" in proc.stdout


def test_predict_score_report_and_compare(tmp_path, release, cache_env):
    listing = run("predict", "--list")
    assert listing.returncode == 0 and "center-prior" in listing.stdout and "empty" in listing.stdout
    for method in ("center-prior", "full"):
        proc = run("predict", "--method", method, release, "--split", "val", "--out", tmp_path / f"{method}.json")
        assert proc.returncode == 0, proc.stderr
    proc = run("score", release, tmp_path / "center-prior.json", "--split", "val", "--out", tmp_path / "r.json",
               "--report", tmp_path / "report", "--bootstrap", "200", env=cache_env)
    assert proc.returncode == 0, proc.stderr
    assert "overall" in proc.stdout and "short" in proc.stdout and "long" in proc.stdout
    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["format"] == "reasonseg-results" and doc["method"] == "center-prior"
    assert doc["groups"]["overall"]["n"] == 24 and len(doc["groups"]["overall"]["giou_ci"]) == 2
    assert (tmp_path / "report" / "index.html").is_file() and list((tmp_path / "report" / "overlays").glob("*.png"))
    # Compare a predictions file against a results file of the other method.
    proc = run("compare", release, tmp_path / "full.json", tmp_path / "r.json", "--split", "val", "--json",
               "--bootstrap", "200", env=cache_env)
    assert proc.returncode == 0, proc.stderr
    comparison = json.loads(proc.stdout)
    assert comparison["a"] == "full" and comparison["b"] == "center-prior"
    assert {d["metric"] for d in comparison["differences"]} == {"giou", "ciou"}
    assert all(0 < d["p_value"] <= 1 for d in comparison["differences"])


def test_score_errors_are_one_line_with_exit_2(tmp_path, release, cache_env):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert_one_line_error(run("score", release, bad, "--split", "val", env=cache_env), str(bad), "not JSON")
    assert_one_line_error(run("score", tmp_path / "nowhere", bad, "--split", "val", env=cache_env), "not found")
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"format": "reasonseg-predictions", "version": 1, "predictions": []}))
    assert_one_line_error(run("score", release, empty, "--split", "val", env=cache_env), "24 of 24 queries",
                          "--missing empty")
    proc = run("score", release, empty, "--split", "val", "--missing", "empty", "--json", env=cache_env)
    assert proc.returncode == 0 and json.loads(proc.stdout)["groups"]["overall"]["ciou"] == 0.0
    assert_one_line_error(run("score", release, empty, "--split", "nosuch", env=cache_env), "nosuch")
    assert_one_line_error(run("score", release, empty, "--split", "val", "--protocol", "odd", env=cache_env), "odd")


def test_predict_unknown_method_is_a_user_error(tmp_path, release):
    assert_one_line_error(run("predict", "--method", "nope", release, "--split", "val", "--out", tmp_path / "p.json"),
                          "unknown method 'nope'")
    assert not (tmp_path / "p.json").exists()


def test_demo_runs_end_to_end_and_is_rerunnable(tmp_path, cache_env):
    proc = run("demo", "--out", tmp_path / "demo", "--bootstrap", "100", env=cache_env)
    assert proc.returncode == 0, proc.stderr
    (tmp_path / "demo" / "notes.txt").write_text("mine")
    assert_one_line_error(run("demo", "--out", tmp_path / "demo", env=cache_env), "not empty", "--overwrite")
    proc = run("demo", "--out", tmp_path / "demo", "--bootstrap", "100", "--overwrite", env=cache_env)
    assert proc.returncode == 0, proc.stderr
    # No false alarms about its own baselines (empty and full are degenerate by design), nor DeepSpeed's notice
    # that it found no GPU (printed on stdout by the model stages).
    assert "warning" not in proc.stderr.lower() and "predicted as" not in proc.stderr, proc.stderr
    assert "Setting accelerator" not in proc.stdout + proc.stderr
    # README shows what `make demo` prints: its table is this run's, row for row.
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    shown = readme.split("`make demo` runs the whole chain", 1)[1].split("```", 2)[1]
    assert [line for line in shown.splitlines() if line.startswith("│")] == \
        [line for line in proc.stdout.splitlines() if line.startswith("│")]
    assert (tmp_path / "demo" / "notes.txt").read_text() == "mine"
    assert "center-prior" in proc.stdout and "test overall" in proc.stdout
    page = (tmp_path / "demo" / "index.html").read_text()
    assert "center-prior" in page and "reports/center-prior-test/index.html" in page
    for method in ("empty", "full", "center-prior"):
        for split in ("val", "test"):
            doc = json.loads((tmp_path / "demo" / "results" / f"{method}-{split}.json").read_text())
            assert doc["split"] == split and doc["method"] == method
    # The empty baseline scores 1.0 exactly on the one empty-ground-truth test image, 0 elsewhere.
    empty_test = json.loads((tmp_path / "demo" / "results" / "empty-test.json").read_text())
    assert sorted(q["iou"] for q in empty_test["queries"])[-2:] == [0.0, 1.0]
