"""The provider interface: the wire hooks a provider implements, and what they return.

A provider module (``providers/xai.py``) subclasses :class:`BatchStrategy` and writes wire code
only: build a request line, upload the input, create, find, get and cancel a provider batch,
page through results, parse a completion. What the provider says comes back normalised in the
dataclasses below (:class:`BatchSnapshot`, :class:`BatchListing`, :class:`ResultEntry`,
:class:`ParsedCompletion`), with its raw payload beside it.

Everything else (transactions, row locks, leases, status decisions, results) belongs to
:mod:`raif_batches.lifecycle`, which calls these hooks with no transaction open.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from ..exceptions import ProviderError

if TYPE_CHECKING:
    from ..models import ModelCompletion, ModelCompletionBatch

#: The life-of-a-batch functions that were methods of this class once; a provider that defines
#: one would expect it to be called, and it never would be.
LIFECYCLE_NAMES = frozenset(
    {
        "submit",
        "reconcile_due_at",
        "look_up_names",
        "iter_lines",
        "lock",
        "release",
        "fetch_status",
        "apply_snapshot",
        "cancel",
        "fetch_results",
        "apply_result_page",
        "finish_results",
        "result_row",
        "price",
    }
)


# --- Normalised snapshots: what any provider says, in one shape ---------------------------


@dataclass(frozen=True)
class BatchSnapshot:
    """What the provider said about a batch, normalised, with the raw payload beside it.

    ``status`` is the provider's own status mapped to a normalised one (``submitted``,
    ``in_progress``, ``cancelling``, ``ended``, ``canceled``, ``expired``, ``failed``) by a
    provider that has a status field; ``None`` for one that has none (xAI), whose status is
    derived from the counters. ``created_at`` is the provider's time of creation, when it says.
    """

    provider_batch_id: str
    name: str = ""
    counts: dict[str, int] | None = None  # {"total","pending","succeeded","failed","cancelled"}
    status: str | None = None
    created_at: datetime | None = None
    rejection: str | None = None  # the provider refused or killed the batch, with this message
    cancelled_at: datetime | None = None
    expires_at: datetime | None = None
    input_file_id: str = ""
    raw: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ParsedCompletion:
    """A chat completion, as parsed from the provider's payload."""

    text: str
    tool_calls: list[Any] | None
    finish_reason: str
    prompt_tokens: int | None
    completion_tokens: int | None
    total_tokens: int | None
    reasoning_tokens: int | None
    cached_tokens: int | None
    cost_ticks: int | None
    payload: dict[str, Any]
    #: Input tokens written to the prompt cache (Anthropic), part of ``prompt_tokens``; the
    #: part of them written to the one-hour cache, billed at its own rate.
    cache_write_tokens: int | None = None
    cache_write_1h_tokens: int | None = None
    #: Whether ``reasoning_tokens`` are already counted in ``completion_tokens`` (OpenAI,
    #: Anthropic) rather than on top of them (xAI).
    reasoning_included: bool = False

    @property
    def billed_output_tokens(self) -> int:
        # Reasoning tokens are billed at the completion rate.
        if self.reasoning_included:
            return self.completion_tokens or 0
        return (self.completion_tokens or 0) + (self.reasoning_tokens or 0)


@dataclass(frozen=True)
class LostCreate:
    """A create whose answer was lost, as the provider's list can be searched for it.

    Providers that carry a name (xAI) or metadata (OpenAI) find it by ``name``; one that carries
    neither (Anthropic) can only match the time of the call (``attempted_at`` to ``ended_at``,
    database clock; ``ended_at`` is None when the worker died during the call) and
    ``request_count``.
    """

    name: str
    request_count: int
    attempted_at: datetime
    ended_at: datetime | None = None


@dataclass(frozen=True)
class BatchListing:
    """What one read of the provider's batch list says about some unique names.

    ``found`` maps a wanted name to every provider batch carrying it (or, for a provider
    that cannot name its batches, every candidate that fits the lost create). ``complete`` is
    False when the read stopped before the end of the list (a bound, a fault): a name not found
    then proves nothing.
    """

    names: frozenset[str]
    found: Mapping[str, tuple[BatchSnapshot, ...]] = field(default_factory=dict)
    complete: bool = True
    stopped_because: str = ""
    error: ProviderError | None = None


@dataclass(frozen=True)
class RecentBatches:
    """What one read of the provider's list says about its recent batches, by id."""

    snapshots: Mapping[str, BatchSnapshot]
    complete: bool = True


@dataclass(frozen=True)
class ResultEntry:
    """One line's outcome: a completion, or the provider's error message.

    ``not_run`` says that the line never ran: ``"cancelled"`` (the batch was cancelled first)
    or ``"expired"`` (its window closed first); such a line is not billed.
    """

    custom_id: str
    completion: ParsedCompletion | None = None
    error: str | None = None
    not_run: str | None = None


def collect_recent(
    pages: Iterable[Sequence[BatchSnapshot]], created_after: datetime
) -> RecentBatches:
    """Read a newest-first list's pages until one is wholly older than ``created_after``.

    Bounded by RECONCILE_MAX_PAGES and RECONCILE_MAX_SECONDS; a read stopped by a bound (or a
    page without creation times) says so with ``complete=False``.
    """
    from time import monotonic

    from ..conf import get_setting

    max_pages = int(get_setting("RECONCILE_MAX_PAGES"))
    max_seconds = float(get_setting("RECONCILE_MAX_SECONDS"))
    started = monotonic()
    found: dict[str, BatchSnapshot] = {}
    for number, page in enumerate(pages, start=1):
        older = 0
        for snapshot in page:
            if snapshot.provider_batch_id:
                found.setdefault(snapshot.provider_batch_id, snapshot)
            if snapshot.created_at is not None and snapshot.created_at < created_after:
                older += 1
        if page and older == len(page):
            return RecentBatches(found)
        if number >= max_pages or monotonic() - started >= max_seconds:
            return RecentBatches(found, complete=False)
    return RecentBatches(found)


class BatchStrategy:
    """One provider's wire format. Subclasses set ``provider`` and implement the wire hooks.

    The life of a batch (:mod:`raif_batches.lifecycle`) calls these hooks outside any
    transaction; a hook talks to the provider and parses its answers, and never writes to the
    database. The lifecycle's functions are not methods here, so that no subclass can change a
    transaction; a subclass that still defines one of their old names is refused when it is
    defined (:data:`LIFECYCLE_NAMES`).
    """

    provider: ClassVar[str] = ""
    #: The model ``create_batch`` uses when none is named.
    default_model: ClassVar[str] = ""
    max_requests_per_batch: ClassVar[int] = 50_000
    max_line_bytes: ClassVar[int] = 25 * 1024 * 1024
    max_file_bytes: ClassVar[int] = 200 * 1024 * 1024
    #: Longest custom id, and the pattern every custom id must match (``None``: any text).
    max_custom_id_length: ClassVar[int] = 255
    custom_id_pattern: ClassVar[str | None] = None
    #: True when a lost create is found by a unique name or metadata: every listed batch that
    #: carries it is ours. False when the list can only offer candidates (same time and size),
    #: which may be someone else's: several of them are shown to the operator, never guessed.
    reconcile_by_name: ClassVar[bool] = True
    #: True when a terminal batch's results may lag behind its counters (xAI): the harvest then
    #: waits for what the counters report. False when the results are complete once the batch
    #: has ended and its counters may lie (OpenAI, Anthropic: the files are the truth).
    results_lag_counters: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        overridden = sorted(LIFECYCLE_NAMES & vars(cls).keys())
        if overridden:
            raise TypeError(
                f"{cls.__qualname__} defines {', '.join(overridden)}: the life of a batch is "
                "raif_batches.lifecycle's and cannot be overridden by a provider; implement "
                "the wire hooks only."
            )

    # -- wire hooks ---------------------------------------------------------------------------

    @classmethod
    def check_request(cls, request: Mapping[str, Any]) -> str | None:
        """What this provider would refuse in one chat-style request (its ``create_batch``
        check beyond the common one), as a sentence naming the field; None when acceptable.

        A check of the request alone: on PostgreSQL it runs while the batch's rows stream into
        a ``COPY``, when the connection serves nothing else (a query would raise
        :class:`~raif_batches.bulk.StatementDuringCopy`)."""
        return None

    def build_line(self, batch: ModelCompletionBatch, completion: ModelCompletion) -> bytes:
        raise NotImplementedError

    def upload_input(self, batch: ModelCompletionBatch, lines: Iterable[bytes]) -> str:
        """Upload the request lines; return the provider's file id."""
        raise NotImplementedError

    def create_provider_batch(self, batch: ModelCompletionBatch) -> BatchSnapshot:
        """Create the provider batch (named ``batch.provider_batch_name``). Sent once."""
        raise NotImplementedError

    #: True when the provider lists batches newest first (documented): a read of the list may
    #: then stop once it reaches batches older than the oldest create attempt.
    batch_list_newest_first: ClassVar[bool] = False

    def find_provider_batches(
        self, lost: Collection[LostCreate], *, created_after: datetime | None
    ) -> BatchListing:
        """Look many lost creates up in one read of the provider's batch list.

        Stop as soon as every name is found (``reconcile_by_name``), or
        (``batch_list_newest_first``) when the list reaches batches created before
        ``created_after``; bound the read by RECONCILE_MAX_PAGES and RECONCILE_MAX_SECONDS and
        say so (``complete=False``).
        """
        raise NotImplementedError

    def list_recent_batches(self, created_after: datetime) -> RecentBatches | None:
        """Every provider batch created after ``created_after``, read from the provider's list
        (newest first) in as few calls as it allows, for polling many batches at once; None
        when the list cannot serve that (no documented order, as at xAI). Bounded by
        RECONCILE_MAX_PAGES and RECONCILE_MAX_SECONDS: a read stopped by a bound returns what
        it read (``complete=False``), and the batches it did not reach are read one by one."""
        return None

    def get_provider_batch(self, provider_batch_id: str) -> BatchSnapshot:
        raise NotImplementedError

    def cancel_provider_batch(self, provider_batch_id: str) -> BatchSnapshot:
        raise NotImplementedError

    def iter_result_pages(self, provider_batch_id: str) -> Iterator[list[ResultEntry]]:
        raise NotImplementedError

    def parse_completion(self, payload: dict[str, Any]) -> ParsedCompletion:
        raise NotImplementedError
