"""The HTTP client and xAI's wire format against a provider that answers anything.

Every case is played over real HTTP by the emulator's ``raw`` faults: HTML, empty or cut bodies,
JSON of the wrong shape, result envelopes of every known form, oversized pages, pagination that
never ends, redirect loops and garbled encodings. The rules proven (issue 9):

* a create whose answer cannot be read is ambiguous, looked up by name, never sent twice (1);
* an unreadable or wrongly shaped answer to a read is retried like a 5xx, then reported in one
  line; nothing but a ProviderError reaches the lifecycle (3, and the odd-answer cases);
* every result envelope is read; tool answers keep their final text and citations (7);
* costs reproduce the provider's figures (9);
* entries beyond the asked limit are ignored and answers are bounded in bytes (13);
* a listing is bounded in pages and time (14);
* the key is nowhere in an error, its chain, its requests or its traceback's locals (15).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from decimal import Decimal
from io import StringIO
from typing import Any

import pytest
import requests
from django.core.management import call_command
from django.core.management.base import CommandError

from raif_batches.emulator import Fault, run_emulator
from raif_batches.emulator.state import encode_token
from raif_batches.exceptions import ProviderError, ProviderUnavailable
from raif_batches.models import ModelCompletionBatch
from raif_batches.polling import poll, submit
from raif_batches.providers import get_strategy

from .helpers import make_batch, run_to_end

pytestmark = pytest.mark.django_db

SECRET = "xai-H0st1leW1reK3y-5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d"


# --- helpers ----------------------------------------------------------------------------------


def raw(
    endpoint: str,
    body: Any,
    *,
    status: int = 200,
    times: int | None = 1,
    kind: str = "raw",
    content_type: str = "application/json",
    headers: dict[str, str] | None = None,
) -> Fault:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Fault(
        endpoint,
        kind,
        status=status,
        times=times,
        raw_body=data,
        content_type=content_type,
        headers=headers or {},
    )


def calls(emulator: Any, endpoint: str) -> list[Any]:
    return [c for c in emulator.state.calls if c.endpoint == endpoint]


def submitted_batch(count: int = 3) -> ModelCompletionBatch:
    batch = make_batch(count)
    assert submit([batch.pk]).submitted == [batch.pk]
    batch.refresh_from_db()
    return batch


def ended_batch(emulator: Any, count: int = 3) -> ModelCompletionBatch:
    """A submitted batch whose lines have all finished at the emulator, not yet polled."""
    batch = submitted_batch(count)
    emulator.state.get_batch(batch.provider_batch_id)  # validation, then the lines finish
    emulator.state.get_batch(batch.provider_batch_id)
    return batch


def poll_until_fetched(batch: ModelCompletionBatch, rounds: int = 10) -> ModelCompletionBatch:
    """Poll until the results are stored; every run must succeed."""
    for _ in range(rounds):
        report = poll([batch.pk], force=True)
        assert report.ok, (report.errors, report.fatal)
        batch.refresh_from_db()
        if batch.results_fetched_at is not None:
            return batch
    raise AssertionError(f"batch {batch.pk} still {batch.status} after {rounds} polls")


def completion(text: str | None, **extra: Any) -> dict[str, Any]:
    return {
        "id": "cmpl-hostile",
        "object": "chat.completion",
        "model": "grok-4.3",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12},
        **extra,
    }


def success(rid: str, text: str) -> dict[str, Any]:
    return {
        "batch_request_id": rid,
        "batch_result": {"response": {"chat_get_completion": (completion(text))}},
    }


def outcomes(batch: ModelCompletionBatch) -> dict[str, tuple[str, str, str]]:
    return {
        c.batch_custom_id: (c.status, c.raw_response, c.failure_reason)
        for c in batch.completions.all()
    }


def one_line_command_error(*args: str) -> str:
    with pytest.raises(CommandError) as caught:
        call_command(*args, stdout=StringIO(), stderr=StringIO())
    text = str(caught.value)
    assert "\n" not in text and "Traceback" not in text
    return text


# --- 1: a create answered unreadably is ambiguous -----------------------------------------------

UNREADABLE_CREATE = {
    "html": (b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html"),
    "empty": (b"", "application/json"),
    "cut-short": (b'{"batch_id": "batch_4f1e', "application/json"),
    "json-list": (b"[]", "application/json"),
    "no-batch-id": (b'{"name": "raif", "state": {"num_requests": 0}}', "application/json"),
    "empty-batch-id": (b'{"batch_id": "", "name": "raif"}', "application/json"),
}


@pytest.mark.parametrize(
    ("body", "content_type"), UNREADABLE_CREATE.values(), ids=list(UNREADABLE_CREATE)
)
def test_create_answered_unreadably_is_reconciled_and_never_sent_twice(
    emulator: Any, body: bytes, content_type: str
) -> None:
    batch = make_batch(3)
    emulator.add_fault(raw("create_batch", body, kind="accept_then_raw", content_type=content_type))
    report = submit([batch.pk])
    assert report.submitted == [] and not report.errors
    assert "submission outcome unknown" in report.notes[0]
    batch.refresh_from_db()
    assert batch.status == "submitting" and batch.provider_batch_id == ""

    report = submit([batch.pk])  # looks the batch up by name, adopts it
    assert report.ok, report.errors
    batch.refresh_from_db()
    assert len(emulator.state.batches) == 1
    assert batch.provider_batch_id in emulator.state.batches
    assert [c.status for c in calls(emulator, "create_batch")] == [200]
    batch = run_to_end(batch)
    assert batch.completions.filter(status="completed").count() == 3


# --- 3: unreadable answers to reads are provider faults, retried ---------------------------------

UNREADABLE_READS = {
    "empty": b"",
    "json-list": b"[]",
    "json-null": b"null",
    "json-string": b'"ok"',
    "html": b"<!doctype html><title>Maintenance</title>",
    "nested-5000-deep": b"[" * 5000 + b"]" * 5000,
    "huge-integer": b'{"batch_id": ' + b"9" * 5000 + b"}",
    "nan": b'{"batch_id": "b", "state": {"num_requests": NaN}}',
    "infinite-float": b'{"batch_id": "b", "state": {"num_requests": 1e999}}',
}


@pytest.mark.parametrize("body", UNREADABLE_READS.values(), ids=list(UNREADABLE_READS))
def test_unreadable_batch_reads_are_retried_within_the_run(emulator: Any, body: bytes) -> None:
    batch = submitted_batch(3)
    emulator.add_fault(raw("get_batch", body, times=2))
    report = poll([batch.pk], force=True)
    assert report.ok, report.errors
    assert len(calls(emulator, "get_batch")) == 3  # two unusable answers, then the real one
    batch = poll_until_fetched(batch)
    assert batch.completions.filter(status="completed").count() == 3


WRONG_PAGES = {
    "empty": b"",
    "json-list": b'[{"batch_request_id": "req-000"}]',
    "results-not-a-list": b'{"results": {"req-000": {}}, "pagination_token": null}',
    "token-not-a-string": b'{"results": [], "pagination_token": {"next": 2}}',
}


@pytest.mark.parametrize("body", WRONG_PAGES.values(), ids=list(WRONG_PAGES))
def test_wrongly_shaped_result_pages_are_retried_within_the_run(emulator: Any, body: bytes) -> None:
    batch = ended_batch(emulator, 3)
    emulator.add_fault(raw("list_results", body, times=2))
    batch = poll_until_fetched(batch)
    assert len(calls(emulator, "list_results")) == 3
    assert batch.completions.filter(status="completed").count() == 3


def test_an_upload_answered_without_a_file_id_is_retried(emulator: Any) -> None:
    batch = make_batch(2)
    emulator.add_fault(raw("upload_file", {"object": "file"}, kind="accept_then_raw"))
    report = submit([batch.pk])
    assert report.submitted == [batch.pk], report.errors
    assert len(calls(emulator, "upload_file")) == 2


def test_an_answer_that_stays_unreadable_ends_the_command_in_one_line(emulator: Any) -> None:
    batch = submitted_batch(2)
    emulator.add_fault(raw("get_batch", b"[]", times=None))
    text = one_line_command_error("poll_batches", "--force")
    assert "unreadable answer from provider" in text and "gave up after 6 attempt(s)" in text
    assert len(calls(emulator, "get_batch")) == 6
    batch.refresh_from_db()
    assert batch.status == "submitted" and batch.results_fetched_at is None


@pytest.mark.parametrize(
    "expire_time",
    [1e300, -1e300, "9999-12-31", "9999-12-31T23:59:59-05:00", True],
    ids=["1e300", "-1e300", "date-max", "rfc3339-max-offset", "bool"],
)
def test_unrepresentable_times_are_unknown_not_a_crash(emulator: Any, expire_time: Any) -> None:
    batch = ended_batch(emulator, 2)
    answer = emulator.state.get_batch(batch.provider_batch_id)
    answer["expire_time"] = expire_time
    emulator.add_fault(raw("get_batch", answer, times=None))
    batch = poll_until_fetched(batch)
    assert batch.expires_at is None or batch.expires_at.year >= 2026
    assert batch.completions.filter(status="completed").count() == 2


# --- 7: result envelopes ------------------------------------------------------------------------


def test_every_result_envelope_is_read(emulator: Any) -> None:
    batch = ended_batch(emulator, 11)
    tool_answer = completion(
        None,
        choices=[
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "ws", "type": "web_search", "function": {}}],
                },
                "finish_reason": "tool_calls",
            },
            {"index": 1, "message": {"role": "tool", "content": "raw search results"}},
            {
                "index": 2,
                "message": {"role": "assistant", "content": [{"type": "text", "text": "Final"}]},
                "finish_reason": "",
            },
        ],
        citations=["https://example.org/a", "https://example.org/b"],
    )
    page = {
        "results": [
            success("req-000", "A0"),
            {"batch_request_id": "req-001", "response": {"chat_get_completion": completion("A1")}},
            {"batch_request_id": "req-002", "response": completion("A2")},
            {"batch_request_id": "req-003", "batch_result": {"error": "E3 string"}},
            {
                "batch_request_id": "req-004",
                "batch_result": {"error": {"code": 3, "message": "E4"}},
            },
            {"batch_request_id": "req-005", "error": "E5 top level"},
            {"batch_request_id": "req-006", "error_message": "E6 message"},
            {"batch_request_id": "req-007", "error_message": {"code": 8, "message": "E7 object"}},
            {"batch_request_id": "req-008", "batch_result": {"response": "oops"}},
            {"batch_request_id": "req-010", "batch_result": {"response": {"status": "odd"}}},
            {
                "batch_request_id": "req-009",
                "batch_result": {"response": {"chat_get_completion": tool_answer}},
            },
        ],
        "pagination_token": None,
    }
    emulator.add_fault(raw("list_results", page))
    batch = poll_until_fetched(batch)
    got = outcomes(batch)
    assert got["req-000"][:2] == ("completed", "A0")
    assert got["req-001"][:2] == ("completed", "A1")
    assert got["req-002"][:2] == ("completed", "A2")
    assert got["req-003"] == ("failed", "", "E3 string")
    assert got["req-004"] == ("failed", "", "E4")
    assert got["req-005"] == ("failed", "", "E5 top level")
    assert got["req-006"] == ("failed", "", "E6 message")
    assert got["req-007"] == ("failed", "", "E7 object")
    assert got["req-008"][0] == "failed" and "not an object" in got["req-008"][2]
    assert got["req-009"][:2] == ("completed", "Final")
    assert got["req-010"][0] == "failed" and "carries no completion" in got["req-010"][2]
    tool_line = batch.completions.get(batch_custom_id="req-009")
    assert tool_line.finish_reason == "tool_calls"  # the last reason given, not ""
    assert tool_line.response_payload["citations"] == tool_answer["citations"]


# --- 9: costs -----------------------------------------------------------------------------------


def test_costs_reproduce_the_providers_figures(emulator: Any) -> None:
    """The published capture, once without its ticks (priced from the default table) and once
    with them (split by the table's ratio): both exactly 2,747,200 ticks."""
    batch = ended_batch(emulator, 2)
    usage = {
        "prompt_tokens": 198,
        "completion_tokens": 1,
        "total_tokens": 317,
        "prompt_tokens_details": {"cached_tokens": 192},
        "completion_tokens_details": {"reasoning_tokens": 118},
    }
    with_ticks = {**usage, "cost_in_usd_ticks": 2_747_200}
    page = {
        "results": [
            {"batch_request_id": "req-000", "response": completion("x", usage=usage)},
            {"batch_request_id": "req-001", "response": completion("y", usage=with_ticks)},
        ],
        "pagination_token": None,
    }
    emulator.add_fault(raw("list_results", page))
    batch = poll_until_fetched(batch)
    for line in batch.completions.all():
        assert line.total_cost == Decimal("0.0002747200")
        assert line.prompt_token_cost == Decimal("0.0000367200")
        assert line.output_token_cost == Decimal("0.0002380000")
    assert batch.total_cost == 2 * Decimal("0.0002747200")


# --- 13: big pages ------------------------------------------------------------------------------


def test_entries_beyond_the_asked_limit_are_ignored(
    emulator: Any, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.RAIF_BATCHES = {**settings.RAIF_BATCHES, "RESULTS_PAGE_SIZE": 2}
    batch = ended_batch(emulator, 4)
    page = {
        "results": [
            success("req-000", "first"),
            success("req-001", "second"),
            {"batch_request_id": "req-002", "batch_result": {"error": "bogus extra entry"}},
            {"batch_request_id": "req-003", "batch_result": {"error": "bogus extra entry"}},
        ],
        "pagination_token": encode_token("req-001"),
    }
    emulator.add_fault(raw("list_results", page))
    with caplog.at_level(logging.WARNING, logger="raif_batches"):
        batch = poll_until_fetched(batch)
    assert batch.completions.filter(status="completed").count() == 4
    assert outcomes(batch)["req-000"][1] == "first"
    assert "the 2 beyond it are ignored" in caplog.text


def test_pages_over_the_byte_bound_are_asked_again_smaller(emulator: Any, settings: Any) -> None:
    batch = ended_batch(emulator, 8)
    settings.RAIF_BATCHES = {**settings.RAIF_BATCHES, "MAX_RESPONSE_BYTES": 4000}
    batch = poll_until_fetched(batch)
    assert batch.completions.filter(status="completed").count() == 8
    limits = [int(c.query["limit"]) for c in calls(emulator, "list_results")]
    assert limits[0] == 1000 and min(limits) < 8
    assert limits == sorted(limits, reverse=True)  # halved while too big, then kept
    assert len(limits) > limits.count(min(limits)) + 1


def test_an_entry_alone_over_the_byte_bound_is_one_line_fault(emulator: Any, settings: Any) -> None:
    batch = ended_batch(emulator, 2)
    settings.RAIF_BATCHES = {**settings.RAIF_BATCHES, "MAX_RESPONSE_BYTES": 64 * 1024}
    huge = {"results": [success("req-000", "x" * 200_000)], "pagination_token": None}
    emulator.add_fault(raw("list_results", huge, times=None))
    report = poll([batch.pk], force=True)
    assert (
        len(report.errors) == 1
        and "one entry alone is over MAX_RESPONSE_BYTES" in (report.errors[0])
    )
    limits = [int(c.query["limit"]) for c in calls(emulator, "list_results")]
    assert limits == [1000, 500, 250, 125, 62, 31, 15, 7, 3, 1]
    batch.refresh_from_db()
    assert batch.results_fetched_at is None
    assert batch.completions.filter(status="pending").count() == 2


# --- 14: listings are bounded -------------------------------------------------------------------


def test_a_results_token_that_changes_on_every_page_is_bounded_by_pages(
    emulator: Any, settings: Any
) -> None:
    batch = ended_batch(emulator, 2)
    settings.RAIF_BATCHES = {**settings.RAIF_BATCHES, "LISTING_MAX_PAGES": 4}
    for number in range(10):
        emulator.add_fault(raw("list_results", {"results": [], "pagination_token": f"t{number}"}))
    report = poll([batch.pk], force=True)
    assert len(report.errors) == 1 and "did not end after 4 page(s)" in report.errors[0]
    assert len(calls(emulator, "list_results")) == 4
    batch.refresh_from_db()
    assert batch.results_fetched_at is None


def test_a_listing_is_bounded_by_time(emulator: Any, settings: Any) -> None:
    batch = ended_batch(emulator, 2)
    settings.RAIF_BATCHES = {**settings.RAIF_BATCHES, "LISTING_MAX_SECONDS": 0}
    for number in range(3):
        emulator.add_fault(raw("list_results", {"results": [], "pagination_token": f"t{number}"}))
    report = poll([batch.pk], force=True)
    assert len(report.errors) == 1 and "LISTING_MAX_SECONDS=0" in report.errors[0]
    assert len(calls(emulator, "list_results")) == 1


def test_the_batch_list_read_for_reconciliation_is_bounded(emulator: Any, settings: Any) -> None:
    settings.RAIF_BATCHES = {**settings.RAIF_BATCHES, "LISTING_MAX_PAGES": 3}
    batch = make_batch(2)
    emulator.add_fault(Fault("create_batch", "accept_then_drop"))
    assert "submission outcome unknown" in submit([batch.pk]).notes[0]
    for number in range(10):
        emulator.add_fault(raw("list_batches", {"batches": [], "pagination_token": f"t{number}"}))
    report = submit([batch.pk])
    assert len(report.errors) == 1 and "did not end after 3 page(s)" in report.errors[0]
    assert len(calls(emulator, "list_batches")) == 3
    batch.refresh_from_db()
    assert batch.status == "submitting" and len(emulator.state.batches) == 1


# --- 15: the key never escapes in an exception --------------------------------------------------


def reachable_texts(error: BaseException) -> Iterator[str]:
    """What an error reporter can show of an error: its text and arguments, its attributes, the
    requests and responses it holds (headers included), its causes and contexts, and the locals
    of every frame of their tracebacks (with the headers of any request or response there)."""
    seen: set[int] = set()
    todo: list[BaseException] = [error]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield str(current)
        yield repr(current.args)
        yield repr(vars(current))
        for holder in (current, getattr(current, "response", None)):
            yield from _http_texts(holder)
        frames = []
        tb = current.__traceback__
        while tb is not None:
            frames.append(tb.tb_frame)
            tb = tb.tb_next
        for frame in frames[1:]:  # the first is this test's, which holds the settings
            for value in frame.f_locals.values():
                yield repr(value)
                yield from _http_texts(value)
                if isinstance(value, BaseException):
                    todo.append(value)
        todo.extend(e for e in (current.__cause__, current.__context__) if e is not None)


def _http_texts(value: Any) -> Iterator[str]:
    """Headers of a request or response, of the request it answers, and of its history."""
    history = getattr(value, "history", None)
    for item in (value, *(history if isinstance(history, list) else ())):
        for candidate in (item, getattr(item, "request", None), getattr(item, "_next", None)):
            headers = getattr(candidate, "headers", None)
            if headers is not None:
                yield repr(dict(headers))


@pytest.fixture
def keyed_emulator(settings: Any) -> Iterator[Any]:
    with run_emulator(api_key=SECRET) as emulator:
        settings.RAIF_BATCHES = {
            **settings.RAIF_BATCHES,
            "XAI_BASE_URL": emulator.base_url,
            "XAI_API_KEY": SECRET,
        }
        yield emulator


def caught_read(provider_batch_id: str) -> BaseException:
    try:
        get_strategy("xai").get_provider_batch(provider_batch_id)
    except Exception as error:
        return error
    raise AssertionError("the read succeeded")


def assert_key_unreachable(error: BaseException) -> None:
    assert isinstance(error, ProviderUnavailable), repr(error)
    texts = list(reachable_texts(error))
    assert any("Bearer" in t or "GET" in t for t in texts)  # the walk did see something
    leaks = [t for t in texts if SECRET in t]
    assert not leaks, leaks[:2]


HOSTILE_TRANSPORT = {
    "redirect-loop": dict(status=302, body=b"", headers={"Location": "{path}"}),
    "redirect-elsewhere": dict(status=301, body=b"", headers={"Location": "http://127.0.0.1:9/"}),
    "bad-gzip": dict(status=200, body=b"this is not gzip", headers={"Content-Encoding": "gzip"}),
    "bad-deflate": dict(status=200, body=b"nor deflate", headers={"Content-Encoding": "deflate"}),
}


@pytest.mark.parametrize("case", HOSTILE_TRANSPORT.values(), ids=list(HOSTILE_TRANSPORT))
def test_the_key_is_unreachable_from_transport_errors(
    keyed_emulator: Any, case: dict[str, Any]
) -> None:
    batch = submitted_batch(2)
    path = f"/v1/batches/{batch.provider_batch_id}"
    headers = {k: v.format(path=path) for k, v in case["headers"].items()}
    keyed_emulator.add_fault(
        raw("get_batch", case["body"], status=case["status"], times=None, headers=headers)
    )
    error = caught_read(batch.provider_batch_id)
    assert_key_unreachable(error)
    assert "\n" not in str(error)
    # The lifecycle sees the same single error type, recorded in one line without the key.
    report = poll([batch.pk], force=True)
    assert len(report.errors) == 1 and SECRET not in report.errors[0]
    batch.refresh_from_db()
    assert SECRET not in f"{batch.failure_error} {batch.failure_reason}"


@pytest.mark.parametrize(
    ("base_url", "key"),
    [
        ("http://127.0.0.1:99999/v1", SECRET),  # InvalidURL, raised before anything is sent
        # A header value with a line break in it: refused, and the message quotes the value.
        (None, SECRET + "\nX-Injected: yes"),
    ],
    ids=["invalid-url", "key-with-line-break"],
)
def test_the_key_is_unreachable_from_errors_raised_before_sending(
    keyed_emulator: Any, settings: Any, base_url: str | None, key: str
) -> None:
    settings.RAIF_BATCHES = {
        **settings.RAIF_BATCHES,
        "XAI_BASE_URL": base_url or keyed_emulator.base_url,
        "XAI_API_KEY": key,
    }
    error = caught_read("batch_anything")
    assert_key_unreachable(error)
    assert keyed_emulator.state.calls == []  # nothing was sent


def test_requests_errors_are_provider_errors(keyed_emulator: Any) -> None:
    """requests' own types never reach the lifecycle: it catches ProviderError."""
    batch = submitted_batch(1)
    keyed_emulator.add_fault(
        raw("get_batch", b"x", times=None, headers={"Content-Encoding": "gzip"})
    )
    error = caught_read(batch.provider_batch_id)
    assert isinstance(error, ProviderError)
    assert not isinstance(error, requests.exceptions.ContentDecodingError)
    assert error.__cause__ is None and error.__context__ is None


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after-ms": "250"}, 0.25),  # OpenAI's and Anthropic's, preferred when present
        ({"retry-after-ms": "1500", "Retry-After": "9"}, 1.5),
        ({"retry-after-ms": "soon", "Retry-After": "2"}, 2.0),  # unreadable: the other header
        ({"retry-after-ms": "-5", "Retry-After": "3"}, 3.0),
        ({"Retry-After": "4"}, 4.0),
        ({}, None),
    ],
)
def test_the_wait_a_provider_asks_for_is_read_from_either_header(
    headers: dict[str, str], seconds: float | None
) -> None:
    from raif_batches.http import retry_after_seconds

    response = requests.Response()
    response.headers.update(headers)
    assert retry_after_seconds(response) == seconds
