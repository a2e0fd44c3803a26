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
    """What the provider said about a batch, normalised, with the raw payload beside it."""

    provider_batch_id: str
    name: str = ""
    counts: dict[str, int] | None = None  # {"total","pending","succeeded","failed","cancelled"}
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

    @property
    def billed_output_tokens(self) -> int:
        # Reasoning tokens are billed at the completion rate.
        return (self.completion_tokens or 0) + (self.reasoning_tokens or 0)


@dataclass(frozen=True)
class BatchListing:
    """What one read of the provider's batch list says about some unique names.

    ``found`` maps a wanted name to every provider batch carrying it. ``complete`` is False
    when the read stopped before the end of the list (a bound, a fault): a name not found then
    proves nothing.
    """

    names: frozenset[str]
    found: Mapping[str, tuple[BatchSnapshot, ...]] = field(default_factory=dict)
    complete: bool = True
    stopped_because: str = ""
    error: ProviderError | None = None


@dataclass(frozen=True)
class ResultEntry:
    """One line's outcome: a completion, or the provider's error message."""

    custom_id: str
    completion: ParsedCompletion | None = None
    error: str | None = None


class BatchStrategy:
    """One provider's wire format. Subclasses set ``provider`` and implement the wire hooks.

    The life of a batch (:mod:`raif_batches.lifecycle`) calls these hooks outside any
    transaction; a hook talks to the provider and parses its answers, and never writes to the
    database. The lifecycle's functions are not methods here, so that no subclass can change a
    transaction; a subclass that still defines one of their old names is refused when it is
    defined (:data:`LIFECYCLE_NAMES`).
    """

    provider: ClassVar[str] = ""
    max_requests_per_batch: ClassVar[int] = 50_000
    max_line_bytes: ClassVar[int] = 25 * 1024 * 1024
    max_file_bytes: ClassVar[int] = 200 * 1024 * 1024

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
        self, names: Collection[str], *, created_after: datetime | None
    ) -> BatchListing:
        """Look many unique names up in one read of the provider's batch list.

        Stop as soon as every name is found, or (``batch_list_newest_first``) when the list
        reaches batches created before ``created_after``; bound the read by
        RECONCILE_MAX_PAGES and RECONCILE_MAX_SECONDS and say so (``complete=False``).
        """
        raise NotImplementedError

    def get_provider_batch(self, provider_batch_id: str) -> BatchSnapshot:
        raise NotImplementedError

    def cancel_provider_batch(self, provider_batch_id: str) -> BatchSnapshot:
        raise NotImplementedError

    def iter_result_pages(self, provider_batch_id: str) -> Iterator[list[ResultEntry]]:
        raise NotImplementedError

    def parse_completion(self, payload: dict[str, Any]) -> ParsedCompletion:
        raise NotImplementedError
