"""Real ``manage.py`` processes on PostgreSQL: graceful stop on SIGTERM/SIGINT, the ``--loop``
worker, and a database connection killed under a running command.

The emulator runs in the test process and is slowed with a ``latency`` fault; the test waits
until the command is inside that slow call (the fault has fired) before it acts, so what the
command was doing when the signal arrived is known, not guessed from timing.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection

from raif_batches.emulator import Fault
from raif_batches.models import ModelCompletion, ModelCompletionBatch
from raif_batches.polling import poll, submit

from .helpers import make_batch
from .processes import environment, start

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def wait_for(condition: Callable[[], bool], what: str, process: subprocess.Popen[str]) -> None:
    for _ in range(600):
        if condition():
            return
        if process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"the command ended before {what}: {out}\n{err}")
        time.sleep(0.05)
    process.kill()
    out, err = process.communicate()
    raise AssertionError(f"gave up waiting for {what}: {out}\n{err}")


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=120)
    return process.returncode, out, err


def due_now() -> None:
    """Make every submitted batch due (the in-process submit scheduled its poll a minute on)."""
    ModelCompletionBatch.objects.update(next_poll_at=None)


def no_lease_held() -> bool:
    return not ModelCompletionBatch.objects.exclude(claimed_by="").exists() and (
        not ModelCompletionBatch.objects.filter(claimed_until__isnull=False).exists()
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_submit_batches_stops_after_the_batch_in_hand(emulator: Any, signum: int) -> None:
    batches = [make_batch(2) for _ in range(3)]
    slow = emulator.state.add_fault(
        Fault(endpoint="upload_file", kind="latency", delay=1.0, times=None)
    )
    process = start(environment(emulator), "submit_batches")
    wait_for(lambda: slow.fired >= 1, "the first upload", process)
    process.send_signal(signum)
    code, out, err = finish(process)

    assert code == 0, err
    assert f"Stopped on {signal.Signals(signum).name}" in out
    assert "Traceback" not in err
    # The batch in hand was submitted whole; the others were left pending and unclaimed.
    assert emulator.state.count_calls("create_batch") == 1
    first, *rest = (ModelCompletionBatch.objects.get(pk=b.pk) for b in batches)
    assert first.status == "submitted" and first.provider_batch_id
    assert [b.status for b in rest] == ["pending", "pending"]
    assert no_lease_held()
    # Nothing is lost: the next run submits the rest, once each.
    assert submit().ok
    assert emulator.state.count_calls("create_batch") == 3


def test_poll_batches_stops_after_the_harvest_in_hand(emulator: Any) -> None:
    from raif_batches.lifecycle.status import fetch_status
    from raif_batches.providers import get_strategy

    batches = [make_batch(3, failing=1) for _ in range(3)]
    assert submit().ok
    assert poll(force=True).ok  # the validation read
    for batch in batches:  # ended at the provider, results not fetched yet
        batch.refresh_from_db()
        fetch_status(get_strategy("xai"), batch)
    assert ModelCompletionBatch.objects.awaiting_harvest().count() == 3
    slow = emulator.state.add_fault(
        Fault(endpoint="list_results", kind="latency", delay=1.0, times=None)
    )
    process = start(environment(emulator), "poll_batches", "--force")
    wait_for(lambda: slow.fired >= 1, "the first results read", process)
    process.send_signal(signal.SIGTERM)
    code, out, err = finish(process)

    assert code == 0, err
    assert "Stopped on SIGTERM" in out
    assert no_lease_held()
    harvested = ModelCompletionBatch.objects.filter(results_fetched_at__isnull=False)
    assert harvested.count() == 1
    # The first pages of the other batches were read ahead (results of many batches are read
    # concurrently), but only the batch in hand was stored; the others are read again later.
    assert 1 <= emulator.state.count_calls("list_results") <= len(batches)
    # No result lost: a later run harvests the rest, and every line has its outcome.
    emulator.state.faults.clear()
    for _ in range(5):
        poll(force=True)
    for batch in batches:
        batch.refresh_from_db()
        assert batch.results_fetched_at is not None
        assert batch.completions.filter(status="completed").count() == 3
        assert batch.completions.filter(status="failed").count() == 1
    assert not ModelCompletion.objects.filter(status="pending").exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_poll_loop_works_until_stopped(emulator: Any, signum: int) -> None:
    batches = [make_batch(2) for _ in range(2)]
    assert submit().ok
    due_now()
    process = start(
        environment(emulator, POLL_INTERVAL=0.1), "poll_batches", "--loop", "--interval", "0.2"
    )
    done = ModelCompletionBatch.objects.filter(results_fetched_at__isnull=False)
    wait_for(lambda: done.count() == len(batches), "every batch harvested", process)
    # A batch created while the worker sleeps is taken up by a later cycle.
    late = make_batch(1)
    assert submit([late.pk]).ok
    due_now()
    wait_for(lambda: done.filter(pk=late.pk).exists(), "the late batch harvested", process)
    process.send_signal(signum)
    code, out, err = finish(process)

    assert code == 0, err
    assert "Polling every 0.2 s" in out
    assert f"Stopped on {signal.Signals(signum).name}" in out
    assert "Traceback" not in err
    assert no_lease_held()
    assert ModelCompletion.objects.filter(status="completed").count() == 5


def test_a_killed_database_connection_ends_in_one_line(emulator: Any) -> None:
    make_batch(2)
    assert submit().ok
    slow = emulator.state.add_fault(Fault(endpoint="get_batch", kind="latency", delay=1.5))
    process = start(environment(emulator), "poll_batches", "--force")
    wait_for(lambda: slow.fired >= 1, "the status read", process)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        assert cursor.fetchall(), "no backend of the command was found"
    code, _out, err = finish(process)

    assert code == 1
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("CommandError: database error: "), err


def test_the_loop_survives_a_killed_connection(emulator: Any) -> None:
    make_batch(1)
    assert submit().ok
    due_now()
    slow = emulator.state.add_fault(Fault(endpoint="get_batch", kind="latency", delay=1.5))
    process = start(
        environment(emulator, POLL_INTERVAL=0.1), "poll_batches", "--loop", "--interval", "0.2"
    )
    wait_for(lambda: slow.fired >= 1, "the status read", process)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    done = ModelCompletionBatch.objects.filter(results_fetched_at__isnull=False)
    wait_for(lambda: done.exists(), "the harvest on a new connection", process)
    process.send_signal(signal.SIGTERM)
    code, out, err = finish(process)

    assert code == 0, err
    assert "database error: " in err
    assert "Traceback" not in err
    assert "Stopped on SIGTERM" in out
