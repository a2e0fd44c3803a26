"""What the batch commands share: verbosity mapped to logging, one-line failures, a summary."""

from __future__ import annotations

import logging
import sys
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils.text import get_text_list

from ...conf import provider_label, provider_setting_name, require_api_key
from ...exceptions import BatchConfigurationError, ProviderAuthenticationError
from ...polling import RunReport

LOG_LEVELS = {0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO, 3: logging.DEBUG}


class BatchCommand(BaseCommand):
    def add_batch_argument(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--batch",
            dest="batch_ids",
            action="append",
            type=int,
            metavar="ID",
            help="Only this batch (primary key); repeat for several.",
        )

    def execute(self, *args: Any, **options: Any) -> Any:
        verbosity = int(options.get("verbosity", 1))
        logger = logging.getLogger("raif_batches")
        if not logger.handlers and not logging.getLogger().handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
            logger.addHandler(handler)
        logger.setLevel(LOG_LEVELS.get(verbosity, logging.DEBUG))
        try:
            if not options.get("dry_run"):  # the work needs a key: say so before any of it
                require_api_key()
            return super().execute(*args, **options)
        except BatchConfigurationError as error:
            raise CommandError(f"configuration: {error}") from error

    def finish(self, report: RunReport, summary: str) -> None:
        """Print what was done; fail with one line when the run could not do its job."""
        for note in report.notes:
            self.stdout.write(self.style.WARNING(note))
        if report.fatal is not None:
            if isinstance(report.fatal, ProviderAuthenticationError):
                provider = getattr(report.fatal, "provider", None) or "xai"
                name = provider_setting_name("API_KEY", provider)
                raise CommandError(
                    f"{provider_label(provider)} rejected the API key (set "
                    f"RAIF_BATCHES['{name}'] or {name}): {report.fatal}"
                )
            raise CommandError(report.fatal.one_line)
        self.stdout.write(summary)
        if report.errors:
            first = report.errors[0]
            more = len(report.errors) - 1
            raise CommandError(first + (f" (and {more} more)" if more else ""))


def ids_text(ids: list[int]) -> str:
    return get_text_list([str(i) for i in ids], "and") if ids else "none"
