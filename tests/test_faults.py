"""Provider faults injected for real: transient ones are retried, the others stop at once.

Transient faults (429 with ``Retry-After``, 5xx, dropped connections) are retried within the run
under the retry policy and never fail the command; a rejected key, a 404 or a 412 stops at once
with a specific message and changes nothing but the reason shown on the batch. Repeated and
overlapping result pages apply each result once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from raif_batches import signals
from raif_batches.emulator import EmulatorConfig, Fault, run_emulator
from raif_batches.models import ModelCompletion, ModelCompletionBatch
from raif_batches.polling import poll, submit

from .helpers import make_batch, run_to_end, ticks_of

pytestmark = pytest.mark.django_db

#: Seeds of the emulator's draws; each fails creates and uploads as well as reads, and 7 fails
#: the reconciliation's listing too.
FLAKY_SEEDS = (4, 7, 8)


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def statuses(emulator: Any, endpoint: str) -> list[int]:
    return [c.status for c in emulator.state.calls if c.endpoint == endpoint]


def submitted_batch(emulator: Any, count: int = 3) -> ModelCompletionBatch:
    batch = make_batch(count)
    assert submit([batch.pk]).submitted == [batch.pk]
    batch.refresh_from_db()
    return batch


def snapshot_of(batch: ModelCompletionBatch) -> dict[str, Any]:
    """Every column except the reason shown for a failure."""
    batch.refresh_from_db()
    row = {
        f.attname: getattr(batch, f.attname)
        for f in ModelCompletionBatch._meta.concrete_fields
        if f.attname not in ("failure_error", "failure_reason")
    }
    row["completions"] = list(batch.completions.order_by("pk").values())
    return row


def assert_every_result_once(emulator: Any, batch: ModelCompletionBatch, count: int) -> None:
    batch.refresh_from_db()
    assert batch.results_fetched_at is not None
    assert batch.completions.filter(status="completed").count() == count
    done = batch.completions.filter(status="completed")
    total = sum((ticks_of(c.response_payload) for c in done), Decimal(0))
    assert batch.total_cost == total
    ticks = batch.provider_response["cost_breakdown"]["total_cost_usd_ticks"]
    assert batch.total_cost == Decimal(ticks) * Decimal("1e-10")
    names = [b.name for b in emulator.state.batches.values()]
    assert names.count(batch.provider_batch_name) == 1


# --- transient faults: retried within the run ------------------------------------------------


def test_429_retry_after_is_honoured(emulator: Any) -> None:
    emulator.config.validation_reads = 0
    batch = submitted_batch(emulator)
    emulator.state.add_fault(Fault("get_batch", "status", status=429, retry_after=0.4))
    output = run("poll_batches", "--force")
    assert "Polled 1 batch(es)" in output
    reads = [c for c in emulator.state.calls if c.endpoint == "get_batch"]
    assert [c.status for c in reads] == [429, 200]
    # The backoff cap is 0.05s in these tests: only Retry-After explains the wait.
    assert reads[1].time - reads[0].time >= 0.4
    batch.refresh_from_db()
    assert batch.status == "ended" and batch.failure_error == ""


def test_retry_after_longer_than_the_budget_gives_up_without_waiting(
    emulator: Any, settings: Any
) -> None:
    settings.RAIF_BATCHES = {
        **settings.RAIF_BATCHES,
        "RETRY": {**settings.RAIF_BATCHES["RETRY"], "MAX_TOTAL_SECONDS": 1.0},
    }
    batch = submitted_batch(emulator)
    emulator.state.add_fault(Fault("get_batch", "status", status=429, retry_after=30))
    with pytest.raises(CommandError, match="provider unavailable: gave up after 1 attempt"):
        run("poll_batches", "--force")
    assert statuses(emulator, "get_batch") == [429]
    batch.refresh_from_db()
    assert batch.status == "submitted"


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_5xx_retried_on_every_idempotent_call(emulator: Any, status: int) -> None:
    batch = make_batch(3)
    for endpoint in ("upload_file", "get_batch", "list_results"):
        emulator.state.add_fault(Fault(endpoint, "status", status=status, times=2))
    batch = run_to_end(batch)
    assert statuses(emulator, "upload_file") == [status, status, 200]
    assert statuses(emulator, "get_batch")[:3] == [status, status, 200]
    assert statuses(emulator, "list_results") == [status, status, 200]
    assert batch.failure_error == ""
    assert_every_result_once(emulator, batch, 3)


def test_dropped_connections_retried(emulator: Any) -> None:
    emulator.config.requests_per_read = 1
    batch = make_batch(4)
    for endpoint in ("upload_file", "get_batch", "list_results", "cancel_batch"):
        emulator.state.add_fault(Fault(endpoint, "drop", times=2))
    submit([batch.pk])
    poll([batch.pk], force=True)
    poll([batch.pk], force=True)
    batch.refresh_from_db()
    batch.cancel()
    assert statuses(emulator, "cancel_batch") == [0, 0, 200]
    batch = run_to_end(batch)
    assert statuses(emulator, "upload_file") == [0, 0, 200]
    assert statuses(emulator, "list_results") == [0, 0, 200]
    assert batch.status == "canceled"
    done = batch.request_counts["succeeded"]
    assert done >= 1 and batch.completions.filter(status="completed").count() == done
    assert batch.completions.filter(status="failed").count() == 4 - done


def test_answers_cut_off_mid_body_are_retried_or_reconciled(emulator: Any) -> None:
    batch = make_batch(3)
    for endpoint in ("upload_file", "create_batch", "get_batch", "list_results"):
        emulator.state.add_fault(Fault(endpoint, "truncate"))
    report = submit([batch.pk])
    # The upload was sent again; the create was done but its answer cut: looked up, not resent.
    assert statuses(emulator, "upload_file") == [0, 200]
    assert report.submitted == [] and "looked up by name" in report.notes[0]
    batch = run_to_end(batch)
    assert statuses(emulator, "create_batch") == [0]
    assert statuses(emulator, "get_batch")[:2] == [0, 200]
    assert statuses(emulator, "list_results") == [0, 200]
    assert_every_result_once(emulator, batch, 3)


@pytest.fixture(params=FLAKY_SEEDS, ids=lambda seed: f"seed-{seed}")
def flaky_emulator(settings: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """An emulator on which a fifth of all calls, creates included, answer 503 or drop."""
    config = EmulatorConfig(transient_failure_rate=0.2, seed=request.param, requests_per_read=2)
    with run_emulator(config=config) as emulator:
        settings.RAIF_BATCHES = {
            **settings.RAIF_BATCHES,
            "XAI_BASE_URL": emulator.base_url,
            "XAI_API_KEY": emulator.api_key,
        }
        yield emulator


def test_a_fifth_of_all_calls_failing_transiently(flaky_emulator: Any) -> None:
    """Ten batches through submit and poll while 20% of calls fail: every batch ends with every
    result, one provider batch each, and the costs exact."""
    emulator = flaky_emulator
    batches = [make_batch(3 + number % 3, failing=number % 2) for number in range(10)]
    runs = 0
    while ModelCompletionBatch.objects.filter(results_fetched_at__isnull=True).exists():
        runs += 1
        assert runs <= 30, "batches did not finish"
        submit()
        poll(force=True)
    failed = Counter(c.endpoint for c in emulator.state.calls if c.status in (0, 503))
    assert sum(failed.values()) >= len(emulator.state.calls) // 10  # the faults did fire
    assert failed["create_batch"] and failed["upload_file"] and failed["get_batch"]
    for number, batch in enumerate(batches):
        batch.refresh_from_db()
        assert batch.status == "ended"
        assert batch.completions.count() == 3 + number % 3 + number % 2
        assert batch.completions.filter(status="failed").count() == number % 2
        assert_every_result_once(emulator, batch, 3 + number % 3)
    assert len(emulator.state.batches) == 10


# --- non-retryable answers: stop at once, change nothing else -------------------------------


def test_rejected_key_stops_polling_at_once(emulator: Any, settings: Any) -> None:
    batches = [submitted_batch(emulator) for _ in range(3)]
    before = [snapshot_of(b) for b in batches]
    calls = len(emulator.state.calls)
    settings.RAIF_BATCHES = {**settings.RAIF_BATCHES, "XAI_API_KEY": "xai-not-the-right-key"}
    with pytest.raises(CommandError) as caught:
        run("poll_batches", "--force")
    assert str(caught.value).startswith("xAI rejected the API key")
    # One call, answered 400, not retried, and no other batch read.
    assert [c.status for c in emulator.state.calls[calls:]] == [400]
    assert [snapshot_of(b) for b in batches] == before
    shown = ModelCompletionBatch.objects.exclude(failure_error="")
    assert [(b.failure_error, b.failure_reason[:40]) for b in shown] == [
        ("API key rejected", "HTTP 400: Incorrect API key provided. Yo")
    ]


def test_rejected_key_stops_submission_at_once(emulator: Any, settings: Any) -> None:
    batches = [make_batch(2) for _ in range(3)]
    settings.RAIF_BATCHES = {**settings.RAIF_BATCHES, "XAI_API_KEY": "xai-not-the-right-key"}
    with pytest.raises(CommandError, match=r"^xAI rejected the API key"):
        run("submit_batches")
    assert [c.status for c in emulator.state.calls] == [400]
    for batch in batches:
        batch.refresh_from_db()
        assert (batch.status, batch.input_file_id, batch.create_attempted_at) == (
            "pending",
            "",
            None,
        )
    assert ModelCompletionBatch.objects.filter(failure_error="API key rejected").count() == 1


def test_404_stops_at_once_and_changes_nothing_else(emulator: Any) -> None:
    batch = submitted_batch(emulator)
    before = snapshot_of(batch)
    emulator.state.add_fault(Fault("get_batch", "status", status=404))
    with pytest.raises(CommandError) as caught:
        run("poll_batches", "--force")
    assert str(caught.value) == (
        f"batch {batch.pk}: not found at provider: HTTP 404: Injected fault: HTTP 404"
    )
    assert statuses(emulator, "get_batch") == [404]
    assert snapshot_of(batch) == before
    assert batch.failure_error == "not found at provider"
    run_to_end(batch)  # the next run, with the fault gone, goes on
    assert_every_result_once(emulator, batch, 3)


def test_412_on_cancel_stops_at_once_and_changes_nothing_else(emulator: Any) -> None:
    emulator.config.requests_per_read = 1
    batch = submitted_batch(emulator, 4)
    poll([batch.pk], force=True)
    before = snapshot_of(batch)
    emulator.state.add_fault(Fault("cancel_batch", "status", status=412))
    with pytest.raises(CommandError, match=f"^batch {batch.pk}: request rejected by provider: "):
        run("cancel_batch", str(batch.pk))
    assert statuses(emulator, "cancel_batch") == [412]
    assert snapshot_of(batch) == before
    assert batch.cancel_requested_at is None


def test_400_on_create_fails_the_batch_with_the_provider_message(emulator: Any) -> None:
    batch = make_batch(2)
    emulator.state.add_fault(
        Fault(
            "create_batch",
            "status",
            status=400,
            body={"code": "Client specified an invalid argument", "error": "Name too long"},
        )
    )
    with pytest.raises(CommandError, match="request rejected by provider: HTTP 400: Name too"):
        run("submit_batches")
    batch.refresh_from_db()
    assert (batch.status, batch.failure_reason) == ("failed", "HTTP 400: Name too long")
    assert statuses(emulator, "create_batch") == [400]
    assert len(emulator.state.batches) == 0


# --- repeated and overlapping result pages --------------------------------------------------


@pytest.mark.parametrize("kind", ["repeat_page", "overlap_page"])
def test_repeated_and_overlapping_pages_apply_each_result_once(
    emulator: Any, settings: Any, kind: str, django_capture_on_commit_callbacks: Any
) -> None:
    settings.RAIF_BATCHES = {**settings.RAIF_BATCHES, "RESULTS_PAGE_SIZE": 3}
    batch = submitted_batch(emulator, 10)
    poll([batch.pk], force=True)  # validation
    emulator.state.add_fault(Fault("list_results", kind, times=3))
    finished: list[str] = []

    def record(sender: Any, completions: Any, **kwargs: Any) -> None:
        finished.extend(completions.values_list("batch_custom_id", flat=True))

    signals.completions_finished.connect(record)
    try:
        with django_capture_on_commit_callbacks(execute=True):
            report = poll([batch.pk], force=True)
    finally:
        signals.completions_finished.disconnect(record)
    assert report.ok, report.errors
    served = [c for c in emulator.state.calls if c.endpoint == "list_results"]
    assert len(served) > 4  # more pages than the ten results need: some came twice
    assert report.results_applied == 10
    assert sorted(finished) == sorted(batch.completions.values_list("batch_custom_id", flat=True))
    assert_every_result_once(emulator, batch, 10)


def test_a_page_token_that_never_moves_stops_and_resumes_without_double_counting(
    emulator: Any, settings: Any
) -> None:
    settings.RAIF_BATCHES = {**settings.RAIF_BATCHES, "RESULTS_PAGE_SIZE": 3}
    batch = submitted_batch(emulator, 7)
    poll([batch.pk], force=True)
    emulator.state.add_fault(Fault("list_results", "repeat_page", times=None))
    report = poll([batch.pk], force=True)
    assert "pagination token repeated" in report.errors[0]
    batch.refresh_from_db()
    assert batch.results_fetched_at is None
    applied_first = batch.completions.filter(status="completed").count()
    stamps = dict(
        batch.completions.filter(status="completed").values_list("batch_custom_id", "completed_at")
    )
    emulator.state.clear_faults()
    report = poll([batch.pk], force=True)
    assert report.results_applied == 7 - applied_first
    for custom_id, stamp in stamps.items():
        assert ModelCompletion.objects.get(batch=batch, batch_custom_id=custom_id).completed_at == (
            stamp
        )
    assert_every_result_once(emulator, batch, 7)
