"""Throughput of `reasonseg rephrase` against the local stand-in server, and the cost of a fully cached rerun.

The stand-in (reasonseg.builders.rephrase.standin), in its own process so that it does not share this one's GIL,
answers every chat-completions request after a fixed latency (50 ms by default), like a remote API. On one
release of N train samples, in the same run:
  first runs at --concurrency 1, 8 and 32 (each on a fresh copy with an empty cache): items per second, and the
  ratio to concurrency 1;
  a fully cached rerun on the release the concurrency-1 run rewrote (every item from the cache, no request), and a
  cached replay into a fresh copy (every item from the cache, every sample file rewritten): ratios of the first run
  at concurrency 1 to each. Target: the cached rerun is at least 50x faster than the first run.

Usage: python benchmarks/bench_rephrase.py [--samples 64] [--latency 0.05] [--work DIR]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from reasonseg.builders.rephrase import RephraseConfig, run_rephrase  # noqa: E402
from reasonseg.dataset import write_manifest  # noqa: E402


def write_release(root: Path, n: int) -> Path:
    folder = root / "train"
    folder.mkdir(parents=True)
    ok, jpeg = cv2.imencode(".jpg", np.full((32, 48, 3), 127, np.uint8))
    for k in range(n):
        text = (f"Which thing in scene {k} would keep you dry in the rain?" if k % 2 == 0
                else f"the object number {k}")
        (folder / f"b{k:04d}.jpg").write_bytes(jpeg.tobytes())
        (folder / f"b{k:04d}.json").write_text(json.dumps({"text": [text], "is_sentence": k % 2 == 0,
                                                           "shapes": []}), encoding="utf-8")
    write_manifest(root, name="bench", version="1")
    return root


def timed_run(root: Path, url: str, cache: Path, concurrency: int):
    config = RephraseConfig(split="train", n=3, model="gpt-3.5-turbo", base_url=url, api_key="bench",
                            cache=cache, concurrency=concurrency, timeout_s=30)
    started = time.perf_counter()
    report = run_rephrase(root, config)
    return time.perf_counter() - started, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.05, help="seconds the server waits per request")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-rephrase-"))
    base = write_release(work / "base", args.samples)
    started = time.perf_counter()
    import openai  # noqa: F401 - imported once per process (the CLI pays it on its first call), not per run

    print(f"{args.samples} train samples, stand-in server latency {args.latency * 1000:.0f} ms per request, "
          f"3 rephrasings asked per sample (one-time `import openai`: {time.perf_counter() - started:.2f} s, "
          "not in the times below)")
    server = subprocess.Popen([sys.executable, "-m", "reasonseg.builders.rephrase.standin", "--latency",
                               str(args.latency)], stdout=subprocess.PIPE, text=True, cwd=HERE.parent)
    try:
        url = server.stdout.readline().strip()
        rows, first = [], {}
        for concurrency in (1, 8, 32):
            root = work / f"c{concurrency}"
            shutil.copytree(base, root)
            seconds, report = timed_run(root, url, work / f"c{concurrency}.sqlite", concurrency)
            assert report.ok == args.samples and report.attempts == args.samples, report
            first[concurrency] = seconds
            rows.append((concurrency, seconds, args.samples / seconds))
        rerun_s, rerun = timed_run(work / "c1", url, work / "c1.sqlite", 1)
        replay_root = work / "replay"
        shutil.copytree(base, replay_root)
        replay_s, replay = timed_run(replay_root, url, work / "c1.sqlite", 1)
        assert rerun.attempts == replay.attempts == 0 and rerun.cached == replay.cached == args.samples
        assert rerun.texts_added == 0 and replay.texts_added == rerun.cached * 3
    finally:
        server.terminate()
        server.wait(timeout=10)
    print(f"{'concurrency':>11} {'seconds':>8} {'items/s':>8} {'vs c=1':>7}")
    for concurrency, seconds, rate in rows:
        print(f"{concurrency:>11} {seconds:>8.3f} {rate:>8.1f} {first[1] / seconds:>6.1f}x")
    print(f"fully cached rerun (no request, no file changed): {rerun_s * 1000:.1f} ms, "
          f"{first[1] / rerun_s:.0f}x faster than the first run at c=1, {first[8] / rerun_s:.0f}x than at c=8")
    print(f"cached replay into a fresh copy (no request, {args.samples} files rewritten): {replay_s * 1000:.1f} ms, "
          f"{first[1] / replay_s:.0f}x faster than the first run at c=1")
    target = first[1] / rerun_s >= 50
    print(f"target cached rerun >= 50x faster than the first run: {'met' if target else 'NOT met'}")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
