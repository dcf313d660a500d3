"""Benchmark `build reasonseg` on OpenImages-format sources: pairs per second and peak memory.

Compares, in the same run and on the same synthetic source, configurations that write the same release byte for
byte (checked at the end of the run):
- naive: `reasonseg.builders.release.naive.naive_build`: one process, every image and every mask fully decoded at full
  size, no reuse of decoded masks or zip indexes between pairs, whole-image polygons and fidelity check, every
  record in memory, the manifest made by reading the release back;
- w1, w2: `build_release` with --workers 1 and 2 (decode only what is needed, crop-sized fidelity check, original
  JPEG bytes, streaming manifest and report, a process pool fed in chunks).
Each configuration runs in a fresh subprocess, --repeats times (the best time is kept: the machine is shared).
Peak memory (peak RSS of the largest process: VmHWM of the build process, ru_maxrss of its workers) is measured
for 100 and 2000 pairs, to show whether it stays flat in the number of pairs.

Usage: .venv/bin/python benchmarks/bench_build.py [--pairs 1218] [--repeats 3] [--memory-pairs 100,2000]
"""
from __future__ import annotations

import argparse
import json
import os
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


def own_peak_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def one(config: str, oi: Path, manifest: Path, out: Path) -> dict:
    """Run one configuration in this (fresh) process; report time and peak RSS."""
    from reasonseg.builders.release.build import build_release
    from reasonseg.builders.release.naive import naive_build
    from reasonseg.builders.release.openimages import OpenImagesLayout

    cpu_before = [u.ru_utime + u.ru_stime for u in (resource.getrusage(resource.RUSAGE_SELF),
                                                    resource.getrusage(resource.RUSAGE_CHILDREN))]
    start = time.perf_counter()
    if config == "naive":
        n = naive_build(manifest, out, openimages=OpenImagesLayout(oi))["counts"]["written"]
    else:
        result = build_release(manifest, out, openimages=OpenImagesLayout(oi), workers=int(config[1:]))
        n = result.summary["counts"]["written"]
    seconds = time.perf_counter() - start
    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    # VmHWM, not ru_maxrss, for this process: Linux carries ru_maxrss over exec from the forking parent (here the
    # benchmark, which made the sources), which would hide this process's own peak. Workers' ru_maxrss is theirs.
    peak_kib = max(own_peak_kib(), usage[1].ru_maxrss)
    cpu_main = usage[0].ru_utime + usage[0].ru_stime - cpu_before[0]
    cpu_workers = usage[1].ru_utime + usage[1].ru_stime - cpu_before[1]
    return {"config": config, "pairs": n, "seconds": seconds, "cpu": cpu_main + cpu_workers, "cpu_main": cpu_main,
            "peak_mib": peak_kib / 1024}


def run_fresh(config: str, oi: Path, manifest: Path, out: Path) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--one", config, str(oi), str(manifest), str(out)],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def same_release(a: Path, b: Path) -> bool:
    def files(root: Path) -> dict[str, bytes]:
        return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
    return files(a) == files(b)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=1218)  # ReasonSeg's size
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-pairs", default="100,2000")
    parser.add_argument("--one", nargs=4, metavar=("CONFIG", "OI", "MANIFEST", "OUT"))
    args = parser.parse_args()
    if args.one:
        config, oi, manifest, out = args.one
        print(json.dumps(one(config, Path(oi), Path(manifest), Path(out))))
        return
    configs = ("naive", "w1", "w2")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        oi, manifest = make_source(root, args.pairs)
        best: dict[str, dict] = {}
        for k in range(args.repeats):  # interleaved, so a burst of load elsewhere hits every configuration
            for c in configs:
                r = run_fresh(c, oi, manifest, root / f"out-{c}-{k}")
                if c not in best or r["seconds"] < best[c]["seconds"]:
                    best[c] = r
        identical = all(same_release(root / "out-naive-0", root / f"out-{c}-0") for c in configs[1:])
        base = best["naive"]["pairs"] / best["naive"]["seconds"]
        load = os.getloadavg()[0]
        print(f"build throughput, {args.pairs} OpenImages-format pairs (fresh process each, best of "
              f"{args.repeats}; {os.cpu_count()} CPUs, load average {load:.1f} at the end):")
        for c in configs:
            r = best[c]
            rate = r["pairs"] / r["seconds"]
            print(f"  {c:<6} {rate:8.1f} pairs/s  x{rate / base:4.2f} vs naive   "
                  f"cpu {1000 * r['cpu'] / r['pairs']:5.2f} ms/pair "
                  f"({1000 * r['cpu_main'] / r['pairs']:4.2f} in the main process)   "
                  f"peak {r['peak_mib']:7.1f} MiB")
        print(f"  releases byte-identical across configurations: {identical}")
        sizes = [int(s) for s in args.memory_pairs.split(",")]
        mem = []
        for n in sizes:
            src, man = make_source(root, n) if n != args.pairs else (oi, manifest)
            mem.append((n, {c: run_fresh(c, src, man, root / f"mem-{c}-{n}") for c in configs}))
        print("peak memory vs number of pairs:")
        for n, by in mem:
            print(f"  {n:>6} pairs: " + "   ".join(f"{c} {by[c]['peak_mib']:7.1f} MiB" for c in configs))
        (n0, m0), (n1, m1) = mem[0], mem[-1]
        print(f"  growth {n0}->{n1} pairs: " + ", ".join(
            f"{c} x{m1[c]['peak_mib'] / m0[c]['peak_mib']:.2f}" for c in configs))


if __name__ == "__main__":
    main()
