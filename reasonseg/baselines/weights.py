"""Where model weights come from: a path given with `--weights`, or the local Hugging Face cache (never the network).

Each method declares its weight *slots* (`dino`, `sam`, `clipseg`, `vlm`); `--weights NAME=PATH` fills one slot and a
bare `--weights PATH` fills the method's first slot. A slot that cannot be found raises one line that names what to
download and the flag to pass. `write_tiny_weights` makes random-initialised miniature models in the real formats, so
the pipelines can run (and be tested) without any download; their numbers mean nothing.
"""
from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import MethodError

SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/{name}"
SAM_DEFAULT = "sam_vit_h_4b8939.pth"
# A Hub mirror of the three official SAM checkpoints: looked up in the local cache only, never fetched.
SAM_HUB_REPO = "ybelkada/segment-anything"


class MissingWeightsError(MethodError):
    """A method's weights are neither at the given path nor in the local cache."""


@dataclass(frozen=True)
class Slot:
    """One set of weights a method needs.

    kind "hub": a `save_pretrained` folder, found in the Hugging Face cache under `model_id`;
    kind "sam": a segment-anything checkpoint file (`sam_vit_*.pth`) named `model_id`.
    """

    name: str
    model_id: str
    kind: str = "hub"
    what: str = ""

    def download_hint(self) -> str:
        if self.kind == "sam":
            return (f"download {SAM_URL.format(name=self.model_id)} and pass --weights {self.name}=PATH")
        return f"run `hf download {self.model_id}` or pass --weights {self.name}=DIR"

    def describe(self) -> str:
        return f"{self.name}={self.model_id}"


_SLOTS: dict[str, tuple[Slot, ...]] = {}


def declare(method: str, *slots: Slot) -> tuple[Slot, ...]:
    """Record the weight slots of a method (called by the method's module next to `register`)."""
    _SLOTS[method] = tuple(slots)
    return tuple(slots)


def slots_of(method: str) -> tuple[Slot, ...]:
    return _SLOTS.get(method, ())


def parse_weight_flags(values: Iterable[str] | None, slots: tuple[Slot, ...]) -> tuple[Path | None, dict[str, Path]]:
    """`--weights PATH` and `--weights NAME=PATH` values → (the bare path, {slot name: path})."""
    bare: Path | None = None
    named: dict[str, Path] = {}
    names = {s.name for s in slots}
    for value in values or ():
        name, sep, rest = value.partition("=")
        if sep and name in names:
            named[name] = Path(rest).expanduser()
        elif sep and name.isidentifier() and not Path(value).exists():
            known = ", ".join(sorted(names)) or "none"
            raise MethodError(f"--weights {value}: this method has no weight slot {name!r} (slots: {known})")
        elif bare is None:
            bare = Path(value).expanduser()
        else:
            raise MethodError(f"--weights given twice without a slot name ({bare} and {value})",
                              hint="name the slots: --weights dino=DIR --weights sam=FILE")
    if bare is not None and slots and slots[0].name not in named:
        named[slots[0].name] = bare
    return bare, named


def _sam_file(path: Path) -> Path | None:
    if path.is_file():
        return path
    if path.is_dir():
        found = sorted(path.glob("sam*.pth")) or sorted(path.glob("*.pth"))
        return found[0] if found else None
    return None


def _local_sam(model_id: str) -> Path | None:
    folders = [os.environ.get("REASONSEG_WEIGHTS"), os.environ.get("XDG_CACHE_HOME") and
               os.path.join(os.environ["XDG_CACHE_HOME"], "reasonseg", "weights"),
               os.path.join(os.path.expanduser("~"), ".cache", "reasonseg", "weights")]
    for folder in filter(None, folders):
        candidate = Path(folder) / model_id
        if candidate.is_file():
            return candidate
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(SAM_HUB_REPO, f"checkpoints/{model_id}", local_files_only=True))
    except Exception:  # noqa: BLE001 - any failure of a cache-only lookup means "not cached"
        return None


def _cached_snapshot(model_id: str) -> Path | None:
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model_id, local_files_only=True))
    except Exception:  # noqa: BLE001 - any failure of a cache-only lookup means "not cached"
        return None


def find(slot: Slot, given: Path | None = None) -> Path | None:
    """The slot's weights: the given path when it holds them, else the local cache; None when absent."""
    if given is not None:
        if slot.kind == "sam":
            return _sam_file(given)
        return given if (given / "config.json").is_file() else None
    return _local_sam(slot.model_id) if slot.kind == "sam" else _cached_snapshot(slot.model_id)


def resolve(method: str, slot: Slot, given: Path | None = None) -> Path:
    """Like `find`, but a missing weight raises one line naming the model id and the flag to pass."""
    path = find(slot, given)
    if path is not None:
        return path
    if given is not None:
        expected = "a sam_vit_*.pth file" if slot.kind == "sam" else "a save_pretrained folder with config.json"
        raise MissingWeightsError(f"{method}: --weights {slot.name}={given} does not hold {expected}",
                                  hint=slot.download_hint())
    where = "the reasonseg weights folder or the local Hugging Face cache" if slot.kind == "sam" else \
        "the local Hugging Face cache"
    raise MissingWeightsError(f"{method} needs {slot.what or slot.name} weights {slot.model_id}, not found in {where}",
                              hint=slot.download_hint())


def offline() -> None:
    """Never reach the network for weights: `predict` reads local folders and the local cache only."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def quiet_transformers() -> None:
    """The library never prints: no loading bars or advisory logs from transformers (the CLI has its own bar), no
    DeepSpeed accelerator notice on a machine without a GPU."""
    from ..extras import name_deepspeed_accelerator

    name_deepspeed_accelerator()
    from transformers.utils import logging

    logging.disable_progress_bar()
    logging.set_verbosity_error()


# ----------------------------------------------------------------------------------------------- tiny models

TINY_WORDS = ("a the an of in on is it this that what which where object thing image picture can be used for to "
              "and or with something part region area please segment show me find red green blue yellow white "
              "black orange purple circle rectangle triangle star blob shape round square pointed").split()


def _tiny_clip_tokenizer(folder: Path):
    """A character-level CLIP BPE tokenizer (no merges) built from a vocabulary written here."""
    import json
    import string

    from transformers import CLIPTokenizer

    chars = sorted(set(string.ascii_lowercase + string.digits + ".,?!'-:;\"()"))
    vocab: dict[str, int] = {}
    for suffix in ("", "</w>"):
        for c in chars:
            vocab[c + suffix] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt")), vocab


def write_tiny_clipseg(folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import CLIPSegConfig, CLIPSegForImageSegmentation, CLIPSegProcessor, ViTImageProcessor

    torch.manual_seed(seed)
    tokenizer, vocab = _tiny_clip_tokenizer(folder / ".tokenizer")
    special = {"bos_token_id": vocab["<|startoftext|>"], "eos_token_id": vocab["<|endoftext|>"],
               "pad_token_id": vocab["<|endoftext|>"]}
    config = CLIPSegConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, **special),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=64, patch_size=16),
        projection_dim=32, extract_layers=[0, 1], reduce_dim=16, decoder_num_attention_heads=2,
        decoder_intermediate_size=32)
    model = CLIPSegForImageSegmentation(config).eval()
    processor = CLIPSegProcessor(image_processor=ViTImageProcessor(size={"height": 64, "width": 64}),
                                 tokenizer=tokenizer)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def write_tiny_grounding_dino(folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import (
        BertConfig,
        BertTokenizer,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    torch.manual_seed(seed)
    import string

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *dict.fromkeys(TINY_WORDS),
             *string.ascii_lowercase, *".,?!'-"]
    (folder / ".tokenizer").mkdir(parents=True, exist_ok=True)
    (folder / ".tokenizer" / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(str(folder / ".tokenizer" / "vocab.txt"))
    swin = SwinConfig(image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2],
                      window_size=2, out_features=["stage2", "stage3", "stage4"])
    text = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=64)
    # Two decoder layers: with one, the per-layer box heads it ties together do not exist.
    config = GroundingDinoConfig(backbone_config=swin, text_config=text, d_model=32, encoder_layers=1,
                                 decoder_layers=2, encoder_ffn_dim=64, decoder_ffn_dim=64, encoder_attention_heads=2,
                                 decoder_attention_heads=2, num_queries=10, num_feature_levels=3, max_text_len=32,
                                 encoder_n_points=2, decoder_n_points=2)
    model = GroundingDinoForObjectDetection(config).eval()
    processor = GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 96}),
        tokenizer=tokenizer)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def tiny_sam(seed: int = 0):
    """A segment-anything `Sam` with the published architecture at toy sizes (64 px input, 32 channels)."""
    import torch

    from ..sam import SamConfig, build_sam

    torch.manual_seed(seed)
    return build_sam(SamConfig(encoder_embed_dim=32, encoder_depth=2, encoder_num_heads=2,
                               encoder_global_attn_indexes=(1,), window_size=4, patch_size=8, image_size=64,
                               prompt_embed_dim=32, decoder_depth=2, decoder_mlp_dim=64, iou_head_hidden_dim=32,
                               mlp_ratio=2)).eval()


def write_tiny_sam(path: Path, seed: int = 0) -> Path:
    """Saved as the published checkpoints are: `torch.save(state_dict)`."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(tiny_sam(seed).state_dict(), path)
    return path


def write_tiny_llava(folder: Path, seed: int = 0) -> Path:
    """A LLaVA-architecture image-text-to-text model (tiny CLIP vision tower + tiny Llama) with a word tokenizer."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    torch.manual_seed(seed)
    words = ["<pad>", "<s>", "</s>", "<unk>", "<image>", "USER:", "ASSISTANT:",
             *dict.fromkeys(TINY_WORDS), *".,?!"]
    vocab = {w: i for i, w in enumerate(words)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece(prefix="##")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>",
                                        bos_token="<s>", eos_token="</s>",
                                        extra_special_tokens={"image_token": "<image>"})
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=32, patch_size=16)
    text = LlamaConfig(vocab_size=len(words), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                       pad_token_id=0, bos_token_id=1, eos_token_id=2)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=vocab["<image>"],
                         vision_feature_layer=-1)
    model = LlavaForConditionalGeneration(config).eval()
    template = ("{% for m in messages %}{{ m['role'].upper() }}: {% for c in m['content'] %}"
                "{% if c['type'] == 'image' %}<image> {% else %}{{ c['text'] }} {% endif %}{% endfor %}"
                "{% endfor %}ASSISTANT:")
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer, patch_size=16, vision_feature_select_strategy="default", num_additional_image_tokens=1,
        chat_template=template)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def write_tiny_weights(folder: Path, seed: int = 0, which: Iterable[str] = ("clipseg", "dino", "sam", "vlm")
                       ) -> dict[str, Path]:
    """Random-initialised miniature weights for every slot, saved with each library's own save function.

    Returns {slot name: path}, ready for `--weights NAME=PATH`. Written once per folder (reused when present).
    """
    quiet_transformers()
    folder = Path(folder)
    writers = {"clipseg": (folder / "clipseg", write_tiny_clipseg),
               "dino": (folder / "grounding-dino", write_tiny_grounding_dino),
               "sam": (folder / "sam_vit_tiny.pth", write_tiny_sam),
               "vlm": (folder / "llava", write_tiny_llava)}
    out = {}
    for name in which:
        path, write = writers[name]
        done = path.is_file() if name == "sam" else (path / "config.json").is_file()
        out[name] = path if done else write(path, seed)
    return out
