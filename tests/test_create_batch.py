"""create_batch: one transaction, and bad input names the request and creates nothing."""

from __future__ import annotations

from typing import Any

import pytest

from example_project.tickets.models import Ticket
from raif_batches import create_batch, create_batches
from raif_batches.exceptions import InvalidBatchRequest
from raif_batches.models import ModelCompletion, ModelCompletionBatch

pytestmark = pytest.mark.django_db


def request(custom_id: str = "t-1", **extra: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "messages": [{"role": "user", "content": "Hi"}], **extra}


def test_creates_pending_batch_with_one_completion_per_request() -> None:
    ticket = Ticket.objects.create(subject="s", body="b")
    batch = create_batch(
        provider="xai",
        model="grok-4.3",
        requests=[
            request("t-1", temperature=0.2, max_tokens=50, top_p=0.9, source=ticket),
            request("t-2", response_format={"type": "json_object"}),
        ],
        name="first",
        metadata={"team": "support"},
    )
    assert batch.status == "pending"
    assert batch.request_counts == {
        "total": 2,
        "pending": 2,
        "succeeded": 0,
        "failed": 0,
        "cancelled": 0,
    }
    first, second = batch.completions.order_by("batch_custom_id")
    assert first.source == ticket
    assert first.request_body("grok-4.3") == {
        "model": "grok-4.3",
        "messages": [{"role": "user", "content": "Hi"}],
        "temperature": 0.2,
        "max_tokens": 50,
        "top_p": 0.9,
    }
    assert second.response_format == {"type": "json_object"}
    assert batch.provider_batch_name.startswith("raif_batch_")


@pytest.mark.parametrize("given_as", [list, tuple, iter])
def test_sources_whose_content_type_is_not_cached_yet(given_as: Any) -> None:
    """Rows are made while a COPY is open on PostgreSQL, when no statement can be sent:
    the content types of the requests' sources are read before, however they are given."""
    from django.contrib.contenttypes.models import ContentType

    tickets = [Ticket.objects.create(subject=f"s{i}", body="b") for i in range(3)]
    ContentType.objects.clear_cache()
    batch = create_batch(
        requests=given_as([request(f"t-{t.pk}", source=t) for t in tickets]),
    )
    stored = {c.batch_custom_id: c.source for c in batch.completions.all()}
    assert stored == {f"t-{t.pk}": t for t in tickets}


BAD_REQUESTS = [
    ([{"messages": [{"role": "user", "content": "x"}]}], "request #3: custom_id is required"),
    ([request("a b")], "custom_id must be 1-64 characters"),
    ([request("x" * 65)], "custom_id must be 1-64 characters"),
    ([request("t-1"), request("t-1")], "request 't-1': custom_id is not unique"),
    ([{"custom_id": "t-1", "messages": []}], "messages must be a non-empty list"),
    ([{"custom_id": "t-1", "messages": "hello"}], "messages must be a non-empty list"),
    (
        [{"custom_id": "t-1", "messages": [{"role": "robot", "content": "x"}]}],
        "messages[0].role is 'robot'",
    ),
    (
        [{"custom_id": "t-1", "messages": [{"role": "user", "content": 5}]}],
        "messages[0].content must be a string",
    ),
    ([request(temperature=3)], "temperature must be a number between 0 and 2"),
    ([request(max_tokens=-5)], "max_tokens must be a positive integer"),
    ([request(response_format={"type": "yaml"})], "response_format must be a dict"),
    ([request(stream=True)], "stream cannot be set per request"),
    ([request(model="grok-4.6")], "model cannot be set per request"),
    ([request(seed=object())], "not JSON-serialisable"),
    ([], "a batch needs at least one request"),
]


@pytest.mark.parametrize(("requests", "message"), BAD_REQUESTS)
def test_invalid_input_raises_value_error_and_creates_nothing(
    requests: list[dict[str, Any]], message: str
) -> None:
    good = [request(f"ok-{i}") for i in range(3)]
    with pytest.raises(ValueError, match=None) as caught:
        create_batch(requests=[*good, *requests] if requests else [])
    assert isinstance(caught.value, InvalidBatchRequest)
    assert message in str(caught.value)
    assert ModelCompletionBatch.objects.count() == 0
    assert ModelCompletion.objects.count() == 0


def test_rejects_unknown_provider_and_empty_model() -> None:
    with pytest.raises(ValueError, match="Unknown provider 'nope'"):
        create_batch(provider="nope", requests=[request()])
    with pytest.raises(ValueError, match="model must be a non-empty string"):
        create_batch(model="", requests=[request()])
    assert ModelCompletionBatch.objects.count() == 0


def test_oversized_line_is_refused(settings: Any) -> None:
    huge = "x" * (25 * 1024 * 1024 + 1)
    with pytest.raises(ValueError, match="request 'big': the request line is"):
        create_batch(
            requests=[{"custom_id": "big", "messages": [{"role": "user", "content": huge}]}]
        )
    assert ModelCompletionBatch.objects.count() == 0


def test_too_many_requests_points_to_create_batches() -> None:
    from raif_batches.providers.xai import XAIStrategy

    limit = XAIStrategy.max_requests_per_batch
    XAIStrategy.max_requests_per_batch = 3
    try:
        with pytest.raises(ValueError, match="create_batches"):
            create_batch(requests=[request(f"t-{i}") for i in range(4)])
        assert ModelCompletionBatch.objects.count() == 0
        batches = create_batches(requests=[request(f"t-{i}") for i in range(7)], name="big")
    finally:
        XAIStrategy.max_requests_per_batch = limit
    assert [b.completions.count() for b in batches] == [3, 3, 1]
    assert [b.name for b in batches] == ["big (1)", "big (2)", "big (3)"]


def test_create_batches_refuses_duplicates_across_parts() -> None:
    with pytest.raises(ValueError, match="custom_id is not unique"):
        create_batches(requests=[request("a"), request("b"), request("a")])
    assert ModelCompletionBatch.objects.count() == 0


def test_handler_must_be_importable() -> None:
    with pytest.raises(ValueError, match="cannot be imported"):
        create_batch(requests=[request()], handler="nowhere.to.be.found")
    assert ModelCompletionBatch.objects.count() == 0


LINE_CASES = {
    "plain": request("p-1"),
    "every column": request(
        "c-1",
        temperature=0.5,  # (an int is measured as given, 1, and rebuilt as stored, 1.0)
        max_tokens=64,
        response_format={"type": "json_schema", "json_schema": {"name": "é", "n": [1, 2.5]}},
        tools=[{"type": "function", "function": {"name": "look_up"}}],
        tool_choice="auto",
        top_p=0.125,
        seed=7,
    ),
    "non-ascii and escapes": {
        "custom_id": "u-1",
        "messages": [
            {"role": "system", "content": 'Réponds "vite" \\ \n\t\x7f\u2028 🙂'},
            {"role": "user", "content": [{"type": "text", "text": "日本語"}]},
        ],
        "user": "ünïcode",
        "metadata": {"tags": ["🙂", None, True]},
    },
}


@pytest.mark.parametrize("case", LINE_CASES)
def test_a_line_is_measured_as_its_rebuilt_body_encodes(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The line is measured from the column texts without encoding the body again: the sum
    must be the bytes of the body that submission rebuilds, to the byte, at the limit."""
    import json

    from raif_batches.api import LINE_OVERHEAD
    from raif_batches.providers.xai import XAIStrategy

    created = create_batch(requests=[LINE_CASES[case]], name="probe")
    stored = created.completions.get()
    body = json.dumps(stored.request_body(created.model), ensure_ascii=False).encode()
    line = len(body) + LINE_OVERHEAD + len(stored.batch_custom_id)
    monkeypatch.setattr(XAIStrategy, "max_line_bytes", line)
    assert create_batch(requests=[LINE_CASES[case]]).completions.count() == 1
    monkeypatch.setattr(XAIStrategy, "max_line_bytes", line - 1)
    with pytest.raises(ValueError, match=f"the request line is {line} bytes"):
        create_batch(requests=[LINE_CASES[case]])
