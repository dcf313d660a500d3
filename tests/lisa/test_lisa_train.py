import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from lisa_helpers import TINY, overfit_qa, release, scratch, tiny_model, train_config  # noqa: E402

from reasonseg.dataset import load_split  # noqa: E402
from reasonseg.lisa.infer import LisaPredictor, predict_split  # noqa: E402
from reasonseg.lisa.train import TrainError, export_run, load_config, lr_lambda, train  # noqa: E402


def test_shipped_reference_config_holds_the_paper_defaults():
    config = load_config(None, {"model": "x", "data": {"reasonseg": "y"}})
    assert (config.lr, config.betas, config.weight_decay) == (3e-4, (0.9, 0.95), 0.0)
    assert (config.warmup_steps, config.epochs, config.steps_per_epoch) == (100, 10, 500)
    assert (config.batch_size, config.grad_accumulation, config.grad_clip) == (2, 10, 1.0)
    assert (config.lora.r, config.lora.alpha, config.lora.dropout) == (8, 16, 0.05)
    assert config.lora.targets == ["q_proj", "v_proj"] and config.model_max_length == 512
    assert config.engine == "deepspeed" and config.zero_stage == 2 and config.precision == "bf16"
    assert config.loss == {"ce": 1.0, "bce": 2.0, "dice": 0.5}
    f = lr_lambda(100, 5000)
    assert (f(0), f(50), f(100), f(2550), f(5000), f(6000)) == (0.0, 0.5, 1.0, 0.5, 0.0, 0.0)
    with pytest.raises(TrainError, match="unknown key"):
        load_config(None, {"model": "x", "data": {"reasonseg": "y"}, "learning_rate": 1})


@pytest.mark.slow  # about 1-3 minutes on 2 CPU cores: 160 optimizer steps of batch 4
def test_tiny_model_overfits_four_samples():
    out = scratch("overfit") / "run"
    config = train_config(out, data={"qa": str(overfit_qa()), "reasonseg": None, "val": str(release())},
                          batch_size=4, epochs=1, steps_per_epoch=160, warmup_steps=5, lr=0.003,
                          lora={"dropout": 0.0})
    result = train(config)
    assert result.losses[-1] < result.losses[0] / 10
    assert result.val[-1]["giou"] >= 0.9, result.val


def test_resume_matches_an_uninterrupted_run():
    whole = scratch("whole") / "run"
    train(train_config(whole, epochs=2, steps_per_epoch=2))
    split = scratch("split") / "run"
    first = train(train_config(split, epochs=2, steps_per_epoch=2, max_steps=2))
    assert first.step == 2
    second = train(train_config(split, epochs=2, steps_per_epoch=2))
    assert second.step == 4 and len(second.losses) == 2
    a = torch.load(whole / "checkpoints" / "step_000004" / "trainable.pt", weights_only=True)
    b = torch.load(split / "checkpoints" / "step_000004" / "trainable.pt", weights_only=True)
    assert a.keys() == b.keys() and any("lora_A" in k for k in a)
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6), key


def test_export_reload_predicts_identically_and_fine_tunes():
    run = scratch("exp") / "run"
    train(train_config(run, epochs=1, steps_per_epoch=2))
    exported = export_run(run, run.parent / "exported")
    keys = json.loads((exported / "config.json").read_text())
    assert keys["model_type"] == "llava" and (exported / "clip-vision").is_dir()
    assert keys["reasonseg_seen_splits"] == ["train"]  # what `lisa eval` reads to warn about a seen val
    samples = load_split(release(), "val")
    first = predict_split(LisaPredictor.from_pretrained(exported), samples)
    again = predict_split(LisaPredictor.from_pretrained(exported), samples)
    assert [p.rle for p in first] == [p.rle for p in again]
    # The merged export predicts what the trained (LoRA, unmerged) model predicted.
    from reasonseg.lisa.checkpoint import load_lisa
    from reasonseg.lisa.train import add_lora
    from reasonseg.masks import decode_rle

    loaded = load_lisa(tiny_model("v1"))
    add_lora(loaded.model, train_config(run).lora)
    loaded.model.load_state_dict(torch.load(run / "checkpoints" / "step_000002" / "trainable.pt",
                                            weights_only=True), strict=False)
    loaded.model.eval()
    from reasonseg.lisa.preprocess import ClipPreprocessor

    processor = ClipPreprocessor.from_pretrained(loaded.vision_tower_path)
    unmerged = LisaPredictor(loaded.model, loaded.tokenizer, processor)
    for p, q in zip(first, predict_split(unmerged, samples), strict=True):
        a, b = decode_rle(p.rle), decode_rle(q.rle)
        assert np.mean(a == b) > 0.999
    # Fine-tuning from the exported (released-layout) checkpoint works, and exports again.
    tuned = train(load_config(TINY, {"model": str(exported), "out": str(run.parent / "run2"),
                                     "data": {"reasonseg": str(release()), "val": None}, "epochs": 1,
                                     "steps_per_epoch": 1}))
    assert tuned.step == 1 and np.isfinite(tuned.losses[0])
    assert (export_run(run.parent / "run2", run.parent / "exported2") / "pytorch_model.bin").exists()


def test_deepspeed_zero2_steps_and_resume_on_cpu():
    pytest.importorskip("deepspeed")
    run = scratch("ds") / "run"
    config = train_config(run, engine="deepspeed", epochs=3, steps_per_epoch=1, max_steps=2)
    launcher = {name: os.environ.get(name) for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR",
                                                        "MASTER_PORT")}
    result = train(config)
    assert result.step == 2 and all(np.isfinite(result.losses))
    # One process without a launcher: the variables DeepSpeed needed were this call's only (left behind, a later
    # child process took itself for rank 0 of a launched job on the port this one holds: EADDRINUSE).
    assert {name: os.environ.get(name) for name in launcher} == launcher
    tag = run / "checkpoints" / "step_000002"
    assert (tag / "trainable.pt").exists() and any(tag.glob("*optim_states.pt"))
    resumed = train(train_config(run, engine="deepspeed", epochs=3, steps_per_epoch=1))
    assert resumed.step == 3 and len(resumed.losses) == 1
    assert export_run(run, run.parent / "exported").exists()


CONFIGS = Path(__file__).parents[2] / "reasonseg" / "lisa" / "configs"


def test_shipped_configs_are_the_papers_recipe_and_a_finetune():
    from reasonseg.builders.qa import READERS
    from reasonseg.builders.qa.sources import REFER_ALIAS

    reference = load_config(CONFIGS / "reference.yaml")
    assert reference.model is None and set(reference.base) == {"llava", "sam"}
    assert "sam_vit_h" in reference.base["sam"]
    # The original's default mix: five sem_seg sets, the four refer sets, LLaVA-Instruct, ReasonSeg train.
    assert set(reference.data.sources) == {"ade20k", "cocostuff", "pascal_part", "paco_lvis", "mapillary",
                                           REFER_ALIAS, "llava_instruct", "reason_seg"}
    assert all(name in READERS or name == REFER_ALIAS for name in reference.data.sources)
    data = reference.data
    assert (data.rates, data.per_sample, data.explanatory, data.refer_overlap) == ([9, 3, 3, 1], 3, 0.1, "sum")
    assert (data.reasonseg_split, data.qa, data.reasonseg, data.val_split) == ("train", None, None, "val")
    assert (reference.engine, reference.zero_stage, reference.precision) == ("deepspeed", 2, "bf16")
    assert (reference.batch_size, reference.grad_accumulation, reference.epochs, reference.steps_per_epoch) == \
        (2, 10, 10, 500)
    finetune = load_config(CONFIGS / "finetune.yaml")
    assert finetune.model and finetune.base is None and set(finetune.data.sources) == {"reason_seg"}
    tiny = load_config(CONFIGS / "tiny.yaml", {"data": {"reasonseg": "r"}})
    assert tiny.engine == "torch" and tiny.data.source_specs() == {"reason_seg": "r"}


def test_reference_sources_draw_every_group_from_the_synthetic_tree(tmp_path):
    """reference.yaml's source names and folders, pointed at the synthetic `dataset/` tree, feed the trainer."""
    from reasonseg.lisa.train import open_stream
    from reasonseg.sample.qa_sources import write_qa_sources

    paths = write_qa_sources(tmp_path / "dataset", seed=0, ade20k=3, reason_seg=3, size=(40, 48))
    reference = load_config(CONFIGS / "reference.yaml")
    # Its folders are the reference's `dataset/` tree, where the synthetic writer puts each source.
    assert {name: tmp_path / folder for name, folder in reference.data.sources.items()} == paths
    reference.data.sources = {name: str(tmp_path / folder) for name, folder in reference.data.sources.items()}
    stream = open_stream(reference.data, seed=0)
    recipes = [stream.recipe(k) for k in range(200)]
    assert {r.id.split("/")[0] for r in recipes} >= {"ade20k", "cocostuff", "mapillary", "paco_lvis", "pascal_part",
                                                     "refcoco", "llava_instruct", "reason_seg"}
    assert all(r.image_path.is_file() for r in recipes)
    # The refer masks of an annotation with overlapping polygon parts keep the reference's 2s.
    assert any(r.masks is not None and r.masks.max() == 2 for r in recipes if r.id.startswith("ref"))


def test_bad_data_sections_are_named():
    base = {"model": "x"}
    cases = [
        ({"qa": "q", "sources": {"ade20k": "a"}}, "exclude each other"),
        ({"reasonseg": "r", "sources": {"reason_seg": "r"}}, "given twice"),
        ({}, "no training data"),
        ({"reasonseg": "r", "refer_overlap": "max"}, "refer_overlap"),
        ({"reasonseg": "r", "reasonseg_split": "test"}, "reasonseg_split"),
        ({"reasonseg": "r", "rates": [9, 3, 3]}, "rates"),
        ({"reasonseg": "r", "rates": [1, -1, 1, 1]}, "rates"),
        ({"reasonseg": "r", "explanatory": 2}, "explanatory"),
        ({"sources": ["ade20k"]}, "map source names"),
    ]
    for data, message in cases:
        with pytest.raises(TrainError, match=message):
            load_config(TINY, {**base, "data": data})
