"""Small builders shared by the tests."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from raif_batches import create_batch
from raif_batches.models import ModelCompletionBatch
from raif_batches.polling import poll, submit


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def make_batch(
    count: int = 3, *, model: str = "grok-4.3", failing: int = 0, **kwargs: Any
) -> ModelCompletionBatch:
    requests: list[dict[str, Any]] = [
        {"custom_id": f"req-{i:03d}", "messages": user(f"Question number {i}")}
        for i in range(count)
    ]
    for i in range(failing):
        requests.append(
            {
                "custom_id": f"bad-{i:03d}",
                "messages": user(f"[[emulator:error Line {i} violates the usage policy]]"),
            }
        )
    return create_batch(provider="xai", model=model, requests=requests, **kwargs)


def run_to_end(batch: ModelCompletionBatch, rounds: int = 50) -> ModelCompletionBatch:
    """Submit (if pending), then poll with --force until the results are stored."""
    batch.refresh_from_db()
    if batch.status == "pending":
        report = submit([batch.pk])
        assert report.ok, report.errors
    for _ in range(rounds):
        batch.refresh_from_db()
        if batch.results_fetched_at is not None:
            return batch
        report = poll([batch.pk], force=True)
        assert report.fatal is None, report.fatal
    raise AssertionError(f"batch {batch.pk} not finished after {rounds} polls: {batch.status}")


def ticks_of(payload: dict[str, Any] | None) -> Decimal:
    assert payload is not None
    return Decimal(payload["usage"]["cost_in_usd_ticks"]) * Decimal("1e-10")
