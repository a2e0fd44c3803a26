"""Driving many batches: which are due, claiming them, running their strategies.

Workers claim batches in a short transaction with ``select_for_update(skip_locked=True)`` and
a lease (``claimed_by``/``claimed_until``), commit, and only then talk to the provider. Any
number of cron hosts may run these functions at once; a worker that dies loses its claims when
the lease runs out. Status reads are sent concurrently (HTTP only, in threads); all database
work stays on the calling thread.

One batch's fault is that batch's alone: whatever a status read, the storing of a snapshot or a
harvest raises (a provider error, an answer our parser chokes on, a value the database refuses),
it is recorded on that batch (``failure_error``/``failure_reason``, its status unchanged) and in
the run's report, and the run goes on with the other batches. Only a rejected API key stops the
run, as it would fail every call. A batch deleted meanwhile by another process is skipped.
Results that lag behind the provider's counters are read again on later runs, not on every run:
a batch awaiting harvest is due again at its ``results_next_read_at``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from django.db import connection, transaction
from django.db.models import F, Q, QuerySet
from django.utils.module_loading import import_string

from .clock import db_now
from .conf import get_setting
from .exceptions import (
    AmbiguousSubmission,
    BatchStateError,
    InvalidBatchRequest,
    ProviderAuthenticationError,
    ProviderError,
)
from .models import (
    IN_FLIGHT_STATUSES,
    BatchStatus,
    ModelCompletionBatch,
    ModelCompletionBatchQuerySet,
)
from .providers import get_strategy
from .providers.base import (
    OWN_FAILURE_KINDS,
    WORKER_ID,
    BatchBusy,
    BatchListing,
    BatchSnapshot,
    BatchStrategy,
    DuplicateSubmission,
)
from .stopping import stop_requested
from .storable import clean_text

logger = logging.getLogger("raif_batches")


@dataclass
class RunReport:
    """What one run did, for the command's output and for callers."""

    claimed: int = 0
    submitted: list[int] = field(default_factory=list)
    refreshed: int = 0
    cancelled_for_age: list[int] = field(default_factory=list)
    finished: list[int] = field(default_factory=list)
    results_applied: int = 0
    handlers_called: int = 0
    skipped_busy: int = 0
    notes: list[str] = field(default_factory=list)  # conditions that resolve on a later run
    errors: list[str] = field(default_factory=list)  # what makes the command exit non-zero
    fatal: ProviderError | None = None
    stopped: bool = False  # a stop was requested (SIGTERM…); the rest was left for the next run

    @property
    def ok(self) -> bool:
        return not self.errors and self.fatal is None

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-serialisable data, for task results and logs."""
        return {
            "ok": self.ok,
            "claimed": self.claimed,
            "submitted": list(self.submitted),
            "refreshed": self.refreshed,
            "cancelled_for_age": list(self.cancelled_for_age),
            "finished": list(self.finished),
            "results_applied": self.results_applied,
            "handlers_called": self.handlers_called,
            "skipped_busy": self.skipped_busy,
            "notes": list(self.notes),
            "errors": list(self.errors),
            "fatal": self.fatal.one_line if self.fatal is not None else None,
            "stopped": self.stopped,
        }

    def should_stop(self) -> bool:
        """True once the run must end early: a fatal error, or a stop request between batches."""
        if self.fatal is None and not self.stopped and stop_requested():
            self.stopped = True
        return self.fatal is not None or self.stopped

    def error(self, batch: ModelCompletionBatch | None, error: Exception) -> None:
        text = _error_text(error)
        self.errors.append(f"batch {batch.pk}: {text}" if batch is not None else text)


def _error_text(error: BaseException) -> str:
    """One line, whatever the error: our own errors by their message, others by their type."""
    if isinstance(error, ProviderError):
        return error.one_line
    text = " ".join(str(error).split())
    if not isinstance(error, BatchStateError | InvalidBatchRequest):
        text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text[:500]


class _Strategies(dict[str, BatchStrategy]):
    """One strategy (and so one HTTP session) per provider for the whole run."""

    def __missing__(self, provider: str) -> BatchStrategy:
        strategy = get_strategy(provider)
        self[provider] = strategy
        return strategy


# --- claiming -------------------------------------------------------------------------------


def claim_batches(
    queryset: QuerySet[ModelCompletionBatch],
    *,
    limit: int | None = None,
    worker: str = WORKER_ID,
) -> list[ModelCompletionBatch]:
    """Take a lease on up to ``limit`` unclaimed batches of ``queryset``, skipping locked rows.

    The lease is counted on the database's clock, the one clock every host shares.
    """
    lease = timedelta(seconds=float(get_setting("LEASE_SECONDS")))
    skip_locked = connection.features.has_select_for_update_skip_locked
    with transaction.atomic():
        now = db_now()
        candidates = (
            cast(ModelCompletionBatchQuerySet, queryset)
            .claimable(now)
            .order_by(F("next_poll_at").asc(nulls_first=True), "pk")
            .select_for_update(skip_locked=skip_locked)
        )
        if limit:
            candidates = candidates[:limit]
        ids = list(candidates.values_list("pk", flat=True))
        if ids:
            ModelCompletionBatch.objects.filter(pk__in=ids).update(
                claimed_by=worker, claimed_until=now + lease
            )
    return list(ModelCompletionBatch.objects.filter(pk__in=ids).order_by("pk"))


def release_all(batches: Iterable[ModelCompletionBatch], worker: str = WORKER_ID) -> None:
    ids = [batch.pk for batch in batches]
    if ids:
        ModelCompletionBatch.objects.filter(pk__in=ids, claimed_by=worker).update(
            claimed_by="", claimed_until=None
        )


def _restrict(
    queryset: QuerySet[ModelCompletionBatch], batch_ids: Sequence[int] | None
) -> QuerySet[ModelCompletionBatch]:
    return queryset.filter(pk__in=batch_ids) if batch_ids else queryset


# --- submit ---------------------------------------------------------------------------------


def submit(
    batch_ids: Sequence[int] | None = None,
    *,
    limit: int | None = None,
    worker: str = WORKER_ID,
) -> RunReport:
    """Submit pending batches, and resume submissions that were interrupted."""
    report = RunReport()
    strategies = _Strategies()
    queryset = _restrict(
        ModelCompletionBatch.objects.filter(
            status__in=(BatchStatus.PENDING, BatchStatus.SUBMITTING)
        ),
        batch_ids,
    )
    claimed = claim_batches(queryset, limit=limit, worker=worker)
    report.claimed = len(claimed)
    try:
        _submit_all(claimed, strategies, worker, report)
    finally:
        release_all(claimed, worker)
    return report


def _submit_all(
    batches: list[ModelCompletionBatch],
    strategies: _Strategies,
    worker: str,
    report: RunReport,
) -> None:
    """Submit or resume claimed batches; lost creates are looked up with one read of each
    provider's batch list for the whole run, not one per batch."""
    listings = _read_listings(batches, strategies, report)
    for batch in batches:
        if report.should_stop():
            break
        _submit_one(strategies[batch.provider], batch, worker, report, listings.get(batch.provider))


def _read_listings(
    batches: list[ModelCompletionBatch], strategies: _Strategies, report: RunReport
) -> dict[str, BatchListing]:
    now = db_now()
    due: dict[str, list[ModelCompletionBatch]] = {}
    for batch in batches:
        at = BatchStrategy.reconcile_due_at(batch)
        if batch.status == BatchStatus.SUBMITTING and at is not None and at <= now:
            due.setdefault(batch.provider, []).append(batch)
    listings: dict[str, BatchListing] = {}
    for provider, group in due.items():
        try:
            listings[provider] = strategies[provider].look_up_names(group)
        except ProviderAuthenticationError as error:
            report.fatal = error
            break
    return listings


def _submit_one(
    strategy: BatchStrategy,
    batch: ModelCompletionBatch,
    worker: str,
    report: RunReport,
    listing: BatchListing | None = None,
) -> None:
    try:
        result = strategy.submit(batch, worker=worker, listing=listing)
    except BatchBusy:
        report.skipped_busy += 1
    except ModelCompletionBatch.DoesNotExist:
        report.notes.append(f"batch {batch.pk}: deleted while this run held it; skipped")
    except DuplicateSubmission as error:
        report.notes.append(str(error))
    except AmbiguousSubmission as error:
        report.notes.append(
            f"batch {batch.pk}: {error.one_line} (it will be looked up by name on a later run)"
        )
    except ProviderAuthenticationError as error:
        report.fatal = error
    except (ProviderError, BatchStateError, InvalidBatchRequest) as error:
        report.error(batch, error)
    else:
        if result.provider_batch_id:
            report.submitted.append(result.pk)
        else:
            report.notes.append(f"batch {batch.pk}: submission awaits reconciliation")


# --- poll -----------------------------------------------------------------------------------


def poll(
    batch_ids: Sequence[int] | None = None,
    *,
    force: bool = False,
    limit: int | None = None,
    worker: str = WORKER_ID,
) -> RunReport:
    """Refresh due batches, cancel those past their age, harvest the terminal ones, once.

    ``force`` treats every in-flight batch as due, and every batch awaiting harvest too, even
    one whose next read of lagging results is not due yet.
    """
    now = db_now()
    report = RunReport()
    strategies = _Strategies()
    if force:
        due = Q(status__in=IN_FLIGHT_STATUSES) | Q(status=BatchStatus.SUBMITTING)
        queryset = ModelCompletionBatch.objects.filter(due)
    else:
        queryset = ModelCompletionBatch.objects.due_for_poll(now)
    work = queryset | _harvest_due(ModelCompletionBatch.objects.awaiting_harvest(), now, force)
    work = work | ModelCompletionBatch.objects.awaiting_handler()
    claimed = claim_batches(_restrict(work, batch_ids), limit=limit, worker=worker)
    report.claimed = len(claimed)
    try:
        _drive(claimed, strategies, worker, report, force=force)
    finally:
        release_all(claimed, worker)
    return report


def _harvest_due(
    queryset: QuerySet[ModelCompletionBatch], now: datetime, force: bool = False
) -> QuerySet[ModelCompletionBatch]:
    """Batches awaiting harvest whose next read is due (lagging results are read with backoff)."""
    if force:
        return queryset
    return queryset.filter(Q(results_next_read_at__isnull=True) | Q(results_next_read_at__lte=now))


def _drive(
    claimed: list[ModelCompletionBatch],
    strategies: _Strategies,
    worker: str,
    report: RunReport,
    *,
    force: bool = False,
) -> None:
    max_age = timedelta(seconds=float(get_setting("MAX_BATCH_AGE")))
    now = db_now()  # the deadline is the same for every host, whatever its own clock says
    to_read: list[ModelCompletionBatch] = []
    _submit_all(
        [batch for batch in claimed if batch.status == BatchStatus.SUBMITTING],
        strategies,
        worker,
        report,
    )
    for batch in claimed:
        if report.should_stop():
            return
        if batch.status in IN_FLIGHT_STATUSES:
            if batch.cancel_requested_at is None and now - _age_start(batch) > max_age:
                try:
                    strategies[batch.provider].cancel(batch, reason="deadline")
                    report.cancelled_for_age.append(batch.pk)
                except ModelCompletionBatch.DoesNotExist:
                    continue  # deleted by another process meanwhile
                except ProviderAuthenticationError as error:
                    report.fatal = error
                except (ProviderError, BatchStateError) as error:
                    report.error(batch, error)
                except Exception as error:
                    _note_on_batch(batch, error)
                    report.error(batch, error)
            else:
                to_read.append(batch)
    _refresh_concurrently(to_read, strategies, report)
    if report.should_stop():
        return
    ids = [batch.pk for batch in claimed]
    due = _harvest_due(ModelCompletionBatch.objects.awaiting_harvest(), db_now(), force)
    for batch in due.filter(pk__in=ids):
        _harvest_one(strategies[batch.provider], batch, report)
        if report.should_stop():
            return
    for batch in ModelCompletionBatch.objects.awaiting_handler().filter(pk__in=ids):
        if report.should_stop():
            return
        try:
            called = run_handler(batch)
        except ModelCompletionBatch.DoesNotExist:
            continue
        if called:
            report.handlers_called += 1


def _refresh_concurrently(
    batches: list[ModelCompletionBatch], strategies: _Strategies, report: RunReport
) -> None:
    """Read every batch's status over HTTP in parallel, then store each under its row lock."""
    if not batches:
        return
    for batch in batches:
        _ = strategies[batch.provider]  # build clients before the threads share them

    def read(batch: ModelCompletionBatch) -> BatchSnapshot | Exception:
        try:
            return strategies[batch.provider].get_provider_batch(batch.provider_batch_id)
        except Exception as error:  # reported below, on the calling thread
            return error

    # The first read goes alone: a rejected key then stops the run after one call instead of
    # one call per batch.
    snapshots = [read(batches[0])]
    if not isinstance(snapshots[0], ProviderAuthenticationError) and len(batches) > 1:
        workers = min(int(get_setting("POLL_CONCURRENCY")), len(batches) - 1)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="raif-poll") as pool:
            snapshots.extend(pool.map(read, batches[1:]))
    now = db_now()  # one read of the database clock for every snapshot of this run
    for batch, snapshot in zip(batches, snapshots, strict=False):
        if isinstance(snapshot, ProviderAuthenticationError):
            _note_on_batch(batch, snapshot)
            report.fatal = snapshot
            return
        if isinstance(snapshot, Exception):
            # Any answer that could not be read (an error, a date past year 9999, JSON nested
            # too deep, a bad encoding…) is this batch's fault only.
            _note_on_batch(batch, snapshot, kind="unreadable answer")
            report.error(batch, snapshot)
            continue
        try:
            strategies[batch.provider].apply_snapshot(batch.pk, snapshot, now=now)
        except ModelCompletionBatch.DoesNotExist:
            continue  # deleted by another process meanwhile
        except Exception as error:
            _note_on_batch(batch, error)
            report.error(batch, error)
            continue
        report.refreshed += 1


def _note_on_batch(
    batch: ModelCompletionBatch, error: BaseException, *, kind: str = "unexpected error"
) -> None:
    """Show why a batch is not moving, without changing its status.

    A batch's own failure (a rejection, an expiry, a deadline) stays shown: the note would hide
    why the batch ended.
    """
    if isinstance(error, ProviderError):
        kind, reason = error.kind, str(error)
    else:
        reason = _error_text(error)
    try:
        ModelCompletionBatch.objects.filter(pk=batch.pk, results_fetched_at__isnull=True).exclude(
            failure_error__in=OWN_FAILURE_KINDS
        ).update(failure_error=kind[:255], failure_reason=_clean(reason))
    except Exception:  # the note is a courtesy: never let it stop the run
        logger.warning("Batch %s: could not record %s", batch.pk, _error_text(error))


# --- harvest --------------------------------------------------------------------------------


def harvest(
    batch_ids: Sequence[int] | None = None,
    *,
    limit: int | None = None,
    worker: str = WORKER_ID,
) -> RunReport:
    """Fetch the results of terminal batches whose results are not fetched yet."""
    report = RunReport()
    strategies = _Strategies()
    queryset: QuerySet[ModelCompletionBatch] = ModelCompletionBatch.objects.awaiting_harvest()
    if not batch_ids:
        # Named batches are read now; the others when their next read of results is due.
        queryset = _harvest_due(queryset, db_now())
    claimed = claim_batches(_restrict(queryset, batch_ids), limit=limit, worker=worker)
    report.claimed = len(claimed)
    try:
        for batch in claimed:
            if report.should_stop():
                break
            _harvest_one(strategies[batch.provider], batch, report)
            if report.fatal:
                break
            try:
                if run_handler(batch):
                    report.handlers_called += 1
            except ModelCompletionBatch.DoesNotExist:
                continue
    finally:
        release_all(claimed, worker)
    return report


def _harvest_one(strategy: BatchStrategy, batch: ModelCompletionBatch, report: RunReport) -> None:
    try:
        report.results_applied += strategy.fetch_results(batch)
    except ModelCompletionBatch.DoesNotExist:
        return  # deleted by another process meanwhile
    except ProviderAuthenticationError as error:
        report.fatal = error
        return
    except BatchStateError as error:
        report.error(batch, error)
        return
    except Exception as error:
        _note_on_batch(batch, error)
        report.error(batch, error)
        return
    state = (
        ModelCompletionBatch.objects.filter(pk=batch.pk)
        .values("results_fetched_at", "results_stored_count", "request_counts")
        .first()
    )
    if state is None:
        return
    if state["results_fetched_at"] is not None:
        report.finished.append(batch.pk)
    else:
        # Results lag behind the counters: a condition that resolves on a later run.
        counts = state["request_counts"] or {}
        report.notes.append(
            f"batch {batch.pk}: {state['results_stored_count']} of "
            f"{_finished_count(counts)} results served so far; reading again later"
        )


def _finished_count(counts: dict[str, Any]) -> int:
    total = 0
    for key in ("succeeded", "failed"):
        try:
            total += int(counts.get(key) or 0)
        except (TypeError, ValueError):
            pass
    return total


def _clean(text: str) -> str:
    """Text the database accepts (no NUL, no lone surrogate)."""
    return clean_text(text)[0]


# --- completion handlers --------------------------------------------------------------------


def run_handler(batch: ModelCompletionBatch, worker: str = WORKER_ID) -> bool:
    """Call the batch's handler once its results are stored; True when it succeeded now.

    Called outside any lock or transaction. The call itself is claimed under the row lock
    (``handler_claimed_by``/``handler_claimed_until``, HANDLER_LEASE_SECONDS on the database's
    clock), so two workers never run it at the same time, whatever their batch leases do. A
    handler that raises is recorded on the batch and tried again on a later run, up to
    ``HANDLER_MAX_ATTEMPTS``; after a success it is never called again. (Should the process
    die during the handler or before its success is recorded, the claim lapses and the handler
    runs again: make it idempotent.) A batch deleted meanwhile is skipped.
    """
    if not batch.handler:
        return False
    max_attempts = int(get_setting("HANDLER_MAX_ATTEMPTS"))
    lease = timedelta(seconds=float(get_setting("HANDLER_LEASE_SECONDS")))
    try:
        with transaction.atomic():
            locked = BatchStrategy.lock(batch.pk)
            now = db_now()
            if (
                locked.results_fetched_at is None
                or locked.handler_called_at is not None
                or locked.handler_gave_up
                or (
                    locked.handler_claimed_until is not None
                    and locked.handler_claimed_until > now
                    and locked.handler_claimed_by != worker
                )
            ):
                return False
            locked.handler_attempts += 1
            locked.handler_claimed_by = worker
            locked.handler_claimed_until = now + lease
            locked.save(
                update_fields=["handler_attempts", "handler_claimed_by", "handler_claimed_until"]
            )
    except ModelCompletionBatch.DoesNotExist:
        return False
    outcome: dict[str, Any]
    try:
        function: Any = import_string(locked.handler)
        function(locked)
    except Exception as error:
        logger.exception("Handler %s of batch %s failed", locked.handler, locked.pk)
        outcome = {
            "handler_error": f"{type(error).__name__}: {error}"[:2000],
            "handler_gave_up": locked.handler_attempts >= max_attempts,
        }
        succeeded = False
    else:
        outcome = {"handler_called_at": db_now(), "handler_error": ""}
        succeeded = True
    # Written only while the claim is still this call's; a deleted batch updates nothing.
    ModelCompletionBatch.objects.filter(pk=batch.pk, handler_claimed_by=worker).update(
        handler_claimed_by="", handler_claimed_until=None, **outcome
    )
    return succeeded


def _age_start(batch: ModelCompletionBatch) -> datetime:
    """A batch's age counts from its submission: time spent pending costs nothing."""
    return batch.submitted_at or batch.created_at
