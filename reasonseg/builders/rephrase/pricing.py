"""Prices per model (a shipped JSON table, overridable) and a token estimate for dry runs and budget checks."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ...errors import BuildError
from ...inputs import check_input


@dataclass(frozen=True)
class Price:
    input_per_1m: float
    output_per_1m: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.input_per_1m + completion_tokens * self.output_per_1m) / 1e6


@dataclass(frozen=True)
class PriceTable:
    prices: dict[str, Price]
    as_of: str
    origin: str

    def lookup(self, model: str) -> Price | None:
        """The exact entry, else the longest entry that the name extends with '-' (a dated snapshot)."""
        if model in self.prices:
            return self.prices[model]
        matches = [name for name in self.prices if model.startswith(name + "-")]
        return self.prices[max(matches, key=len)] if matches else None


def _parse(data: object, origin: str) -> dict[str, Price]:
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict):
        raise BuildError("price table must be an object with a 'models' mapping", path=origin,
                         hint='{"models": {"my-model": {"input_per_1m": 0.5, "output_per_1m": 1.5}}}')
    prices = {}
    for name, entry in models.items():
        try:
            prices[name] = Price(float(entry["input_per_1m"]), float(entry["output_per_1m"]))
        except (TypeError, KeyError, ValueError):
            raise BuildError("each model needs numeric input_per_1m and output_per_1m", path=origin,
                             field=f"models.{name}") from None
        if min(prices[name].input_per_1m, prices[name].output_per_1m) < 0:
            raise BuildError("prices must not be negative", path=origin, field=f"models.{name}")
    return prices


def load_prices(override: Path | None = None) -> PriceTable:
    """The shipped table, with the entries of `override` (same shape) replacing or adding models."""
    shipped = json.loads(resources.files(__package__).joinpath("prices.json").read_text(encoding="utf-8"))
    prices = _parse(shipped, "prices.json")
    as_of, origin = str(shipped.get("as_of", "")), "reasonseg/builders/rephrase/prices.json"
    if override is not None:
        try:
            data = json.loads(check_input(override, "price table", BuildError, "--prices").read_text(encoding="utf-8"))
        except OSError as exc:
            raise BuildError(f"cannot read the price table: {exc.strerror}", path=str(override)) from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BuildError(f"price table is not valid JSON: {exc}", path=str(override)) from None
        prices.update(_parse(data, str(override)))
        as_of = str(data.get("as_of", as_of)) if isinstance(data, dict) else as_of
        origin = f"{origin} + {override}"
    return PriceTable(prices, as_of, origin)


def estimate_tokens(text: str) -> int:
    """About one token per 4 bytes of UTF-8 (no tokenizer is bundled): good to ~20% for English prose."""
    return max(1, math.ceil(len(text.encode("utf-8")) / 4))


def estimate_prompt_tokens(messages: list[dict[str, str]]) -> int:
    # Chat formatting adds a few tokens per message and a few to prime the reply.
    return sum(estimate_tokens(m["content"]) + 4 for m in messages) + 3
