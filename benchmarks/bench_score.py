"""Time `reasonseg score` against the reference's way and a plain numpy loop, each as a whole process.

Two workloads, each a test-sized synthetic split (779 queries, 1024x768 images):
  standard: the sample release's polygon ground truth; predictions that overlap the targets imperfectly, as RLE
            JSON and as a PNG folder;
  speckled: large many-vertex polygons (a main target of 80-250 vertices and radius 150-300 px, 1-2 more
            targets, an ignore region on half the images); predictions speckled as thresholded low-confidence
            logits give them (1-4% of isolated pixels over a ninth of the image), as RLE JSON. Calibrated so that
            the scorer before the speed work (7a57949) ran it about 5-6x faster than (b) warm, as issue 14 found.
Then, on the same inputs in the same run:
  reference (a): benchmarks/reference_loops.py torch   (decode everything, torch.histc per query)
  numpy (b):     benchmarks/reference_loops.py numpy   (rasterize, decode, boolean ops, one query at a time)
  reasonseg:     `reasonseg score DATA PREDS --split test`, cold (empty ground-truth cache) and warm (cached)
It checks that all three agree on gIoU and cIoU and prints, for each run, its wall time and its CPU time (user +
system of the process and its children, from getrusage), each with its ratio against (b), and its peak RSS.
Times are medians of --repeats rounds, each round running (b), cold, warm and warm without CIs in turn, so that
load changes weigh on all alike (every cold run starts from an empty cache; reference (a) runs once).
Then `--rules all` (the drift table: every scorer's rules from one pass over the masks) against one `--rules lisa`
run, both warm, on the standard workload's predictions and on a copy with every text of every image predicted
(the all-texts profile then measures every mask). Target: `--rules all` <= 1.5x `--rules lisa` (CPU time).
Targets against (b): >= 3x cold, >= 8x warm, peak RSS < 500 MB. The speed targets are judged on CPU time: on a
shared, loaded machine (the development machine: 2 cores, load 4-8) wall time mostly measures the other users'
load and varies by 2x between runs, while CPU time varies by about 10%; wall time is printed beside it, with the
load average. Before timing, the reasonseg package is byte-compiled (as `pip install` does), so that no run pays
for compiling its modules where PYTHONDONTWRITEBYTECODE is set.

Usage: python benchmarks/bench_score.py [--work DIR] [--repeats 3] [--images 779] [--only speckled|rules] [--no-torch]
"""
from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
# Runs the command as its child and reports that child's peak RSS and CPU time (user + system), so the probe's own
# start-up is in neither.
RSS_PROBE = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
             "sys.stdout.write(r.stdout); sys.stderr.write(r.stderr); "
             "u = resource.getrusage(resource.RUSAGE_CHILDREN); "
             "print('RSS_KB', u.ru_maxrss, 'CPU_S', u.ru_utime + u.ru_stime, file=sys.stderr); "
             "sys.exit(r.returncode)")


def build_inputs(work: Path, n_images: int) -> tuple[Path, Path, Path]:
    from reasonseg.dataset import load_split
    from reasonseg.masks import rasterize_shapes
    from reasonseg.sample import write_sample_release
    from reasonseg.schema import TARGET
    from reasonseg.submission import png_name, prediction_from_mask, write_predictions

    data, preds_json, preds_png = work / "release", work / "preds.json", work / "preds_png"
    if not data.exists():
        write_sample_release(data, seed=7, counts={"train": 0, "val": 0, "test": n_images}, size=(768, 1024))
    if preds_json.exists() and preds_png.exists():
        return data, preds_json, preds_png
    rng = np.random.default_rng(0)
    preds_png.mkdir(exist_ok=True)
    predictions = []
    for sample in load_split(data, "test"):
        target = (rasterize_shapes(sample.shapes, sample.height, sample.width) == TARGET).astype(np.uint8)
        # An imperfect model: the target shifted and dilated or eroded, plus a spurious blob; some misses.
        shift = rng.integers(-25, 26, size=2)
        moved = np.roll(target, tuple(shift), axis=(0, 1))
        k = int(rng.integers(1, 15))
        op = cv2.dilate if rng.random() < 0.5 else cv2.erode
        pred = op(moved, np.ones((k, k), np.uint8))
        cx, cy = int(rng.integers(0, sample.width)), int(rng.integers(0, sample.height))
        cv2.circle(pred, (cx, cy), int(rng.integers(10, 80)), 1, -1)
        if rng.random() < 0.05:
            pred[:] = 0
        predictions.append(prediction_from_mask(sample.id, 0, pred))
        cv2.imwrite(str(preds_png / png_name(sample.id, 0)), pred * 255)
    write_predictions(preds_json, predictions, "test", "bench")
    return data, preds_json, preds_png


def blob(rng: np.random.Generator, cx: float, cy: float, radius: float, n: int) -> list[list[float]]:
    """A many-vertex polygon: a wobbly closed curve, as a careful annotator's outline of a large object."""
    theta = np.sort(rng.uniform(0, 2 * np.pi, n))
    wobble = 1 + 0.15 * np.sin(rng.integers(3, 9) * theta + rng.uniform(0, 6)) + rng.normal(0, 0.01, n)
    return np.round(np.stack([cx + radius * wobble * np.cos(theta), cy + radius * wobble * np.sin(theta)], 1),
                    2).tolist()


def build_speckled_inputs(work: Path, n_images: int, height: int = 768, width: int = 1024) -> tuple[Path, Path]:
    """Ground truth of large many-vertex polygons; predictions speckled as thresholded low-confidence logits
    give them: a few percent of isolated pixels over part of the image (JSON RLE only)."""
    from reasonseg.submission import prediction_from_mask, write_predictions

    data, preds_json = work / "release", work / "preds.json"
    if preds_json.exists():
        return data, preds_json
    rng = np.random.default_rng(1)
    (data / "test").mkdir(parents=True, exist_ok=True)
    grey = np.full((height, width, 3), 127, np.uint8)
    predictions = []
    for i in range(n_images):
        sid = f"speckle{i:04d}"
        shapes = [{"label": "target", "points": blob(rng, rng.uniform(300, width - 300), rng.uniform(250, height - 250),
                                                     rng.uniform(150, 300), int(rng.integers(80, 250)))}]
        for _ in range(int(rng.integers(1, 3))):    # more targets: the reference's area ordering runs
            shapes.append({"label": "target", "points": blob(rng, rng.uniform(0, width), rng.uniform(0, height),
                                                             rng.uniform(60, 200), int(rng.integers(40, 120)))})
        if rng.random() < 0.5:
            shapes.append({"label": "ignore", "points": blob(rng, rng.uniform(0, width), rng.uniform(0, height),
                                                             rng.uniform(40, 120), int(rng.integers(20, 80)))})
        ann = {"text": [f"the object {i}"], "is_sentence": bool(i % 2), "shapes": shapes}
        (data / "test" / f"{sid}.json").write_text(json.dumps(ann), encoding="utf-8")
        cv2.imwrite(str(data / "test" / f"{sid}.jpg"), grey)
        y0, x0 = int(rng.integers(0, 2 * height // 3)), int(rng.integers(0, 2 * width // 3))
        pred = np.zeros((height, width), np.uint8)
        region = pred[y0:y0 + height // 3, x0:x0 + width // 3]
        region[rng.random(region.shape) < rng.uniform(0.01, 0.04)] = 1
        predictions.append(prediction_from_mask(sid, 0, pred))
    write_predictions(preds_json, predictions, "test", "speckled")
    return data, preds_json


def run(cmd: list[str], env: dict) -> tuple[float, float, int, str]:
    """Wall seconds, CPU seconds (user + system), peak RSS (KB) and stdout of one command."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", RSS_PROBE, *cmd], capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"command failed: {' '.join(cmd)}\n{proc.stderr}")
    usage = proc.stderr.rsplit("RSS_KB", 1)[1].split()
    return elapsed, float(usage[2]), int(usage[0]), proc.stdout


def reasonseg_metrics(stdout: str) -> tuple[float, float]:
    doc = json.loads(stdout)
    return doc["groups"]["overall"]["giou"], doc["groups"]["overall"]["ciou"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=HERE / "out" / "score")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=779)
    parser.add_argument("--only", choices=("standard", "speckled", "rules"),
                        help="time one workload, or only --rules all against --rules lisa (while iterating)")
    parser.add_argument("--no-torch", action="store_true", help="skip reference (a) (while iterating)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    import reasonseg

    compileall.compile_dir(Path(reasonseg.__file__).parent, quiet=1)
    runs = []       # (workload, predictions label, release, predictions), built only for the workloads timed
    if args.only == "rules":
        data, preds_json, _ = build_inputs(args.work, args.images)
        sys.exit(0 if report_rules_all(data, preds_json, args.repeats) else 1)
    if args.only in (None, "standard"):
        t0 = time.perf_counter()
        data, preds_json, preds_png = build_inputs(args.work, args.images)
        print(f"standard: {args.images} test images 1024x768 in {data} ({time.perf_counter() - t0:.1f}s to build)")
        runs += [("standard", "RLE JSON", data, preds_json), ("standard", "PNG folder", data, preds_png)]
    if args.only in (None, "speckled"):
        t0 = time.perf_counter()
        speckled_data, speckled_json = build_speckled_inputs(args.work / "speckled", args.images)
        print(f"speckled: {args.images} test images 1024x768, many-vertex polygons, speckled predictions, in "
              f"{speckled_data} ({time.perf_counter() - t0:.1f}s to build)")
        runs.append(("speckled", "RLE JSON", speckled_data, speckled_json))
    try:
        import torch  # noqa: F401
        have_torch = not args.no_torch
    except ImportError:
        have_torch = False

    rows, targets, ok = [], [], True
    for workload, label, release, preds in runs:
        results = time_workload(release, preds, args.repeats, have_torch)
        base = results["numpy (b)"]
        ref_g, ref_c = base.metrics
        for name, r in results.items():
            g, c = r.metrics
            agree = abs(g - ref_g) < 1e-9 and abs(c - ref_c) < 1e-6
            ok &= agree
            rows.append((workload, label, name, r, base.wall / r.wall, base.cpu / r.cpu, agree))
        cold, warm = results["reasonseg cold"], results["reasonseg warm"]
        peak_mb = max(cold.rss_kb, warm.rss_kb) / 1024
        if label == "RLE JSON":
            checks = [("cold >= 3x", base.cpu / cold.cpu >= 3), ("warm >= 8x", base.cpu / warm.cpu >= 8),
                      ("peak RSS < 500 MB", peak_mb < 500)]
            targets.append((workload, checks,
                            f"wall: cold {base.wall / cold.wall:.1f}x, warm {base.wall / warm.wall:.1f}x"))

    print(f"\n{'workload':<9} {'predictions':<11} {'run':<24} {'wall s':>7} {'vs (b)':>7} {'CPU s':>7} {'vs (b)':>7} "
          f"{'peak MB':>8} {'gIoU':>9} {'cIoU':>9} agree")
    for workload, label, name, r, wall_ratio, cpu_ratio, agree in rows:
        g, c = r.metrics
        print(f"{workload:<9} {label:<11} {name:<24} {r.wall:7.2f} {wall_ratio:6.1f}x {r.cpu:7.2f} {cpu_ratio:6.1f}x "
              f"{r.rss_kb / 1024:8.0f} {g:9.6f} {c:9.6f} {'yes' if agree else 'NO'}")
    if not have_torch:
        print("(reference (a) skipped: --no-torch, or torch is not installed; `make bench` installs it)")
    load = os.getloadavg()[0]
    for workload, checks, wall in targets:
        print(f"targets ({workload}, RLE JSON, CPU time against (b)): "
              + ", ".join(f"{n}: {'met' if m else 'MISSED'}" for n, m in checks) + f" ({wall}; load {load:.1f})")
    print("all methods agree" if ok else "DISAGREEMENT between methods")
    if args.only in (None, "standard"):
        ok &= report_rules_all(data, preds_json, args.repeats)
    sys.exit(0 if ok else 1)


def every_text(preds_json: Path, data: Path) -> Path:
    """A copy of a text-0 predictions file with the same mask for every text of each image (as an all-texts model
    answers), so that the all-texts rules measure every mask."""
    from reasonseg.dataset import load_split

    out = preds_json.with_name(preds_json.stem + ".all-texts.json")
    if not out.exists():
        n_texts = {s.id: max(len(s.texts), 1) for s in load_split(data, "test")}
        doc = json.loads(preds_json.read_text())
        doc["predictions"] = [{**p, "text_index": k} for p in doc["predictions"] for k in range(n_texts[p["id"]])]
        out.write_text(json.dumps(doc))
    return out


def report_rules_all(data: Path, preds_json: Path, repeats: int) -> bool:
    """`score --rules all` against `score --rules lisa` (warm, interleaved), on text-0 and all-texts predictions;
    prints the ratios and whether the 1.5x target holds (CPU time), and checks the drift's lisa row."""
    reasonseg = str(Path(sys.executable).with_name("reasonseg"))
    cache = Path(tempfile.mkdtemp(prefix="reasonseg-bench-cache-"))
    env = {**os.environ, "REASONSEG_CACHE": str(cache)}
    ok = True
    print(f"\n{'predictions':<22} {'run':<28} {'wall s':>7} {'CPU s':>7} {'vs lisa':>8} {'vs no CIs':>9}")
    for label, preds in (("RLE JSON, text 0", preds_json), ("RLE JSON, every text", every_text(preds_json, data))):
        base = [reasonseg, "score", str(data), str(preds), "--split", "test", "--json"]
        run(base + ["--bootstrap", "0"], env)      # warms the ground-truth cache
        runs: dict[str, list] = {"--rules lisa": [], "--rules lisa --bootstrap 0": [], "--rules all": []}
        for _ in range(repeats):
            for name in runs:
                runs[name].append(run(base + name.split(), env))
        timed = {name: median_timing(t, drift_lisa_metrics if name == "--rules all" else reasonseg_metrics)
                 for name, t in runs.items()}
        lisa, bare, drift = timed["--rules lisa"], timed["--rules lisa --bootstrap 0"], timed["--rules all"]
        agree = max(abs(a - b) for a, b in zip(drift.metrics, lisa.metrics, strict=True)) < 1e-12
        for name, t in timed.items():
            print(f"{label:<22} {name:<28} {t.wall:7.2f} {t.cpu:7.2f} {t.cpu / lisa.cpu:7.2f}x "
                  f"{t.cpu / bare.cpu:8.2f}x")
        met = drift.cpu <= 1.5 * lisa.cpu
        ok &= met and agree
        print(f"target ({label}): --rules all <= 1.5x --rules lisa: {'met' if met else 'MISSED'} "
              f"({drift.cpu / lisa.cpu:.2f}x; {drift.cpu / bare.cpu:.2f}x a run without CIs); "
              f"lisa row {'agrees' if agree else 'DISAGREES'} with the lisa run")
    shutil.rmtree(cache, ignore_errors=True)
    return ok


def drift_lisa_metrics(stdout: str) -> tuple[float, float]:
    row = next(r for r in json.loads(stdout)["rows"] if r["rules"] == "lisa")
    return row["giou"], row["ciou"]


@dataclass(frozen=True)
class Timing:
    wall: float         # seconds, median of the repeats
    cpu: float          # user + system seconds, median of the repeats
    rss_kb: int         # the largest peak RSS of the repeats
    metrics: tuple[float, float]


def median_timing(runs: list[tuple[float, float, int, str]], metrics) -> Timing:
    return Timing(statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs),
                  max(r[2] for r in runs), metrics(runs[-1][3]))


def json_metrics(stdout: str) -> tuple[float, float]:
    doc = json.loads(stdout)
    return doc["giou"], doc["ciou"]


def time_workload(data: Path, preds: Path, repeats: int, have_torch: bool) -> dict[str, Timing]:
    """Wall and CPU time, peak RSS and (gIoU, cIoU) of each way of scoring, on one release and predictions.

    The runs are interleaved, one round of (b), cold, warm and warm without CIs after another, so that a change in
    the machine's load during the benchmark weighs on the baseline and on reasonseg alike."""
    reasonseg = str(Path(sys.executable).with_name("reasonseg"))
    cache = Path(tempfile.mkdtemp(prefix="reasonseg-bench-cache-"))
    env = {**os.environ, "REASONSEG_CACHE": str(cache)}
    score_cmd = [reasonseg, "score", str(data), str(preds), "--split", "test", "--json"]
    loops = [sys.executable, str(HERE / "reference_loops.py")]
    runs: dict[str, list] = {"numpy (b)": [], "reasonseg cold": [], "reasonseg warm": [],
                             "reasonseg warm, no CIs": []}
    for _ in range(repeats):
        runs["numpy (b)"].append(run([*loops, "numpy", str(data), "test", str(preds)], env))
        shutil.rmtree(cache, ignore_errors=True)    # each cold run starts from an empty ground-truth cache
        runs["reasonseg cold"].append(run(score_cmd, env))
        runs["reasonseg warm"].append(run(score_cmd, env))
        runs["reasonseg warm, no CIs"].append(run(score_cmd + ["--bootstrap", "0"], env))
    results = {}
    if have_torch:
        results["reference (a)"] = median_timing([run([*loops, "torch", str(data), "test", str(preds)], env)],
                                                 json_metrics)
    for name, timings in runs.items():
        results[name] = median_timing(timings, json_metrics if name == "numpy (b)" else reasonseg_metrics)
    shutil.rmtree(cache, ignore_errors=True)
    return results


if __name__ == "__main__":
    main()
