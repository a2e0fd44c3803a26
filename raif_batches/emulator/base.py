"""What every provider's emulator state shares: the clock, the recorded calls, the faults, the lock.

xAI's, OpenAI's and Anthropic's states (:mod:`.state`, :mod:`.openai.state`, :mod:`.anthropic`)
differ in what they store and how a batch moves on, but the server and the tests drive them the
same way: ``now``/``advance`` for time, ``record``/``calls``/``count_calls`` for what was asked,
``add_fault``/``clear_faults``/``pick_fault`` for failures, ``reset`` between tests. That surface
lives here once, in :class:`EmulatorStateBase`, so a fix to it reaches every provider.

What a provider adds is explicit: its config class (:attr:`EmulatorStateBase.config_class`), its
own stores (set in its ``__init__``, emptied by :meth:`EmulatorStateBase._forget`), and, where it
answers a transient failure differently, :meth:`EmulatorStateBase._transient_fault`.

The progress rule is shared too (:meth:`EmulatorStateBase._progress`, described in :mod:`.state`):
how many pending lines a look at a batch finishes. How one line finishes is each provider's own
(:meth:`EmulatorStateBase._finish`).
"""

from __future__ import annotations

import copy
import dataclasses
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

from .faults import Fault, FaultBook


@dataclass
class Call:
    """One call as the emulator saw it. Never holds the Authorization header."""

    endpoint: str
    method: str
    path: str
    query: dict[str, str]
    status: int  # 0 when the connection was dropped without an answer
    body_size: int
    time: float


#: The profiles every provider's config offers (:meth:`Profiles.profile`).
PROFILES = ("realistic", "fast")


class Profiles:
    """The named profiles of a provider's config dataclass: ``"realistic"`` (its defaults, the
    provider as observed, quirks included; ``"default"`` and ``"hostile"`` name it too) and
    ``"fast"`` (its :attr:`fast_profile` over the defaults), each with field overrides."""

    #: What the fast profile changes from the defaults: no pacing, no quirks.
    fast_profile: ClassVar[Mapping[str, Any]] = {}

    @classmethod
    def fast(cls, **overrides: Any) -> Self:
        """For speed only: the fast profile, with ``overrides``."""
        return cls._build({**cls.fast_profile, **overrides})

    @classmethod
    def profile(cls, name: str = "realistic", **overrides: Any) -> Self:
        """The profile ``name`` (see :data:`PROFILES`), with ``overrides``."""
        if name == "fast":
            return cls.fast(**overrides)
        if name in ("realistic", "default", "hostile"):
            return cls._build(overrides)
        raise ValueError(f"unknown emulator profile {name!r}; expected one of {PROFILES}")

    @classmethod
    def _build(cls, fields: Mapping[str, Any]) -> Self:
        make: Callable[..., Self] = cls
        return make(**fields)


class StateConfig(Protocol):
    """What the shared plumbing reads of a provider's config: a dataclass (so :meth:`reset` can
    restore it field by field) with the fault and pacing knobs, named alike by every provider."""

    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[Any]]]

    @property
    def seed(self) -> int: ...

    @property
    def transient_failure_rate(self) -> float: ...

    @property
    def requests_per_read(self) -> int | None: ...

    @property
    def share_per_read(self) -> float: ...

    @property
    def seconds_per_request(self) -> float: ...


class PacedBatch(Protocol):
    """What :meth:`EmulatorStateBase._progress` reads and moves on of a provider's batch."""

    lines: list[Any]
    next_pending: int  # lines before this index are finished (they finish in order)
    credit: float  # a fraction of a line earned but not spent yet
    last_progress: float  # the emulator time of the last look


ConfigT = TypeVar("ConfigT", bound=StateConfig)


class EmulatorStateBase(Generic[ConfigT]):
    """A provider's emulated world, minus the world: a clock, the calls, the faults, one lock.

    ``clock`` is injectable; :meth:`now` adds the :meth:`advance` offset to it. Every public
    method takes the one ``RLock`` (re-entrant, as public methods call each other), so the
    threaded HTTP server can call them freely; a subclass's public methods take it too.
    """

    #: The provider's config dataclass: built when no config is given, restored by :meth:`reset`.
    config_class: type[ConfigT]

    def __init__(
        self, config: ConfigT | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self.config: ConfigT = config if config is not None else self.config_class()
        self._initial_config = copy.deepcopy(self.config)
        self._clock = clock
        self._lock = threading.RLock()
        self.offset = 0.0
        self.calls: list[Call] = []
        self._faults = FaultBook(self.config.seed)

    # -- clock ---------------------------------------------------------------------------------
    def now(self) -> float:
        return self._clock() + self.offset

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.offset += seconds

    def reset(self) -> None:
        """Forget everything and restore the config the state was built with (in place, so the
        server and tests keep the same object)."""
        with self._lock:
            for f in dataclasses.fields(self.config_class):
                setattr(self.config, f.name, copy.deepcopy(getattr(self._initial_config, f.name)))
            self.offset = 0.0
            self.calls.clear()
            self._faults.reset(self.config.seed)
            self._forget()

    def _forget(self) -> None:
        """Empty the provider's own stores and counters; :meth:`reset` calls it under the lock."""

    # -- calls ---------------------------------------------------------------------------------
    def record(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)

    def count_calls(self, endpoint: str) -> int:
        with self._lock:
            return sum(1 for c in self.calls if c.endpoint == endpoint)

    # -- faults --------------------------------------------------------------------------------
    @property
    def faults(self) -> list[Fault]:
        return self._faults.faults

    def add_fault(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.faults.append(fault)
            return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.faults.clear()

    def pick_fault(self, endpoint: str) -> Fault | None:
        """The transient failure or injected fault that hits this call, if any."""
        with self._lock:
            return self._transient_fault() or self._faults.pick(endpoint)

    def _transient_fault(self) -> Fault | None:
        """A transient failure at ``transient_failure_rate``, if this call draws one. A provider
        whose server writes its own error bodies overrides it to reshape the fault."""
        return self._faults.transient(self.config.transient_failure_rate)

    # -- progress ------------------------------------------------------------------------------
    def _progress(self, batch: PacedBatch, now: float, read: bool) -> None:
        """Finish the pending lines this look at ``batch`` (a read or not) earns at ``now``.

        The pacing knobs' budgets add up (see :mod:`.state`); a fraction left over is kept as
        the batch's credit for the next look; with every knob off, all pending lines finish at
        once. Lines finish in order, each by :meth:`_finish`.
        """
        cfg = self.config
        pending = len(batch.lines) - batch.next_pending
        if (
            cfg.requests_per_read is None
            and cfg.seconds_per_request <= 0
            and cfg.share_per_read <= 0
        ):
            budget = pending
        else:
            if cfg.seconds_per_request > 0 and now > batch.last_progress:
                batch.credit += (now - batch.last_progress) / cfg.seconds_per_request
            if read and cfg.requests_per_read is not None:
                batch.credit += cfg.requests_per_read  # set, it alone paces reads (0: none)
            elif read and cfg.share_per_read > 0:
                batch.credit += max(1.0, cfg.share_per_read * len(batch.lines))
            budget = min(pending, int(batch.credit + 1e-9))
            batch.credit = 0.0 if budget == pending else batch.credit - budget
        batch.last_progress = max(batch.last_progress, now)
        for line in batch.lines[batch.next_pending : batch.next_pending + budget]:
            self._finish(batch, line, now)
        batch.next_pending += budget

    def _finish(self, batch: Any, line: Any, now: float) -> None:
        """Run one line of ``batch`` (the provider's own Batch and Line) at emulator time
        ``now``: its answer or error, as that provider records it."""
        raise NotImplementedError
