"""Run by test_torchmetrics.py: ReasonSegIoU in two gloo processes, as a DDP validation loop under Lightning would.

Each rank updates the queries a DistributedSampler gives it (padded by repeating the first ones); torchmetrics
synchronises the states in compute(). Every rank writes what compute() and document() returned, and how many rows
it held itself. Usage: torchmetrics_ddp_worker.py RELEASE MASKS.npz OUT_DIR
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD = 2


def worker(rank: int, release: str, masks_path: str, out: str) -> None:
    from reasonseg.integrations.torchmetrics import ReasonSegIoU

    # a rendezvous file in the output folder: no port to find
    dist.init_process_group("gloo", init_method=f"file://{Path(out, 'rendezvous')}", rank=rank, world_size=WORLD)
    with np.load(masks_path) as data:
        masks = {name: data[name] for name in data.files}
    ids = sorted(masks)
    ids += ids[:(-len(ids)) % WORLD]              # DistributedSampler's padding
    metric = ReasonSegIoU(release, split="val", bootstrap=100, cache_dir=None)
    mine = ids[rank::WORLD]
    metric.update(mine[:2], [0, 0], [torch.from_numpy(masks[i]) for i in mine[:2]])   # a batch
    for sid in mine[2:]:
        metric.update(sid, 0, torch.from_numpy(masks[sid]))
    local_rows = len(torch.cat(metric.query))
    numbers = {name: value.item() for name, value in metric.compute().items()}
    document = metric.document()
    Path(out, f"rank{rank}.json").write_text(json.dumps({"numbers": numbers, "document": document,
                                                         "local_rows": local_rows}))
    dist.destroy_process_group()


if __name__ == "__main__":
    torch.set_num_threads(1)
    mp.spawn(worker, args=tuple(sys.argv[1:4]), nprocs=WORLD, join=True)
