"""``manage.py xai_emulator``: serve the xAI Batch API emulator in the foreground until Ctrl-C.

It needs no key (it accepts any unless ``--api-key`` names one) and runs no system checks, so it
starts in a project where ``XAI_API_KEY`` is not set yet. ``--profile`` picks the behaviour
(``realistic``: xAI as observed, the default; ``fast``: no pacing, no quirks); ``--set
FIELD=VALUE`` changes any other ``EmulatorConfig`` field (VALUE read as JSON when it parses).
Ctrl-C or SIGTERM stops it with exit status 0.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandParser

from ._emulator import Emulator, EmulatorCommand, parse_settings

# parse_settings lived here first; tests and users import it from here.
__all__ = ["Command", "parse_settings"]

#: xAI's shortcut options: each sets the config field of its name when given.
FIELD_OPTIONS = (
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
)


class Command(EmulatorCommand):
    help = "Run the bundled xAI Batch API emulator (for the demo and offline testing)."
    label = "xAI"
    default_port = 8765
    set_example = "results_gone_status=410"

    def emulator(self) -> Emulator:
        from raif_batches.emulator import EmulatorConfig, EmulatorServer

        return EmulatorConfig, EmulatorServer

    def add_config_arguments(self, parser: CommandParser) -> None:
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

    def config_overrides(self, options: dict[str, Any]) -> dict[str, Any]:
        overrides = {name: options[name] for name in FIELD_OPTIONS if options[name] is not None}
        if options["pagination_end"] is not None:
            overrides["pagination_end"] = None if options["pagination_end"] == "null" else ""
            overrides["pagination_end_alternate"] = False
        return overrides
