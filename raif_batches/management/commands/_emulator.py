"""What the three emulator commands share: the serving options, ``--set`` and the serve loop.

``xai_emulator``, ``openai_emulator`` and ``anthropic_emulator`` serve one provider's emulator
each, in the foreground, the same way: no key needed (any non-empty key is accepted unless
``--api-key`` names one), no system checks (the emulator is how the app is tried before a key
exists), ``--profile realistic|fast``, ``--set FIELD=VALUE`` for any field of the provider's
config, one line once it listens, and Ctrl-C or SIGTERM stopping it with exit status 0.

A command says which provider it serves in class attributes (:class:`EmulatorCommand`) and
:meth:`~EmulatorCommand.emulator`; a provider with options of its own (xAI's shortcuts for common
fields) adds them with :meth:`~EmulatorCommand.add_config_arguments` and
:meth:`~EmulatorCommand.config_overrides`.
"""

from __future__ import annotations

import dataclasses
import json
import signal
from typing import TYPE_CHECKING, Any, TypeAlias

from django.core.management.base import BaseCommand, CommandError, CommandParser

if TYPE_CHECKING:
    from raif_batches.emulator import EmulatorServer

#: A provider's config class (the config classes share no base, hence ``Any``) and server class.
Emulator: TypeAlias = "tuple[Any, type[EmulatorServer]]"


class EmulatorCommand(BaseCommand):
    """Serve a provider's emulator until Ctrl-C or SIGTERM."""

    # The emulator is the way to try the app before a key exists: no check may stop it.
    requires_system_checks: list[str] = []

    #: The provider as the printed lines name it ("xAI" emulator … listening on …).
    label: str
    #: The port served unless ``--port`` says otherwise.
    default_port: int
    #: A sample ``FIELD=VALUE`` of the provider's config, for the help of ``--set``.
    set_example: str

    def emulator(self) -> Emulator:
        """The provider's config class (with its ``profile`` constructor, and whose name the
        help of ``--set`` gives) and server class, imported when the command runs or shows its
        help, not when Django loads it."""
        raise NotImplementedError

    def add_config_arguments(self, parser: CommandParser) -> None:
        """The provider's own options, listed after ``--profile`` and before ``--set``."""

    def config_overrides(self, options: dict[str, Any]) -> dict[str, Any]:
        """The config fields the provider's own options set; ``--set`` goes over them."""
        return {}

    def add_arguments(self, parser: CommandParser) -> None:
        config = self.emulator()[0].__name__
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument(
            "--port", type=int, default=self.default_port, help="0 picks a free port"
        )
        parser.add_argument(
            "--api-key",
            default="",
            help="the only key accepted; by default any non-empty key is (e.g. emulator-key)",
        )
        parser.add_argument("--profile", choices=["realistic", "fast"], default="realistic")
        self.add_config_arguments(parser)
        parser.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="FIELD=VALUE",
            help=f"any {config} field, VALUE as JSON (e.g. --set {self.set_example})",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        config_class, server_class = self.emulator()
        overrides = self.config_overrides(options)
        overrides.update(parse_settings(options["set"], config_class))
        try:
            config = config_class.profile(options["profile"], **overrides)
        except (TypeError, ValueError) as exc:
            raise CommandError(f"bad emulator setting: {exc}") from None
        server = server_class(
            host=options["host"],
            port=options["port"],
            api_key=options["api_key"] or None,
            config=config,
            quiet=options["verbosity"] < 2,
        )

        def ready(base_url: str) -> None:
            key = "any key" if server.any_key else "only the key given by --api-key"
            self.stdout.write(
                f"{self.label} emulator ({options['profile']} profile) listening on {base_url}, "
                f"accepting {key} (Ctrl-C to stop)"
            )
            self.stdout.flush()

        # SIGTERM (a container or service manager stopping it) stops it like Ctrl-C does.
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            server.serve_forever(ready)
        except KeyboardInterrupt:
            self.stdout.write(f"{self.label} emulator stopped")
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
