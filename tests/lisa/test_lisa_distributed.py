"""Training by several processes: `torchrun -m reasonseg.lisa.train` on CPU (gloo, DeepSpeed ZeRO-2) against one
process with the same global batch, on fresh draws from the synthetic sources; resume across ranks; export."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from lisa_helpers import TINY, release, scratch, tiny_model  # noqa: E402

from reasonseg.lisa.train import SAMPLES_FILE, export_run  # noqa: E402

# Same samples, same global batch: only the order of floating-point sums differs (a 2-rank all-reduce against
# one rank's accumulation), so the losses agree to far better than this.
LOSS_RTOL = 1e-4
WEIGHT_ATOL = 1e-5


def _sources() -> dict:
    from reasonseg.sample.qa_sources import write_qa_sources

    paths = write_qa_sources(scratch("dist-sources") / "dataset", seed=0, ade20k=3, reason_seg=3, size=(40, 48))
    return {k: str(paths[k]) for k in ("ade20k", "mapillary", "refer_seg", "llava_instruct", "reason_seg")}


def _config(folder: Path, name: str, sources: dict, **overrides) -> Path:
    config = yaml.safe_load(TINY.read_text())
    config.update({"model": str(tiny_model("v1")), "out": str(folder / "run"), "engine": "deepspeed",
                   "epochs": 2, "steps_per_epoch": 2, "warmup_steps": 1, "lr": 0.003, "batch_size": 2,
                   "lora": {"dropout": 0.0}, "threads": 1, **overrides})
    config["data"] = {"sources": sources, "val": None}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _run(args: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]


def _torchrun(config: Path) -> None:
    _run(["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "reasonseg.lisa.train",
          "--config", str(config)])


def _lines(run: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (run / name).read_text().splitlines() if '"split"' not in line]


@pytest.mark.slow  # about 1-2 minutes on 2 CPU cores: three launches of a tiny model
def test_two_ranks_match_one_rank_resume_and_export():
    pytest.importorskip("deepspeed")
    sources = _sources()
    one = scratch("one-rank")
    # One process, 2 micro-batches of 2 per step == two processes, 1 micro-batch of 2 each: global batch 4.
    _run(["-m", "reasonseg.lisa.train", "--config", str(_config(one, "one", sources, grad_accumulation=2))])
    two = scratch("two-ranks")
    _torchrun(_config(two, "first", sources, grad_accumulation=1, max_steps=2))
    assert [m["step"] for m in _lines(two / "run", "metrics.jsonl")] == [1, 2]
    _torchrun(_config(two, "rest", sources, grad_accumulation=1))   # resumes from step 2 on both ranks

    a, b = _lines(one / "run", "metrics.jsonl"), _lines(two / "run", "metrics.jsonl")
    assert [m["step"] for m in a] == [m["step"] for m in b] == [1, 2, 3, 4]
    for x, y in zip(a, b, strict=True):
        assert y["loss"] == pytest.approx(x["loss"], rel=LOSS_RTOL), (a, b)
    assert len({round(m["loss"], 6) for m in a}) > 1   # the model learns: the trajectory is not flat

    # Each rank trains on its own samples; together they are exactly the one process's samples, step by step.
    one_samples, two_samples = _lines(one / "run", SAMPLES_FILE), _lines(two / "run", SAMPLES_FILE)
    for x, y in zip(one_samples, two_samples, strict=True):
        (single,), (rank0, rank1) = x["samples"], y["samples"]
        assert len(rank0) == len(rank1) == 2 and not set(rank0) & set(rank1)
        assert rank0 + rank1 == single
    assert len({s for x in one_samples for s in x["samples"][0]}) == 16   # 4 steps x 4 distinct draws

    # Same weights at the end (the resumed 2-rank run restored optimizer partitions and the schedule).
    wa = torch.load(one / "run" / "checkpoints" / "step_000004" / "trainable.pt", weights_only=True)
    wb = torch.load(two / "run" / "checkpoints" / "step_000004" / "trainable.pt", weights_only=True)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.allclose(wa[key], wb[key], atol=WEIGHT_ATOL), key
    assert sorted(p.name for p in (two / "run" / "checkpoints" / "step_000004").glob("*optim_states.pt"))[-1] \
        .startswith("zero_pp_rank_1")   # ZeRO-2: each rank saved its optimizer partition

    exported = export_run(two / "run", two / "exported")
    doc = json.loads((exported / "config.json").read_text())
    assert doc["model_type"] == "llava" and doc["reasonseg_seen_splits"] == ["train"]
    from reasonseg.dataset import load_split
    from reasonseg.lisa.infer import LisaPredictor, predict_split

    predictions = predict_split(LisaPredictor.from_pretrained(exported), load_split(release(), "val")[:2])
    assert len(predictions) == 2
