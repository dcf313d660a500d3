"""Run by test_metric.py: score a split with ReasonSegMetric in two gloo processes, as a DDP validation loop.

Each rank takes the queries DistributedSampler would give it (padded by repeating the first ones), and every
rank writes what compute() returned after the all-gather. Usage: ddp_worker.py RELEASE MASKS.npz OUT_DIR
"""
import json
import socket
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2


def worker(rank: int, port: int, release: str, masks_path: str, out: str) -> None:
    import reasonseg

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    with np.load(masks_path) as data:
        masks = {(name.rsplit("__", 1)[0], int(name.rsplit("__", 1)[1])): data[name] for name in data.files}
    keys = sorted(masks)
    keys += keys[:(-len(keys)) % WORLD]          # DistributedSampler's padding
    metric = reasonseg.ReasonSegMetric(release, split="val", bootstrap=100, cache_dir=None)
    for sid, k in keys[rank::WORLD]:
        metric.update(sid, k, torch.from_numpy(masks[sid, k]))
    doc = metric.compute()
    Path(out, f"rank{rank}.json").write_text(json.dumps(doc))
    Path(out, f"rank{rank}.local.json").write_text(json.dumps(len(metric)))
    dist.destroy_process_group()


if __name__ == "__main__":
    torch.set_num_threads(1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free_port = s.getsockname()[1]
    mp.spawn(worker, args=(free_port, *sys.argv[1:4]), nprocs=WORLD, join=True)
