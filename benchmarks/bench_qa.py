"""Time `build qa` on an ADE20K-format source against a naive loop, each as a whole process, in the same run.

Writes a synthetic ADEChallengeData2016 folder (2000 images of 384x512, 8 objects each, values 0..150), then:
  naive:      for every image, for every class present: decode the label PNG again and encode the class mask
              (and the ignore mask) from scratch; one JSON line per class mask — no reuse of any kind
  reasonseg:  build_qa(mode=exhaustive, per_sample=3), 1 and 2 worker processes
  flat:       reasonseg, 1 worker, on a 500-image folder (peak memory must not grow with the image count)
It checks that the naive loop and reasonseg produce the same masks, and prints masks per second, the ratio
against the naive loop, and each process's peak RSS (for 2 workers, the largest single process).

Usage: python benchmarks/bench_qa.py [--work DIR] [--images 2000] [--repeats 1]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RSS_PROBE = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
             "sys.stdout.write(r.stdout); sys.stderr.write(r.stderr); "
             "print('RSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
             "sys.exit(r.returncode)")


def naive(src: Path, out: Path) -> int:
    import numpy as np
    from PIL import Image

    from reasonseg.builders.qa.ade20k import read_class_names
    from reasonseg.masks import encode_rle

    names = read_class_names(src)
    masks = 0
    with open(out, "w", encoding="utf-8") as fh:
        for image in sorted((src / "images" / "training").glob("*.jpg")):
            label_path = src / "annotations" / "training" / f"{image.stem}.png"
            values = [int(v) for v in np.unique(np.asarray(Image.open(label_path))) if v != 0]
            for v in values:
                label = np.asarray(Image.open(label_path))
                record = {"id": f"{image.stem}/{v}", "target": names[v], "mask": encode_rle(label == v),
                          "ignore": encode_rle(label == 0) if (label == 0).any() else None}
                fh.write(json.dumps(record) + "\n")
                masks += 1
    return masks


def ours(src: Path, out: Path, workers: int) -> int:
    from reasonseg.builders.qa import BuildOptions, build_qa, open_sources

    build_qa(open_sources({"ade20k": src}), out, BuildOptions(workers=workers))
    return sum(len(json.loads(line)["masks"]) for line in open(out / "qa.jsonl", encoding="utf-8"))


def run_one(args) -> None:
    start = time.perf_counter()
    masks = naive(args.src, args.out) if args.what == "naive" else ours(args.src, args.out, args.workers)
    print(json.dumps({"masks": masks, "seconds": time.perf_counter() - start}))


def measure(what: str, src: Path, out: Path, workers: int = 1) -> dict:
    cmd = [sys.executable, "-c", RSS_PROBE, sys.executable, __file__, "--one", what, "--src", str(src),
           "--out", str(out), "--workers", str(workers)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=True)
    row = json.loads(result.stdout.strip().splitlines()[-1])
    row["rss_mb"] = int(result.stderr.split("RSS_KB")[-1].split()[0]) / 1024
    return row


def same_masks(naive_file: Path, qa_dir: Path) -> bool:
    expected = {}
    for line in open(naive_file, encoding="utf-8"):
        rec = json.loads(line)
        expected[(rec["id"].split("/")[0], rec["target"])] = rec["mask"]["counts"]
    got = {}
    for line in open(qa_dir / "qa.jsonl", encoding="utf-8"):
        rec = json.loads(line)
        for name, mask in zip(rec["targets"], rec["masks"], strict=True):
            got[(rec["id"].split("/")[1], name)] = mask["counts"]
    return got == expected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--one", dest="what")
    parser.add_argument("--src", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    if args.what:
        run_one(args)
        return
    from reasonseg.sample.qa_sources import write_ade20k

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-qa-"))
    big, small = work / f"ade-{args.images}", work / "ade-500"
    for folder, count in ((big, args.images), (small, 500)):
        if not (folder / "objectInfo150.txt").is_file():
            write_ade20k(folder, seed=0, count=count, size=(384, 512), objects=8)
    print(f"ADE20K-format source: {args.images} images of 384x512, 8 objects each ({work})")
    rows = {}
    for _ in range(args.repeats):
        for key, what, src, workers in (("naive loop", "naive", big, 1), ("reasonseg, 1 worker", "ours", big, 1),
                                        ("reasonseg, 2 workers", "ours", big, 2),
                                        ("reasonseg, 1 worker, 500 images", "ours", small, 1)):
            out = work / f"out-{key.replace(' ', '').replace(',', '-')}"
            if what == "naive":
                out = out.with_suffix(".jsonl")
            row = measure(what, src, out, workers)
            best = rows.get(key)
            if best is None or row["seconds"] < best["seconds"]:
                rows[key] = {**row, "out": out}
    base = rows["naive loop"]
    print(f"{'run':34s} {'masks':>7s} {'seconds':>8s} {'masks/s':>9s} {'vs naive':>9s} {'peak RSS MB':>12s}")
    for key, row in rows.items():
        rate = row["masks"] / row["seconds"]
        ratio = rate / (base["masks"] / base["seconds"])
        print(f"{key:34s} {row['masks']:7d} {row['seconds']:8.2f} {rate:9.0f} {ratio:8.2f}x {row['rss_mb']:12.0f}")
    print("masks identical to the naive loop:", same_masks(base["out"], rows["reasonseg, 1 worker"]["out"]))
    print("2 workers write the same bytes as 1:",
          (rows["reasonseg, 1 worker"]["out"] / "qa.jsonl").read_bytes()
          == (rows["reasonseg, 2 workers"]["out"] / "qa.jsonl").read_bytes())
    print(f"peak RSS, 500 vs {args.images} images: {rows['reasonseg, 1 worker, 500 images']['rss_mb']:.0f} MB vs "
          f"{rows['reasonseg, 1 worker']['rss_mb']:.0f} MB")
    print(f"cpu count: {os.cpu_count()}")


if __name__ == "__main__":
    main()
