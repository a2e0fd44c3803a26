"""Bad input to create_batch: an InvalidBatchRequest naming the request and the field, never a
database error, and nothing written. Run on PostgreSQL too, where NUL bytes and NaN differ."""

from __future__ import annotations

import warnings
from datetime import datetime
from typing import Any

import pytest

from raif_batches import create_batch, create_batches
from raif_batches.exceptions import InvalidBatchRequest
from raif_batches.models import ModelCompletion, ModelCompletionBatch
from raif_batches.validation import UnknownModelWarning

pytestmark = pytest.mark.django_db


def request(custom_id: str = "t-1", content: str = "Hi", **extra: Any) -> dict[str, Any]:
    return {"custom_id": custom_id, "messages": [{"role": "user", "content": content}], **extra}


def nested(levels: int) -> Any:
    """A value of exactly ``levels`` nested objects and arrays."""
    value: Any = "deep"
    for level in range(levels):
        value = {"a": value} if level % 2 else [value]
    return value


GOOD = [request("ok-1"), request("ok-2")]

# (keyword arguments of create_batch, text the error must contain: the request and the field)
CASES: dict[str, tuple[dict[str, Any], list[str]]] = {
    "nul in content": (
        {"requests": [*GOOD, request("t-1", "a\x00b")]},
        ["request 't-1'", "messages[0]['content']", "NUL"],
    ),
    "nul in name": ({"requests": GOOD, "name": "night\x00ly"}, ["name", "NUL"]),
    "nul in metadata": (
        {"requests": GOOD, "metadata": {"team": {"lead": "x\x00"}}},
        ["metadata['team']['lead']", "NUL"],
    ),
    "nul in a metadata key": (
        {"requests": GOOD, "metadata": {"te\x00am": 1}},
        ["metadata", "key", "NUL"],
    ),
    "nul in an extra parameter": (
        {"requests": [*GOOD, request("t-1", user="u\x00")]},
        ["request 't-1'", "user", "NUL"],
    ),
    "lone surrogate in content": (
        {"requests": [*GOOD, request("t-1", "half \ud83d of an emoji")]},
        ["request 't-1'", "messages[0]['content']", "surrogate"],
    ),
    "lone surrogate in a tool schema": (
        {
            "requests": [
                *GOOD,
                request("t-1", tools=[{"type": "function", "function": {"name": "f\udc00"}}]),
            ]
        },
        ["request 't-1'", "tools[0]['function']['name']", "surrogate"],
    ),
    "nan in a parameter": (
        {"requests": [*GOOD, request("t-1", top_p=float("nan"))]},
        ["request 't-1'", "top_p", "nan"],
    ),
    "infinity in metadata": (
        {"requests": GOOD, "metadata": {"budget": float("inf")}},
        ["metadata['budget']", "inf"],
    ),
    "datetime in a parameter": (
        {"requests": [*GOOD, request("t-1", when=datetime(2026, 1, 1))]},
        ["request 't-1'", "when", "datetime", "not JSON"],
    ),
    "set in metadata": (
        {"requests": GOOD, "metadata": {"tags": {"a", "b"}}},
        ["metadata['tags']", "set", "not JSON"],
    ),
    "datetime in metadata": (
        {"requests": GOOD, "metadata": {"at": datetime(2026, 1, 1)}},
        ["metadata['at']", "datetime"],
    ),
    "model too long": ({"requests": GOOD, "model": "m" * 129}, ["model", "128"]),
    "name too long": ({"requests": GOOD, "name": "n" * 256}, ["name", "255"]),
    "max_tokens beyond 32 bits": (
        {"requests": [*GOOD, request("t-1", max_tokens=2**31)]},
        ["request 't-1'", "max_tokens", str(2**31 - 1)],
    ),
    "provider is a list": ({"requests": GOOD, "provider": ["x"]}, ["provider", "list"]),
    "requests is None": ({"requests": None}, ["requests", "NoneType"]),
    "parameters nested thousands deep": (
        {"requests": [*GOOD, request("t-1", logit_bias=nested(5000))]},
        ["request 't-1'", "logit_bias", "nested more than"],
    ),
    "messages nested too deep": (
        {
            "requests": [
                *GOOD,
                {
                    "custom_id": "t-1",
                    "messages": [{"role": "user", "content": [{"type": "text", "x": nested(40)}]}],
                },
            ]
        },
        ["request 't-1'", "messages[0]['content'][0]", "nested more than"],
    ),
    "caller-supplied _source_ref": (
        {"requests": [*GOOD, request("t-1", _source_ref=(1, "1"))]},
        ["request 't-1'", "_source_ref", "reserved"],
    ),
    "another underscore key": (
        {"requests": [*GOOD, request("t-1", _raif_internal=True)]},
        ["request 't-1'", "_raif_internal", "reserved"],
    ),
    "role that is a list": (
        {
            "requests": [
                *GOOD,
                {"custom_id": "t-1", "messages": [{"role": ["user"], "content": "Hi"}]},
            ]
        },
        ["request 't-1'", "messages[0].role", "expected one of"],
    ),
    "response_format type that is a dict": (
        {"requests": [*GOOD, request("t-1", response_format={"type": {"name": "json"}})]},
        ["request 't-1'", "response_format", "type is one of"],
    ),
    "custom id with a trailing newline": (
        {"requests": [*GOOD, request("t-1\n")]},
        ["request 't-1\\n'", "custom_id must be"],
    ),
}


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bad_input_names_request_and_field_and_writes_nothing(case: str) -> None:
    kwargs, fragments = CASES[case]
    with pytest.raises(InvalidBatchRequest) as caught:
        create_batch(**{"provider": "xai", "model": "grok-4.3", **kwargs})
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, message
    assert "\n" not in message
    assert ModelCompletionBatch.objects.count() == 0
    assert ModelCompletion.objects.count() == 0


@pytest.mark.parametrize(
    "case",
    ["nul in content", "parameters nested thousands deep", "caller-supplied _source_ref"],
)
def test_create_batches_refuses_the_same(case: str) -> None:
    kwargs, fragments = CASES[case]
    with pytest.raises(InvalidBatchRequest) as caught:
        create_batches(**{"provider": "xai", "model": "grok-4.3", **kwargs})
    for fragment in fragments:
        assert fragment in str(caught.value)
    assert ModelCompletionBatch.objects.count() == 0


def test_the_deepest_accepted_value_is_stored() -> None:
    """The depth limit is one every supported database stores: the edge case round-trips."""
    from raif_batches.validation import MAX_JSON_DEPTH

    # The limit counts levels in the stored column: metadata is one, extra_body one more.
    parameter, metadata = nested(MAX_JSON_DEPTH - 1), nested(MAX_JSON_DEPTH - 1)
    batch = create_batch(requests=[request("t-1", logit_bias=parameter)], metadata={"v": metadata})
    stored = batch.completions.get()
    assert stored.extra_body == {"logit_bias": parameter}
    batch.refresh_from_db()
    assert batch.metadata == {"v": metadata}
    with pytest.raises(InvalidBatchRequest, match=r"logit_bias.* nested more than"):
        create_batch(requests=[request("t-1", logit_bias=nested(MAX_JSON_DEPTH))])


def test_unknown_model_warns_but_creates() -> None:
    with pytest.warns(UnknownModelWarning, match="'grok-99-future'"):
        batch = create_batch(model="grok-99-future", requests=[request()])
    assert batch.pk is not None and batch.model == "grok-99-future"


def test_known_and_wildcard_models_do_not_warn(settings: Any) -> None:
    settings.RAIF_BATCHES = {**settings.RAIF_BATCHES, "PRICING": {"house-*": {"input": "1"}}}
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnknownModelWarning)
        create_batch(model="grok-4.3", requests=[request()])
        create_batch(model="grok-4.20-0309-reasoning", requests=[request()])
        create_batch(model="house-model-2", requests=[request()])
    assert ModelCompletionBatch.objects.count() == 3


def test_retry_keeps_sources_without_an_internal_key() -> None:
    """retry_failed carries sources by its own channel, now that callers cannot pass one."""
    from example_project.tickets.models import Ticket
    from raif_batches import retry_failed

    ticket = Ticket.objects.create(subject="s", body="b")
    batch = create_batch(requests=[request("t-1", source=ticket)])
    batch.completions.update(status="failed")
    retry = retry_failed(batch)
    assert retry.completions.get().source == ticket
    assert retry.completions.get().extra_body == {}


def test_create_batches_keeps_a_long_name_within_its_column() -> None:
    from raif_batches.providers.xai import XAIStrategy

    limit = XAIStrategy.max_requests_per_batch
    XAIStrategy.max_requests_per_batch = 1
    try:
        batches = create_batches(requests=[request("a"), request("b")], name="n" * 255)
    finally:
        XAIStrategy.max_requests_per_batch = limit
    assert [len(b.name) for b in batches] == [255, 255]
    assert batches[1].name.endswith("n (2)")
