"""Image preprocessing of docs/protocol.md §5, giving the original's input tensors exactly: SAM sees the whole image,
CLIP a centre crop.

SAM branch: the long side resized to 1024 (segment-anything's `ResizeLongestSide`: new side = int(side * scale +
0.5), PIL bilinear), normalised with SAM's pixel mean/std on 0-255 RGB, zero-padded at the bottom and right.
CLIP branch: what transformers 4.31's `CLIPImageProcessor` did with a uint8 RGB array: the short side resized to
`size` with PIL bicubic (long side `int(size * long / short)`), a centre crop (`top = (h - crop) // 2`), x 1/255 in
float64 then float32, (x - mean) / std in float32, channels first. Current transformers resize with torchvision
instead, which moves about 0.25 % of the values by one grey level; so the processor is ours.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ReasonSegError
from ..sam import SAM_PIXEL_MEAN, SAM_PIXEL_STD

SAM_SIZE = 1024
PREPROCESSOR_CONFIG = "preprocessor_config.json"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
BICUBIC = 3  # PIL's resample code, as preprocessor_config.json stores it


@dataclass
class PreparedImage:
    sam: torch.Tensor                   # 3 x 1024 x 1024
    clip: torch.Tensor                  # 3 x S x S
    resize_size: tuple[int, int]        # (h, w) inside the SAM pad
    original_size: tuple[int, int]      # (H, W)


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """H x W x 3 uint8 RGB, as the reference reads images (OpenCV, then BGR -> RGB)."""
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ReasonSegError("cannot read the image", path=str(path), hint="is it a JPEG or PNG file?")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def _pil_resize(image: np.ndarray, height: int, width: int, resample: int) -> np.ndarray:
    from PIL import Image

    return np.array(Image.fromarray(image).resize((width, height), resample=resample))


# ---------------------------------------------------------------------------------------------- SAM branch

def sam_resize_size(height: int, width: int, size: int = SAM_SIZE) -> tuple[int, int]:
    scale = size * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def sam_input(image: np.ndarray, size: int = SAM_SIZE) -> tuple[torch.Tensor, tuple[int, int]]:
    from PIL import Image

    h, w = sam_resize_size(image.shape[0], image.shape[1], size)
    resized = _pil_resize(image, h, w, Image.BILINEAR)
    x = torch.from_numpy(resized).permute(2, 0, 1).float()
    mean = torch.tensor(SAM_PIXEL_MEAN).view(3, 1, 1)
    std = torch.tensor(SAM_PIXEL_STD).view(3, 1, 1)
    x = (x - mean) / std
    return F.pad(x, (0, size - w, 0, size - h)), (h, w)


# ---------------------------------------------------------------------------------------------- CLIP branch

def _edge(value, key: str) -> int:
    """A side from 4.31's int, a newer dict, or transformers 5's SizeDict."""
    if isinstance(value, (int, float)):
        return int(value)
    return int(value[key] if isinstance(value, dict) else getattr(value, key))


@dataclass(frozen=True)
class ClipPreprocessor:
    """CLIP's image preprocessing as transformers 4.31 did it (see the module docstring)."""

    size: int = 224                      # the short side after resizing
    crop_height: int = 224
    crop_width: int = 224
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    rescale_factor: float = 1 / 255
    resample: int = BICUBIC
    do_resize: bool = True
    do_center_crop: bool = True
    do_rescale: bool = True
    do_normalize: bool = True

    @classmethod
    def from_dict(cls, doc: dict) -> ClipPreprocessor:
        crop = doc.get("crop_size", 224)
        return cls(size=_edge(doc.get("size", 224), "shortest_edge"),
                   crop_height=_edge(crop, "height"), crop_width=_edge(crop, "width"),
                   mean=tuple(doc.get("image_mean", CLIP_MEAN)), std=tuple(doc.get("image_std", CLIP_STD)),
                   rescale_factor=float(doc.get("rescale_factor", 1 / 255)), resample=int(doc.get("resample", 3)),
                   **{k: bool(doc.get(k, True)) for k in ("do_resize", "do_center_crop", "do_rescale",
                                                           "do_normalize")})

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> ClipPreprocessor:
        """From a vision tower folder's `preprocessor_config.json` (4.31's int sizes or the newer dicts), or a hub
        id's in the Hugging Face cache."""
        path = Path(folder) / PREPROCESSOR_CONFIG
        if not Path(folder).is_dir():
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(str(folder), PREPROCESSOR_CONFIG)
            path = Path(cached) if isinstance(cached, str) else path
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise ReasonSegError("no preprocessor_config.json in the vision tower folder", path=str(folder),
                                 hint="copy it from openai/clip-vit-large-patch14 (or -336)") from None
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ReasonSegError(f"unreadable preprocessor config ({exc})", path=str(path)) from None

    @classmethod
    def of(cls, processor) -> ClipPreprocessor:
        """Ours, or the same settings read off a transformers `CLIPImageProcessor`."""
        if isinstance(processor, cls):
            return processor
        return cls.from_dict({k: getattr(processor, k) for k in (
            "size", "crop_size", "image_mean", "image_std", "rescale_factor", "resample", "do_resize",
            "do_center_crop", "do_rescale", "do_normalize") if getattr(processor, k, None) is not None})

    def to_dict(self) -> dict:
        return {"crop_size": {"height": self.crop_height, "width": self.crop_width}, "do_center_crop":
                self.do_center_crop, "do_normalize": self.do_normalize, "do_rescale": self.do_rescale,
                "do_resize": self.do_resize, "do_convert_rgb": True, "image_mean": list(self.mean),
                "image_std": list(self.std), "image_processor_type": "CLIPImageProcessor",
                "feature_extractor_type": "CLIPFeatureExtractor", "resample": self.resample,
                "rescale_factor": self.rescale_factor, "size": {"shortest_edge": self.size}}

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / PREPROCESSOR_CONFIG).write_text(json.dumps(self.to_dict(), indent=2) + "\n",
                                                       encoding="utf-8")

    def __call__(self, image: np.ndarray) -> torch.Tensor:
        """3 x crop_height x crop_width float32 from an H x W x 3 uint8 RGB array."""
        x = image
        if self.do_resize:
            h, w = x.shape[:2]
            short, long = (w, h) if w <= h else (h, w)
            new_short, new_long = self.size, int(self.size * long / short)
            x = _pil_resize(x, *((new_long, new_short) if w <= h else (new_short, new_long)), self.resample)
        if self.do_center_crop:
            h, w = x.shape[:2]
            top, left = (h - self.crop_height) // 2, (w - self.crop_width) // 2
            if top < 0 or left < 0:
                raise ReasonSegError(f"the image ({h}x{w} after resizing) is smaller than CLIP's crop "
                                     f"({self.crop_height}x{self.crop_width})", hint="check preprocessor_config.json")
            x = x[top:top + self.crop_height, left:left + self.crop_width]
        x = np.asarray(x)
        if self.do_rescale:
            x = (x * self.rescale_factor).astype(np.float32)
        x = x.astype(np.float32)
        if self.do_normalize:
            x = (x - np.array(self.mean, np.float32)) / np.array(self.std, np.float32)
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def prepare_image(image: np.ndarray, processor, sam_size: int = SAM_SIZE) -> PreparedImage:
    """Both branches' inputs; `processor` is a `ClipPreprocessor` or a transformers `CLIPImageProcessor` (only its
    settings are used)."""
    sam, resize_size = sam_input(image, sam_size)
    clip = ClipPreprocessor.of(processor)(image)
    return PreparedImage(sam, clip, resize_size, (image.shape[0], image.shape[1]))
