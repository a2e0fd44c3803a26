"""``manage.py openai_emulator``: serve the OpenAI Batch API emulator in the foreground.

Like ``xai_emulator``: it needs no key (any is accepted unless ``--api-key`` names one) and runs
no system checks. ``--profile realistic`` (the default) plays OpenAI as its fact sheet says,
``fast`` drops the pacing and the quirks; ``--set FIELD=VALUE`` changes any
``OpenAIEmulatorConfig`` field (VALUE read as JSON when it parses). Ctrl-C or SIGTERM stops it
with exit status 0. The base URL to configure (``OPENAI_BASE_URL``) ends in ``/v1``.
"""

from __future__ import annotations

import signal
from typing import Any, cast

from django.core.management.base import BaseCommand, CommandError, CommandParser

from .xai_emulator import parse_settings


class Command(BaseCommand):
    help = "Run the bundled OpenAI Batch API emulator (for the demo and offline testing)."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8766, help="0 picks a free port")
        parser.add_argument(
            "--api-key",
            default="",
            help="the only key accepted; by default any non-empty key is (e.g. emulator-key)",
        )
        parser.add_argument("--profile", choices=["realistic", "fast"], default="realistic")
        parser.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="FIELD=VALUE",
            help="any OpenAIEmulatorConfig field, VALUE as JSON (e.g. --set validation_reads=0)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        from raif_batches.emulator.openai import OpenAIEmulatorConfig, OpenAIEmulatorServer

        overrides = parse_settings(options["set"], OpenAIEmulatorConfig)
        try:
            config = OpenAIEmulatorConfig.profile(options["profile"], **overrides)
        except (TypeError, ValueError) as exc:
            raise CommandError(f"bad emulator setting: {exc}") from None
        server = OpenAIEmulatorServer(
            host=options["host"],
            port=options["port"],
            api_key=options["api_key"] or None,
            config=cast(Any, config),  # the base class is typed with xAI's config
            quiet=options["verbosity"] < 2,
        )

        def ready(base_url: str) -> None:
            key = "any key" if server.any_key else "only the key given by --api-key"
            self.stdout.write(
                f"OpenAI emulator ({options['profile']} profile) listening on {base_url}, "
                f"accepting {key} (Ctrl-C to stop)"
            )
            self.stdout.flush()

        signal.signal(signal.SIGTERM, _interrupt)
        try:
            server.serve_forever(ready)
        except KeyboardInterrupt:
            self.stdout.write("OpenAI emulator stopped")
        except OSError as exc:
            raise CommandError(
                f"cannot serve on {options['host']}:{options['port']}: {exc}"
            ) from None


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
