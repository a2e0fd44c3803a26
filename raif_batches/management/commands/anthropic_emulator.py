"""``manage.py anthropic_emulator``: serve the Anthropic Message Batches emulator until Ctrl-C.

Like ``xai_emulator``: no key needed (any non-empty ``x-api-key`` is accepted unless
``--api-key`` names one), no system checks, ``--profile realistic|fast``, and ``--set
FIELD=VALUE`` for any :class:`~raif_batches.emulator.anthropic.AnthropicEmulatorConfig` field
(VALUE read as JSON when it parses). Point ``RAIF_BATCHES["ANTHROPIC_BASE_URL"]`` at the URL it
prints (it has no path: the client's paths start with ``/v1/``).
"""

from __future__ import annotations

from ._emulator import Emulator, EmulatorCommand


class Command(EmulatorCommand):
    help = "Run the bundled Anthropic Message Batches API emulator (offline testing)."
    label = "Anthropic"
    default_port = 8767
    set_example = "live_counts=true"

    def emulator(self) -> Emulator:
        from raif_batches.emulator.anthropic import AnthropicEmulatorConfig, AnthropicEmulatorServer

        return AnthropicEmulatorConfig, AnthropicEmulatorServer
