"""The provider-agnostic life of a batch: submit, read status, cancel, fetch and apply results.

:class:`BatchStrategy` owns the flow and every state change; a provider module overrides only
the wire hooks (build a line, upload, create, find, get, cancel, page through results, parse a
completion). The rules it keeps:

* every change to a batch happens in ``transaction.atomic()`` on the row taken with
  ``select_for_update()``, and no transaction is open across an HTTP call;
* the create call is sent at most once per claim and never retried blindly: a create whose
  answer is anything but a clear refusal (lost, late, unreadable, without an id) leaves the batch
  ``submitting``, and it is reconciled by its unique name once RECONCILE_AFTER_SECONDS have
  passed since the call ended; only a complete read of the provider's list that does not show
  it lets the batch be created again;
* the lease fences the create: it is re-checked under the row lock and renewed right before the
  call is sent, and every lease and wait is read from the database's clock, never a host's;
* a second provider batch for one batch, however it came about, is cancelled at once and
  recorded on the batch (``duplicate_provider_batches``);
* :func:`next_status` is the one place that decides a batch's next status;
* a result is applied only to a completion that is still pending (or, for a success, to one
  the provider's error for the same id failed earlier in the harvest), so applying a page twice
  changes nothing, and results are fetched whatever the batch's end;
* a harvest never ends short of the outcomes the provider's counters report: it is read again
  later, with backoff, up to ``RESULTS_WAIT_SECONDS``; one line that cannot be stored is
  cleaned or failed alone (:mod:`raif_batches.storable`);
* decisions in time (cancel grace, waits for results) read the database clock.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import uuid
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar

from django.db import DatabaseError, connection, transaction
from django.db.models import Count, Q, Sum
from django.utils import timezone

from .. import signals
from ..bulk import update_from_values
from ..clock import db_now
from ..conf import get_setting, request_timeout
from ..exceptions import (
    AmbiguousSubmission,
    BatchStateError,
    InvalidBatchRequest,
    ProviderAuthenticationError,
    ProviderError,
    ProviderNotFound,
    ProviderRejected,
    ProviderUnavailable,
)
from ..models import (
    TERMINAL_STATUSES,
    BatchStatus,
    CompletionStatus,
    ModelCompletion,
    ModelCompletionBatch,
)
from ..pricing import ModelPrice, completion_cost, price_for
from ..storable import CLEANED_KEY, clean_json, clean_text, cost_fits, storable_count

logger = logging.getLogger("raif_batches")

#: Identifies this process in leases; threads of one process share it (only one does DB work).
WORKER_ID = f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

FAILURE_TEXT_LIMIT = 255
#: A batch's own failure, set when it ended; a later note (why a read or harvest did not get
#: through) must not hide it.
OWN_FAILURE_KINDS = frozenset(
    {"rejected by provider", "expired", "max age exceeded", "canceled before submission"}
)
#: Failure kinds of a line that came from the provider's error entry: a success for the same
#: line, read later in the same harvest, replaces them (results outrank errors).
PROVIDER_ERROR_KINDS = ("provider error", "request cancelled")
#: Stored outcomes that the provider's counters do not count as succeeded or failed.
UNCOUNTED_KINDS = ("request cancelled",)
#: Longest wait between two reads of results that lag behind the counters.
RESULTS_BACKOFF_MAX = 900.0
STRUCTURED_FORMATS = frozenset({"json_object", "json_schema"})

# Columns written when a result is applied (same set for success and failure).
RESULT_FIELDS = (
    "status",
    "raw_response",
    "response_payload",
    "response_tool_calls",
    "response_json",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "reasoning_tokens",
    "cached_tokens",
    "prompt_token_cost",
    "output_token_cost",
    "total_cost",
    "failure_error",
    "failure_reason",
    "completed_at",
    "failed_at",
)


#: How far before the oldest create attempt a provider batch may be dated (clock differences
#: between the provider and the database), for providers whose list is sorted newest first.
RECONCILE_LISTING_MARGIN = timedelta(minutes=10)


class BatchBusy(BatchStateError):
    """Another worker holds this batch's lease."""


class DuplicateSubmission(BatchStateError):
    """A second provider batch was found for a batch; it was cancelled and recorded."""


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


# --- The one place that decides a batch's next status ---------------------------------------


def next_status(
    batch: ModelCompletionBatch,
    *,
    counts: dict[str, int],
    rejection: str | None,
    provider_cancelled_at: datetime | None,
    now: datetime,
) -> str:
    """Decide a batch's status from what the provider said and what we know.

    Results outrank cancellation and expiry: a cancelled batch is trusted only once its counts
    have stood still for the grace period counted from the cancel, because xAI's counters can
    flip from cancelled back to succeeded after a cancel. A rejection (``cancel_by_xai_message``)
    that arrives while lines are still pending or just finished is waited out the same way,
    counted from when it was first seen (``batch.rejected_at``); a file refused before any line
    ran fails at once.
    """
    if batch.status in TERMINAL_STATUSES:
        return batch.status
    pending = _count(counts, "pending")
    total = _count(counts, "total")
    if rejection or batch.rejected_at is not None:
        finished = _count(counts, "succeeded") + _count(counts, "failed")
        if not finished and not pending:
            return BatchStatus.FAILED
        grace = timedelta(seconds=float(get_setting("CANCEL_GRACE_SECONDS")))
        seen = batch.rejected_at or now
        stable_since = max(seen, batch.counts_changed_at or seen)
        if pending == 0 and now - stable_since >= grace:
            return BatchStatus.FAILED
        return BatchStatus.CANCELLING
    cancel_started = batch.cancel_requested_at or provider_cancelled_at
    if cancel_started is not None:
        grace = timedelta(seconds=float(get_setting("CANCEL_GRACE_SECONDS")))
        stable_since = max(cancel_started, batch.counts_changed_at or cancel_started)
        if total and pending == 0 and now - stable_since >= grace:
            if batch.cancel_reason == "deadline":
                return BatchStatus.EXPIRED
            return BatchStatus.CANCELED if counts.get("cancelled") else BatchStatus.ENDED
        if not total and now - cancel_started >= grace:
            return BatchStatus.CANCELED  # cancelled before xAI even validated the file
        return BatchStatus.CANCELLING
    if total == 0:
        return BatchStatus.SUBMITTED  # the provider is still validating the file
    if pending > 0:
        return BatchStatus.IN_PROGRESS
    if batch.expires_at is not None and now >= batch.expires_at and counts.get("cancelled"):
        return BatchStatus.EXPIRED
    return BatchStatus.ENDED


def _count(counts: dict[str, Any] | None, key: str) -> int:
    """A counter as a non-negative int, whatever the provider put there."""
    try:
        return max(int((counts or {}).get(key) or 0), 0)
    except (TypeError, ValueError, OverflowError):
        return 0


# --- The strategy ---------------------------------------------------------------------------


class BatchStrategy:
    """Template for one provider. Subclasses set ``provider`` and implement the wire hooks."""

    provider: ClassVar[str] = ""
    max_requests_per_batch: ClassVar[int] = 50_000
    max_line_bytes: ClassVar[int] = 25 * 1024 * 1024
    max_file_bytes: ClassVar[int] = 200 * 1024 * 1024

    def __init__(self) -> None:
        self._prices: dict[str, ModelPrice | None] = {}

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

    # -- leases -------------------------------------------------------------------------------

    @staticmethod
    def lock(pk: int) -> ModelCompletionBatch:
        """The batch's row, locked until the surrounding transaction ends."""
        return ModelCompletionBatch.objects.locked().get(pk=pk)

    @staticmethod
    def _claim(batch: ModelCompletionBatch, worker: str, now: datetime) -> None:
        """Take or renew the lease on a locked row; ``now`` is the database clock's time."""
        if batch.leased_to_other(worker, now):
            until = batch.claimed_until
            raise BatchBusy(
                f"Batch {batch.pk} is being worked on by {batch.claimed_by} "
                f"until {until:%Y-%m-%d %H:%M:%S}."
                if until is not None
                else f"Batch {batch.pk} is being worked on by {batch.claimed_by}."
            )
        batch.claim(worker, now, float(get_setting("LEASE_SECONDS")))

    @staticmethod
    def release(pk: int, worker: str = WORKER_ID) -> None:
        ModelCompletionBatch.objects.filter(pk=pk, claimed_by=worker).update(
            claimed_by="", claimed_until=None
        )

    # -- submit -------------------------------------------------------------------------------

    def submit(
        self,
        batch: ModelCompletionBatch,
        *,
        worker: str = WORKER_ID,
        listing: BatchListing | None = None,
    ) -> ModelCompletionBatch:
        """Submit a pending batch, or resume one whose submission was interrupted.

        Crash-safe: the intent (``submitting``) is committed before any network call, the
        uploaded file id is kept, and the moment of the create call is recorded before it is
        sent and again when it ends. A batch with an unresolved create attempt is looked up by
        its unique name once the wait has passed (:meth:`reconcile_due_at`) and adopted; only
        when a complete read of the provider's list has not found it is it created again.
        ``listing`` is a read of that list made for the whole run (:meth:`look_up_names`);
        without one covering this batch, the batch reads the list itself.
        """
        with transaction.atomic():
            locked = self.lock(batch.pk)
            if locked.status not in (BatchStatus.PENDING, BatchStatus.SUBMITTING):
                raise BatchStateError(
                    f"Batch {locked.pk} is {locked.status}; only pending batches can be submitted."
                )
            self._claim(locked, worker, db_now())
            if locked.status == BatchStatus.PENDING:
                if not locked.completions.exists():
                    raise BatchStateError(f"Batch {locked.pk} has no requests to submit.")
                locked.status = BatchStatus.SUBMITTING
            locked.save(update_fields=["status", "claimed_by", "claimed_until"])
        try:
            return self._submit_claimed(locked, worker, listing)
        finally:
            self.release(locked.pk, worker)

    @staticmethod
    def reconcile_due_at(batch: ModelCompletionBatch) -> datetime | None:
        """When a batch whose create went unanswered may be looked up by name (database clock).

        The wait counts from the end of the create call: a provider may act on a create after
        our client gave up on its answer. While the call is in flight, or when its worker died
        during it, the end is taken as the start plus the whole connect + read timeout. None
        when no create is unresolved.
        """
        if batch.create_attempted_at is None:
            return None
        ended = batch.create_ended_at
        if ended is None:
            connect, read = request_timeout()
            ended = batch.create_attempted_at + timedelta(seconds=connect + read)
        return ended + timedelta(seconds=float(get_setting("RECONCILE_AFTER_SECONDS")))

    def look_up_names(self, batches: Sequence[ModelCompletionBatch]) -> BatchListing:
        """One read of the provider's batch list for every batch awaiting reconciliation.

        A rejected key is raised; any other provider fault comes back as an incomplete listing,
        so that no batch is created again on its evidence.
        """
        names = frozenset(batch.provider_batch_name for batch in batches)
        attempts = [batch.create_attempted_at for batch in batches if batch.create_attempted_at]
        created_after = min(attempts) - RECONCILE_LISTING_MARGIN if attempts else None
        try:
            return self.find_provider_batches(names, created_after=created_after)
        except ProviderAuthenticationError:
            raise
        except ProviderError as error:
            return BatchListing(
                names=names, complete=False, stopped_because=str(error), error=error
            )

    def _submit_claimed(
        self, batch: ModelCompletionBatch, worker: str, listing: BatchListing | None
    ) -> ModelCompletionBatch:
        due = self.reconcile_due_at(batch)
        if due is not None:
            if db_now() < due:
                logger.info(
                    "Batch %s: create unresolved; looking it up by name at %s", batch.pk, due
                )
                return batch
            if listing is None or batch.provider_batch_name not in listing.names:
                listing = self.look_up_names([batch])
            matches = listing.found.get(batch.provider_batch_name, ())
            if matches:
                return self._adopt(batch, matches, worker)
            if listing.error is not None or not listing.complete:
                error = listing.error or ProviderUnavailable(
                    f"the provider's batch list was not read to its end "
                    f"({listing.stopped_because}); batch {batch.provider_batch_name} is not "
                    "created again until a complete read shows it does not exist"
                )
                self._note_failure(batch.pk, error)  # still submitting; the reason is shown
                raise error
        try:
            if not batch.input_file_id:
                file_id = self.upload_input(batch, self.iter_lines(batch))
                with transaction.atomic():
                    locked = self._locked_claim(batch.pk, worker)
                    locked.input_file_id = file_id
                    locked.save(update_fields=["input_file_id"])
                batch.input_file_id = file_id
        except (ProviderError, InvalidBatchRequest) as error:
            # Nothing was created at the provider: back to pending, with the reason shown.
            self._abandon_submission(batch, error, reset_file=False)
            raise
        # The fence: under the row lock, right before the create is sent, the lease must still
        # be this worker's; it is renewed to cover the whole call.
        with transaction.atomic():
            locked = self._locked_claim(batch.pk, worker)
            now = db_now()
            locked.create_attempted_at = now
            locked.create_ended_at = None
            self._claim(locked, worker, now)
            locked.save(
                update_fields=[
                    "create_attempted_at",
                    "create_ended_at",
                    "claimed_by",
                    "claimed_until",
                ]
            )
        batch.create_attempted_at = now
        batch.create_ended_at = None
        try:
            snapshot = self.create_provider_batch(batch)
        except ProviderAuthenticationError as error:
            self._abandon_submission(batch, error, reset_file=False)
            raise
        except (ProviderNotFound, ProviderRejected) as error:
            if not _clear_refusal(error):
                raise self._ambiguous(batch.pk, error) from error
            if isinstance(error, ProviderNotFound):
                # The uploaded file is gone (expired): upload again next time.
                self._abandon_submission(batch, error, reset_file=True)
            else:
                # The provider refused this batch for good (e.g. an unsupported model).
                self._fail_submission(batch, error)
            raise
        except AmbiguousSubmission as error:
            self._note_failure(batch.pk, error, create_ended=True)
            raise
        except Exception as error:
            # An unreadable answer, a body of the wrong shape, a fault in reading it: the create
            # may have happened, so it is never taken for a refusal.
            raise self._ambiguous(batch.pk, error) from error
        except BaseException:
            self._stamp_create_end(batch.pk)  # the process is stopping; the call has ended
            raise
        return self._record_submission(batch, snapshot, worker)

    def _ambiguous(self, pk: int, error: Exception) -> AmbiguousSubmission:
        """Record that a create ended without a usable answer; the batch stays submitting."""
        ambiguous = AmbiguousSubmission(
            f"the create call's answer could not be used ({type(error).__name__}: {error}); "
            "it may have created the batch"
        )
        self._note_failure(pk, ambiguous, create_ended=True)
        return ambiguous

    def _locked_claim(self, pk: int, worker: str) -> ModelCompletionBatch:
        """The locked row, provided this worker still holds the submission's lease.

        Claiming writes ``claimed_by``, so while it still names this worker nobody else has
        claimed the batch since, even if the lease's time ran out.
        """
        locked = self.lock(pk)
        if (
            locked.claimed_by != worker
            or locked.status != BatchStatus.SUBMITTING
            or locked.provider_batch_id
        ):
            raise BatchBusy(f"Batch {pk}: lost the submission lease to {locked.claimed_by!r}.")
        return locked

    def _adopt(
        self, batch: ModelCompletionBatch, matches: Sequence[BatchSnapshot], worker: str
    ) -> ModelCompletionBatch:
        """Adopt the provider batch an unanswered create made; cancel any second one."""
        known = {entry.get("provider_batch_id") for entry in batch.duplicate_provider_batches}
        candidates = [m for m in matches if m.provider_batch_id not in known] or list(matches)
        # A batch we cancelled ourselves is never the one to keep.
        keep = next((m for m in candidates if m.cancelled_at is None), candidates[0])
        logger.warning(
            "Batch %s: adopting provider batch %s created by an unanswered call",
            batch.pk,
            keep.provider_batch_id,
        )
        recorded = self._record_submission(batch, keep, worker, adopted=True)
        for other in matches:
            if other.provider_batch_id not in (recorded.provider_batch_id, *known):
                self._record_duplicate(
                    batch.pk, other.provider_batch_id, "a second provider batch of the same name"
                )
        return recorded

    def _record_submission(
        self,
        batch: ModelCompletionBatch,
        snapshot: BatchSnapshot,
        worker: str,
        *,
        adopted: bool = False,
    ) -> ModelCompletionBatch:
        """Store the provider batch a create made (or reconciliation found).

        An answer without an id is ambiguous. A second provider batch for a batch that already
        has one, or for a batch that ended or vanished meanwhile, is cancelled at once and
        recorded: it would be paid for and never read.
        """
        if not snapshot.provider_batch_id:
            error = AmbiguousSubmission(
                "the provider answered the create without a batch id; it may have created the batch"
            )
            self._note_failure(batch.pk, error, create_ended=True)
            raise error
        now = db_now()
        duplicate_of = ""
        try:
            with transaction.atomic():
                locked = self.lock(batch.pk)
                if locked.provider_batch_id == snapshot.provider_batch_id:
                    return locked
                if locked.provider_batch_id or locked.is_terminal:
                    duplicate_of = locked.provider_batch_id or f"none (batch {locked.status})"
                elif adopted and locked.claimed_by != worker:
                    # The lease ran out while the list was read: its new holder reconciles.
                    raise BatchBusy(f"Batch {batch.pk}: lost the lease while reconciling.")
                else:
                    locked.provider_batch_id = snapshot.provider_batch_id
                    locked.input_file_id = snapshot.input_file_id or locked.input_file_id
                    locked.create_ended_at = locked.create_ended_at or now
                    locked.submitted_at = locked.submitted_at or now
                    locked.started_at = locked.started_at or now
                    locked.failure_error = ""
                    locked.failure_reason = ""
                    self._store_snapshot(locked, snapshot, now)
                    locked.save()
                    locked.completions.filter(started_at__isnull=True).update(started_at=now)
                    transaction.on_commit(
                        lambda: signals.batch_submitted.send(
                            sender=ModelCompletionBatch, batch=locked
                        )
                    )
        except ModelCompletionBatch.DoesNotExist:
            # Deleted during the create: nobody would ever read or pay attention to it.
            logger.error(
                "Batch %s was deleted while its create was in flight; cancelling provider batch %s",
                batch.pk,
                snapshot.provider_batch_id,
            )
            try:
                self.cancel_provider_batch(snapshot.provider_batch_id)
            except ProviderError as error:
                logger.error(
                    "Could not cancel orphan provider batch %s: %s",
                    snapshot.provider_batch_id,
                    error,
                )
            raise
        if duplicate_of:
            self._record_duplicate(
                batch.pk,
                snapshot.provider_batch_id,
                f"a create answered after the batch already had provider batch {duplicate_of}",
            )
            raise DuplicateSubmission(
                f"Batch {batch.pk}: the provider made a second batch "
                f"{snapshot.provider_batch_id} beside {duplicate_of}; it was cancelled."
            )
        return locked

    def _record_duplicate(self, pk: int, provider_batch_id: str, why: str) -> None:
        """Record a second provider batch on the batch, cancel it at once, record the outcome.

        Recorded before the cancel is sent, so that a crash in between still leaves the operator
        a trace of the provider batch to cancel.
        """
        logger.error(
            "Batch %s: second provider batch %s (%s); cancelling it", pk, provider_batch_id, why
        )
        entry: dict[str, Any] = {
            "provider_batch_id": provider_batch_id,
            "detected_at": db_now().isoformat(),
            "why": why,
            "cancelled": False,
            "cancel_error": "",
        }
        self._update_duplicate(pk, entry)
        try:
            self.cancel_provider_batch(provider_batch_id)
            entry["cancelled"] = True
        except ProviderError as error:
            logger.error("Batch %s: could not cancel %s: %s", pk, provider_batch_id, error)
            entry["cancel_error"] = error.one_line[:FAILURE_TEXT_LIMIT]
        self._update_duplicate(pk, entry)

    def _update_duplicate(self, pk: int, entry: dict[str, Any]) -> None:
        with transaction.atomic():
            try:
                locked = self.lock(pk)
            except ModelCompletionBatch.DoesNotExist:
                return
            others = [
                e
                for e in locked.duplicate_provider_batches
                if e.get("provider_batch_id") != entry["provider_batch_id"]
            ]
            locked.duplicate_provider_batches = [*others, dict(entry)]
            locked.save(update_fields=["duplicate_provider_batches"])

    def _abandon_submission(
        self,
        batch: ModelCompletionBatch,
        error: ProviderError | InvalidBatchRequest,
        *,
        reset_file: bool,
    ) -> None:
        """Nothing was created by this worker's call: back to pending, with the reason shown.

        Only while the lease is still this worker's: otherwise another worker owns the batch
        and may have a create of its own in flight.
        """
        with transaction.atomic():
            locked = self.lock(batch.pk)
            if (
                locked.status != BatchStatus.SUBMITTING
                or locked.provider_batch_id
                or locked.claimed_by != batch.claimed_by
            ):
                return
            locked.status = BatchStatus.PENDING
            locked.create_attempted_at = None
            locked.create_ended_at = None
            if reset_file:
                locked.input_file_id = ""
            kind = error.kind if isinstance(error, ProviderError) else "invalid request"
            locked.failure_error = kind[:FAILURE_TEXT_LIMIT]
            locked.failure_reason = str(error)
            locked.save()

    def _fail_submission(self, batch: ModelCompletionBatch, error: ProviderError) -> None:
        """The provider refused the batch for good: failed, unless another worker owns it now."""
        with transaction.atomic():
            locked = self.lock(batch.pk)
            if (
                locked.status != BatchStatus.SUBMITTING
                or locked.provider_batch_id
                or locked.claimed_by != batch.claimed_by
            ):
                return
            locked.status = BatchStatus.FAILED
            locked.create_attempted_at = None
            locked.create_ended_at = None
            locked.ended_at = db_now()
            locked.failure_error = error.kind[:FAILURE_TEXT_LIMIT]
            locked.failure_reason = str(error)
            locked.save()

    def _note_failure(self, pk: int, error: ProviderError, *, create_ended: bool = False) -> None:
        """Show why a submission is not moving; with ``create_ended``, stamp the call's end.

        The status stays ``submitting``; a batch recorded or deleted meanwhile is left alone.
        """
        values: dict[str, Any] = {
            "failure_error": error.kind[:FAILURE_TEXT_LIMIT],
            "failure_reason": str(error),
        }
        if create_ended:
            values["create_ended_at"] = db_now()
        ModelCompletionBatch.objects.filter(
            pk=pk, status=BatchStatus.SUBMITTING, provider_batch_id=""
        ).update(**values)

    @staticmethod
    def _stamp_create_end(pk: int) -> None:
        """Best effort while the process stops: the create call ended without an answer."""
        try:
            ModelCompletionBatch.objects.filter(pk=pk, create_ended_at__isnull=True).update(
                create_ended_at=db_now()
            )
        except Exception:  # the database may be what is failing; the wait then covers it
            logger.warning("Batch %s: could not record the end of its create call", pk)

    def iter_lines(self, batch: ModelCompletionBatch) -> Iterator[bytes]:
        """The JSONL lines, streamed from the database in chunks (bounded memory)."""
        completions = (
            ModelCompletion.objects.filter(batch_id=batch.pk)
            .order_by("pk")
            .only(
                "batch_custom_id",
                "messages",
                "temperature",
                "max_tokens",
                "response_format",
                "tools",
                "tool_choice",
                "extra_body",
            )
        )
        for completion in completions.iterator(chunk_size=2000):
            yield self.build_line(batch, completion)

    # -- status -------------------------------------------------------------------------------

    def fetch_status(self, batch: ModelCompletionBatch) -> ModelCompletionBatch:
        """Read the provider's view of the batch and store it."""
        if not batch.provider_batch_id:
            raise BatchStateError(f"Batch {batch.pk} has not been submitted.")
        snapshot = self.get_provider_batch(batch.provider_batch_id)
        return self.apply_snapshot(batch.pk, snapshot)

    def apply_snapshot(
        self, pk: int, snapshot: BatchSnapshot, *, now: datetime | None = None
    ) -> ModelCompletionBatch:
        """Store a snapshot under the row lock. ``now`` (the database clock) may be read once by
        a caller storing many snapshots."""
        now = now or db_now()
        with transaction.atomic():
            locked = self.lock(pk)
            if locked.is_terminal:
                return locked
            self._store_snapshot(locked, snapshot, now)
            locked.save()
        return locked

    def _store_snapshot(
        self, batch: ModelCompletionBatch, snapshot: BatchSnapshot, now: datetime
    ) -> None:
        """Fold a snapshot into a locked batch (the caller saves)."""
        counts = snapshot.counts if snapshot.counts is not None else batch.request_counts
        counts = {key: _count(counts, key) for key in (counts or {})}
        if counts != batch.request_counts or batch.counts_changed_at is None:
            batch.counts_changed_at = now
        batch.request_counts = counts
        # PostgreSQL's jsonb refuses NUL, and no driver encodes a lone surrogate.
        batch.provider_response = clean_json(snapshot.raw)[0]
        if snapshot.expires_at is not None:
            batch.expires_at = snapshot.expires_at
        rejection = clean_text(str(snapshot.rejection))[0] if snapshot.rejection else None
        if rejection and batch.rejected_at is None and not batch.is_terminal:
            # Shown at once, though lines still running are waited for before the batch fails.
            batch.rejected_at = now
            batch.failure_error = "rejected by provider"
            batch.failure_reason = rejection
        status = next_status(
            batch,
            counts=counts,
            rejection=rejection,
            provider_cancelled_at=snapshot.cancelled_at,
            now=now,
        )
        if status == BatchStatus.FAILED and batch.rejected_at is not None:
            batch.failure_error = "rejected by provider"
            batch.failure_reason = (
                rejection or batch.failure_reason or "The provider rejected the batch."
            )
        if status == BatchStatus.EXPIRED and not batch.failure_error:
            batch.failure_error = "expired"
            batch.failure_reason = "The batch expired before every request finished."
        batch.status = status
        if status in TERMINAL_STATUSES:
            batch.ended_at = batch.ended_at or now
            batch.next_poll_at = None
        else:
            interval = float(get_setting("POLL_INTERVAL"))
            if status == BatchStatus.CANCELLING:
                interval = min(interval, float(get_setting("CANCEL_GRACE_SECONDS")))
            batch.next_poll_at = now + timedelta(seconds=interval)

    # -- cancel -------------------------------------------------------------------------------

    def cancel(
        self, batch: ModelCompletionBatch, *, reason: str = "requested"
    ) -> ModelCompletionBatch:
        """Ask the provider to cancel. Results already produced are still fetched later."""
        now = db_now()
        with transaction.atomic():
            locked = self.lock(batch.pk)
            if locked.is_terminal:
                raise BatchStateError(f"Batch {locked.pk} is already {locked.status}.")
            if locked.status == BatchStatus.SUBMITTING:
                raise BatchStateError(
                    f"Batch {locked.pk} is being submitted; cancel it once it is submitted."
                )
            if locked.status == BatchStatus.PENDING:
                # Never sent: nothing to ask the provider, nothing will be billed.
                locked.status = BatchStatus.CANCELED
                locked.cancel_requested_at = now
                locked.cancel_reason = reason
                locked.ended_at = now
                locked.failure_error = "canceled before submission"
                locked.save()
                return locked
            provider_batch_id = locked.provider_batch_id
        snapshot = self.cancel_provider_batch(provider_batch_id)
        now = db_now()
        with transaction.atomic():
            locked = self.lock(batch.pk)
            if locked.is_terminal:
                return locked
            if locked.cancel_requested_at is None:
                locked.cancel_requested_at = now
                locked.cancel_reason = reason
                if reason == "deadline":
                    locked.failure_error = "max age exceeded"
                    locked.failure_reason = (
                        "The batch ran longer than RAIF_BATCHES['MAX_BATCH_AGE'] and was "
                        "cancelled; results produced before that are kept."
                    )
            self._store_snapshot(locked, snapshot, now)
            locked.save()
        return locked

    # -- results ------------------------------------------------------------------------------

    def fetch_results(self, batch: ModelCompletionBatch) -> int:
        """Fetch and store the results of a terminal batch. Returns results applied.

        The harvest ends (``results_fetched_at`` set) only once every outcome the provider's
        counters report is stored, or once the wait for the rest (``RESULTS_WAIT_SECONDS``) is
        over; until then the batch stays awaiting harvest and is read again later, with backoff.
        Results the provider says are gone (404/410) are asked for a bounded number of times
        (``RESULTS_GONE_ATTEMPTS``), then the lines without one are failed.
        """
        batch = ModelCompletionBatch.objects.get(pk=batch.pk)
        if not batch.is_terminal:
            raise BatchStateError(
                f"Batch {batch.pk} is {batch.status}; results are fetched once it has ended."
            )
        if batch.results_fetched_at is not None:
            return 0
        self._prices.clear()  # prices as configured now, for this whole harvest
        applied = 0
        if batch.provider_batch_id:
            try:
                for page in self.iter_result_pages(batch.provider_batch_id):
                    applied += self.apply_result_page(batch, page)
            except ProviderError as error:
                if not _results_gone(error) or not self._results_gone_for_good(batch, error):
                    raise
                self.finish_results(batch, unavailable=error)
                return applied
        self.finish_results(batch)
        return applied

    def _results_gone_for_good(self, batch: ModelCompletionBatch, error: ProviderError) -> bool:
        """Count one more "not found" on the results; True once the bound is reached, else the
        next read is scheduled (and the caller reports the error)."""
        now = db_now()
        wait = timedelta(seconds=float(get_setting("RESULTS_WAIT_SECONDS")))
        with transaction.atomic():
            locked = self.lock(batch.pk)
            since = locked.results_lacking_since or now
            attempts = locked.results_read_attempts + 1
            if attempts >= int(get_setting("RESULTS_GONE_ATTEMPTS")) or now - since >= wait:
                return True
            locked.results_lacking_since = since
            locked.results_read_attempts = attempts
            locked.results_next_read_at = now + _results_backoff(attempts, since + wait - now)
            locked.save(
                update_fields=[
                    "results_lacking_since",
                    "results_read_attempts",
                    "results_next_read_at",
                ]
            )
        logger.warning(
            "Batch %s: results not found at the provider (%s); attempt %d, reading again later",
            batch.pk,
            error.one_line,
            attempts,
        )
        return False

    def apply_result_page(self, batch: ModelCompletionBatch, entries: list[ResultEntry]) -> int:
        """Apply one page of results in a few queries; idempotent. Returns rows changed.

        A result applies to a pending line; a success also replaces a provider error stored
        earlier in the harvest (the same id served twice, on another page), so the outcome does
        not depend on page boundaries, and an error never replaces anything but a pending line.
        A line whose values cannot be stored is failed alone, with the reason.
        """
        by_id: dict[str, ResultEntry] = {}
        for entry in entries:
            kept = by_id.get(entry.custom_id)
            if kept is None or (kept.completion is None and entry.completion is not None):
                by_id[entry.custom_id] = entry
        if not by_id:
            return 0
        now = timezone.now()
        with transaction.atomic():
            locked = self.lock(batch.pk)
            if locked.results_fetched_at is not None:
                return 0
            stored = ModelCompletion.objects.filter(
                batch_id=batch.pk, batch_custom_id__in=list(by_id)
            ).values_list("pk", "batch_custom_id", "status", "failure_error", "response_format")
            to_pending: list[dict[str, Any]] = []
            replacing: list[dict[str, Any]] = []
            seen = set()
            for pk, custom_id, status, failure_error, response_format in stored:
                seen.add(custom_id)
                entry = by_id[custom_id]
                if status == CompletionStatus.PENDING:
                    target = to_pending
                elif (
                    entry.completion is not None
                    and status == CompletionStatus.FAILED
                    and failure_error in PROVIDER_ERROR_KINDS
                ):
                    target = replacing
                else:
                    continue
                try:
                    row = self.result_row(locked, entry, response_format, now)
                except Exception as error:  # one odd line must not stop the page
                    row = _unstorable_row(locked.pk, custom_id, error, now)
                row["id"] = pk
                target.append(row)
            for custom_id in by_id.keys() - seen:
                logger.warning(
                    "Batch %s: provider returned a result for unknown id %r; skipped",
                    batch.pk,
                    custom_id,
                )
            # Matched on the primary key read above: with (batch, custom id) and the status
            # filter, PostgreSQL may probe the (batch, status) index and scan every pending row
            # of the batch for each result, when its statistics say that few rows are pending.
            changed = self._store_rows(batch.pk, to_pending, "t.status = %s", [PENDING])
            if replacing:
                changed += self._store_rows(
                    batch.pk,
                    replacing,
                    "t.status = %s AND t.failure_error IN (%s, %s)",
                    [CompletionStatus.FAILED, *PROVIDER_ERROR_KINDS],
                )
            finished_ids = [row["batch_custom_id"] for row in (*to_pending, *replacing)]
            transaction.on_commit(
                lambda: signals.completions_finished.send(
                    sender=ModelCompletion,
                    batch=locked,
                    completions=ModelCompletion.objects.filter(
                        batch_id=locked.pk, batch_custom_id__in=finished_ids
                    ),
                )
            )
        return changed

    def _store_rows(
        self, batch_pk: int, rows: list[dict[str, Any]], where: str, params: list[Any]
    ) -> int:
        """One statement for the page; should the database refuse it, row by row, failing only
        the rows it refuses (their reason says why)."""
        if not rows:
            return 0

        def store(part: list[dict[str, Any]]) -> int:
            with _savepoint():
                return update_from_values(
                    ModelCompletion,
                    key_fields=("id",),
                    set_fields=RESULT_FIELDS,
                    rows=part,
                    where=where,
                    where_params=params,
                )

        try:
            return store(rows)
        except STORE_ERRORS as error:
            logger.warning(
                "Batch %s: a page of %d results was refused (%s); storing it row by row",
                batch_pk,
                len(rows),
                _one_line(error),
            )
        changed = 0
        for row in rows:
            try:
                changed += store([row])
                continue
            except STORE_ERRORS as error:
                failed = _unstorable_row(batch_pk, row["batch_custom_id"], error, timezone.now())
                failed["id"] = row["id"]
            # A failure row holds only plain values: should even it be refused, the fault is
            # not in this line but in the statement or the database, and is raised.
            changed += store([failed])
        return changed

    def price(self, model: str) -> ModelPrice | None:
        """The model's price, read from settings once per harvest rather than once per row."""
        if model not in self._prices:
            self._prices[model] = price_for(model)
        return self._prices[model]

    def result_row(
        self,
        batch: ModelCompletionBatch,
        entry: ResultEntry,
        response_format: Any,
        now: datetime,
    ) -> dict[str, Any]:
        """The column values a result writes into its completion, made storable.

        NUL and lone surrogates are dropped from text and JSON, token counts outside the
        columns' range are left empty, and each such change is listed in the payload under
        ``_raif_cleaned``; a cost beyond the cost columns fails the line, answer kept.
        """
        row: dict[str, Any] = {name: None for name in RESULT_FIELDS}
        row.update(
            batch=batch.pk,
            batch_custom_id=entry.custom_id,
            raw_response="",
            finish_reason="",
            failure_error="",
            failure_reason="",
        )
        parsed = entry.completion
        if parsed is None:
            message = clean_text(entry.error or "")[0]
            message = message or "The provider returned no result for this request."
            row.update(
                status=CompletionStatus.FAILED,
                failure_error=_failure_kind(message),
                failure_reason=message[:FAILURE_TEXT_LIMIT],
                failed_at=now,
            )
            return row
        cleaned: list[str] = []
        text, dropped = clean_text(parsed.text)
        if dropped:
            cleaned.append("text: NUL or lone surrogate characters removed")
        finish_reason, dropped = clean_text(parsed.finish_reason)
        if dropped:
            cleaned.append("finish_reason: NUL or lone surrogate characters removed")
        payload, dropped = clean_json(parsed.payload)
        if dropped:
            cleaned.append("payload: NUL or lone surrogate characters removed")
        tool_calls, dropped = clean_json(parsed.tool_calls)
        if dropped:
            cleaned.append("tool_calls: NUL or lone surrogate characters removed")
        tokens: dict[str, int | None] = {}
        for name in TOKEN_FIELDS:
            value = getattr(parsed, name)
            tokens[name] = storable_count(value)
            if tokens[name] != value:
                cleaned.append(f"{name}: {value} is out of range; left empty")
        cost = completion_cost(
            self.price(batch.model),
            prompt_tokens=tokens["prompt_tokens"] or 0,
            cached_tokens=tokens["cached_tokens"] or 0,
            output_tokens=(tokens["completion_tokens"] or 0) + (tokens["reasoning_tokens"] or 0),
            provider_ticks=parsed.cost_ticks,
        )
        if cleaned and isinstance(payload, dict):
            payload = {**payload, CLEANED_KEY: cleaned}
        row.update(
            status=CompletionStatus.COMPLETED,
            raw_response=text,
            response_payload=payload,
            response_tool_calls=tool_calls,
            finish_reason=finish_reason[:32],
            prompt_token_cost=cost.prompt,
            output_token_cost=cost.output,
            total_cost=cost.total,
            completed_at=now,
            **tokens,
        )
        if not all(cost_fits(value) for value in (cost.prompt, cost.output, cost.total)):
            row.update(
                status=CompletionStatus.FAILED,
                prompt_token_cost=None,
                output_token_cost=None,
                total_cost=None,
                failure_error="unstorable result",
                failure_reason=(
                    f"The provider's cost ({parsed.cost_ticks} ticks, {cost.total} USD) does not "
                    "fit the cost columns; the answer is kept."
                ),
                completed_at=None,
                failed_at=now,
            )
            return row
        if _wants_json(response_format):
            try:
                row["response_json"] = clean_json(json.loads(text))[0]
            except (ValueError, RecursionError) as error:
                # Paid for and kept, but not usable as structured output.
                row.update(
                    status=CompletionStatus.FAILED,
                    failure_error="invalid JSON answer",
                    failure_reason=f"The answer is not valid JSON: {error}",
                    completed_at=None,
                    failed_at=now,
                )
        return row

    def finish_results(
        self, batch: ModelCompletionBatch, *, unavailable: ProviderError | None = None
    ) -> ModelCompletionBatch:
        """Fail what the provider never answered, total the costs, mark the results fetched.

        Not while results are missing that the provider's counters count (succeeded + failed):
        then the shortfall is recorded (``results_lacking_since``, ``results_stored_count``)
        and a later read scheduled (``results_next_read_at``, with backoff), until
        ``RESULTS_WAIT_SECONDS`` have passed since the first short harvest. ``unavailable`` (the
        results are gone) ends the harvest at once.
        """
        now = db_now()
        wait = float(get_setting("RESULTS_WAIT_SECONDS"))
        with transaction.atomic():
            locked = self.lock(batch.pk)
            if locked.results_fetched_at is not None:
                return locked
            reason = {
                BatchStatus.ENDED: ("entry missing", "The provider returned no result for it."),
                BatchStatus.CANCELED: ("batch canceled", "The batch was canceled before it ran."),
                BatchStatus.EXPIRED: ("batch expired", "The batch expired before it ran."),
                BatchStatus.FAILED: (
                    "batch failed",
                    locked.failure_reason or "The provider failed the batch.",
                ),
            }[BatchStatus(locked.status)]
            short = None if unavailable is not None else _results_short(locked)
            if short is not None:
                stored, expected = short
                since = locked.results_lacking_since or now
                if now - since < timedelta(seconds=wait):
                    self._wait_for_results(locked, now, since, stored, expected)
                    return locked
                if locked.status == BatchStatus.ENDED:
                    reason = (
                        "entry missing",
                        "The provider counted this result but never served it, "
                        f"after waiting {wait:g} s.",
                    )
            if unavailable is not None:
                reason = (
                    "results unavailable",
                    "Results no longer available: " + _one_line(unavailable),
                )
            failed_now = locked.completions.filter(status=CompletionStatus.PENDING).update(
                status=CompletionStatus.FAILED,
                failure_error=reason[0],
                failure_reason=reason[1][:FAILURE_TEXT_LIMIT],
                failed_at=now,
            )
            if locked.status == BatchStatus.EXPIRED:
                # The provider reports lines cut by a deadline as cancelled; they expired.
                locked.completions.filter(failure_error="request cancelled").update(
                    failure_error="request expired"
                )
            totals = locked.completions.aggregate(
                prompt=Sum("prompt_token_cost"),
                output=Sum("output_token_cost"),
                total=Sum("total_cost"),
                completed=Count("pk", filter=Q(status=CompletionStatus.COMPLETED)),
                failed=Count("pk", filter=Q(status=CompletionStatus.FAILED)),
                all=Count("pk"),
            )
            if locked.failure_error not in OWN_FAILURE_KINDS:
                # Notes on reads that did not get through are moot once the harvest is over.
                if unavailable is not None:
                    locked.failure_error = "results unavailable"
                    locked.failure_reason = (
                        f"The provider no longer serves this batch's results "
                        f"({_one_line(unavailable)}); {failed_now} request(s) without a result "
                        "were failed."
                    )
                elif short is not None:
                    locked.failure_error = "results missing"
                    locked.failure_reason = (
                        f"The provider served {short[0]} of the {short[1]} results its counters "
                        f"report, and no more after waiting {wait:g} s; {failed_now} request(s) "
                        "were failed as never served."
                    )
                elif locked.status in (BatchStatus.ENDED, BatchStatus.CANCELED):
                    locked.failure_error = ""
                    locked.failure_reason = ""
            locked.prompt_token_cost = totals["prompt"]
            locked.output_token_cost = totals["output"]
            locked.total_cost = totals["total"]
            locked.results_fetched_at = now
            locked.results_next_read_at = None
            locked.results_stored_count = totals["all"] - failed_now
            locked.save()
            tally = {
                "total": totals["all"],
                "completed": totals["completed"],
                "failed": totals["failed"],
            }
            transaction.on_commit(
                lambda: signals.batch_finished.send(
                    sender=ModelCompletionBatch, batch=locked, status=locked.status, counts=tally
                )
            )
        return locked

    @staticmethod
    def _wait_for_results(
        locked: ModelCompletionBatch, now: datetime, since: datetime, stored: int, expected: int
    ) -> None:
        """Record a short harvest and when to read again; the batch stays awaiting harvest."""
        wait = timedelta(seconds=float(get_setting("RESULTS_WAIT_SECONDS")))
        attempts = locked.results_read_attempts + 1
        next_read = now + _results_backoff(attempts, since + wait - now)
        locked.results_lacking_since = since
        locked.results_read_attempts = attempts
        locked.results_next_read_at = next_read
        locked.results_stored_count = stored
        fields = [
            "results_lacking_since",
            "results_read_attempts",
            "results_next_read_at",
            "results_stored_count",
        ]
        if locked.failure_error not in OWN_FAILURE_KINDS:
            locked.failure_error = "results incomplete"
            locked.failure_reason = (
                f"The provider has served {stored} of the {expected} results its counters "
                f"report; reading again after {next_read:%Y-%m-%d %H:%M:%S} UTC, for up to "
                f"{wait.total_seconds():g} s after {since:%Y-%m-%d %H:%M:%S} UTC."
            )
            fields += ["failure_error", "failure_reason"]
        locked.save(update_fields=fields)
        logger.info("Batch %s: %s of %s results served so far", locked.pk, stored, expected)


#: What a database (or its driver) raises on a value it cannot store.
STORE_ERRORS = (DatabaseError, ValueError, RecursionError, OverflowError)
TOKEN_FIELDS = (
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "reasoning_tokens",
    "cached_tokens",
)
PENDING = CompletionStatus.PENDING


def _savepoint() -> Any:
    """A savepoint where a refused statement would abort the whole transaction (PostgreSQL);
    elsewhere the transaction survives a refused statement, and a savepoint costs two queries."""
    if connection.vendor == "postgresql":
        return transaction.atomic()
    return contextlib.nullcontext()


def _one_line(error: BaseException) -> str:
    if isinstance(error, ProviderError):
        return error.one_line
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}"[:500]


def _unstorable_row(
    batch_pk: int, custom_id: str, error: BaseException, now: datetime
) -> dict[str, Any]:
    """A failed line that says why its result could not be stored."""
    row: dict[str, Any] = {name: None for name in RESULT_FIELDS}
    row.update(
        batch=batch_pk,
        batch_custom_id=custom_id,
        status=CompletionStatus.FAILED,
        raw_response="",
        finish_reason="",
        failure_error="unstorable result",
        failure_reason=clean_text(f"The result could not be stored: {_one_line(error)}")[0][
            :FAILURE_TEXT_LIMIT
        ],
        failed_at=now,
    )
    return row


def _results_gone(error: ProviderError) -> bool:
    """The provider says this batch's results do not exist (any more)."""
    return isinstance(error, ProviderNotFound) or error.status_code in (404, 410)


def _results_short(batch: ModelCompletionBatch) -> tuple[int, int] | None:
    """(outcomes stored, outcomes the provider counts) when results are still to come."""
    counts = batch.request_counts or {}
    expected = _count(counts, "succeeded") + _count(counts, "failed")
    if not expected:
        return None
    outcomes = (
        batch.completions.exclude(status=CompletionStatus.PENDING)
        .exclude(failure_error__in=UNCOUNTED_KINDS)
        .count()
    )
    if outcomes >= expected:
        return None
    if not batch.completions.filter(status=CompletionStatus.PENDING).exists():
        return None  # nothing left to wait for, whatever the counters say
    return outcomes, expected


def _results_backoff(attempts: int, remaining: timedelta) -> timedelta:
    """Doubling from POLL_INTERVAL, capped, and never past the end of the wait."""
    base = max(float(get_setting("POLL_INTERVAL")), 1.0)
    delay = timedelta(seconds=min(base * 2 ** min(attempts - 1, 16), RESULTS_BACKOFF_MAX))
    return max(min(delay, remaining), timedelta(0))


def _clear_refusal(error: ProviderError) -> bool:
    """A 4xx whose body names the problem: the provider says it created nothing.

    A 4xx without the provider's error body (a proxy's HTML page) or one that hints at
    something existing or at load (408, 409, 425, 429) proves nothing about the create.
    """
    payload = error.payload
    named = isinstance(payload, dict) and any(
        isinstance(payload.get(key), str | dict) and payload.get(key)
        for key in ("error", "message")
    )
    return named and error.status_code not in (408, 409, 425, 429)


def _wants_json(response_format: Any) -> bool:
    return isinstance(response_format, dict) and response_format.get("type") in STRUCTURED_FORMATS


def _failure_kind(message: str) -> str:
    lowered = message.lower()
    if "cancel" in lowered:
        return "request cancelled"
    if "expired" in lowered:
        return "request expired"
    return "provider error"
