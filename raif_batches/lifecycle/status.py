"""A batch's status: read from the provider and stored, and cancel.

Every change happens in ``transaction.atomic()`` on the row taken with ``locked()``, and no
transaction is open across an HTTP call. A cancel keeps the results already produced: they are
fetched once the batch ends (:mod:`raif_batches.lifecycle.results`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from time import monotonic
from typing import Any

from django.db import DatabaseError, transaction

from ..bulk import update_from_values
from ..clock import db_now
from ..conf import get_setting
from ..exceptions import BatchStateError, ProviderAuthenticationError, ProviderError
from ..models import BatchStatus, FailureKind, ModelCompletionBatch
from ..providers.base import BatchSnapshot, BatchStrategy
from .transitions import store_snapshot

logger = logging.getLogger("raif_batches")


def fetch_status(strategy: BatchStrategy, batch: ModelCompletionBatch) -> ModelCompletionBatch:
    """Read the provider's view of the batch and store it."""
    if not batch.provider_batch_id:
        raise BatchStateError(f"Batch {batch.pk} has not been submitted.")
    snapshot = strategy.get_provider_batch(batch.provider_batch_id)
    return apply_snapshot(batch.pk, snapshot)


def read_listed(
    strategy: BatchStrategy,
    wanted: Sequence[str],
    created_after: datetime,
    *,
    threads: int,
) -> dict[str, BatchSnapshot]:
    """Snapshots of the ``wanted`` provider batches (newest first) that the provider's
    newest-first list holds, read in stretches at once (HTTP only, in threads).

    Stretch *k* reads the list after the last batch of stretch *k - 1*'s page's worth of
    ``wanted`` (the list's cursor is a batch id), the first from the newest: with nothing
    else listed between them, 1,000 batches take ``1000 / list_page_size`` calls sent
    together instead of one after another. A stretch reads on until it holds its batches, or
    has passed the next stretch's start (its batches were listed elsewhere), or the list is
    past ``created_after``, or it ends, within RECONCILE_MAX_PAGES pages and
    RECONCILE_MAX_SECONDS. What it did not find is read one by one by the caller; a stretch
    the provider refuses is logged and costs nothing else. A rejected key is raised.
    """
    size = strategy.list_page_size
    stretches = [list(wanted[start : start + size]) for start in range(0, len(wanted), size)]
    max_pages = int(get_setting("RECONCILE_MAX_PAGES"))
    deadline = monotonic() + float(get_setting("RECONCILE_MAX_SECONDS"))

    def read(number: int) -> tuple[dict[str, BatchSnapshot], ProviderError | None]:
        mine = set(stretches[number])
        after = stretches[number - 1][-1] if number else None
        stop_at = stretches[number][-1] if number + 1 < len(stretches) else None
        found: dict[str, BatchSnapshot] = {}
        cursors = {after}
        for _ in range(max_pages):
            try:
                page = strategy.list_batches_page(after)
            except ProviderError as error:
                return found, error
            older = 0
            for snapshot in page.snapshots:
                if snapshot.provider_batch_id:
                    found.setdefault(snapshot.provider_batch_id, snapshot)
                if snapshot.created_at is not None and snapshot.created_at < created_after:
                    older += 1
            if (
                mine <= found.keys()
                or stop_at in found
                or (page.snapshots and older == len(page.snapshots))
                or page.next_after is None
                or page.next_after in cursors
                or monotonic() > deadline
            ):
                break
            after = page.next_after
            cursors.add(after)
        return found, None

    listed: dict[str, BatchSnapshot] = {}
    workers = max(1, min(threads, len(stretches)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="raif-list") as pool:
        for found, error in pool.map(read, range(len(stretches))):
            if isinstance(error, ProviderAuthenticationError):
                raise error
            if error is not None:
                logger.warning(
                    "Reading %s's batch list failed (%s); reading those batches one by one",
                    strategy.provider,
                    error.one_line,
                )
            for provider_batch_id, snapshot in found.items():
                listed.setdefault(provider_batch_id, snapshot)
    return {pbid: listed[pbid] for pbid in wanted if pbid in listed}


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


#: What folding a snapshot in reads of a locked row (its answer is only written).
SNAPSHOT_READS = tuple(f for f in SNAPSHOT_FIELDS if f != "provider_response")
LEASE_FIELDS = ("claimed_by", "claimed_until")


@dataclass
class StoredSnapshots:
    """What :func:`apply_snapshots` did: the batches stored, those whose lease it gave back,
    and the errors by batch."""

    stored: list[int] = field(default_factory=list)
    released: list[int] = field(default_factory=list)
    errors: dict[int, Exception] = field(default_factory=dict)


def apply_snapshots(
    snapshots: Sequence[tuple[int, BatchSnapshot]],
    *,
    now: datetime | None = None,
    release: str | None = None,
) -> StoredSnapshots:
    """Store many snapshots in one transaction: the rows locked in one statement, each
    snapshot folded in as :func:`apply_snapshot` does, and every changed row written in one
    bulk statement (split only by MAX_STATEMENT_BYTES), instead of a transaction per batch.

    With ``release`` (a worker), that worker's leases on the batches that stay in flight are
    given back in the same write: a poll has nothing more to do with them in this run, and a
    second bulk statement would cost as much as this one.

    A snapshot that cannot be folded in is that batch's error alone; a batch deleted meanwhile
    is left out. Should the bulk write be refused, each batch is stored on its own (its lease
    left to the caller), so that one bad row costs only itself.
    """
    now = now or db_now()
    by_pk = dict(snapshots)
    outcome = StoredSnapshots()
    fields = SNAPSHOT_FIELDS + (LEASE_FIELDS if release is not None else ())
    try:
        with transaction.atomic():
            rows: list[dict[str, Any]] = []
            locked_rows = (
                ModelCompletionBatch.objects.locked()
                .filter(pk__in=by_pk)
                .only(*SNAPSHOT_READS, *LEASE_FIELDS)
                .order_by("pk")
            )
            for locked in locked_rows:
                if locked.is_terminal:
                    outcome.stored.append(locked.pk)
                    continue
                try:
                    store_snapshot(locked, by_pk[locked.pk], now)
                except Exception as error:  # this batch's answer alone
                    outcome.errors[locked.pk] = error
                    continue
                if release is not None and not locked.is_terminal:
                    if locked.claimed_by == release:
                        locked.claimed_by, locked.claimed_until = "", None
                        outcome.released.append(locked.pk)
                rows.append({"id": locked.pk, **{f: getattr(locked, f) for f in fields}})
                outcome.stored.append(locked.pk)
            update_from_values(
                ModelCompletionBatch, key_fields=("id",), set_fields=fields, rows=rows
            )
    except DatabaseError:
        outcome = StoredSnapshots()
        for pk, snapshot in snapshots:
            try:
                apply_snapshot(pk, snapshot, now=now)
            except ModelCompletionBatch.DoesNotExist:
                continue
            except Exception as error:
                outcome.errors[pk] = error
            else:
                outcome.stored.append(pk)
    return outcome


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
