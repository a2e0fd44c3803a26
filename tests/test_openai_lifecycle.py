"""OpenAI batches end to end: submit / poll against the OpenAI emulator over real HTTP.

The emulator plays OpenAI as its fact sheet says (the realistic profile: a validating phase,
lines finishing over several reads, finalizing, lying counters after a cancel, "" file ids,
rows in any order) unless a test says otherwise. Outcomes are asserted on the rows, the counts,
the costs (exact, from the price table) and on what the emulator saw.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from raif_batches import create_batch
from raif_batches.emulator import Fault
from raif_batches.models import ModelCompletionBatch
from raif_batches.polling import poll, submit
from raif_batches.pricing import MILLION, price_for, quantize

from .helpers import run_to_end, user

pytestmark = pytest.mark.django_db

SYSTEM = "You answer questions about tickets, briefly."


def make_openai_batch(
    count: int = 3, *, failing: int = 0, model: str = "gpt-5-mini", system: bool = True
) -> ModelCompletionBatch:
    def messages(text: str) -> list[dict[str, str]]:
        head = [{"role": "system", "content": SYSTEM}] if system else []
        return head + user(text)

    requests: list[dict[str, Any]] = [
        {"custom_id": f"req-{i:03d}", "messages": messages(f"Question number {i}")}
        for i in range(count)
    ]
    requests += [
        {
            "custom_id": f"bad-{i:03d}",
            "messages": messages(f"[[emulator:error Invalid 'temperature' on line {i}]]"),
        }
        for i in range(failing)
    ]
    return create_batch(provider="openai", model=model, requests=requests)


def expected_cost(model: str, usage: dict[str, Any]) -> tuple[Decimal, Decimal]:
    """(prompt, output) cost of one line from the price table: cached tokens inside the prompt
    at the cached rate, reasoning inside the completion tokens, half off."""
    price = price_for(model)
    assert price is not None and price.batch_discount == Decimal("0.50")
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    uncached = usage["prompt_tokens"] - cached
    factor = (1 - price.batch_discount) / MILLION
    prompt = quantize((uncached * price.input + cached * price.cached_input) * factor)
    output = quantize(usage["completion_tokens"] * price.output * factor)
    return prompt, output


def provider_batch(emu: Any, batch: ModelCompletionBatch) -> Any:
    batch.refresh_from_db()
    return emu.state.batches[batch.provider_batch_id]


def outcomes(batch: ModelCompletionBatch) -> dict[str, tuple[str, str]]:
    return {
        c.batch_custom_id: (c.status, c.failure_error)
        for c in batch.completions.order_by("batch_custom_id")
    }


def test_happy_path_text_tokens_and_exact_costs(openai_emulator: Any) -> None:
    batch = run_to_end(make_openai_batch(4))

    assert batch.status == "ended" and batch.results_fetched_at is not None
    assert batch.request_counts == {
        "total": 4,
        "pending": 0,
        "succeeded": 4,
        "failed": 0,
        "cancelled": 0,
    }
    done = list(batch.completions.order_by("batch_custom_id"))
    assert [c.status for c in done] == ["completed"] * 4
    total = Decimal(0)
    for completion in done:
        usage = completion.response_payload["usage"]
        assert completion.raw_response.startswith("Emulated answer to: Question number")
        assert completion.finish_reason == "stop"
        assert completion.prompt_tokens == usage["prompt_tokens"]
        assert completion.cached_tokens == usage["prompt_tokens_details"]["cached_tokens"]
        assert completion.completion_tokens == usage["completion_tokens"]
        assert completion.reasoning_tokens == usage["completion_tokens_details"]["reasoning_tokens"]
        assert completion.reasoning_tokens and completion.reasoning_tokens > 0  # gpt-5 reasons
        prompt, output = expected_cost("gpt-5-mini", usage)
        assert (completion.prompt_token_cost, completion.output_token_cost) == (prompt, output)
        assert completion.total_cost == prompt + output
        total += prompt + output
    # The shared system prompt hits the cache from the second line on.
    assert sum(1 for c in done if c.cached_tokens) == 3
    assert batch.total_cost == total
    assert batch.prompt_token_cost == sum(c.prompt_token_cost for c in done)
    assert batch.output_token_cost == sum(c.output_token_cost for c in done)
    # One upload (named after the batch), one create carrying the metadata.
    assert openai_emulator.state.count_calls("upload_file") == 1
    assert openai_emulator.state.count_calls("create_batch") == 1
    remote = provider_batch(openai_emulator, batch)
    assert remote.metadata == {
        "raif_batch_name": batch.provider_batch_name,
        "raif_batch_id": str(batch.pk),
    }
    uploaded = openai_emulator.state.files[batch.input_file_id]
    assert uploaded.filename == f"raif_batch_{batch.pk}.jsonl"
    first = json.loads(uploaded.content.splitlines()[0])
    assert first["url"] == "/v1/chat/completions" and first["body"]["model"] == "gpt-5-mini"


def test_failed_line_keeps_the_providers_message(openai_emulator: Any) -> None:
    batch = run_to_end(make_openai_batch(2, failing=1))

    assert batch.status == "ended"
    failed = batch.completions.get(batch_custom_id="bad-000")
    assert failed.status == "failed"
    assert "Invalid 'temperature' on line 0" in failed.failure_reason
    assert failed.total_cost is None
    done = batch.completions.filter(status="completed")
    assert done.count() == 2
    assert batch.total_cost == sum(c.total_cost for c in done)


def test_validation_failure_keeps_the_reason_and_costs_nothing(openai_emulator: Any) -> None:
    with pytest.warns(Warning, match="not in the price table"):
        batch = make_openai_batch(3, model="gpt-9-imaginary")
    batch = run_to_end(batch)

    assert batch.status == "failed"
    assert "model_not_found (line 1)" in batch.failure_reason
    assert "gpt-9-imaginary" in batch.failure_reason
    assert set(outcomes(batch).values()) == {("failed", "batch failed")}
    assert not batch.total_cost
    remote = provider_batch(openai_emulator, batch)
    assert remote.status == "failed" and remote.output_file_id is None
    assert openai_emulator.state.count_calls("list_results") == 0


def test_every_line_failed_is_completed_without_an_output_file(openai_emulator: Any) -> None:
    batch = run_to_end(make_openai_batch(0, failing=3))

    remote = provider_batch(openai_emulator, batch)
    assert remote.status == "completed" and remote.output_file_id is None
    assert batch.status == "ended"
    completions = list(batch.completions.all())
    assert len(completions) == 3
    assert all(
        c.status == "failed" and "Invalid 'temperature'" in c.failure_reason for c in completions
    )
    assert not batch.total_cost
    assert openai_emulator.state.count_calls("list_results") == 1  # the error file only


def test_cancel_keeps_the_results_produced(openai_emulator: Any) -> None:
    openai_emulator.config.share_per_read = 0.0
    openai_emulator.config.requests_per_read = 1
    openai_emulator.config.validation_reads = 0
    batch = make_openai_batch(6)
    submit([batch.pk])
    for _ in range(3):
        poll([batch.pk], force=True)
    remote = provider_batch(openai_emulator, batch)
    produced = [line.custom_id for line in remote.lines if line.state == "succeeded"]
    assert len(produced) == 3
    batch.refresh_from_db()
    batch = batch.cancel()
    assert batch.status == "cancelling"
    batch = run_to_end(batch)

    assert batch.status == "canceled"
    # OpenAI's counters lie after a cancel ({total, 0, 0}); the files are the truth. The
    # emulator, as observed, leaves the last line it finished out of both files: the
    # lifecycle fails it like the lines that never ran (no result served for it).
    assert remote.status == "cancelled"
    lost = [line.custom_id for line in remote.lines if not line.in_files]
    assert lost == produced[-1:]
    result = outcomes(batch)
    for custom_id in produced[:-1]:
        assert result[custom_id] == ("completed", "")
    assert result[produced[-1]] == ("failed", "batch canceled")
    never_ran = [cid for cid in result if cid not in produced]
    assert {result[cid] for cid in never_ran} == {("failed", "request cancelled")}
    kept = batch.completions.filter(status="completed")
    assert batch.total_cost == sum(c.total_cost for c in kept)


def test_expired_batch_keeps_finished_lines_and_expires_the_rest(openai_emulator: Any) -> None:
    openai_emulator.config.share_per_read = 0.0
    openai_emulator.config.requests_per_read = 1
    openai_emulator.config.validation_reads = 0
    batch = make_openai_batch(5)
    submit([batch.pk])
    poll([batch.pk], force=True)
    poll([batch.pk], force=True)
    openai_emulator.state.advance(86_400 + 60)
    batch = run_to_end(batch)

    assert batch.status == "expired"
    result = outcomes(batch)
    finished = [cid for cid, (state, _) in result.items() if state == "completed"]
    assert finished == ["req-000", "req-001"]
    assert {result[cid] for cid in result if cid not in finished} == {("failed", "request expired")}
    assert batch.total_cost == sum(
        c.total_cost for c in batch.completions.filter(status="completed")
    )


def test_lost_create_answer_is_adopted_by_metadata(openai_emulator: Any) -> None:
    batch = make_openai_batch(3)
    openai_emulator.add_fault(Fault("create_batch", "accept_then_drop"))
    report = submit([batch.pk])
    assert report.submitted == [] and report.ok
    batch.refresh_from_db()
    assert batch.status == "submitting" and batch.failure_error == "submission outcome unknown"

    assert poll([batch.pk], force=True).submitted == [batch.pk]
    assert openai_emulator.state.count_calls("list_batches") >= 1
    assert openai_emulator.state.count_calls("create_batch") == 1
    assert len(openai_emulator.state.batches) == 1
    batch = run_to_end(batch)
    (remote,) = openai_emulator.state.batches.values()
    assert batch.provider_batch_id == remote.id == remote.batch_id
    assert remote.name == batch.provider_batch_name
    assert set(outcomes(batch).values()) == {("completed", "")}


def test_lost_create_that_never_happened_is_created_once(openai_emulator: Any) -> None:
    batch = make_openai_batch(3)
    openai_emulator.add_fault(Fault("create_batch", "drop"))
    submit([batch.pk])
    assert len(openai_emulator.state.batches) == 0

    assert poll([batch.pk], force=True).submitted == [batch.pk]
    assert openai_emulator.state.count_calls("list_batches") >= 1
    assert openai_emulator.state.count_calls("create_batch") == 2
    assert openai_emulator.state.count_calls("upload_file") == 1  # the file was reused
    assert len(openai_emulator.state.batches) == 1
    batch = run_to_end(batch)
    assert set(outcomes(batch).values()) == {("completed", "")}


def test_lost_upload_answer_is_uploaded_again(openai_emulator: Any) -> None:
    batch = make_openai_batch(2)
    openai_emulator.add_fault(Fault("upload_file", "accept_then_drop"))
    assert submit([batch.pk]).submitted == [batch.pk]
    assert openai_emulator.state.count_calls("upload_file") == 2
    assert openai_emulator.state.count_calls("create_batch") == 1
    batch = run_to_end(batch)
    assert set(outcomes(batch).values()) == {("completed", "")}


def test_cut_results_download_is_read_again_complete(openai_emulator: Any) -> None:
    openai_emulator.add_fault(Fault("list_results", "truncate"))
    batch = run_to_end(make_openai_batch(5, failing=1))

    assert batch.status == "ended"
    result = outcomes(batch)
    assert len(result) == 6
    assert [cid for cid, (state, _) in result.items() if state == "failed"] == ["bad-000"]
    # Two files (output, error), one of them read twice.
    assert openai_emulator.state.count_calls("list_results") == 3


@pytest.mark.parametrize("status", [500, 503, 429])
def test_transient_errors_on_get_batch_are_retried(openai_emulator: Any, status: int) -> None:
    openai_emulator.add_fault(
        Fault("get_batch", "status", status=status, times=2, retry_after=0.01)
    )
    batch = run_to_end(make_openai_batch(2))
    assert batch.status == "ended"
    assert set(outcomes(batch).values()) == {("completed", "")}
    statuses = [c.status for c in openai_emulator.state.calls if c.endpoint == "get_batch"]
    assert statuses[:2] == [status, status]


def test_a_second_poll_changes_nothing(openai_emulator: Any) -> None:
    batch = run_to_end(make_openai_batch(3, failing=1))
    before = {
        c.batch_custom_id: (c.status, c.total_cost, c.completed_at, c.failed_at)
        for c in batch.completions.all()
    }
    reads = openai_emulator.state.count_calls("list_results")

    poll([batch.pk], force=True)
    batch.refresh_from_db()
    after = {
        c.batch_custom_id: (c.status, c.total_cost, c.completed_at, c.failed_at)
        for c in batch.completions.all()
    }
    assert after == before
    assert batch.completions.count() == 4
    assert openai_emulator.state.count_calls("list_results") == reads


def test_a_line_in_neither_file_fails_as_entry_missing(openai_emulator: Any) -> None:
    openai_emulator.config.missing_result_ids = {"req-001"}
    batch = run_to_end(make_openai_batch(3))

    assert batch.status == "ended"
    result = outcomes(batch)
    assert result["req-001"] == ("failed", "entry missing")
    assert result["req-000"] == result["req-002"] == ("completed", "")


def test_a_wrong_key_is_refused_and_never_shown(openai_emulator: Any, settings: Any) -> None:
    wrong = "sk-Wr0ngK3y-aaaabbbbccccddddeeeeffff00001111"
    settings.RAIF_BATCHES = {**settings.RAIF_BATCHES, "OPENAI_API_KEY": wrong}
    batch = make_openai_batch(2)
    report = submit([batch.pk])
    assert report.submitted == [] and report.fatal is not None
    batch.refresh_from_db()
    assert batch.status == "pending"
    assert batch.failure_error == "API key rejected"
    assert "invalid_api_key" in batch.failure_reason
    assert wrong not in batch.failure_reason and wrong not in repr(report)
    assert openai_emulator.state.count_calls("create_batch") == 0


def test_transient_faults_everywhere_still_give_every_result_once(openai_emulator: Any) -> None:
    openai_emulator.config.transient_failure_rate = 0.3
    openai_emulator.config.seed = 7
    batch = make_openai_batch(6, failing=1)
    for _ in range(40):
        batch.refresh_from_db()
        if batch.results_fetched_at is not None:
            break
        if batch.status == "pending":
            submit([batch.pk])
        else:
            poll([batch.pk], force=True)
    batch.refresh_from_db()
    assert batch.status == "ended" and batch.results_fetched_at is not None
    result = outcomes(batch)
    assert len(result) == 7
    assert [cid for cid, (state, _) in result.items() if state == "failed"] == ["bad-000"]
    # However many creates the faults cost, one provider batch carries this batch's name.
    ours = [
        b
        for b in openai_emulator.state.batches.values()
        if b.metadata.get("raif_batch_name") == batch.provider_batch_name
    ]
    assert [b.id for b in ours] == [batch.provider_batch_id]


def test_unreadable_result_lines_are_skipped_read_again_then_the_lines_fail(
    openai_emulator: Any, settings: Any
) -> None:
    body = b'not json\r\n{"custom_id": null}\n\n[1, 2]\n{"id": "batch_req_1"}'
    openai_emulator.add_fault(Fault("list_results", "raw", status=200, raw_body=body, times=None))
    batch = make_openai_batch(2)
    submit([batch.pk])
    for _ in range(10):
        poll([batch.pk], force=True)
        batch.refresh_from_db()
        if batch.results_lacking_since is not None:
            break
    # The lines may have been among the unreadable entries: not failed yet, read again later.
    assert batch.status == "ended" and batch.results_fetched_at is None
    assert set(outcomes(batch).values()) == {("pending", "")}
    assert batch.results_next_read_at is not None

    settings.RAIF_BATCHES = {**settings.RAIF_BATCHES, "RESULTS_WAIT_SECONDS": 0}
    batch = run_to_end(batch)
    assert batch.results_fetched_at is not None
    assert set(outcomes(batch).values()) == {("failed", "entry missing")}
    assert "could not be read" in batch.completions.first().failure_reason
    assert not batch.total_cost


def test_results_gone_fail_the_lines_after_the_attempts(
    openai_emulator: Any, settings: Any
) -> None:
    settings.RAIF_BATCHES = {**settings.RAIF_BATCHES, "RESULTS_GONE_ATTEMPTS": 1}
    openai_emulator.config.results_gone_status = 404
    batch = run_to_end(make_openai_batch(2))

    assert batch.status == "ended"
    assert set(outcomes(batch).values()) == {("failed", "results unavailable")}
    assert batch.failure_error == "results unavailable"


def test_each_line_is_sent_as_the_exact_chat_completions_body(openai_emulator: Any) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "description": "Find a ticket",
                "parameters": {"type": "object", "properties": {"id": {"type": "integer"}}},
            },
        }
    ]
    batch = create_batch(
        provider="openai",
        model="gpt-4.1-mini",
        requests=[
            {
                "custom_id": "t-1",
                "messages": user("Hi"),
                "temperature": 0.3,
                "max_tokens": 50,
                "response_format": {"type": "json_object"},
                "reasoning_effort": "low",
            },
            {
                "custom_id": "t-2",
                "messages": user("Look up [[emulator:tool-call]]"),
                "tools": tools,
            },
        ],
    )
    submit([batch.pk])
    batch.refresh_from_db()
    uploaded = openai_emulator.state.files[batch.input_file_id].content
    sent = [json.loads(raw) for raw in uploaded.splitlines() if raw]
    assert sent[0] == {
        "custom_id": "t-1",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": "gpt-4.1-mini",
            "messages": user("Hi"),
            "temperature": 0.3,
            "max_tokens": 50,
            "response_format": {"type": "json_object"},
            "reasoning_effort": "low",
        },
    }
    assert sent[1]["body"]["tools"] == tools

    batch = run_to_end(batch)
    first = batch.completions.get(batch_custom_id="t-1")
    assert first.status == "completed" and isinstance(first.response_json, dict)
    assert not first.reasoning_tokens  # gpt-4.1 does not reason
    second = batch.completions.get(batch_custom_id="t-2")
    assert second.finish_reason == "tool_calls"
    assert second.response_tool_calls[0]["function"]["name"] == "lookup"
