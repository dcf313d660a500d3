"""Untrusted predictions are read, checked and scored in a child process under operating-system limits.

Pre-scans bound a file's cost only for the shapes they look at. Here the bound holds whatever the shape: the child
gets an address-space limit (RLIMIT_AS, counted from its own size once started, so the budget is what reading may
add), a CPU-seconds limit (RLIMIT_CPU), and the parent kills it after a wall-clock timeout. A breach ends the child
and becomes one `ReadLimitError` line; the calling process never parses the bytes, so it never stalls on them.

The child is a fresh interpreter (`python -m reasonseg.sandbox`) that imports only the reader, numpy and the scorer:
never torch, never the web server, so starting one costs an interpreter and numpy, not a copy of the caller.
`Sandbox(warm=n)` keeps n of them started and waiting, so a job does not wait for the imports; each child runs one
job and exits, so no job inherits another's memory or CPU time.

Protocol: the parent writes an 8-byte length, a pickled job (trusted: the parent made it) and then the job's bytes
(an upload) to the child's stdin; the child writes one pickled reply to stdout, which the parent loads with an
unpickler that accepts only the classes a reply can hold.
"""
from __future__ import annotations

import io
import logging
import math
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

from .errors import ReadLimitError, ReasonSegError, SubmissionError

MIB = 1024 * 1024
# Sized from honest uploads of a test-size split (benchmarks/bench_leaderboard.py --sandbox-cost, 779 queries at
# 640x480; docs/leaderboard.md): checking the JSON RLE took 6 MiB over the child's start and 0.07 s of CPU, the same
# masks as a PNG zip 29 MiB and 1.4 s, scoring the JSON with 1000 resamples 18 MiB and 0.15 s. The defaults leave
# more than a factor of ten on the largest, for bigger images and slower machines.
LOG = logging.getLogger("reasonseg.sandbox")
DEFAULT_MEMORY_MIB = 512
DEFAULT_CPU_S = 30
DEFAULT_WALL_S = 60.0
_HEADER = struct.Struct("<Q")
_CHILD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
              # glibc reserves 64 MiB of address space per thread arena: keep two, so the budget is for data
              "MALLOC_ARENA_MAX": "2"}


@dataclass(frozen=True)
class SandboxLimits:
    """What one job may use. `memory_mib` and `cpu_s` of 0 (or `trusted=True`) lift that limit."""

    memory_mib: int = DEFAULT_MEMORY_MIB
    cpu_s: int = DEFAULT_CPU_S
    wall_s: float = DEFAULT_WALL_S
    trusted: bool = False          # run in this process, without limits (trusted local files only)

    def describe(self) -> str:
        return f"{self.memory_mib} MiB / {self.cpu_s} s"

    def read(self, job: str, path, limits, index=None):
        """`submission.ReadsElsewhere`: what `read_predictions` and `named_split` call when `Limits.sandbox` is
        this, so that the reader runs in a child under these limits without importing this module."""
        return read_sandboxed(job, path, limits, index)


LIMITED = SandboxLimits()                  # the defaults: what an upload gets on the server, and the CLI by default
TRUSTED = SandboxLimits(trusted=True)


@dataclass(frozen=True)
class Cost:
    """What a job used: peak resident memory over the child's start, and CPU seconds."""

    memory_mib: float
    cpu_s: float
    wall_s: float = 0.0

    def describe(self) -> str:
        return f"{max(self.memory_mib, 1):.0f} MiB and {max(self.cpu_s, 0.1):.1f} s"


# ------------------------------------------------------------------------------------------------ the jobs

def _ground_truth(source):
    """A GroundTruth handed in whole, or the path of one the parent pickled (the server's, written once)."""
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as fh:
            return pickle.load(fh)
    return source


def _index(gt):
    from .metrics.scoring import split_index

    return split_index(gt) if gt is not None else None


def job_read(data: bytes | None, *, where: str, limits, gt=None, index=None, path: str | None = None):
    """A predictions file (bytes, or a path: file, zip or folder of PNGs) read and checked against a split (its
    `index`, or `gt`'s)."""
    from .submission import parse_predictions_bytes, read_predictions

    index = index if index is not None else _index(_ground_truth(gt))
    if path is not None:
        return read_predictions(path, limits, index)
    return parse_predictions_bytes(data, where, limits, index)


def job_named_split(data: bytes | None, *, where: str, limits, path: str, index=None) -> str | None:
    from .submission import named_split

    return named_split(path, limits)


def reading_limits(trusted: bool = False):
    """The `submission.Limits` the CLI reads predictions with: in a sandboxed child under the default limits, or
    (`--trusted`) in this process without them."""
    from .submission import Limits

    return Limits() if trusted else Limits(sandbox=LIMITED)


def read_sandboxed(job: str, path, limits, index=None):
    """`submission.read_predictions` or `named_split` (`job` "read" or "named_split") on a local file, in a child
    under `limits.sandbox` (the CLI's default reading path; `SandboxLimits(trusted=True)` reads in this process)."""
    from dataclasses import replace

    args = {"where": str(path), "limits": replace(limits, sandbox=None), "path": str(path), "index": index}
    with Sandbox(limits.sandbox) as sandbox:
        return sandbox.run(job, args, where=str(path))


def job_check_upload(data: bytes, *, where: str, limits, gt) -> dict:
    """What the server does with an upload before storing it: read it against the split, match every query."""
    from .leaderboard.intake import check_against, read_upload

    gt = _ground_truth(gt)
    preds = read_upload(data, where, limits, _index(gt))
    check_against(gt, preds)
    return {"masks": len(preds.masks), "sha256": preds.sha256}


def job_score_upload(data: bytes, *, where: str, limits, gt, protocol: str, bootstrap: int, method: str | None
                     ) -> dict:
    """A stored upload read again (under the same limits) and scored: the results document."""
    from .leaderboard.intake import read_upload
    from .metrics.scoring import evaluate_predictions

    gt = _ground_truth(gt)
    preds = read_upload(data, where, limits, _index(gt))
    # val results carry the drift table (every scorer's rules); test results never do (nothing more about hidden
    # ground truth may be derivable from them).
    return evaluate_predictions(gt, preds, protocol, bootstrap=bootstrap, method=method,
                                drift=gt.split == "val").document


JOBS = {"read": job_read, "named_split": job_named_split, "check_upload": job_check_upload,
        "score_upload": job_score_upload}
# Errors a child may report, rebuilt by name in the parent (anything else is reported as a reader failure).
_ERROR_MODULES = ("reasonseg.errors", "reasonseg.leaderboard.intake")


# ------------------------------------------------------------------------------------------------ the parent

class Sandbox:
    """Runs jobs in limited child processes; `warm` children are kept started and waiting for a job."""

    def __init__(self, limits: SandboxLimits = SandboxLimits(), warm: int = 0):
        self.limits = limits
        self.warm = max(0, warm) if not limits.trusted else 0
        self._idle: list[subprocess.Popen] = []
        self._lock = threading.Lock()
        self._closed = False
        self._fill()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for proc in idle:
            _end(proc)

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def run(self, job: str, args: dict, data: bytes | None = None, *, where: str = "predictions",
            nice: int = 0, honest=None):
        """The result of `JOBS[job](data, **args)`, computed in a child under the limits. Raises the job's own
        `ReasonSegError`, or `ReadLimitError` on a breach; `honest()` (optional) describes what an honest file of
        the same split costs, for that message. Warnings the job raised are raised again here."""
        return self.run_costed(job, args, data, where=where, nice=nice, honest=honest)[0]

    def run_costed(self, job: str, args: dict, data: bytes | None = None, *, where: str = "predictions",
                   nice: int = 0, honest=None) -> tuple[object, Cost | None]:
        """`run`, and what the job cost (None when trusted: it ran in this process, unmeasured)."""
        if self.limits.trusted:
            return JOBS[job](data, **args), None
        proc = self._take()
        header = pickle.dumps({"job": job, "args": args, "memory_mib": self.limits.memory_mib,
                               "cpu_s": self.limits.cpu_s, "nice": nice, "has_data": data is not None},
                              protocol=pickle.HIGHEST_PROTOCOL)
        try:
            proc.stdin.write(_HEADER.pack(len(header)) + header)
            out, err = proc.communicate(data if data is not None else b"", timeout=self.limits.wall_s)
        except subprocess.TimeoutExpired:
            _end(proc)
            raise self._breach(where, f"more than {self.limits.wall_s:g} s (wall clock)", honest) from None
        except (BrokenPipeError, ValueError):    # the child died before it read the job (e.g. it was killed)
            out, err = proc.communicate()
        finally:
            # The replacement starts once this job is over: its imports would compete with the job for the CPU.
            self._fill()
        return self._answer(proc.returncode, out, err, where, honest)

    # ---------------------------------------------------------------------------------------------- internals

    def _answer(self, returncode: int, out: bytes, err: bytes, where: str, honest):
        try:
            reply = _load_reply(out) if out else None
        except (pickle.UnpicklingError, ValueError, TypeError) as exc:   # a reader bug, or a compromised child
            raise SubmissionError(f"the sandboxed reader's reply was refused ({exc})", path=where) from None
        if reply is None:
            if returncode == -getattr(signal, "SIGXCPU", 24):
                raise self._breach(where, f"more than {self.limits.cpu_s} s of CPU", honest)
            # Killed (the kernel's OOM killer, or an allocation that failed inside a C library): memory, in
            # practice; the child's last line says more.
            last = _last_line(err)
            raise self._breach(where, f"more than {self.limits.memory_mib} MiB (the reader stopped with code "
                               f"{returncode}{': ' + last[:200] if last else ''})", honest)
        kind, payload, caught, cost = reply
        for message, category in caught:
            warnings.warn(message, category, stacklevel=4)
        if kind == "ok":
            return payload, Cost(*cost)
        if kind == "memory":
            raise self._breach(where, f"more than {self.limits.memory_mib} MiB", honest)
        if kind == "error":
            raise _rebuilt_error(*payload)
        LOG.warning("the sandboxed reader failed on %s: %s", where, _last_line(err)[:500] or payload)
        raise SubmissionError(f"the file could not be read ({payload}); the maintainers have the details in the "
                              "log", path=where)

    def _breach(self, where: str, needs: str, honest) -> ReadLimitError:
        about = ""
        if honest is not None:
            try:
                about = f"; the honest form of this split takes about {honest()}"
            except ReasonSegError as exc:
                about = f"; the honest form of this split could not be measured: {exc.message}"
        return ReadLimitError(f"needs {needs} to read{about}", path=where,
                              hint=None if about else "pass --trusted to read a trusted local file without limits")

    def _spawn(self) -> subprocess.Popen:
        env = {**os.environ, **_CHILD_ENV}
        return subprocess.Popen([sys.executable, "-m", "reasonseg.sandbox"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, close_fds=True)

    def _take(self) -> subprocess.Popen:
        with self._lock:
            proc = None
            while self._idle and proc is None:
                candidate = self._idle.pop(0)
                proc = candidate if candidate.poll() is None else _end(candidate)
        return proc or self._spawn()

    def _fill(self) -> None:
        with self._lock:
            while not self._closed and len(self._idle) < self.warm:
                self._idle.append(self._spawn())


def _last_line(err: bytes) -> str:
    lines = err.decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else ""


def _end(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


class _ReplyUnpickler(pickle.Unpickler):
    """Only what a reply holds: builtins, numpy arrays, the reader's own classes, warning categories."""

    _ALLOWED = {("reasonseg.submission", "PredictionSet"), ("reasonseg.submission", "PredictedMask"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("numpy._core.numeric", "_frombuffer"),
                ("numpy.core.numeric", "_frombuffer"), ("builtins", "UserWarning"), ("builtins", "RuntimeWarning"),
                ("builtins", "DeprecationWarning"), ("builtins", "FutureWarning"), ("builtins", "set"),
                ("builtins", "frozenset"), ("builtins", "tuple"), ("builtins", "complex")}

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED or module.startswith("numpy.dtypes"):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"a sandbox reply may not hold {module}.{name}")


def _load_reply(out: bytes):
    try:
        return _ReplyUnpickler(io.BytesIO(out)).load()
    except EOFError:  # a reply cut short (the child was killed while writing it) is no reply
        return None


def _rebuilt_error(module: str, name: str, fields: dict) -> ReasonSegError:
    import importlib

    cls = getattr(importlib.import_module(module), name, None) if module in _ERROR_MODULES else None
    if not (isinstance(cls, type) and issubclass(cls, ReasonSegError)):
        cls = SubmissionError
    return cls(fields["message"], path=fields["path"], sample_id=fields["sample_id"], field=fields["field"],
               hint=fields["hint"])


# ------------------------------------------------------------------------------------------------ the child

def _status_kib(key: str) -> int:
    """A field of /proc/self/status in KiB; 0 where there is no /proc (the memory limit then needs Linux)."""
    try:
        lines = Path("/proc/self/status").read_text().splitlines()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in lines if line.startswith(key + ":")), 0)


def _cpu_s() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _apply_limits(memory_mib: int, cpu_s: int) -> None:
    import resource  # POSIX only: the sandbox's child, never the CLI's import

    start = _status_kib("VmSize")
    if memory_mib and start:
        size = start * 1024 + memory_mib * MIB
        resource.setrlimit(resource.RLIMIT_AS, (size, size))
    if cpu_s:
        soft = math.ceil(_cpu_s()) + cpu_s
        resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 2))    # SIGXCPU at soft, SIGKILL at hard


def _child_main() -> None:
    import time

    # Warm before the job arrives: these imports are the child's start-up, not the job's cost.
    from . import submission  # noqa: F401
    from .leaderboard import intake  # noqa: F401
    from .metrics import scoring  # noqa: F401

    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr                  # nothing but the reply goes to the parent's pipe
    head = stdin.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return                               # the parent went away without a job
    job = pickle.loads(stdin.read(_HEADER.unpack(head)[0]))
    start_rss, start_cpu, start = _status_kib("VmRSS"), _cpu_s(), time.monotonic()

    def cost() -> tuple:
        peak = max(0, _status_kib("VmHWM") - start_rss) / 1024
        return peak, _cpu_s() - start_cpu, time.monotonic() - start

    out_of_memory = pickle.dumps(("memory", None, [], (job["memory_mib"], 0.0, 0.0)))
    if job["nice"]:
        os.nice(job["nice"])
    _apply_limits(job["memory_mib"], job["cpu_s"])
    caught: list = []
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            data = stdin.read() if job["has_data"] else None
            result = JOBS[job["job"]](data, **job["args"])
            del data
        caught = [(str(w.message), w.category if w.category.__module__ == "builtins" else UserWarning)
                  for w in seen]
        reply = ("ok", result, caught, cost())
    except MemoryError:
        stdout.write(out_of_memory)
        stdout.flush()
        return
    except ReasonSegError as exc:
        fields = {k: getattr(exc, k) for k in ("message", "path", "sample_id", "field", "hint")}
        reply = ("error", (type(exc).__module__, type(exc).__name__, fields), caught, cost())
    except Exception as exc:  # a reader bug on this file: the parent reports it as unreadable, never a traceback
        print(f"reasonseg sandbox: {type(exc).__name__}: {exc}"[:500], file=sys.stderr)
        reply = ("crash", type(exc).__name__, caught, cost())
    try:
        stdout.write(pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL))
    except MemoryError:
        stdout.write(out_of_memory)


if __name__ == "__main__":
    _child_main()
    sys.stdout.flush()
    sys.__stdout__.flush()
    # No interpreter teardown (a tenth of a second with numpy loaded): the parent waits for the pipes to close.
    os._exit(0)
