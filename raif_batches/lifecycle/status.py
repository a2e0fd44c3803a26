"""A batch's status: read from the provider and stored, and cancel.

Every change happens in ``transaction.atomic()`` on the row taken with ``locked()``, and no
transaction is open across an HTTP call. A cancel keeps the results already produced: they are
fetched once the batch ends (:mod:`raif_batches.lifecycle.results`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from django.db import DatabaseError, transaction

from ..bulk import update_from_values
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


#: The columns :func:`~raif_batches.lifecycle.transitions.store_snapshot` may change.
SNAPSHOT_FIELDS = (
    "status",
    "request_counts",
    "counts_changed_at",
    "provider_response",
    "expires_at",
    "cancel_requested_at",
    "cancel_reason",
    "rejected_at",
    "failure_error",
    "failure_reason",
    "ended_at",
    "next_poll_at",
)


def apply_snapshots(
    snapshots: Sequence[tuple[int, BatchSnapshot]], *, now: datetime | None = None
) -> tuple[list[int], dict[int, Exception]]:
    """Store many snapshots in one transaction: the rows locked in one statement, each
    snapshot folded in as :func:`apply_snapshot` does, and every changed row written in one
    bulk statement (split only by MAX_STATEMENT_BYTES), instead of a transaction per batch.

    Returns (the pks stored, the errors by pk): a snapshot that cannot be folded in is that
    batch's error alone; a batch deleted meanwhile is left out. Should the bulk write be
    refused, each batch is stored on its own, so that one bad row costs only itself.
    """
    now = now or db_now()
    by_pk = dict(snapshots)
    stored: list[int] = []
    errors: dict[int, Exception] = {}
    try:
        with transaction.atomic():
            rows: list[dict[str, Any]] = []
            for locked in ModelCompletionBatch.objects.locked().filter(pk__in=by_pk).order_by("pk"):
                if locked.is_terminal:
                    stored.append(locked.pk)
                    continue
                try:
                    store_snapshot(locked, by_pk[locked.pk], now)
                except Exception as error:  # this batch's answer alone
                    errors[locked.pk] = error
                    continue
                rows.append({"id": locked.pk, **{f: getattr(locked, f) for f in SNAPSHOT_FIELDS}})
                stored.append(locked.pk)
            update_from_values(
                ModelCompletionBatch, key_fields=("id",), set_fields=SNAPSHOT_FIELDS, rows=rows
            )
    except DatabaseError:
        stored, errors = [], {}
        for pk, snapshot in snapshots:
            try:
                apply_snapshot(pk, snapshot, now=now)
            except ModelCompletionBatch.DoesNotExist:
                continue
            except Exception as error:
                errors[pk] = error
            else:
                stored.append(pk)
    return stored, errors


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
