"""The management commands: what they say, and how they fail (one line, no traceback)."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from raif_batches.models import ModelCompletionBatch

from .helpers import make_batch

pytestmark = pytest.mark.django_db


def run(*args: Any) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_submit_poll_harvest_cycle(emulator: Any) -> None:
    first, second = make_batch(2), make_batch(3, failing=1)
    assert "Submitted 2 batch(es)" in run("submit_batches")
    assert emulator.state.count_calls("create_batch") == 2
    output = ""
    for _ in range(5):
        output = run("poll_batches", "--force")
        if ModelCompletionBatch.objects.filter(results_fetched_at__isnull=True).count() == 0:
            break
    assert "applied" in output
    for batch in (first, second):
        batch.refresh_from_db()
        assert batch.status == "ended" and batch.results_fetched_at is not None
    assert second.completions.filter(status="failed").count() == 1
    # Nothing left to do: a second run touches nothing and calls no results endpoint.
    reads = emulator.state.count_calls("list_results")
    assert "finished 0" in run("poll_batches", "--force")
    assert emulator.state.count_calls("list_results") == reads


def test_submit_only_named_batches_and_dry_run(emulator: Any) -> None:
    first, second = make_batch(1), make_batch(1)
    dry = run("submit_batches", "--dry-run")
    assert f"batch {first.pk}" in dry and f"batch {second.pk}" in dry
    assert "estimated cost $" in dry
    assert emulator.state.calls == []
    run("submit_batches", "--batch", str(second.pk))
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.status, second.status) == ("pending", "submitted")


def test_poll_respects_schedule_without_force(emulator: Any) -> None:
    batch = make_batch(1)
    run("submit_batches")
    reads = emulator.state.count_calls("get_batch")
    run("poll_batches")  # next poll is a minute away
    assert emulator.state.count_calls("get_batch") == reads
    ModelCompletionBatch.objects.filter(pk=batch.pk).update(next_poll_at=None)
    run("poll_batches")
    assert emulator.state.count_calls("get_batch") == reads + 1


def test_poll_limit(emulator: Any) -> None:
    for _ in range(3):
        make_batch(1)
    run("submit_batches")
    run("poll_batches", "--force", "--limit", "2")
    assert emulator.state.count_calls("get_batch") == 2


def test_wrong_key_fails_in_one_line_without_the_key(emulator: Any, settings: Any) -> None:
    batch = make_batch(1)
    secret = "xai-this-key-is-wrong-0123456789"
    settings.RAIF_BATCHES = {**settings.RAIF_BATCHES, "XAI_API_KEY": secret}
    with pytest.raises(CommandError) as caught:
        run("submit_batches")
    message = str(caught.value)
    assert message.startswith("xAI rejected the API key")
    assert "\n" not in message and secret not in message
    batch.refresh_from_db()
    assert batch.status == "pending"
    assert batch.failure_error == "API key rejected"
    assert secret not in batch.failure_reason
    assert emulator.state.count_calls("create_batch") == 0


def test_missing_key_is_a_configuration_error(settings: Any, monkeypatch: Any) -> None:
    monkeypatch.delenv("XAI_API_KEY", raising=False)
    make_batch(1)
    with pytest.raises(CommandError, match="configuration: No xAI API key"):
        run("submit_batches")


def test_provider_down_fails_after_retries(emulator: Any) -> None:
    from raif_batches.emulator import Fault

    batch = make_batch(1)
    run("submit_batches")
    emulator.state.add_fault(Fault(endpoint="get_batch", kind="status", status=503, times=None))
    with pytest.raises(CommandError, match="provider unavailable"):
        run("poll_batches", "--force")
    batch.refresh_from_db()
    assert batch.status == "submitted"
    assert batch.failure_error == "provider unavailable"


def test_cancel_batch_command(emulator: Any) -> None:
    emulator.config.requests_per_read = 1
    batch = make_batch(4)
    run("submit_batches")
    run("poll_batches", "--force")
    output = run("cancel_batch", str(batch.pk))
    assert f"Batch {batch.pk}: cancel requested" in output
    assert emulator.state.count_calls("cancel_batch") == 1
    with pytest.raises(CommandError, match="no batch with id 999999"):
        run("cancel_batch", "999999")


def test_harvest_batches_command(emulator: Any) -> None:
    batch = make_batch(2)
    run("submit_batches")
    run("poll_batches", "--force")  # validation read
    # Reach a terminal status without harvesting, as if the poller died before it.
    from raif_batches.lifecycle.status import fetch_status
    from raif_batches.providers import get_strategy

    batch.refresh_from_db()
    fetch_status(get_strategy("xai"), batch)
    batch.refresh_from_db()
    assert batch.status == "ended" and batch.results_fetched_at is None
    output = run("harvest_batches")
    assert "2 result(s) applied" in output
    batch.refresh_from_db()
    assert batch.results_fetched_at is not None


def test_system_check_reports_malformed_settings(settings: Any) -> None:
    from raif_batches.checks import check_settings

    settings.RAIF_BATCHES = {
        "XAI_API_KEY": "k",
        "POLL_INTERVAL": "often",
        "RETRY": {"MAX_ATTEMPTS": "x"},
        "PRICING": {"grok-4.3": {"input": "cheap"}},
        "NOPE": 1,
    }
    ids = {problem.id for problem in check_settings()}
    assert {
        "raif_batches.E002",
        "raif_batches.E004",
        "raif_batches.E007",
        "raif_batches.E008",
    } <= ids
    settings.RAIF_BATCHES = {"XAI_API_KEY": "k"}
    assert check_settings() == []
