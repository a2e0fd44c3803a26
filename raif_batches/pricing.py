"""Prices, batch discounts and xAI's money unit, in exact Decimal arithmetic.

The provider's own ``cost_in_usd_ticks`` is the truth when a result carries it; the pricing
table is used only where it does not (another provider, an estimate before submission).

``RAIF_BATCHES["PRICING"]`` maps a model name (or a prefix ending in ``*``; the longest
matching prefix wins) to USD per million tokens and a batch discount, merged over
:data:`DEFAULT_PRICING`::

    RAIF_BATCHES = {"PRICING": {
        "grok-4.3": {"input": "1.25", "cached_input": "0.20", "output": "2.50",
                     "batch_discount": "0.20", "max_reasoning_tokens": 32768},
    }}

How xAI bills a line (and how the table prices it): cached tokens are part of
``prompt_tokens`` and billed at the cached rate, the rest of the prompt at the input rate;
reasoning tokens are not part of ``completion_tokens`` but billed at the output rate; the
discount comes off every token type. With the provider's ``cost_in_usd_ticks`` the total is the
provider's, and the table only splits it into prompt and output cost, in proportion to what each
part would cost at the table's prices. ``max_reasoning_tokens`` is the most reasoning one
request is assumed to use, for the upper bound of a ``--dry-run`` estimate.
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

#: Prices that reproduce the provider's own figures: the published capture of a grok-4.3 batch
#: line (198 prompt tokens of which 192 cached, 1 completion and 118 reasoning tokens, billed
#: 2,747,200 ticks) solves exactly with $1.25 input, $0.20 cached input and $2.50 output per
#: million tokens less the 20% batch discount xAI applied to these models in late 2026. The
#: grok-4.20-0309 family is billed alike. Prices change: override them in settings.
PRICING_TAKEN_ON = "2026-11-27"
#: Reasoning tokens one request is assumed to use at most, for the dry-run's upper bound.
ASSUMED_MAX_REASONING_TOKENS = 32_768
DEFAULT_PRICING: dict[str, dict[str, Any]] = {
    "grok-4.3": {
        "input": "1.25",
        "cached_input": "0.20",
        "output": "2.50",
        "batch_discount": "0.20",
    },
    "grok-4.20-0309-*": {
        "input": "1.25",
        "cached_input": "0.20",
        "output": "2.50",
        "batch_discount": "0.20",
    },
    "grok-4.20-0309-non-reasoning*": {
        "input": "1.25",
        "cached_input": "0.20",
        "output": "2.50",
        "batch_discount": "0.20",
        "max_reasoning_tokens": 0,
    },
    # --- OpenAI (provider "openai") ------------------------------------------------------------
    # OpenAI's published synchronous list prices (USD per million tokens) as known on
    # 2026-12-02, not re-checked since (no internet here); the Batch API takes 50% off every
    # token type, cached input included. Settings (RAIF_BATCHES["PRICING"]) override them.
    "gpt-5": {
        "input": "1.25",
        "cached_input": "0.125",
        "output": "10.00",
        "batch_discount": "0.50",
    },
    "gpt-5-*": {
        "input": "1.25",
        "cached_input": "0.125",
        "output": "10.00",
        "batch_discount": "0.50",
    },
    "gpt-5-mini*": {
        "input": "0.25",
        "cached_input": "0.025",
        "output": "2.00",
        "batch_discount": "0.50",
    },
    "gpt-5-nano*": {
        "input": "0.05",
        "cached_input": "0.005",
        "output": "0.40",
        "batch_discount": "0.50",
    },
    "gpt-4.1": {
        "input": "2.00",
        "cached_input": "0.50",
        "output": "8.00",
        "batch_discount": "0.50",
    },
    "gpt-4.1-2*": {
        "input": "2.00",
        "cached_input": "0.50",
        "output": "8.00",
        "batch_discount": "0.50",
    },
    "gpt-4.1-mini*": {
        "input": "0.40",
        "cached_input": "0.10",
        "output": "1.60",
        "batch_discount": "0.50",
    },
    "gpt-4.1-nano*": {
        "input": "0.10",
        "cached_input": "0.025",
        "output": "0.40",
        "batch_discount": "0.50",
    },
    "gpt-4o": {
        "input": "2.50",
        "cached_input": "1.25",
        "output": "10.00",
        "batch_discount": "0.50",
    },
    "gpt-4o-2*": {
        "input": "2.50",
        "cached_input": "1.25",
        "output": "10.00",
        "batch_discount": "0.50",
    },
    "gpt-4o-mini*": {
        "input": "0.15",
        "cached_input": "0.075",
        "output": "0.60",
        "batch_discount": "0.50",
    },
    # --- end of OpenAI ---------------------------------------------------------------------------
    # --- Anthropic (provider "anthropic") -------------------------------------------------
    # Anthropic's published synchronous list prices in USD per million tokens, as known when
    # this was written (late 2025; no internet here, not re-checked since): input, output,
    # cache reads (cached_input), 5-minute cache writes (cache_write, 1.25x input) and 1-hour
    # cache writes (cache_write_1h, 2x input). Message Batches bill all of them at 50%. The
    # prefixes cover the dated names (claude-haiku-4-5-20251001); Sonnet's long-context
    # (>200K input) rates are not modelled. Thinking counts inside max_tokens, so the dry-run's
    # upper bound adds no reasoning (max_reasoning_tokens 0). Settings (RAIF_BATCHES["PRICING"])
    # override them.
    "claude-haiku-4-5*": {
        "input": "1",
        "cached_input": "0.10",
        "output": "5",
        "batch_discount": "0.50",
        "cache_write": "1.25",
        "cache_write_1h": "2",
        "max_reasoning_tokens": 0,
    },
    "claude-sonnet-4-5*": {
        "input": "3",
        "cached_input": "0.30",
        "output": "15",
        "batch_discount": "0.50",
        "cache_write": "3.75",
        "cache_write_1h": "6",
        "max_reasoning_tokens": 0,
    },
    "claude-sonnet-4-0*": {
        "input": "3",
        "cached_input": "0.30",
        "output": "15",
        "batch_discount": "0.50",
        "cache_write": "3.75",
        "cache_write_1h": "6",
        "max_reasoning_tokens": 0,
    },
    "claude-sonnet-4-2025*": {
        "input": "3",
        "cached_input": "0.30",
        "output": "15",
        "batch_discount": "0.50",
        "cache_write": "3.75",
        "cache_write_1h": "6",
        "max_reasoning_tokens": 0,
    },
    "claude-3-7-sonnet*": {
        "input": "3",
        "cached_input": "0.30",
        "output": "15",
        "batch_discount": "0.50",
        "cache_write": "3.75",
        "cache_write_1h": "6",
        "max_reasoning_tokens": 0,
    },
    "claude-opus-4-5*": {
        "input": "5",
        "cached_input": "0.50",
        "output": "25",
        "batch_discount": "0.50",
        "cache_write": "6.25",
        "cache_write_1h": "10",
        "max_reasoning_tokens": 0,
    },
    "claude-opus-4-1*": {
        "input": "15",
        "cached_input": "1.50",
        "output": "75",
        "batch_discount": "0.50",
        "cache_write": "18.75",
        "cache_write_1h": "30",
        "max_reasoning_tokens": 0,
    },
    "claude-opus-4-0*": {
        "input": "15",
        "cached_input": "1.50",
        "output": "75",
        "batch_discount": "0.50",
        "cache_write": "18.75",
        "cache_write_1h": "30",
        "max_reasoning_tokens": 0,
    },
    "claude-opus-4-2025*": {
        "input": "15",
        "cached_input": "1.50",
        "output": "75",
        "batch_discount": "0.50",
        "cache_write": "18.75",
        "cache_write_1h": "30",
        "max_reasoning_tokens": 0,
    },
    "claude-3-5-haiku*": {
        "input": "0.80",
        "cached_input": "0.08",
        "output": "4",
        "batch_discount": "0.50",
        "cache_write": "1",
        "cache_write_1h": "1.60",
        "max_reasoning_tokens": 0,
    },
    "claude-3-haiku*": {
        "input": "0.25",
        "cached_input": "0.03",
        "output": "1.25",
        "batch_discount": "0.50",
        "cache_write": "0.30",
        "cache_write_1h": "0.50",
        "max_reasoning_tokens": 0,
    },
    # --- end of Anthropic --------------------------------------------------------------------
}
PRICE_KEYS = (
    "input",
    "cached_input",
    "output",
    "batch_discount",
    "cache_write",
    "cache_write_1h",
)


@dataclass(frozen=True)
class ModelPrice:
    input: Decimal
    cached_input: Decimal
    output: Decimal
    batch_discount: Decimal
    #: Input tokens written to the prompt cache (five-minute and one-hour writes), per million.
    cache_write: Decimal = Decimal(0)
    cache_write_1h: Decimal = Decimal(0)
    max_reasoning_tokens: int = ASSUMED_MAX_REASONING_TOKENS

    @classmethod
    def parse(cls, model: str, raw: Any) -> ModelPrice:
        if not isinstance(raw, dict):
            raise BatchConfigurationError(
                f"RAIF_BATCHES['PRICING'][{model!r}] must be a dict with keys {PRICE_KEYS}."
            )
        values: dict[str, Decimal] = {}
        for key in PRICE_KEYS:
            default = "0" if key == "batch_discount" else None
            if key in ("cached_input", "cache_write"):
                default = str(raw.get("input", "0"))
            elif key == "cache_write_1h":
                default = str(raw.get("cache_write", raw.get("input", "0")))
            value = raw.get(key, default)
            try:
                values[key] = Decimal(str(value))
            except Exception as error:
                raise BatchConfigurationError(
                    f"RAIF_BATCHES['PRICING'][{model!r}][{key!r}] is not a number: {value!r}."
                ) from error
            if not values[key].is_finite() or values[key] < 0:
                raise BatchConfigurationError(
                    f"RAIF_BATCHES['PRICING'][{model!r}][{key!r}] must be a non-negative "
                    f"number, not {value!r}."
                )
        if values["batch_discount"] >= 1:
            raise BatchConfigurationError(
                f"RAIF_BATCHES['PRICING'][{model!r}]['batch_discount'] is a fraction below 1 "
                "(0.20 for 20%)."
            )
        reasoning = raw.get("max_reasoning_tokens", ASSUMED_MAX_REASONING_TOKENS)
        if isinstance(reasoning, bool) or not isinstance(reasoning, int) or reasoning < 0:
            raise BatchConfigurationError(
                f"RAIF_BATCHES['PRICING'][{model!r}]['max_reasoning_tokens'] must be a "
                f"non-negative integer, not {reasoning!r}."
            )
        return cls(**values, max_reasoning_tokens=reasoning)


def pricing_table() -> dict[str, ModelPrice]:
    configured = get_setting("PRICING")
    if not isinstance(configured, dict):
        raise BatchConfigurationError("RAIF_BATCHES['PRICING'] must be a dict keyed by model.")
    merged = {**DEFAULT_PRICING, **configured}
    return {model: ModelPrice.parse(model, raw) for model, raw in merged.items()}


def price_for(model: str) -> ModelPrice | None:
    """The exact name's price, else the longest matching ``prefix*``'s, else None."""
    table = pricing_table()
    if model in table:
        return table[model]
    prefixes = [p for p in table if p.endswith("*") and model.startswith(p[:-1])]
    return table[max(prefixes, key=len)] if prefixes else None


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
    cache_write_tokens: int = 0,
    cache_write_1h_tokens: int = 0,
) -> Cost:
    """The cost of one completion.

    ``output_tokens`` includes reasoning tokens, which are billed at the completion rate; cached
    tokens (cache reads) and cache writes are part of ``prompt_tokens``, and the one-hour writes
    part of the cache writes; each part is billed at its own rate. With provider ticks the
    total is the provider's, and it is split between prompt and output in proportion to what
    each part costs at the table's prices (the parts always add up to the total); the split is
    unknown when the model has no price (``price`` is ``price_for(model)``) or the table prices
    both parts at zero.
    """
    parts: tuple[Decimal, Decimal] | None = None
    if price is not None:
        prompt_total = max(prompt_tokens, 0)
        cached = min(max(cached_tokens, 0), prompt_total)
        written = min(max(cache_write_tokens, 0), prompt_total - cached)
        written_1h = min(max(cache_write_1h_tokens, 0), written)
        uncached = prompt_total - cached - written
        prompt = (
            uncached * price.input
            + cached * price.cached_input
            + (written - written_1h) * price.cache_write
            + written_1h * price.cache_write_1h
        )
        output = max(output_tokens, 0) * price.output
        parts = (prompt, output)  # USD per million tokens, undiscounted: only ratios matter
    if provider_ticks is not None:
        total = ticks_to_usd(provider_ticks)
        if parts is None or sum(parts) == 0:
            return Cost(prompt=None, output=None, total=total)
        prompt_share = quantize(total * parts[0] / (parts[0] + parts[1]))
        return Cost(prompt=prompt_share, output=total - prompt_share, total=total)
    if price is None or parts is None:
        return Cost(prompt=None, output=None, total=None)
    factor = (1 - price.batch_discount) / MILLION
    prompt_cost, output_cost = quantize(parts[0] * factor), quantize(parts[1] * factor)
    return Cost(prompt=prompt_cost, output=output_cost, total=prompt_cost + output_cost)


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
    its ``max_tokens`` (or 4096) of output plus the model's ``max_reasoning_tokens`` of
    reasoning, which xAI bills at the output rate on top of the completion tokens."""
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
    output_cap += requests * price.max_reasoning_tokens
    factor = 1 - price.batch_discount
    low = prompt_tokens * price.cached_input / MILLION * factor
    high = (prompt_tokens * price.input + output_cap * price.output) / MILLION * factor
    return CostEstimate(requests, prompt_tokens, quantize(low), quantize(high))
