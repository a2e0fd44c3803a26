"""``manage.py xai_emulator``: serve the xAI Batch API emulator in the foreground until Ctrl-C.

It needs no key (it accepts any unless ``--api-key`` names one) and runs no system checks, so it
starts in a project where ``XAI_API_KEY`` is not set yet. ``--profile`` picks the behaviour
(``realistic``: xAI as observed, the default; ``fast``: no pacing, no quirks); ``--set
FIELD=VALUE`` changes any other ``EmulatorConfig`` field (VALUE read as JSON when it parses).
Ctrl-C or SIGTERM stops it with exit status 0.
"""

from __future__ import annotations

import dataclasses
import json
import signal
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = "Run the bundled xAI Batch API emulator (for the demo and offline testing)."
    # The emulator is the way to try the app before a key exists: no check may stop it.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
        parser.add_argument(
            "--api-key",
            default="",
            help="the only key accepted; by default any non-empty key is (e.g. emulator-key)",
        )
        parser.add_argument("--profile", choices=["realistic", "fast"], default="realistic")
        parser.add_argument(
            "--seconds-per-request",
            type=float,
            default=None,
            help="emulator seconds per finished request (0: no time pacing)",
        )
        parser.add_argument(
            "--requests-per-read", type=int, default=None, help="requests finished per read"
        )
        parser.add_argument(
            "--validation-reads",
            type=int,
            default=None,
            help="reads of all-zero counters before a file is validated",
        )
        parser.add_argument("--error-shape", default=None)
        parser.add_argument("--time-format", choices=["date", "rfc3339"], default=None)
        parser.add_argument("--pagination-end", choices=["null", "empty"], default=None)
        parser.add_argument("--cancel-revert-count", type=int, default=None)
        parser.add_argument("--cancel-revert-after", type=float, default=None)
        parser.add_argument("--transient-failure-rate", type=float, default=None)
        parser.add_argument("--latency", type=float, default=None)
        parser.add_argument("--seed", type=int, default=None)
        parser.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="FIELD=VALUE",
            help="any EmulatorConfig field, VALUE as JSON (e.g. --set results_gone_status=410)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        from raif_batches.emulator import EmulatorConfig, EmulatorServer

        overrides: dict[str, Any] = {}
        for name in (
            "seconds_per_request",
            "requests_per_read",
            "validation_reads",
            "error_shape",
            "time_format",
            "cancel_revert_count",
            "cancel_revert_after",
            "transient_failure_rate",
            "latency",
            "seed",
        ):
            if options[name] is not None:
                overrides[name] = options[name]
        if options["pagination_end"] is not None:
            overrides["pagination_end"] = None if options["pagination_end"] == "null" else ""
            overrides["pagination_end_alternate"] = False
        overrides.update(parse_settings(options["set"]))
        try:
            config = EmulatorConfig.profile(options["profile"], **overrides)
        except (TypeError, ValueError) as exc:
            raise CommandError(f"bad emulator setting: {exc}") from None
        server = EmulatorServer(
            host=options["host"],
            port=options["port"],
            api_key=options["api_key"] or None,
            config=config,
            quiet=options["verbosity"] < 2,
        )

        def ready(base_url: str) -> None:
            key = "any key" if server.any_key else "only the key given by --api-key"
            self.stdout.write(
                f"xAI emulator ({options['profile']} profile) listening on {base_url}, "
                f"accepting {key} (Ctrl-C to stop)"
            )
            self.stdout.flush()

        # SIGTERM (a container or service manager stopping it) stops it like Ctrl-C does.
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            server.serve_forever(ready)
        except KeyboardInterrupt:
            self.stdout.write("xAI emulator stopped")
        except OSError as exc:
            raise CommandError(
                f"cannot serve on {options['host']}:{options['port']}: {exc}"
            ) from None


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def parse_settings(items: list[str], config_class: Any = None) -> dict[str, Any]:
    """``FIELD=VALUE`` pairs: VALUE as JSON when it parses, else as a string; lists become the
    field's own collection type (set or tuple). ``config_class``: the emulator's config
    dataclass (xAI's ``EmulatorConfig`` by default)."""
    from raif_batches.emulator import EmulatorConfig

    config_class = config_class or EmulatorConfig
    kinds = {f.name: f for f in dataclasses.fields(config_class)}
    values: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in kinds:
            raise CommandError(
                f"--set expects FIELD=VALUE with a {config_class.__name__} field: {item!r}"
            )
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        default = getattr(config_class(), name)
        if isinstance(value, list) and isinstance(default, set | tuple):
            value = type(default)(value)
        values[name] = value
    return values
