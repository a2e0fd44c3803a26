from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from ...polling import harvest
from ._base import BatchCommand, ids_text


class Command(BatchCommand):
    help = "Fetch the results of terminal batches whose results are not fetched yet."

    def add_arguments(self, parser: CommandParser) -> None:
        self.add_batch_argument(parser)
        self.add_limit_argument(parser, "Harvest")

    def handle(self, *args: Any, batch_ids: list[int] | None, limit: int, **options: Any) -> None:
        report = harvest(batch_ids, limit=limit or None)
        self.finish(
            report,
            f"Fetched results of {len(report.finished)} batch(es) "
            f"({ids_text(report.finished)}): {report.results_applied} result(s) applied.",
        )
