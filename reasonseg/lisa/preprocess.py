"""Image preprocessing of protocol.md §5: SAM sees the whole image, CLIP a centre crop.

SAM branch: the long side resized to 1024 (segment-anything's `ResizeLongestSide`: new side = int(side * scale + 0.5),
bilinear via torchvision on a PIL image), normalised with SAM's pixel mean/std on 0-255 RGB, zero-padded at the
bottom and right to 1024 x 1024. CLIP branch: the standard CLIP image processor (short side resized, centre crop).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ReasonSegError
from ..sam import SAM_PIXEL_MEAN, SAM_PIXEL_STD

SAM_SIZE = 1024


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


def sam_resize_size(height: int, width: int, size: int = SAM_SIZE) -> tuple[int, int]:
    scale = size * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def sam_input(image: np.ndarray, size: int = SAM_SIZE) -> tuple[torch.Tensor, tuple[int, int]]:
    from segment_anything.utils.transforms import ResizeLongestSide

    resized = ResizeLongestSide(size).apply_image(image)
    x = torch.from_numpy(resized).permute(2, 0, 1).float()
    mean = torch.tensor(SAM_PIXEL_MEAN).view(3, 1, 1)
    std = torch.tensor(SAM_PIXEL_STD).view(3, 1, 1)
    x = (x - mean) / std
    h, w = x.shape[-2:]
    return F.pad(x, (0, size - w, 0, size - h)), (int(h), int(w))


def clip_input(image: np.ndarray, processor) -> torch.Tensor:
    return processor(images=image, return_tensors="pt")["pixel_values"][0]


def prepare_image(image: np.ndarray, processor, sam_size: int = SAM_SIZE) -> PreparedImage:
    sam, resize_size = sam_input(image, sam_size)
    return PreparedImage(sam, clip_input(image, processor), resize_size, (image.shape[0], image.shape[1]))
