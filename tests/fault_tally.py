"""Counts what the fault tests inject, for the issue's closing figures.

Load it with ``-p tests.fault_tally``: it counts every fault the emulator serves (by kind),
every simulated crash, the provider batches and lines created, and provider batches that share
a local batch's name (duplicates), then prints the tally at the end of the run.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from raif_batches.emulator.server import EmulatorServer
from raif_batches.emulator.state import EmulatorState

tally: Counter[str] = Counter()
_pick_fault = EmulatorState.pick_fault
_stop = EmulatorServer.stop


def _counting_pick(self: EmulatorState, endpoint: str) -> Any:
    fault = _pick_fault(self, endpoint)
    if fault is not None:
        kind = f"status {fault.status}" if fault.kind == "status" else fault.kind
        tally[f"fault: {kind}"] += 1
    return fault


def _counting_stop(self: EmulatorServer) -> None:
    names = Counter(b.name for b in self.state.batches.values() if b.name.startswith("raif_"))
    tally["provider batches of local batches"] += sum(names.values())
    tally["duplicate provider batches"] += sum(n - 1 for n in names.values() if n > 1)
    tally["request lines in them"] += sum(
        len(b.lines) for b in self.state.batches.values() if b.name.startswith("raif_")
    )
    _stop(self)


EmulatorState.pick_fault = _counting_pick  # type: ignore[method-assign]
EmulatorServer.stop = _counting_stop  # type: ignore[method-assign]


def pytest_sessionstart(session: Any) -> None:
    from . import crashing  # needs Django set up

    crash_if = crashing.crash_if

    def counting_crash(step: str) -> None:
        if step in crashing.crash_at:
            tally[f"crash (in process): {step}"] += 1
        crash_if(step)

    crashing.crash_if = counting_crash


def pytest_terminal_summary(terminalreporter: Any) -> None:
    terminalreporter.section("fault tally")
    for key in sorted(tally):
        terminalreporter.write_line(f"{key}: {tally[key]}")
