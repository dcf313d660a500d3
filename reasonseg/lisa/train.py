"""Training: LoRA on the LLM plus the trainable parts of docs/protocol.md §5, a plain PyTorch loop or DeepSpeed ZeRO-2.

Trainable: LoRA (r 8, alpha 16, dropout 0.05 on q_proj/v_proj of the LLM only), `embed_tokens`, `lm_head`,
`text_hidden_fcs`, SAM's mask decoder. Frozen: CLIP, projector, SAM image and prompt encoders, the rest of the LLM.
`trainable:` adds frozen parts by name (`sam_encoder`, `projector`, `llm`: what a model trained from random weights
may need); `threads:` sets torch's CPU threads; `val_every:` validates every N steps, apart from the LR schedule;
`max_minutes:` ends the run (validated and checkpointed) after that much wall-clock time.
AdamW (lr 3e-4, betas 0.9/0.95, no weight decay), linear warmup then linear decay to 0 over epochs x steps_per_epoch
optimizer steps (DeepSpeed's WarmupDecayLR formula), gradient accumulation, clipping 1.0.

A run folder holds `config.yaml`, `metrics.jsonl` and `checkpoints/<tag>/` with `trainable.pt` (the trainable
tensors by model key, LoRA unmerged: what `export` reads, whatever the engine), `state.pt` (optimizer, scheduler,
step, RNG; torch engine) or DeepSpeed's own files, and `latest` / `best` (by val gIoU) naming a tag. Batches are
drawn from (seed, rank, step, micro-step) alone, so a resumed run sees the batches an uninterrupted one would.

Launch: `reasonseg lisa train --config FILE` (one process) or `deepspeed -m reasonseg.lisa.train --config FILE` /
`torchrun --nproc_per_node N -m reasonseg.lisa.train --config FILE` (several; gloo on CPU, nccl on GPU).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from ..errors import ReasonSegError
from .config import TRUNCATION_RESERVE
from .loss import LossWeights, lisa_loss

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "reference.yaml"
SAMPLES_FILE = "samples.jsonl"   # per step: the sample ids each rank trained on


class TrainError(ReasonSegError):
    """A training configuration or run folder cannot be used."""


@dataclass
class DataConfig:
    # Fresh draws (the reference's way): source name -> folder, the names of `build qa --source`.
    sources: dict | None = None
    images: dict | None = None           # source -> image folder, where the reference tree does not put them
    rates: list[float] = field(default_factory=lambda: [9, 3, 3, 1])   # sem_seg, refer_seg, vqa, reason_seg
    per_sample: int = 3                  # questions (classes, sentences) per sample at most
    explanatory: float = 0.1             # ReasonSeg text-only explanation rate; -1: no explanations
    refer_splits: list[str] = field(default_factory=lambda: ["train"])
    refer_overlap: str = "sum"           # sum: the reference (2 where polygon parts overlap); clip: 0/1
    keep_going: bool = False             # a bad item is skipped and redrawn instead of stopping the run
    # A fixed set of `build qa` (qa.jsonl + build.json), alone or mixed with fresh ReasonSeg draws.
    qa: str | None = None
    qa_image_roots: dict | None = None   # source -> image folder, when the images moved since `build qa`
    reasonseg: str | None = None         # ReasonSeg release root: the `reason_seg` source
    reasonseg_split: str = "train"       # train, or train_val (what the released v1 models were trained on)
    reasonseg_rate: float = 0.0625       # with `qa`: the share of samples that are fresh ReasonSeg draws
    val: str | None = None
    val_split: str = "val"

    def source_specs(self) -> dict[str, str]:
        """The sources of fresh draws: `sources`, plus `reasonseg` as the `reason_seg` source."""
        specs = dict(self.sources or {})
        if self.reasonseg:
            specs["reason_seg"] = self.reasonseg
        return specs


@dataclass
class LoraSettings:
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])


@dataclass
class TrainConfig:
    model: str | None = None
    base: dict | None = None
    vision_tower: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    out: str = "runs/lisa"
    engine: str = "torch"
    zero_stage: int = 2
    precision: str = "bf16"
    device: str = "cuda"
    lr: float = 3e-4
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.0
    warmup_steps: int = 100
    epochs: int = 10
    steps_per_epoch: int = 500
    batch_size: int = 2
    grad_accumulation: int = 10
    grad_clip: float = 1.0
    model_max_length: int = 512
    lora: LoraSettings = field(default_factory=LoraSettings)
    loss: dict = field(default_factory=lambda: {"ce": 1.0, "bce": 2.0, "dice": 0.5})
    gradient_checkpointing: bool = False
    val_batch_size: int = 4
    seed: int = 42
    max_steps: int | None = None      # stop after this many optimizer steps (the schedule still spans the run)
    trainable: list[str] = field(default_factory=lambda: ["reference"])  # TRAINABLE_GROUPS to train
    threads: int | None = None        # torch CPU threads (None: torch's default); 1 on a shared small CPU
    val_every: int | None = None      # also validate (and checkpoint) every N optimizer steps, whatever the epochs
    max_minutes: float | None = None  # stop (validated, checkpointed) once this much wall-clock time has passed

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


def _build(cls, doc: dict, where: str):
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise TrainError(f"unknown key(s) {', '.join(unknown)}", path=where, hint=f"known: {', '.join(sorted(known))}")
    return cls(**doc)


def load_config(path: str | os.PathLike | None = None, overrides: dict | None = None,
                check_data: bool = True) -> TrainConfig:
    """A `TrainConfig` from YAML (defaults: the shipped reference recipe), with dotted-free overrides on top.
    `check_data` opens the QA set (cheap: no record is read) so a wrong folder fails before the model loads."""
    import yaml

    path = Path(path) if path else DEFAULT_CONFIG
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise TrainError(f"cannot read the config ({exc})", path=str(path)) from None
    doc.update(overrides or {})
    data = _build(DataConfig, doc.pop("data", None) or {}, f"{path}: data")
    lora = _build(LoraSettings, doc.pop("lora", None) or {}, f"{path}: lora")
    config = _build(TrainConfig, {**doc, "data": data, "lora": lora}, str(path))
    config.betas = tuple(config.betas)
    config.trainable = trainable_groups(config.trainable, str(path))
    for key in ("threads", "val_every"):
        value = getattr(config, key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise TrainError(f"{key} must be a positive integer or null, got {value!r}", path=str(path), field=key)
    if config.max_minutes is not None and (isinstance(config.max_minutes, bool)
                                           or not isinstance(config.max_minutes, (int, float))
                                           or not config.max_minutes > 0):
        raise TrainError(f"max_minutes must be a positive number or null, got {config.max_minutes!r}",
                         path=str(path), field="max_minutes")
    if isinstance(config.model_max_length, bool) or not isinstance(config.model_max_length, int) \
            or config.model_max_length <= TRUNCATION_RESERVE:
        raise TrainError(f"model_max_length must be an integer above {TRUNCATION_RESERVE} (the reference keeps "
                         f"model_max_length - {TRUNCATION_RESERVE} text ids), got {config.model_max_length!r}",
                         path=str(path), field="model_max_length")
    if config.engine not in ("torch", "deepspeed"):
        raise TrainError(f"unknown engine {config.engine!r} (torch or deepspeed)", path=str(path), field="engine")
    if not config.model and not config.base:
        raise TrainError("give `model` (a released-layout folder) or `base` ({llava, sam})", path=str(path))
    check_data_config(config.data, str(path))
    if config.data.qa and check_data:
        from ..builders.qa import QADataset

        QADataset(config.data.qa, image_roots=config.data.qa_image_roots)
    return config


def check_data_config(data: DataConfig, where: str) -> None:
    """The data section's shape: where samples come from, and options the sampler takes."""
    from ..builders.qa.cocojson import OVERLAPS
    from ..errors import BuildError

    if data.sources is not None and not isinstance(data.sources, dict):
        raise TrainError("data.sources must map source names to folders", path=where, field="data.sources")
    if data.reasonseg and "reason_seg" in (data.sources or {}):
        raise TrainError("ReasonSeg is given twice (data.reasonseg and data.sources.reason_seg)", path=where,
                         field="data.reasonseg", hint="keep one of them")
    if not data.qa and not data.source_specs():
        raise TrainError("no training data: set data.sources (fresh draws) or data.qa (a fixed QA set)",
                         path=where, field="data")
    if data.qa and data.sources:
        raise TrainError("data.qa (a fixed QA set) and data.sources (fresh draws) exclude each other", path=where,
                         field="data.sources", hint="draw from the sources, or build a QA set from them")
    if data.reasonseg_split not in ("train", "val", "train_val"):
        raise TrainError(f"data.reasonseg_split must be train, val or train_val, got {data.reasonseg_split!r}",
                         path=where, field="data.reasonseg_split")
    if data.refer_overlap not in OVERLAPS:
        raise TrainError(f"data.refer_overlap must be {' or '.join(OVERLAPS)}", path=where, field="data.refer_overlap")
    if not 0 <= data.reasonseg_rate <= 1:
        raise TrainError("data.reasonseg_rate must be in [0, 1]", path=where, field="data.reasonseg_rate")
    try:
        sampler_options(data).check()
    except (BuildError, TypeError) as exc:
        raise TrainError(f"data: {getattr(exc, 'message', exc)}", path=where, field="data") from None


def sampler_options(data: DataConfig):
    from ..builders.qa.sampler import SamplerOptions

    return SamplerOptions(tuple(data.rates), data.per_sample, data.explanatory, data.keep_going)


def open_stream(data: DataConfig, seed: int):
    """The run's `SampleStream`: the sources opened through the QA builder's readers, and/or the fixed QA set."""
    from ..builders.qa import LisaSampler, open_sources
    from .data import QARecipes, SampleStream

    specs = data.source_specs()
    sampler = None
    if specs:
        sources = open_sources({k: Path(v) for k, v in specs.items()},
                               {k: Path(v) for k, v in (data.images or {}).items()}, tuple(data.refer_splits),
                               data.refer_overlap, data.reasonseg_split)
        sampler = LisaSampler(sources, sampler_options(data), seed)
    qa = QARecipes(data.qa, data.qa_image_roots) if data.qa else None
    return SampleStream(sampler, qa, data.reasonseg_rate, seed)


def dump_config(config: TrainConfig) -> str:
    import yaml

    doc = asdict(config)
    doc["betas"] = list(config.betas)
    return yaml.safe_dump(doc, sort_keys=False)


# ---------------------------------------------------------------------------------------------- model set-up

def lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    """DeepSpeed WarmupDecayLR (linear): step/warmup during warmup, then (total - step)/(total - warmup) to 0."""
    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1.0, total - warmup))
    return factor


def add_lora(model, settings: LoraSettings) -> None:
    """LoRA adapters on the LLM's q_proj/v_proj only (the vision tower, SAM and projector keep their Linears)."""
    from peft import LoraConfig, inject_adapter_in_model

    lora = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=list(settings.targets), bias="none")
    inject_adapter_in_model(lora, model.llm)


def merge_lora(model) -> None:
    """Fold the LoRA deltas into the base Linears and put the plain Linears back (the released layout)."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge(safe_merge=True)
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, module.get_base_layer())


TRAINABLE_PREFIXES = ("llm.model.embed_tokens.", "llm.lm_head.", "text_hidden_fcs.", "sam.mask_decoder.")
# `trainable:` names: the reference's set (LoRA + TRAINABLE_PREFIXES) and parts it freezes, which a model trained
# from random weights (the tiny one) may need to learn anything.
TRAINABLE_GROUPS = {"reference": TRAINABLE_PREFIXES, "sam_encoder": ("sam.image_encoder.",),
                    "projector": ("mm_projector.",), "llm": ("llm.",)}


def trainable_groups(groups, where: str = "config") -> list[str]:
    """The checked `trainable:` list: known group names, `reference` always among them (the recipe trains it)."""
    groups = [groups] if isinstance(groups, str) else list(groups or [])
    unknown = [g for g in groups if g not in TRAINABLE_GROUPS]
    if unknown:
        raise TrainError(f"unknown trainable group {unknown[0]!r}", path=where, field="trainable",
                         hint=f"choose from {', '.join(TRAINABLE_GROUPS)}")
    return ["reference"] + [g for g in dict.fromkeys(groups) if g != "reference"]


def is_trainable(name: str, groups=("reference",)) -> bool:
    prefixes = tuple(p for g in groups for p in TRAINABLE_GROUPS[g])
    return "lora_" in name or name.startswith(prefixes)


def set_trainable(model, groups=("reference",)) -> list[str]:
    names = []
    for name, param in model.named_parameters():
        param.requires_grad_(is_trainable(name, groups))
        if param.requires_grad:
            names.append(name)
    return names


def trainable_state(model, groups=("reference",)) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if is_trainable(k, groups)}


def load_start_model(config: TrainConfig, device: str, dtype: torch.dtype):
    from .checkpoint import build_from_llava, load_lisa
    from .preprocess import ClipPreprocessor

    if config.model:
        loaded = load_lisa(config.model, device=device, dtype=dtype, vision_tower=config.vision_tower)
    else:
        loaded = build_from_llava(config.base["llava"], config.base["sam"], device=device, dtype=dtype,
                                  vision_tower=config.vision_tower)
    processor = ClipPreprocessor.from_pretrained(loaded.vision_tower_path)  # transformers 4.31's CLIP recipe
    return loaded, processor


# ---------------------------------------------------------------------------------------------- data

class BatchSource:
    """The micro-batches of a run. Global sample k of the stream is a pure function of (seed, k); the samples of
    optimizer step s are indices [s * G, (s + 1) * G) with G = batch_size x grad_accumulation x world, and rank r's
    micro-batch m takes the batch_size indices at ((s * grad_accumulation + m) * world + r) * batch_size. So the
    ranks read disjoint samples, a resumed run continues the stream, and one process with grad_accumulation x N
    micro-batches sees exactly the samples of N processes."""

    def __init__(self, config: TrainConfig, tokenizer, processor, seg_id: int, use_im_start_end: bool,
                 sam_size: int = 1024, rank: int = 0, world: int = 1):
        self.stream = open_stream(config.data, config.seed)
        self.config, self.tokenizer, self.processor = config, tokenizer, processor
        self.seg_id, self.use_im_start_end, self.sam_size = seg_id, use_im_start_end, sam_size
        self.rank, self.world = rank, world

    def indices(self, step: int, micro: int) -> range:
        b = self.config.batch_size
        first = ((step * self.config.grad_accumulation + micro) * self.world + self.rank) * b
        return range(first, first + b)

    def batch(self, step: int, micro: int):
        """The micro-batch, and how many masks the truncation dropped from it."""
        from .data import collate, make_example

        examples = [make_example(self.stream.recipe(k), self.tokenizer, self.processor, self.seg_id,
                                 self.config.model_max_length, self.use_im_start_end, self.sam_size)
                    for k in self.indices(step, micro)]
        return collate(examples, self.tokenizer.pad_token_id), sum(ex.dropped_masks for ex in examples)


# ---------------------------------------------------------------------------------------------- the run

@dataclass
class RunResult:
    out: Path
    step: int
    losses: list[float]
    val: list[dict]


def _dtype(precision: str) -> torch.dtype:
    from .infer import PRECISIONS

    if precision not in PRECISIONS:
        raise TrainError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}", field="precision")
    return PRECISIONS[precision]


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])


def _write_pointer(folder: Path, name: str, tag: str) -> None:
    tmp = folder / f".{name}.tmp"
    tmp.write_text(tag + "\n", encoding="utf-8")
    os.replace(tmp, folder / name)


def read_pointer(run: Path, name: str = "latest") -> str | None:
    path = Path(run) / "checkpoints" / name
    return path.read_text(encoding="utf-8").strip() if path.exists() else None


def _distributed(config: TrainConfig) -> tuple[int, int, str]:
    """(rank, world, device); initialises torch.distributed when launched with several processes or DeepSpeed."""
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    device = config.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainError("device is cuda but no GPU is visible", field="device", hint="set device: cpu")
    if device == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)
    if config.engine == "deepspeed" or world > 1:
        if not torch.distributed.is_initialized():
            backend = "nccl" if device.startswith("cuda") else "gloo"
            if config.engine == "deepspeed":
                if not device.startswith("cuda"):
                    # Name the accelerator, so DeepSpeed does not probe for a GPU and log a warning on stdout.
                    os.environ.setdefault("DS_ACCELERATOR", "cpu")
                import deepspeed

                deepspeed.init_distributed(dist_backend=backend)
            else:
                torch.distributed.init_process_group(backend)
    return rank, world, device


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _deepspeed_config(config: TrainConfig) -> dict:
    return {
        "train_micro_batch_size_per_gpu": config.batch_size,
        "gradient_accumulation_steps": config.grad_accumulation,
        "gradient_clipping": config.grad_clip,
        "zero_optimization": {"stage": config.zero_stage, "contiguous_gradients": True, "overlap_comm": False,
                              "reduce_scatter": True, "reduce_bucket_size": 5e8, "allgather_bucket_size": 5e8},
        "bf16": {"enabled": config.precision == "bf16"},
        "fp16": {"enabled": config.precision == "fp16"},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


@contextlib.contextmanager
def _launcher_variables(config: TrainConfig):
    """One process without a launcher (DeepSpeed needs its variables): fill them in for this call only, any free port.

    Left behind, they told every later child of the caller (lmms-eval's Accelerator, a torchrun-aware tool) that it
    was rank 0 of a launched job on a port this process still holds: EADDRINUSE. So on the way out the variables set
    here are removed. The process group stays (DeepSpeed keeps its groups for the process's next run)."""
    defaults = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": None}
    filled = {name: value for name, value in defaults.items() if name not in os.environ}
    if config.engine != "deepspeed" or not filled:
        yield
        return
    os.environ.update({name: value or str(_free_port()) for name, value in filled.items()})
    try:
        yield
    finally:
        for name in filled:
            os.environ.pop(name, None)


def train(config: TrainConfig, resume: bool = True, on_step: Callable[[dict], None] | None = None) -> RunResult:
    """Run (or continue) a training run into `config.out`; returns the losses and val scores of this call."""
    with _launcher_variables(config):
        return _train(config, resume, on_step)


def _train(config: TrainConfig, resume: bool, on_step: Callable[[dict], None] | None) -> RunResult:
    if config.threads:
        torch.set_num_threads(config.threads)
    started = time.monotonic()
    rank, world, device = _distributed(config)
    if world > 1 and config.engine != "deepspeed":
        raise TrainError("several processes need engine: deepspeed (the torch engine trains one process)",
                         field="engine")
    dtype = _dtype(config.precision)
    out = Path(config.out)
    checkpoints = out / "checkpoints"
    # The torch engine keeps fp32 weights and autocasts; DeepSpeed holds bf16/fp16 weights and fp32 masters itself.
    load_dtype = dtype if config.engine == "deepspeed" else torch.float32
    loaded, processor = load_start_model(config, "cpu", torch.float32)
    model = loaded.model
    torch.manual_seed(config.seed)  # LoRA's initialisation draws from the global generator: same seed, same run
    add_lora(model, config.lora)
    set_trainable(model, config.trainable)
    model.to(device=device, dtype=load_dtype)
    if config.gradient_checkpointing:
        model.llm.gradient_checkpointing_enable()
        model.llm.enable_input_require_grads()
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config.warmup_steps, config.total_steps))
    engine = None
    if config.engine == "deepspeed":
        import deepspeed

        engine, optimizer, _, scheduler = deepspeed.initialize(model=model, optimizer=optimizer,
                                                               lr_scheduler=scheduler,
                                                               config=_deepspeed_config(config))
    step = 0
    tag = read_pointer(out) if resume else None
    if tag:
        step = _load_checkpoint(checkpoints / tag, model, optimizer, scheduler, engine)
        if rank == 0:
            for name in ("metrics.jsonl", SAMPLES_FILE):
                _drop_lines_after(out / name, step)
    elif rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(dump_config(config), encoding="utf-8")
    data = BatchSource(config, loaded.tokenizer, processor, model.seg_token_id, model.config.use_im_start_end,
                       model.config.sam.image_size, rank, world)
    weights = LossWeights(**config.loss)
    last = min(config.total_steps, config.max_steps or config.total_steps)
    losses, vals = [], []
    autocast = torch.autocast(device_type=torch.device(device).type, dtype=dtype,
                              enabled=config.engine == "torch" and dtype != torch.float32)
    while step < last:
        total, ids, dropped = 0.0, [], 0
        for micro in range(config.grad_accumulation):
            batch, cut = data.batch(step, micro)
            batch = batch.to(device, load_dtype)
            ids += batch.ids
            dropped += cut
            with autocast:
                output = (engine or model)(batch)
                parts = lisa_loss(output.logits, output.labels, output.mask_logits, batch.masks, weights)
                if world > 1 and not any(len(m) for m in batch.masks):
                    parts["loss"] = parts["loss"] + _mask_head_touch(model, device, load_dtype)
            if engine is not None:
                engine.backward(parts["loss"])
                engine.step()
            else:
                (parts["loss"] / config.grad_accumulation).backward()
            total += float(parts["loss"].detach()) / config.grad_accumulation
        if engine is None:
            torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        step += 1
        # Every rank must stop after the same step (a rank that stopped alone would leave the others waiting in
        # the next step's collectives): the clock is read on each and any rank's "out of time" stops them all.
        out_of_time = config.max_minutes is not None and time.monotonic() - started >= 60 * config.max_minutes
        total, ids_by_rank, out_of_time, dropped = _gather_step(total, ids, world, out_of_time, dropped)
        losses.append(total)
        if on_step:
            on_step({"step": step, "loss": total, "lr": scheduler.get_last_lr()[0]})
        if rank == 0:
            _append_metrics(out, {"step": step, "loss": total, "lr": scheduler.get_last_lr()[0],
                                  "dropped_masks": dropped, "elapsed_s": round(time.monotonic() - started, 3)})
            with open(out / SAMPLES_FILE, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"step": step, "samples": ids_by_rank}, ensure_ascii=False) + "\n")
        epoch_end = step % config.steps_per_epoch == 0 or step == last or out_of_time
        if epoch_end or (config.val_every and step % config.val_every == 0):
            scores = _validate(config, model, loaded.tokenizer, processor, device, load_dtype, step, rank, world)
            if scores:
                vals.append(scores)
                if rank == 0:
                    _append_metrics(out, {**scores, "split": "val", "elapsed_s": round(time.monotonic() - started, 3)})
            _save_checkpoint(checkpoints, step, model, optimizer, scheduler, engine, rank, scores, config.trainable)
            model.train()
        if out_of_time:
            break
    return RunResult(out, step, losses, vals)


def _mask_head_touch(model, device, dtype) -> torch.Tensor:
    """Zero times the mask head's output on a dummy [SEG] state. ZeRO-2 reduces gradients in the order they become
    ready, which must be the same on every rank; a micro-batch without any [SEG] (VQA, explanation-only answers)
    would leave `text_hidden_fcs` and the mask decoder without gradients on that rank only, and the ranks' reductions
    would no longer line up. With this term they get zero gradients in the same order as a decoded batch (DeepSpeed
    steps parameters without a gradient as zero anyway, so the update is unchanged)."""
    grid = model.sam.prompt_encoder.image_embedding_size
    embedding = torch.zeros(1, model.config.sam.prompt_embed_dim, *grid, device=device, dtype=dtype)
    state = torch.zeros(1, model.config.hidden_size, device=device, dtype=dtype)
    side = model.config.sam.image_size
    return model.decode_masks(embedding, state, (side, side), (1, 1)).sum() * 0.0


def _gather_step(loss: float, ids: list[str], world: int, out_of_time: bool, dropped: int = 0
                 ) -> tuple[float, list[list[str]], bool, int]:
    """The step's loss averaged over the ranks (each rank's is the mean over its micro-batches, so this is the
    mean over the global batch's micro-batches), the sample ids each rank trained on, whether any rank is out
    of time, and the masks the truncation dropped on all ranks (in the same reduction as the loss)."""
    if world == 1:
        return loss, [ids], out_of_time, dropped
    value = torch.tensor([loss, float(out_of_time), float(dropped)], dtype=torch.float64)
    torch.distributed.all_reduce(value)
    gathered: list = [None] * world
    torch.distributed.all_gather_object(gathered, ids)
    return float(value[0]) / world, gathered, bool(value[1] > 0), int(value[2])


def _drop_lines_after(path: Path, step: int) -> None:
    """Forget what an interrupted run logged past its last checkpoint: the resumed run logs those steps again."""
    if not path.is_file():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [line for line in lines if json.loads(line).get("step", 0) <= step]
    if len(kept) != len(lines):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(kept), encoding="utf-8")
        os.replace(tmp, path)


def _append_metrics(out: Path, record: dict) -> None:
    """One line of metrics.jsonl; `elapsed_s` is wall-clock seconds since this train() call started."""
    with open(out / "metrics.jsonl", "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")


def _save_checkpoint(folder: Path, step: int, model, optimizer, scheduler, engine, rank: int,
                     scores: dict | None, groups=("reference",)) -> None:
    tag = f"step_{step:06d}"
    target = folder / tag
    if engine is not None:
        engine.save_checkpoint(str(folder), tag=tag, client_state={"step": step, "rng": _rng_state()})
    if rank == 0:
        target.mkdir(parents=True, exist_ok=True)
        torch.save(trainable_state(model, groups), target / ".trainable.pt.tmp")
        os.replace(target / ".trainable.pt.tmp", target / "trainable.pt")
        if engine is None:
            state = {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                     "rng": _rng_state()}
            torch.save(state, target / ".state.pt.tmp")
            os.replace(target / ".state.pt.tmp", target / "state.pt")
        if scores is not None:
            (target / "val.json").write_text(json.dumps(scores) + "\n", encoding="utf-8")
            best = read_pointer(folder.parent, "best")
            best_score = json.loads((folder / best / "val.json").read_text())["giou"] if best else -math.inf
            if scores["giou"] > best_score:
                _write_pointer(folder, "best", tag)
        _write_pointer(folder, "latest", tag)
    if torch.distributed.is_initialized():
        torch.distributed.barrier()  # no rank runs ahead of the files rank 0 writes (a resume reads them)


def _load_checkpoint(folder: Path, model, optimizer, scheduler, engine) -> int:
    if not (folder / "trainable.pt").exists():
        raise TrainError("checkpoint is incomplete (no trainable.pt)", path=str(folder))
    if engine is not None:
        _, client = engine.load_checkpoint(str(folder.parent), tag=folder.name)
        _set_rng_state(client["rng"])
        return int(client["step"])
    model.load_state_dict(torch.load(folder / "trainable.pt", weights_only=True), strict=False)
    state = torch.load(folder / "state.pt", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    return int(state["step"])


def _validate(config: TrainConfig, model, tokenizer, processor, device, dtype, step, rank, world) -> dict | None:
    """gIoU/cIoU on the val split with our scorer (teacher-forced `[SEG].`, as the reference validates)."""
    if not config.data.val:
        return None
    from ..metrics.groundtruth import load_ground_truth
    from ..metrics.scoring import evaluate_predictions
    from ..sources import load_split
    from ..submission import predictions_document
    from .infer import LisaPredictor, predict_split

    model.eval()
    predictor = LisaPredictor(model, tokenizer, processor, device, dtype)
    samples = load_split(config.data.val, config.data.val_split)
    predictions = predict_split(predictor, samples, batch_size=config.val_batch_size, rank=rank, world=world)
    if rank != 0:
        return None
    from ..submission import parse_predictions_json

    doc = predictions_document(predictions, config.data.val_split, "lisa")
    preds = parse_predictions_json(json.dumps(doc).encode(), "validation")
    gt = load_ground_truth(config.data.val, config.data.val_split, cache_dir=None)
    groups = evaluate_predictions(gt, preds, bootstrap=0).document["groups"]["overall"]
    return {"step": step, "giou": groups["giou"], "ciou": groups["ciou"], "n": groups["n"]}


# ---------------------------------------------------------------------------------------------- export

def export_run(run: str | os.PathLike, out: str | os.PathLike, checkpoint: str | None = None,
               max_shard_size: str | int = "10GB", safetensors: bool = False, overwrite: bool = False) -> Path:
    """Merge a run's LoRA into its start model and write the released layout (loadable by chat, predict and
    further fine-tuning). `checkpoint`: a tag, `best` or `latest` (default: best when validated, else latest)."""
    from .checkpoint import SEEN_SPLITS_KEY, save_lisa

    run = Path(run)
    config_path = run / "config.yaml"
    if not config_path.exists():
        raise TrainError("not a training run (no config.yaml)", path=str(run))
    config = load_config(config_path, check_data=False)  # exporting needs the start model, not the data
    if checkpoint in (None, "best", "latest"):
        tag = (read_pointer(run, "best") if checkpoint != "latest" else None) or read_pointer(run, "latest")
    else:
        tag = checkpoint
    if not tag or not (run / "checkpoints" / tag / "trainable.pt").exists():
        raise TrainError(f"no checkpoint {checkpoint or 'latest'!r} in the run", path=str(run / "checkpoints"),
                         hint="train at least one epoch first")
    loaded, processor = load_start_model(config, "cpu", torch.float32)
    model = loaded.model
    add_lora(model, config.lora)
    state = torch.load(run / "checkpoints" / tag / "trainable.pt", weights_only=True)
    expected = {k for k in model.state_dict() if is_trainable(k, config.trainable)}
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise TrainError(f"checkpoint {tag} does not match the start model "
                         f"({'missing ' + missing[0] if missing else 'unexpected ' + unexpected[0]})",
                         path=str(run / "checkpoints" / tag))
    model.load_state_dict(state, strict=False)
    merge_lora(model)
    from .checkpoint import read_config

    start = Path(config.model or config.base["llava"])
    model.to(getattr(torch, str(read_config(start).get("torch_dtype", "float32")), torch.float32))
    tower = None if _tower_is_local(config, loaded.vision_tower_path) else loaded.vision_tower_path
    return save_lisa(model, loaded.tokenizer, out, max_shard_size=max_shard_size, safetensors=safetensors,
                     image_processor=processor, vision_tower=tower, overwrite=overwrite,
                     extra_config={SEEN_SPLITS_KEY: sorted(trained_splits(config))})


def trained_splits(config: TrainConfig) -> set[str]:
    """The ReasonSeg splits a run's weights have seen: its start model's (a released v1 saw val) and its own data
    (a QA set may hold ReasonSeg train), so `lisa eval` can warn about a contaminated val score."""
    from .checkpoint import seen_splits

    seen = seen_splits(config.model)[0] if config.model else set()
    if "reason_seg" in config.data.source_specs():
        seen.update(config.data.reasonseg_split.split("_"))
    if config.data.qa:
        seen.add("train")
    return seen


def _tower_is_local(config: TrainConfig, tower_path: str) -> bool:
    """Copy the vision tower into the export when it lived inside the start folder (tiny / exported models)."""
    start = Path(config.model or config.base["llava"]).resolve()
    try:
        Path(tower_path).resolve().relative_to(start)
        return True
    except ValueError:
        return False


def cleanup_run(run: str | os.PathLike) -> None:
    shutil.rmtree(run, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    """Entry point for launchers: `deepspeed -m reasonseg.lisa.train --config FILE [--no-resume]`."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--no-resume", action="store_true")
    parser.add_argument("--local_rank", type=int, default=None, help=argparse.SUPPRESS)  # the deepspeed launcher's
    args = parser.parse_args(argv)
    result = train(load_config(args.config), resume=not args.no_resume)
    if int(os.environ.get("RANK", 0)) == 0:
        print(json.dumps({"out": str(result.out), "step": result.step, "val": result.val}))  # noqa: T201


if __name__ == "__main__":
    main()
