from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from ... import stopping
from ...exceptions import BatchStateError, ProviderError
from ...models import ModelCompletionBatch
from ._base import BatchCommand


class Command(BatchCommand):
    help = (
        "Ask the provider to cancel batches (by local primary key). Results already produced "
        "are still fetched by poll_batches."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("batch_ids", nargs="+", type=int, metavar="ID")

    def handle(self, *args: Any, batch_ids: list[int], **options: Any) -> None:
        batches = {b.pk: b for b in ModelCompletionBatch.objects.filter(pk__in=batch_ids)}
        missing = [pk for pk in batch_ids if pk not in batches]
        if missing:
            raise CommandError(f"no batch with id {', '.join(map(str, missing))}")
        failures: list[str] = []
        for pk in batch_ids:
            if stopping.stop_requested():
                self.stdout.write(self.stop_line())
                break
            try:
                batch = batches[pk].cancel()
            except (BatchStateError, ProviderError) as error:
                text = error.one_line if isinstance(error, ProviderError) else str(error)
                failures.append(f"batch {pk}: {text}")
                continue
            self.stdout.write(f"Batch {pk}: cancel requested; now {batch.status}.")
        if failures:
            raise CommandError("; ".join(failures))
