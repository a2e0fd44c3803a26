"""One behaviour suite for every provider: each test runs once per emulator (xAI, OpenAI,
Anthropic) over real HTTP, through the public functions (``submit``, ``poll``, ``harvest``,
``cancel``), and asserts what a user and the provider can see: the stored lines, the batch's
totals, and how many provider batches exist.

Each provider's own wire quirks have their own tests (``test_<provider>_*.py``); here only the
promises that hold whoever the provider is: every line ends with the provider's answer or its
message, costs come out of the price table (or the provider's own figure), totals are sums of
lines, a lost create never leads to a second paid batch, transient faults are survived, results
already produced are kept when a batch is cancelled or runs past its age, and a second run
changes nothing.
"""

from __future__ import annotations

import re
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest
from django.db.models import Sum

from raif_batches import create_batch
from raif_batches.emulator import Fault
from raif_batches.lifecycle import status as batch_status
from raif_batches.models import ModelCompletion, ModelCompletionBatch
from raif_batches.polling import harvest, poll, submit
from raif_batches.providers import get_strategy

from .helpers import user
from .processes import environment, run_together

pytestmark = pytest.mark.django_db


def requests_for(count: int, *, failing: int = 0, prefix: str = "req") -> list[dict[str, Any]]:
    """Chat requests every provider accepts (Anthropic needs ``max_tokens``)."""
    requests: list[dict[str, Any]] = [
        {
            "custom_id": f"{prefix}-{i:03d}",
            "messages": [
                {"role": "system", "content": "Answer briefly."},
                *user(f"Question number {i}"),
            ],
            "max_tokens": 64,
            "temperature": 0.2,
        }
        for i in range(count)
    ]
    requests += [
        {
            "custom_id": f"bad-{i:03d}",
            "messages": user(f"[[emulator:error Line {i} violates the usage policy]]"),
            "max_tokens": 64,
        }
        for i in range(failing)
    ]
    return requests


def new_batch(provider: str, count: int = 3, **kwargs: Any) -> ModelCompletionBatch:
    return create_batch(provider=provider, requests=requests_for(count, **kwargs))


def drive(batch: ModelCompletionBatch, emu: Any, rounds: int = 40) -> ModelCompletionBatch:
    """Submit, then poll with --force (the provider's clock moving on) until harvested."""
    for _ in range(rounds):
        batch.refresh_from_db()
        if batch.results_fetched_at is not None:
            return batch
        if batch.can_submit:
            submit([batch.pk])
        else:
            report = poll([batch.pk], force=True)
            assert report.fatal is None, report.fatal
        emu.state.advance(61)
    raise AssertionError(f"batch {batch.pk} still {batch.status} after {rounds} rounds")


def provider_batches(emu: Any) -> int:
    return len(emu.state.batches)


def assert_totals_are_sums(batch: ModelCompletionBatch) -> None:
    sums = batch.completions.aggregate(
        prompt=Sum("prompt_token_cost"), output=Sum("output_token_cost"), total=Sum("total_cost")
    )
    assert (batch.prompt_token_cost, batch.output_token_cost, batch.total_cost) == (
        sums["prompt"],
        sums["output"],
        sums["total"],
    )
    lines = batch.completions
    assert batch.request_counts["total"] == lines.count()
    assert batch.request_counts["succeeded"] == lines.filter(status="completed").count()
    assert batch.request_counts["pending"] == 0


def test_every_line_ends_with_the_providers_answer_or_message(any_emulator: Any) -> None:
    batch = drive(new_batch(any_emulator.provider, 4, failing=1), any_emulator)
    assert batch.status == "ended"
    done = list(batch.completions.filter(status="completed").order_by("batch_custom_id"))
    assert [c.batch_custom_id for c in done] == [f"req-{i:03d}" for i in range(4)]
    for line in done:
        assert line.raw_response.startswith("Emulated answer to: Question number")
        assert line.prompt_tokens and line.prompt_tokens > 0
        assert line.completion_tokens and line.completion_tokens > 0
        assert line.total_cost is not None and line.total_cost > 0
        assert line.prompt_token_cost is not None and line.output_token_cost is not None
        assert line.prompt_token_cost + line.output_token_cost == line.total_cost
    bad = batch.completions.get(batch_custom_id="bad-000")
    assert bad.status == "failed"
    assert "Line 0 violates the usage policy" in bad.failure_reason
    assert bad.total_cost in (None, Decimal(0))
    assert_totals_are_sums(batch)
    assert batch.request_counts["failed"] == 1
    assert provider_batches(any_emulator) == 1


def test_the_default_model_is_the_providers_and_priced(any_emulator: Any) -> None:
    batch = new_batch(any_emulator.provider, 1)
    strategy = get_strategy(any_emulator.provider)
    assert batch.model == strategy.default_model
    batch = drive(batch, any_emulator)
    assert batch.total_cost is not None and batch.total_cost > 0


def test_a_second_run_changes_nothing(any_emulator: Any) -> None:
    batch = drive(new_batch(any_emulator.provider, 3, failing=1), any_emulator)
    before = list(
        ModelCompletion.objects.order_by("pk").values_list("status", "total_cost", "completed_at")
    )
    reads = any_emulator.state.count_calls("list_results")
    poll([batch.pk], force=True)
    harvest([batch.pk])
    after = list(
        ModelCompletion.objects.order_by("pk").values_list("status", "total_cost", "completed_at")
    )
    assert after == before
    assert any_emulator.state.count_calls("list_results") == reads


def test_a_create_whose_answer_is_lost_is_adopted_not_made_twice(any_emulator: Any) -> None:
    batch = new_batch(any_emulator.provider, 3)
    any_emulator.add_fault(Fault("create_batch", "accept_then_drop"))
    submit([batch.pk])
    batch.refresh_from_db()
    assert batch.status == "submitting" and not batch.provider_batch_id
    assert provider_batches(any_emulator) == 1
    batch = drive(batch, any_emulator)
    assert provider_batches(any_emulator) == 1
    assert any_emulator.state.count_calls("create_batch") == 1
    assert batch.provider_batch_id == next(iter(any_emulator.state.batches))
    assert batch.completions.filter(status="completed").count() == 3


def test_a_create_that_never_arrived_is_made_once(any_emulator: Any) -> None:
    batch = new_batch(any_emulator.provider, 2)
    any_emulator.add_fault(Fault("create_batch", "drop"))
    submit([batch.pk])
    assert provider_batches(any_emulator) == 0
    batch = drive(batch, any_emulator)
    assert provider_batches(any_emulator) == 1
    assert batch.completions.filter(status="completed").count() == 2


@pytest.mark.parametrize("status", [500, 503, 429])
def test_transient_status_faults_are_retried(any_emulator: Any, status: int) -> None:
    batch = new_batch(any_emulator.provider, 2)
    submit([batch.pk])
    any_emulator.add_fault(Fault("get_batch", "status", status=status, times=2))
    any_emulator.add_fault(Fault("list_results", "status", status=status, times=2))
    batch = drive(batch, any_emulator)
    assert batch.completions.filter(status="completed").count() == 2
    assert provider_batches(any_emulator) == 1


@pytest.mark.parametrize("kind", ["truncate", "drop"])
def test_a_results_read_cut_short_is_read_again_in_full(any_emulator: Any, kind: str) -> None:
    batch = new_batch(any_emulator.provider, 5)
    any_emulator.add_fault(Fault("list_results", kind))
    batch = drive(batch, any_emulator)
    assert batch.completions.filter(status="completed").count() == 5
    assert_totals_are_sums(batch)


@pytest.mark.parametrize(
    "body", [b"{}", b'{"custom_id": ""}', b"<html><body>502 Bad Gateway</body></html>"]
)
def test_a_results_body_bent_on_the_way_is_read_again_not_failed(
    any_emulator: Any, body: bytes
) -> None:
    """A 200 whose body is not the results (a proxy's page, an object without an id) skips
    what it cannot read; the lines it may have held are read again, not failed."""
    batch = new_batch(any_emulator.provider, 3)
    any_emulator.add_fault(Fault("list_results", "raw", status=200, raw_body=body))
    batch = drive(batch, any_emulator)
    assert batch.completions.filter(status="completed").count() == 3
    assert_totals_are_sums(batch)


def test_a_cancel_keeps_the_results_already_produced(any_realistic_emulator: Any) -> None:
    emu = any_realistic_emulator
    emu.config.requests_per_read = 1
    emu.config.share_per_read = 0.0
    emu.config.seconds_per_request = 0.0
    batch = new_batch(emu.provider, 6)
    submit([batch.pk])
    for _ in range(6):  # through any validation phase, until some lines have finished
        poll([batch.pk], force=True)
        batch.refresh_from_db()
        if any(line.state == "succeeded" for b in emu.state.batches.values() for line in b.lines):
            break
    batch_status.cancel(get_strategy(emu.provider), batch)
    batch = drive(batch, emu)
    assert batch.status in ("canceled", "ended")
    served = {
        line.custom_id
        for b in emu.state.batches.values()
        for line in b.lines
        if line.state == "succeeded" and getattr(line, "in_files", True)
    }
    done = set(
        batch.completions.filter(status="completed").values_list("batch_custom_id", flat=True)
    )
    assert done == served
    assert batch.completions.filter(status="pending").count() == 0
    assert (
        batch.request_counts["succeeded"]
        + batch.request_counts["failed"]
        + batch.request_counts["cancelled"]
        == 6
    )
    assert_totals_are_sums(batch)


def test_a_batch_past_its_age_is_cancelled_and_keeps_its_results(
    any_realistic_emulator: Any, settings: Any
) -> None:
    emu = any_realistic_emulator
    emu.config.requests_per_read = 1
    emu.config.share_per_read = 0.0
    emu.config.seconds_per_request = 0.0
    settings.RAIF_BATCHES = {**settings.RAIF_BATCHES, "MAX_BATCH_AGE": 3600}
    batch = new_batch(emu.provider, 6)
    submit([batch.pk])
    for _ in range(4):
        poll([batch.pk], force=True)
    ModelCompletionBatch.objects.filter(pk=batch.pk).update(
        submitted_at=ModelCompletionBatch.objects.get(pk=batch.pk).submitted_at.replace(year=2000)
    )
    report = poll([batch.pk], force=True)
    assert report.cancelled_for_age == [batch.pk]
    batch = drive(batch, emu)
    assert batch.status in ("expired", "ended")
    served = {
        line.custom_id
        for b in emu.state.batches.values()
        for line in b.lines
        if line.state == "succeeded" and getattr(line, "in_files", True)
    }
    done = set(
        batch.completions.filter(status="completed").values_list("batch_custom_id", flat=True)
    )
    assert done == served
    assert batch.completions.filter(status="pending").count() == 0
    assert provider_batches(emu) == 1


def test_a_rejected_key_stops_the_run_with_one_line(any_emulator: Any, settings: Any) -> None:
    prefix = any_emulator.provider.upper()
    settings.RAIF_BATCHES = {**settings.RAIF_BATCHES, f"{prefix}_API_KEY": "not-the-key"}
    batch = new_batch(any_emulator.provider, 1)
    report = submit([batch.pk])
    assert report.fatal is not None
    assert "not-the-key" not in report.fatal.one_line
    batch.refresh_from_db()
    assert batch.status == "pending" and provider_batches(any_emulator) == 0


def test_many_batches_in_one_poll(any_emulator: Any) -> None:
    batches = [
        create_batch(provider=any_emulator.provider, requests=requests_for(2, prefix=f"b{n}"))
        for n in range(5)
    ]
    submit()
    for _ in range(6):
        poll(force=True)
        any_emulator.state.advance(61)
    for batch in batches:
        batch.refresh_from_db()
        assert batch.results_fetched_at is not None, batch.status
        assert batch.completions.filter(status="completed").count() == 2
    assert provider_batches(any_emulator) == 5


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_pollers_in_processes_store_each_result_once(any_emulator: Any, audit: Any) -> None:
    any_emulator.config.latency = 0.01  # the processes overlap on the wire too
    batches = [
        create_batch(
            provider=any_emulator.provider,
            requests=requests_for(2 + n % 2, failing=n % 3 == 0, prefix=f"b{n}"),
        )
        for n in range(12)
    ]
    env = environment(any_emulator)
    ids = [arg for batch in batches for arg in ("--batch", str(batch.pk))]
    first, second = run_together(env, ("submit_batches", *ids), ("submit_batches", *ids))
    assert (first.returncode, second.returncode) == (0, 0), (first.stderr, second.stderr)
    assert any_emulator.state.count_calls("create_batch") == 12
    command = ("poll_batches", "--force", "--limit", "5")
    for _ in range(8):
        if not ModelCompletionBatch.objects.filter(results_fetched_at__isnull=True).exists():
            break
        finished = run_together(env, command, command, command)
        assert [f.returncode for f in finished] == [0, 0, 0], [f.stderr for f in finished]
        any_emulator.state.advance(61)
    completions = ModelCompletion.objects.filter(batch__in=batches)
    assert not completions.filter(status="pending").exists()
    assert audit("result") == Counter({pk: 1 for pk in completions.values_list("pk", flat=True)})
    assert audit("harvest") == Counter({batch.pk: 1 for batch in batches})
    assert provider_batches(any_emulator) == 12
    for batch in batches:
        batch.refresh_from_db()
        assert batch.claimed_by == ""
        assert_totals_are_sums(batch)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_cancel_and_poll_at_once_in_processes_keep_every_result_once(
    any_realistic_emulator: Any, audit: Any
) -> None:
    emu = any_realistic_emulator
    emu.config.requests_per_read = 1
    emu.config.share_per_read = 0.0
    emu.config.seconds_per_request = 0.0
    emu.config.latency = 0.02
    batches = [
        create_batch(provider=emu.provider, requests=requests_for(5, prefix=f"c{n}"))
        for n in range(6)
    ]
    submit()
    for _ in range(4):  # through any validation phase: some lines finished, most pending
        poll(force=True)
    env = environment(emu)
    ids = [str(batch.pk) for batch in batches]
    cancelled, polled = run_together(env, ("cancel_batch", *ids), ("poll_batches", "--force"))
    assert polled.returncode == 0, polled.stderr
    # A batch that ended first is refused by name, in the one line; nothing else fails.
    refused = re.findall(r"batch (\d+): Batch \1 is already ended", cancelled.stderr)
    assert cancelled.returncode == (1 if refused else 0), cancelled.stderr
    for _ in range(10):
        if not ModelCompletionBatch.objects.filter(results_fetched_at__isnull=True).exists():
            break
        emu.state.advance(61)
        run_together(env, ("poll_batches", "--force"))
    completions = ModelCompletion.objects.filter(batch__in=batches)
    assert audit("harvest") == Counter({batch.pk: 1 for batch in batches})
    assert audit("result") == Counter({pk: 1 for pk in completions.values_list("pk", flat=True)})
    assert provider_batches(emu) == 6
    served = {
        line.custom_id
        for b in emu.state.batches.values()
        for line in b.lines
        if line.state == "succeeded" and getattr(line, "in_files", True)
    }
    assert (
        set(completions.filter(status="completed").values_list("batch_custom_id", flat=True))
        == served
    )
    for batch in batches:
        batch.refresh_from_db()
        assert batch.status in ("canceled", "ended") and batch.claimed_by == ""
        assert not batch.completions.filter(status="pending").exists()
        assert_totals_are_sums(batch)


def test_a_provider_without_a_key_stops_only_its_own_batches(
    any_emulator: Any, settings: Any
) -> None:
    other = next(p for p in ("xai", "openai", "anthropic") if p != any_emulator.provider)
    mine = new_batch(any_emulator.provider, 2)
    theirs = new_batch(other, 2)
    settings.RAIF_BATCHES = {
        key: value
        for key, value in settings.RAIF_BATCHES.items()
        if not key.startswith(other.upper() + "_")
    }
    report = submit()
    assert report.submitted == [mine.pk]
    assert any(f"{other.upper()}_API_KEY" in error for error in report.errors), report.errors
    theirs.refresh_from_db()
    assert theirs.status == "pending" and not theirs.provider_batch_id
    assert drive(mine, any_emulator).completions.filter(status="completed").count() == 2
