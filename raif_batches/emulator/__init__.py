"""A local stand-in for the xAI Batch API, for the demo and for tests (ours and users').

``with run_emulator() as emu:`` serves ``emu.base_url`` on a free loopback port; ``emu.state``
holds what the provider holds, ``emu.config`` its behaviour, ``emu.state.add_fault`` its failures.
Pure standard library: importing it needs neither Django nor pytest.
"""

from .completions import ModelPrice
from .faults import Fault
from .server import EmulatorServer, run_emulator
from .state import ApiError, Call, EmulatorConfig, EmulatorState

__all__ = [
    "ApiError",
    "Call",
    "EmulatorConfig",
    "EmulatorServer",
    "EmulatorState",
    "Fault",
    "ModelPrice",
    "run_emulator",
]
