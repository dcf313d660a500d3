"""Running the CLI as a user does, with the child's wall time and peak memory measured (resource-attack bounds).

The peak is the child's own VmHWM, read by the child itself at exit: `ru_maxrss` (from wait4 or RUSAGE_SELF) also
counts the address space the child was forked from, so under a pytest process that has grown to gigabytes (the
LISA tests load torch models in-process) every child would seem to use that much.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
_CLI_RECORDING_PEAK = (
    "import atexit, os, sys\n"
    "def _peak():\n"
    "    status = open('/proc/self/status').read().split('VmHWM:')[1].split()[0]\n"
    "    open(os.environ['REASONSEG_TEST_PEAK'], 'w').write(status)\n"
    "atexit.register(_peak)\n"
    "sys.argv = ['reasonseg', *sys.argv[1:]]\n"
    "from reasonseg.cli import main\n"
    "main()\n")


@dataclass
class Measured:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    peak_rss_mb: float


def run_measured(*args: str, timeout: float = 120, **env: str) -> Measured:
    """`reasonseg ARGS` in a child process (this checkout first on the path), with its wall time and its own peak
    resident memory; a child killed at the timeout counts as infinitely large."""
    with tempfile.TemporaryDirectory() as tmp:
        peak_file = Path(tmp) / "peak-kb"
        environ = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                       OMP_NUM_THREADS="1", REASONSEG_TEST_PEAK=str(peak_file), **env)
        started = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, "-c", _CLI_RECORDING_PEAK, *args], capture_output=True,
                                  timeout=timeout, env=environ, cwd=REPO)
            returncode, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as exc:
            returncode, stdout, stderr = -9, exc.stdout or b"", exc.stderr or b""
        seconds = time.perf_counter() - started
        peak_mb = int(peak_file.read_text()) / 1024 if peak_file.exists() else float("inf")
        return Measured(returncode, stdout.decode(errors="replace"), stderr.decode(errors="replace"), seconds,
                        peak_mb)
