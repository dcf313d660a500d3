"""One place where methods are registered by name; the CLI lists them (`reasonseg predict --list`)."""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from ..errors import MethodError
from ..schema import Query, Sample


class Method(Protocol):
    def predict(self, sample: Sample, query: Query) -> np.ndarray:
        """A binary mask (H x W, bool or 0/1) at the sample's original size."""


@dataclass(frozen=True)
class MethodContext:
    data_root: Path
    weights: Path | None = None
    device: str = "cpu"


@dataclass(frozen=True)
class MethodInfo:
    name: str
    description: str
    build: Callable[[MethodContext], Method]
    weights: str | None = None      # what to download, when the method needs weights
    oracle: bool = False            # reads the ground truth: an analysis ceiling, never a real method

    @property
    def extra(self) -> str | None:
        """The package extra the method needs: a method with weights runs a torch model."""
        return "model" if self.weights is not None else None

    def weights_present(self, ctx: MethodContext | None = None) -> bool | None:
        if self.weights is None:
            return None
        return bool(ctx and ctx.weights and Path(ctx.weights).exists())


_REGISTRY: dict[str, MethodInfo] = {}
# Every other module of this package may register methods when imported (one module per method); heavy ones import
# their dependencies inside `build`, so listing methods stays cheap.
_NOT_METHODS = {"registry", "predict", "weights"}


def register(name: str, description: str, weights: str | None = None, oracle: bool = False):
    def decorator(build: Callable[[MethodContext], Method]):
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} is registered twice")
        _REGISTRY[name] = MethodInfo(name, description, build, weights, oracle)
        return build
    return decorator


def _load_all() -> None:
    package = importlib.import_module("reasonseg.baselines")
    for info in pkgutil.iter_modules(package.__path__):
        if info.name not in _NOT_METHODS:
            importlib.import_module(f"reasonseg.baselines.{info.name}")


def methods() -> dict[str, MethodInfo]:
    _load_all()
    return dict(sorted(_REGISTRY.items()))


def get_method(name: str) -> MethodInfo:
    available = methods()
    if name not in available:
        raise MethodError(f"unknown method {name!r}; available: {', '.join(available)}",
                          hint="see `reasonseg predict --list`")
    return available[name]
