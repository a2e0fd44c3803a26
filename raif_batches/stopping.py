"""Graceful stop: SIGTERM and SIGINT ask a run to stop between batches, never in the middle of one.

The signal handler only sets a flag. The call in flight (an HTTP request, a database statement)
runs to its end, because Python retries an interrupted system call when the handler returns
(PEP 475); the loops of :mod:`raif_batches.polling` check :func:`stop_requested` between batches,
leave the rest unclaimed, and release their leases as on any other exit. A second signal is
treated like the first: the work in hand still finishes (kill with SIGKILL to abandon it; the
leases then run out on their own).

Handlers can only be installed from the main thread; elsewhere (a task worker's thread)
:func:`graceful_stop` installs nothing and only the flag API works.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

_stop = threading.Event()
_signal_name: list[str] = []

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def request_stop(name: str = "request") -> None:
    """Ask the current run to stop after the batch in hand."""
    if not _signal_name:
        _signal_name.append(name)
    _stop.set()


def stop_requested() -> bool:
    return _stop.is_set()


def stop_reason() -> str:
    """The name of what asked for the stop (``SIGTERM``, ``SIGINT``…), or ``""``."""
    return _signal_name[0] if _signal_name else ""


def reset() -> None:
    _stop.clear()
    _signal_name.clear()


def wait(seconds: float) -> bool:
    """Sleep up to ``seconds``, waking at once on a stop request; True if a stop was requested."""
    return _stop.wait(max(seconds, 0.0))


def _handle(signum: int, frame: FrameType | None) -> None:
    request_stop(signal.Signals(signum).name)


@contextmanager
def graceful_stop(signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> Iterator[None]:
    """Within the block, the given signals request a stop instead of ending the process."""
    reset()
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in signals:
            previous[signum] = signal.signal(signum, _handle)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
