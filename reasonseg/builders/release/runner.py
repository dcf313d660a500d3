"""Run pair jobs in this process or in worker processes, records in job order, a bounded number in flight.

The items are `Job`s or ready records (a problem found while resolving a line): those pass through in place, so
the output keeps the manifest's order either way. Jobs are sent in chunks (one round trip per CHUNK pairs) and
at most `workers * IN_FLIGHT` chunks are queued, so neither the jobs nor the records pile up in memory.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from itertools import islice

CHUNK = 8
IN_FLIGHT = 3

_worker_zips = None


def _run_chunk(items: list) -> list[dict]:
    """In a worker: run the chunk's jobs, keeping archives open for the worker's life."""
    global _worker_zips
    from .openimages import ZipCache
    from .pair import run_job

    if _worker_zips is None:
        _worker_zips = ZipCache()
    return [item if isinstance(item, dict) else run_job(item, _worker_zips) for item in items]


def run_jobs(items: Iterable, workers: int = 1, advance: Callable[[int], None] | None = None,
             chunk: int = CHUNK) -> Iterator[dict]:
    """Records in item order, from this process (`workers` <= 1) or a pool of `workers` processes."""
    from .openimages import ZipCache
    from .pair import run_job

    if workers <= 1:
        zips = ZipCache()
        try:
            for item in items:
                record = item if isinstance(item, dict) else run_job(item, zips)
                if advance:
                    advance(1)
                yield record
        finally:
            zips.close()
        return

    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    import cv2  # noqa: F401  imported before the fork, so that workers inherit them instead of importing each
    import shapely  # noqa: F401

    # fork: workers start at once with the modules already imported (spawn would re-import numpy, OpenCV, ...)
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    pending = iter(items)
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        queue: deque = deque()

        def submit() -> None:
            batch = list(islice(pending, chunk))
            if batch:
                queue.append(pool.submit(_run_chunk, batch))

        try:
            for _ in range(workers * IN_FLIGHT):
                submit()
            while queue:
                records = queue.popleft().result()
                submit()
                for record in records:
                    if advance:
                        advance(1)
                    yield record
        except BaseException:
            for future in queue:
                future.cancel()
            raise
