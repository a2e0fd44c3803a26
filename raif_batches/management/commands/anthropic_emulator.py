"""``manage.py anthropic_emulator``: serve the Anthropic Message Batches emulator until Ctrl-C.

Like ``xai_emulator``: no key needed (any non-empty ``x-api-key`` is accepted unless
``--api-key`` names one), no system checks, ``--profile realistic|fast``, and ``--set
FIELD=VALUE`` for any :class:`~raif_batches.emulator.anthropic.AnthropicEmulatorConfig` field
(VALUE read as JSON when it parses). Point ``RAIF_BATCHES["ANTHROPIC_BASE_URL"]`` at the URL it
prints (it has no path: the client's paths start with ``/v1/``).
"""

from __future__ import annotations

import signal
from typing import Any, cast

from django.core.management.base import BaseCommand, CommandError, CommandParser

from .xai_emulator import _interrupt, parse_settings


class Command(BaseCommand):
    help = "Run the bundled Anthropic Message Batches API emulator (offline testing)."
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8767, help="0 picks a free port")
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
            help="any AnthropicEmulatorConfig field, VALUE as JSON (e.g. --set live_counts=true)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        from raif_batches.emulator.anthropic import (
            AnthropicEmulatorConfig,
            AnthropicEmulatorServer,
        )

        overrides = parse_settings(options["set"], AnthropicEmulatorConfig)
        try:
            config = AnthropicEmulatorConfig.profile(options["profile"], **overrides)
        except (TypeError, ValueError) as exc:
            raise CommandError(f"bad emulator setting: {exc}") from None
        server = AnthropicEmulatorServer(
            host=options["host"],
            port=options["port"],
            api_key=options["api_key"] or None,
            config=cast(Any, config),  # the base class's parameter names xAI's config
            quiet=options["verbosity"] < 2,
        )

        def ready(base_url: str) -> None:
            key = "any key" if server.any_key else "only the key given by --api-key"
            self.stdout.write(
                f"Anthropic emulator ({options['profile']} profile) listening on {base_url}, "
                f"accepting {key} (Ctrl-C to stop)"
            )
            self.stdout.flush()

        signal.signal(signal.SIGTERM, _interrupt)
        try:
            server.serve_forever(ready)
        except KeyboardInterrupt:
            self.stdout.write("Anthropic emulator stopped")
        except OSError as exc:
            raise CommandError(
                f"cannot serve on {options['host']}:{options['port']}: {exc}"
            ) from None
