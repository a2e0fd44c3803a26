"""Anthropic end to end: submit / poll / harvest against the realistic emulator over real HTTP.

Outcomes are asserted on rows, counts, costs (exact Decimal from the price table) and on what
the emulator saw.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from raif_batches import create_batch
from raif_batches.emulator import Fault
from raif_batches.exceptions import InvalidBatchRequest
from raif_batches.lifecycle import submission
from raif_batches.models import ModelCompletion, ModelCompletionBatch
from raif_batches.polling import poll, submit
from raif_batches.providers import get_strategy

pytestmark = pytest.mark.django_db

HAIKU = {  # the table's claude-haiku-4-5* rates, USD per million tokens
    "input": Decimal("1"),
    "cached_input": Decimal("0.10"),
    "output": Decimal("5"),
    "cache_write": Decimal("1.25"),
    "cache_write_1h": Decimal("2"),
}
SYSTEM_A = "You are a terse support agent for a very large shop. " * 8
SYSTEM_B = "You classify tickets into billing, delivery or other. " * 8


def ask(custom_id: str, text: str, **extra: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": 200,
        **extra,
    }


def cached_system(text: str, ttl: str | None = None) -> dict[str, Any]:
    control: dict[str, Any] = {"type": "ephemeral"}
    if ttl:
        control["ttl"] = ttl
    return {"role": "system", "content": [{"type": "text", "text": text, "cache_control": control}]}


def batch_of(requests: list[dict[str, Any]], **kwargs: Any) -> ModelCompletionBatch:
    return create_batch(provider="anthropic", requests=requests, **kwargs)


def run_to_end(batch: ModelCompletionBatch, rounds: int = 60) -> ModelCompletionBatch:
    batch.refresh_from_db()
    if batch.status == "pending":
        report = submit([batch.pk])
        assert report.ok, report.errors
    for _ in range(rounds):
        batch.refresh_from_db()
        if batch.results_fetched_at is not None:
            return batch
        report = poll([batch.pk], force=True)
        assert report.fatal is None, report.fatal
    raise AssertionError(f"batch {batch.pk} not finished: {batch.status}")


def expected_cost(usage: dict[str, Any]) -> Decimal:
    """Price one line from the Messages usage with the table's rates, 50% off."""
    written = usage["cache_creation_input_tokens"]
    written_1h = usage["cache_creation"]["ephemeral_1h_input_tokens"]
    undiscounted = (
        usage["input_tokens"] * HAIKU["input"]
        + usage["cache_read_input_tokens"] * HAIKU["cached_input"]
        + (written - written_1h) * HAIKU["cache_write"]
        + written_1h * HAIKU["cache_write_1h"]
        + usage["output_tokens"] * HAIKU["output"]
    )
    prompt = (undiscounted - usage["output_tokens"] * HAIKU["output"]) * Decimal("0.5") / 1_000_000
    output = usage["output_tokens"] * HAIKU["output"] * Decimal("0.5") / 1_000_000
    return prompt.quantize(Decimal("1e-10")) + output.quantize(Decimal("1e-10"))


def one_provider_batch(emu: Any) -> Any:
    assert emu.state.count_calls("create_batch") == 1
    assert len(emu.state.batches) == 1
    return next(iter(emu.state.batches.values()))


def test_happy_path_text_tokens_cache_writes_and_reads_priced_from_the_table(
    anthropic_emulator: Any,
) -> None:
    requests = [
        {**ask(f"q-{i}", f"Question number {i}"), "messages": [cached_system(SYSTEM_A)]}
        for i in range(3)
    ]
    for request in requests:
        request["messages"] = [cached_system(SYSTEM_A), *ask("x", request["custom_id"])["messages"]]
    requests.append(
        {
            **ask("q-1h", "Where is my parcel?"),
            "messages": [cached_system(SYSTEM_B, "1h"), {"role": "user", "content": "Parcel?"}],
        }
    )
    batch = run_to_end(batch_of(requests))

    assert batch.status == "ended"
    assert batch.request_counts == {
        "total": 4,
        "pending": 0,
        "succeeded": 4,
        "failed": 0,
        "cancelled": 0,
    }
    rows = {c.batch_custom_id: c for c in batch.completions.all()}
    assert all(c.status == "completed" for c in rows.values())
    assert rows["q-0"].raw_response == "Emulated answer to: q-0"
    assert rows["q-0"].finish_reason == "stop"
    for row in rows.values():
        usage = row.response_payload["usage"]
        assert row.prompt_tokens == (
            usage["input_tokens"]
            + usage["cache_creation_input_tokens"]
            + usage["cache_read_input_tokens"]
        )
        assert row.cached_tokens == usage["cache_read_input_tokens"]
        assert row.completion_tokens == usage["output_tokens"]
        assert row.total_cost == expected_cost(usage)
        assert row.prompt_token_cost + row.output_token_cost == row.total_cost
    # The first line of system A wrote the cache (5 minutes), the others read it; the
    # one-hour line wrote its own.
    first = rows["q-0"].response_payload["usage"]
    assert first["cache_creation_input_tokens"] > 0 and first["cache_read_input_tokens"] == 0
    for later in ("q-1", "q-2"):
        usage = rows[later].response_payload["usage"]
        assert usage["cache_read_input_tokens"] == first["cache_creation_input_tokens"]
        assert rows[later].cached_tokens > 0
    hour = rows["q-1h"].response_payload["usage"]
    assert (
        hour["cache_creation"]["ephemeral_1h_input_tokens"]
        == hour["cache_creation_input_tokens"]
        > 0
    )
    assert batch.total_cost == sum(c.total_cost for c in rows.values())
    assert batch.prompt_token_cost == sum(c.prompt_token_cost for c in rows.values())
    assert batch.output_token_cost == sum(c.output_token_cost for c in rows.values())
    one_provider_batch(anthropic_emulator)
    # The request went inline, as a Messages body with the system blocks kept.
    line = next(iter(anthropic_emulator.state.batches.values())).lines[0]
    assert line.params["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert line.params["max_tokens"] == 200 and line.params["model"] == "claude-haiku-4-5"


def test_an_errored_line_carries_the_providers_message(anthropic_emulator: Any) -> None:
    batch = run_to_end(
        batch_of([ask("ok-1", "Fine"), ask("bad-1", "[[emulator:error Output blocked by policy]]")])
    )
    assert batch.status == "ended"
    assert batch.request_counts["succeeded"] == 1 and batch.request_counts["failed"] == 1
    bad = batch.completions.get(batch_custom_id="bad-1")
    assert bad.status == "failed"
    assert bad.failure_reason == "invalid_request_error: Output blocked by policy"
    assert bad.total_cost is None
    assert batch.total_cost == batch.completions.get(batch_custom_id="ok-1").total_cost


def test_an_unknown_model_fails_its_lines_late_not_the_create(anthropic_emulator: Any) -> None:
    from raif_batches.validation import UnknownModelWarning

    with pytest.warns(UnknownModelWarning):
        created = batch_of([ask("a", "Hi")], model="claude-does-not-exist-9")
    batch = run_to_end(created)
    assert batch.status == "ended"
    row = batch.completions.get()
    assert row.status == "failed"
    assert row.failure_reason == "not_found_error: model: claude-does-not-exist-9"
    assert anthropic_emulator.state.count_calls("create_batch") == 1


def test_create_batch_refuses_what_anthropic_would_refuse() -> None:
    with pytest.raises(InvalidBatchRequest, match=r"custom_id must match"):
        batch_of([ask("has.dot", "Hi")])
    with pytest.raises(InvalidBatchRequest, match="max_tokens is required"):
        batch_of([{"custom_id": "a", "messages": [{"role": "user", "content": "Hi"}]}])
    assert not ModelCompletionBatch.objects.exists()


def test_a_synchronous_400_at_create_fails_the_batch_and_creates_nothing(
    anthropic_emulator: Any,
) -> None:
    batch = batch_of([ask("fine", "Hi")])
    # A custom id the emulator refuses, slipped past create_batch's own check.
    batch.completions.update(batch_custom_id="not.allowed")
    report = submit([batch.pk])
    assert not report.ok
    batch.refresh_from_db()
    assert batch.status == "failed"
    assert "String should match pattern" in batch.failure_reason
    assert batch.provider_batch_id == ""
    assert anthropic_emulator.state.count_calls("create_batch") == 1
    assert anthropic_emulator.state.batches == {}


def test_cancel_keeps_succeeded_lines_and_fails_the_rest_as_cancelled(
    anthropic_emulator: Any,
) -> None:
    anthropic_emulator.config.share_per_read = 0.0
    anthropic_emulator.config.requests_per_read = 1
    batch = batch_of([ask(f"c-{i}", f"Question {i}") for i in range(5)])
    submit([batch.pk])
    poll([batch.pk], force=True)  # one line done
    batch.refresh_from_db()
    batch.cancel()
    batch.refresh_from_db()
    assert batch.status == "cancelling"
    batch = run_to_end(batch)
    assert batch.status == "canceled"
    rows = {c.batch_custom_id: c for c in batch.completions.all()}
    done = [c for c in rows.values() if c.status == "completed"]
    cancelled = [c for c in rows.values() if c.failure_error == "request cancelled"]
    # One line finished before the cancel, one was in flight and still finished.
    assert sorted(c.batch_custom_id for c in done) == ["c-0", "c-1"]
    assert len(cancelled) == 3 and all(c.status == "failed" for c in cancelled)
    assert batch.request_counts == {
        "total": 5,
        "pending": 0,
        "succeeded": 2,
        "failed": 0,
        "cancelled": 3,
    }
    assert batch.total_cost == sum(c.total_cost for c in done)
    assert anthropic_emulator.state.count_calls("cancel_batch") == 1


def test_expiry_keeps_finished_lines_and_expires_the_rest(anthropic_emulator: Any) -> None:
    anthropic_emulator.config.share_per_read = 0.0
    anthropic_emulator.config.requests_per_read = 1
    batch = batch_of([ask(f"e-{i}", f"Question {i}") for i in range(4)])
    submit([batch.pk])
    poll([batch.pk], force=True)
    anthropic_emulator.state.advance(24 * 3600 + 1)
    batch = run_to_end(batch)
    assert batch.status == "expired"
    rows = list(batch.completions.order_by("batch_custom_id"))
    assert [r.status for r in rows] == ["completed", "failed", "failed", "failed"]
    assert {r.failure_error for r in rows[1:]} == {"request expired"}
    assert batch.request_counts["cancelled"] == 3 and batch.request_counts["succeeded"] == 1


def test_a_lost_create_is_adopted_with_exactly_one_provider_batch(
    anthropic_emulator: Any,
) -> None:
    batch = batch_of([ask(f"l-{i}", f"Question {i}") for i in range(3)])
    anthropic_emulator.add_fault(Fault("create_batch", "accept_then_drop"))
    report = submit([batch.pk])
    assert report.submitted == []
    batch.refresh_from_db()
    assert batch.status == "submitting" and batch.failure_error == "submission outcome unknown"
    assert len(anthropic_emulator.state.batches) == 1  # it was created; the answer was lost
    report = poll([batch.pk], force=True)
    assert report.submitted == [batch.pk]
    assert anthropic_emulator.state.count_calls("list_batches") == 1
    provider = one_provider_batch(anthropic_emulator)
    batch = run_to_end(batch)
    assert batch.provider_batch_id == provider.id
    assert batch.completions.filter(status="completed").count() == 3


def test_a_lost_create_that_did_not_happen_is_created_once_after_reconciliation(
    anthropic_emulator: Any,
) -> None:
    batch = batch_of([ask("n-1", "Hi"), ask("n-2", "Hello")])
    anthropic_emulator.add_fault(Fault("create_batch", "drop"))
    submit([batch.pk])
    batch.refresh_from_db()
    assert batch.status == "submitting"
    assert anthropic_emulator.state.batches == {}
    assert poll([batch.pk], force=True).submitted == [batch.pk]
    assert anthropic_emulator.state.count_calls("list_batches") == 1
    assert anthropic_emulator.state.count_calls("create_batch") == 2  # the drop, then one
    one_batch = len(anthropic_emulator.state.batches)
    assert one_batch == 1
    assert run_to_end(batch).completions.filter(status="completed").count() == 2


def _create_directly(emu: Any, count: int, ids: list[str] | None = None) -> str:
    """Another user of the workspace creates a batch of ``count`` requests."""
    data = {
        "requests": [
            {
                "custom_id": ids[i] if ids else f"other-{i}",
                "params": {
                    "model": "claude-haiku-4-5",
                    "max_tokens": 10,
                    "messages": [{"role": "user", "content": "x"}],
                },
            }
            for i in range(count)
        ]
    }
    return str(emu.state.create_batch(data)["id"])


@pytest.fixture
def ambiguous(anthropic_emulator: Any) -> tuple[ModelCompletionBatch, str, str]:
    """A lost create with two fitting candidates: ours and a stranger's of the same size."""
    batch = batch_of([ask("a-1", "Hi"), ask("a-2", "Hello")])
    anthropic_emulator.add_fault(Fault("create_batch", "accept_then_drop"))
    submit([batch.pk])
    (ours,) = anthropic_emulator.state.batches
    other = _create_directly(anthropic_emulator, 2)
    report = poll([batch.pk], force=True)
    assert report.submitted == []
    batch.refresh_from_db()
    return batch, ours, other


def test_an_ambiguous_lost_create_is_held_for_the_operator(
    anthropic_emulator: Any, ambiguous: tuple[ModelCompletionBatch, str, str]
) -> None:
    batch, ours, other = ambiguous
    assert batch.status == "submitting"
    assert batch.failure_error == "lost create ambiguous"
    assert {c["provider_batch_id"] for c in batch.reconcile_candidates} == {ours, other}
    assert all(c["requests"] == 2 for c in batch.reconcile_candidates)
    poll([batch.pk], force=True)  # and again: still held, nothing created
    assert anthropic_emulator.state.count_calls("create_batch") == 1
    assert len(anthropic_emulator.state.batches) == 2
    assert anthropic_emulator.state.count_calls("cancel_batch") == 0  # the stranger's is left


def test_adopting_a_candidate_goes_on_to_completion(
    anthropic_emulator: Any, ambiguous: tuple[ModelCompletionBatch, str, str]
) -> None:
    batch, ours, _ = ambiguous
    submission.adopt_candidate(get_strategy("anthropic"), batch, ours)
    batch = run_to_end(batch)
    assert batch.provider_batch_id == ours
    assert batch.status == "ended" and batch.reconcile_candidates == []
    assert batch.completions.filter(status="completed").count() == 2
    assert anthropic_emulator.state.count_calls("create_batch") == 1


def test_abandoning_fails_the_batch_and_creates_nothing(
    anthropic_emulator: Any, ambiguous: tuple[ModelCompletionBatch, str, str]
) -> None:
    batch, ours, other = ambiguous
    batch = submission.abandon(batch)
    assert batch.status == "failed" and batch.failure_error == "abandoned by operator"
    assert ours in batch.failure_reason and other in batch.failure_reason
    poll([batch.pk], force=True)
    submit([batch.pk])
    assert anthropic_emulator.state.count_calls("create_batch") == 1
    assert set(batch.completions.values_list("status", flat=True)) == {"failed"}


def _end(emu: Any, *batch_ids: str) -> None:
    for batch_id in batch_ids:
        while emu.state.get_batch(batch_id)["processing_status"] != "ended":
            pass


def test_ended_candidates_are_told_apart_by_their_custom_ids(
    anthropic_emulator: Any, ambiguous: tuple[ModelCompletionBatch, str, str]
) -> None:
    batch, ours, other = ambiguous
    _end(anthropic_emulator, ours, other)
    results_read = anthropic_emulator.state.count_calls("list_results")
    assert poll([batch.pk], force=True).submitted == [batch.pk]
    # Both candidates' results were read to compare them (then ours again, harvested).
    assert anthropic_emulator.state.count_calls("list_results") >= results_read + 2
    batch = run_to_end(batch)
    assert batch.provider_batch_id == ours
    assert batch.completions.filter(status="completed").count() == 2
    assert anthropic_emulator.state.count_calls("create_batch") == 1
    assert anthropic_emulator.state.count_calls("cancel_batch") == 0  # the stranger's is left


def test_a_strangers_copy_of_the_same_custom_ids_stays_ambiguous(
    anthropic_emulator: Any,
) -> None:
    batch = batch_of([ask("a-1", "Hi"), ask("a-2", "Hello")])
    anthropic_emulator.add_fault(Fault("create_batch", "accept_then_drop"))
    submit([batch.pk])
    (ours,) = anthropic_emulator.state.batches
    copy = _create_directly(anthropic_emulator, 2, ids=["a-2", "a-1"])
    _end(anthropic_emulator, ours, copy)
    assert poll([batch.pk], force=True).submitted == []
    batch.refresh_from_db()
    assert batch.failure_error == "lost create ambiguous"
    assert {c["provider_batch_id"] for c in batch.reconcile_candidates} == {ours, copy}
    assert anthropic_emulator.state.count_calls("create_batch") == 1


def test_a_candidate_already_bound_to_another_batch_is_not_one(anthropic_emulator: Any) -> None:
    first = run_to_end(batch_of([ask("b-1", "Hi")]))
    batch = batch_of([ask("b-2", "Hi")])
    anthropic_emulator.add_fault(Fault("create_batch", "accept_then_drop"))
    submit([batch.pk])
    assert poll([batch.pk], force=True).submitted == [batch.pk]
    batch.refresh_from_db()
    assert batch.provider_batch_id not in ("", first.provider_batch_id)
    assert anthropic_emulator.state.count_calls("create_batch") == 2


def test_a_cut_results_stream_is_read_again_and_complete(anthropic_emulator: Any) -> None:
    anthropic_emulator.add_fault(Fault("list_results", "truncate"))
    batch = run_to_end(batch_of([ask(f"t-{i}", f"Question {i}") for i in range(6)]))
    assert batch.completions.filter(status="completed").count() == 6
    assert anthropic_emulator.state.count_calls("list_results") == 2


@pytest.mark.parametrize("status", [529, 429])
def test_overloaded_and_rate_limited_polls_are_retried(
    anthropic_emulator: Any, status: int
) -> None:
    batch = batch_of([ask("r-1", "Hi")])
    submit([batch.pk])
    anthropic_emulator.add_fault(Fault("get_batch", "status", status=status, times=2))
    report = poll([batch.pk], force=True)
    assert report.ok, report.errors
    assert anthropic_emulator.state.count_calls("get_batch") == 3
    assert run_to_end(batch).completions.get().status == "completed"


def test_a_second_poll_changes_nothing(anthropic_emulator: Any) -> None:
    batch = run_to_end(batch_of([ask("s-1", "Hi"), ask("s-2", "[[emulator:error nope]]")]))
    before = {
        c.batch_custom_id: (c.status, c.total_cost, c.failure_reason, c.raw_response)
        for c in batch.completions.all()
    }
    calls = len(anthropic_emulator.state.calls)
    report = poll([batch.pk], force=True)
    assert report.ok and report.results_applied == 0
    after = {
        c.batch_custom_id: (c.status, c.total_cost, c.failure_reason, c.raw_response)
        for c in batch.completions.all()
    }
    assert after == before
    assert len(anthropic_emulator.state.calls) == calls  # ended and harvested: nothing asked
    batch.refresh_from_db()
    assert batch.total_cost == batch.completions.get(batch_custom_id="s-1").total_cost


def test_tool_calls_come_back_openai_shaped(anthropic_emulator: Any) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup_order",
                "description": "Find an order",
                "parameters": {
                    "type": "object",
                    "properties": {"order_id": {"type": "string"}},
                },
            },
        }
    ]
    batch = run_to_end(batch_of([ask("tool-1", "Find it [[emulator:tool-call]]", tools=tools)]))
    row = batch.completions.get()
    assert row.status == "completed" and row.finish_reason == "tool_calls"
    (call,) = row.response_tool_calls
    assert call["type"] == "function" and call["function"]["name"] == "lookup_order"
    assert json.loads(call["function"]["arguments"]) == {"order_id": "Find it"}
    sent = next(iter(anthropic_emulator.state.batches.values())).lines[0].params
    assert sent["tools"][0]["input_schema"]["properties"] == {"order_id": {"type": "string"}}


def test_every_call_carries_the_key_and_the_version(anthropic_emulator: Any, settings: Any) -> None:
    settings.RAIF_BATCHES = {**settings.RAIF_BATCHES, "ANTHROPIC_API_KEY": "wrong-key"}
    batch = batch_of([ask("k-1", "Hi")])
    report = submit([batch.pk])
    assert not report.ok
    assert "wrong-key" not in " ".join(report.errors)
    batch.refresh_from_db()
    assert batch.status == "pending" and batch.failure_error == "API key rejected"
    assert anthropic_emulator.state.batches == {}


def test_results_gone_fail_the_lines_after_the_attempts(
    anthropic_emulator: Any, settings: Any
) -> None:
    settings.RAIF_BATCHES = {**settings.RAIF_BATCHES, "RESULTS_GONE_ATTEMPTS": 2}
    anthropic_emulator.config.results_gone_status = 404
    batch = run_to_end(batch_of([ask("g-1", "Hi"), ask("g-2", "Hello")]))
    assert batch.status == "ended"
    assert anthropic_emulator.state.count_calls("list_results") == 2
    assert set(batch.completions.values_list("status", flat=True)) == {"failed"}


def test_a_line_missing_from_the_results_is_failed(anthropic_emulator: Any) -> None:
    anthropic_emulator.config.missing_result_ids = {"m-2"}
    batch = run_to_end(batch_of([ask("m-1", "Hi"), ask("m-2", "Hello")]))
    assert batch.completions.get(batch_custom_id="m-1").status == "completed"
    missing = batch.completions.get(batch_custom_id="m-2")
    assert missing.status == "failed" and missing.failure_reason


@pytest.mark.parametrize("live_counts", [False, True])
def test_counts_zero_until_the_end_or_live_read_the_same(
    anthropic_emulator: Any, live_counts: bool
) -> None:
    anthropic_emulator.config.live_counts = live_counts
    batch = batch_of([ask(f"v-{i}", f"Question {i}") for i in range(8)])
    submit([batch.pk])
    poll([batch.pk], force=True)
    batch.refresh_from_db()
    assert batch.status == "in_progress"
    assert batch.request_counts["total"] == 8
    assert batch.request_counts["succeeded"] == (2 if live_counts else 0)
    batch = run_to_end(batch)
    assert batch.request_counts["succeeded"] == 8


def test_under_transient_failures_one_provider_batch_and_every_line_once(
    anthropic_emulator: Any,
) -> None:
    anthropic_emulator.config.transient_failure_rate = 0.5  # seeded: replays the same way
    batch = batch_of([ask(f"f-{i}", f"Question {i}") for i in range(6)])
    for _ in range(20):
        submit([batch.pk])
        batch.refresh_from_db()
        if batch.provider_batch_id:
            break
    batch = run_to_end(batch, rounds=200)
    assert len(anthropic_emulator.state.batches) == 1
    assert batch.completions.filter(status="completed").count() == 6
    calls = anthropic_emulator.state.calls
    assert sum(c.status in (0, 503) for c in calls) >= 2


def test_the_key_never_shows(settings: Any, caplog: Any) -> None:
    import logging

    from raif_batches.emulator import run_emulator

    secret = "sk-ant-api03-S3cr3tK3y0f1e2d3c4b5a69788796a5b4c3d2e1f0"
    caplog.set_level(logging.DEBUG)
    with run_emulator(api_key=secret, provider="anthropic") as emu:
        settings.RAIF_BATCHES = {
            **settings.RAIF_BATCHES,
            "ANTHROPIC_BASE_URL": emu.base_url,
            "ANTHROPIC_API_KEY": secret,
        }
        emu.add_fault(Fault("create_batch", "accept_then_drop"))
        emu.add_fault(Fault("get_batch", "drop"))
        emu.add_fault(Fault("list_results", "status", status=529))
        batch = run_to_end(batch_of([ask("s-1", "Hi"), ask("s-2", "Hello")]))
        other = batch_of([ask("s-3", "Hi")])
        submit([other.pk])
        other.refresh_from_db()
        other.cancel()
        settings.RAIF_BATCHES = {**settings.RAIF_BATCHES, "ANTHROPIC_API_KEY": "sk-ant-wrong"}
        refused = submit([batch_of([ask("s-4", "Hi")]).pk])
        assert refused.fatal is not None
        error = refused.fatal
        texts = [caplog.text, repr(refused.errors), repr(emu.state.calls)]
        texts += [str(error), repr(error.args), repr(error.payload)]
        if error.response is not None:
            texts.append(repr(dict(error.response.request.headers)))
    texts += [
        repr(list(model.objects.values())) for model in (ModelCompletionBatch, ModelCompletion)
    ]
    assert batch.status == "ended"
    assert all(secret not in text for text in texts)


def test_structured_output_through_the_system_instruction(anthropic_emulator: Any) -> None:
    schema = {
        "type": "object",
        "properties": {"label": {"type": "string", "enum": ["billing", "delivery"]}},
    }
    response_format = {"type": "json_schema", "json_schema": {"name": "t", "schema": schema}}
    batch = run_to_end(
        batch_of(
            [
                ask("j-1", "My parcel is late", response_format=response_format),
                ask("j-2", "Late [[emulator:invalid-json]]", response_format=response_format),
            ]
        )
    )
    good = batch.completions.get(batch_custom_id="j-1")
    assert good.status == "completed"
    assert good.response_json["label"] in ("billing", "delivery")
    bad = batch.completions.get(batch_custom_id="j-2")
    assert bad.status == "failed" and bad.failure_error == "invalid JSON answer"
    assert bad.total_cost is not None  # paid for, kept
    sent = next(iter(anthropic_emulator.state.batches.values())).lines[0].params
    assert "response_format" not in sent and "JSON schema" in sent["system"]


def test_a_batch_past_its_max_age_is_cancelled_and_ends_expired(
    anthropic_emulator: Any, settings: Any
) -> None:
    from datetime import timedelta

    from django.utils import timezone

    settings.RAIF_BATCHES = {**settings.RAIF_BATCHES, "MAX_BATCH_AGE": 3600}
    anthropic_emulator.config.share_per_read = 0.0
    anthropic_emulator.config.requests_per_read = 2
    batch = batch_of([ask(f"d-{i}", f"Question {i}") for i in range(6)])
    submit([batch.pk])
    poll([batch.pk], force=True)  # two lines done
    then = timezone.now() - timedelta(seconds=3601)
    ModelCompletionBatch.objects.filter(pk=batch.pk).update(created_at=then, submitted_at=then)
    report = poll([batch.pk], force=True)
    assert report.cancelled_for_age == [batch.pk]
    batch = run_to_end(batch)
    assert batch.status == "expired" and batch.failure_error == "max age exceeded"
    # Two done before, one in flight that still finished; the rest never ran.
    assert batch.completions.filter(status="completed").count() == 3
    failed = batch.completions.filter(status="failed")
    assert set(failed.values_list("failure_error", flat=True)) == {"request expired"}
    assert failed.count() == 3
    assert anthropic_emulator.state.count_calls("cancel_batch") == 1


def test_reconciliation_reads_every_page_of_the_workspace_list(anthropic_emulator: Any) -> None:
    """The lost batch is older than a page of other users' batches of the same size."""
    anthropic_emulator.config.max_page_size = 5
    batch = batch_of([ask("p-1", "Hi"), ask("p-2", "Hello")])
    anthropic_emulator.add_fault(Fault("create_batch", "accept_then_drop"))
    submit([batch.pk])
    (ours,) = anthropic_emulator.state.batches
    for _ in range(12):
        _create_directly(anthropic_emulator, 3)  # another size: never candidates
    assert poll([batch.pk], force=True).submitted == [batch.pk]
    assert anthropic_emulator.state.count_calls("list_batches") == 3
    batch.refresh_from_db()
    assert batch.provider_batch_id == ours
