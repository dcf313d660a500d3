"""`reasonseg build qa` and `reasonseg qa stats` end to end, through the real entry point."""
import json
import subprocess
import sys

import cv2
import pytest
from qa_testlib import gotcha_root

from reasonseg.sample.qa_sources import write_qa_sources


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    return write_qa_sources(gotcha_root(tmp_path_factory.mktemp("cli")), ade20k=4, reason_seg=4)


def _cli(*args):
    return subprocess.run([sys.executable, "-c", "from reasonseg.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=120)


def test_build_then_stats(sources, tmp_path):
    out = tmp_path / "qa"
    args = [f"--source={n}={sources[n]}" for n in ("ade20k", "cocostuff", "refer_seg", "llava_instruct",
                                                   "reason_seg")]
    result = _cli("build", "qa", *args, "--out", str(out), "--mode", "lisa", "--samples", "120", "--seed", "4",
                  "--parquet")
    assert result.returncode == 0, result.stderr
    assert "wrote 120 records" in result.stdout
    assert (out / "qa.parquet").is_file()
    result = _cli("qa", "stats", str(out), "--top", "5")
    assert result.returncode == 0, result.stderr
    assert "most asked targets" in result.stdout and "ade20k" in result.stdout
    stats = json.loads((out / "stats.json").read_text())
    assert stats["records"] == 120 and len(stats["top_targets"]) == 5
    assert sum(s["records"] for s in stats["sources"].values()) == 120
    assert sum(stats["mask_area"]["histogram"].values()) == stats["mask_area"]["count"] > 0
    assert set(stats["templates"]) >= {"short:0", "answer:0"}
    png = cv2.imread(str(out / "class_frequency.png"))
    assert png is not None and png.shape[1] == 900


def test_user_errors_are_one_line_exit_2(sources, tmp_path):
    result = _cli("build", "qa", "--source", f"ade20k{sources['ade20k']}", "--out", str(tmp_path / "x"))
    assert result.returncode == 2 and "expects NAME=DIR" in result.stderr and "Traceback" not in result.stderr
    (sources["ade20k"] / "annotations" / "training" / "ADE_train_00000003.png").rename(tmp_path / "moved.png")
    try:
        result = _cli("build", "qa", "--source", f"ade20k={sources['ade20k']}", "--out", str(tmp_path / "x"))
        assert result.returncode == 2 and "Traceback" not in result.stderr
        # Off a terminal, progress comes as plain log lines; the error is the one last line.
        *progress, error = result.stderr.splitlines()
        assert all(line.startswith("generating QA records") for line in progress)
        assert "annotation PNG not found" in error and "ade20k/ADE_train_00000003" in error
        assert not (tmp_path / "x" / "qa.jsonl").exists()  # nothing half-written
        result = _cli("build", "qa", "--source", f"ade20k={sources['ade20k']}", "--out", str(tmp_path / "x"),
                      "--keep-going")
        assert result.returncode == 0 and "skipped 1 bad item" in result.stdout
        result = _cli("qa", "stats", str(tmp_path / "x"), "--json")
        assert json.loads(result.stdout)["sources"]["ade20k"]["skipped"] == 1
    finally:
        (tmp_path / "moved.png").rename(sources["ade20k"] / "annotations" / "training" / "ADE_train_00000003.png")
    assert _cli("qa", "stats", str(tmp_path / "empty")).returncode == 2


def test_help_has_examples():
    for args in (("build", "qa", "--help"), ("qa", "stats", "--help")):
        result = _cli(*args)
        assert result.returncode == 0 and "Example: reasonseg" in result.stdout
