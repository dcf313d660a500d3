"""Read and write LISA checkpoints in the released layout (`xinlai/LISA-7B-v1`), strictly.

A released directory holds::

    config.json                         LLaMA fields + LLaVA fields (mm_vision_tower, mm_use_im_start_end, ...)
    pytorch_model-0000N-of-0000M.bin    shards, with pytorch_model.bin.index.json   (or one pytorch_model.bin,
                                        or model.safetensors / model-0000N-of-0000M.safetensors + index)
    tokenizer files                     with [SEG], <im_start>, <im_end>
    <mm_vision_tower>                   the CLIP vision tower: a hub id or a folder (relative to this directory,
                                        or absolute); `lisa init` and `lisa export` put it in `clip-vision/`

Key mapping, released name -> module of `LisaModel` (`KEY_RULES`, first matching prefix wins):

    lm_head.*                               -> llm.lm_head.*
    model.mm_projector.*                    -> mm_projector.*          (v1: weight/bias; v1.5: 0.* and 2.*)
    model.text_hidden_fcs.0.*               -> text_hidden_fcs.*       (0.0 = Linear(H,H), 0.2 = Linear(H,256))
    model.visual_model.*                    -> sam.*                   (segment-anything names)
    model.vision_tower.vision_tower.*       -> vision_tower.*          (optional: CLIP normally lives elsewhere)
    model.*                                 -> llm.model.*             (embed_tokens, layers.{i}..., norm)

Ignored on read (recomputed buffers written by old transformers): `*.rotary_emb.inv_freq`. Anything else that has
no rule, or a model key the file lacks, or a shape that differs, fails with a `CheckpointError` naming the key —
unlike the reference, which loads SAM with `strict=False` and silently drops mismatches.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..errors import ReasonSegError
from ..outputs import staged_output_dir
from .config import LisaConfig, VisionConfig, from_released_config, preset, to_released_config, with_vocab
from .conversation import seg_token_id
from .model import LisaModel, build_lisa, build_vision_tower, vision_config_of

KEY_RULES = (
    ("lm_head.", "llm.lm_head."),
    ("model.mm_projector.", "mm_projector."),
    ("model.text_hidden_fcs.0.", "text_hidden_fcs."),
    ("model.visual_model.", "sam."),
    ("model.vision_tower.vision_tower.", "vision_tower."),
    ("model.", "llm.model."),
)
IGNORED_SUFFIXES = (".rotary_emb.inv_freq",)
OPTIONAL_PREFIXES = ("vision_tower.",)  # the model keys a released file may leave out (CLIP loads from its folder)
TOWER_FOLDER = "clip-vision"
WEIGHT_FILES = ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json",
                "pytorch_model.bin")


class CheckpointError(ReasonSegError):
    """A checkpoint directory is incomplete, or its keys or shapes do not match the model."""


def released_to_model_key(key: str) -> str | None:
    """The `LisaModel` state-dict key of a released key; None when no rule applies."""
    for released, ours in KEY_RULES:
        if key.startswith(released):
            rest = key[len(released):]
            if ours == "vision_tower." and rest.startswith("vision_model."):
                rest = rest[len("vision_model."):]  # transformers 5 keeps CLIPVisionModel's keys unprefixed
            return ours + rest
    return None


def model_to_released_key(key: str) -> str:
    for released, ours in KEY_RULES:
        if key.startswith(ours):
            return released + key[len(ours):]
    raise KeyError(key)


# ---------------------------------------------------------------------------------------------- reading files

def weight_files(directory: Path) -> list[Path]:
    """The weight files of a directory, in the order the index lists them."""
    for name in WEIGHT_FILES:
        path = directory / name
        if not path.exists():
            continue
        if name.endswith(".index.json"):
            try:
                index = json.loads(path.read_text(encoding="utf-8"))
                shards = sorted(set(index["weight_map"].values()))
            except (ValueError, KeyError, AttributeError) as exc:
                raise CheckpointError(f"unreadable index ({exc})", path=str(path), field="weight_map") from None
            missing = [s for s in shards if not (directory / s).exists()]
            if missing:
                raise CheckpointError(f"shard {missing[0]} listed in the index is missing", path=str(path))
            return [directory / s for s in shards]
        return [path]
    raise CheckpointError("no weights found (expected pytorch_model*.bin or model*.safetensors, with an index "
                          "when sharded)", path=str(directory))


def read_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    """All tensors of a directory's weight files, under their released names."""
    state: dict[str, torch.Tensor] = {}
    for path in weight_files(directory):
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            part = load_file(str(path))
        else:
            try:
                part = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except Exception as exc:  # noqa: BLE001 - any unpickling failure is a broken file for the user
                raise CheckpointError(f"cannot read weights ({type(exc).__name__}: {exc})", path=str(path)) from None
        state.update(part)
    return state


def map_state_dict(released: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], where: str
                   ) -> dict[str, torch.Tensor]:
    """Released tensors renamed to model keys; fails on any unexpected, missing or mis-shaped key."""
    mapped = {}
    for key, tensor in released.items():
        if key.endswith(IGNORED_SUFFIXES):
            continue
        ours = released_to_model_key(key)
        if ours is None or ours not in expected:
            raise CheckpointError(f"unexpected key {key!r}" + (f" (maps to {ours!r}, which the model does not have)"
                                                                 if ours else " (no mapping rule applies)"),
                                  path=where, hint="the file does not match this model configuration; see "
                                  "reasonseg/lisa/checkpoint.py for the key mapping")
        if tuple(tensor.shape) != tuple(expected[ours].shape):
            raise CheckpointError(f"key {key!r} has shape {tuple(tensor.shape)} but the model expects "
                                  f"{tuple(expected[ours].shape)}", path=where,
                                  hint="check config.json (hidden_size, vocab_size, mm_hidden_size, projector)")
        mapped[ours] = tensor
    tower_given = any(k.startswith(OPTIONAL_PREFIXES) for k in mapped)
    for ours in expected:
        if ours not in mapped and (tower_given or not ours.startswith(OPTIONAL_PREFIXES)):
            raise CheckpointError(f"missing key {model_to_released_key(ours)!r}", path=where,
                                  hint="the checkpoint is incomplete or was written for another configuration")
    return mapped


# ---------------------------------------------------------------------------------------------- loading

def resolve_vision_tower(directory: Path, name: str) -> str:
    """A local folder for `mm_vision_tower`: relative to the checkpoint, absolute, or a hub id (cache only)."""
    for candidate in (directory / name, Path(name).expanduser()):
        if candidate.is_dir():
            return str(candidate)
    return name


def tower_name(doc: dict) -> str:
    """The CLIP tower a config names, read as the original reads it: a LISA config (it has `train_mask_decoder`)
    by `vision_tower`, a LLaVA one by `mm_vision_tower`."""
    keys = ("vision_tower", "mm_vision_tower") if "train_mask_decoder" in doc else ("mm_vision_tower",)
    return str(next((doc[k] for k in keys if doc.get(k)), ""))


def load_vision_tower(directory: Path, name: str, dtype: torch.dtype):
    from transformers import CLIPVisionModel
    from transformers.utils import logging as hf_logging

    from .attention import CLIP_ATTENTION, register

    register()
    where = resolve_vision_tower(directory, name)
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # the library never prints; transformers' bars would
    try:
        return CLIPVisionModel.from_pretrained(where, dtype=dtype, attn_implementation=CLIP_ATTENTION), where
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load the vision tower {name!r} ({str(exc).splitlines()[0]})",
                              path=str(directory / "config.json"), field="mm_vision_tower",
                              hint="download it (huggingface-cli download NAME) or pass --vision-tower PATH") from None
    finally:
        if bars:
            hf_logging.enable_progress_bar()


def load_tokenizer(directory: Path):
    """LLaMA's SentencePiece tokenizer with LISA's tokens, tokenizing as the original did (`tokenizer.py`)."""
    from .tokenizer import LisaTokenizer, add_lisa_tokens

    tokenizer = LisaTokenizer.from_pretrained(directory)
    add_lisa_tokens(tokenizer)  # no-op on a LISA tokenizer; needed for a bare LLaVA one
    return tokenizer


@dataclass
class Loaded:
    model: LisaModel
    tokenizer: object
    config: LisaConfig
    vision_tower_path: str


def read_config(directory: Path) -> dict:
    path = directory / "config.json"
    if not path.exists():
        raise CheckpointError("no config.json", path=str(directory), hint="is this a LISA checkpoint folder?")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise CheckpointError(f"invalid JSON ({exc})", path=str(path)) from None


def _empty_model(config: LisaConfig, seg_id: int, tower, device, dtype: torch.dtype) -> LisaModel:
    """The module tree without random initialisation (weights come from the file right after)."""
    from accelerate import init_empty_weights

    with init_empty_weights(include_buffers=False):
        model = build_lisa(config, seg_id, vision_tower=tower)
    return model


def load_lisa(directory: str | os.PathLike, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
              vision_tower: str | None = None) -> Loaded:
    """Load a released LISA directory (or one written by `lisa init`/`lisa export`) strictly."""
    directory = Path(directory)
    doc = read_config(directory)
    tower, tower_path = load_vision_tower(directory, vision_tower or tower_name(doc), dtype)
    config = from_released_config(doc, vision_config_of(tower))
    tokenizer = load_tokenizer(directory)
    if len(tokenizer) > int(doc.get("vocab_size", len(tokenizer))):
        raise CheckpointError(f"the tokenizer has {len(tokenizer)} tokens but vocab_size is {doc['vocab_size']}",
                              path=str(directory / "config.json"), field="vocab_size")
    model = _empty_model(config, seg_token_id(tokenizer), tower, device, dtype)
    expected = model.state_dict()
    mapped = map_state_dict(read_state_dict(directory), expected, str(directory))
    model.load_state_dict(mapped, strict=False, assign=True)
    model = model.to(device=device, dtype=dtype)
    model.eval()
    return Loaded(model, tokenizer, config, tower_path)


# ---------------------------------------------------------------------------------------------- provenance

SEEN_SPLITS_KEY = "reasonseg_seen_splits"
# The released v1 checkpoints (LISA-7B-v1, LISA-13B-llama2-v1 and their -explanatory variants) were trained on
# ReasonSeg train+val (reference issue #74). Their folder (`LISA-7B-v1`, or the hub cache's
# `models--xinlai--LISA-7B-v1/snapshots/<hash>`) or `_name_or_path` says which one it is; `v1.5`, `v10` do not match.
_V1_NAME = re.compile(r"LISA-[\w.-]*?-v1(?:-explanatory)?(?![\w.])")


def _names_of(directory: Path) -> list[str]:
    """The names a checkpoint folder goes by: its own (as given and resolved) and, in a hub cache
    (`models--ORG--NAME/snapshots/HASH`), the repository's."""
    names = []
    for path in (directory, directory.resolve()):
        names.append(path.name)
        if len(path.parts) >= 3 and path.parts[-2] == "snapshots" and path.parts[-3].startswith("models--"):
            names.append(path.parts[-3])
    return names


def seen_splits(directory: str | os.PathLike) -> tuple[set[str], str | None]:
    """The ReasonSeg splits a checkpoint is known to have been trained on, and how we know (None: nothing known).

    `config.json`'s `reasonseg_seen_splits` (written by `lisa export`) is read first; a released v1 model is
    recognised by its folder's name, its hub-cache repository name or its config's `_name_or_path`.
    """
    directory = Path(directory)
    doc = read_config(directory)
    recorded = doc.get(SEEN_SPLITS_KEY)
    seen = {str(s) for s in recorded} if isinstance(recorded, list) else set()
    why = f"config.json {SEEN_SPLITS_KEY}" if seen else None
    for text in (*_names_of(directory), str(doc.get("_name_or_path", ""))):
        match = _V1_NAME.search(text)
        if match:
            seen |= {"train", "val"}
            why = f"released v1 model {match.group(0)}, reference issue #74"
            break
    return seen, why


# ---------------------------------------------------------------------------------------------- writing

def _size(value: str | int) -> int:
    if isinstance(value, int):
        return value
    units = {"KB": 10**3, "MB": 10**6, "GB": 10**9}
    for unit, factor in units.items():
        if value.upper().endswith(unit):
            return int(float(value[:-2]) * factor)
    return int(value)


def shard_state_dict(state: dict[str, torch.Tensor], max_shard_bytes: int) -> list[dict[str, torch.Tensor]]:
    shards: list[dict[str, torch.Tensor]] = [{}]
    used = 0
    for key, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and used + nbytes > max_shard_bytes:
            shards.append({})
            used = 0
        shards[-1][key] = tensor
        used += nbytes
    return shards


def released_state_dict(model: LisaModel, include_vision_tower: bool = False) -> dict[str, torch.Tensor]:
    out = {}
    for key, tensor in model.state_dict().items():
        if key.startswith("vision_tower.") and not include_vision_tower:
            continue
        if "lora_" in key or ".base_layer." in key:
            raise CheckpointError(f"the model still holds LoRA layers ({key}); merge them before saving",
                                  hint="use `reasonseg lisa export`, which merges LoRA")
        out[model_to_released_key(key)] = tensor.detach().contiguous().cpu()
    # The original's files hold each layer's rotary inv_freq (a saved buffer in transformers 4.31); writing them
    # (float32, as computed) gives the same key set. Loaders recompute them.
    for i in range(len(model.llm.model.layers)):
        out[f"model.layers.{i}.self_attn.rotary_emb.inv_freq"] = model.rotary_inv_freq.clone()
    return out


# What a released-layout folder holds (any sharding, either weight format): an overwrite replaces these only.
RELEASED_OUTPUTS = ("config.json", "pytorch_model*", "model*.safetensors*", "tokenizer*", "special_tokens_map.json",
                    "added_tokens.json", "generation_config.json", "chat_template.*", TOWER_FOLDER)


def save_lisa(model: LisaModel, tokenizer, out: str | os.PathLike, *, max_shard_size: str | int = "10GB",
              safetensors: bool = False, image_processor=None, vision_tower: str | None = None,
              overwrite: bool = False, extra_config: dict | None = None) -> Path:
    """Write the released layout into `out` (built in a temporary folder, then renamed into place).

    `vision_tower`: the `mm_vision_tower` to record; None writes the model's tower (and `image_processor`) into
    `out/clip-vision/` and records that relative folder. `extra_config`: fields added to `config.json` (e.g.
    `reasonseg_seen_splits`; loaders ignore what they do not know).
    """
    out = Path(out)
    with staged_output_dir(out, overwrite, RELEASED_OUTPUTS, error=CheckpointError) as tmp:
        state = released_state_dict(model)
        dtype = str(next(iter(state.values())).dtype).replace("torch.", "")
        config = model.config
        if vision_tower is None:
            from transformers.utils import logging as hf_logging

            bars = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
            model.vision_tower.save_pretrained(str(tmp / TOWER_FOLDER))
            if bars:
                hf_logging.enable_progress_bar()
            if image_processor is not None:
                image_processor.save_pretrained(str(tmp / TOWER_FOLDER))
            vision_tower = TOWER_FOLDER
        doc = to_released_config(with_vocab(_with_tower(config, vision_tower),
                                            model.llm.get_input_embeddings().weight.shape[0]), dtype)
        doc.update(extra_config or {})
        (tmp / "config.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
        _write_weights(tmp, state, _size(max_shard_size), safetensors)
        tokenizer.save_pretrained(str(tmp))
    return out


def _with_tower(config: LisaConfig, name: str) -> LisaConfig:
    return replace(config, vision_tower=name)


def _write_weights(folder: Path, state: dict[str, torch.Tensor], max_shard_bytes: int, safetensors: bool) -> None:
    shards = shard_state_dict(state, max_shard_bytes)
    stem, ext = ("model", "safetensors") if safetensors else ("pytorch_model", "bin")
    names = [f"{stem}.{ext}"] if len(shards) == 1 else [
        f"{stem}-{i + 1:05d}-of-{len(shards):05d}.{ext}" for i in range(len(shards))]
    weight_map = {}
    for name, shard in zip(names, shards, strict=True):
        if safetensors:
            from safetensors.torch import save_file

            save_file(shard, str(folder / name), metadata={"format": "pt"})
        else:
            torch.save(shard, folder / name)
        weight_map.update({key: name for key in shard})
    if len(shards) > 1:
        total = sum(t.numel() * t.element_size() for t in state.values())
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (folder / f"{stem}.{ext}.index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------- new models

def _default_dtype(dtype: torch.dtype):
    class _Scope:
        def __enter__(self):
            self.previous = torch.get_default_dtype()
            torch.set_default_dtype(dtype)

        def __exit__(self, *exc):
            torch.set_default_dtype(self.previous)
    return _Scope()


def new_model(size: str = "tiny", llava: str = "v1", *, seed: int = 0, dtype: torch.dtype = torch.float32,
              device: str | torch.device = "cpu", vision: VisionConfig | None = None):
    """A random-initialised LISA of a preset size, with its tokenizer and CLIP image processor; `vision` replaces
    the preset's tower shape (e.g. a tiny tower at 336 px, for LLaVA-1.5's 576 image tokens)."""
    from .preprocess import ClipPreprocessor
    from .tokenizer import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    config = preset(size, llava)
    if vision is not None:
        config = replace(config, vision=vision)
    vocab = max(len(tokenizer), int(config.llm.get("vocab_size", 0)))
    config = with_vocab(config, vocab)
    torch.manual_seed(seed)
    with _default_dtype(dtype), torch.device(device):
        tower = build_vision_tower(config.vision)
        model = build_lisa(config, seg_token_id(tokenizer), vision_tower=tower)
    side = config.vision.image_size
    processor = ClipPreprocessor(size=side, crop_height=side, crop_width=side)
    return model, tokenizer, processor


def init_release(out: str | os.PathLike, size: str = "tiny", llava: str = "v1", *, seed: int = 0,
                 dtype: torch.dtype | None = None, max_shard_size: str | int = "10GB", safetensors: bool = False,
                 overwrite: bool = False) -> Path:
    """`lisa init`: a random-initialised model written in the released layout (fp32 tiny, bf16 full sizes)."""
    dtype = dtype or (torch.float32 if size == "tiny" else torch.bfloat16)
    model, tokenizer, processor = new_model(size, llava, seed=seed, dtype=dtype)
    return save_lisa(model, tokenizer, out, max_shard_size=max_shard_size, safetensors=safetensors,
                     image_processor=processor, overwrite=overwrite)


def _llava_part(model: LisaModel) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if k.startswith(("llm.", "mm_projector.", "vision_tower."))}


def build_from_llava(llava_dir: str | os.PathLike, sam_checkpoint: str | os.PathLike,
                     device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                     vision_tower: str | None = None) -> Loaded:
    """A fresh LISA for training: LLaVA weights (LLaMA + projector), SAM's `.pth`, a new `text_hidden_fcs`;
    the tokenizer gains [SEG] and the embeddings grow to fit it."""
    llava_dir = Path(llava_dir)
    doc = read_config(llava_dir)
    tower, tower_path = load_vision_tower(llava_dir, vision_tower or tower_name(doc), dtype)
    config = from_released_config(doc, vision_config_of(tower))
    tokenizer = load_tokenizer(llava_dir)
    with _default_dtype(dtype):
        model = build_lisa(config, seg_token_id(tokenizer), vision_tower=tower)
    expected = _llava_part(model)
    released = read_state_dict(llava_dir)
    vocab_rows = released.get("model.embed_tokens.weight")
    if vocab_rows is not None and vocab_rows.shape[0] != model.llm.get_input_embeddings().weight.shape[0]:
        model.llm.resize_token_embeddings(vocab_rows.shape[0])
        expected = _llava_part(model)
    model.load_state_dict(map_state_dict(released, expected, str(llava_dir)), strict=False)
    sam_state = torch.load(sam_checkpoint, map_location="cpu", weights_only=True)
    sam_expected = model.sam.state_dict()
    bad = sorted(set(sam_state) ^ set(sam_expected))
    if bad:
        kind = "unexpected" if bad[0] in sam_state else "missing"
        raise CheckpointError(f"{kind} SAM key {bad[0]!r}", path=str(sam_checkpoint),
                              hint="expected a segment-anything ViT-H state dict (sam_vit_h_4b8939.pth)")
    model.sam.load_state_dict(sam_state, strict=True)
    if len(tokenizer) > model.llm.get_input_embeddings().weight.shape[0]:
        model.llm.resize_token_embeddings(len(tokenizer))
    model = model.to(device=device, dtype=dtype)
    return Loaded(model, tokenizer, with_vocab(config, len(tokenizer)), tower_path)
