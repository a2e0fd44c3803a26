"""``manage.py poll_batches``: one poll run (for cron), or ``--loop`` as a long-running worker.

The worker polls, sleeps ``--interval`` seconds (waking at once on SIGTERM/SIGINT), and polls
again. A stop request finishes the batch in hand, releases the leases and exits 0. A lost
database connection or a provider fault in one cycle is reported in one line on stderr and the
next cycle starts afresh (with a new connection); a rejected key or a bad setting ends the
worker with a non-zero exit, since no later cycle can succeed.
"""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.db import DatabaseError, close_old_connections, connection
from django.db.models import Min
from django.utils import timezone

from ... import stopping
from ...conf import get_setting
from ...models import ModelCompletionBatch
from ...polling import RunReport, poll
from ._base import BatchCommand, one_line


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a positive number of seconds")
    return value


class Command(BatchCommand):
    help = (
        "Refresh every in-flight batch whose next poll is due, and fetch the results of every "
        "batch that has ended, exactly once. Safe to run from cron on many hosts at once, or as "
        "a long-running worker with --loop."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        self.add_batch_argument(parser)
        parser.add_argument(
            "--force", action="store_true", help="Treat every in-flight batch as due now."
        )
        self.add_limit_argument(parser, "Claim")
        parser.add_argument(
            "--loop",
            action="store_true",
            help="Keep polling until SIGTERM/SIGINT (for containers and systemd).",
        )
        parser.add_argument(
            "--interval",
            type=positive_seconds,
            metavar="S",
            help="With --loop: seconds between two runs (default: the POLL_INTERVAL setting).",
        )

    def handle(
        self,
        *args: Any,
        batch_ids: list[int] | None,
        force: bool,
        limit: int,
        loop: bool,
        interval: float | None,
        **options: Any,
    ) -> None:
        if interval is not None and not loop:
            raise CommandError("--interval only applies with --loop.")
        if loop:
            self.loop(batch_ids, force, limit, interval)
            return
        report = poll(batch_ids, force=force, limit=limit or None)
        self.finish(report, self.summary(report))
        if report.claimed == 0 and not force and self.verbosity >= 1:
            self.stdout.write(self.next_due())

    def summary(self, report: RunReport) -> str:
        parts = [
            f"Polled {report.refreshed} batch(es)",
            f"finished {len(report.finished)}",
            f"applied {report.results_applied} result(s)",
        ]
        if report.submitted:
            parts.append(f"resumed {len(report.submitted)} submission(s)")
        if report.cancelled_for_age:
            parts.append(f"cancelled {len(report.cancelled_for_age)} past their maximum age")
        if report.handlers_called:
            parts.append(f"ran {report.handlers_called} handler(s)")
        return ", ".join(parts) + "."

    def next_due(self) -> str:
        """When the next poll is due, and how to poll before it."""
        in_flight = ModelCompletionBatch.objects.pollable()
        earliest = in_flight.aggregate(at=Min("next_poll_at"))["at"]
        if earliest is None:
            if in_flight.exists():
                return "Nothing was due: every in-flight batch is leased by another run."
            return "Nothing is in flight."
        wait = max((earliest - timezone.now()).total_seconds(), 0)
        return (
            f"Nothing was due. The next poll is due at {earliest.isoformat(timespec='seconds')} "
            f"(in {wait:.0f} s); run with --force to poll every in-flight batch now."
        )

    def loop(
        self, batch_ids: list[int] | None, force: bool, limit: int, interval: float | None
    ) -> None:
        seconds = interval if interval is not None else float(get_setting("POLL_INTERVAL"))
        self.stdout.write(f"Polling every {seconds:g} s until SIGTERM or SIGINT.")
        self.stdout.flush()
        while not stopping.stop_requested():
            try:
                report = poll(batch_ids, force=force, limit=limit or None)
            except DatabaseError as error:
                self.stderr.write(f"database error: {one_line(error)}")
                self._reconnect(force=True)
            else:
                self.report_cycle(report)
            self._reconnect()  # a fresh connection per cycle survives database restarts
            self.stdout.flush()
            if stopping.wait(seconds):
                break
        self.stdout.write(self.stop_line())

    def report_cycle(self, report: RunReport) -> None:
        if report.fatal is not None:
            self.finish(report, "")  # raises: no later cycle can succeed
        for note in report.notes:
            self.stdout.write(self.style.WARNING(note))
        busy = report.refreshed or report.finished or report.submitted or report.handlers_called
        if busy or self.verbosity >= 2:
            self.stdout.write(self.summary(report))
        for error in report.errors:
            self.stderr.write(one_line(Exception(error)))

    def _reconnect(self, *, force: bool = False) -> None:
        if connection.in_atomic_block:
            return
        try:
            if force:
                connection.close()
            else:
                close_old_connections()
        except DatabaseError:
            try:
                connection.close()
            except DatabaseError:
                pass  # the next query opens a new connection
