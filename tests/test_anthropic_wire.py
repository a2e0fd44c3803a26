"""Anthropic's wire format, pure parsing: statuses, counts, every result line of the fact sheet,
usage, costs from the price table, the request translation and the create body's limits."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import IO, Any

import pytest
import requests

from raif_batches.exceptions import (
    InvalidBatchRequest,
    ProviderAuthenticationError,
    ProviderNotFound,
    ProviderRejected,
    ProviderUnavailable,
)
from raif_batches.pricing import completion_cost, price_for
from raif_batches.providers.anthropic import (
    INLINE_INPUT,
    RECONCILE_CLOCK_MARGIN,
    AnthropicClient,
    AnthropicStrategy,
    error_text,
    messages_params,
    normalise_counts,
    parse_batch,
    parse_message,
    parse_result_line,
    parse_time,
)
from raif_batches.providers.base import LostCreate, ResultEntry

REFERENCE = {
    "id": "msgbatch_013Zva2CMHLNnXjNJJKqJ2EF",
    "type": "message_batch",
    "processing_status": "ended",
    "request_counts": {"processing": 0, "succeeded": 4, "errored": 1, "canceled": 0, "expired": 0},
    "created_at": "2024-09-24T18:37:24.100435Z",
    "expires_at": "2024-09-25T18:37:24.100435Z",
    "ended_at": "2024-09-24T18:41:02.113412Z",
    "cancel_initiated_at": None,
    "archived_at": None,
    "results_url": "https://api.anthropic.com/v1/messages/batches/msgbatch_013Zva2CMHLNnXjNJJKqJ2EF/results",
}
SUCCEEDED = (
    '{"custom_id":"ok-1","result":{"type":"succeeded","message":{"id":"msg_1","type":"message",'
    '"role":"assistant","model":"claude-haiku-4-5-20251001","content":[{"type":"text","text":"1"}],'
    '"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":16,'
    '"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"cache_creation":'
    '{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":0},"output_tokens":5,'
    '"service_tier":"batch","inference_geo":"not_available"}}}}'
)
BAD_MODEL = (
    '{"custom_id":"bad-model","result":{"type":"errored","error":{"type":"error","error":'
    '{"details":{"error_visibility":"user_facing"},"type":"not_found_error","message":'
    '"model: claude-does-not-exist-9"},"request_id":null}}}'
)
IMAGE_URL = (
    '{"custom_id":"image_url","result":{"type":"errored","error":{"type":"error","error":{"type":'
    '"invalid_request_error","message":"Unable to download the file. Please verify the URL and '
    'try again."},"request_id":"workerreq_1"}}}'
)
CANCELED = '{"custom_id":"c-1","result":{"type":"canceled"}}'
EXPIRED = '{"custom_id":"x-9","result":{"type":"expired"}}'


def batch(**changes: Any) -> dict[str, Any]:
    payload = json.loads(json.dumps(REFERENCE))
    counts = changes.pop("counts", None)
    if counts:
        payload["request_counts"].update(counts)
    payload.update(changes)
    return payload


@pytest.mark.parametrize(
    ("status", "cancel", "expired", "expected"),
    [
        ("in_progress", None, 0, "in_progress"),
        ("canceling", "2024-09-24T18:38:00Z", 0, "cancelling"),
        ("ended", None, 0, "ended"),
        ("ended", "2024-09-24T18:38:00Z", 0, "canceled"),
        ("ended", "2024-09-24T18:38:00Z", 2, "canceled"),  # cancel outranks expiry
        ("ended", None, 2, "expired"),
        ("validating", None, 0, "in_progress"),  # unknown: in flight, never an end
        (None, None, 0, "in_progress"),
        (7, None, 0, "in_progress"),
    ],
)
def test_status_mapping(status: Any, cancel: Any, expired: int, expected: str) -> None:
    snapshot = parse_batch(
        batch(processing_status=status, cancel_initiated_at=cancel, counts={"expired": expired})
    )
    assert snapshot.status == expected


def test_the_reference_batch_object() -> None:
    snapshot = parse_batch(REFERENCE)
    assert snapshot.provider_batch_id == "msgbatch_013Zva2CMHLNnXjNJJKqJ2EF"
    assert snapshot.status == "ended"
    assert snapshot.counts == {
        "total": 5,
        "pending": 0,
        "succeeded": 4,
        "failed": 1,
        "cancelled": 0,
    }
    assert snapshot.created_at == datetime(2024, 9, 24, 18, 37, 24, 100435, tzinfo=UTC)
    assert snapshot.expires_at == snapshot.created_at + timedelta(hours=24)
    assert snapshot.cancelled_at is None and snapshot.name == ""
    assert snapshot.raw is not None and snapshot.raw["id"] == REFERENCE["id"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            {"processing": 3, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0},
            {"total": 3, "pending": 3, "succeeded": 0, "failed": 0, "cancelled": 0},
        ),
        (
            {"processing": 0, "succeeded": 2, "errored": 1, "canceled": 4, "expired": 5},
            {"total": 12, "pending": 0, "succeeded": 2, "failed": 1, "cancelled": 9},
        ),
        (
            {"processing": "x", "succeeded": -3, "errored": True, "canceled": None},
            {"total": 0, "pending": 0, "succeeded": 0, "failed": 0, "cancelled": 0},
        ),
        ({}, {"total": 0, "pending": 0, "succeeded": 0, "failed": 0, "cancelled": 0}),
        (None, None),
        ([1, 2], None),
    ],
)
def test_counts_mapping(raw: Any, expected: Any) -> None:
    assert normalise_counts(raw) == expected


@pytest.mark.parametrize(
    "payload", [None, [], "x", {"id": 5, "created_at": 1e300, "request_counts": "many"}]
)
def test_odd_batch_objects_never_raise(payload: Any) -> None:
    snapshot = parse_batch(payload)
    assert snapshot.created_at is None and snapshot.counts is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-09-24T18:37:24.100435Z", datetime(2024, 9, 24, 18, 37, 24, 100435, tzinfo=UTC)),
        ("2024-09-24T20:37:24+02:00", datetime(2024, 9, 24, 18, 37, 24, tzinfo=UTC)),
        ("2024-09-24T18:37:24", datetime(2024, 9, 24, 18, 37, 24, tzinfo=UTC)),
        ("yesterday", None),
        (None, None),
        (1727203044, None),
        ("9" * 100, None),
    ],
)
def test_times(value: Any, expected: Any) -> None:
    assert parse_time(value) == expected


def test_succeeded_line() -> None:
    entry = parse_result_line(json.loads(SUCCEEDED), "ok-1")
    assert entry.error is None and entry.not_run is None
    parsed = entry.completion
    assert parsed is not None
    assert (parsed.text, parsed.finish_reason, parsed.tool_calls) == ("1", "stop", None)
    assert (parsed.prompt_tokens, parsed.cached_tokens, parsed.completion_tokens) == (16, 0, 5)
    assert (parsed.cache_write_tokens, parsed.cache_write_1h_tokens) == (0, 0)
    assert parsed.total_tokens == 21 and parsed.reasoning_tokens is None
    assert parsed.reasoning_included and parsed.cost_ticks is None
    assert parsed.payload["model"] == "claude-haiku-4-5-20251001"


@pytest.mark.parametrize(
    ("line", "custom_id", "error", "not_run"),
    [
        (BAD_MODEL, "bad-model", "not_found_error: model: claude-does-not-exist-9", None),
        (
            IMAGE_URL,
            "image_url",
            "invalid_request_error: Unable to download the file. Please verify the URL and "
            "try again.",
            None,
        ),
        (CANCELED, "c-1", "The batch was canceled before this request ran.", "cancelled"),
        (EXPIRED, "x-9", "The batch expired before this request ran.", "expired"),
        (
            '{"custom_id":"f","result":{"type":"errored","error":{"type":"api_error",'
            '"message":"Internal server error"}}}',
            "f",
            "api_error: Internal server error",
            None,
        ),
        (
            '{"custom_id":"g","result":{"type":"errored"}}',
            "g",
            "The provider reported an error without a message.",
            None,
        ),
        (
            '{"custom_id":"h","result":{"type":"succeeded","message":"oops"}}',
            "h",
            "The provider's succeeded result for this request carries no message object.",
            None,
        ),
        (
            '{"custom_id":"i","result":{"type":"mystery"}}',
            "i",
            "The provider returned an unknown result type 'mystery'.",
            None,
        ),
        ('{"custom_id":"j"}', "j", "The provider's line for this request carries no result.", None),
    ],
)
def test_every_failed_line_shape(line: str, custom_id: str, error: str, not_run: Any) -> None:
    entry = parse_result_line(json.loads(line), custom_id)
    assert entry.completion is None
    assert (entry.custom_id, entry.error, entry.not_run) == (custom_id, error, not_run)


def test_error_text_accepts_a_string_and_a_bare_type() -> None:
    assert error_text("plain") == "plain"
    assert error_text({"type": "overloaded_error"}) == "overloaded_error"


def test_usage_with_cache_writes_reads_and_thinking() -> None:
    message = {
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "text", "text": "Looking "},
            {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"id": 7}},
            {"type": "text", "text": "it up."},
            "not a block",
        ],
        "stop_reason": "tool_use",
        "usage": {
            "input_tokens": 10,
            "cache_creation_input_tokens": 300,
            "cache_read_input_tokens": 1200,
            "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 200},
            "output_tokens": 90,
            "output_tokens_details": {"thinking_tokens": 60},
        },
    }
    parsed = parse_message(message)
    assert parsed.text == "Looking it up."
    assert parsed.finish_reason == "tool_calls"
    assert parsed.tool_calls == [
        {
            "id": "toolu_1",
            "type": "function",
            "function": {"name": "lookup", "arguments": '{"id": 7}'},
        }
    ]
    assert parsed.prompt_tokens == 1510
    assert parsed.cached_tokens == 1200
    assert parsed.cache_write_tokens == 300 and parsed.cache_write_1h_tokens == 200
    assert parsed.completion_tokens == 90 and parsed.reasoning_tokens == 60
    assert parsed.billed_output_tokens == 90  # thinking is inside the output tokens


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "pause_turn"),
        (None, ""),
    ],
)
def test_stop_reasons(stop: Any, finish: str) -> None:
    assert parse_message({"content": [], "stop_reason": stop}).finish_reason == finish


def test_odd_usage_reads_as_absent() -> None:
    parsed = parse_message({"content": "x", "usage": {"input_tokens": "many", "output_tokens": []}})
    assert parsed.text == "" and parsed.prompt_tokens is None and parsed.completion_tokens is None
    assert parsed.total_tokens is None


def test_cost_arithmetic_against_the_price_table() -> None:
    """1000 uncached, 2000 cache reads, 400 five-minute and 600 one-hour writes, 500 output
    tokens of claude-haiku-4-5 ($1 / $0.10 / $1.25 / $2 / $5 per million), 50% off."""
    price = price_for("claude-haiku-4-5-20251001")
    assert price is not None and price.batch_discount == Decimal("0.50")
    cost = completion_cost(
        price,
        prompt_tokens=4000,
        cached_tokens=2000,
        output_tokens=500,
        provider_ticks=None,
        cache_write_tokens=1000,
        cache_write_1h_tokens=600,
    )
    prompt = Decimal(1000) * 1 + Decimal(2000) * Decimal("0.10") + 400 * Decimal("1.25") + 600 * 2
    assert cost.prompt == (prompt / 2 / 1_000_000).quantize(Decimal("1e-10"))
    assert cost.prompt == Decimal("0.00145")
    assert cost.output == Decimal("0.00125")
    assert cost.total == Decimal("0.0027")


@pytest.mark.parametrize(
    ("model", "rates"),
    [
        ("claude-haiku-4-5", ("1", "0.10", "5", "1.25", "2")),
        ("claude-sonnet-4-5-20250929", ("3", "0.30", "15", "3.75", "6")),
        ("claude-opus-4-1-20250805", ("15", "1.50", "75", "18.75", "30")),
        ("claude-opus-4-5-20251101", ("5", "0.50", "25", "6.25", "10")),
        ("claude-3-5-haiku-20241022", ("0.80", "0.08", "4", "1", "1.60")),
    ],
)
def test_price_table_has_the_common_models(model: str, rates: tuple[str, ...]) -> None:
    price = price_for(model)
    assert price is not None
    assert (
        price.input,
        price.cached_input,
        price.output,
        price.cache_write,
        price.cache_write_1h,
    ) == tuple(Decimal(r) for r in rates)
    assert price.batch_discount == Decimal("0.50")
    assert price.max_reasoning_tokens == 0  # thinking is inside max_tokens


# --- Requests --------------------------------------------------------------------------------


def test_a_chat_body_becomes_a_messages_body() -> None:
    body = {
        "model": "claude-haiku-4-5",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": "Use French."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA="}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "look", "arguments": '{"q": "a"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "found"},
            {"role": "user", "content": "Thanks"},
        ],
        "max_tokens": 50,
        "temperature": 0.2,
        "stop": "END",
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "look",
                    "description": "Look",
                    "parameters": {"type": "object"},
                },
            },
            {"type": "web_search_20250305", "name": "web_search"},
        ],
        "tool_choice": "required",
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "top_k": 5,
    }
    params = messages_params(body)
    assert params == {
        "model": "claude-haiku-4-5",
        "system": "Be brief.\n\nUse French.",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": "AAA="},
                    },
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "call_1", "name": "look", "input": {"q": "a"}}
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "found"},
                    {"type": "text", "text": "Thanks"},
                ],
            },
        ],
        "max_tokens": 50,
        "tools": [
            {"name": "look", "input_schema": {"type": "object"}, "description": "Look"},
            {"type": "web_search_20250305", "name": "web_search"},
        ],
        "tool_choice": {"type": "any"},
        "stop_sequences": ["END"],
        "temperature": 0.2,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "top_k": 5,
    }


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ("required", {"type": "any"}),
        ({"type": "function", "function": {"name": "f"}}, {"type": "tool", "name": "f"}),
        ({"type": "tool", "name": "g"}, {"type": "tool", "name": "g"}),
    ],
)
def test_tool_choice(choice: Any, expected: Any) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": choice}
    assert messages_params(body)["tool_choice"] == expected


def test_response_format_becomes_a_system_instruction_and_cache_control_is_kept() -> None:
    schema = {"type": "object", "properties": {"label": {"type": "string"}}}
    body = {
        "model": "m",
        "messages": [
            {
                "role": "system",
                "content": [
                    {"type": "text", "text": "Sys", "cache_control": {"type": "ephemeral"}}
                ],
            },
            {"role": "user", "content": "x"},
        ],
        "response_format": {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
    }
    params = messages_params(body)
    assert params["system"][0] == {
        "type": "text",
        "text": "Sys",
        "cache_control": {"type": "ephemeral"},
    }
    assert params["system"][1]["text"].endswith(json.dumps(schema, separators=(",", ":")))
    assert "response_format" not in params and params["messages"][0]["content"] == "x"
    plain = messages_params(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "json_object"},
        }
    )
    assert "single valid JSON object" in plain["system"]
    text = messages_params(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "x"}],
            "response_format": {"type": "text"},
        }
    )
    assert "system" not in text


@pytest.mark.parametrize(
    ("request_", "problem"),
    [
        ({"messages": []}, "max_tokens is required by Anthropic's Messages API."),
        ({"max_tokens": 0}, "max_tokens must be a positive integer for Anthropic."),
        ({"max_tokens": True}, "max_tokens must be a positive integer for Anthropic."),
        (
            {"max_tokens": 5, "temperature": 1.5},
            "temperature must be between 0 and 1 for Anthropic.",
        ),
        ({"max_tokens": 5, "temperature": 1}, None),
        ({"max_completion_tokens": 5}, None),
    ],
)
def test_check_request(request_: dict[str, Any], problem: Any) -> None:
    assert AnthropicStrategy.check_request(request_) == problem


class _Batch:
    pk = 1


def test_upload_checks_the_limits_and_returns_inline() -> None:
    strategy = AnthropicStrategy(client=object())  # type: ignore[arg-type]
    assert strategy.upload_input(_Batch(), iter([b'{"a":1}', b'{"b":2}'])) == INLINE_INPUT  # type: ignore[arg-type]
    limited = type("Limited", (AnthropicStrategy,), {"max_requests_per_batch": 2})(client=object())
    with pytest.raises(InvalidBatchRequest, match="more than 2 requests"):
        limited.upload_input(_Batch(), iter([b"{}"] * 3))
    small = type("Small", (AnthropicStrategy,), {"max_file_bytes": 30})(client=object())
    with pytest.raises(InvalidBatchRequest, match="exceeds 30 bytes"):
        small.upload_input(_Batch(), iter([b'{"x":"' + b"y" * 20 + b'"}']))
    with pytest.raises(InvalidBatchRequest, match="at least one request"):
        strategy.upload_input(_Batch(), iter([]))  # type: ignore[arg-type]


def test_the_body_is_the_requests_list() -> None:
    import io

    out = io.BytesIO()
    size = AnthropicStrategy(client=object())._write_body(out, [b'{"a":1}', b'{"b":2}'])  # type: ignore[arg-type]
    assert json.loads(out.getvalue()) == {"requests": [{"a": 1}, {"b": 2}]}
    assert size == len(out.getvalue())


# --- HTTP errors ----------------------------------------------------------------------------


def _response(status: int, body: Any) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps(body).encode() if body is not None else b"<html>"
    return response


def envelope(kind: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_1"}


@pytest.mark.parametrize(
    ("status", "body", "error", "text"),
    [
        (
            529,
            envelope("overloaded_error", "Overloaded"),
            ProviderUnavailable,
            "overloaded_error: Overloaded",
        ),
        (429, envelope("rate_limit_error", "Slow down"), ProviderUnavailable, "rate_limit_error"),
        (500, envelope("api_error", "Boom"), ProviderUnavailable, "api_error: Boom"),
        (
            401,
            envelope("authentication_error", "invalid x-api-key"),
            ProviderAuthenticationError,
            "invalid x-api-key",
        ),
        (
            404,
            envelope("not_found_error", "Message Batch m not found."),
            ProviderNotFound,
            "not found",
        ),
        (
            400,
            envelope("invalid_request_error", "requests: bad"),
            ProviderRejected,
            "requests: bad",
        ),
        (413, None, ProviderRejected, "HTTP 413"),
    ],
)
def test_error_classification(status: int, body: Any, error: type, text: str) -> None:
    client = AnthropicClient("http://127.0.0.1:1", "sk-ant-secret")
    failure = client.classify_error(_response(status, body))
    assert type(failure) is error
    assert text in str(failure)


def test_the_key_goes_in_x_api_key_with_the_version() -> None:
    client = AnthropicClient("http://127.0.0.1:1", "sk-ant-secret")
    assert client.auth_header == "x-api-key" and client.auth_prefix == ""
    assert client.default_headers == {"anthropic-version": "2023-06-01"}
    assert "sk-ant-secret" not in repr(client)


# --- Results and reconciliation through a stub client --------------------------------------


class StubClient:
    """Answers ``download`` with fixed bytes and ``request`` (the list) with fixed pages."""

    base_url = "http://127.0.0.1:1"

    def __init__(self, data: bytes = b"", pages: list[dict[str, Any]] | None = None) -> None:
        self.data = data
        self.pages = pages or []
        self.asked: list[dict[str, Any]] = []

    def download(self, path: str, sink: IO[bytes], **kwargs: Any) -> int:
        sink.write(self.data)
        sink.flush()
        sink.seek(0)
        return len(self.data)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        self.asked.append(dict(kwargs.get("params") or {}))
        return self.pages[len(self.asked) - 1]


def read_results(data: bytes, page_size: int) -> tuple[AnthropicStrategy, list[ResultEntry]]:
    strategy = AnthropicStrategy(client=StubClient(data))  # type: ignore[arg-type]
    pages = list(strategy.iter_result_pages("msgbatch_1"))
    assert all(len(page) <= page_size for page in pages)
    return strategy, [entry for page in pages for entry in page]


def test_results_in_any_order_with_mixed_endings_and_no_last_newline(settings: Any) -> None:
    settings.RAIF_BATCHES = {"RESULTS_PAGE_SIZE": 2}
    data = (
        f"{EXPIRED}\r\n{SUCCEEDED}\n\n{BAD_MODEL}\r\n  \r\nnot json\n"
        f'{{"result": {{"type": "canceled"}}}}\n[1, 2]\n{CANCELED}'
    ).encode()
    strategy, found = read_results(data, page_size=2)
    by_id = {entry.custom_id: entry for entry in found}
    assert sorted(by_id) == ["bad-model", "c-1", "ok-1", "x-9"]
    assert by_id["ok-1"].completion is not None
    assert by_id["x-9"].not_run == "expired" and by_id["c-1"].not_run == "cancelled"
    assert strategy.ignored_entries == {"not JSON": 1, "without an id": 2}


def listed(batch_id: str, created: datetime, size: int) -> dict[str, Any]:
    return batch(
        id=batch_id,
        processing_status="in_progress",
        created_at=created.isoformat().replace("+00:00", "Z"),
        counts={"processing": size, "succeeded": 0, "errored": 0},
    )


def test_lost_creates_are_matched_by_time_window_and_size(settings: Any) -> None:
    settings.RAIF_BATCHES = {"REQUEST_TIMEOUT": (5.0, 25.0)}
    t = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    page_1 = {
        "data": [
            listed("newer", t + timedelta(minutes=20), 3),  # after the window
            listed("fits_late", t + timedelta(seconds=30) + RECONCILE_CLOCK_MARGIN, 3),
            listed("other_size", t, 4),
        ],
        "has_more": True,
        "last_id": "other_size",
    }
    page_2 = {
        "data": [
            listed("fits_early", t - RECONCILE_CLOCK_MARGIN, 3),
            listed("too_early", t - RECONCILE_CLOCK_MARGIN - timedelta(seconds=1), 3),
        ],
        "has_more": True,
        "last_id": "too_early",
    }
    page_3 = {"data": [listed("old", t - timedelta(days=1), 3)], "has_more": True, "last_id": "old"}
    stub = StubClient(pages=[page_1, page_2, page_3, {"data": []}])
    strategy = AnthropicStrategy(client=stub)  # type: ignore[arg-type]
    lost = LostCreate(name="raif-1", request_count=3, attempted_at=t, ended_at=None)
    listing = strategy.find_provider_batches([lost], created_after=t - timedelta(minutes=10))
    assert listing.complete
    assert [s.provider_batch_id for s in listing.found["raif-1"]] == ["fits_late", "fits_early"]
    # Read until a whole page was older than the window; never further.
    assert stub.asked == [
        {"limit": 1000},
        {"limit": 1000, "after_id": "other_size"},
        {"limit": 1000, "after_id": "too_early"},
    ]


def test_a_list_read_is_bounded(settings: Any) -> None:
    settings.RAIF_BATCHES = {"RECONCILE_MAX_PAGES": 2}
    t = datetime.now(UTC)
    pages = [
        {"data": [listed(f"b{i}", t, 1)], "has_more": True, "last_id": f"b{i}"} for i in range(5)
    ]
    stub = StubClient(pages=pages)
    strategy = AnthropicStrategy(client=stub)  # type: ignore[arg-type]
    lost = LostCreate(name="raif-2", request_count=9, attempted_at=t, ended_at=t)
    listing = strategy.find_provider_batches([lost], created_after=None)
    assert not listing.complete and "RECONCILE_MAX_PAGES" in listing.stopped_because
    assert len(stub.asked) == 2
