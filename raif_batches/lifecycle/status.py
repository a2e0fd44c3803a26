"""A batch's status: read from the provider and stored, and cancel.

Every change happens in ``transaction.atomic()`` on the row taken with ``locked()``, and no
transaction is open across an HTTP call. A cancel keeps the results already produced: they are
fetched once the batch ends (:mod:`raif_batches.lifecycle.results`).
"""

from __future__ import annotations

from datetime import datetime

from django.db import transaction

from ..clock import db_now
from ..exceptions import BatchStateError
from ..models import BatchStatus, FailureKind, ModelCompletionBatch
from ..providers.base import BatchSnapshot, BatchStrategy
from .transitions import store_snapshot


def fetch_status(strategy: BatchStrategy, batch: ModelCompletionBatch) -> ModelCompletionBatch:
    """Read the provider's view of the batch and store it."""
    if not batch.provider_batch_id:
        raise BatchStateError(f"Batch {batch.pk} has not been submitted.")
    snapshot = strategy.get_provider_batch(batch.provider_batch_id)
    return apply_snapshot(batch.pk, snapshot)


def apply_snapshot(
    pk: int, snapshot: BatchSnapshot, *, now: datetime | None = None
) -> ModelCompletionBatch:
    """Store a snapshot under the row lock. ``now`` (the database clock) may be read once by
    a caller storing many snapshots."""
    now = now or db_now()
    with transaction.atomic():
        locked = ModelCompletionBatch.objects.locked().get(pk=pk)
        if locked.is_terminal:
            return locked
        store_snapshot(locked, snapshot, now)
        locked.save()
    return locked


def cancel(
    strategy: BatchStrategy, batch: ModelCompletionBatch, *, reason: str = "requested"
) -> ModelCompletionBatch:
    """Ask the provider to cancel. Results already produced are still fetched later."""
    now = db_now()
    with transaction.atomic():
        locked = ModelCompletionBatch.objects.locked().get(pk=batch.pk)
        if not locked.can_cancel:
            if locked.is_terminal:
                raise BatchStateError(f"Batch {locked.pk} is already {locked.status}.")
            raise BatchStateError(
                f"Batch {locked.pk} is being submitted; cancel it once it is submitted."
            )
        if locked.status == BatchStatus.PENDING:
            # Never sent: nothing to ask the provider, nothing will be billed.
            locked.status = BatchStatus.CANCELED
            locked.cancel_requested_at = now
            locked.cancel_reason = reason
            locked.ended_at = now
            locked.failure_error = FailureKind.CANCELED_UNSUBMITTED
            locked.save()
            return locked
        provider_batch_id = locked.provider_batch_id
    snapshot = strategy.cancel_provider_batch(provider_batch_id)
    now = db_now()
    with transaction.atomic():
        locked = ModelCompletionBatch.objects.locked().get(pk=batch.pk)
        if locked.is_terminal:
            return locked
        if locked.cancel_requested_at is None:
            locked.cancel_requested_at = now
            locked.cancel_reason = reason
            if reason == "deadline":
                locked.failure_error = FailureKind.MAX_AGE
                locked.failure_reason = (
                    "The batch ran longer than RAIF_BATCHES['MAX_BATCH_AGE'] and was "
                    "cancelled; results produced before that are kept."
                )
        store_snapshot(locked, snapshot, now)
        locked.save()
    return locked
