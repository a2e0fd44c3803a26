"""What a randomized run covered, printed at the end: load with ``-p tests.model_based.tally``.

The machine counts into :data:`TALLY` whether or not this plugin is loaded; the plugin only
prints it. Violations are counted once per history in which they were seen (Hypothesis replays
a failing history while it shrinks it, so those replays count too); :data:`SMALLEST` keeps the
shortest history seen for each invariant.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

TALLY: Counter[str] = Counter()
#: invariant -> (number of steps, the steps, the first message) of the shortest history seen.
SMALLEST: dict[str, tuple[int, list[str], str]] = {}


def count(key: str, n: int = 1) -> None:
    TALLY[key] += n


def violation(invariant: str, steps: list[str], message: str) -> None:
    TALLY[f"violation: {invariant}"] += 1
    known = SMALLEST.get(invariant)
    if known is None or len(steps) < known[0]:
        SMALLEST[invariant] = (len(steps), list(steps), message)


def lines() -> list[str]:
    out = [f"{key}: {TALLY[key]}" for key in sorted(TALLY)]
    for invariant, (size, steps, message) in sorted(SMALLEST.items()):
        out.append(f"smallest history violating {invariant!r} ({size} steps): {message}")
        out.extend(f"    {step}" for step in steps)
    return out


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not TALLY:
        return
    terminalreporter.section("randomized tally")
    for line in lines():
        terminalreporter.write_line(line)
