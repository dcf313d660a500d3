"""Leaderboard throughput: 20 concurrent uploads of a 779-query RLE submission to a local server process, alone and
beside a mix of hostile uploads.

Three servers on the same inputs, in the same run:
  cached:  `reasonseg leaderboard serve` as shipped: each split's ground truth is loaded once at start-up and kept
  re-read: the same server with --reread-ground-truth: scoring reads the split's annotations again per submission
  hostile: the cached server, with the same honest uploads sent at the same time as the hostile uploads of the
           review (tests/hostile): a zip of four 8192x8192 16-bit RGBA PNGs, a 10^6-prediction JSON (56 MB),
           deeply nested JSON, RLE counts >= 2^63, a 200-megapixel PNG header, a zip of 20000 entries; each twice,
           each from its own team
For each it prints submissions scored per second and p50 / p95 time-to-score of the honest uploads (upload start ->
status done, as seen by the client polling every 20 ms) and the server's peak resident memory (VmHWM), then the
ratios cached / re-read and hostile / cached (the target: honest p95 and peak memory within 1.5x). 20 teams submit
once each, so the rule of one scoring per team does not serialise them; each server scores with its default 2
threads and 1000 bootstrap resamples.

--sandbox-cost measures the sandboxed worker instead (what the default limits are sized from, docs/leaderboard.md):
  reader:  one check of the honest upload (read against the split, matched to its queries) in this process, in a
           warm sandboxed child (started ahead, as the server keeps two), and in a child started for it; with the
           child's peak memory over its start and its CPU time, for the JSON RLE upload and for the same masks as a
           PNG zip, and for scoring the upload (1000 resamples)
  server:  honest upload latency (POST -> 201, one at a time) on a server reading uploads in sandboxed children
           (as shipped) and on one reading them in its own process (Settings.worker_trusted, the old way)

Usage: python benchmarks/bench_leaderboard.py [--work DIR] [--uploads 20] [--images 779] [--sandbox-cost]
"""
from __future__ import annotations

import argparse
import io
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
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "hostile"))   # the hostile files are the regression tests' own


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


def _post(url: str, token: str, data: bytes, filename: str = "preds.json") -> tuple[int, dict]:
    boundary = "benchboundary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="split"\r\n\r\ntest\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="method"\r\n\r\nshifted-gt\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n\r\n'
            ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url + "/api/submissions", data=body, method="POST", headers={
        "Authorization": f"Bearer {token}", "Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def hostile_uploads(release: Path) -> list[tuple[str, bytes]]:
    """(file name, bytes) of each hostile case, with the test split's own ids where a case needs real ones."""
    from upload_helpers import header_only_png, many_predictions, nested_json, predictions_doc, zero_png

    from reasonseg.dataset import load_split
    from reasonseg.submission import png_name

    samples = load_split(release, "test")
    bomb = zero_png(8192, 8192, bit_depth=16, colour_type=6)
    s = samples[0]
    counts = predictions_doc([{"id": s.id, "text_index": 0, "mask": {"size": [s.height, s.width],
                                                                    "counts": [0, 2**63, 1]}}], "test")
    directory = io.BytesIO()
    with zipfile.ZipFile(directory, "w") as archive:
        for n in range(20_000):
            archive.writestr(f"a{n}.png", b"")
    cases = [("bomb.zip", _zip({png_name(x.id, 0): bomb for x in samples[:4]})),
             ("flood.json", many_predictions(1_000_000)),
             ("deep.json", nested_json(200_000)),
             ("counts.json", counts),
             ("header.zip", _zip({png_name(s.id, 0): header_only_png(20_000, 10_000)})),
             ("directory.zip", directory.getvalue())]
    return cases * 2


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buf.getvalue()


def _peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def start_server(work: Path, release: Path, name: str, teams: int, reread: bool = False, trusted: bool = False
                 ) -> tuple[subprocess.Popen, str, list[str]]:
    """A fresh database with `teams` teams and a server process on it: (process, URL, tokens). `trusted` serves
    with Settings.worker_trusted (uploads read in the server's own process: the sandbox's baseline)."""
    db = work / f"{name}.db"
    for path in work.glob(f"{name}.db*"):
        path.unlink()
    cmd = [sys.executable, "-m", "reasonseg.cli"]
    env = {**os.environ, "REASONSEG_CACHE": str(work / "gt-cache")}
    tokens = [subprocess.run([*cmd, "leaderboard", "add-team", f"team {i}", "--db", str(db)], capture_output=True,
                             text=True, check=True, env=env).stdout.strip() for i in range(teams)]
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    args = [*cmd, "leaderboard", "serve", "--data", str(release), "--db", str(db), "--port", str(port)]
    if trusted:
        args = [sys.executable, "-c", "import sys; from reasonseg.leaderboard.app import Settings, serve; "
                f"serve(Settings(data={str(release)!r}, db_url={str(db)!r}, worker_trusted=True), port={port})"]
    log = work / f"{name}.log"
    with open(log, "w") as out:
        server = subprocess.Popen(args + (["--reread-ground-truth"] if reread else []), env=env, stdout=out,
                                  stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while True:
        try:
            _get(url + "/api/health")
            return server, url, tokens
        except (OSError, urllib.error.URLError):
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                raise RuntimeError(f"the server did not start: {log.read_text()[-2000:]}") from None
            time.sleep(0.1)


def run_server(work: Path, release: Path, preds: bytes, uploads: int, reread: bool,
               hostile: list[tuple[str, bytes]] = ()) -> dict:
    name = "reread" if reread else "hostile" if hostile else "cached"
    server, url, tokens = start_server(work, release, name, uploads + len(hostile), reread)
    honest_tokens, hostile_tokens = tokens[:uploads], tokens[uploads:]
    try:
        def one(token: str) -> float:
            start = time.perf_counter()
            code, body = _post(url, token, preds)
            if code != 201:
                raise RuntimeError(f"{name}: an honest upload was refused: {code} {body}")
            while _get(f"{url}/api/submissions/{body['id']}")["status"] not in ("done", "failed"):
                time.sleep(0.02)
            return time.perf_counter() - start

        def attack(job: tuple[str, tuple[str, bytes]]) -> tuple[int, float]:
            token, (filename, data) = job
            start = time.perf_counter()
            code, body = _post(url, token, data, filename)
            if not 400 <= code < 500 or set(body) != {"error"}:
                raise RuntimeError(f"{name}: hostile {filename} got {code} {body}")
            return code, time.perf_counter() - start

        t0 = time.perf_counter()
        with ThreadPoolExecutor(uploads + len(hostile)) as pool:
            refused = pool.map(attack, zip(hostile_tokens, hostile, strict=True))
            times = sorted(pool.map(one, honest_tokens))
            refused = list(refused)
        wall = time.perf_counter() - t0
        statuses = {sub["status"] for i in range(uploads) for sub in
                    _get(f"{url}/api/teams/team%20{i}/submissions")["submissions"]}
        if statuses != {"done"}:
            raise RuntimeError(f"{name}: not every submission was scored: {statuses}")
        peak = _peak_rss(server.pid)
    finally:
        server.terminate()
        server.wait(60)
    return {"name": name, "rate": uploads / wall, "p50": statistics.median(times),
            "p95": times[min(len(times) - 1, int(round(0.95 * (len(times) - 1))))], "wall": wall, "peak": peak,
            "refused": len(refused), "slowest_refusal": max((t for _, t in refused), default=0.0)}


def _median_cost(costs: list) -> str:
    return (f"peak {statistics.median(c.memory_mib for c in costs):6.1f} MiB over the child's start, CPU "
            f"{statistics.median(c.cpu_s for c in costs):5.2f} s")


def sandbox_cost(work: Path, release: Path, preds: bytes, rounds: int) -> None:
    import cv2

    from reasonseg.leaderboard.worker import GroundTruthStore
    from reasonseg.masks import intervals_to_mask
    from reasonseg.sandbox import JOBS, Sandbox
    from reasonseg.submission import Limits, png_name

    store = GroundTruthStore(release, splits=("test",), cache_dir=work / "gt-cache")
    gt = store.kept["test"]
    pngs = _zip({png_name(m.id, 0): cv2.imencode(".png", intervals_to_mask(m.target, m.height, m.width))[1].tobytes()
                 for m in gt.masks.values()})
    check = {"where": "preds", "limits": Limits(), "gt": store.sandbox_source("test")}
    score = {**check, "protocol": "lisa", "bootstrap": 1000, "method": "m"}
    print(f"reader: one {len(gt.masks)}-query upload, median of {rounds} ({os.cpu_count()} CPUs)")
    with Sandbox(warm=1) as warm, Sandbox(warm=0) as cold:
        for label, job, args, data in (("check JSON RLE", "check_upload", check, preds),
                                       ("check PNG zip", "check_upload", check, pngs),
                                       ("score JSON RLE", "score_upload", score, preds)):
            costs, times = [], {"in process": [], "warm child": [], "new child": []}
            for _ in range(rounds):                        # the three ways take turns: load drift weighs on all
                time.sleep(1.0)                            # the next warm child has started, as between uploads
                for way, call in (("in process", lambda: JOBS[job](data, **args)),       # noqa: B023
                                  ("warm child", lambda: costs.append(warm.run_costed(job, args, data)[1])),  # noqa
                                  ("new child", lambda: cold.run(job, args, data))):     # noqa: B023
                    start = time.perf_counter()
                    call()
                    times[way].append(time.perf_counter() - start)
            shown = "   ".join(f"{way} {statistics.median(t):6.3f} s" for way, t in times.items())
            print(f"  {label:15s} {shown}   ({_median_cost(costs)}; {len(data) / 1e6:.1f} MB)")
    store.close()
    # Both servers run at once and take turns, so that the machine's load weighs on both alike.
    servers = {trusted: start_server(work, release, "trusted" if trusted else "sandboxed", rounds,
                                 trusted=trusted)
               for trusted in (False, True)}
    latencies: dict[bool, list[float]] = {False: [], True: []}
    try:
        for n in range(rounds):           # a team per upload: the daily limit is 5
            for trusted, (_, url, tokens) in servers.items():
                start = time.perf_counter()
                code, body = _post(url, tokens[n], preds)
                latencies[trusted].append(time.perf_counter() - start)
                if code != 201:
                    raise RuntimeError(f"an honest upload was refused: {code} {body}")
                time.sleep(1.0)       # its scoring and the next warm child start between uploads, as in use
    finally:
        for server, _, _ in servers.values():
            server.terminate()
            server.wait(60)
    for trusted, times in latencies.items():
        times.sort()
        print(f"  server, uploads read {'in its own process' if trusted else 'in sandboxed children'}: "
              f"POST -> 201 p50 {statistics.median(times):6.3f} s, max {times[-1]:6.3f} s ({rounds} uploads)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=None, help="keep inputs here (default: a temp folder)")
    parser.add_argument("--uploads", type=int, default=20)
    parser.add_argument("--images", type=int, default=779)
    parser.add_argument("--sandbox-cost", action="store_true", help="measure the sandboxed worker instead")
    parser.add_argument("--rounds", type=int, default=5, help="repetitions of each --sandbox-cost measurement")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="reasonseg-bench-lb-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        release, preds_path = build_inputs(work, args.images)
        preds = preds_path.read_bytes()
        if args.sandbox_cost:
            sandbox_cost(work, release, preds, args.rounds)
            return
        hostile = hostile_uploads(release)
        print(f"{args.uploads} concurrent uploads of a {args.images}-query RLE submission "
              f"({len(preds) / 1e6:.1f} MB), 2 scoring threads, {os.cpu_count()} CPUs; hostile mix: {len(hostile)} "
              f"uploads, {sum(len(d) for _, d in hostile) / 1e6:.0f} MB")
        # The two runs compared for the hostile ratio run back to back, so that they share the machine's load.
        cached = run_server(work, release, preds, args.uploads, False)
        mixed = run_server(work, release, preds, args.uploads, False, hostile)
        reread = run_server(work, release, preds, args.uploads, True)
        results = [cached, reread, mixed]
        for r in results:
            print(f"  {r['name']:7s}  {r['rate']:6.2f} submissions/s   time-to-score p50 {r['p50']:6.2f} s   "
                  f"p95 {r['p95']:6.2f} s   (all {args.uploads} in {r['wall']:.1f} s)   "
                  f"server peak RSS {r['peak'] / 2**20:5.0f} MiB")
        print(f"  hostile uploads: {mixed['refused']} refused with a JSON 4xx, the slowest answered in "
              f"{mixed['slowest_refusal']:.1f} s")
        print(f"ratio cached / re-read: {cached['rate'] / reread['rate']:.1f}x submissions/s, "
              f"{reread['p50'] / cached['p50']:.1f}x lower p50, {reread['p95'] / cached['p95']:.1f}x lower p95")
        print(f"ratio hostile mix / honest only: honest p95 time-to-score {mixed['p95'] / cached['p95']:.2f}x, "
              f"server peak RSS {mixed['peak'] / cached['peak']:.2f}x (target: both within 1.5x)")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
