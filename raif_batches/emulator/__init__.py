"""A local stand-in for the xAI Batch API, for the demo and for tests (ours and users').

``with run_emulator() as emu:`` serves ``emu.base_url`` on a free loopback port; ``emu.state``
holds what the provider holds, ``emu.config`` its behaviour, ``emu.state.add_fault`` its failures.
The default config plays xAI as it really answers (pacing, quirks, prices); ``profile="fast"``
drops the pacing and the quirks. Any bearer key is accepted unless one is named.
Pure standard library: importing it needs neither Django nor pytest (``testing`` needs Django).
"""

from .completions import LINE_QUIRKS, ModelPrice
from .faults import UNREADABLE_BODIES, Fault, unreadable
from .server import DEFAULT_API_KEY, EmulatorServer, run_emulator
from .state import PROFILES, ApiError, Call, EmulatorConfig, EmulatorState

__all__ = [
    "DEFAULT_API_KEY",
    "LINE_QUIRKS",
    "PROFILES",
    "UNREADABLE_BODIES",
    "ApiError",
    "Call",
    "EmulatorConfig",
    "EmulatorServer",
    "EmulatorState",
    "Fault",
    "ModelPrice",
    "run_emulator",
    "unreadable",
]
