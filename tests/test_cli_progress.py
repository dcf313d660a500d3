"""Progress of long runs as a user sees it: a bar with count, rate and time left on a terminal; plain lines in a log
(stderr not a terminal, as under SLURM); nothing from a short run in a log."""
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from reasonseg.sample import write_sample_release

EXE = str(Path(sys.executable).with_name("reasonseg"))


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return write_sample_release(tmp_path_factory.mktemp("progress") / "release")


def _predict(release, out, **env):
    return subprocess.run([EXE, "predict", str(release), "--method", "center-prior", "--split", "test", "--out",
                           str(out)], capture_output=True, text=True, env={**os.environ, **env}, timeout=300)


def test_a_log_gets_plain_lines_with_count_rate_and_eta(release, tmp_path):
    proc = _predict(release, tmp_path / "p.json", REASONSEG_PROGRESS_SECONDS="0")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    steps = [line for line in lines if re.fullmatch(r"center-prior on test: \d+/36 \(\d+%\), [\d.,]+/s, "
                                                    r"elapsed \d+:\d\d(, ETA \d+:\d\d)?", line)]
    counts = [int(re.search(r": (\d+)/", line)[1]) for line in steps]
    # A line at every tenth of the run that a batch (8 queries here) completes, the count always rising
    assert len(counts) >= 4 and counts == sorted(set(counts)) and counts[-1] == 36, proc.stderr
    assert all("ETA" in line for line in steps[:-1])
    assert re.fullmatch(r"center-prior on test: done, 36/36 \(100%\) in \d+:\d\d \([\d.,]+/s\)", lines[-1])
    assert "\x1b[" not in proc.stderr               # no terminal control codes in a log


def test_a_short_run_leaves_a_log_quiet(release, tmp_path):
    proc = _predict(release, tmp_path / "p.json")
    assert proc.returncode == 0 and proc.stderr == ""


def test_a_terminal_gets_a_bar_with_count_rate_and_eta(release, tmp_path):
    master, slave = pty.openpty()
    proc = subprocess.Popen([EXE, "predict", str(release), "--method", "center-prior", "--split", "test", "--out",
                             str(tmp_path / "p.json")], stdout=subprocess.PIPE, stderr=slave,
                            env={**os.environ, "COLUMNS": "160", "TERM": "xterm"})
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed its end
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert proc.wait(300) == 0
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", seen.decode("utf-8", "replace"))
    assert "center-prior on test" in screen and "36/36" in screen
    assert re.search(r"[\d.]+ items/s", screen) and "ETA" in screen


@pytest.mark.slow
def test_lisa_predict_reports_progress_in_a_log(release, tmp_path):
    pytest.importorskip("torch")
    model = tmp_path / "tiny-lisa"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "REASONSEG_PROGRESS_SECONDS": "0"}
    init = subprocess.run([EXE, "lisa", "init", "--size", "tiny", "--out", str(model)], capture_output=True,
                          text=True, env=env, timeout=600)
    assert init.returncode == 0, init.stderr
    proc = subprocess.run([EXE, "lisa", "predict", str(release), "--weights", str(model), "--split", "val", "--out",
                           str(tmp_path / "p.json"), "--limit", "6", "--batch-size", "2"], capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"LISA on val: 6/6 \(100%\)", proc.stderr), proc.stderr
    assert "LISA on val: done, 6/6" in proc.stderr
