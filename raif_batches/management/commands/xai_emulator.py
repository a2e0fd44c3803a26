"""``manage.py xai_emulator``: serve the xAI Batch API emulator in the foreground until Ctrl-C."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Run the bundled xAI Batch API emulator (for the demo and offline testing)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
        parser.add_argument("--api-key", default="test-key",
                            help="the only key accepted; empty accepts any key")
        parser.add_argument("--seconds-per-request", type=float, default=0.0,
                            help="emulator seconds per finished request (0: no time pacing)")
        parser.add_argument("--requests-per-read", type=int, default=None,
                            help="requests finished per read of a batch")
        parser.add_argument("--validation-reads", type=int, default=1,
                            help="reads of all-zero counters before a file is validated")
        parser.add_argument("--error-shape", choices=["string", "object", "error_message"],
                            default="string")
        parser.add_argument("--time-format", choices=["date", "rfc3339"], default="date")
        parser.add_argument("--pagination-end", choices=["null", "empty"], default="null")
        parser.add_argument("--cancel-revert-count", type=int, default=0)
        parser.add_argument("--cancel-revert-after", type=float, default=10.0)
        parser.add_argument("--transient-failure-rate", type=float, default=0.0)
        parser.add_argument("--latency", type=float, default=0.0)
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args: Any, **options: Any) -> None:
        from raif_batches.emulator import EmulatorConfig, EmulatorServer

        config = EmulatorConfig(
            seconds_per_request=options["seconds_per_request"],
            requests_per_read=options["requests_per_read"],
            validation_reads=options["validation_reads"],
            error_shape=options["error_shape"],
            time_format=options["time_format"],
            pagination_end=None if options["pagination_end"] == "null" else "",
            cancel_revert_count=options["cancel_revert_count"],
            cancel_revert_after=options["cancel_revert_after"],
            transient_failure_rate=options["transient_failure_rate"],
            latency=options["latency"],
            seed=options["seed"],
        )
        server = EmulatorServer(
            host=options["host"], port=options["port"], api_key=options["api_key"] or None,
            config=config, quiet=options["verbosity"] < 2,
        )

        def ready(base_url: str) -> None:
            self.stdout.write(f"xAI emulator listening on {base_url} (Ctrl-C to stop)")
            self.stdout.flush()

        try:
            server.serve_forever(ready)
        except KeyboardInterrupt:
            self.stdout.write("xAI emulator stopped")
