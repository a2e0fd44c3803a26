"""Never a second paid batch, never a handler run twice at once, whatever the provider or our
own side does: unreadable create answers, late creates, long lists, slow workers, fast clocks,
rows deleted under a poller.

Each test drives the lifecycle over real HTTP against the emulator and counts what the provider
saw: how many batches carry the local batch's name, how many creates and list reads were sent,
which batches were cancelled. The PostgreSQL tests run real ``manage.py`` processes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.checks import run_checks
from django.utils import timezone

from raif_batches.clock import db_now
from raif_batches.emulator import Fault
from raif_batches.models import ModelCompletionBatch
from raif_batches.polling import claim_batches, poll, submit
from raif_batches.providers.xai import XAIStrategy
from raif_batches.validation import UnknownModelWarning

from . import crashing
from .helpers import make_batch, run_to_end
from .processes import environment, run_together, start

pytestmark = pytest.mark.django_db

HTML = b"<html><body><h1>502 Bad Gateway</h1><p>cloudflare</p></body></html>"


def named(emulator: Any, batch: ModelCompletionBatch) -> list[Any]:
    return [b for b in emulator.state.batches.values() if b.name == batch.provider_batch_name]


def assert_one_live_provider_batch(emulator: Any, batch: ModelCompletionBatch) -> None:
    batch.refresh_from_db()
    live = [b for b in named(emulator, batch) if b.cancel_time is None]
    assert [b.batch_id for b in live] == [batch.provider_batch_id]


def others(emulator: Any, count: int) -> None:
    """Batches of other users of the team, which the team-wide list also shows."""
    for number in range(count):
        emulator.state.create_batch(f"someone-else-{number}", None, emulator.key_id)


# --- 9.1: a create answer that cannot be read is ambiguous ------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        Fault(
            "create_batch", "accept_then_raw", status=200, raw_body=HTML, content_type="text/html"
        ),
        Fault("create_batch", "accept_then_raw", status=200, raw_body=b'{"batch_id": "batch_12'),
        Fault(
            "create_batch", "accept_then_raw", status=200, raw_body=b'{"name": "x", "state": {}}'
        ),
        Fault("create_batch", "accept_then_raw", status=200, raw_body=b""),
        Fault("create_batch", "accept_then_raw", status=200, raw_body=b"[]"),
        Fault(
            "create_batch", "accept_then_raw", status=403, raw_body=HTML, content_type="text/html"
        ),
        Fault("create_batch", "raw", status=200, raw_body=HTML, content_type="text/html"),
    ],
    ids=["html", "cut-body", "no-batch-id", "empty", "json-list", "403-html", "html-before-work"],
)
def test_unreadable_create_answer_never_makes_a_second_batch(emulator: Any, fault: Fault) -> None:
    batch = make_batch(3)
    emulator.state.add_fault(fault)
    report = submit([batch.pk])
    assert report.submitted == [] and "looked up by name" in report.notes[0]
    batch.refresh_from_db()
    assert (batch.status, batch.provider_batch_id) == ("submitting", "")
    assert batch.failure_error == "submission outcome unknown"
    assert batch.create_ended_at is not None
    for _ in range(3):  # cron keeps running both commands
        submit([batch.pk])
        poll([batch.pk], force=True)
    assert emulator.state.count_calls("create_batch") == (
        1 if fault.kind == "accept_then_raw" else 2
    )
    assert len(named(emulator, batch)) == 1
    run_to_end(batch)
    assert_one_live_provider_batch(emulator, batch)
    assert batch.completions.filter(status="completed").count() == 3


def test_clear_refusal_still_fails_at_once(emulator: Any) -> None:
    """A 4xx whose body names the problem created nothing: no lookup, no waiting."""
    with pytest.warns(UnknownModelWarning):  # a model the price table does not know
        batch = make_batch(2, model="grok-4.6")
    emulator.state.add_fault(
        Fault("create_batch", "status", status=400, body={"code": "x", "error": "Model refused"})
    )
    report = submit([batch.pk])
    assert len(report.errors) == 1
    batch.refresh_from_db()
    assert batch.status == "failed" and emulator.state.count_calls("list_batches") == 0


# --- 10.1: the reconcile wait counts from the end of the call ---------------------------------


def test_create_answered_after_the_read_timeout_is_never_created_twice(
    emulator: Any, settings: Any
) -> None:
    """The provider creates the batch 1.8 s after the call, which gave up after 1 s. The wait
    (1 s) counts from the call's end, so nothing looks before the late batch has landed."""
    settings.RAIF_BATCHES = {
        **settings.RAIF_BATCHES,
        "REQUEST_TIMEOUT": (2.0, 1.0),
        "RECONCILE_AFTER_SECONDS": 1.0,
    }
    batch = make_batch(2)
    emulator.state.add_fault(Fault("create_batch", "latency", delay=1.8))
    submit([batch.pk])  # times out: ambiguous
    report = poll([batch.pk], force=True)  # at once: too early to look
    assert "awaits reconciliation" in report.notes[0]
    assert emulator.state.count_calls("list_batches") == 0
    while len(emulator.state.batches) == 0:  # the late create lands
        time.sleep(0.05)
    batch.refresh_from_db()
    assert batch.create_ended_at is not None
    while db_now() < batch.create_ended_at + timedelta(seconds=1.05):
        time.sleep(0.05)  # RECONCILE_AFTER_SECONDS after the call ended
    assert poll([batch.pk], force=True).submitted == [batch.pk]
    assert emulator.state.count_calls("create_batch") == 1
    assert len(named(emulator, batch)) == 1
    assert_one_live_provider_batch(emulator, run_to_end(batch))


# --- 9.8: reconciliation reads the list once per run, bounded ----------------------------------


def lose_creates(emulator: Any, count: int) -> list[ModelCompletionBatch]:
    batches = [make_batch(2) for _ in range(count)]
    emulator.state.add_fault(Fault("create_batch", "accept_then_drop", times=count))
    submit([batch.pk for batch in batches])
    return batches


@pytest.mark.parametrize(
    ("before", "after", "reads"),
    [(120, 0, 3), (0, 120, 1)],
    ids=["lost-batches-on-the-last-page", "lost-batches-on-the-first-page"],
)
def test_one_bounded_list_read_serves_every_reconciling_batch(
    emulator: Any, before: int, after: int, reads: int
) -> None:
    emulator.config.max_page_size = 50
    others(emulator, before)
    batches = lose_creates(emulator, 3)
    others(emulator, after)
    report = poll(force=True)
    assert sorted(report.submitted) == [batch.pk for batch in batches]
    # One read of the list for the three batches, stopped as soon as all three were found.
    assert emulator.state.count_calls("list_batches") == reads
    assert emulator.state.count_calls("create_batch") == 3
    for batch in batches:
        assert_one_live_provider_batch(emulator, batch)


@pytest.mark.parametrize(
    "bound", [{"RECONCILE_MAX_PAGES": 2}, {"RECONCILE_MAX_SECONDS": 0}], ids=["pages", "seconds"]
)
def test_a_list_read_past_its_bound_is_a_provider_fault_not_a_new_create(
    emulator: Any, settings: Any, bound: dict[str, Any]
) -> None:
    emulator.config.max_page_size = 50
    others(emulator, 120)
    (batch,) = lose_creates(emulator, 1)
    settings.RAIF_BATCHES = {**settings.RAIF_BATCHES, **bound}
    report = poll([batch.pk], force=True)
    assert report.submitted == [] and len(report.errors) == 1
    assert "not read to its end" in report.errors[0]
    assert emulator.state.count_calls("list_batches") == bound.get("RECONCILE_MAX_PAGES", 1)
    batch.refresh_from_db()
    assert (batch.status, batch.failure_error) == ("submitting", "provider unavailable")
    assert emulator.state.count_calls("create_batch") == 1  # not created again on that evidence
    settings.RAIF_BATCHES = {
        key: value for key, value in settings.RAIF_BATCHES.items() if key not in bound
    }
    assert poll([batch.pk], force=True).submitted == [batch.pk]
    assert emulator.state.count_calls("create_batch") == 1
    assert_one_live_provider_batch(emulator, batch)


def test_two_provider_batches_of_one_name_keep_one_and_cancel_the_other(emulator: Any) -> None:
    (batch,) = lose_creates(emulator, 1)
    batch.refresh_from_db()
    second = emulator.state.create_batch(
        batch.provider_batch_name, batch.input_file_id, emulator.key_id
    )
    assert poll([batch.pk], force=True).submitted == [batch.pk]
    batch.refresh_from_db()
    assert batch.provider_batch_id != second["batch_id"]
    assert emulator.state.batches[second["batch_id"]].cancel_time is not None
    assert [(d["provider_batch_id"], d["cancelled"]) for d in batch.duplicate_provider_batches] == [
        (second["batch_id"], True)
    ]
    assert_one_live_provider_batch(emulator, run_to_end(batch))


# --- 10.2 / 10.3: leases on the database clock, refused when too short -------------------------


def lease_problems(settings: Any, **values: Any) -> list[str]:
    settings.RAIF_BATCHES = {**settings.RAIF_BATCHES, "XAI_API_KEY": "x", **values}
    return [c.id for c in run_checks() if c.id and c.id.startswith("raif_batches.")]


def test_a_lease_that_does_not_outlast_a_call_is_refused(settings: Any) -> None:
    assert lease_problems(settings, LEASE_SECONDS=300, REQUEST_TIMEOUT=(10, 60)) == []
    assert lease_problems(settings, LEASE_SECONDS=60, REQUEST_TIMEOUT=(10, 60)) == [
        "raif_batches.E011"
    ]
    assert lease_problems(settings, LEASE_SECONDS=20, REQUEST_TIMEOUT=10) == ["raif_batches.E011"]


def test_a_fast_host_does_not_take_a_live_lease(emulator: Any, monkeypatch: Any) -> None:
    """The lease was taken on the database's clock; a host 400 s ahead must not see it lapsed."""
    batch = make_batch(2)
    assert [b.pk for b in claim_batches(ModelCompletionBatch.objects.all(), worker="a:1")] == [
        batch.pk
    ]
    real_now = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real_now() + timedelta(seconds=400))
    report = submit([batch.pk], worker="fast-host:2")
    assert report.claimed == 0
    assert emulator.state.count_calls("create_batch") == 0


# --- 10.5: a row deleted under a poller ----------------------------------------------------------

#: The batch the next upload deletes (as an operator would, while the run holds it).
DELETE_ON_UPLOAD: list[int] = []


class DeletingStrategy(XAIStrategy):
    def upload_input(self, batch: ModelCompletionBatch, lines: Iterable[bytes]) -> str:
        while DELETE_ON_UPLOAD:
            ModelCompletionBatch.objects.filter(pk=DELETE_ON_UPLOAD.pop()).delete()
        return super().upload_input(batch, lines)


def test_a_batch_deleted_while_claimed_is_skipped_and_the_others_submitted(
    emulator: Any, settings: Any
) -> None:
    first, doomed, last = make_batch(2), make_batch(2), make_batch(2)
    settings.RAIF_BATCHES = {
        **settings.RAIF_BATCHES,
        "PROVIDERS": {"xai": f"{__name__}.DeletingStrategy"},
    }
    DELETE_ON_UPLOAD[:] = [doomed.pk]
    report = submit()
    assert report.claimed == 3 and report.ok, report.errors
    assert report.submitted == [first.pk, last.pk]
    assert report.notes == [f"batch {doomed.pk}: deleted while this run held it; skipped"]
    assert emulator.state.count_calls("create_batch") == 2


#: Handler calls, and the batch the next handler call deletes.
CALLS: list[int] = []
DELETE_IN_HANDLER: list[int] = []


def delete_another_batch(batch: ModelCompletionBatch) -> None:
    CALLS.append(batch.pk)
    while DELETE_IN_HANDLER:
        ModelCompletionBatch.objects.filter(pk=DELETE_IN_HANDLER.pop()).delete()


def test_a_batch_deleted_before_its_handler_is_skipped_and_the_others_run(emulator: Any) -> None:
    batches = [make_batch(2) for _ in range(3)]
    for batch in batches:
        run_to_end(batch)
    ModelCompletionBatch.objects.update(handler=f"{__name__}.delete_another_batch")
    CALLS.clear()
    DELETE_IN_HANDLER[:] = [batches[1].pk]
    report = poll(force=True)
    assert report.ok and report.handlers_called == 2
    assert sorted(CALLS) == [batches[0].pk, batches[2].pk]
    assert not ModelCompletionBatch.objects.filter(pk=batches[1].pk).exists()


# --- PostgreSQL: real processes, slow workers, fast clocks, slow handlers -----------------------

SLOW = "tests.slow_worker.SlowCreateStrategy"
#: A short lease that the start-up check accepts with this request timeout (1 + 2 + 1 s).
SHORT = {"LEASE_SECONDS": 4.0, "REQUEST_TIMEOUT": (1.0, 2.0)}


def wait_for(condition: Any, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def wait_until_lease_lapsed(batch: ModelCompletionBatch) -> None:
    batch.refresh_from_db()
    assert batch.claimed_until is not None
    until = batch.claimed_until
    wait_for(lambda: db_now() > until)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_create_whose_process_died_in_flight_is_awaited_for_a_whole_timeout(
    emulator: Any,
) -> None:
    """The process died with its create sent, as far as the row shows (no end recorded). The
    call may have gone on for connect + read seconds (6), so the wait (7 s) counts from then:
    the lease (7 s) lapses and another worker takes the batch, but neither looks nor creates."""
    batch = make_batch(2)
    env = environment(
        emulator,
        PROVIDERS={"xai": crashing.PATH},
        LEASE_SECONDS=7,
        REQUEST_TIMEOUT=(1.0, 5.0),
        RECONCILE_AFTER_SECONDS=7,
    )
    dying = {**env, "RAIF_TEST_CRASH_AT": "before_create", "RAIF_TEST_CRASH_HARD": "1"}
    (killed,) = run_together(dying, ("submit_batches",))
    assert killed.returncode == crashing.HARD_EXIT_CODE, killed.stderr
    wait_until_lease_lapsed(batch)
    (resumed,) = run_together(env, ("submit_batches",))
    assert resumed.returncode == 0, resumed.stderr
    assert "awaits reconciliation" in resumed.stdout
    assert emulator.state.count_calls("list_batches") == 0
    assert emulator.state.count_calls("create_batch") == 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_fast_host_never_takes_a_create_in_flight(emulator: Any) -> None:
    """A host 400 s ahead runs submit_batches while another is inside a slow create."""
    batch = make_batch(2)
    env = environment(emulator, REQUEST_TIMEOUT=(2.0, 20.0))
    emulator.state.add_fault(Fault("create_batch", "latency", delay=6))
    slow = start(env, "submit_batches")
    wait_for(lambda: ModelCompletionBatch.objects.get(pk=batch.pk).create_attempted_at is not None)
    fast = {**env, "DJANGO_SETTINGS_MODULE": "tests.skewed_settings"}
    (skewed,) = run_together(fast, ("submit_batches",))
    out, err = slow.communicate(timeout=60)
    assert slow.returncode == 0 and skewed.returncode == 0, (err, skewed.stderr)
    assert "Submitted 0" in skewed.stdout and "Submitted 1" in out
    assert emulator.state.count_calls("create_batch") == 1
    assert len(named(emulator, batch)) == 1
    assert_one_live_provider_batch(emulator, batch)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_create_slower_than_a_misconfigured_lease_is_not_created_twice(emulator: Any) -> None:
    """Checks skipped, a lease of 1 s and a create of 6 s: the second worker takes the lease, but
    the call it finds in flight is waited for (its end, or start + timeout), not repeated."""
    batch = make_batch(2)
    env = environment(emulator, LEASE_SECONDS=1.0, REQUEST_TIMEOUT=(2.0, 10.0))
    emulator.state.add_fault(Fault("create_batch", "latency", delay=6))
    first = start(env, "submit_batches", "--skip-checks")
    wait_for(lambda: ModelCompletionBatch.objects.get(pk=batch.pk).create_attempted_at is not None)
    wait_until_lease_lapsed(batch)
    (second,) = run_together(env, ("submit_batches", "--skip-checks"))
    _, err = first.communicate(timeout=60)
    assert first.returncode == 0 and second.returncode == 0, (err, second.stderr)
    assert "awaits reconciliation" in second.stdout
    assert emulator.state.count_calls("create_batch") == 1
    assert_one_live_provider_batch(emulator, batch)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_worker_paused_past_its_lease_has_its_late_duplicate_cancelled(emulator: Any) -> None:
    """A worker stalls between the lease check and sending its create (a GC pause, a stopped
    VM); another takes the lapsed lease, finds nothing and creates. When the stalled create
    lands, the second provider batch is cancelled at once and recorded on the batch."""
    batch = make_batch(2)
    env = environment(emulator, **SHORT, PROVIDERS={"xai": SLOW})
    stalled = start({**env, "RAIF_TEST_PAUSE_BEFORE_CREATE": "7"}, "submit_batches")
    wait_for(lambda: ModelCompletionBatch.objects.get(pk=batch.pk).create_attempted_at is not None)
    wait_until_lease_lapsed(batch)
    (other,) = run_together(env, ("submit_batches",))
    assert other.returncode == 0 and "Submitted 1" in other.stdout, other.stderr
    out, err = stalled.communicate(timeout=60)
    assert stalled.returncode == 0, err
    assert "Submitted 0" in out and "cancelled" in out
    batch.refresh_from_db()
    (late,) = [b for b in named(emulator, batch) if b.batch_id != batch.provider_batch_id]
    assert late.cancel_time is not None
    assert [(d["provider_batch_id"], d["cancelled"]) for d in batch.duplicate_provider_batches] == [
        (late.batch_id, True)
    ]
    assert_one_live_provider_batch(emulator, batch)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_slow_handler_runs_once_across_two_pollers(emulator: Any, tmp_path: Path) -> None:
    """The handler outlasts the batch's lease; a second poller takes the batch, not the call."""
    batch = run_to_end(make_batch(2))
    log = tmp_path / "calls.log"
    ModelCompletionBatch.objects.filter(pk=batch.pk).update(handler="tests.slow_worker.record_call")
    env = {
        **environment(emulator, **SHORT),
        "RAIF_TEST_HANDLER_LOG": str(log),
        "RAIF_TEST_HANDLER_SECONDS": "7",
    }
    first = start(env, "poll_batches", "--force")
    wait_for(lambda: log.exists() and log.read_text())
    wait_until_lease_lapsed(batch)
    (second,) = run_together(env, ("poll_batches", "--force"))
    _, err = first.communicate(timeout=60)
    assert first.returncode == 0 and second.returncode == 0, (err, second.stderr)
    assert log.read_text().splitlines() == [f"start {batch.pk}", f"end {batch.pk}"]
    batch.refresh_from_db()
    assert batch.handler_attempts == 1 and batch.handler_called_at is not None
    assert (batch.handler_claimed_by, batch.handler_claimed_until) == ("", None)
