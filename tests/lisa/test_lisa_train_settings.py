"""Training settings beyond the reference recipe: `trainable:` groups, `threads:`, wall-clock time in metrics.jsonl,
and `val_every:` (a validation cadence apart from the LR schedule)."""
import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from lisa_helpers import TINY, release, scratch, tiny_model, train_config  # noqa: E402

from reasonseg.lisa.checkpoint import load_lisa  # noqa: E402
from reasonseg.lisa.train import (  # noqa: E402
    TRAINABLE_PREFIXES,
    TrainError,
    add_lora,
    export_run,
    load_config,
    lr_lambda,
    set_trainable,
    train,
)


@functools.cache
def _lora_model():
    """One LoRA-wrapped tiny model for the trainable-set tests (set_trainable sets every parameter's flag)."""
    loaded = load_lisa(tiny_model("v1"))
    add_lora(loaded.model, load_config(TINY, {"model": "x"}, check_data=False).lora)
    return loaded.model


def test_default_trainable_set_is_the_references():
    config = load_config(TINY, {"model": "x"}, check_data=False)
    assert config.trainable == ["reference"]
    model = _lora_model()
    trained = set(set_trainable(model, config.trainable))
    expected = {n for n, _ in model.named_parameters() if "lora_" in n or n.startswith(TRAINABLE_PREFIXES)}
    assert trained == expected
    assert not any(n.startswith(("sam.image_encoder.", "mm_projector.", "vision_tower.")) for n in trained)
    assert not any(n.startswith("llm.model.layers.") and "lora_" not in n for n in trained)


@pytest.mark.parametrize("group,prefix,inside", [("sam_encoder", "sam.image_encoder.", "sam.image_encoder.blocks."),
                                                 ("projector", "mm_projector.", "mm_projector."),
                                                 ("llm", "llm.", "llm.model.layers.")])
def test_each_trainable_group_adds_its_part_and_only_it(group, prefix, inside):
    model = _lora_model()
    reference = set(set_trainable(model, ["reference"]))
    config = load_config(TINY, {"model": "x", "trainable": [group]}, check_data=False)
    assert config.trainable == ["reference", group]       # the reference's set is always trained
    added = set(set_trainable(model, config.trainable)) - reference
    assert any(n.startswith(inside) for n in added) and all(n.startswith(prefix) for n in added)
    assert all(p.requires_grad == (n in reference | added) for n, p in model.named_parameters())
    assert not any(n.startswith("vision_tower.") for n in added)   # CLIP stays frozen in every group


@pytest.mark.parametrize("overrides,message", [
    ({"trainable": ["sam_decoder"]}, "unknown trainable group 'sam_decoder'"),
    ({"threads": 0}, "threads must be a positive integer"),
    ({"threads": "two"}, "threads must be a positive integer"),
    ({"val_every": -1}, "val_every must be a positive integer"),
    ({"max_minutes": 0}, "max_minutes must be a positive number"),
    ({"max_minutes": "soon"}, "max_minutes must be a positive number"),
    ({"model_max_length": 255}, "model_max_length must be an integer above 255"),
])
def test_bad_settings_are_refused_by_name(overrides, message):
    with pytest.raises(TrainError, match=message):
        load_config(TINY, {"model": "x", **overrides}, check_data=False)


def test_trained_groups_change_checkpoint_and_export_while_frozen_parts_stay():
    out = scratch("trainable") / "run"
    config = train_config(out, epochs=1, steps_per_epoch=3, warmup_steps=1, lr=0.01,
                          trainable=["sam_encoder", "projector"])
    train(config)
    state = torch.load(out / "checkpoints" / "step_000003" / "trainable.pt", weights_only=True)
    start = load_lisa(tiny_model("v1")).model.state_dict()
    encoder = [k for k in state if k.startswith("sam.image_encoder.")]
    projector = [k for k in state if k.startswith("mm_projector.")]
    assert encoder and projector and not any(k.startswith("vision_tower.") for k in state)
    assert any(not torch.equal(state[k], start[k]) for k in encoder)      # trained ...
    assert any(not torch.equal(state[k], start[k]) for k in projector)
    exported = load_lisa(export_run(out, scratch("trainable-export") / "model")).model.state_dict()
    for key in encoder + projector:                                       # ... and exported as trained
        assert torch.equal(exported[key], state[key])
    clip = [k for k in start if k.startswith("vision_tower.")]
    assert clip and all(torch.equal(exported[k], start[k]) for k in clip)  # frozen stays as it was


def test_threads_setting_sets_torch_threads():
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    try:
        train(train_config(scratch("threads") / "run", epochs=1, steps_per_epoch=1, warmup_steps=0, threads=wanted))
        assert torch.get_num_threads() == wanted
    finally:
        torch.set_num_threads(before)


def test_metrics_have_wall_clock_time_and_val_every_is_apart_from_the_schedule():
    cadence = scratch("cadence") / "run"
    config = train_config(cadence, epochs=1, steps_per_epoch=4, warmup_steps=1, val_every=2,
                          data={"val": str(release())})
    result = train(config)
    lines = [json.loads(x) for x in (cadence / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in lines if "loss" in x]
    vals = [x for x in lines if x.get("split") == "val"]
    # Validation at every 2nd step (and the epoch's end), with its scores and time; checkpoints at those steps.
    assert [v["step"] for v in vals] == [2, 4] == [v["step"] for v in result.val]
    assert all(0 <= v["giou"] <= 1 and 0 <= v["ciou"] <= 1 for v in vals)
    assert sorted(p.name for p in (cadence / "checkpoints").iterdir() if p.is_dir()) == ["step_000002",
                                                                                          "step_000004"]
    times = [x["elapsed_s"] for x in steps]
    assert all(t > 0 for t in times) and times == sorted(times)
    assert vals[0]["elapsed_s"] >= steps[1]["elapsed_s"]
    # The LR schedule is the same with or without the extra validations: the schedule's own value at each step.
    schedule = lr_lambda(1, 4)
    assert [x["lr"] for x in steps] == [config.lr * schedule(step) for step in range(1, 5)]


def test_max_minutes_ends_the_run_validated_and_checkpointed():
    out = scratch("max-minutes") / "run"
    result = train(train_config(out, epochs=1, steps_per_epoch=50, warmup_steps=1, max_minutes=1e-6,
                           data={"val": str(release())}))
    assert result.step == 1 and [v["step"] for v in result.val] == [1]
    assert (out / "checkpoints" / "step_000001" / "trainable.pt").exists()
    lr = [json.loads(x)["lr"] for x in (out / "metrics.jsonl").read_text().splitlines() if "lr" in x]
    assert len(lr) == 1 and lr[0] > 0      # the schedule still spans the 50 planned steps


_GATHER_RANKS = """
import json, socket, sys
import torch, torch.distributed as dist, torch.multiprocessing as mp
from reasonseg.lisa.train import _gather_step

def rank_main(rank, port, out):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    # Rank 1's clock has passed max_minutes, rank 0's not yet: both must stop after this step. The masks the
    # truncation dropped are summed over the ranks.
    loss, ids, stop, dropped = _gather_step(1.0 + rank, [f"s{rank}"], 2, out_of_time=rank == 1, dropped=rank + 1)
    open(f"{out}/rank{rank}.json", "w").write(json.dumps([loss, ids, stop, dropped]))
    dist.destroy_process_group()

if __name__ == "__main__":
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(rank_main, args=(port, sys.argv[1]), nprocs=2)
"""


def test_every_rank_stops_after_the_step_any_rank_ran_out_of_time(tmp_path):
    script = tmp_path / "ranks.py"
    script.write_text(_GATHER_RANKS)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rank in (0, 1):
        assert json.loads((tmp_path / f"rank{rank}.json").read_text()) == [1.5, [["s0"], ["s1"]], True, 3]
