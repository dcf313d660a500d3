"""Files and folders the commands write, as a user finds them: modes that follow the umask (and a rewritten file's
own mode), output folders refused when not empty, and --overwrite replacing a command's own outputs only."""
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import assert_one_line_error

from reasonseg.sample import write_sample_release

EXE = str(Path(sys.executable).with_name("reasonseg"))


def run(*args, umask=None, env=None, cwd=None):
    preexec = (lambda: os.umask(umask)) if umask is not None else None
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd,
                          preexec_fn=preexec, timeout=600)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return write_sample_release(tmp_path_factory.mktemp("files") / "release")


@pytest.fixture()
def env(tmp_path):
    return {**os.environ, "REASONSEG_CACHE": str(tmp_path / "cache")}


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_files_follow_the_umask(release, tmp_path, env, umask):
    expected = 0o666 & ~umask
    preds, results, report = tmp_path / "p.json", tmp_path / "r.json", tmp_path / "report"
    assert run("predict", release, "--method", "full", "--split", "val", "--out", preds, umask=umask,
               env=env).returncode == 0
    proc = run("score", release, preds, "--out", results, "--report", report, "--bootstrap", "0", umask=umask,
               env=env)
    assert proc.returncode == 0, proc.stderr
    for path in (preds, results, report / "index.html"):
        assert mode(path) == expected, (path, oct(mode(path)))
    proc = run("sample", "--out", tmp_path / "sample", umask=umask)
    assert proc.returncode == 0, proc.stderr
    assert mode(tmp_path / "sample" / "release" / "manifest.json") == expected


def test_rephrase_keeps_the_mode_of_the_files_it_rewrites(tmp_path):
    from reasonseg.builders.rephrase.standin import StandInServer

    root = write_sample_release(tmp_path / "rel", counts={"train": 2})
    from reasonseg.dataset import write_manifest

    write_manifest(root, name="modes", version="1")
    rewritten = [*sorted((root / "train").glob("*.json")), root / "manifest.json"]
    for path in rewritten:
        path.chmod(0o644)
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    with StandInServer(api_key="sk-test") as server:
        # umask 077: a new file would be 0600, so 0644 afterwards means the file's own mode was kept
        proc = run("rephrase", root, "--base-url", server.url, "--cache", tmp_path / "c.sqlite", "--n", "2",
                   "--json", umask=0o077, env={**env, "OPENAI_API_KEY": "sk-test"})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["files_written"] >= 1
    for path in rewritten:
        assert mode(path) == 0o644, (path, oct(mode(path)))


# ------------------------------------------------------------------------------------------------ output folders

def _qa_sources(tmp_path):
    from reasonseg.sample.qa_sources import write_qa_sources

    return write_qa_sources(tmp_path / "qa-src", ade20k=3)


def test_build_qa_refuses_a_full_folder_and_overwrites_only_its_own_outputs(tmp_path):
    sources = _qa_sources(tmp_path)
    out = tmp_path / "qa"
    args = ["build", "qa", "--source", f"ade20k={sources['ade20k']}", "--out", out]
    assert run(*args).returncode == 0
    # Stale outputs of earlier runs (a Parquet file, statistics and their plot) and a file of the user's
    for name in ("qa.parquet", "stats.json", "class_frequency.png"):
        (out / name).write_text("stale")
    (out / "notes.txt").write_text("mine")
    before = (out / "qa.jsonl").read_text()
    assert_one_line_error(run(*args, "--mode", "lisa", "--samples", "5"), str(out), "not empty", "--overwrite")
    assert (out / "qa.jsonl").read_text() == before
    proc = run(*args, "--mode", "lisa", "--samples", "5", "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["build.json", "notes.txt", "qa.jsonl"]
    assert (out / "notes.txt").read_text() == "mine"
    assert len((out / "qa.jsonl").read_text().splitlines()) == 5


def test_qa_stats_into_another_folder_follows_the_rule(tmp_path):
    sources = _qa_sources(tmp_path)
    qa, stats = tmp_path / "qa", tmp_path / "stats"
    assert run("build", "qa", "--source", f"ade20k={sources['ade20k']}", "--out", qa).returncode == 0
    assert run("qa", "stats", qa).returncode == 0           # into the QA folder itself: no --overwrite needed
    assert run("qa", "stats", qa).returncode == 0
    stats.mkdir()
    (stats / "notes.txt").write_text("mine")
    assert_one_line_error(run("qa", "stats", qa, "--out", stats), "not empty", "--overwrite")
    assert not (stats / "stats.json").exists()
    proc = run("qa", "stats", qa, "--out", stats, "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert (stats / "stats.json").is_file() and (stats / "notes.txt").read_text() == "mine"


def test_build_qa_samples_needs_lisa_mode(tmp_path):
    sources = _qa_sources(tmp_path)
    assert_one_line_error(run("build", "qa", "--source", f"ade20k={sources['ade20k']}", "--out", tmp_path / "qa",
                          "--samples", "10"), "--samples", "--mode lisa")
    assert not (tmp_path / "qa").exists()


def test_score_report_folder_is_refused_when_full_and_replaced_when_overwritten(release, tmp_path, env):
    preds = tmp_path / "p.json"
    assert run("predict", release, "--method", "empty", "--split", "val", "--out", preds).returncode == 0
    report = tmp_path / "report"
    report.mkdir()
    (report / "keep.md").write_text("mine")
    (report / "overlays").mkdir()
    (report / "overlays" / "stale.png").write_text("old")
    assert_one_line_error(run("score", release, preds, "--report", report, "--bootstrap", "0", env=env), "--report",
                          "not empty")
    assert not (tmp_path / "results.json").exists()
    proc = run("score", release, preds, "--report", report, "--bootstrap", "0", "--overwrite", env=env)
    assert proc.returncode == 0, proc.stderr
    assert (report / "keep.md").read_text() == "mine" and (report / "index.html").is_file()
    assert not (report / "overlays" / "stale.png").exists()


def test_sample_overwrite_keeps_foreign_files(tmp_path):
    out = tmp_path / "s"
    assert run("sample", "--out", out).returncode == 0
    (out / "README.txt").write_text("mine")
    assert_one_line_error(run("sample", "--out", out), "not empty", "--overwrite")
    proc = run("sample", "--out", out, "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert (out / "README.txt").read_text() == "mine" and (out / "release" / "manifest.json").is_file()


def test_leaderboard_export_into_the_current_folder_keeps_git(tmp_path):
    pytest.importorskip("sqlalchemy")
    db = tmp_path / "lb.db"
    assert run("leaderboard", "add-team", "team", "--db", db).returncode == 0
    site = tmp_path / "site"
    (site / ".git").mkdir(parents=True)
    (site / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (site / "CNAME").write_text("board.example.org\n")
    assert_one_line_error(run("leaderboard", "export", "--db", db, "--out", ".", cwd=site), "not empty", "--overwrite")
    for _ in range(2):  # the second export replaces the first one's files
        proc = run("leaderboard", "export", "--db", db, "--out", ".", "--overwrite", cwd=site)
        assert proc.returncode == 0, proc.stderr
    assert (site / ".git" / "HEAD").read_text() == "ref: refs/heads/main\n"
    assert (site / "CNAME").read_text() == "board.example.org\n"
    assert (site / "index.html").is_file() and (site / "leaderboard.json").is_file()
    assert sorted(p.name for p in site.iterdir()) == [".git", "CNAME", "index.html", "leaderboard.json",
                                                       "submissions", "teams"]


@pytest.mark.slow
def test_lisa_init_refuses_a_full_folder_and_writes_readable_files(tmp_path):
    pytest.importorskip("torch")
    out = tmp_path / "tiny"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    assert run("lisa", "init", "--size", "tiny", "--out", out, umask=0o022, env=env).returncode == 0
    assert mode(out) == 0o755 and mode(out / "config.json") == 0o644   # not a private temp folder's 0700
    (out / "notes.txt").write_text("mine")
    assert_one_line_error(run("lisa", "init", "--size", "tiny", "--out", out, env=env), "not empty", "--overwrite")
    proc = run("lisa", "init", "--size", "tiny", "--safetensors", "--out", out, "--overwrite", env=env)
    assert proc.returncode == 0, proc.stderr
    assert (out / "notes.txt").read_text() == "mine" and (out / "model.safetensors").is_file()
    assert not list(out.glob("pytorch_model*"))   # the previous format's weights are gone with the overwrite
