"""The command line's habits, as a user meets them: --version, -h, help text as click users expect, one-line usage
errors, precise missing-argument messages, --split from the predictions file, p-values at their floor and as
report prints them, metric names, path suggestions, and untrusted text (method names, folder names) printed as
written, never as markup."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import assert_one_line_error

from reasonseg import __version__
from reasonseg.sample import write_sample_release

EXE = str(Path(sys.executable).with_name("reasonseg"))
# A wide terminal, so each help paragraph is one line and a test can read it whole.
WIDE = {**os.environ, "COLUMNS": "400", "TERM": "dumb"}

HELP_COMMANDS = [
    [], ["score"], ["compare"], ["validate"], ["predict"], ["report"], ["sample"], ["demo"], ["publish"],
    ["rephrase"], ["submit"], ["build", "qa"], ["build", "reasonseg"], ["qa", "stats"], ["leaderboard", "export"],
    ["lisa", "predict"], ["cache", "clear"],
]


def run(*args, env=None):
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, env=env or WIDE, timeout=300)


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return write_sample_release(tmp_path_factory.mktemp("habits") / "release")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return {**WIDE, "REASONSEG_CACHE": str(tmp_path_factory.mktemp("cache"))}


@pytest.fixture(scope="module")
def predictions(release, tmp_path_factory, env):
    """Predictions files of two trivial methods on val; their `method` fields hold rich-markup-like text."""
    folder = tmp_path_factory.mktemp("preds")
    paths = {}
    for method in ("center-prior", "full"):
        path = folder / f"{method}.json"
        proc = run("predict", release, "--method", method, "--split", "val", "--out", path, env=env)
        assert proc.returncode == 0, proc.stderr
        paths[method] = path
    return paths


def test_version_and_short_help():
    proc = run("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"reasonseg {__version__}"
    for args in (["-h"], ["score", "-h"], ["build", "qa", "-h"]):
        proc = run(*args)
        assert proc.returncode == 0 and "Usage: reasonseg" in proc.stdout, proc.stderr


@pytest.mark.parametrize("command", HELP_COMMANDS, ids=lambda c: " ".join(c) or "main")
def test_help_shows_flags_without_a_type_and_positionals_in_capitals(command):
    proc = run(*command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "<bool>" not in proc.stdout
    usage = next(line for line in proc.stdout.splitlines() if "Usage:" in line)
    assert not re.search(r"\{[a-z_]+\}", usage) and not re.search(r"\[[a-z_]+\]", usage), usage


def test_help_lists_choices_and_reflows_paragraphs():
    score = run("score", "--help").stdout
    assert "[lisa|all-texts]" in score.replace("<", "[").replace(">", "]")
    assert "one|zero|skip" in score and "error|empty" in score
    assert "Usage: reasonseg score [OPTIONS] DATA PREDICTIONS" in score
    assert "exhaustive|lisa" in run("build", "qa", "--help").stdout
    # A docstring paragraph written over several source lines reads as one line (the terminal wraps it).
    predict = run("predict", "--help").stdout
    assert re.search(r"Weights come from .* resumes from it when rerun with the same settings\.", predict)
    # Help text is shown as written: brackets in it are not eaten as markup.
    assert "[default: {split}-annotations-object-segmentation.csv]" in run("build", "reasonseg", "--help").stdout
    # Help texts are reflowed only when help is shown; a group run without a command shows the same help, once.
    for group in (["build"], ["lisa"], ["leaderboard"]):
        bare, asked = run(*group), run(*group, "--help")
        assert bare.returncode == 2 and asked.returncode == 0, group
        assert bare.stdout.count("Usage:") == 1 and bare.stdout.rstrip() == asked.stdout.rstrip(), group


def test_usage_errors_are_one_line_with_exit_2(release):
    assert_one_line_error(run("score", release, "p.json", "--protocol", "odd"), "--protocol", "'odd'", "lisa",
                          "reasonseg score -h")
    assert_one_line_error(run("score"), "Missing argument 'DATA'")
    assert_one_line_error(run("nosuch"), "No such command 'nosuch'")
    assert_one_line_error(run("compare", release, "a.json", "b.json", "--empty-union", "maybe"), "--empty-union")


def test_predict_names_exactly_what_is_missing(release, tmp_path):
    line = assert_one_line_error(run("predict", release, "--split", "val"), "--method", "--out")
    assert "DATA" not in line.split("(")[0] and "--split" not in line.split("(")[0]
    line = assert_one_line_error(run("predict", "--method", "full", "--out", tmp_path / "p.json"), "DATA", "--split")
    assert "--method" not in line.split("(")[0]
    assert not (tmp_path / "p.json").exists()


def test_split_defaults_to_the_predictions_file(release, predictions, env, tmp_path):
    proc = run("score", release, predictions["full"], "--json", "--bootstrap", "0", env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["split"] == "val"
    results = tmp_path / "full-results.json"
    assert run("score", release, predictions["full"], "--out", results, "--bootstrap", "0", env=env).returncode == 0
    proc = run("compare", release, results, predictions["center-prior"], "--json", "--bootstrap", "50", env=env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["split"] == "val"
    # A PNG folder names no split: then --split is asked for, in one line.
    import cv2
    import numpy as np

    folder = tmp_path / "pngs"
    folder.mkdir()
    first = sorted((release / "val").glob("*.jpg"))[0]
    cv2.imwrite(str(folder / f"{first.stem}.png"), np.zeros((4, 4), np.uint8))
    assert_one_line_error(run("score", release, folder, env=env), "--split")


def test_compare_prints_metric_names_and_the_p_value_floor(release, predictions, env, tmp_path):
    # empty vs full: full is ahead on every image, so no bootstrap resample crosses 0 and p sits at its floor.
    empty = tmp_path / "empty.json"
    assert run("predict", release, "--method", "empty", "--split", "val", "--out", empty, env=env).returncode == 0
    args = ["compare", release, empty, predictions["full"], "--split", "val", "--bootstrap", "50"]
    doc = json.loads(run(*args, "--json", env=env).stdout)
    table = run(*args, env=env)
    assert table.returncode == 0, table.stderr
    rows = {line.split("│")[1].strip(): line for line in table.stdout.splitlines() if line.count("│") > 3}
    assert set(rows) >= {"gIoU", "cIoU"} and "giou" not in table.stdout
    floor = 2 / 51
    for d in doc["differences"]:
        assert d["ci"][0] > 0 and abs(d["p_value"] - floor) < 1e-12
        assert "< 0.04" in rows["gIoU" if d["metric"] == "giou" else "cIoU"]
    assert "one paired bootstrap" in table.stdout       # what the p-value tests is said under the table


def test_compare_and_report_run_one_test_whose_p_agrees_with_the_ci(release, predictions, env, tmp_path):
    # README's pair. The permutation p-value of cIoU (methods swapped image by image) was < 0.0001 here while the
    # bootstrap CI of the difference held 0: it tested whether the methods' per-image results are exchangeable
    # (full's unions are the whole image), not whether the cIoUs differ; report ran it with another count.
    results = {}
    for method in ("center-prior", "full"):
        results[method] = tmp_path / f"{method}.results.json"
        proc = run("score", release, predictions[method], "--out", results[method], "--bootstrap", "0", env=env)
        assert proc.returncode == 0, proc.stderr
    proc = run("compare", release, predictions["full"], predictions["center-prior"], "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    diffs = {d["metric"]: d for d in json.loads(proc.stdout)["differences"]}
    for d in diffs.values():
        assert (d["ci"][0] <= 0 <= d["ci"][1]) == (d["p_value"] >= 0.05), d
    assert diffs["ciou"]["ci"][0] < 0 < diffs["ciou"]["ci"][1] and diffs["ciou"]["p_value"] >= 0.05
    proc = run("report", release, results["center-prior"], results["full"], "--out", tmp_path / "cmp", env=env)
    assert proc.returncode == 0, proc.stderr
    page = (tmp_path / "cmp" / "index.html").read_text()
    table = page[page.index('id="significance"'):]
    printed = re.findall(r"p = ([0-9.]+)", table)
    # report's row is full − center-prior (the best is center-prior): the same test mirrored, the same p.
    assert printed == [f"{diffs[m]['p_value']:.4f}" for m in ("giou", "ciou")]
    assert "one paired bootstrap" in page


def test_a_mistyped_path_and_a_folder_above_the_release_get_suggestions(release, tmp_path):
    typo = release.parent / "relaese"
    assert_one_line_error(run("validate", typo), "not found", f"did you mean {release}?")
    assert_one_line_error(run("score", release.parent, "p.json", "--split", "val"), f"did you mean {release}?")


# --------------------------------------------------------------------------------------- untrusted text, no markup

MARKUP = "[/x] [bold]loud[/bold] [red]"


def test_markup_in_a_method_name_prints_as_written(release, predictions, env, tmp_path):
    proc = run("score", release, predictions["full"], "--method", MARKUP, "--bootstrap", "0", env=env)
    assert proc.returncode == 0, proc.stderr
    assert MARKUP in proc.stdout
    results = tmp_path / "r.json"
    assert run("score", release, predictions["full"], "--method", MARKUP, "--out", results, "--bootstrap", "0",
               env=env).returncode == 0
    proc = run("compare", release, results, predictions["center-prior"], "--bootstrap", "20",
               env=env)
    assert proc.returncode == 0, proc.stderr
    assert MARKUP in proc.stdout


def test_markup_in_a_folder_name_prints_as_written(release, tmp_path, env):
    import shutil

    folder = tmp_path / "rel [/x] [b]"
    shutil.copytree(release, folder)
    proc = run("validate", folder, env=env)
    assert proc.returncode == 0, proc.stderr
    assert str(folder) in proc.stdout
    proc = run("validate", tmp_path / "missing [/x]", env=env)
    assert_one_line_error(proc, "missing [/x]")


def test_markup_in_a_predictions_error_prints_as_written(release, tmp_path, env):
    bad = tmp_path / "[x] bad [b].json"
    bad.write_text(json.dumps({"format": "reasonseg-predictions", "version": 1, "split": "val",
                               "predictions": [{"id": "[/x]", "text_index": 0, "mask": {"size": [1, 1],
                                                                                        "counts": "1"}}]}))
    assert_one_line_error(run("score", release, bad, env=env), "[x] bad [b].json", "[/x]")


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: OpenBLAS starts no worker thread either way")
def test_scoring_commands_start_no_spinning_openblas_workers(release, predictions, env):
    """Each OpenBLAS worker spins for ~0.1 s of CPU once numpy starts it, for matrix products that are tiny here:
    `score` runs numpy with one BLAS thread, unless OPENBLAS_NUM_THREADS says otherwise."""
    probe = ("import atexit, os, sys; atexit.register(lambda: print('THREADS', len(os.listdir('/proc/self/task')), "
             "file=sys.stderr)); from reasonseg.cli import main; sys.argv = ['reasonseg'] + sys.argv[1:]; main()")
    env = {k: v for k, v in env.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}

    def threads(**extra):
        proc = subprocess.run([sys.executable, "-c", probe, "score", str(release), str(predictions["full"]),
                               "--json"], capture_output=True, text=True, env={**env, **extra}, timeout=300)
        assert proc.returncode == 0, proc.stderr
        return int(proc.stderr.rsplit("THREADS", 1)[1].split()[0])

    assert threads() == 1
    assert threads(OPENBLAS_NUM_THREADS="2") == 2     # the user's setting wins


def test_every_command_has_an_example_in_its_help():
    import typer.main

    from reasonseg.cli import full_app

    def leaves(command, path):
        for name, sub in getattr(command, "commands", {}).items():
            yield from leaves(sub, [*path, name]) if hasattr(sub, "commands") else [([*path, name], sub)]

    commands = list(leaves(typer.main.get_command(full_app()), []))
    assert len(commands) > 25
    assert [" ".join(path) for path, command in commands
            if not command.hidden and not re.search(r"Examples?: reasonseg", command.help or "")] == []
    for path in (["leaderboard", "teams"], ["cache", "info"], ["cache", "clear"]):   # as a user sees it
        assert f"Example: reasonseg {' '.join(path)}" in run(*path, "--help").stdout
