"""`build qa`: sources -> `qa.jsonl` (+ `build.json`, optional `qa.parquet`), in two modes.

- exhaustive: every target of every item, in order, chunked into records of at most `per_sample` turns.
- lisa: the reference's sampling (`sampler.LisaSampler`, the same draws training makes): record k is draw k of the
  stream with this seed, so `--samples N` is the first N samples a training run with that seed consumes.

Every random choice of a record comes from a generator seeded by (seed, what the record is), never from a shared
stream, so the output does not depend on the number of workers and a rerun writes the same bytes.
"""
from __future__ import annotations

import json
import multiprocessing
import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ...dataset import atomic_write_text
from ...errors import BuildError
from .items import QASourceError, Source
from .records import make_record
from .sampler import LISA_RATES, NUM_PER_SAMPLE, LisaSampler, SamplerOptions, seeded_rng

QA_FILE, BUILD_FILE, PARQUET_FILE = "qa.jsonl", "build.json", "qa.parquet"
FORMAT, VERSION = "reasonseg-qa", 1


@dataclass(frozen=True)
class BuildOptions:
    mode: str = "exhaustive"            # exhaustive | lisa
    per_sample: int = NUM_PER_SAMPLE    # turns per record at most
    samples: int = 1000                 # lisa mode: records to draw
    seed: int = 0
    workers: int = 1
    keep_going: bool = False            # skip bad items (recorded in build.json) instead of stopping
    explanatory: float = 0.1            # ReasonSeg text-only explanation rate; -1 disables explanations
    rates: tuple[float, ...] = LISA_RATES  # group rates of lisa mode, in GROUPS order

    def check(self) -> None:
        if self.mode not in ("exhaustive", "lisa"):
            raise BuildError(f"unknown mode {self.mode!r}; choose exhaustive or lisa", field="mode")
        if self.per_sample < 1 or self.samples < 0 or self.workers < 1:
            raise BuildError("--per-sample and --workers must be at least 1, --samples at least 0")
        self.sampler_options().check()

    def sampler_options(self) -> SamplerOptions:
        return SamplerOptions(tuple(self.rates), self.per_sample, self.explanatory, self.keep_going)


@dataclass
class BuildSummary:
    out: Path
    records: int = 0
    per_source: Counter = field(default_factory=Counter)
    skipped: list[dict] = field(default_factory=list)
    empty: Counter = field(default_factory=Counter)
    redrawn: Counter = field(default_factory=Counter)


# ----------------------------------------------------------------------------------------- tasks (per worker)

_STATE: dict = {}


def _dumps(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


def _load(source: Source, key: str, events: list):
    """The item, or None after recording a skip (keep-going); otherwise the error propagates."""
    try:
        return source.load(key)
    except QASourceError as exc:
        if not _STATE["options"].keep_going:
            raise
        events.append(("skip", source.name, key, exc.render()))
        return None


def _exhaustive_task(task: tuple[str, str]) -> tuple[str, list[str], list]:
    name, key = task
    source, options = _STATE["sources"][name], _STATE["options"]
    events: list = []
    item = _load(source, key, events)
    if item is None:
        return name, [], events
    if item.conversation is not None:
        rng = seeded_rng(options.seed, name, key, 0)
        return name, [_dumps(make_record(source, item, [], rng, f"{name}/{key}/0", options.explanatory))], events
    usable = [t for t in item.targets if not t.empty]
    if not usable:
        events.append(("empty", name, key, ""))
        return name, [], events
    lines = []
    for chunk, start in enumerate(range(0, len(usable), options.per_sample)):
        rng = seeded_rng(options.seed, name, key, chunk)
        targets = usable[start:start + options.per_sample]
        lines.append(_dumps(make_record(source, item, targets, rng, f"{name}/{key}/{chunk}", options.explanatory)))
    return name, lines, events


def _lisa_task(k: int) -> tuple[str, list[str], list]:
    draw = _STATE["sampler"].draw(k)
    return draw.source.name, [_dumps(draw.record())], draw.events


def _guarded(task):
    """A worker's task. Its error comes back as a value, and once a task failed the others return at once: a pool
    that re-raises a worker's error is terminated while workers are mid-task, which can leave it hanging."""
    if _STATE["stop"].is_set():
        return None
    try:
        return _STATE["fn"](task)
    except Exception as exc:  # noqa: BLE001 - handed to the parent, which raises it
        _STATE["stop"].set()
        return exc


def _run(fn: Callable, tasks: list, workers: int) -> Iterable[tuple[str, list[str], list]]:
    if workers <= 1 or len(tasks) < 2:
        yield from map(fn, tasks)
        return
    # Fork: the workers inherit the opened sources (large indexes are not pickled per task).
    context = multiprocessing.get_context("fork")
    _STATE.update(fn=fn, stop=context.Event())
    pool = context.Pool(workers)
    error = None
    try:
        for result in pool.imap(_guarded, tasks, chunksize=max(1, min(64, len(tasks) // (workers * 8) or 1))):
            if isinstance(result, BaseException):
                error = error or result
            elif result is not None and error is None:
                yield result
    finally:
        _STATE["stop"].set()  # the consumer stopped early, or a task failed: the queued tasks return at once
        pool.close()
        pool.join()
    if error is not None:
        raise error


# ------------------------------------------------------------------------------------------------------ build

def build_qa(sources: list[Source], out: str | os.PathLike, options: BuildOptions = BuildOptions(),
             parquet: bool = False, advance: Callable[[int], None] | None = None) -> BuildSummary:
    """Write `qa.jsonl` and `build.json` into `out` (and `qa.parquet` with `parquet`). Returns the counts."""
    options.check()
    if not sources:
        raise BuildError("no source given", hint="pass at least one --source NAME=DIR")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _STATE.update(sources={s.name: s for s in sources}, options=options)
    if options.mode == "exhaustive":
        fn, tasks = _exhaustive_task, [(s.name, key) for s in sources for key in s.keys()]
    else:
        _STATE["sampler"] = LisaSampler(sources, options.sampler_options(), options.seed)
        fn, tasks = _lisa_task, list(range(options.samples))

    summary = BuildSummary(out)
    target = out / QA_FILE
    tmp = out / f".{QA_FILE}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            for name_of, lines, events in _run(fn, tasks, options.workers):
                for line in lines:
                    fh.write(line + "\n")
                summary.per_source[name_of] += len(lines)
                summary.records += len(lines)
                for kind, name, key, reason in events:
                    if kind == "skip":
                        summary.skipped.append({"source": name, "item": key, "reason": reason})
                    else:
                        (summary.empty if kind == "empty" else summary.redrawn)[name] += 1
                if advance:
                    advance(1)
        os.replace(tmp, target)
    finally:
        _STATE.clear()
        if tmp.exists():
            tmp.unlink()
    if parquet:
        from .parquet import write_parquet

        write_parquet(target, out / PARQUET_FILE)
    atomic_write_text(out / BUILD_FILE, json.dumps(build_log(sources, options, summary), indent=1,
                                                   ensure_ascii=False) + "\n")
    return summary


def build_log(sources: list[Source], options: BuildOptions, summary: BuildSummary) -> dict:
    """What `build.json` records: the options, each source's roots (readers resolve images with them), counts."""
    from ... import __version__

    return {
        "format": FORMAT, "version": VERSION, "reasonseg_version": __version__,
        "options": {k: v for k, v in asdict(options).items() if k != "workers"},
        "sources": {s.name: {"group": s.group, "root": str(s.root), "image_root": str(s.image_root), **s.details}
                    for s in sources},
        "records": summary.records,
        "records_per_source": dict(sorted(summary.per_source.items())),
        "skipped": summary.skipped,
        "empty_items": dict(sorted(summary.empty.items())),
        "redrawn_items": dict(sorted(summary.redrawn.items())),
    }
