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

from collections.abc import Collection, Iterable, Iterator, Mapping
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
class BatchListPage:
    """One page of the provider's batch list: its batches, and the cursor that reads the next
    page (``list_batches_page(after=next_after)``), None at the end of the list."""

    snapshots: list[BatchSnapshot]
    next_after: str | None = None


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


class ResultPage(list[ResultEntry]):
    """A page of a batch's results that also counts the entries it skipped as unreadable (not
    JSON, not an object, no custom id): some of the batch's lines may have been among them, so
    the harvest reads again before failing lines it did not see. A plain list counts none."""

    unreadable: int = 0


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

    #: Batches on one page of the list at most (its largest ``limit``), when the list is newest
    #: first and its cursor is a batch id (``list_batches_page``): a poll then reads the list
    #: in stretches at once, each after one of the batches it polls. 0: not offered.
    list_page_size: ClassVar[int] = 0

    def list_batches_page(self, after: str | None) -> BatchListPage:
        """One page of the newest-first batch list, of ``list_page_size`` batches: the newest,
        or those listed after the batch ``after`` (any batch id, the list's cursor). Used to
        poll many batches in a few calls (:func:`raif_batches.lifecycle.status.read_listed`)."""
        raise NotImplementedError

    def get_provider_batch(self, provider_batch_id: str) -> BatchSnapshot:
        raise NotImplementedError

    def cancel_provider_batch(self, provider_batch_id: str) -> BatchSnapshot:
        raise NotImplementedError

    def iter_result_pages(self, provider_batch_id: str) -> Iterator[list[ResultEntry]]:
        raise NotImplementedError

    def iter_result_pages_after(self, ended: BatchSnapshot) -> Iterator[list[ResultEntry]]:
        """``iter_result_pages`` given the answer in which the provider said the batch ended
        (read moments ago), which a provider may use to save a call; by default the same."""
        return self.iter_result_pages(ended.provider_batch_id)

    def parse_completion(self, payload: dict[str, Any]) -> ParsedCompletion:
        raise NotImplementedError
