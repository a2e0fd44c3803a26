from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from ...models import ModelCompletionBatch
from ...polling import submit
from ...pricing import estimate_batch_cost
from ._base import BatchCommand, ids_text


class Command(BatchCommand):
    help = "Submit pending batches to their provider (all, or those named with --batch)."

    def add_arguments(self, parser: CommandParser) -> None:
        self.add_batch_argument(parser)
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="List what would be submitted, with estimated costs, and send nothing.",
        )
        self.add_limit_argument(parser, "Submit")

    def handle(
        self,
        *args: Any,
        batch_ids: list[int] | None,
        dry_run: bool,
        limit: int,
        **options: Any,
    ) -> None:
        if dry_run:
            self.dry_run(batch_ids, limit)
            return
        report = submit(batch_ids, limit=limit or None)
        self.finish(
            report,
            f"Submitted {len(report.submitted)} batch(es): {ids_text(report.submitted)}.",
        )

    def dry_run(self, batch_ids: list[int] | None, limit: int) -> None:
        batches = ModelCompletionBatch.objects.submittable().order_by("pk")
        if batch_ids:
            batches = batches.filter(pk__in=batch_ids)
        if limit:
            batches = batches[:limit]
        count = 0
        for batch in batches:
            count += 1
            estimate = estimate_batch_cost(batch)
            self.stdout.write(
                f"batch {batch.pk} {batch.name!r}: {estimate.requests} request(s) to "
                f"{batch.provider}/{batch.model}, estimated cost {estimate.describe()}"
            )
        self.stdout.write(f"Dry run: {count} batch(es) would be submitted; nothing was sent.")
