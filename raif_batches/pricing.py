"""Prices, batch discounts and xAI's money unit, in exact Decimal arithmetic.

The provider's own ``cost_in_usd_ticks`` is the truth when a result carries it; the pricing
table is used only where it does not (another provider, an estimate before submission).

``RAIF_BATCHES["PRICING"]`` maps a model name (or a prefix ending in ``*``) to USD per
million tokens and a batch discount, merged over :data:`DEFAULT_PRICING`::

    RAIF_BATCHES = {"PRICING": {
        "grok-4.3": {"input": "3.00", "cached_input": "0.75", "output": "15.00",
                     "batch_discount": "0.20"},
    }}
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .conf import get_setting
from .exceptions import BatchConfigurationError

#: 1 tick = 1e-10 USD.
USD_PER_TICK = Decimal("1e-10")
COST_QUANTUM = Decimal("1e-10")
MILLION = Decimal(1_000_000)

#: List prices as published for xAI's API on 2026-07-13 (a public price mirror checked against
#: xAI's console), cached input at 0.25x of input (xAI's prompt-caching guide), and the 20%
#: batch discount xAI applied to these models in late 2026. Prices change: override in settings.
PRICING_TAKEN_ON = "2026-07-13"
DEFAULT_PRICING: dict[str, dict[str, str]] = {
    "grok-4.3": {
        "input": "1.25",
        "cached_input": "0.3125",
        "output": "2.50",
        "batch_discount": "0.20",
    },
    "grok-4.20-0309-*": {
        "input": "1.25",
        "cached_input": "0.3125",
        "output": "2.50",
        "batch_discount": "0.20",
    },
}
PRICE_KEYS = ("input", "cached_input", "output", "batch_discount")


@dataclass(frozen=True)
class ModelPrice:
    input: Decimal
    cached_input: Decimal
    output: Decimal
    batch_discount: Decimal

    @classmethod
    def parse(cls, model: str, raw: Any) -> ModelPrice:
        if not isinstance(raw, dict):
            raise BatchConfigurationError(
                f"RAIF_BATCHES['PRICING'][{model!r}] must be a dict with keys {PRICE_KEYS}."
            )
        values: dict[str, Decimal] = {}
        for key in PRICE_KEYS:
            default = "0" if key == "batch_discount" else None
            if key == "cached_input":
                default = str(raw.get("input", "0"))
            value = raw.get(key, default)
            try:
                values[key] = Decimal(str(value))
            except Exception as error:
                raise BatchConfigurationError(
                    f"RAIF_BATCHES['PRICING'][{model!r}][{key!r}] is not a number: {value!r}."
                ) from error
            if values[key] < 0:
                raise BatchConfigurationError(
                    f"RAIF_BATCHES['PRICING'][{model!r}][{key!r}] must not be negative."
                )
        if values["batch_discount"] >= 1:
            raise BatchConfigurationError(
                f"RAIF_BATCHES['PRICING'][{model!r}]['batch_discount'] is a fraction below 1 "
                "(0.20 for 20%)."
            )
        return cls(**values)


def pricing_table() -> dict[str, ModelPrice]:
    configured = get_setting("PRICING")
    if not isinstance(configured, dict):
        raise BatchConfigurationError("RAIF_BATCHES['PRICING'] must be a dict keyed by model.")
    merged = {**DEFAULT_PRICING, **configured}
    return {model: ModelPrice.parse(model, raw) for model, raw in merged.items()}


def price_for(model: str) -> ModelPrice | None:
    table = pricing_table()
    if model in table:
        return table[model]
    for pattern, price in table.items():
        if pattern.endswith("*") and model.startswith(pattern[:-1]):
            return price
    return None


def quantize(value: Decimal) -> Decimal:
    return value.quantize(COST_QUANTUM)


def ticks_to_usd(ticks: int | str) -> Decimal:
    return quantize(Decimal(int(ticks)) * USD_PER_TICK)


@dataclass(frozen=True)
class Cost:
    prompt: Decimal | None
    output: Decimal | None
    total: Decimal | None


def completion_cost(
    price: ModelPrice | None,
    *,
    prompt_tokens: int,
    cached_tokens: int,
    output_tokens: int,
    provider_ticks: int | None,
) -> Cost:
    """The cost of one completion.

    ``output_tokens`` includes reasoning tokens, which are billed at the completion rate. With
    provider ticks the total is exact and the prompt/output split follows the price table's
    proportions (or is unknown when the model has no price: ``price`` is ``price_for(model)``).
    """
    estimate: tuple[Decimal, Decimal] | None = None
    if price is not None:
        factor = 1 - price.batch_discount
        uncached = max(prompt_tokens - cached_tokens, 0)
        prompt = (uncached * price.input + cached_tokens * price.cached_input) / MILLION * factor
        output = output_tokens * price.output / MILLION * factor
        estimate = (quantize(prompt), quantize(output))
    if provider_ticks is not None:
        total = ticks_to_usd(provider_ticks)
        if estimate is None or sum(estimate) == 0:
            return Cost(prompt=None, output=None, total=total)
        prompt_share = quantize(total * estimate[0] / (estimate[0] + estimate[1]))
        return Cost(prompt=prompt_share, output=total - prompt_share, total=total)
    if estimate is None:
        return Cost(prompt=None, output=None, total=None)
    return Cost(prompt=estimate[0], output=estimate[1], total=estimate[0] + estimate[1])


#: Output tokens assumed for a request that sets no ``max_tokens``, for the upper estimate.
ASSUMED_MAX_OUTPUT_TOKENS = 4096
CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class CostEstimate:
    requests: int
    prompt_tokens: int
    low: Decimal | None
    high: Decimal | None

    def describe(self) -> str:
        if self.low is None or self.high is None:
            return f"unknown (no price for this model; ~{self.prompt_tokens} prompt tokens)"
        return f"${self.low:.4f} to ${self.high:.4f} (~{self.prompt_tokens} prompt tokens)"


def estimate_batch_cost(batch: Any) -> CostEstimate:
    """A cost range before submission: prompt tokens guessed from text length (4 chars a token);
    low assumes every prompt token cached and no output, high no cache and every request using
    its ``max_tokens`` (or 4096)."""
    price = price_for(batch.model)
    requests = 0
    prompt_tokens = 0
    output_cap = 0
    rows = batch.completions.values_list("messages", "max_tokens").order_by("pk")
    for messages, max_tokens in rows.iterator(chunk_size=2000):
        requests += 1
        text = sum(len(str(m.get("content") or "")) for m in messages if isinstance(m, dict))
        prompt_tokens += text // CHARS_PER_TOKEN + 4 * len(messages)
        output_cap += max_tokens or ASSUMED_MAX_OUTPUT_TOKENS
    if price is None:
        return CostEstimate(requests, prompt_tokens, None, None)
    factor = 1 - price.batch_discount
    low = prompt_tokens * price.cached_input / MILLION * factor
    high = (prompt_tokens * price.input + output_cap * price.output) / MILLION * factor
    return CostEstimate(requests, prompt_tokens, quantize(low), quantize(high))
