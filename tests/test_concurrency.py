"""Many real ``manage.py`` processes on one PostgreSQL database: the database coordinates.

The emulator runs in the test process; the commands run as separate processes against the test
database, as cron hosts would. A trigger records every change of a completion's result and every
stamp of a batch's ``results_fetched_at``, so "applied once" is observed, not inferred.
"""

from __future__ import annotations

import re
import signal
import time
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest

from raif_batches.clock import db_now
from raif_batches.emulator import Fault
from raif_batches.models import ModelCompletion, ModelCompletionBatch
from raif_batches.polling import poll, submit

from .helpers import make_batch, ticks_of
from .processes import environment, run_together, start

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def applied_in(output: str) -> int:
    match = re.search(r"applied (\d+) result", output)
    assert match, output
    return int(match.group(1))


def assert_exact(emulator: Any, batch: ModelCompletionBatch) -> None:
    """One provider batch, results read once, every completion settled, costs to the tick."""
    batch.refresh_from_db()
    assert [b.name for b in emulator.state.batches.values()].count(batch.provider_batch_name) == 1
    reads = [
        c for c in emulator.state.calls if c.path.endswith(f"{batch.provider_batch_id}/results")
    ]
    assert len(reads) == 1
    assert batch.results_fetched_at is not None and batch.claimed_by == ""
    assert not batch.completions.filter(status="pending").exists()
    counts = batch.request_counts
    assert batch.completions.filter(status="completed").count() == counts["succeeded"]
    assert counts["total"] == batch.completions.count()
    done = batch.completions.filter(status="completed")
    assert batch.total_cost == sum((ticks_of(c.response_payload) for c in done), Decimal(0))
    ticks = batch.provider_response["cost_breakdown"]["total_cost_usd_ticks"]
    assert batch.total_cost == Decimal(ticks) * Decimal("1e-10")


def test_four_pollers_over_fifty_batches(emulator: Any, audit: Any) -> None:
    emulator.config.latency = 0.01  # the processes overlap on the wire, not only in the database
    batches = [make_batch(2 + number % 3, failing=number % 4 == 0) for number in range(50)]
    assert len(submit().submitted) == 50
    env = environment(emulator)
    command = ("poll_batches", "--force", "--limit", "10")
    applied, rounds = 0, 0
    while ModelCompletionBatch.objects.filter(results_fetched_at__isnull=True).exists():
        rounds += 1
        assert rounds <= 6, "the pollers did not finish the batches"
        finished = run_together(env, command, command, command, command)
        assert [f.returncode for f in finished] == [0, 0, 0, 0], [f.stderr for f in finished]
        applied += sum(applied_in(f.stdout) for f in finished)
    completions = ModelCompletion.objects.filter(batch__in=batches)
    assert applied == completions.count() == sum(2 + n % 3 + (n % 4 == 0) for n in range(50))
    # Every completion got its result exactly once, and every batch was harvested once.
    assert audit("result") == Counter({pk: 1 for pk in completions.values_list("pk", flat=True)})
    assert audit("harvest") == Counter({batch.pk: 1 for batch in batches})
    assert emulator.state.count_calls("list_results") == 50
    for batch in batches:
        assert_exact(emulator, batch)
        assert batch.status == "ended"
        assert batch.completions.filter(status="failed").count() == batch.request_counts["failed"]


def test_two_submitters_at_once_create_one_provider_batch_each(emulator: Any) -> None:
    emulator.config.latency = 0.02
    batches = [make_batch(2) for _ in range(12)]
    env = environment(emulator)
    ids = [arg for batch in batches for arg in ("--batch", str(batch.pk))]
    first, second = run_together(env, ("submit_batches", *ids), ("submit_batches", *ids))
    assert (first.returncode, second.returncode) == (0, 0), (first.stderr, second.stderr)
    submitted = [int(n) for f in (first, second) for n in re.findall(r"Submitted (\d+)", f.stdout)]
    assert sum(submitted) == 12
    assert emulator.state.count_calls("create_batch") == 12
    assert emulator.state.count_calls("upload_file") == 12
    names = Counter(b.name for b in emulator.state.batches.values())
    for batch in batches:
        batch.refresh_from_db()
        assert batch.status == "submitted" and names[batch.provider_batch_name] == 1
        assert emulator.state.batches[batch.provider_batch_id].name == batch.provider_batch_name


def test_cancel_and_poll_of_the_same_batches_at_once_leave_consistent_rows(
    emulator: Any, audit: Any
) -> None:
    emulator.config.requests_per_read = 1
    emulator.config.latency = 0.02
    batches = [make_batch(5) for _ in range(6)]
    submit()
    poll(force=True)
    poll(force=True)  # one line of each finished, four still pending
    env = environment(emulator)
    ids = [str(batch.pk) for batch in batches]
    run_together(env, ("cancel_batch", *ids), ("poll_batches", "--force"))
    for _ in range(4):
        if not ModelCompletionBatch.objects.filter(results_fetched_at__isnull=True).exists():
            break
        run_together(env, ("poll_batches", "--force"))
    assert audit("harvest") == Counter({batch.pk: 1 for batch in batches})
    completions = ModelCompletion.objects.filter(batch__in=batches)
    assert audit("result") == Counter({pk: 1 for pk in completions.values_list("pk", flat=True)})
    for batch in batches:
        assert_exact(emulator, batch)
        provider = emulator.state.get_batch(batch.provider_batch_id)["state"]
        assert batch.request_counts == {
            "total": provider["num_requests"],
            "pending": provider["num_pending"],
            "succeeded": provider["num_success"],
            "failed": provider["num_error"],
            "cancelled": provider["num_cancelled"],
        }
        assert batch.status in ("canceled", "ended") and batch.ended_at is not None
        if batch.status == "canceled":
            assert batch.cancel_requested_at is not None
            assert batch.completions.filter(status="failed").count() == provider["num_cancelled"]


def test_a_poller_killed_mid_harvest_loses_its_claim_after_the_lease(
    emulator: Any, audit: Any
) -> None:
    batch = make_batch(3)
    submit()
    poll(force=True)  # validation: the next read finds it ended
    # The start-up check wants the lease to outlast one call (1 + 4 + 1 s margin); the lease
    # must also outlast the start of the next process.
    env = environment(emulator, LEASE_SECONDS=6, REQUEST_TIMEOUT=(1.0, 4.0))
    emulator.state.add_fault(Fault("list_results", "latency", delay=5))
    reads = emulator.state.count_calls("get_batch")
    doomed = start(env, "poll_batches", "--force")
    deadline = time.monotonic() + 10
    while emulator.state.count_calls("get_batch") == reads:  # read: ended; harvest comes next
        assert time.monotonic() < deadline
        time.sleep(0.02)
    time.sleep(0.3)  # now waiting for the (slow) results page
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    batch.refresh_from_db()
    assert batch.claimed_by and batch.results_fetched_at is None
    (early,) = run_together(env, ("poll_batches", "--force"))
    assert "finished 0" in early.stdout  # the dead poller's lease still holds
    assert batch.claimed_until is not None
    time.sleep(max(0.0, (batch.claimed_until - db_now()).total_seconds()) + 0.1)
    (late,) = run_together(env, ("poll_batches", "--force"))
    assert late.returncode == 0 and applied_in(late.stdout) == 3
    assert audit("harvest") == Counter({batch.pk: 1})
    batch.refresh_from_db()
    assert batch.status == "ended" and batch.results_fetched_at is not None
    assert batch.completions.filter(status="completed").count() == 3
