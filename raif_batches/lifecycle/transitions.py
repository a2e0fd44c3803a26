"""Every change of a batch's status and every failure note, and the one rule for the next status.

:func:`next_status` is the one place that decides a batch's next status, from what the provider
said (a :class:`~raif_batches.providers.base.BatchSnapshot`) and what we know (a cancel asked,
a rejection seen, the counters' last change). :func:`store_snapshot` folds a snapshot into a
locked row. :func:`note_on_batch` shows why a batch is not moving without changing its status,
and never hides a batch's own failure (:data:`~raif_batches.models.OWN_FAILURE_KINDS`).
Decisions in time read the database clock, never a host's.
"""

from __future__ import annotations

import copy
import logging
from datetime import datetime, timedelta
from typing import Any

from ..conf import get_setting
from ..exceptions import BatchStateError, InvalidBatchRequest, ProviderError
from ..models import (
    OWN_FAILURE_KINDS,
    TERMINAL_STATUSES,
    BatchStatus,
    FailureKind,
    ModelCompletionBatch,
)
from ..providers.base import BatchSnapshot
from ..storable import clean_json, clean_text

logger = logging.getLogger("raif_batches")

#: Longest text kept in ``failure_error``.
FAILURE_TEXT_LIMIT = 255


def next_status(
    batch: ModelCompletionBatch,
    *,
    counts: dict[str, int],
    rejection: str | None,
    provider_cancelled_at: datetime | None,
    now: datetime,
    provider_status: str | None = None,
) -> str:
    """Decide a batch's status from what the provider said and what we know.

    A provider with a status field (``provider_status``, already normalised) is believed: its
    terminal statuses are final, and the files or results stream it serves then are the truth
    (:mod:`raif_batches.lifecycle.results`). The rest of this rule is for a provider without one
    (xAI), whose status is derived from its counters.

    Results outrank cancellation and expiry: a cancelled batch is trusted only once its counts
    have stood still for the grace period counted from the cancel, because xAI's counters can
    flip from cancelled back to succeeded after a cancel. A rejection (``cancel_by_xai_message``)
    that arrives while lines are still pending or just finished is waited out the same way,
    counted from when it was first seen (``batch.rejected_at``); a file refused before any line
    ran fails at once.
    """
    if batch.status in TERMINAL_STATUSES:
        return batch.status
    if provider_status is not None:
        return _from_provider_status(batch, provider_status)
    pending = count_of(counts, "pending")
    total = count_of(counts, "total")
    if rejection or batch.rejected_at is not None:
        finished = count_of(counts, "succeeded") + count_of(counts, "failed")
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
        if not total and provider_cancelled_at is not None and now - cancel_started >= grace:
            # Cancelled before xAI even validated the file. Zero counters alone prove nothing:
            # a file still validating reads the same, and our cancel may never have landed.
            return BatchStatus.CANCELED
        return BatchStatus.CANCELLING
    if total == 0:
        return BatchStatus.SUBMITTED  # the provider is still validating the file
    if pending > 0:
        return BatchStatus.IN_PROGRESS
    if batch.expires_at is not None and now >= batch.expires_at and counts.get("cancelled"):
        return BatchStatus.EXPIRED
    return BatchStatus.ENDED


def would_end(batch: ModelCompletionBatch, snapshot: BatchSnapshot, now: datetime) -> bool:
    """Whether storing ``snapshot`` at ``now`` would end ``batch`` (as :func:`store_snapshot`
    decides), without changing it. A poll reads such a batch's first results at once, in the
    thread that read its status; the status itself is decided again under the row lock."""
    if snapshot.status is not None and snapshot.status not in TERMINAL_STATUSES:
        return False  # a provider's status is believed: not terminal, never ends the batch
    if snapshot.status is None and count_of(snapshot.counts, "pending") > 0:
        return False  # derived from the counters: nothing ends while lines are pending
    probe = copy.copy(batch)
    try:
        store_snapshot(probe, snapshot, now)
    except Exception:  # the calling thread meets it when it stores the snapshot
        return False
    return probe.is_terminal


#: The statuses a provider's snapshot may name (``BatchSnapshot.status``).
PROVIDER_STATUSES = frozenset(
    {
        BatchStatus.SUBMITTED,
        BatchStatus.IN_PROGRESS,
        BatchStatus.CANCELLING,
        *TERMINAL_STATUSES,
    }
)


def _from_provider_status(batch: ModelCompletionBatch, provider_status: str) -> str:
    """The next status when the provider names one: believed, with what only we know added.

    A batch we asked to cancel reads ``cancelling`` until the provider ends it; one cancelled
    because it passed MAX_BATCH_AGE is ``expired`` when it ends cancelled.
    """
    if provider_status not in PROVIDER_STATUSES:
        raise BatchStateError(f"the provider's status {provider_status!r} is not a known one")
    deadline = batch.cancel_reason == "deadline"
    if provider_status == BatchStatus.CANCELED and deadline:
        return BatchStatus.EXPIRED
    if provider_status in TERMINAL_STATUSES:
        return provider_status
    if batch.cancel_requested_at is not None:
        return BatchStatus.CANCELLING
    return provider_status


def count_of(counts: dict[str, Any] | None, key: str) -> int:
    """A counter as a non-negative int, whatever the provider put there."""
    try:
        return max(int((counts or {}).get(key) or 0), 0)
    except (TypeError, ValueError, OverflowError):
        return 0


def store_snapshot(batch: ModelCompletionBatch, snapshot: BatchSnapshot, now: datetime) -> None:
    """Fold a snapshot into a locked batch (the caller saves)."""
    counts = snapshot.counts if snapshot.counts is not None else batch.request_counts
    counts = {key: count_of(counts, key) for key in (counts or {})}
    if counts != batch.request_counts or batch.counts_changed_at is None:
        batch.counts_changed_at = now
    batch.request_counts = counts
    # PostgreSQL's jsonb refuses NUL, and no driver encodes a lone surrogate.
    batch.provider_response = clean_json(snapshot.raw)[0]
    if snapshot.expires_at is not None:
        batch.expires_at = snapshot.expires_at
    if snapshot.cancelled_at is not None and batch.cancel_requested_at is None:
        # Cancelled at the provider, not by us: the grace period counts from when we first saw
        # it, on our clock; a provider time ahead of ours (a bogus "9999-12-31") would
        # otherwise hold the batch in `cancelling` for ever.
        batch.cancel_requested_at = min(snapshot.cancelled_at, now)
        batch.cancel_reason = "provider"
    rejection = clean_text(str(snapshot.rejection))[0] if snapshot.rejection else None
    if rejection and batch.rejected_at is None and not batch.is_terminal:
        # Shown at once, though lines still running are waited for before the batch fails.
        batch.rejected_at = now
        batch.failure_error = FailureKind.REJECTED
        batch.failure_reason = rejection
    status = next_status(
        batch,
        counts=counts,
        rejection=rejection,
        provider_cancelled_at=snapshot.cancelled_at,
        now=now,
        provider_status=snapshot.status,
    )
    if status == BatchStatus.FAILED and batch.rejected_at is not None:
        batch.failure_error = FailureKind.REJECTED
        batch.failure_reason = (
            rejection or batch.failure_reason or "The provider rejected the batch."
        )
    if status == BatchStatus.FAILED and batch.rejected_at is None:
        batch.failure_error = FailureKind.REJECTED
        batch.failure_reason = "The provider failed the batch."
    if status == BatchStatus.EXPIRED and not batch.failure_error:
        batch.failure_error = FailureKind.EXPIRED
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


def note_on_batch(
    batch: ModelCompletionBatch, error: BaseException, *, kind: str = FailureKind.UNEXPECTED
) -> None:
    """Show why a batch is not moving, without changing its status.

    A batch's own failure (a rejection, an expiry, a deadline) stays shown: the note would hide
    why the batch ended.
    """
    if isinstance(error, ProviderError):
        kind, reason = error.kind, str(error)
    else:
        reason = error_text(error)
    try:
        ModelCompletionBatch.objects.filter(pk=batch.pk, results_fetched_at__isnull=True).exclude(
            failure_error__in=OWN_FAILURE_KINDS
        ).update(failure_error=kind[:FAILURE_TEXT_LIMIT], failure_reason=clean_text(reason)[0])
    except Exception:  # the note is a courtesy: never let it stop the run
        logger.warning("Batch %s: could not record %s", batch.pk, error_text(error))


def error_text(error: BaseException) -> str:
    """One line, whatever the error: our own errors by their message, others by their type."""
    if isinstance(error, ProviderError):
        return error.one_line
    text = " ".join(str(error).split())
    if not isinstance(error, BatchStateError | InvalidBatchRequest):
        text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text[:500]


def one_line(error: BaseException) -> str:
    if isinstance(error, ProviderError):
        return error.one_line
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}"[:500]
