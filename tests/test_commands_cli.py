"""The commands' arguments, output and failures: --limit, logging left alone, the next-due hint,
and a database that cannot be reached ending in one line (a real process, on any database)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from .helpers import make_batch
from .processes import ROOT

pytestmark = pytest.mark.django_db


def run(*args: Any, **options: Any) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO(), **options)
    return out.getvalue()


@pytest.mark.parametrize("command", ["submit_batches", "poll_batches", "harvest_batches"])
def test_negative_limit_is_a_clear_error(command: str, emulator: Any) -> None:
    make_batch(1)
    with pytest.raises(CommandError, match="negative; use 0 for no limit"):
        run(command, "--limit", "-1")
    assert emulator.state.calls == []


def test_limit_zero_means_no_limit(emulator: Any) -> None:
    for _ in range(3):
        make_batch(1)
    assert "Submitted 3 batch(es)" in run("submit_batches", "--limit", "0")
    assert emulator.state.count_calls("create_batch") == 3


def test_commands_leave_logging_configuration_to_the_project(emulator: Any) -> None:
    logger = logging.getLogger("raif_batches")
    level, handlers = logger.level, list(logger.handlers)
    make_batch(1)
    for verbosity in (0, 3):
        run("submit_batches", verbosity=verbosity)
        run("poll_batches", "--force", verbosity=verbosity)
    assert logger.level == level
    assert logger.handlers == handlers


def test_verbosity_two_reports_more_detail_through_the_output(emulator: Any) -> None:
    make_batch(1)
    assert "Claimed" not in run("submit_batches")
    make_batch(1)
    assert "Claimed 1 batch(es)" in run("submit_batches", verbosity=2)


def test_nothing_due_says_when_and_how_to_force(emulator: Any) -> None:
    batch = make_batch(1)
    run("submit_batches")
    batch.refresh_from_db()
    output = run("poll_batches")
    assert emulator.state.count_calls("get_batch") == 0
    assert f"next poll is due at {batch.next_poll_at.isoformat(timespec='seconds')}" in output
    assert "--force" in output


def test_nothing_in_flight_says_so(emulator: Any) -> None:
    assert "Nothing is in flight." in run("poll_batches")


def test_interval_without_loop_is_refused(emulator: Any) -> None:
    with pytest.raises(CommandError, match="--interval only applies with --loop"):
        run("poll_batches", "--interval", "5")
    with pytest.raises(CommandError, match="positive number of seconds"):
        run("poll_batches", "--loop", "--interval", "0")


@pytest.mark.parametrize("command", ["submit_batches", "poll_batches", "harvest_batches"])
def test_unreachable_database_ends_in_one_line(command: str, tmp_path: Any) -> None:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "example_project.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path}/missing-directory/db.sqlite3",
        "XAI_API_KEY": "test-key",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    finished = subprocess.run(
        [sys.executable, "manage.py", command],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert finished.returncode == 1
    assert "Traceback" not in finished.stderr
    assert finished.stderr.strip().splitlines() == [
        "CommandError: database error: unable to open database file"
    ]
