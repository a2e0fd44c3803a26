"""The status and results side of a batch's life, against a provider that answers badly.

Each test plays one hostile answer over real HTTP (a crafted body served by the emulator's
``raw`` fault, or one of its switches) and checks that no result is lost: results that lag
behind the counters are waited for, results gone for good end the harvest after a bound, a
rejection with lines still running is waited out like a cancel, a success outranks an error for
the same line whatever the page, a bad line is cleaned or failed alone, and one batch's odd
answer stays that batch's problem.
"""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from raif_batches import signals
from raif_batches.clock import db_now
from raif_batches.emulator import Fault
from raif_batches.models import ModelCompletion, ModelCompletionBatch
from raif_batches.polling import poll, submit

from .helpers import make_batch

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def quick(emulator: Any) -> None:
    """Lines validated at create and finished at the first read: one poll ends a batch."""
    emulator.config.validation_reads = 0
    emulator.config.requests_per_read = None
    emulator.config.seconds_per_request = 0.0
    emulator.config.omit_state_reads = 0
    emulator.config.cancel_revert_count = 0


def submitted(count: int = 3) -> ModelCompletionBatch:
    batch = make_batch(count)
    report = submit([batch.pk])
    assert report.submitted == [batch.pk], report.errors
    batch.refresh_from_db()
    return batch


def calls(emulator: Any, endpoint: str) -> int:
    return emulator.state.count_calls(endpoint)


def outcomes(batch: ModelCompletionBatch) -> dict[str, str]:
    return dict(
        batch.completions.order_by("batch_custom_id").values_list("batch_custom_id", "status")
    )


def success(custom_id: str, text: str = "An answer.", **usage: Any) -> dict[str, Any]:
    counts = {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}
    counts["cost_in_usd_ticks"] = 1000
    counts.update(usage)
    return {
        "batch_request_id": custom_id,
        "batch_result": {
            "response": {
                "chat_get_completion": {
                    "id": f"cmpl-{custom_id}",
                    "object": "chat.completion",
                    "model": "grok-4.3",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": counts,
                }
            }
        },
    }


def error(custom_id: str, message: str = "Internal error") -> dict[str, Any]:
    return {"batch_request_id": custom_id, "batch_result": {"error": message}}


def page(results: list[dict[str, Any]], token: str | None = None) -> bytes:
    return json.dumps({"results": results, "pagination_token": token}).encode()


def make_due(batch: ModelCompletionBatch, **shift: float) -> None:
    """Stand for time passing on the database clock: the next read of results is due now, and
    each named field moves that many seconds into the past."""
    now = db_now()
    values: dict[str, Any] = {"results_next_read_at": now - timedelta(seconds=1)}
    for name, seconds in shift.items():
        values[name] = now - timedelta(seconds=seconds)
    ModelCompletionBatch.objects.filter(pk=batch.pk).update(**values)


# --- 2. results lagging behind the counters ----------------------------------------------------


@pytest.mark.parametrize("lag", ["some lines unserved", "empty page", "empty object"])
def test_results_lagging_behind_the_counters_are_read_again_later(emulator: Any, lag: str) -> None:
    quick(emulator)
    batch = submitted(3)
    if lag == "some lines unserved":
        emulator.config.missing_result_ids = {"req-001", "req-002"}
    else:
        body = page([]) if lag == "empty page" else b"{}"
        emulator.add_fault(Fault("list_results", "raw", status=200, raw_body=body, times=None))
    output = run("poll_batches", "--force")
    assert "reading again later" in output

    batch.refresh_from_db()
    served = 1 if lag == "some lines unserved" else 0
    assert batch.status == "ended" and batch.request_counts["succeeded"] == 3
    assert batch.results_fetched_at is None  # still awaiting harvest: nothing failed for good
    assert batch.results_lacking_since is not None
    assert batch.results_stored_count == served
    assert batch.results_next_read_at > batch.results_lacking_since
    assert batch.failure_error == "results incomplete"
    assert f"{served} of the 3 results" in batch.failure_reason
    assert list(outcomes(batch).values()).count("pending") == 3 - served

    # Not hammered: a run before the next read is due leaves the results alone.
    reads = calls(emulator, "list_results")
    run("poll_batches")
    assert calls(emulator, "list_results") == reads

    # The provider catches up; the next due run stores everything and ends the harvest.
    emulator.config.missing_result_ids = set()
    emulator.state.clear_faults()
    make_due(batch)
    run("poll_batches")
    batch.refresh_from_db()
    assert calls(emulator, "list_results") > reads
    assert batch.results_fetched_at is not None
    assert set(outcomes(batch).values()) == {"completed"}
    assert batch.failure_error == "" and batch.results_next_read_at is None


def test_results_never_served_are_failed_only_after_the_wait(emulator: Any) -> None:
    quick(emulator)
    emulator.config.missing_result_ids = {"req-002"}
    batch = submitted(3)
    run("poll_batches", "--force")
    batch.refresh_from_db()
    assert batch.results_fetched_at is None
    assert batch.completions.get(batch_custom_id="req-002").status == "pending"

    make_due(batch, results_lacking_since=6 * 3600 + 1)  # the default wait has passed
    run("poll_batches")
    batch.refresh_from_db()
    assert batch.results_fetched_at is not None
    missing = batch.completions.get(batch_custom_id="req-002")
    assert missing.status == "failed" and missing.failure_error == "entry missing"
    assert "never served" in missing.failure_reason and "waiting" in missing.failure_reason
    assert batch.completions.filter(status="completed").count() == 2
    assert batch.failure_error == "results missing"


# --- 4. results unavailable for good -----------------------------------------------------------


@pytest.mark.parametrize("status", [404, 410])
def test_results_gone_for_good_end_the_harvest_after_a_bound(
    emulator: Any, settings: Any, status: int
) -> None:
    settings.RAIF_BATCHES = {**settings.RAIF_BATCHES, "RESULTS_GONE_ATTEMPTS": 3}
    quick(emulator)
    batch = submitted(2)
    body = json.dumps({"code": "Some requested entity was not found", "error": "gone"})
    emulator.add_fault(
        Fault("list_results", "raw", status=status, raw_body=body.encode(), times=None)
    )
    for attempt in (1, 2):
        with pytest.raises(CommandError, match=f"batch {batch.pk}:"):
            run("poll_batches", "--force")
        batch.refresh_from_db()
        assert batch.results_fetched_at is None and batch.results_read_attempts == attempt
        assert batch.failure_error  # the reason is shown while it is retried

    run("poll_batches", "--force")  # the third attempt reaches the bound: exit 0
    batch.refresh_from_db()
    assert batch.status == "ended" and batch.results_fetched_at is not None
    assert batch.failure_error == "results unavailable"
    assert "no longer serves" in batch.failure_reason
    for line in batch.completions.all():
        assert line.status == "failed" and line.failure_error == "results unavailable"
        assert "results no longer available" in line.failure_reason.lower()

    reads = calls(emulator, "list_results")
    run("poll_batches", "--force")  # later runs exit 0 and leave the batch alone
    assert calls(emulator, "list_results") == reads == 3


# --- 5. a rejection with lines still pending ---------------------------------------------------


def batch_body(batch: ModelCompletionBatch, *, pending: int, success: int, message: str) -> bytes:
    return json.dumps(
        {
            "batch_id": batch.provider_batch_id,
            "name": batch.provider_batch_name,
            "create_time": "2026-11-27",
            "expire_time": "2026-12-27",
            "cancel_time": None,
            "cancel_by_xai_message": message,
            "state": {
                "num_requests": pending + success,
                "num_pending": pending,
                "num_success": success,
                "num_error": 0,
                "num_cancelled": 0,
            },
            "input_file_id": batch.input_file_id,
        }
    ).encode()


def test_rejection_with_lines_pending_is_waited_out_like_a_cancel(
    emulator: Any, settings: Any
) -> None:
    quick(emulator)
    emulator.config.seconds_per_request = 1000.0  # lines finish only as emulator time passes
    batch = submitted(3)
    message = "Batch killed: capacity"
    raw = batch_body(batch, pending=3, success=0, message=message)
    emulator.add_fault(Fault("get_batch", "raw", status=200, raw_body=raw, times=1))
    run("poll_batches", "--force")
    batch.refresh_from_db()
    assert batch.status == "cancelling"  # not failed while lines may still produce results
    assert batch.rejected_at is not None
    assert (batch.failure_error, batch.failure_reason) == ("rejected by provider", message)
    assert calls(emulator, "list_results") == 0

    # Every line finishes; the counters must still stand for the grace period first.
    settings.RAIF_BATCHES = {**settings.RAIF_BATCHES, "CANCEL_GRACE_SECONDS": 3600}
    emulator.state.advance(10_000)
    raw = batch_body(batch, pending=0, success=3, message=message)
    emulator.add_fault(Fault("get_batch", "raw", status=200, raw_body=raw, times=None))
    run("poll_batches", "--force")
    batch.refresh_from_db()
    assert batch.status == "cancelling" and calls(emulator, "list_results") == 0

    # Grace counted from when the rejection was first seen.
    ModelCompletionBatch.objects.filter(pk=batch.pk).update(
        rejected_at=db_now() - timedelta(seconds=3601),
        counts_changed_at=db_now() - timedelta(seconds=3601),
    )
    run("poll_batches", "--force")
    batch.refresh_from_db()
    assert batch.status == "failed" and batch.results_fetched_at is not None
    assert batch.failure_reason == message
    assert set(outcomes(batch).values()) == {"completed"}  # every result produced is kept


# --- 6. the same custom id twice ----------------------------------------------------------------


def test_a_success_outranks_an_error_for_the_same_line_whatever_the_page(emulator: Any) -> None:
    quick(emulator)
    batch = submitted(3)
    first = page(
        [
            error("req-000"),
            success("req-001", "one"),
            success("req-002", "two"),
            error("req-002"),  # after its success, on the same page
        ],
        token="page-2",
    )
    second = page([success("req-000", "zero"), error("req-001")])
    emulator.add_fault(Fault("list_results", "raw", status=200, raw_body=first, times=1))
    emulator.add_fault(Fault("list_results", "raw", status=200, raw_body=second, times=1))
    run("poll_batches", "--force")
    batch.refresh_from_db()
    assert batch.results_fetched_at is not None
    texts = dict(batch.completions.values_list("batch_custom_id", "raw_response"))
    assert texts == {"req-000": "zero", "req-001": "one", "req-002": "two"}
    assert set(outcomes(batch).values()) == {"completed"}
    assert batch.completions.filter(failure_error="").count() == 3
    assert str(batch.total_cost) == "3.000E-7"


# --- 11. one bad line --------------------------------------------------------------------------


def test_a_bad_line_is_cleaned_or_failed_alone_and_the_page_is_stored(emulator: Any) -> None:
    quick(emulator)
    batch = submitted(6)
    nul = success("req-000", "Hello\u0000 world")
    choice = nul["batch_result"]["response"]["chat_get_completion"]["choices"][0]
    choice["finish_reason"] = "stop\ud800"
    nul["batch_result"]["response"]["chat_get_completion"]["system_fingerprint"] = "fp\u0000"
    entries = [
        nul,
        success("req-001", "Counts", prompt_tokens=-5, completion_tokens=3_000_000_000),
        success("req-002", "Dear", cost_in_usd_ticks=10**21),
        success("req-003", "Fine"),
        error("req-004", "bad\u0000 thing \udc80"),
        success("req-005", "Odd", score=float("nan")),  # refused by the database as JSON
    ]
    body = json.dumps({"results": entries, "pagination_token": None}).encode()
    emulator.add_fault(Fault("list_results", "raw", status=200, raw_body=body, times=1))
    run("poll_batches", "--force")

    batch.refresh_from_db()
    assert batch.results_fetched_at is not None
    lines = {line.batch_custom_id: line for line in batch.completions.all()}
    cleaned = lines["req-000"]
    assert cleaned.status == "completed"
    assert (cleaned.raw_response, cleaned.finish_reason) == ("Hello world", "stop")
    assert cleaned.response_payload["system_fingerprint"] == "fp"
    notes = cleaned.response_payload["_raif_cleaned"]
    assert any(note.startswith("text:") for note in notes)
    assert any(note.startswith("finish_reason:") for note in notes)

    counts = lines["req-001"]
    assert counts.status == "completed" and counts.raw_response == "Counts"
    assert counts.prompt_tokens is None and counts.completion_tokens is None
    assert any("prompt_tokens: -5" in n for n in counts.response_payload["_raif_cleaned"])

    dear = lines["req-002"]
    assert dear.status == "failed" and dear.failure_error == "unstorable result"
    assert "ticks" in dear.failure_reason and dear.raw_response == "Dear"
    assert dear.total_cost is None

    assert lines["req-003"].status == "completed" and lines["req-003"].raw_response == "Fine"
    assert lines["req-004"].status == "failed"
    assert lines["req-004"].failure_reason == "bad thing "
    odd = lines["req-005"]
    assert odd.status == "failed" and odd.failure_error == "unstorable result"
    assert "could not be stored" in odd.failure_reason


def test_a_line_refused_at_the_start_of_a_big_page_fails_alone(
    emulator: Any, settings: Any
) -> None:
    """The page's rows are made as the write sends them: when the database refuses the first
    statement (statements of a few rows each, where statements are bounded by bytes), the rows
    not made yet are still stored, row by row."""
    settings.RAIF_BATCHES = {**settings.RAIF_BATCHES, "MAX_STATEMENT_BYTES": 20_000}
    quick(emulator)
    batch = submitted(600)
    entries = [success(f"req-{i:03d}", f"Answer {i} " + "words " * 40) for i in range(600)]
    entries[0] = success("req-000", "Odd", score=float("nan"))  # refused as JSON
    body = json.dumps({"results": entries, "pagination_token": None}).encode()
    emulator.add_fault(Fault("list_results", "raw", status=200, raw_body=body, times=1))
    run("poll_batches", "--force")

    batch.refresh_from_db()
    assert batch.results_fetched_at is not None
    odd = batch.completions.get(batch_custom_id="req-000")
    assert odd.status == "failed" and odd.failure_error == "unstorable result"
    stored = batch.completions.exclude(batch_custom_id="req-000")
    assert stored.filter(status="completed").count() == 599
    assert stored.get(batch_custom_id="req-599").raw_response.startswith("Answer 599 ")


# --- 12. one batch's odd answer -----------------------------------------------------------------


DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize("answer", ["json list", "deep nesting", "year 9999"])
def test_one_batch_odd_status_answer_does_not_stop_the_others(emulator: Any, answer: str) -> None:
    quick(emulator)
    odd, other = submitted(2), submitted(2)
    # The other batch has ended and awaits its harvest (its results could not be read at
    # first): this run reads only the odd batch's status.
    emulator.add_fault(Fault("list_results", "status", status=503, times=None))
    poll([other.pk], force=True)
    emulator.state.clear_faults()
    other.refresh_from_db()
    assert other.status == "ended" and other.results_fetched_at is None
    if answer == "year 9999":
        view = json.loads(batch_body(odd, pending=0, success=2, message=""))
        view["cancel_by_xai_message"] = None
        view["expire_time"] = "9999-12-31"
        body = json.dumps(view).encode()
    else:
        body = b"[]" if answer == "json list" else DEEP
    status_before = odd.status
    emulator.add_fault(Fault("get_batch", "raw", status=200, raw_body=body, times=None))
    failure: CommandError | None = None
    try:
        run("poll_batches", "--force")
    except CommandError as error:  # anything else is a traceback, and fails the test
        failure = error
    other.refresh_from_db()
    assert other.results_fetched_at is not None  # harvested in the same run
    assert set(outcomes(other).values()) == {"completed"}
    odd.refresh_from_db()
    if answer != "year 9999" or odd.status == status_before:
        # Unreadable: recorded on that batch, status unchanged, one line and a non-zero exit.
        assert failure is not None and "\n" not in str(failure)
        assert str(failure).startswith(f"batch {odd.pk}:")
        assert odd.status == status_before and odd.failure_error and odd.failure_reason


@pytest.mark.django_db(transaction=True)
def test_a_batch_deleted_meanwhile_is_skipped_and_the_others_run(
    emulator: Any, settings: Any
) -> None:
    quick(emulator)
    # Pages of one result: each batch is harvested alone, page by page (batches read whole in
    # one page are stored together, see test_polling.py for a deletion among those).
    settings.RAIF_BATCHES = {**settings.RAIF_BATCHES, "RESULTS_PAGE_SIZE": 1}
    first, doomed, last = submitted(2), submitted(2), submitted(2)

    def delete_doomed(sender: Any, batch: ModelCompletionBatch, **kwargs: Any) -> None:
        # Another process deletes a claimed batch after the run harvested the one before it
        # (the middle one, whichever way the run orders them). The ORM refuses to delete a batch
        # whose results are unread, so the row goes as raw SQL would take it.
        if batch.pk != doomed.pk:
            ModelCompletion.objects.filter(batch_id=doomed.pk)._raw_delete("default")
            ModelCompletionBatch.objects.filter(pk=doomed.pk)._raw_delete("default")

    signals.completions_finished.connect(delete_doomed)
    try:
        output = run("poll_batches", "--force")  # exits 0
    finally:
        signals.completions_finished.disconnect(delete_doomed)
    assert "finished 2" in output
    assert not ModelCompletionBatch.objects.filter(pk=doomed.pk).exists()
    for batch in (first, last):
        batch.refresh_from_db()
        assert batch.results_fetched_at is not None
        assert set(outcomes(batch).values()) == {"completed"}


def test_a_cancel_time_far_ahead_does_not_hold_the_batch_for_ever(emulator: Any) -> None:
    """A provider cancel time ahead of our clock (here the year 9999) counts from when we saw it:
    the batch settles after the grace period and its results are stored."""
    quick(emulator)
    batch = submitted(2)
    run("poll_batches", "--force")  # the emulator finishes both lines; the batch ends
    batch.refresh_from_db()
    assert batch.results_fetched_at is not None
    fresh = submitted(2)
    body = json.dumps(
        {
            "batch_id": fresh.provider_batch_id,
            "name": fresh.provider_batch_name,
            "create_time": "2026-11-27",
            "expire_time": "2026-12-27",
            "cancel_time": "9999-12-31",
            "cancel_by_xai_message": None,
            "state": {
                "num_requests": 2,
                "num_pending": 0,
                "num_success": 2,
                "num_error": 0,
                "num_cancelled": 0,
            },
        }
    ).encode()
    emulator.add_fault(Fault("get_batch", "raw", status=200, raw_body=body, times=None))
    for _ in range(3):
        run("poll_batches", "--force")
    fresh.refresh_from_db()
    assert fresh.status == "ended"
    assert fresh.cancel_reason == "provider"
    assert fresh.results_fetched_at is not None
    assert set(outcomes(fresh).values()) == {"completed"}
