"""Fault injection: the network and provider failures a batch client must survive.

A :class:`Fault` names an endpoint (or ``None`` for any), what goes wrong, and how often. The
server asks :meth:`FaultBook.pick` once per call, before doing any work; a seeded
``random.Random`` decides probabilistic faults so a failing test replays the same way.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

KINDS = (
    "status",
    "latency",
    "drop",
    "accept_then_drop",
    "truncate",
    "repeat_page",
    "overlap_page",
    "raw",
    "accept_then_raw",
    "headers",
    "redirect_loop",
)

#: Bodies a provider's proxy or a broken server sends with a 200: for ``unreadable()``.
UNREADABLE_BODIES: dict[str, tuple[bytes, str]] = {
    "html": (b"<html><body><h1>502 Bad Gateway</h1></body></html>", "text/html"),
    "empty": (b"", "application/json"),
    "list": (b"[]", "application/json"),
    "wrong_shape": (b'{"object": "unexpected", "data": null}', "application/json"),
    "cut": (b'{"batch_id": "batch_', "application/json"),
    "not_json": (b"upstream connect error or disconnect/reset before headers", "text/plain"),
}

#: gRPC status texts, which xAI puts in the ``code`` field of every error body.
GRPC_TEXT = {
    400: "Client specified an invalid argument",
    401: "The request does not have valid authentication credentials for the operation",
    403: "The caller does not have permission to execute the specified operation",
    404: "Some requested entity was not found",
    409: "The entity that a client attempted to create already exists",
    412: "The operation was rejected because the system is not in a state required for the "
    "operation's execution",
    413: "Client specified an invalid argument",
    429: "Some resource has been exhausted",
    500: "Internal error",
    501: "The operation is not implemented or is not supported/enabled in this service",
    503: "The service is currently unavailable",
    504: "Deadline expired before operation could complete",
}


def error_body(status: int, message: str) -> dict[str, str]:
    """The ``{"code", "error"}`` body every xAI error carries."""
    return {"code": GRPC_TEXT.get(status, "Unknown error"), "error": message}


@dataclass
class Fault:
    """One injected failure.

    ``kind`` is one of :data:`KINDS`: ``status`` answers ``status`` (with ``Retry-After`` when
    ``retry_after`` is set); ``latency`` sleeps ``delay`` then serves; ``drop`` closes the
    connection before any work; ``accept_then_drop`` does the work, then closes without answering;
    ``truncate`` does the work and closes halfway through the answer's body (its headers promise
    the whole length);
    ``repeat_page`` / ``overlap_page`` bend the next page token of a list call; ``raw`` answers
    ``status`` with the bytes ``raw_body`` (HTML, an empty body, a JSON list…) before any work,
    and ``accept_then_raw`` does the work first (a create that happened, answered unreadably);
    ``headers`` does the work and answers normally with ``headers`` added (a ``Content-Encoding:
    gzip`` on a plain body); ``redirect_loop`` answers ``302`` pointing at the same URL, for ever.
    ``headers`` (the field) is also added to the answer of every other kind.
    ``times=None`` fires forever; ``probability`` is drawn from the emulator's seeded generator.
    """

    endpoint: str | None
    kind: str
    status: int = 500
    times: int | None = 1
    probability: float = 1.0
    retry_after: float | None = None
    delay: float = 0.0
    body: dict[str, Any] | None = None
    raw_body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)  # extra headers of a raw answer
    fired: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {KINDS}")

    @property
    def exhausted(self) -> bool:
        return self.times is not None and self.fired >= self.times

    def response_body(self) -> dict[str, Any]:
        return self.body or error_body(self.status, f"Injected fault: HTTP {self.status}")


def unreadable(
    endpoint: str | None,
    what: str = "html",
    *,
    after_work: bool = False,
    status: int = 200,
    times: int | None = 1,
) -> Fault:
    """A ``200`` (by default) whose body cannot be read: one of :data:`UNREADABLE_BODIES`.
    ``after_work=True`` does the call's work first (``accept_then_raw``)."""
    body, content_type = UNREADABLE_BODIES[what]
    kind = "accept_then_raw" if after_work else "raw"
    return Fault(
        endpoint, kind, status=status, raw_body=body, content_type=content_type, times=times
    )


class FaultBook:
    """The live faults, plus the emulator-wide transient failure rate. Not locked: the state
    calls it under its own lock."""

    def __init__(self, seed: int) -> None:
        self.faults: list[Fault] = []
        self.rng = random.Random(seed)
        self._transient_count = 0

    def reset(self, seed: int) -> None:
        self.faults.clear()
        self.rng = random.Random(seed)
        self._transient_count = 0

    def pick(self, endpoint: str) -> Fault | None:
        """The first live fault that applies to this call and wins its draw; it is spent once."""
        for fault in self.faults:
            if fault.exhausted or fault.endpoint not in (None, endpoint):
                continue
            if fault.probability < 1.0 and self.rng.random() >= fault.probability:
                continue
            fault.fired += 1
            return fault
        return None

    def transient(self, rate: float) -> Fault | None:
        """With ``rate`` > 0, that share of calls fail before any work: a 503, then a dropped
        connection, alternately, so a client meets both kinds of transient failure."""
        if rate <= 0 or self.rng.random() >= rate:
            return None
        self._transient_count += 1
        if self._transient_count % 2:
            return Fault(None, "status", status=503, body=error_body(503, "Transient failure"))
        return Fault(None, "drop")
