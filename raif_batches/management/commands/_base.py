"""What the batch commands share: one-line failures, graceful stop, a summary.

Rules, and why:

- Every failure ends in one line on stderr and a non-zero exit, never a traceback: a cron mail
  or a container log should say what went wrong, not where in our code. ``--traceback`` still
  shows the chain for a bug report.
- A lost database connection is such a failure (``database error: …``); what was committed
  stays, and the leases the run held run out on their own.
- SIGTERM and SIGINT finish the batch in hand, release the leases and exit 0 with a line that
  says the run was stopped (see :mod:`raif_batches.stopping`).
- Logging is the project's (its ``LOGGING`` setting): the commands neither set levels nor add
  handlers. They report through their own output; ``-v 2`` adds detail, ``-v 0`` only errors.
"""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError
from django.utils.text import get_text_list

from ... import stopping
from ...conf import provider_label, provider_setting_name, require_api_key
from ...exceptions import BatchConfigurationError, ProviderAuthenticationError
from ...polling import RunReport


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def limit_argument(text: str) -> int:
    """``--limit``: a whole number, 0 meaning no limit."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; use 0 for no limit")
    return value


class BatchCommand(BaseCommand):
    #: Whether SIGTERM/SIGINT stop the run between batches instead of killing it.
    graceful = True
    verbosity = 1

    def add_batch_argument(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--batch",
            dest="batch_ids",
            action="append",
            type=int,
            metavar="ID",
            help="Only this batch (primary key); repeat for several.",
        )

    def add_limit_argument(self, parser: CommandParser, what: str) -> None:
        parser.add_argument(
            "--limit",
            type=limit_argument,
            default=0,
            metavar="N",
            help=f"{what} at most N batches per run (0, the default: no limit).",
        )

    def execute(self, *args: Any, **options: Any) -> Any:
        self.verbosity = int(options.get("verbosity", 1))
        try:
            if not options.get("dry_run"):  # the work needs a key: say so before any of it
                require_api_key()
            if self.graceful:
                with stopping.graceful_stop():
                    return super().execute(*args, **options)
            return super().execute(*args, **options)
        except CommandError:
            raise
        except BatchConfigurationError as error:
            raise CommandError(f"configuration: {one_line(error)}") from error
        except DatabaseError as error:
            raise CommandError(f"database error: {one_line(error)}") from error
        except Exception as error:
            raise CommandError(
                f"{type(error).__name__}: {one_line(error)} (run with --traceback for details)"
            ) from error

    def detail(self, text: str) -> None:
        """A line shown with ``-v 2`` and above."""
        if self.verbosity >= 2:
            self.stdout.write(text)

    def stop_line(self) -> str:
        reason = stopping.stop_reason() or "request"
        return (
            f"Stopped on {reason}: the batch in hand was finished and every lease released; "
            "the rest is left for the next run."
        )

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
                    f"RAIF_BATCHES['{name}'] or {name}): {one_line(report.fatal)}"
                )
            raise CommandError(report.fatal.one_line)
        if self.verbosity >= 1:
            self.stdout.write(summary)
        self.detail(
            f"Claimed {report.claimed} batch(es); skipped {report.skipped_busy} busy; "
            f"finished: {ids_text(report.finished)}."
        )
        if report.stopped or stopping.stop_requested():
            self.stdout.write(self.stop_line())
        if report.errors:
            first = report.errors[0]
            more = len(report.errors) - 1
            raise CommandError(one_line(Exception(first)) + (f" (and {more} more)" if more else ""))


def ids_text(ids: list[int]) -> str:
    return get_text_list([str(i) for i in ids], "and") if ids else "none"
