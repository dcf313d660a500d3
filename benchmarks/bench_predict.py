"""grounded-sam throughput with tiny random-initialised models: batch 8 vs batch 1, and SAM image-embedding reuse
(encoder once per image) vs recomputing it for every query. Both ratios come from runs in this same process.

    .venv/bin/python benchmarks/bench_predict.py [--images 16] [--repeats 3] [--device cpu] [--threads 1]

Tiny models make the fixed costs (pre-processing, Python, post-processing) large next to the networks, so these
ratios say how well the pipeline batches and caches, not how fast the published checkpoints run.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: stable on a shared machine)")
    args = parser.parse_args()

    import torch

    from reasonseg.baselines.predict import RunContext, predict_samples, read_rgb
    from reasonseg.baselines.registry import get_method
    from reasonseg.baselines.weights import offline, write_tiny_weights
    from reasonseg.dataset import load_split
    from reasonseg.sample import write_sample_release

    torch.set_num_threads(args.threads)
    offline()
    work = Path(tempfile.mkdtemp(prefix="bench-predict-"))
    release = write_sample_release(work / "release", counts={"test": args.images})
    weights = write_tiny_weights(work / "weights", which=("dino", "sam"))
    samples = load_split(release, "test")
    slots = {"dino": weights["dino"], "sam": weights["sam"]}

    def build(**options):
        return get_method("grounded-sam").build(RunContext(release, None, args.device, slots, options))

    method = build()
    n_lisa = len(samples)
    predict_samples(method, samples[:2], batch_size=8)  # warm-up: first calls allocate
    t1 = best_time(lambda: predict_samples(method, samples, batch_size=1), args.repeats)
    t8 = best_time(lambda: predict_samples(method, samples, batch_size=8), args.repeats)
    print(f"device {args.device}, {args.threads} thread(s), {n_lisa} images, lisa protocol (1 query per image)")
    print(f"grounded-sam batch 1: {n_lisa / t1:7.1f} queries/s")
    print(f"grounded-sam batch 8: {n_lisa / t8:7.1f} queries/s   ratio batch8/batch1 = {t1 / t8:.2f}x")

    n_all = sum(len(s.queries("all-texts")) for s in samples)
    reuse, recompute = build(), build(reuse_embedding="false")
    t_reuse = best_time(lambda: predict_samples(reuse, samples, "all-texts", batch_size=8), args.repeats)
    t_recompute = best_time(lambda: predict_samples(recompute, samples, "all-texts", batch_size=8), args.repeats)
    print(f"all-texts protocol: {n_all} queries on {n_lisa} images ({n_all / n_lisa:.2f} per image)")
    print(f"grounded-sam, embedding reused:     {n_all / t_reuse:7.1f} queries/s")
    print(f"grounded-sam, embedding recomputed: {n_all / t_recompute:7.1f} queries/s   "
          f"ratio reuse/recompute = {t_recompute / t_reuse:.2f}x")

    # The SAM stage alone (the part the cache saves), with the same boxes for every query of an image.
    images = [(s, read_rgb(s), len(s.queries("all-texts"))) for s in samples]
    box = [4.0, 4.0, 40.0, 40.0]

    def sam_stage(segmenter):
        for sample, rgb, k in images:
            for _ in range(k):
                segmenter.set_image(sample.image_path, rgb)
                segmenter.box_mask(box)

    t_sam_reuse = best_time(lambda: sam_stage(reuse.segmenter), args.repeats)
    t_sam_recompute = best_time(lambda: sam_stage(recompute.segmenter), args.repeats)
    print(f"SAM stage only: reuse {n_all / t_sam_reuse:7.1f} queries/s, recompute {n_all / t_sam_recompute:7.1f} "
          f"queries/s   ratio = {t_sam_recompute / t_sam_reuse:.2f}x")


if __name__ == "__main__":
    main()
