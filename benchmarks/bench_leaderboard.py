"""Leaderboard throughput: 20 concurrent uploads of a 779-query RLE submission to a local server process.

Two servers on the same inputs, in the same run:
  cached:  `reasonseg leaderboard serve` as shipped: each split's ground truth is loaded once at start-up and kept
  re-read: the same server with --reread-ground-truth: scoring reads the split's annotations again per submission
For each it prints submissions scored per second and p50 / p95 time-to-score (upload start -> status done, as seen
by the client polling every 20 ms), then the ratio cached / re-read. 20 teams submit once each, so the rule of one
scoring per team does not serialise them; each server scores with its default 2 threads and 1000 bootstrap resamples.

Usage: python benchmarks/bench_leaderboard.py [--work DIR] [--uploads 20] [--images 779]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def build_inputs(work: Path, n_images: int) -> tuple[Path, Path]:
    """A synthetic test split of `n_images` and predictions = each target shifted by 6 pixels (imperfect overlap)."""
    from reasonseg.dataset import load_split
    from reasonseg.masks import rasterize_shapes
    from reasonseg.sample import write_sample_release
    from reasonseg.schema import TARGET
    from reasonseg.submission import prediction_from_mask, write_predictions

    release = work / "release"
    if not release.exists():
        write_sample_release(release, counts={"test": n_images}, size=(480, 640))
    preds_path = work / "preds-test.json"
    if not preds_path.exists():
        preds = []
        for sample in load_split(release, "test"):
            target = rasterize_shapes(sample.shapes, sample.height, sample.width) == TARGET
            preds.append(prediction_from_mask(sample.id, 0, np.roll(target, 6, axis=1)))
        write_predictions(preds_path, preds, "test", "shifted-gt")
    return release, preds_path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.loads(response.read())


def _post(url: str, token: str, data: bytes) -> dict:
    boundary = "benchboundary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="split"\r\n\r\ntest\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="method"\r\n\r\nshifted-gt\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="preds.json"\r\n\r\n'
            ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url + "/api/submissions", data=body, method="POST", headers={
        "Authorization": f"Bearer {token}", "Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=300) as response:
        return json.loads(response.read())


def run_server(work: Path, release: Path, preds: bytes, uploads: int, reread: bool) -> dict:
    name = "reread" if reread else "cached"
    db = work / f"{name}.db"
    for path in work.glob(f"{name}.db*"):
        path.unlink()
    cmd = [sys.executable, "-m", "reasonseg.cli"]
    env = {**os.environ, "REASONSEG_CACHE": str(work / "gt-cache")}
    tokens = [subprocess.run([*cmd, "leaderboard", "add-team", f"team {i}", "--db", str(db)], capture_output=True,
                             text=True, check=True, env=env).stdout.strip() for i in range(uploads)]
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    args = [*cmd, "leaderboard", "serve", "--data", str(release), "--db", str(db), "--port", str(port)]
    server = subprocess.Popen(args + (["--reread-ground-truth"] if reread else []), env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                _get(url + "/api/health")
                break
            except (OSError, urllib.error.URLError):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.1)

        def one(token: str) -> float:
            start = time.perf_counter()
            sid = _post(url, token, preds)["id"]
            while _get(f"{url}/api/submissions/{sid}")["status"] not in ("done", "failed"):
                time.sleep(0.02)
            return time.perf_counter() - start

        t0 = time.perf_counter()
        with ThreadPoolExecutor(uploads) as pool:
            times = sorted(pool.map(one, tokens))
        wall = time.perf_counter() - t0
        statuses = {_get(f"{url}/api/submissions/{i}")["status"] for i in range(1, uploads + 1)}
        if statuses != {"done"}:
            raise RuntimeError(f"{name}: not every submission was scored: {statuses}")
    finally:
        server.terminate()
        server.wait(60)
    return {"name": name, "rate": uploads / wall, "p50": statistics.median(times),
            "p95": times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))], "wall": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None, help="keep inputs here (default: a temp folder)")
    parser.add_argument("--uploads", type=int, default=20)
    parser.add_argument("--images", type=int, default=779)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="reasonseg-bench-lb-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        release, preds_path = build_inputs(work, args.images)
        preds = preds_path.read_bytes()
        print(f"{args.uploads} concurrent uploads of a {args.images}-query RLE submission "
              f"({len(preds) / 1e6:.1f} MB), 2 scoring threads, {os.cpu_count()} CPUs")
        results = [run_server(work, release, preds, args.uploads, reread) for reread in (False, True)]
        for r in results:
            print(f"  {r['name']:7s}  {r['rate']:6.2f} submissions/s   time-to-score p50 {r['p50']:6.2f} s   "
                  f"p95 {r['p95']:6.2f} s   (all {args.uploads} in {r['wall']:.1f} s)")
        cached, reread = results
        print(f"ratio cached / re-read: {cached['rate'] / reread['rate']:.1f}x submissions/s, "
              f"{reread['p50'] / cached['p50']:.1f}x lower p50, {reread['p95'] / cached['p95']:.1f}x lower p95")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
