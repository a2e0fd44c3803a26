"""Crash-safe submission: upload, create once, and reconcile a create whose answer was lost.

The rules it keeps:

* every change to a batch happens in ``transaction.atomic()`` on the row taken with
  ``locked()``, and no transaction is open across an HTTP call;
* the create call is sent at most once per claim and never retried blindly: a create whose
  answer is anything but a clear refusal (lost, late, unreadable, without an id) leaves the batch
  ``submitting``, and it is reconciled by its unique name once RECONCILE_AFTER_SECONDS have
  passed since the call ended; only a complete read of the provider's list that does not show
  it lets the batch be created again;
* the lease fences the create: it is re-checked under the row lock and renewed right before the
  call is sent, and every lease and wait is read from the database's clock, never a host's;
* a second provider batch for one batch, however it came about, is cancelled at once and
  recorded on the batch (``duplicate_provider_batches``).

The provider is reached only through its wire hooks (``upload_input``,
``create_provider_batch``, ``find_provider_batches``, ``cancel_provider_batch``).
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction

from .. import signals
from ..clock import db_now
from ..conf import get_setting, request_timeout
from ..exceptions import (
    AmbiguousSubmission,
    BatchBusy,
    BatchConfigurationError,
    BatchStateError,
    DuplicateSubmission,
    InvalidBatchRequest,
    ProviderAuthenticationError,
    ProviderError,
    ProviderNotFound,
    ProviderRejected,
    ProviderUnavailable,
)
from ..models import (
    WORKER_ID,
    BatchStatus,
    CompletionStatus,
    FailureKind,
    ModelCompletion,
    ModelCompletionBatch,
)
from ..providers.base import BatchListing, BatchSnapshot, BatchStrategy, LostCreate
from .transitions import FAILURE_TEXT_LIMIT, count_of, store_snapshot

logger = logging.getLogger("raif_batches")

#: How far before the oldest create attempt a provider batch may be dated (clock differences
#: between the provider and the database), for providers whose list is sorted newest first.
RECONCILE_LISTING_MARGIN = timedelta(minutes=10)


def submit(
    strategy: BatchStrategy,
    batch: ModelCompletionBatch,
    *,
    worker: str = WORKER_ID,
    listing: BatchListing | None = None,
) -> ModelCompletionBatch:
    """Submit a pending batch, or resume one whose submission was interrupted.

    Crash-safe: the intent (``submitting``) is committed before any network call, the
    uploaded file id is kept, and the moment of the create call is recorded before it is
    sent and again when it ends. A batch with an unresolved create attempt is looked up by
    its unique name once the wait has passed (:func:`reconcile_due_at`) and adopted; only
    when a complete read of the provider's list has not found it is it created again.
    ``listing`` is a read of that list made for the whole run (:func:`look_up_names`);
    without one covering this batch, the batch reads the list itself.
    """
    with transaction.atomic():
        locked = ModelCompletionBatch.objects.locked().get(pk=batch.pk)
        if not locked.can_submit:
            raise BatchStateError(
                f"Batch {locked.pk} is {locked.status}; only pending batches can be submitted."
            )
        locked.claim(worker, db_now())
        if locked.status == BatchStatus.PENDING:
            if not locked.completions.exists():
                raise BatchStateError(f"Batch {locked.pk} has no requests to submit.")
            locked.status = BatchStatus.SUBMITTING
        locked.save(update_fields=["status", "claimed_by", "claimed_until"])
    try:
        return _submit_claimed(strategy, locked, worker, listing)
    finally:
        locked.release(worker)


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


def lost_create(batch: ModelCompletionBatch) -> LostCreate:
    """What the provider's list can be searched with for this batch's unanswered create."""
    attempted = batch.create_attempted_at or batch.created_at
    return LostCreate(
        name=batch.provider_batch_name,
        request_count=count_of(batch.request_counts, "total"),
        attempted_at=attempted,
        ended_at=batch.create_ended_at,
    )


def look_up_names(strategy: BatchStrategy, batches: Sequence[ModelCompletionBatch]) -> BatchListing:
    """One read of the provider's batch list for every batch awaiting reconciliation.

    A rejected key is raised; any other provider fault comes back as an incomplete listing,
    so that no batch is created again on its evidence.
    """
    lost = [lost_create(batch) for batch in batches]
    names = frozenset(create.name for create in lost)
    attempts = [batch.create_attempted_at for batch in batches if batch.create_attempted_at]
    created_after = min(attempts) - RECONCILE_LISTING_MARGIN if attempts else None
    try:
        return strategy.find_provider_batches(lost, created_after=created_after)
    except ProviderAuthenticationError:
        raise
    except ProviderError as error:
        return BatchListing(names=names, complete=False, stopped_because=str(error), error=error)


def bound_provider_batch_ids(provider: str, ids: Collection[str]) -> set[str]:
    """Which of these provider batch ids a local batch already owns (as its own or as a
    duplicate it recorded): such a batch is never a lost create's candidate."""
    if not ids:
        return set()
    owned = set(
        ModelCompletionBatch.objects.filter(
            provider=provider, provider_batch_id__in=list(ids)
        ).values_list("provider_batch_id", flat=True)
    )
    for duplicates in (
        ModelCompletionBatch.objects.filter(provider=provider)
        .exclude(duplicate_provider_batches=[])
        .values_list("duplicate_provider_batches", flat=True)
    ):
        owned.update(
            str(entry.get("provider_batch_id"))
            for entry in duplicates or []
            if isinstance(entry, dict)
        )
    return owned & set(ids)


def _submit_claimed(
    strategy: BatchStrategy, batch: ModelCompletionBatch, worker: str, listing: BatchListing | None
) -> ModelCompletionBatch:
    due = reconcile_due_at(batch)
    if due is not None:
        if db_now() < due:
            logger.info("Batch %s: create unresolved; looking it up by name at %s", batch.pk, due)
            return batch
        if listing is None or batch.provider_batch_name not in listing.names:
            listing = look_up_names(strategy, [batch])
        matches = listing.found.get(batch.provider_batch_name, ())
        if not strategy.reconcile_by_name:
            bound = bound_provider_batch_ids(batch.provider, [m.provider_batch_id for m in matches])
            matches = tuple(m for m in matches if m.provider_batch_id not in bound)
            if len(matches) > 1:
                _hold_for_operator(batch.pk, matches)
                raise AmbiguousSubmission(
                    f"{len(matches)} provider batches fit this lost create (same time, same "
                    "number of requests) and nothing tells them apart; it is not created "
                    "again: adopt one or abandon the batch in the admin"
                )
        if matches:
            return _adopt(strategy, batch, matches, worker)
        if listing.error is not None or not listing.complete:
            error = listing.error or ProviderUnavailable(
                f"the provider's batch list was not read to its end "
                f"({listing.stopped_because}); batch {batch.provider_batch_name} is not "
                "created again until a complete read shows it does not exist"
            )
            _note_failure(batch.pk, error)  # still submitting; the reason is shown
            raise error
    try:
        if not batch.input_file_id:
            file_id = strategy.upload_input(batch, iter_lines(strategy, batch))
            with transaction.atomic():
                locked = _locked_claim(batch.pk, worker)
                locked.input_file_id = file_id
                locked.save(update_fields=["input_file_id"])
            batch.input_file_id = file_id
    except (ProviderError, InvalidBatchRequest, BatchConfigurationError) as error:
        # Nothing was created at the provider: back to pending, with the reason shown.
        _abandon_submission(batch, error, reset_file=False)
        raise
    # The fence: under the row lock, right before the create is sent, the lease must still
    # be this worker's; it is renewed to cover the whole call.
    with transaction.atomic():
        locked = _locked_claim(batch.pk, worker)
        now = db_now()
        locked.create_attempted_at = now
        locked.create_ended_at = None
        locked.claim(worker, now)
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
        snapshot = strategy.create_provider_batch(batch)
    except ProviderAuthenticationError as error:
        _abandon_submission(batch, error, reset_file=False)
        raise
    except (ProviderNotFound, ProviderRejected) as error:
        if not _clear_refusal(error):
            raise _ambiguous(batch.pk, error) from error
        if isinstance(error, ProviderNotFound):
            # The uploaded file is gone (expired): upload again next time.
            _abandon_submission(batch, error, reset_file=True)
        else:
            # The provider refused this batch for good (e.g. an unsupported model).
            _fail_submission(batch, error)
        raise
    except AmbiguousSubmission as error:
        _note_failure(batch.pk, error, create_ended=True)
        raise
    except Exception as error:
        # An unreadable answer, a body of the wrong shape, a fault in reading it: the create
        # may have happened, so it is never taken for a refusal.
        raise _ambiguous(batch.pk, error) from error
    except BaseException:
        _stamp_create_end(batch.pk)  # the process is stopping; the call has ended
        raise
    return _record_submission(strategy, batch, snapshot, worker)


def _hold_for_operator(pk: int, candidates: Sequence[BatchSnapshot]) -> None:
    """Record the candidates of an ambiguous lost create; the batch stays submitting."""
    listed = [
        {
            "provider_batch_id": candidate.provider_batch_id,
            "created_at": candidate.created_at.isoformat() if candidate.created_at else None,
            "requests": count_of(candidate.counts, "total"),
        }
        for candidate in candidates
    ]
    ModelCompletionBatch.objects.filter(
        pk=pk, status=BatchStatus.SUBMITTING, provider_batch_id=""
    ).update(
        reconcile_candidates=listed,
        failure_error=FailureKind.RECONCILE_AMBIGUOUS,
        failure_reason=(
            f"The create call's answer was lost, and {len(listed)} provider batches fit it "
            f"({', '.join(str(c['provider_batch_id']) for c in listed)}). The provider gives "
            "batches no name to tell ours from another's: adopt the right one, or abandon "
            "this batch (nothing is created again)."
        ),
    )


def adopt_candidate(
    strategy: BatchStrategy,
    batch: ModelCompletionBatch,
    provider_batch_id: str,
    *,
    worker: str = WORKER_ID,
) -> ModelCompletionBatch:
    """The operator's choice: this provider batch is the one the lost create made."""
    with transaction.atomic():
        locked = ModelCompletionBatch.objects.locked().get(pk=batch.pk)
        if locked.status != BatchStatus.SUBMITTING or locked.provider_batch_id:
            raise BatchStateError(
                f"Batch {locked.pk} is {locked.status}; only a submitting batch without a "
                "provider batch can adopt one."
            )
        if locked.leased_to_other(worker, db_now()):
            raise BatchBusy(f"Batch {locked.pk} is being worked on by {locked.claimed_by}.")
        if bound_provider_batch_ids(locked.provider, [provider_batch_id]):
            raise BatchStateError(
                f"Provider batch {provider_batch_id} already belongs to another batch."
            )
        locked.claim(worker, db_now())
        locked.save(update_fields=["claimed_by", "claimed_until"])
    try:
        snapshot = strategy.get_provider_batch(provider_batch_id)
        return _record_submission(strategy, locked, snapshot, worker, adopted=True)
    finally:
        locked.release(worker)


def abandon(batch: ModelCompletionBatch, *, reason: str = "") -> ModelCompletionBatch:
    """The operator's choice: give up a submitting batch whose create cannot be traced.

    It ends ``failed`` and is never created again (its requests can be retried as a new
    batch); a provider batch it may have made is the operator's to cancel.
    """
    with transaction.atomic():
        locked = ModelCompletionBatch.objects.locked().get(pk=batch.pk)
        if locked.status != BatchStatus.SUBMITTING or locked.provider_batch_id:
            raise BatchStateError(
                f"Batch {locked.pk} is {locked.status}; only a submitting batch without a "
                "provider batch can be abandoned."
            )
        now = db_now()
        if locked.leased_to_other(WORKER_ID, now):
            raise BatchBusy(f"Batch {locked.pk} is being worked on by {locked.claimed_by}.")
        candidates = ", ".join(
            str(c.get("provider_batch_id")) for c in locked.reconcile_candidates or []
        )
        locked.status = BatchStatus.FAILED
        locked.ended_at = now
        locked.next_poll_at = None
        locked.failure_error = FailureKind.ABANDONED
        locked.failure_reason = (
            reason
            or "Abandoned by the operator: the lost create was not traced to one provider "
            "batch, and it is not created again."
        ) + (f" Candidates were: {candidates}." if candidates else "")
        locked.save()
        locked.completions.filter(status=CompletionStatus.PENDING).update(
            status=CompletionStatus.FAILED,
            failure_error=FailureKind.ABANDONED,
            failure_reason="The batch was abandoned before its results could be traced.",
            failed_at=now,
        )
    return locked


def _ambiguous(pk: int, error: Exception) -> AmbiguousSubmission:
    """Record that a create ended without a usable answer; the batch stays submitting."""
    ambiguous = AmbiguousSubmission(
        f"the create call's answer could not be used ({type(error).__name__}: {error}); "
        "it may have created the batch"
    )
    _note_failure(pk, ambiguous, create_ended=True)
    return ambiguous


def _locked_claim(pk: int, worker: str) -> ModelCompletionBatch:
    """The locked row, provided this worker still holds the submission's lease.

    Claiming writes ``claimed_by``, so while it still names this worker nobody else has
    claimed the batch since, even if the lease's time ran out.
    """
    locked = ModelCompletionBatch.objects.locked().get(pk=pk)
    if (
        locked.claimed_by != worker
        or locked.status != BatchStatus.SUBMITTING
        or locked.provider_batch_id
    ):
        raise BatchBusy(f"Batch {pk}: lost the submission lease to {locked.claimed_by!r}.")
    return locked


def _adopt(
    strategy: BatchStrategy,
    batch: ModelCompletionBatch,
    matches: Sequence[BatchSnapshot],
    worker: str,
) -> ModelCompletionBatch:
    """Adopt the provider batch an unanswered create made; cancel any second one."""
    known = {entry.get("provider_batch_id") for entry in batch.duplicate_provider_batches}
    candidates = [m for m in matches if m.provider_batch_id not in known] or list(matches)
    # A batch we cancelled ourselves is never the one to keep.
    keep = next((m for m in candidates if m.cancelled_at is None), candidates[0])
    if not strategy.reconcile_by_name:
        matches = [keep]  # the others are someone else's, not duplicates to cancel
    logger.warning(
        "Batch %s: adopting provider batch %s created by an unanswered call",
        batch.pk,
        keep.provider_batch_id,
    )
    recorded = _record_submission(strategy, batch, keep, worker, adopted=True)
    for other in matches:
        if other.provider_batch_id not in (recorded.provider_batch_id, *known):
            _record_duplicate(
                strategy,
                batch.pk,
                other.provider_batch_id,
                "a second provider batch of the same name",
            )
    return recorded


def _record_submission(
    strategy: BatchStrategy,
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
        _note_failure(batch.pk, error, create_ended=True)
        raise error
    now = db_now()
    duplicate_of = ""
    try:
        with transaction.atomic():
            locked = ModelCompletionBatch.objects.locked().get(pk=batch.pk)
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
                locked.reconcile_candidates = []
                store_snapshot(locked, snapshot, now)
                locked.save()
                locked.completions.filter(started_at__isnull=True).update(started_at=now)
                transaction.on_commit(
                    lambda: signals.batch_submitted.send(sender=ModelCompletionBatch, batch=locked)
                )
    except ModelCompletionBatch.DoesNotExist:
        # Deleted during the create: nobody would ever read or pay attention to it.
        logger.error(
            "Batch %s was deleted while its create was in flight; cancelling provider batch %s",
            batch.pk,
            snapshot.provider_batch_id,
        )
        try:
            strategy.cancel_provider_batch(snapshot.provider_batch_id)
        except ProviderError as error:
            logger.error(
                "Could not cancel orphan provider batch %s: %s",
                snapshot.provider_batch_id,
                error,
            )
        raise
    if duplicate_of:
        _record_duplicate(
            strategy,
            batch.pk,
            snapshot.provider_batch_id,
            f"a create answered after the batch already had provider batch {duplicate_of}",
        )
        raise DuplicateSubmission(
            f"Batch {batch.pk}: the provider made a second batch "
            f"{snapshot.provider_batch_id} beside {duplicate_of}; it was cancelled."
        )
    return locked


def _record_duplicate(strategy: BatchStrategy, pk: int, provider_batch_id: str, why: str) -> None:
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
    _update_duplicate(pk, entry)
    try:
        strategy.cancel_provider_batch(provider_batch_id)
        entry["cancelled"] = True
    except ProviderError as error:
        logger.error("Batch %s: could not cancel %s: %s", pk, provider_batch_id, error)
        entry["cancel_error"] = error.one_line[:FAILURE_TEXT_LIMIT]
    _update_duplicate(pk, entry)


def _update_duplicate(pk: int, entry: dict[str, Any]) -> None:
    with transaction.atomic():
        try:
            locked = ModelCompletionBatch.objects.locked().get(pk=pk)
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
    batch: ModelCompletionBatch,
    error: ProviderError | InvalidBatchRequest | BatchConfigurationError,
    *,
    reset_file: bool,
) -> None:
    """Nothing was created by this worker's call: back to pending, with the reason shown.

    Only while the lease is still this worker's: otherwise another worker owns the batch
    and may have a create of its own in flight.
    """
    if isinstance(error, ProviderError):
        kind = error.kind
    elif isinstance(error, BatchConfigurationError):
        kind = FailureKind.CONFIGURATION
    else:
        kind = FailureKind.INVALID_REQUEST
    _end_submission(batch, BatchStatus.PENDING, kind, str(error), reset_file=reset_file)


def _fail_submission(batch: ModelCompletionBatch, error: ProviderError) -> None:
    """The provider refused the batch for good: failed, unless another worker owns it now."""
    _end_submission(batch, BatchStatus.FAILED, error.kind, str(error))


def _end_submission(
    batch: ModelCompletionBatch,
    status: BatchStatus,
    kind: str,
    reason: str,
    *,
    reset_file: bool = False,
) -> None:
    """End a submission whose create made nothing, while it is still this worker's."""
    with transaction.atomic():
        locked = ModelCompletionBatch.objects.locked().get(pk=batch.pk)
        if (
            locked.status != BatchStatus.SUBMITTING
            or locked.provider_batch_id
            or locked.claimed_by != batch.claimed_by
        ):
            return
        locked.status = status
        locked.create_attempted_at = None
        locked.create_ended_at = None
        if reset_file:
            locked.input_file_id = ""
        if status == BatchStatus.FAILED:
            locked.ended_at = db_now()
        locked.failure_error = kind[:FAILURE_TEXT_LIMIT]
        locked.failure_reason = reason
        locked.save()


def _note_failure(pk: int, error: ProviderError, *, create_ended: bool = False) -> None:
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


def _stamp_create_end(pk: int) -> None:
    """Best effort while the process stops: the create call ended without an answer."""
    try:
        ModelCompletionBatch.objects.filter(pk=pk, create_ended_at__isnull=True).update(
            create_ended_at=db_now()
        )
    except Exception:  # the database may be what is failing; the wait then covers it
        logger.warning("Batch %s: could not record the end of its create call", pk)


def iter_lines(strategy: BatchStrategy, batch: ModelCompletionBatch) -> Iterator[bytes]:
    """The JSONL lines, streamed from the database in chunks (bounded memory)."""
    completions = (
        ModelCompletion.objects.filter(batch_id=batch.pk)
        .order_by("pk")
        .only("batch_custom_id", *ModelCompletion.REQUEST_FIELDS)
    )
    for completion in completions.iterator(chunk_size=2000):
        yield strategy.build_line(batch, completion)


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
