"""Benchmark `build reasonseg` on OpenImages-format sources: pairs per second and peak memory.

Compares, in the same run and on the same synthetic source:
- naive: one process, every image fully decoded and re-encoded, masks polygonized with plain contours, every
  sample kept in memory and written at the end (what a first script would do);
- build --workers 1 and --workers 2 (original JPEG bytes copied, header-only sizes, streaming writes).
Peak memory (max RSS, the largest process) is measured in a fresh subprocess per configuration, for 100 and 2000
pairs with --workers 1, to show that it stays flat in the number of pairs.

Usage: .venv/bin/python benchmarks/bench_build.py [--pairs 400] [--memory-pairs 100,2000]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_source(root: Path, n: int) -> tuple[Path, Path]:
    from reasonseg.sample.openimages import manifest_lines, write_manifest_jsonl, write_openimages_source

    oi = write_openimages_source(root / f"oi{n}", seed=5, n_images=n)
    lines = [{**line, "ignore": [], "targets": [t for t in line["targets"] if isinstance(t, str)]}
             for line in manifest_lines(oi)]
    return oi, write_manifest_jsonl(root / f"m{n}.jsonl", lines)


def naive_build(oi: Path, manifest: Path, out: Path) -> int:
    import cv2
    import numpy as np

    from reasonseg.builders.openimages import decode_mask, fit_mask, mask_location, read_location_bytes
    from reasonseg.masks import mask_to_polygons

    kept = []
    for raw in manifest.read_text().splitlines():
        line = json.loads(raw)
        image_path = oi / "images" / line["split"] / f"{line['image_id']}.jpg"
        image = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
        h, w = image.shape[:2]
        target = np.zeros((h, w), bool)
        for mask_path in line["targets"]:
            loc = mask_location(oi / "masks" / line["split"], line["image_id"], mask_path, line["split"])
            target |= fit_mask(decode_mask(read_location_bytes(loc), loc[1]), h, w, loc[1])
        shapes = [{"label": "target", "points": p} for p in mask_to_polygons(target)]
        jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
        kept.append((line["image_id"], jpeg, {"text": line["texts"], "is_sentence": line["is_sentence"],
                                             "shapes": shapes}))
    (out / "test").mkdir(parents=True)
    for name, jpeg, doc in kept:
        (out / "test" / f"{name}.jpg").write_bytes(jpeg)
        (out / "test" / f"{name}.json").write_text(json.dumps(doc))
    return len(kept)


def one(config: str, oi: Path, manifest: Path, out: Path) -> dict:
    """Run one configuration in this (fresh) process; report time and peak RSS."""
    from reasonseg.builders.openimages import OpenImagesLayout
    from reasonseg.builders.release import build_release

    start = time.perf_counter()
    if config == "naive":
        n = naive_build(oi, manifest, out)
    else:
        result = build_release(manifest, out, openimages=OpenImagesLayout(oi), workers=int(config[1:]))
        n = result.report["counts"]["written"]
    seconds = time.perf_counter() - start
    peak_kib = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                   resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return {"config": config, "pairs": n, "seconds": seconds, "peak_mib": peak_kib / 1024}


def run_fresh(config: str, oi: Path, manifest: Path, out: Path) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--one", config, str(oi), str(manifest), str(out)],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=400)
    parser.add_argument("--memory-pairs", default="100,2000")
    parser.add_argument("--one", nargs=4, metavar=("CONFIG", "OI", "MANIFEST", "OUT"))
    args = parser.parse_args()
    if args.one:
        config, oi, manifest, out = args.one
        print(json.dumps(one(config, Path(oi), Path(manifest), Path(out))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        oi, manifest = make_source(root, args.pairs)
        rows = [run_fresh(c, oi, manifest, root / f"out-{c}") for c in ("naive", "w1", "w2")]
        base = rows[0]["pairs"] / rows[0]["seconds"]
        print(f"build throughput, {args.pairs} OpenImages-format pairs (fresh process each):")
        for r in rows:
            rate = r["pairs"] / r["seconds"]
            print(f"  {r['config']:<6} {rate:8.1f} pairs/s  x{rate / base:4.2f} vs naive   "
                  f"peak {r['peak_mib']:7.1f} MiB")
        sizes = [int(s) for s in args.memory_pairs.split(",")]
        mem = []
        for n in sizes:
            src, man = make_source(root, n) if n != args.pairs else (oi, manifest)
            mem.append((n, run_fresh("w1", src, man, root / f"mem-{n}"), run_fresh("naive", src, man,
                                                                                 root / f"memn-{n}")))
        print("peak memory vs number of pairs (workers 1 / naive):")
        for n, built, naive in mem:
            print(f"  {n:>6} pairs: build {built['peak_mib']:7.1f} MiB   naive {naive['peak_mib']:7.1f} MiB")
        (n0, b0, v0), (n1, b1, v1) = mem[0], mem[-1]
        print(f"  growth {n0}->{n1} pairs: build x{b1['peak_mib'] / b0['peak_mib']:.2f}, "
              f"naive x{v1['peak_mib'] / v0['peak_mib']:.2f}")


if __name__ == "__main__":
    main()
