"""A crash or a lost answer at each step of submission: one provider batch, every result once.

Each test breaks submission for real (the emulator drops or refuses the call, or the process dies
inside a provider hook), resumes through ``poll``/``submit`` as cron would, and then checks what
the provider saw: exactly one provider batch carries the local batch's name, the create call was
never repeated blindly, and every result is stored once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from raif_batches.emulator import Fault
from raif_batches.models import ModelCompletionBatch, ModelCompletionBatchQuerySet
from raif_batches.polling import poll, submit

from . import crashing
from .helpers import make_batch, run_to_end, ticks_of
from .processes import environment, run_together

pytestmark = pytest.mark.django_db

LEASE = 0.3  # seconds: how long a dead worker's claim outlives it in these tests


def provider_batches(emulator: Any, batch: ModelCompletionBatch) -> list[Any]:
    return [b for b in emulator.state.batches.values() if b.name == batch.provider_batch_name]


def assert_one_provider_batch_and_every_result_once(
    emulator: Any, batch: ModelCompletionBatch, count: int
) -> None:
    batch.refresh_from_db()
    (provider_batch,) = provider_batches(emulator, batch)
    assert batch.provider_batch_id == provider_batch.batch_id
    assert batch.status == "ended" and batch.results_fetched_at is not None
    completions = list(batch.completions.all())
    assert len(completions) == count
    assert {c.status for c in completions} == {"completed"}
    assert all(c.completed_at is not None for c in completions)
    total = sum((ticks_of(c.response_payload) for c in completions), Decimal(0))
    assert batch.total_cost == total
    provider_ticks = batch.provider_response["cost_breakdown"]["total_cost_usd_ticks"]
    assert batch.total_cost == Decimal(provider_ticks) * Decimal("1e-10")
    reads = [
        c for c in emulator.state.calls if c.path.endswith(f"{batch.provider_batch_id}/results")
    ]
    assert len(reads) == 1  # fetched once


@pytest.fixture
def crashing_provider(emulator: Any, settings: Any, monkeypatch: Any) -> Iterator[Any]:
    """The xAI strategy, wired to die at the steps given to ``crashing.reset``."""
    settings.RAIF_BATCHES = {
        **settings.RAIF_BATCHES,
        "PROVIDERS": {"xai": crashing.PATH},
        "LEASE_SECONDS": LEASE,
    }
    monkeypatch.setattr(
        ModelCompletionBatchQuerySet,
        "release",
        crashing.release_unless_dead(ModelCompletionBatchQuerySet.release),
    )
    yield emulator
    crashing.reset()


def crash_then_resume(step: str, batch: ModelCompletionBatch) -> None:
    """Submit as a worker that dies at ``step``; resume as cron would once its lease lapsed."""
    crashing.reset(step)
    with pytest.raises(crashing.SimulatedCrash):
        submit([batch.pk], worker="dead-host:1")
    batch.refresh_from_db()
    assert batch.status == "submitting"
    assert batch.claimed_by == "dead-host:1"
    # The dead worker's lease still holds: nobody touches the batch yet.
    crashing.reset()
    assert poll([batch.pk], force=True).claimed == 0
    time.sleep(LEASE + 0.05)
    report = poll([batch.pk], force=True)
    assert report.ok, report.errors
    assert report.submitted == [batch.pk]


def test_crash_before_upload_resumes_with_one_upload(crashing_provider: Any) -> None:
    emulator = crashing_provider
    batch = make_batch(3)
    crash_then_resume("before_upload", batch)
    assert emulator.state.count_calls("upload_file") == 1
    assert emulator.state.count_calls("create_batch") == 1
    assert_one_provider_batch_and_every_result_once(emulator, run_to_end(batch), 3)


def test_crash_after_upload_uploads_again_and_creates_once(crashing_provider: Any) -> None:
    emulator = crashing_provider
    batch = make_batch(3)
    crash_then_resume("after_upload", batch)
    # The first file's id died with the process: an unused file, never a second batch.
    assert emulator.state.count_calls("upload_file") == 2
    assert emulator.state.count_calls("create_batch") == 1
    assert_one_provider_batch_and_every_result_once(emulator, run_to_end(batch), 3)


def test_crash_before_create_creates_once_reusing_the_file(crashing_provider: Any) -> None:
    emulator = crashing_provider
    batch = make_batch(3)
    crash_then_resume("before_create", batch)
    # The provider had no batch of that name: created now, from the file already uploaded.
    assert emulator.state.count_calls("list_batches") == 1
    assert emulator.state.count_calls("upload_file") == 1
    assert emulator.state.count_calls("create_batch") == 1
    assert_one_provider_batch_and_every_result_once(emulator, run_to_end(batch), 3)


def test_crash_after_create_adopts_the_provider_batch(crashing_provider: Any) -> None:
    emulator = crashing_provider
    batch = make_batch(3)
    crash_then_resume("after_create", batch)
    assert emulator.state.count_calls("create_batch") == 1  # adopted, never created again
    assert emulator.state.count_calls("list_batches") == 1
    assert_one_provider_batch_and_every_result_once(emulator, run_to_end(batch), 3)


def test_crash_during_reconciliation_adopts_on_the_next_run(crashing_provider: Any) -> None:
    emulator = crashing_provider
    batch = make_batch(2)
    crashing.reset("after_create")
    with pytest.raises(crashing.SimulatedCrash):
        submit([batch.pk], worker="dead-host:1")
    crashing.reset("after_find")  # the worker that reconciles dies too, after its lookup
    time.sleep(LEASE + 0.05)
    with pytest.raises(crashing.SimulatedCrash):
        poll([batch.pk], force=True, worker="dead-host:2")
    crashing.reset()
    time.sleep(LEASE + 0.05)
    assert poll([batch.pk], force=True).submitted == [batch.pk]
    assert emulator.state.count_calls("create_batch") == 1
    assert emulator.state.count_calls("list_batches") == 2
    assert_one_provider_batch_and_every_result_once(emulator, run_to_end(batch), 2)


@pytest.mark.parametrize(
    "fault",
    [
        Fault("upload_file", "drop"),
        Fault("upload_file", "accept_then_drop"),
        Fault("upload_file", "status", status=503),
    ],
    ids=["dropped", "accepted-then-dropped", "503"],
)
def test_upload_failures_are_retried_within_the_run(emulator: Any, fault: Fault) -> None:
    batch = make_batch(3)
    emulator.state.add_fault(fault)
    report = submit([batch.pk])
    assert report.submitted == [batch.pk]
    assert emulator.state.count_calls("upload_file") == 2
    assert emulator.state.count_calls("create_batch") == 1
    assert_one_provider_batch_and_every_result_once(emulator, run_to_end(batch), 3)


@pytest.mark.parametrize(
    ("fault", "adopted"),
    [
        (Fault("create_batch", "drop"), False),
        (Fault("create_batch", "accept_then_drop"), True),
        (Fault("create_batch", "status", status=500), False),
        (Fault("create_batch", "status", status=503), False),
        (Fault("create_batch", "status", status=429, retry_after=0.01), False),
    ],
    ids=["dropped-before-work", "accepted-then-dropped", "500", "503", "429"],
)
def test_lost_create_answer_is_reconciled_never_retried_blindly(
    emulator: Any, fault: Fault, adopted: bool
) -> None:
    batch = make_batch(3)
    emulator.state.add_fault(fault)
    report = submit([batch.pk])
    # The create went out once and its outcome is unknown: no second create in this run.
    assert report.submitted == [] and report.ok
    assert "looked up by name" in report.notes[0]
    assert emulator.state.count_calls("create_batch") == 1
    batch.refresh_from_db()
    assert batch.status == "submitting"  # visible: status and reason on the row
    assert batch.failure_error == "submission outcome unknown"
    assert batch.failure_reason
    assert batch.create_attempted_at is not None and batch.input_file_id

    report = poll([batch.pk], force=True)  # cron's next run
    assert report.submitted == [batch.pk]
    assert emulator.state.count_calls("list_batches") == 1
    assert emulator.state.count_calls("create_batch") == (1 if adopted else 2)
    assert emulator.state.count_calls("upload_file") == 1  # the uploaded file was reused
    batch.refresh_from_db()
    assert batch.status == "submitted"
    assert batch.failure_error == "" and batch.failure_reason == ""
    assert_one_provider_batch_and_every_result_once(emulator, run_to_end(batch), 3)


def test_create_answered_after_the_client_gave_up_waits_for_reconciliation(
    emulator: Any, settings: Any
) -> None:
    """The provider creates the batch after our read timeout: nothing may create it again
    until RECONCILE_AFTER_SECONDS have passed, and then the late batch is adopted."""
    settings.RAIF_BATCHES = {
        **settings.RAIF_BATCHES,
        "REQUEST_TIMEOUT": (2.0, 0.3),
        "RECONCILE_AFTER_SECONDS": 1.5,
    }
    batch = make_batch(2)
    emulator.state.add_fault(Fault("create_batch", "latency", delay=0.8))
    report = submit([batch.pk])
    assert report.submitted == [] and "looked up by name" in report.notes[0]
    report = poll([batch.pk], force=True)  # too early to look: the create may still land
    assert report.submitted == [] and "awaits reconciliation" in report.notes[0]
    assert emulator.state.count_calls("list_batches") == 0
    time.sleep(1.5)
    assert len(emulator.state.batches) == 1  # it did land, late
    assert poll([batch.pk], force=True).submitted == [batch.pk]
    assert emulator.state.count_calls("create_batch") == 1
    assert_one_provider_batch_and_every_result_once(emulator, run_to_end(batch), 2)


def test_reconciliation_reads_every_page_of_the_team_list(emulator: Any) -> None:
    """The lost batch sits on the last page of a team-wide, paginated list."""
    emulator.config.max_page_size = 50
    for number in range(120):
        emulator.state.create_batch(f"someone-else-{number}", None, emulator.key_id)
    batch = make_batch(2)
    emulator.state.add_fault(Fault("create_batch", "accept_then_drop"))
    submit([batch.pk])
    assert poll([batch.pk], force=True).submitted == [batch.pk]
    assert emulator.state.count_calls("list_batches") == 3
    assert emulator.state.count_calls("create_batch") == 1
    assert_one_provider_batch_and_every_result_once(emulator, run_to_end(batch), 2)


def test_expired_upload_is_uploaded_again_before_the_only_create(emulator: Any) -> None:
    batch = make_batch(2)
    emulator.state.add_fault(Fault("create_batch", "drop"))
    submit([batch.pk])
    batch.refresh_from_db()
    del emulator.state.files[batch.input_file_id]  # the provider let the file expire
    report = poll([batch.pk], force=True)
    # Nothing of that name at the provider, and the file is gone: back to pending, shown.
    assert report.submitted == [] and len(report.errors) == 1
    batch.refresh_from_db()
    assert (batch.status, batch.input_file_id) == ("pending", "")
    assert batch.failure_error == "not found at provider"
    assert len(emulator.state.batches) == 0
    assert submit([batch.pk]).submitted == [batch.pk]
    assert emulator.state.count_calls("upload_file") == 2
    assert_one_provider_batch_and_every_result_once(emulator, run_to_end(batch), 2)


@pytest.mark.row_locks
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("step", ["after_upload", "before_create", "after_create"])
def test_killed_process_resumed_by_another(emulator: Any, step: str) -> None:
    """A real ``submit_batches`` process ends with ``os._exit`` mid-submission; another process
    takes the batches over once the dead one's lease has lapsed."""
    batches = [make_batch(2) for _ in range(3)]
    # The shortest lease the start-up check accepts with this timeout (1 + 1 + 1 s margin).
    env = environment(
        emulator, PROVIDERS={"xai": crashing.PATH}, LEASE_SECONDS=3, REQUEST_TIMEOUT=(1.0, 1.0)
    )
    dying = {**env, "RAIF_TEST_CRASH_AT": step, "RAIF_TEST_CRASH_HARD": "1"}
    (killed,) = run_together(dying, ("submit_batches",))
    assert killed.returncode == crashing.HARD_EXIT_CODE, killed.stderr
    first = ModelCompletionBatch.objects.get(pk=batches[0].pk)
    assert first.status == "submitting" and first.claimed_by  # the dead process's claim
    time.sleep(3.1)
    results = run_together(env, ("poll_batches", "--force"), ("submit_batches",))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    # As cron would: both commands again until every batch is harvested. Under load a call
    # can outlast the 1 s timeout; a failed upload puts its batch back to pending, which only
    # submit_batches picks up.
    for _ in range(8):
        if not ModelCompletionBatch.objects.filter(results_fetched_at__isnull=True).exists():
            break
        run_together(env, ("poll_batches", "--force"), ("submit_batches",))
    assert emulator.state.count_calls("create_batch") == 3
    for batch in batches:
        assert_one_provider_batch_and_every_result_once(emulator, batch, 2)
