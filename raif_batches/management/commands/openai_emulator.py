"""``manage.py openai_emulator``: serve the OpenAI Batch API emulator in the foreground.

Like ``xai_emulator``: it needs no key (any is accepted unless ``--api-key`` names one) and runs
no system checks. ``--profile realistic`` (the default) plays OpenAI as its fact sheet says,
``fast`` drops the pacing and the quirks; ``--set FIELD=VALUE`` changes any
``OpenAIEmulatorConfig`` field (VALUE read as JSON when it parses). Ctrl-C or SIGTERM stops it
with exit status 0. The base URL to configure (``OPENAI_BASE_URL``) ends in ``/v1``.
"""

from __future__ import annotations

from ._emulator import Emulator, EmulatorCommand


class Command(EmulatorCommand):
    help = "Run the bundled OpenAI Batch API emulator (for the demo and offline testing)."
    label = "OpenAI"
    default_port = 8766
    set_example = "validation_reads=0"

    def emulator(self) -> Emulator:
        from raif_batches.emulator.openai import OpenAIEmulatorConfig, OpenAIEmulatorServer

        return OpenAIEmulatorConfig, OpenAIEmulatorServer
