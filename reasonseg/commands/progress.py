"""Progress of long runs, the one implementation every command uses.

On a terminal: a live bar with the count, the rate and the time left. Anywhere else (a SLURM log, CI, a pipe): once a
run has lasted `REASONSEG_PROGRESS_SECONDS` seconds (default 30), a plain line at every tenth of the run and at least
every that many seconds, and a last line with the total; a short run prints nothing.
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Advance = Callable[[int], None]


def _seconds_between_lines() -> float:
    try:
        return max(0.0, float(os.environ.get("REASONSEG_PROGRESS_SECONDS", "30")))
    except ValueError:
        return 30.0


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _amount(n: float, unit: str) -> str:
    if unit != "bytes":
        return f"{n:,.0f}" if n == int(n) else f"{n:,.1f}"
    for name, size in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {name}"
    return f"{n:.0f} B"


class _LogLines:
    """The plain-text reporter: one line per step of the run, written to a stream that is not a terminal."""

    def __init__(self, description: str, total: int | None, unit: str, stream) -> None:
        self.description, self.total, self.unit, self.stream = description, total, unit, stream
        self.done = 0
        self.start = self.last_time = time.monotonic()
        self.step = max(1, total // 10) if total else None
        self.next_count = self.step
        self.every_s = _seconds_between_lines()
        self.printed = False

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.start < self.every_s:
            return
        due_by_count = self.next_count is not None and self.done >= self.next_count
        if due_by_count or (self.every_s and now - self.last_time >= self.every_s):
            self._line(now)
            self.last_time = now
            if self.step:
                while self.next_count <= self.done:
                    self.next_count += self.step

    def _line(self, now: float, final: bool = False) -> None:
        elapsed = now - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        unit = "" if self.unit in ("bytes", "items") else f" {self.unit}"
        count = _amount(self.done, self.unit)
        if self.total:
            count += f"/{_amount(self.total, self.unit)}{unit} ({100 * self.done / self.total:.0f}%)"
        else:
            count += unit
        speed = f"{_amount(rate, self.unit)}/s"
        if final:
            text = f"{self.description}: done, {count} in {_clock(elapsed)} ({speed})"
        else:
            eta = ""
            if self.total and rate > 0 and self.done < self.total:
                eta = f", ETA {_clock((self.total - self.done) / rate)}"
            text = f"{self.description}: {count}, {speed}, elapsed {_clock(elapsed)}{eta}"
        print(text, file=self.stream, flush=True)
        self.printed = True

    def close(self, completed: bool) -> None:
        if completed and self.done and self.printed:
            self._line(time.monotonic(), final=True)


@contextmanager
def progress(description: str, total: int | None, unit: str = "items") -> Iterator[Advance]:
    """Report a run of `total` steps (None: unknown) on stderr. Yields `advance(n=1)`.

    `unit` names what is counted ("bytes" prints sizes). The description is shown as text, never as markup.
    """
    stream = sys.stderr
    if not stream.isatty():
        lines = _LogLines(description, total, unit, stream)
        completed = False
        try:
            yield lines.advance
            completed = True
        finally:
            lines.close(completed)
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from .console import console

    count = DownloadColumn() if unit == "bytes" else MofNCompleteColumn()
    speed = TransferSpeedColumn() if unit == "bytes" else TextColumn("{task.fields[rate]}", markup=False)
    columns = [TextColumn("{task.description}", markup=False), BarColumn(), TaskProgressColumn(), count, speed,
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn()]
    with Progress(*columns, console=console(stderr=True), transient=True) as bar:
        task = bar.add_task(description, total=total, rate="")
        start = time.monotonic()
        state = {"done": 0}

        def advance(n: int = 1) -> None:
            state["done"] += n
            elapsed = time.monotonic() - start
            rate = f"{state['done'] / elapsed:.1f} {unit}/s" if elapsed > 0 else ""
            bar.update(task, advance=n, rate=rate)

        yield advance
