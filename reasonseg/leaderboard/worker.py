"""Background scoring: threads that claim `pending` submissions from the database, score them against ground truth
kept in memory, and store the results document.

An upload is untrusted bytes: it is read and scored again in a sandboxed child process (`reasonseg.sandbox`),
under the same limits as when it was accepted, never in this process; the child reads the split's ground truth from
a pickle the store writes once into a private folder.

The database is the queue. A submission is claimed by an atomic UPDATE (never scored twice), and a worker beats a
heartbeat while it scores, so a claim left by a killed process goes back to `pending`: at start-up when the dead
process ran on this host, otherwise when its heartbeat is older than the lease. Nothing accepted is lost.
"""
from __future__ import annotations

import json
import logging
import os
import pickle
import secrets
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path

from ..errors import ReasonSegError
from ..masks import encode_rle, intervals_to_mask
from ..metrics.groundtruth import GroundTruth, load_ground_truth
from ..metrics.report import TABLE1_COLUMNS
from ..metrics.scoring import split_index
from ..sandbox import Sandbox
from ..submission import Limits, SplitIndex, predictions_document
from .db import Database, SubmissionRow

SERVED_SPLITS = ("val", "test")
PROTOCOL = "lisa"
# Test aggregates leave the server rounded to what the page shows (0.1 on the x100 scale): full precision let one
# crafted submission solve for a hidden target's pixel count (docs/leaderboard.md, "What a score reveals"). Only
# the groups of the paper's table, defined by the public texts, are served: a size class is a property of the
# hidden mask, and a small group would resolve one query finely.
PUBLIC_DIGITS = 3
PUBLIC_TEST_GROUPS = tuple(group for split, group in TABLE1_COLUMNS if split == "test")
LOG = logging.getLogger("reasonseg.leaderboard")


class GroundTruthStore:
    """The ground truth of each served split, loaded once at start-up and kept ready.

    With `reread=True` scoring reads the split again for every submission (the benchmark's baseline); the copy
    kept for checking uploads is still used for that check.
    """

    def __init__(self, data_root: str | os.PathLike, splits: tuple[str, ...] | None = None,
                 cache_dir: str | os.PathLike | None = "default", reread: bool = False):
        self.root = Path(data_root)
        self.reread = reread
        wanted = splits or tuple(s for s in SERVED_SPLITS if (self.root / s).is_dir())
        if not wanted:
            raise ReasonSegError("no val/ or test/ folder to serve", path=str(self.root),
                                 hint="point --data at a ReasonSeg release")
        self.kept: dict[str, GroundTruth] = {s: load_ground_truth(self.root, s, cache_dir=cache_dir) for s in wanted}
        self.indexes: dict[str, SplitIndex] = {s: split_index(gt) for s, gt in self.kept.items()}
        self._lock = threading.Lock()
        self._folder: Path | None = None
        self._pickles: dict[str, str] = {}
        self._honest: dict[str, str] = {}

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.kept)

    def for_checks(self, split: str) -> GroundTruth:
        return self.kept[split]

    def index(self, split: str) -> SplitIndex:
        return self.indexes[split]

    def for_scoring(self, split: str) -> GroundTruth:
        if self.reread:
            return load_ground_truth(self.root, split, cache_dir=None)
        return self.kept[split]

    def sandbox_source(self, split: str, scoring: bool = False) -> str | GroundTruth:
        """Where a sandboxed job reads the split's ground truth: the path of a pickle of the kept copy, written once
        into a private folder; with `reread`, scoring gets the split read again, handed over whole."""
        if scoring and self.reread:
            return self.for_scoring(split)
        with self._lock:
            if split not in self._pickles:
                if self._folder is None:
                    self._folder = Path(tempfile.mkdtemp(prefix="reasonseg-leaderboard-"))   # mode 0700
                path = self._folder / f"{split}.pickle"
                with open(path, "wb") as fh:
                    pickle.dump(self.kept[split], fh, protocol=pickle.HIGHEST_PROTOCOL)
                self._pickles[split] = str(path)
            return self._pickles[split]

    def honest_cost(self, split: str, sandbox: Sandbox, limits: Limits) -> str:
        """What reading the split's largest honest upload (its own ground truth, one mask per text) costs in the
        sandbox, measured once: the yardstick a refused upload is told about."""
        with self._lock:
            known = self._honest.get(split)
        if known is None:
            _, cost = sandbox.run_costed("check_upload", {"where": "honest.json", "limits": limits,
                                                          "gt": self.sandbox_source(split)},
                                         honest_upload(self.kept[split]), where=f"the honest form of {split}")
            known = cost.describe() if cost is not None else "no measurable cost"
            with self._lock:
                self._honest[split] = known
        return known

    def close(self) -> None:
        with self._lock:
            folder, self._folder, self._pickles = self._folder, None, {}
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def honest_upload(gt: GroundTruth) -> bytes:
    """A split's own ground truth as a predictions JSON, one mask per text of each image: the largest honest upload
    the split takes (an honest mask has about as many runs as the target's)."""
    from ..schema import Prediction

    predictions = [Prediction(m.id, k, encode_rle(intervals_to_mask(m.target, m.height, m.width)))
                   for m in gt.masks.values() for k in range(max(len(m.texts), 1))]
    return json.dumps(predictions_document(predictions, gt.split, "honest")).encode()


def rounded(value, digits: int = PUBLIC_DIGITS):
    """Every float inside `value` (dicts, lists) rounded to `digits` decimals; NaN and other types unchanged."""
    if isinstance(value, float):
        return round(value, digits) if value == value else value
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v, digits) for v in value]
    return value


def public_aggregates(sub: SubmissionRow) -> dict | None:
    """A submission's aggregates as served and shown: on test, where no per-query row is public, the table's
    groups only, rounded."""
    if sub.summary is None:
        return None
    if sub.split != "test":
        return sub.summary
    groups = {name: row for name, row in sub.summary.get("groups", {}).items() if name in PUBLIC_TEST_GROUPS}
    return rounded({**sub.summary, "groups": groups})


def public_results(document: dict, with_queries: bool) -> dict:
    """The results document as it may leave the server: no server paths; per-query rows only when asked (val)."""
    out = {k: v for k, v in document.items() if k != "queries" or with_queries}
    out["dataset"] = {k: v for k, v in document.get("dataset", {}).items() if k != "root"}
    return out


# Scoring is background work: its children yield the CPU to the children checking uploads, which a team waits on.
SCORING_NICE = 10


class ScoringWorker:
    def __init__(self, db: Database, store: GroundTruthStore, *, threads: int = 2, bootstrap: int = 1000,
                 lease_s: float = 60.0, poll_s: float = 1.0, limits: Limits = Limits(),
                 sandbox: Sandbox | None = None):
        self.db, self.store = db, store
        self.threads, self.bootstrap = max(1, threads), bootstrap
        self.lease_s, self.poll_s, self.limits = lease_s, poll_s, limits
        self.sandbox = sandbox or Sandbox()
        # host:pid/nonce: the pid tells a restarted server on this host that the old claim's owner is gone.
        self.identity = f"{socket.gethostname()}:{os.getpid()}/{secrets.token_hex(3)}"
        self._active: set[int] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # ----------------------------------------------------------------------------------------------- control

    def start(self) -> list[int]:
        recovered = self.recover()
        for n in range(self.threads):
            thread = threading.Thread(target=self._loop, name=f"reasonseg-scoring-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)
        beat = threading.Thread(target=self._beat, name="reasonseg-heartbeat", daemon=True)
        beat.start()
        self._threads.append(beat)
        return recovered

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()

    def wake(self) -> None:
        self._wake.set()

    def recover(self) -> list[int]:
        """Claims of dead scorers back to `pending`; slots held by validations that never ended given back."""
        self.db.release_interrupted_holds(current=self.identity)
        return self.db.recover_interrupted(self.lease_s, current=self.identity)

    # -------------------------------------------------------------------------------------------------- loops

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                sub = self.db.claim_next(self.identity, self.store.splits)
            except Exception:  # a database hiccup must not end the thread; the next poll retries
                sub = None
                self._stop.wait(self.poll_s)
            if sub is None:
                self._wake.wait(self.poll_s)
                self._wake.clear()
                continue
            with self._lock:
                self._active.add(sub.id)
            try:
                self.score(sub)
            finally:
                with self._lock:
                    self._active.discard(sub.id)
            self._wake.set()   # the team may have more waiting, now claimable

    def _beat(self) -> None:
        period = max(0.2, self.lease_s / 4)
        last_recover = time.monotonic()
        while not self._stop.wait(period):
            try:
                with self._lock:
                    active = sorted(self._active)
                self.db.heartbeat(active, self.identity)
                if time.monotonic() - last_recover > self.lease_s / 2:
                    last_recover = time.monotonic()
                    if self.recover():
                        self.wake()
            except Exception:  # keep beating; a failed beat only shortens the lease once
                pass

    # ----------------------------------------------------------------------------------------------- scoring

    def score(self, sub: SubmissionRow) -> None:
        try:
            args = {"where": sub.filename, "limits": self.limits, "protocol": PROTOCOL, "bootstrap": self.bootstrap,
                    "method": sub.method, "gt": self.store.sandbox_source(sub.split, scoring=True)}
            scored = self.sandbox.run("score_upload", args, self.db.upload_bytes(sub.id), where=sub.filename,
                                      nice=SCORING_NICE,
                                      honest=lambda: self.store.honest_cost(sub.split, self.sandbox, self.limits))
            document = public_results(scored, with_queries=True)
            self.db.finish(sub.id, self.identity, document, public_results(document, with_queries=False))
        except ReasonSegError as exc:
            self.db.fail(sub.id, self.identity, exc.render())
        except Exception as exc:  # a scorer bug must fail this submission, not kill the worker thread
            self.db.fail(sub.id, self.identity, f"internal error while scoring ({type(exc).__name__}); "
                                                "the maintainers have the details in the server log")
            LOG.exception("scoring submission %s failed", sub.id)
