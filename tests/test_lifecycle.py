"""A batch's life through the emulator over real HTTP: each provider behaviour on its own."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.utils import timezone

from raif_batches.polling import poll, submit
from raif_batches.providers.xai import parse_time
from raif_batches.validation import UnknownModelWarning

from .helpers import make_batch, run_to_end, ticks_of, user

pytestmark = pytest.mark.django_db


def test_end_to_end_completed_and_failed_with_exact_costs(emulator: Any) -> None:
    batch = make_batch(4, failing=1)
    batch = run_to_end(batch)

    assert batch.status == "ended"
    assert batch.request_counts == {
        "total": 5,
        "pending": 0,
        "succeeded": 4,
        "failed": 1,
        "cancelled": 0,
    }
    done = list(batch.completions.filter(status="completed").order_by("batch_custom_id"))
    assert [c.batch_custom_id for c in done] == ["req-000", "req-001", "req-002", "req-003"]
    for completion in done:
        assert completion.raw_response.startswith("Emulated answer to: Question number")
        assert completion.prompt_tokens and completion.completion_tokens
        assert completion.total_cost == ticks_of(completion.response_payload)
        assert completion.completed_at is not None
    failed = batch.completions.get(status="failed")
    assert failed.failure_reason == "Line 0 violates the usage policy"
    assert failed.total_cost is None
    assert batch.total_cost == sum(ticks_of(c.response_payload) for c in done)
    provider_total = batch.provider_response["cost_breakdown"]["total_cost_usd_ticks"]
    assert batch.total_cost == Decimal(provider_total) * Decimal("1e-10")
    # Exactly one provider batch, one upload, and the results read once.
    assert emulator.state.count_calls("create_batch") == 1
    assert emulator.state.count_calls("upload_file") == 1


def test_every_line_sent_as_the_exact_body(emulator: Any) -> None:
    from raif_batches import create_batch

    batch = create_batch(
        requests=[
            {
                "custom_id": "t-1",
                "messages": user("Hi"),
                "temperature": 0.3,
                "max_tokens": 9,
                "top_p": 0.5,
                "response_format": {"type": "json_object"},
            }
        ]
    )
    submit([batch.pk])
    batch.refresh_from_db()
    uploaded = emulator.state.files[batch.input_file_id].content.decode()
    import json

    (line,) = [json.loads(raw) for raw in uploaded.splitlines() if raw]
    assert line == {
        "custom_id": "t-1",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "grok-4.3",
            "messages": user("Hi"),
            "temperature": 0.3,
            "max_tokens": 9,
            "top_p": 0.5,
            "response_format": {"type": "json_object"},
        },
    }
    provider_batch = emulator.state.batches[batch.provider_batch_id]
    assert provider_batch.name == batch.provider_batch_name


def test_validation_phase_reads_as_submitted(emulator: Any) -> None:
    emulator.config.validation_reads = 2
    batch = make_batch(2)
    submit([batch.pk])
    poll([batch.pk], force=True)
    batch.refresh_from_db()
    assert batch.status == "submitted"
    assert batch.request_counts["total"] == 0
    assert batch.started_at is not None
    assert set(batch.completions.values_list("started_at", flat=True)) == {batch.started_at}
    assert run_to_end(batch).status == "ended"


def test_progress_is_in_progress_until_counters_settle(emulator: Any) -> None:
    emulator.config.requests_per_read = 2
    batch = make_batch(5)
    submit([batch.pk])
    statuses = []
    for _ in range(10):
        poll([batch.pk], force=True)
        batch.refresh_from_db()
        statuses.append(batch.status)
        if batch.results_fetched_at:
            break
    assert "in_progress" in statuses
    assert statuses[-1] == "ended"
    assert batch.completions.filter(status="completed").count() == 5


def test_rejected_batch_fails_with_provider_message(emulator: Any) -> None:
    with pytest.warns(UnknownModelWarning):  # a model the price table does not know
        batch = make_batch(3, model="grok-4.6")
    batch = run_to_end(batch)
    assert batch.status == "failed"
    assert batch.failure_error == "rejected by provider"
    assert batch.failure_reason == (
        "JSONL file validation failed: Model grok-4.6 is not supported for batch processing."
    )
    assert set(batch.completions.values_list("status", "failure_error")) == {
        ("failed", "batch failed")
    }
    assert batch.ended_at is not None


@pytest.mark.parametrize("time_format", ["date", "rfc3339"])
def test_date_only_and_rfc3339_times(emulator: Any, time_format: str) -> None:
    emulator.config.time_format = time_format
    batch = make_batch(1)
    submit([batch.pk])
    batch.refresh_from_db()
    assert batch.expires_at is not None
    assert timezone.now() + timedelta(days=28) < batch.expires_at
    assert batch.expires_at < timezone.now() + timedelta(days=32)


def test_parse_time_reads_a_date_as_the_whole_day() -> None:
    assert parse_time("2026-09-27", end_of_day=True) == datetime(2026, 9, 28, tzinfo=UTC)
    assert parse_time("2026-09-27") == datetime(2026, 9, 27, tzinfo=UTC)
    assert parse_time("2026-08-25T12:30:00Z") == datetime(2026, 8, 25, 12, 30, tzinfo=UTC)
    assert parse_time(None) is None
    assert parse_time("yesterday-ish") is None


def test_absent_state_keeps_last_known_counts(emulator: Any) -> None:
    emulator.config.requests_per_read = 1
    batch = make_batch(3)
    submit([batch.pk])
    poll([batch.pk], force=True)
    poll([batch.pk], force=True)
    batch.refresh_from_db()
    before = dict(batch.request_counts)
    assert before["total"] == 3
    emulator.config.omit_state_reads = 1
    poll([batch.pk], force=True)
    batch.refresh_from_db()
    assert batch.request_counts == before
    assert batch.status == "in_progress"
    assert run_to_end(batch).status == "ended"


@pytest.mark.parametrize("end", [None, ""])
def test_pagination_ends_on_null_or_empty_token(
    emulator: Any, settings: Any, end: str | None
) -> None:
    settings.RAIF_BATCHES = {**settings.RAIF_BATCHES, "RESULTS_PAGE_SIZE": 2}
    emulator.config.pagination_end = end
    batch = run_to_end(make_batch(5))
    assert batch.completions.filter(status="completed").count() == 5
    assert emulator.state.count_calls("list_results") == 3


def test_results_matched_by_id_not_by_order(emulator: Any) -> None:
    from raif_batches import create_batch

    ids = ["zeta", "alpha", "mike", "bravo"]
    batch = create_batch(
        requests=[{"custom_id": cid, "messages": user(f"About {cid}")} for cid in ids]
    )
    run_to_end(batch)
    for completion in batch.completions.all():
        assert completion.raw_response == f"Emulated answer to: About {completion.batch_custom_id}"


@pytest.mark.parametrize("shape", ["string", "object", "error_message"])
def test_three_error_shapes(emulator: Any, shape: str) -> None:
    emulator.config.error_shape = shape
    batch = run_to_end(make_batch(1, failing=2))
    failed = batch.completions.filter(status="failed").order_by("batch_custom_id")
    assert [c.failure_reason for c in failed] == [
        "Line 0 violates the usage policy",
        "Line 1 violates the usage policy",
    ]
    assert {c.failure_error for c in failed} == {"provider error"}


def test_unknown_ids_are_logged_and_skipped(emulator: Any, caplog: Any) -> None:
    emulator.config.extra_result_ids = {"not-ours"}
    with caplog.at_level(logging.WARNING, logger="raif_batches"):
        batch = run_to_end(make_batch(2))
    assert "unknown id 'not-ours'" in caplog.text
    assert batch.completions.count() == 2
    assert batch.completions.filter(status="completed").count() == 2


def test_entries_never_returned_fail_as_missing(emulator: Any, settings: Any) -> None:
    # No wait for lagging results here (tests/test_hostile_results.py covers the wait).
    settings.RAIF_BATCHES = {**settings.RAIF_BATCHES, "RESULTS_WAIT_SECONDS": 0}
    emulator.config.missing_result_ids = {"req-001"}
    batch = run_to_end(make_batch(3))
    missing = batch.completions.get(batch_custom_id="req-001")
    assert missing.status == "failed"
    assert missing.failure_error == "entry missing"
    assert batch.completions.filter(status="completed").count() == 2


def test_reasoning_and_cached_tokens(emulator: Any) -> None:
    from raif_batches import create_batch

    system = {"role": "system", "content": "You are a careful support agent. " * 20}
    batch = create_batch(
        requests=[
            {"custom_id": f"r-{i}", "messages": [system, *user(f"Question {i}")]} for i in range(3)
        ]
    )
    run_to_end(batch)
    completions = list(batch.completions.order_by("batch_custom_id"))
    for completion in completions:
        usage = completion.response_payload["usage"]
        assert (
            completion.reasoning_tokens
            == usage["completion_tokens_details"]["reasoning_tokens"]
            > 0
        )
        # xAI's quirk: reasoning is outside completion_tokens but inside total_tokens.
        assert completion.total_tokens == (
            completion.prompt_tokens + completion.completion_tokens + completion.reasoning_tokens
        )
    assert any(c.cached_tokens for c in completions)
    assert completions[0].prompt_token_cost + completions[0].output_token_cost == (
        completions[0].total_cost
    )


def test_structured_output_parsed_or_failed_with_raw_text_kept(emulator: Any) -> None:
    from raif_batches import create_batch

    fmt = {"type": "json_object"}
    batch = create_batch(
        requests=[
            {"custom_id": "good", "messages": user("Label it"), "response_format": fmt},
            {
                "custom_id": "bad",
                "messages": user("Label [[emulator:invalid-json]]"),
                "response_format": fmt,
            },
        ]
    )
    run_to_end(batch)
    good = batch.completions.get(batch_custom_id="good")
    bad = batch.completions.get(batch_custom_id="bad")
    assert good.status == "completed" and isinstance(good.response_json, dict)
    assert bad.status == "failed" and bad.failure_error == "invalid JSON answer"
    assert bad.raw_response and bad.total_cost is not None  # paid for, and kept


def test_tool_calls_stored(emulator: Any) -> None:
    from raif_batches import create_batch

    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    batch = create_batch(
        requests=[
            {
                "custom_id": "t",
                "messages": user("Find it [[emulator:tool-call]]"),
                "tools": tools,
            }
        ]
    )
    run_to_end(batch)
    completion = batch.completions.get()
    assert completion.finish_reason == "tool_calls"
    assert completion.response_tool_calls[0]["function"]["name"] == "lookup"


def test_cancel_keeps_results_produced_and_waits_for_reverted_counts(
    emulator: Any, settings: Any
) -> None:
    settings.RAIF_BATCHES = {**settings.RAIF_BATCHES, "CANCEL_GRACE_SECONDS": 0.5}
    emulator.config.requests_per_read = 2
    emulator.config.cancel_revert_count = 2
    emulator.config.cancel_revert_after = 5
    batch = make_batch(8)
    submit([batch.pk])
    poll([batch.pk], force=True)  # validation
    poll([batch.pk], force=True)  # two finished
    batch.refresh_from_db()
    batch = batch.cancel()
    assert batch.status == "cancelling"
    cancelled_at_first = batch.request_counts["cancelled"]
    assert cancelled_at_first >= 2
    emulator.state.advance(6)  # the provider flips two cancelled lines back to succeeded
    time.sleep(0.6)
    poll([batch.pk], force=True)
    batch.refresh_from_db()
    # The counts changed, so the grace period starts again: not trusted yet.
    assert batch.status == "cancelling"
    time.sleep(0.6)
    batch = run_to_end(batch)
    assert batch.status == "canceled"
    succeeded = batch.completions.filter(status="completed").count()
    assert succeeded == batch.request_counts["succeeded"] >= 4
    cancelled = batch.completions.filter(status="failed")
    assert cancelled.count() == 8 - succeeded
    assert {c.failure_reason for c in cancelled} <= {
        "Batch cancelled",
        "The batch was canceled and the provider returned no result for it.",
    }


def test_expired_batch_keeps_finished_results(emulator: Any) -> None:
    emulator.config.requests_per_read = 2
    emulator.config.expire_after_seconds = 1.5
    emulator.config.time_format = "rfc3339"
    batch = make_batch(6)
    submit([batch.pk])
    poll([batch.pk], force=True)
    poll([batch.pk], force=True)
    time.sleep(2.1)  # both clocks pass the expiry: the provider cancels what is pending
    batch = run_to_end(batch)
    assert batch.status == "expired"
    succeeded = batch.request_counts["succeeded"]
    assert 2 <= succeeded < 6
    assert batch.completions.filter(status="completed").count() == succeeded
    assert batch.completions.filter(status="failed").count() == 6 - succeeded


def test_pending_batch_cancelled_locally_without_provider(emulator: Any) -> None:
    batch = make_batch(2)
    batch.cancel()
    batch = run_to_end(batch)
    assert batch.status == "canceled"
    assert emulator.state.calls == []
    assert set(batch.completions.values_list("failure_error", flat=True)) == {"batch canceled"}


def test_results_fetched_exactly_once(emulator: Any) -> None:
    batch = run_to_end(make_batch(3))
    reads = emulator.state.count_calls("list_results")
    stamp = batch.results_fetched_at
    poll([batch.pk], force=True)
    assert batch.fetch_results() == 0
    batch.refresh_from_db()
    assert emulator.state.count_calls("list_results") == reads
    assert batch.results_fetched_at == stamp
