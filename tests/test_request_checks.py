"""Randomized requests against create_batch's checks.

``create_batch`` answers the usual request (custom id, plain messages, temperature, max_tokens,
source) by a short path, and leaves anything else to the general checks, which name the
problem. The short path is only allowed to be narrower: these tests draw requests near that
boundary (the usual shape, then one thing changed) and check that

- a request ends the same way (the same row, or the same refusal) whichever path checks it;
- each accepted request's stored body is the request, and its measured line the bytes that
  ``json.dumps`` writes;
- a list and a generator of the same requests end the same way, and a refused batch writes
  nothing.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from raif_batches import create_batch
from raif_batches.api import (
    COLUMN_KEYS,
    LINE_OVERHEAD,
    _parameter_problem,
    _RequestRows,
    _SourceRef,
)
from raif_batches.exceptions import InvalidBatchRequest
from raif_batches.models import ModelCompletion, ModelCompletionBatch
from raif_batches.providers import get_strategy_class
from raif_batches.validation import _check_each_value, check_request_values, plain_messages

PROVIDERS = ("xai", "openai", "anthropic")
MODELS = {"xai": "grok-4.3", "openai": "gpt-5-mini", "anthropic": "claude-haiku-4-5"}


class Text(str):
    """A str subclass: JSON, but not the exact type the short path expects."""


class Number(int):
    """An int subclass, likewise."""


texts = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", "a\x00b", "half \ud83d", "\udc00", "naïve ☕", "x" * 40, "\\u0000"]),
)
json_scalars = st.one_of(
    st.sampled_from([None, math.nan, math.inf, 0.5, Number(3)]),
    st.booleans(),
    st.integers(-5, 2**31 + 5),
    st.floats(allow_nan=True, allow_infinity=True),
    texts,
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(texts, children, max_size=3),
    ),
    max_leaves=6,
)
valid_roles = st.sampled_from(["system", "developer", "user", "assistant", "tool"])
odd_numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-3, 2**31 + 3),
    st.booleans(),
    st.sampled_from([-0.1, 2.5, math.nan, -math.inf, 0, 2**31, Number(8), "0.2", None]),
)


def _change(draw: st.DrawFn, request: dict[Any, Any]) -> dict[Any, Any]:
    """``request`` with one thing changed, or none: each change is drawn as often."""
    listed = request["messages"]
    change = draw(st.sampled_from(CHANGES))
    if change == "custom id":
        request["custom_id"] = draw(st.sampled_from([Text(request["custom_id"]), ""]))
    elif change == "role":
        listed[-1]["role"] = draw(st.sampled_from(["robot", "", "us\x00er", "User", None, ["x"]]))
    elif change == "content":
        listed[-1]["content"] = draw(st.one_of(texts, json_values))
    elif change == "content parts":
        listed[0]["content"] = [{"type": "text", "text": draw(texts)}]
    elif change == "message key":
        key = draw(st.sampled_from(["name", "tool_calls", 1, "_x", "ro\x00le", Text("role")]))
        listed[0][key] = draw(json_values)
    elif change == "no content":
        del listed[-1]["content"]
    elif change == "messages":
        request["messages"] = draw(st.sampled_from([tuple(listed), [], "hi", None, [None]]))
    elif change in ("temperature", "max_tokens"):
        request[change] = draw(odd_numbers)
    elif change == "parameter":
        key = draw(
            st.sampled_from(["top_p", "user", "response_format", "tools", "tool_choice", "stream"])
        )
        request[key] = draw(json_values)
    elif change == "parameter key":
        request[draw(st.sampled_from(["_k", 3, "to\x00p", "\ud800", Text("user"), "model"]))] = 1
    elif change == "source":
        request["source"] = draw(st.sampled_from([_SourceRef(1, "7"), "ticket-7", 7]))
    elif change == "mapping":
        return Mapped(request)
    return request


CHANGES = (
    *["none"] * 4,
    "custom id",
    "role",
    "content",
    "content parts",
    "message key",
    "no content",
    "messages",
    "temperature",
    "max_tokens",
    "parameter",
    "parameter key",
    "source",
    "mapping",
)


class Mapped(dict[str, Any]):
    """A dict subclass: a mapping, but not the exact type the short path expects."""


@st.composite
def requests(draw: st.DrawFn, custom_id: str = "r-1") -> dict[str, Any]:
    """A usual request (plain messages, temperature and max_tokens in range or absent), with
    one thing changed (:data:`CHANGES`)."""
    request: dict[str, Any] = {
        "custom_id": custom_id,
        "messages": [
            {"role": draw(valid_roles), "content": draw(st.text(max_size=12))}
            for _ in range(draw(st.integers(1, 3)))
        ],
    }
    if draw(st.booleans()):
        request["temperature"] = draw(st.sampled_from([0.0, 0.2, 1.0, 2.0, 1]))
    if draw(st.booleans()):
        request["max_tokens"] = draw(st.sampled_from([1, 64, 2**31 - 1]))
    return _change(draw, request)


def outcome(function: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "ok", function()
    except InvalidBatchRequest as error:
        return "refused", str(error)


class GeneralOnly(_RequestRows):
    """Rows made by the exact checks alone: no short path for the usual request, and every
    value walked by the walk that names problems, where :meth:`_RequestRows._check` first
    tries shorter ones."""

    def _is_plain(self, request: Any) -> bool:
        return False

    def _check(self, custom_id: str, request: Any, messages_plain: bool) -> None:
        _check_each_value(request, custom_id)
        check_request_values(request, custom_id)  # what remains: the stored sizes
        problem = _parameter_problem(request) or self.strategy.check_request(request)
        if problem:
            raise InvalidBatchRequest(problem, custom_id=custom_id)


@pytest.mark.parametrize("provider", PROVIDERS)
@settings(max_examples=400, derandomize=True, deadline=None)
@given(request=requests())
def test_the_short_path_ends_as_the_general_checks_end(
    provider: str, request: dict[str, Any]
) -> None:
    strategy = get_strategy_class(provider)
    took_short_path = plain_messages(request.get("messages")) and _RequestRows(
        strategy, provider, MODELS[provider]
    )._is_plain(request)
    short, general = (
        outcome(functools.partial(kind(strategy, provider, MODELS[provider]).row, 0, request))
        for kind in (_RequestRows, GeneralOnly)
    )
    assert short == general
    event(f"{short[0]}, {'short path' if took_short_path else 'general checks'}")
    if short[0] == "refused":
        return
    # The measured line: the body as json.dumps writes it (a parameter column's None is not
    # sent), and the line around it.
    _, size = short[1]
    body = {"model": MODELS[provider]}
    body.update(
        (key, value)
        for key, value in request.items()
        if key not in ("custom_id", "source") and not (key in COLUMN_KEYS and value is None)
    )
    written = len(json.dumps(body, ensure_ascii=False).encode())
    assert size == written + LINE_OVERHEAD + len(request["custom_id"])


@pytest.mark.django_db
@settings(
    max_examples=60,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    batch=st.lists(st.integers(0, 10**6), min_size=1, max_size=4, unique=True).flatmap(
        lambda numbers: st.tuples(*(requests(f"r-{number}") for number in numbers))
    )
)
def test_a_list_and_a_generator_of_the_same_requests_end_the_same(
    batch: tuple[dict[str, Any], ...],
) -> None:
    before = (ModelCompletionBatch.objects.count(), ModelCompletion.objects.count())
    made = {
        shape: outcome(
            lambda: create_batch("xai", "grok-4.3", make(list(batch))).pk  # noqa: B023
        )
        for shape, make in (("list", list), ("generator", iter))
    }
    verdicts = {shape: verdict for shape, (verdict, _) in made.items()}
    assert verdicts["list"] == verdicts["generator"], made
    event(verdicts["list"])
    if verdicts["list"] == "refused":
        assert made["list"] == made["generator"]
        assert (ModelCompletionBatch.objects.count(), ModelCompletion.objects.count()) == before
        return
    for _, pk in made.values():
        stored = {
            c.batch_custom_id: c.request_body("grok-4.3")
            for c in ModelCompletion.objects.filter(batch_id=pk)
        }
        assert len(stored) == len(batch)
        for request in batch:
            expected = {
                key: value
                for key, value in request.items()
                if key not in ("custom_id", "source") and not (key in COLUMN_KEYS and value is None)
            }
            body = stored[request["custom_id"]]
            assert body.pop("model") == "grok-4.3"
            assert _same_json(body, expected), (body, expected)
    ModelCompletionBatch.objects.filter(pk__in=[pk for _, pk in made.values()]).delete()


def _same_json(stored: Any, given: Any) -> bool:
    """Equal as JSON: a tuple is stored as a list, an int temperature as a float (1 == 1.0)."""
    if isinstance(given, dict):
        return (
            isinstance(stored, dict)
            and stored.keys() == given.keys()
            and all(_same_json(stored[key], given[key]) for key in given)
        )
    if isinstance(given, list | tuple):
        return (
            isinstance(stored, list)
            and len(stored) == len(given)
            and all(_same_json(s, g) for s, g in zip(stored, given, strict=True))
        )
    return bool(stored == given)
