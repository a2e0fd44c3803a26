"""The price arithmetic, table-driven: the default table reproduces the provider's own figures,
provider ticks are split in proportion to the table's prices, and the dry-run's upper bound
covers reasoning tokens.

The anchor is the published capture of a grok-4.3 batch line (``shared/xai-batch-api.md``):
198 prompt tokens (192 of them cached), 1 completion token and 118 reasoning tokens, billed
2,747,200 ticks.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from raif_batches import create_batch
from raif_batches.exceptions import BatchConfigurationError
from raif_batches.models import ModelCompletion
from raif_batches.pricing import (
    completion_cost,
    estimate_batch_cost,
    price_for,
    ticks_to_usd,
)

from .helpers import run_to_end, user

TICK = Decimal("1e-10")

# model, prompt, cached, output (completion + reasoning), provider ticks -> prompt, output, total
COSTS: list[tuple[str, int, int, int, int | None, str | None, str | None, str | None]] = [
    # The capture, priced from the table alone: exactly the provider's 2,747,200 ticks.
    ("grok-4.3", 198, 192, 1 + 118, None, "0.0000367200", "0.0002380000", "0.0002747200"),
    # The same with the provider's ticks: the split matches the table's to the tick.
    ("grok-4.3", 198, 192, 1 + 118, 2_747_200, "0.0000367200", "0.0002380000", "0.0002747200"),
    # The grok-4.20-0309 family is priced alike, by prefix.
    (
        "grok-4.20-0309-reasoning",
        198,
        192,
        119,
        None,
        "0.0000367200",
        "0.0002380000",
        "0.0002747200",
    ),
    # Ticks that differ from the table: the total is the provider's, split by the table's ratio
    # (100 prompt tokens at $1.25 cost what 50 output tokens at $2.50 cost: half and half).
    ("grok-4.3", 100, 0, 50, 1_000_001, "0.0000500000", "0.0000500001", "0.0001000001"),
    # A line with no output tokens: everything is prompt cost.
    ("grok-4.3", 10, 0, 0, 1_000, "0.0000001000", "0.0000000000", "0.0000001000"),
    # A model without a price: ticks give the total, the split is unknown; no ticks, nothing.
    ("mystery-model", 10, 0, 10, 5_000, None, None, "0.0000005000"),
    ("mystery-model", 10, 0, 10, None, None, None, None),
    # More cached tokens than prompt tokens (a hostile answer): capped at the prompt.
    ("grok-4.3", 10, 50, 0, None, "0.0000016000", "0.0000000000", "0.0000016000"),
]


@pytest.mark.parametrize(
    ("model", "prompt", "cached", "output", "ticks", "want_prompt", "want_output", "want_total"),
    COSTS,
)
def test_completion_cost(
    model: str,
    prompt: int,
    cached: int,
    output: int,
    ticks: int | None,
    want_prompt: str | None,
    want_output: str | None,
    want_total: str | None,
) -> None:
    cost = completion_cost(
        price_for(model),
        prompt_tokens=prompt,
        cached_tokens=cached,
        output_tokens=output,
        provider_ticks=ticks,
    )
    as_decimal = [None if v is None else Decimal(v) for v in (want_prompt, want_output, want_total)]
    assert [cost.prompt, cost.output, cost.total] == as_decimal
    if cost.prompt is not None and cost.output is not None:
        assert cost.prompt + cost.output == cost.total


def test_the_capture_costs_exactly_its_ticks() -> None:
    cost = completion_cost(
        price_for("grok-4.3"),
        prompt_tokens=198,
        cached_tokens=192,
        output_tokens=1 + 118,
        provider_ticks=None,
    )
    assert cost.total == ticks_to_usd(2_747_200) == 2_747_200 * TICK


@pytest.mark.parametrize(
    ("model", "reasoning"),
    [
        ("grok-4.3", 32_768),
        ("grok-4.20-0309-reasoning", 32_768),
        ("grok-4.20-0309-non-reasoning", 0),  # the longest matching prefix wins
    ],
)
def test_reasoning_allowance_by_model(model: str, reasoning: int) -> None:
    price = price_for(model)
    assert price is not None and price.max_reasoning_tokens == reasoning


@pytest.mark.parametrize(
    "entry",
    [
        {"input": "NaN", "output": "1"},
        {"input": "Infinity", "output": "1"},
        {"input": "-1", "output": "1"},
        {"input": "1", "output": "1", "max_reasoning_tokens": -5},
        {"input": "1", "output": "1", "max_reasoning_tokens": "lots"},
    ],
)
def test_bad_price_entries_are_configuration_errors(settings: Any, entry: dict[str, Any]) -> None:
    settings.RAIF_BATCHES = {**settings.RAIF_BATCHES, "PRICING": {"grok-4.3": entry}}
    with pytest.raises(BatchConfigurationError, match="PRICING"):
        price_for("grok-4.3")


@pytest.mark.django_db
def test_dry_run_maximum_covers_reasoning_tokens(emulator: Any) -> None:
    """grok-4.3 reasons on every line (the emulator bills 100+ reasoning tokens each) far past
    a small ``max_tokens``: the upper bound must still cover what the lines cost."""
    batch = create_batch(
        model="grok-4.3",
        requests=[
            {"custom_id": f"r-{i}", "messages": user(f"Think about {i}"), "max_tokens": 5}
            for i in range(4)
        ],
    )
    estimate = estimate_batch_cost(batch)
    run_to_end(batch)
    price = price_for("grok-4.3")
    actual = Decimal(0)
    for line in ModelCompletion.objects.filter(batch=batch, status="completed"):
        assert line.reasoning_tokens and line.reasoning_tokens > 5
        cost = completion_cost(
            price,
            prompt_tokens=line.prompt_tokens or 0,
            cached_tokens=line.cached_tokens or 0,
            output_tokens=(line.completion_tokens or 0) + (line.reasoning_tokens or 0),
            provider_ticks=None,
        )
        assert cost.total is not None
        actual += cost.total
    assert actual > 0 and estimate.high is not None
    assert estimate.high >= actual
