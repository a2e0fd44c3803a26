"""Everything a history may draw from the provider's side: one-shot faults and lasting switches.

Faults cover every kind in :data:`raif_batches.emulator.faults.KINDS` on every endpoint where it
means something (a ``raw`` HTML/empty/list body, ``accept_then_raw``, ``accept_then_drop``,
5xx, 429, 404, a delay past the read timeout, truncated bodies, repeated and overlapping pages).
Switches are the emulator's configuration quirks (error shapes, the last page token, reads
without ``state``, results that lag or never come, the cancel revert, slow progress, transient
failures). The settings below keep every wait of the product short, so a history settles in
seconds of real time, while keeping each wait longer than the one it must outlast (the lease
outlasts a request, the reconcile wait outlasts a read timeout).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from raif_batches.emulator import Fault

CONNECT_TIMEOUT, READ_TIMEOUT = 1.0, 1.0
#: The product's settings in every history (in this process and in the real processes).
SETTINGS: dict[str, Any] = {
    "RETRY": {"MAX_ATTEMPTS": 4, "BACKOFF_BASE": 0.01, "BACKOFF_MAX": 0.05, "MAX_TOTAL_SECONDS": 4},
    "REQUEST_TIMEOUT": (CONNECT_TIMEOUT, READ_TIMEOUT),
    "RECONCILE_AFTER_SECONDS": READ_TIMEOUT + 0.5,
    "CANCEL_GRACE_SECONDS": 1.0,
    "LEASE_SECONDS": 4.0,
    "POLL_INTERVAL": 60,
    "RESULTS_PAGE_SIZE": 2,  # several pages per batch, so page faults have pages to bend
}
#: Emulator seconds after a cancel when reverted lines flip back; shorter than the grace, so a
#: host that honours the grace on a true clock never trusts counts that are about to change.
CANCEL_REVERT_AFTER = 0.5
PAST_TIMEOUT = READ_TIMEOUT + 0.4

HTML = b"<html><body><h1>502 Bad Gateway</h1></body></html>"


@dataclass(frozen=True)
class FaultRecipe:
    """One fault, named for the tally and for the shrunk history."""

    name: str
    endpoint: str | None
    kind: str
    status: int = 500
    times: int = 1
    retry_after: float | None = None
    delay: float = 0.0
    raw_body: bytes = b""
    content_type: str = "application/json"

    def build(self) -> Fault:
        return Fault(
            self.endpoint,
            self.kind,
            status=self.status,
            times=self.times,
            retry_after=self.retry_after,
            delay=self.delay,
            raw_body=self.raw_body,
            content_type=self.content_type,
        )

    def __repr__(self) -> str:  # what Hypothesis prints in a shrunk history
        return f"<{self.name}>"


ENDPOINTS = (
    "create_batch",
    "get_batch",
    "list_results",
    "upload_file",
    "cancel_batch",
    "list_batches",
    None,  # whichever call comes next
)


@dataclass(frozen=True)
class Template:
    """A fault without its endpoint; a history draws the two apart, so that each kind and each
    endpoint is met often even in a short run."""

    name: str
    kind: str
    status: int = 500
    times: int = 1
    retry_after: float | None = None
    delay: float = 0.0
    raw_body: bytes = b""
    content_type: str = "application/json"

    def on(self, endpoint: str | None) -> FaultRecipe:
        where = endpoint or "the next call"
        return FaultRecipe(
            f"{self.name} on {where}",
            endpoint,
            self.kind,
            status=self.status,
            times=self.times,
            retry_after=self.retry_after,
            delay=self.delay,
            raw_body=self.raw_body,
            content_type=self.content_type,
        )

    def __repr__(self) -> str:
        return f"<{self.name}>"


TEMPLATES: list[Template] = [
    Template("200 HTML", "raw", 200, raw_body=HTML, content_type="text/html"),
    Template("accept then drop", "accept_then_drop"),
    Template(
        "accept then 200 HTML", "accept_then_raw", 200, raw_body=HTML, content_type="text/html"
    ),
    Template("delay past timeout", "latency", delay=PAST_TIMEOUT),
    Template("200 empty", "raw", 200),
    Template("200 JSON list", "raw", 200, raw_body=b"[]"),
    Template("200 {}", "raw", 200, raw_body=b"{}"),
    Template("accept then 200 empty", "accept_then_raw", 200),
    Template("accept then 200 {}", "accept_then_raw", 200, raw_body=b"{}"),
    Template("truncate", "truncate"),
    Template("500", "status", 500),
    Template("503 x3", "status", 503, times=3),
    Template("429", "status", 429, retry_after=0.05),
    Template("drop", "drop"),
    Template("502 HTML", "raw", 502, raw_body=HTML, content_type="text/html"),
    Template("400", "status", 400),
    Template("404 x2", "status", 404, times=2),
    Template("410 x9", "status", 410, times=9),
    Template("repeat page", "repeat_page"),
    Template("overlap page", "overlap_page"),
]

FAULTS: list[FaultRecipe] = [t.on(e) for t in TEMPLATES for e in ENDPOINTS]


@dataclass(frozen=True)
class Switch:
    """A lasting quirk of the provider: sets emulator config fields until the history settles.
    ``pick`` (when set) chooses the field's value from the custom ids the history created."""

    name: str
    values: dict[str, Any]
    pick: Callable[[list[str], int], dict[str, Any]] | None = None

    def apply(self, config: Any, custom_ids: list[str], draw: int) -> None:
        values = dict(self.values)
        if self.pick is not None:
            values.update(self.pick(custom_ids, draw))
        for key, value in values.items():
            setattr(config, key, value)

    def __repr__(self) -> str:
        return f"<{self.name}>"


def _missing(ids: list[str], draw: int) -> dict[str, Any]:
    return {"missing_result_ids": {ids[draw % len(ids)]} if ids else set()}


SWITCHES: list[Switch] = [
    Switch("error shape object", {"error_shape": "object"}),
    Switch("error shape error_message", {"error_shape": "error_message"}),
    Switch("last page token empty string", {"pagination_end": ""}),
    Switch("next 3 reads omit state", {"omit_state_reads": 3}),
    Switch("a result lags behind the counters", {}, pick=_missing),
    Switch("cancel reverts 2 lines", {"cancel_revert_count": 2}),
    Switch("one line per read", {"requests_per_read": 1}),
    Switch("one line per 5 emulator seconds", {"seconds_per_request": 5.0}),
    Switch("transient failures 20%", {"transient_failure_rate": 0.2}),
    Switch("validation takes 2 reads", {"validation_reads": 2}),
    Switch("rfc3339 times", {"time_format": "rfc3339"}),
]
