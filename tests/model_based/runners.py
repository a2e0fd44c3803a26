"""Real ``manage.py`` processes for the PostgreSQL histories: crashed, skewed, slowed, cut off.

A :class:`Run` names a command and what happens to its process: its host clock may be off
(``skew`` seconds, through :mod:`.skewed_settings`), its lease may be short, it may be killed
with SIGKILL once the emulator has answered ``kill_after_calls`` more calls (a crash at a
random moment of its conversation with the provider), and its database connection can be
terminated by name (``application_name``, set with ``PGAPPNAME``).
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.db import connection

from ..processes import environment, start

SETTINGS_MODULE = "tests.model_based.skewed_settings"
#: No process of a history may run longer than this; past it, it is killed and reported hung.
HANG_SECONDS = 60.0


@dataclass
class Run:
    args: tuple[str, ...]
    skew: float = 0.0
    kill_after_calls: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    app_name: str = "raif_randomized"

    def label(self) -> str:
        extras = []
        if self.skew:
            extras.append(f"clock {self.skew:+g}s")
        if self.kill_after_calls is not None:
            extras.append(f"SIGKILL after {self.kill_after_calls} calls")
        if "LEASE_SECONDS" in self.settings:
            extras.append(f"lease {self.settings['LEASE_SECONDS']}s")
        return " ".join(self.args) + (f" [{', '.join(extras)}]" if extras else "")


@dataclass
class Outcome:
    run: Run
    returncode: int
    stdout: str
    stderr: str
    killed: bool = False
    hung: bool = False


def start_run(emulator: Any, run: Run, base_settings: dict[str, Any]) -> subprocess.Popen[str]:
    env = environment(emulator, **{**base_settings, **run.settings})
    env["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
    env["RAIF_TEST_CLOCK_SKEW"] = str(run.skew)
    env["PGAPPNAME"] = run.app_name
    return start(env, *run.args)


def run_all(
    emulator: Any,
    runs: list[Run],
    base_settings: dict[str, Any],
    during: Callable[[], None] | None = None,
    during_after_calls: int = 1,
) -> list[Outcome]:
    """Start every run at once; kill those due; call ``during`` once the emulator has answered
    ``during_after_calls`` calls (or at once when the processes end first); wait for all."""
    calls_at_start = len(emulator.state.calls)
    processes = [(run, start_run(emulator, run, base_settings)) for run in runs]
    killed: set[int] = set()
    hung: set[int] = set()
    pending_during = during
    deadline = time.monotonic() + HANG_SECONDS
    while True:
        alive = [i for i, (_, p) in enumerate(processes) if p.poll() is None]
        if not alive:
            break
        answered = len(emulator.state.calls) - calls_at_start
        for i in alive:
            run, process = processes[i]
            if run.kill_after_calls is not None and answered >= run.kill_after_calls:
                process.send_signal(signal.SIGKILL)
                killed.add(i)
        if pending_during is not None and answered >= during_after_calls:
            pending_during()
            pending_during = None
        if time.monotonic() > deadline:
            for i in alive:
                processes[i][1].send_signal(signal.SIGKILL)
                hung.add(i)
        time.sleep(0.01)
    if pending_during is not None:
        pending_during()
    outcomes = []
    for i, (run, process) in enumerate(processes):
        out, err = process.communicate(timeout=30)
        outcomes.append(
            Outcome(run, process.returncode, out, err, killed=i in killed, hung=i in hung)
        )
    return outcomes


def terminate_backends(app_name: str) -> int:
    """Kill the database connections of the processes started under ``app_name``."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = %s AND pid <> pg_backend_pid()",
            [app_name],
        )
        (count,) = cursor.fetchone()
    return int(count)
