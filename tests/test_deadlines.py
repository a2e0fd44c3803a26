"""Deadlines and cancellations: our own maximum age, stuck submissions, a time-based grace.

xAI gives a request no deadline (it may stay pending for long), so a batch past
``MAX_BATCH_AGE`` is cancelled at the provider, what it produced is kept, and the rest expires.
A batch stuck before or during submission says why on its row and is picked up again. After a
cancel, counts are trusted only once they stood still for ``CANCEL_GRACE_SECONDS`` of time.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from raif_batches.emulator import Fault
from raif_batches.models import ModelCompletionBatch
from raif_batches.polling import poll, submit
from raif_batches.providers.xai import XAIStrategy

from .helpers import make_batch, run_to_end

pytestmark = pytest.mark.django_db


def reads_of(emulator: Any, batch: ModelCompletionBatch) -> int:
    path = f"/v1/batches/{batch.provider_batch_id}"
    return sum(1 for c in emulator.state.calls if c.endpoint == "get_batch" and c.path == path)


def age(batch: ModelCompletionBatch, seconds: float) -> None:
    """Make the batch look submitted ``seconds`` ago."""
    then = timezone.now() - timedelta(seconds=seconds)
    ModelCompletionBatch.objects.filter(pk=batch.pk).update(created_at=then, submitted_at=then)


def test_batch_past_max_age_is_cancelled_harvested_and_the_rest_expired(
    emulator: Any, settings: Any
) -> None:
    settings.RAIF_BATCHES = {**settings.RAIF_BATCHES, "MAX_BATCH_AGE": 3600}
    emulator.config.requests_per_read = 2
    batch, young = make_batch(6), make_batch(6)
    submit()
    poll(force=True)  # validation
    poll(force=True)  # two lines of each finished
    age(batch, 3601)
    age(young, 3500)
    report = poll(force=True)
    assert report.ok, report.errors
    assert report.cancelled_for_age == [batch.pk]
    batch.refresh_from_db()
    cancels = [c.path for c in emulator.state.calls if c.endpoint == "cancel_batch"]
    assert cancels == [f"/v1/batches/{batch.provider_batch_id}:cancel"]
    batch.refresh_from_db()
    assert batch.status == "expired" and batch.results_fetched_at is not None
    assert batch.failure_error == "max age exceeded"
    assert "MAX_BATCH_AGE" in batch.failure_reason
    assert batch.cancel_reason == "deadline"
    # What the provider produced before the deadline is kept; the rest failed as expired.
    completed = batch.completions.filter(status="completed")
    assert completed.count() == batch.request_counts["succeeded"] == 2
    assert all(c.raw_response and c.total_cost for c in completed)
    expired = batch.completions.filter(status="failed")
    assert expired.count() == batch.request_counts["cancelled"] == 4
    assert set(expired.values_list("failure_error", flat=True)) == {"request expired"}
    young.refresh_from_db()
    assert young.status == "in_progress" and young.cancel_requested_at is None


def test_deadline_waits_for_reverted_counts_like_any_cancel(emulator: Any, settings: Any) -> None:
    settings.RAIF_BATCHES = {
        **settings.RAIF_BATCHES,
        "MAX_BATCH_AGE": 3600,
        "CANCEL_GRACE_SECONDS": 0.5,
    }
    emulator.config.requests_per_read = 1
    emulator.config.cancel_revert_count = 2
    emulator.config.cancel_revert_after = 0.2
    batch = make_batch(5)
    submit()
    poll(force=True)
    poll(force=True)  # one line finished
    age(batch, 7200)
    poll(force=True)
    batch.refresh_from_db()
    assert batch.status == "cancelling" and batch.results_fetched_at is None
    time.sleep(0.6)
    poll(force=True)  # sees the reverted counts: the grace period starts again
    batch.refresh_from_db()
    assert batch.status == "cancelling"
    time.sleep(0.6)
    batch = run_to_end(batch)
    assert batch.status == "expired"
    # Two lines flipped back to succeeded after the cancel: their results are stored.
    assert batch.completions.filter(status="completed").count() == 3
    assert batch.completions.filter(failure_error="request expired").count() == 2


def test_submission_stuck_on_a_lost_create_is_visible_and_resumable(emulator: Any) -> None:
    batch = make_batch(2)
    emulator.state.add_fault(Fault("create_batch", "drop"))
    emulator.state.add_fault(Fault("list_batches", "status", status=503, times=None))
    submit([batch.pk])
    report = poll([batch.pk], force=True)  # the provider is down while we look the batch up
    assert len(report.errors) == 1 and "provider unavailable" in report.errors[0]
    batch.refresh_from_db()
    assert batch.status == "submitting"
    assert batch.failure_error == "provider unavailable"
    assert "on GET /batches: HTTP 503" in batch.failure_reason
    assert batch.claimed_by == ""  # released: the next run may resume it
    emulator.state.clear_faults()
    assert poll([batch.pk], force=True).submitted == [batch.pk]
    batch = run_to_end(batch)
    assert batch.status == "ended" and batch.failure_error == ""
    assert emulator.state.count_calls("create_batch") == 2 and len(emulator.state.batches) == 1


class TinyLinesStrategy(XAIStrategy):
    max_line_bytes = 170


def test_a_line_refused_before_upload_leaves_the_batch_pending_with_the_reason(
    emulator: Any, settings: Any
) -> None:
    batch = make_batch(2)
    # The line grew after create_batch checked it (edited rows, or a smaller provider limit).
    batch.completions.filter(batch_custom_id="req-001").update(
        messages=[{"role": "user", "content": "x" * 200}]
    )
    settings.RAIF_BATCHES = {
        **settings.RAIF_BATCHES,
        "PROVIDERS": {"xai": f"{__name__}.TinyLinesStrategy"},
    }
    report = submit([batch.pk])
    assert report.submitted == [] and "line 2 is" in report.errors[0]
    batch.refresh_from_db()
    assert (batch.status, batch.failure_error) == ("pending", "invalid request")
    assert "xAI accepts at most 170" in batch.failure_reason
    assert emulator.state.calls == []  # nothing was sent, nothing half-created
    assert batch.completions.filter(status="pending").count() == 2


def test_cancel_grace_is_time_not_reads(emulator: Any, settings: Any) -> None:
    """Ten reads in quick succession do not settle a cancel; one read after the grace period
    does, however few reads came before it. The grace is long enough for the ten reads to
    fit in it on a loaded machine (a CI run of three suites at once once took 1.06 s for them
    and the two cancels)."""
    grace = 3.0
    settings.RAIF_BATCHES = {**settings.RAIF_BATCHES, "CANCEL_GRACE_SECONDS": grace}
    emulator.config.requests_per_read = 1
    close, apart = make_batch(4), make_batch(4)
    submit()
    poll(force=True)
    poll(force=True)  # one line of each finished
    close.refresh_from_db()
    apart.refresh_from_db()
    cancelled_at = timezone.now()
    close.cancel()
    apart.cancel()

    before = reads_of(emulator, close)
    for _ in range(10):
        poll([close.pk], force=True)
    close.refresh_from_db()
    assert reads_of(emulator, close) == before + 10
    assert timezone.now() - cancelled_at < timedelta(seconds=grace)
    assert close.status == "cancelling" and close.results_fetched_at is None
    # The schedule brings the next read back when the grace period can have run out.
    assert close.next_poll_at is not None
    assert close.next_poll_at - timezone.now() <= timedelta(seconds=grace)

    time.sleep(grace)
    before = reads_of(emulator, apart)
    poll([apart.pk], force=True)
    apart.refresh_from_db()
    assert reads_of(emulator, apart) == before + 1
    assert apart.status == "canceled" and apart.results_fetched_at is not None

    poll([close.pk], force=True)
    close.refresh_from_db()
    assert close.status == "canceled" and close.results_fetched_at is not None
    for batch in (close, apart):
        assert batch.completions.filter(status="completed").count() == 1
        assert batch.completions.filter(status="failed").count() == 3
