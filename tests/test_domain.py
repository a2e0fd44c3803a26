"""From results to the user's models: sources, handlers, signals, retry_failed, estimates."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection

from example_project.tickets.models import Ticket
from raif_batches import create_batch, retry_failed
from raif_batches.models import ModelCompletionBatch
from raif_batches.polling import poll
from raif_batches.pricing import estimate_batch_cost
from raif_batches.signals import batch_finished, batch_submitted, completions_finished

from .helpers import make_batch, run_to_end, user

pytestmark = pytest.mark.django_db

CALLS: list[dict[str, Any]] = []


def recording_handler(batch: ModelCompletionBatch) -> None:
    CALLS.append(
        {
            "batch": batch.pk,
            "completed": batch.completions.filter(status="completed").count(),
            "in_transaction": connection.in_atomic_block,
        }
    )


FAILURES_LEFT = {"count": 0}


def flaky_handler(batch: ModelCompletionBatch) -> None:
    if FAILURES_LEFT["count"] > 0:
        FAILURES_LEFT["count"] -= 1
        raise RuntimeError("the labels table is locked")
    CALLS.append({"batch": batch.pk})


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    FAILURES_LEFT["count"] = 0


def test_source_links_completion_to_any_model(emulator: Any) -> None:
    tickets = [Ticket.objects.create(subject=f"s{i}", body="b") for i in range(3)]
    batch = create_batch(
        requests=[
            {"custom_id": f"t-{t.pk}", "messages": user(t.subject), "source": t} for t in tickets
        ]
    )
    run_to_end(batch)
    for ticket in tickets:
        completion = batch.completions.get(batch_custom_id=f"t-{ticket.pk}")
        assert completion.source == ticket
        assert completion.status == "completed"


@pytest.mark.django_db(transaction=True)
def test_handler_called_once_after_results_outside_transactions(emulator: Any) -> None:
    batch = make_batch(3, handler=f"{__name__}.recording_handler")
    run_to_end(batch)
    assert CALLS == [{"batch": batch.pk, "completed": 3, "in_transaction": False}]
    poll([batch.pk], force=True)
    poll([batch.pk], force=True)
    assert len(CALLS) == 1
    batch.refresh_from_db()
    assert batch.handler_called_at is not None and batch.handler_attempts == 1


def test_failing_handler_is_recorded_retried_then_never_again(emulator: Any) -> None:
    FAILURES_LEFT["count"] = 2
    batch = make_batch(1, handler=f"{__name__}.flaky_handler")
    run_to_end(batch)
    batch.refresh_from_db()
    assert CALLS == []
    assert batch.handler_error == "RuntimeError: the labels table is locked"
    poll([batch.pk])  # a later cron run retries the handler
    batch.refresh_from_db()
    assert batch.handler_attempts == 2 and batch.handler_called_at is None
    poll([batch.pk])
    batch.refresh_from_db()
    assert CALLS == [{"batch": batch.pk}]
    assert batch.handler_called_at is not None and batch.handler_error == ""
    poll([batch.pk])
    assert len(CALLS) == 1


def test_handler_gives_up_after_max_attempts(emulator: Any, settings: Any) -> None:
    settings.RAIF_BATCHES = {**settings.RAIF_BATCHES, "HANDLER_MAX_ATTEMPTS": 2}
    FAILURES_LEFT["count"] = 10
    batch = make_batch(1, handler=f"{__name__}.flaky_handler")
    run_to_end(batch)
    for _ in range(4):
        poll([batch.pk])
    batch.refresh_from_db()
    assert batch.handler_attempts == 2 and batch.handler_gave_up
    assert FAILURES_LEFT["count"] == 8


@pytest.mark.django_db(transaction=True)
def test_signals_after_commit_one_per_page(emulator: Any, settings: Any) -> None:
    settings.RAIF_BATCHES = {**settings.RAIF_BATCHES, "RESULTS_PAGE_SIZE": 2}
    seen: list[tuple[str, Any]] = []

    def on_submitted(sender: Any, batch: Any, **kwargs: Any) -> None:
        seen.append(("submitted", batch.provider_batch_id))

    def on_page(sender: Any, batch: Any, completions: Any, **kwargs: Any) -> None:
        seen.append(("page", sorted(c.status for c in completions)))

    def on_finished(sender: Any, batch: Any, status: str, counts: Any, **kwargs: Any) -> None:
        seen.append(("finished", (status, counts)))

    batch_submitted.connect(on_submitted)
    completions_finished.connect(on_page)
    batch_finished.connect(on_finished)
    try:
        batch = run_to_end(make_batch(4, failing=1))
    finally:
        batch_submitted.disconnect(on_submitted)
        completions_finished.disconnect(on_page)
        batch_finished.disconnect(on_finished)
    assert seen[0] == ("submitted", batch.provider_batch_id)
    pages = [value for kind, value in seen if kind == "page"]
    assert len(pages) == 3  # five results in pages of two
    assert sum(len(p) for p in pages) == 5
    assert seen[-1] == ("finished", ("ended", {"total": 5, "completed": 4, "failed": 1}))


def test_retry_failed_creates_linked_batch_with_sources(emulator: Any) -> None:
    ticket = Ticket.objects.create(subject="s", body="b")
    batch = create_batch(
        requests=[
            {"custom_id": "ok", "messages": user("fine")},
            {
                "custom_id": "bad",
                "messages": user("[[emulator:error busy]]"),
                "source": ticket,
                "temperature": 0.1,
                "max_tokens": 20,
                "seed": 7,
            },
        ],
        name="first",
    )
    run_to_end(batch)
    retry = retry_failed(batch)
    assert retry.retry_of == batch and retry.status == "pending"
    (completion,) = retry.completions.all()
    assert completion.batch_custom_id == "bad"
    assert completion.source == ticket
    assert completion.request_body("grok-4.3") == {
        "model": "grok-4.3",
        "messages": user("[[emulator:error busy]]"),
        "temperature": 0.1,
        "max_tokens": 20,
        "seed": 7,
    }
    with pytest.raises(ValueError, match="no failed completions"):
        retry_failed(make_batch(1))


def test_cost_estimate_range_brackets_the_real_cost(emulator: Any) -> None:
    batch = create_batch(
        requests=[
            {"custom_id": f"e-{i}", "messages": user("Explain batching " * 20), "max_tokens": 400}
            for i in range(5)
        ]
    )
    estimate = estimate_batch_cost(batch)
    assert estimate.requests == 5 and estimate.low is not None and estimate.high is not None
    assert 0 < estimate.low < estimate.high
    assert "$" in estimate.describe()
