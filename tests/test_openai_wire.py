"""OpenAI's wire format, parsed without a network: statuses, counts, result rows, usage, costs."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import requests

from raif_batches.pricing import completion_cost, price_for
from raif_batches.providers.base import ResultEntry
from raif_batches.providers.openai import (
    OpenAIClient,
    OpenAIStrategy,
    file_id,
    iter_jsonl,
    normalise_counts,
    parse_batch,
    parse_row,
    parse_time,
    rejection_text,
)

# The captured completed batch of the fact sheet [CZ].
COMPLETED = {
    "id": "batch_6abc00d9",
    "object": "batch",
    "endpoint": "/v1/chat/completions",
    "model": "gpt-6-luna",
    "input_file_id": "file-WSWT",
    "completion_window": "24h",
    "status": "completed",
    "output_file_id": "file-V7Xp",
    "error_file_id": None,
    "errors": None,
    "created_at": 1790705881,
    "in_progress_at": 1790705882,
    "finalizing_at": 1790706017,
    "completed_at": 1790706019,
    "expires_at": 1790792281,
    "failed_at": None,
    "request_counts": {"completed": 19, "failed": 0, "total": 19},
    "metadata": {"raif_batch_name": "raif_batch_x", "raif_batch_id": "7"},
}


@pytest.mark.parametrize(
    ("status", "normalised"),
    [
        ("validating", "submitted"),
        ("in_progress", "in_progress"),
        ("finalizing", "in_progress"),
        ("cancelling", "cancelling"),
        ("completed", "ended"),
        ("cancelled", "canceled"),
        ("expired", "expired"),
        ("failed", "failed"),
        ("some_new_status", "in_progress"),  # unknown: still in flight, never a crash
        (None, "in_progress"),
    ],
)
def test_status_mapping(status: Any, normalised: str) -> None:
    assert parse_batch({**COMPLETED, "status": status}).status == normalised


@pytest.mark.parametrize(
    ("status", "counts", "expected"),
    [
        ("validating", {"total": 0, "completed": 0, "failed": 0}, (0, 0, 0, 0, 0)),
        ("in_progress", {"total": 10, "completed": 3, "failed": 1}, (10, 6, 3, 1, 0)),
        ("finalizing", {"total": 10, "completed": 9, "failed": 1}, (10, 0, 9, 1, 0)),
        ("cancelling", {"total": 5, "completed": 1, "failed": 0}, (5, 4, 1, 0, 0)),
        ("completed", {"total": 9, "completed": 0, "failed": 9}, (9, 0, 0, 9, 0)),
        # A line in neither file fails ("entry missing").
        ("completed", {"total": 4, "completed": 3, "failed": 0}, (4, 0, 3, 1, 0)),
        # After a cancel the counters read {5, 0, 0}: nothing pending, the rest not run.
        ("cancelled", {"total": 5, "completed": 0, "failed": 0}, (5, 0, 0, 0, 5)),
        ("expired", {"total": 10, "completed": 1, "failed": 0}, (10, 0, 1, 0, 9)),
        ("failed", {"total": 0, "completed": 0, "failed": 0}, (0, 0, 0, 0, 0)),
        # Lies and garbage: more completed than total, negatives, strings, booleans.
        ("in_progress", {"total": 3, "completed": 7, "failed": 2}, (3, 0, 3, 0, 0)),
        ("in_progress", {"total": "4", "completed": -1, "failed": True}, (4, 4, 0, 0, 0)),
    ],
)
def test_counts_normalised(status: str, counts: dict[str, Any], expected: tuple[int, ...]) -> None:
    keys = ("total", "pending", "succeeded", "failed", "cancelled")
    assert normalise_counts(status, counts) == dict(zip(keys, expected, strict=True))


def test_counts_absent_are_unknown() -> None:
    assert normalise_counts("in_progress", None) is None
    assert normalise_counts("in_progress", [1, 2]) is None


def test_completed_batch_snapshot() -> None:
    snapshot = parse_batch(COMPLETED)
    assert snapshot.provider_batch_id == "batch_6abc00d9"
    assert snapshot.name == "raif_batch_x"
    assert snapshot.created_at == datetime.fromtimestamp(1790705881, tz=UTC)
    assert snapshot.expires_at == datetime.fromtimestamp(1790792281, tz=UTC)
    assert snapshot.input_file_id == "file-WSWT"
    assert snapshot.rejection is None and snapshot.cancelled_at is None
    assert snapshot.raw is COMPLETED


def test_failed_batch_keeps_every_error_with_code_and_line() -> None:
    failed = {
        **COMPLETED,
        "status": "failed",
        "output_file_id": None,
        "request_counts": {"completed": 0, "failed": 0, "total": 0},
        "errors": {
            "object": "list",
            "data": [
                {
                    "code": "missing_required_parameter",
                    "line": 1,
                    "message": "Missing required parameter: 'messages'.",
                    "param": "body.messages",
                },
                {"code": "token_limit_exceeded", "line": None, "message": "Enqueued token limit"},
            ],
        },
    }
    snapshot = parse_batch(failed)
    assert snapshot.status == "failed"
    assert snapshot.rejection == (
        "missing_required_parameter (line 1): Missing required parameter: 'messages'.; "
        "token_limit_exceeded: Enqueued token limit"
    )


@pytest.mark.parametrize("errors", [None, {}, {"data": "oops"}, {"data": [None, 3]}, "text"])
def test_failed_batch_without_readable_errors_still_says_it_failed(errors: Any) -> None:
    snapshot = parse_batch({**COMPLETED, "status": "failed", "errors": errors})
    assert snapshot.rejection


def test_cancel_started_is_read_from_cancelling_at() -> None:
    snapshot = parse_batch({**COMPLETED, "status": "cancelling", "cancelling_at": 1790706000})
    assert snapshot.cancelled_at == datetime.fromtimestamp(1790706000, tz=UTC)


@pytest.mark.parametrize(
    "payload",
    [
        None,
        [],
        "batch",
        {"id": 5, "status": 3, "metadata": "x", "request_counts": "many", "created_at": "soon"},
        {"id": "b", "created_at": 1e300, "expires_at": True, "metadata": {"raif_batch_name": 4}},
    ],
)
def test_odd_batch_objects_never_raise(payload: Any) -> None:
    snapshot = parse_batch(payload)
    assert snapshot.created_at is None and snapshot.expires_at is None
    assert isinstance(snapshot.name, str)


@pytest.mark.parametrize(
    ("value", "expected"), [(None, None), ("", None), ("  ", None), (0, "0"), ("file-1", "file-1")]
)
def test_file_ids_treat_empty_as_null(value: Any, expected: str | None) -> None:
    assert file_id(value) == expected


@pytest.mark.parametrize("value", [None, True, "1790705881", [1], 1e300, float("nan")])
def test_unreadable_times_are_unknown(value: Any) -> None:
    assert parse_time(value) is None


def test_rejection_text_of_nothing_is_none() -> None:
    assert rejection_text(None) is None
    assert rejection_text({"data": []}) is None


# --- result rows ------------------------------------------------------------------------------

SUCCESS_BODY = {
    "object": "chat.completion",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}
    ],
    "usage": {
        "prompt_tokens": 2256,
        "completion_tokens": 2179,
        "total_tokens": 4435,
        "prompt_tokens_details": {"cached_tokens": 1024},
        "completion_tokens_details": {"reasoning_tokens": 1500},
    },
}


def row(custom_id: str = "a-1", **fields: Any) -> dict[str, Any]:
    return {"id": "batch_req_1", "custom_id": custom_id, "response": None, "error": None, **fields}


def test_success_row_is_a_completion_with_usage_normalised() -> None:
    entry = parse_row(
        row(response={"status_code": 200, "request_id": "5f0fcb70", "body": SUCCESS_BODY})
    )
    parsed = entry.completion
    assert parsed is not None and entry.error is None and entry.not_run is None
    assert parsed.text == "Hello" and parsed.finish_reason == "stop"
    assert (parsed.prompt_tokens, parsed.cached_tokens) == (2256, 1024)
    assert (parsed.completion_tokens, parsed.reasoning_tokens) == (2179, 1500)
    assert parsed.reasoning_included is True
    assert parsed.billed_output_tokens == 2179  # reasoning is inside the completion tokens
    assert parsed.cost_ticks is None  # OpenAI reports no cost
    assert parsed.payload == SUCCESS_BODY


def test_reasoning_model_cut_by_the_token_limit() -> None:
    body = {
        **SUCCESS_BODY,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": ""}, "finish_reason": "length"}
        ],
    }
    entry = parse_row(row(response={"status_code": 200, "request_id": "req_1", "body": body}))
    assert entry.completion is not None
    assert (entry.completion.text, entry.completion.finish_reason) == ("", "length")


@pytest.mark.parametrize(
    ("fields", "error", "not_run"),
    [
        (
            {
                "response": {
                    "status_code": 400,
                    "request_id": "r",
                    "body": {
                        "error": {
                            "message": "Invalid 'temperature': 3.",
                            "type": "invalid_request_error",
                            "param": "temperature",
                            "code": None,
                        }
                    },
                }
            },
            "Invalid 'temperature': 3. (invalid_request_error)",
            None,
        ),
        (
            {
                "error": {
                    "code": "batch_cancelled",
                    "message": "This request was not executed because the batch was cancelled.",
                }
            },
            "This request was not executed because the batch was cancelled.",
            "cancelled",
        ),
        (
            {
                "error": {
                    "code": "batch_expired",
                    "message": "This request could not be executed before the completion "
                    "window expired.",
                }
            },
            "This request could not be executed before the completion window expired.",
            "expired",
        ),
        ({"error": {"code": "server_error", "message": "Boom"}}, "Boom (server_error)", None),
        ({"error": "plain text"}, "plain text", None),
        (
            {"response": {"status_code": 500, "body": "Internal"}},
            "The provider answered HTTP 500 with no error message.",
            None,
        ),
        (
            {"response": {"status_code": 200, "body": {"object": "chat.completion"}}},
            "The provider's response for this request carries no completion.",
            None,
        ),
        ({}, "The provider returned neither a response nor an error.", None),
    ],
)
def test_error_rows(fields: dict[str, Any], error: str, not_run: str | None) -> None:
    assert parse_row(row(**fields)) == ResultEntry(custom_id="a-1", error=error, not_run=not_run)


def test_result_lines_not_json_or_without_custom_id_are_skipped_and_counted() -> None:
    strategy = OpenAIStrategy(client=object())  # type: ignore[arg-type]
    good = json.dumps(row("ok", error={"code": "batch_expired", "message": "late"})).encode()
    lines = [b"not json", b"[1]", json.dumps({"custom_id": None}).encode(), good]
    entries = [strategy._parse_line(line) for line in lines]
    assert entries[:3] == [None, None, None]
    assert entries[3] == ResultEntry(custom_id="ok", error="late", not_run="expired")
    assert strategy.ignored_entries == {
        "not JSON": 1,
        "not an object": 1,
        "without a custom id": 1,
    }


def test_jsonl_lines_with_any_ending(tmp_path: Any) -> None:
    path = tmp_path / "f.jsonl"
    path.write_bytes(b'{"a":1}\r\n\n{"b":2}\n  \n{"c":3}')
    with path.open("rb") as source:
        assert list(iter_jsonl(source)) == [b'{"a":1}', b'{"b":2}', b'{"c":3}']


# --- costs from the price table --------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "rates"),
    [
        ("gpt-5", ("1.25", "0.125", "10.00")),
        ("gpt-5-2025-08-07", ("1.25", "0.125", "10.00")),
        ("gpt-5-mini", ("0.25", "0.025", "2.00")),
        ("gpt-5-mini-2025-08-07", ("0.25", "0.025", "2.00")),
        ("gpt-5-nano", ("0.05", "0.005", "0.40")),
        ("gpt-4.1", ("2.00", "0.50", "8.00")),
        ("gpt-4.1-mini", ("0.40", "0.10", "1.60")),
        ("gpt-4.1-nano", ("0.10", "0.025", "0.40")),
        ("gpt-4o", ("2.50", "1.25", "10.00")),
        ("gpt-4o-2024-08-06", ("2.50", "1.25", "10.00")),
        ("gpt-4o-mini", ("0.15", "0.075", "0.60")),
    ],
)
def test_price_table(model: str, rates: tuple[str, str, str]) -> None:
    price = price_for(model)
    assert price is not None
    assert (price.input, price.cached_input, price.output) == tuple(Decimal(r) for r in rates)
    assert price.batch_discount == Decimal("0.50")


def test_cost_of_a_line_is_half_the_list_price_with_cached_input_at_its_rate() -> None:
    parsed = parse_row(
        row(response={"status_code": 200, "request_id": "r", "body": SUCCESS_BODY})
    ).completion
    assert parsed is not None
    cost = completion_cost(
        price_for("gpt-5-mini"),
        prompt_tokens=parsed.prompt_tokens or 0,
        cached_tokens=parsed.cached_tokens or 0,
        output_tokens=parsed.billed_output_tokens,
        provider_ticks=parsed.cost_ticks,
    )
    # (1232 x 0.25 + 1024 x 0.025) / 2 per million; 2179 x 2.00 / 2 per million.
    assert cost.prompt == Decimal("0.0001668000")
    assert cost.output == Decimal("0.0021790000")
    assert cost.total == Decimal("0.0023458000")


# --- the HTTP client's reading of OpenAI's errors --------------------------------------------


def response(status: int, payload: Any) -> requests.Response:
    answer = requests.Response()
    answer.status_code = status
    answer._content = json.dumps(payload).encode()
    return answer


def test_client_error_message_names_the_code() -> None:
    client = OpenAIClient("http://127.0.0.1:9/v1", "sk-secret")
    payload = {"error": {"message": "No batch found with id 'b'.", "type": "invalid_request_error"}}
    assert client.error_message(payload) == "No batch found with id 'b'. (invalid_request_error)"
    bad_key = {
        "error": {
            "message": "Incorrect API key provided.",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }
    assert client.is_authentication_error(response(401, bad_key), bad_key)
    assert not client.is_authentication_error(response(404, payload), payload)
    error = client.classify_error(response(401, bad_key))
    assert type(error).__name__ == "ProviderAuthenticationError"
    conflict = {"error": {"message": "Cannot cancel a batch with status 'completed'."}}
    refused = client.classify_error(response(409, conflict))
    assert type(refused).__name__ == "ProviderRejected" and not refused.retryable


def test_check_request_refuses_streaming() -> None:
    assert OpenAIStrategy.check_request({"messages": []}) is None
    assert "stream" in (OpenAIStrategy.check_request({"extra_body": {"stream": True}}) or "")


def test_should_retry_false_makes_a_server_error_final() -> None:
    client = OpenAIClient("http://127.0.0.1:9/v1", "sk-secret")
    answer = response(503, {"error": {"message": "Overloaded", "type": "server_error"}})
    assert client.classify_error(answer).retryable
    answer.headers["x-should-retry"] = "false"
    assert not client.classify_error(answer).retryable
