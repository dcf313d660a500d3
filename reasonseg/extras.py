"""The optional parts of the package (pyproject extras) and the check a command makes before it needs one.

The scoring-only install (`pip install reasonseg`) has no extras; a command that needs one says which, in one line,
before it writes anything.
"""
from __future__ import annotations

import importlib.util
import os

from .errors import MissingExtraError

# The import names of each extra's packages (pyproject.toml lists them by distribution name).
EXTRAS: dict[str, tuple[str, ...]] = {
    "hub": ("datasets", "huggingface_hub", "pyarrow"),
    "llm": ("openai",),
    "model": ("torch", "torchvision", "transformers", "segment_anything", "peft", "accelerate", "yaml"),
    "serve": ("fastapi", "uvicorn", "sqlalchemy", "jinja2", "multipart"),
}


def missing_modules(*modules: str) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


def require_extra(extra: str, what: str, modules: tuple[str, ...] | None = None) -> None:
    """Raise MissingExtraError naming the pip command when any of `modules` (default: the whole extra) is absent.

    `what` names the thing that needs it, e.g. "reasonseg publish" or "--parquet".
    """
    missing = missing_modules(*(modules if modules is not None else EXTRAS[extra]))
    if missing:
        raise MissingExtraError(f"{what} needs {', '.join(missing)} (the '{extra}' extra): "
                                f"pip install 'reasonseg[{extra}]'")


def name_deepspeed_accelerator() -> None:
    """DeepSpeed, which transformers and accelerate import when it is installed, logs a warning on stdout when it
    finds no GPU ("Setting accelerator to CPU ..."). Where torch sees no CUDA device, name the CPU first through
    DeepSpeed's own DS_ACCELERATOR variable, so a model command prints nothing of it. A DS_ACCELERATOR the user set
    wins; without DeepSpeed or torch this does nothing (and imports nothing)."""
    if "DS_ACCELERATOR" in os.environ or missing_modules("deepspeed", "torch"):
        return
    import torch

    if not torch.cuda.is_available():
        os.environ["DS_ACCELERATOR"] = "cpu"
