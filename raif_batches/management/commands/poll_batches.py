from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from ...polling import poll
from ._base import BatchCommand


class Command(BatchCommand):
    help = (
        "Refresh every in-flight batch whose next poll is due, and fetch the results of every "
        "batch that has ended, exactly once. Safe to run from cron on many hosts at once."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        self.add_batch_argument(parser)
        parser.add_argument(
            "--force", action="store_true", help="Treat every in-flight batch as due now."
        )
        parser.add_argument("--limit", type=int, help="Claim at most this many batches.")

    def handle(
        self,
        *args: Any,
        batch_ids: list[int] | None,
        force: bool,
        limit: int | None,
        **options: Any,
    ) -> None:
        report = poll(batch_ids, force=force, limit=limit)
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
        self.finish(report, ", ".join(parts) + ".")
