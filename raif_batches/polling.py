"""The runner: claimed runs over many batches (submit / poll / harvest), each a RunReport.

The life of one batch is :mod:`raif_batches.lifecycle`'s and its handler
:mod:`raif_batches.handlers`'; this module picks the batches that are due, claims them through
the model's lease (``objects.claim()``/``release()``), and calls the lifecycle with one provider
object per provider for the whole run.

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
import threading
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from django.db.models import Q, QuerySet

from .clock import db_now
from .conf import get_setting
from .exceptions import (
    AmbiguousSubmission,
    BatchBusy,
    BatchConfigurationError,
    BatchStateError,
    DuplicateSubmission,
    InvalidBatchRequest,
    ProviderAuthenticationError,
    ProviderError,
)
from .handlers import run_handler
from .lifecycle import results, status, submission
from .lifecycle.transitions import count_of, error_text, note_on_batch, would_end
from .models import (
    IN_FLIGHT_STATUSES,
    WORKER_ID,
    BatchStatus,
    FailureKind,
    ModelCompletionBatch,
    ModelCompletionBatchQuerySet,
)
from .providers import get_strategy
from .providers.base import BatchListing, BatchSnapshot, BatchStrategy, ResultEntry
from .readahead import Readers, wait_all
from .stopping import stop_requested

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
        text = error_text(error)
        self.errors.append(f"batch {batch.pk}: {text}" if batch is not None else text)


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
    """Take a lease on up to ``limit`` unclaimed batches of ``queryset``, skipping locked rows
    (:meth:`ModelCompletionBatchQuerySet.claim`)."""
    return cast(ModelCompletionBatchQuerySet, queryset).claim(worker, limit=limit)


def release_all(batches: Iterable[ModelCompletionBatch], worker: str = WORKER_ID) -> None:
    ids = [batch.pk for batch in batches]
    if ids:
        ModelCompletionBatch.objects.filter(pk__in=ids).release(worker)


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
        ModelCompletionBatch.objects.submittable(),
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
        at = submission.reconcile_due_at(batch)
        if batch.status == BatchStatus.SUBMITTING and at is not None and at <= now:
            due.setdefault(batch.provider, []).append(batch)
    listings: dict[str, BatchListing] = {}
    for provider, group in due.items():
        try:
            listings[provider] = submission.look_up_names(strategies[provider], group)
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
        result = submission.submit(strategy, batch, worker=worker, listing=listing)
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
    except (ProviderError, BatchStateError, InvalidBatchRequest, BatchConfigurationError) as error:
        # A provider without a key stops only its own batches.
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
        queryset = ModelCompletionBatch.objects.pollable()
    else:
        queryset = ModelCompletionBatch.objects.due_for_poll(now)
    work = queryset | _harvest_due(ModelCompletionBatch.objects.awaiting_harvest(), now, force)
    work = work | ModelCompletionBatch.objects.awaiting_handler()
    claimed = claim_batches(_restrict(work, batch_ids), limit=limit, worker=worker)
    report.claimed = len(claimed)
    released: set[int] = set()  # given back as soon as this run was done with them
    try:
        _drive(claimed, strategies, worker, report, force=force, released=released)
    finally:
        release_all([batch for batch in claimed if batch.pk not in released], worker)
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
    released: set[int],
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
                    status.cancel(strategies[batch.provider], batch, reason="deadline")
                    report.cancelled_for_age.append(batch.pk)
                except ModelCompletionBatch.DoesNotExist:
                    continue  # deleted by another process meanwhile
                except ProviderAuthenticationError as error:
                    report.fatal = error
                except (ProviderError, BatchStateError) as error:
                    report.error(batch, error)
                except Exception as error:
                    note_on_batch(batch, error)
                    report.error(batch, error)
            else:
                to_read.append(batch)
    prefetch = _Prefetch(strategies)
    try:
        _refresh_concurrently(
            to_read, strategies, report, worker=worker, released=released, prefetch=prefetch
        )
        if report.should_stop():
            return
        ids = [batch.pk for batch in claimed]
        due = _harvest_due(ModelCompletionBatch.objects.awaiting_harvest(), db_now(), force)
        _harvest_concurrently(
            _now_due(claimed, due.filter(pk__in=ids)), strategies, report, prefetch.futures
        )
    finally:
        prefetch.close()
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


def _now_due(
    claimed: list[ModelCompletionBatch], due: QuerySet[ModelCompletionBatch]
) -> list[ModelCompletionBatch]:
    """The claimed batches that ``due`` holds now, given what the harvest reads of a batch it
    is handed (the provider batch id, the counts) as the database has it now; every step that
    stores results locks the row and reads it again. Three columns rather than the whole
    rows again: 1,000 of those cost a poll in which they end a few hundred milliseconds, on
    the thread that stores while the readers parse."""
    fresh = {
        pk: (provider_batch_id, counts)
        for pk, provider_batch_id, counts in due.values_list(
            "pk", "provider_batch_id", "request_counts"
        )
    }
    batches = []
    for batch in claimed:
        if batch.pk in fresh:
            batch.provider_batch_id, batch.request_counts = fresh[batch.pk]
            batches.append(batch)
    return batches


#: How far before the oldest polled batch's submission the provider's list is read (clock
#: differences between the provider and the database).
LIST_POLL_MARGIN = timedelta(minutes=10)


def _read_lists(
    batches: list[ModelCompletionBatch], strategies: _Strategies
) -> dict[str, BatchSnapshot | Exception]:
    """Snapshots of the polled batches that their providers' lists hold, read in a few calls
    sent together (:func:`status.read_listed`, back to the oldest of them), where a provider's
    list serves that; the others are read one by one. A list that cannot be read costs
    nothing but the fallback."""
    by_provider: dict[str, list[ModelCompletionBatch]] = {}
    for batch in batches:
        by_provider.setdefault(batch.provider, []).append(batch)
    found: dict[str, BatchSnapshot | Exception] = {}
    for provider, group in by_provider.items():
        strategy = strategies[provider]
        if len(group) < 2 or not strategy.batch_list_newest_first or not strategy.list_page_size:
            continue
        group.sort(key=lambda b: (_submitted_at(b), b.pk), reverse=True)  # the list's order
        try:
            listed = status.read_listed(
                strategy,
                [batch.provider_batch_id for batch in group],
                _submitted_at(group[-1]) - LIST_POLL_MARGIN,
                threads=int(get_setting("POLL_CONCURRENCY")),
            )
        except ProviderAuthenticationError as error:
            return {batch.provider_batch_id: error for batch in group[:1]}
        found.update(listed)
    return found


def _submitted_at(batch: ModelCompletionBatch) -> datetime:
    return batch.submitted_at or batch.create_attempted_at or batch.created_at


def _refresh_concurrently(
    batches: list[ModelCompletionBatch],
    strategies: _Strategies,
    report: RunReport,
    *,
    worker: str,
    released: set[int],
    prefetch: _Prefetch | None = None,
) -> None:
    """Read every batch's status over HTTP in parallel, then store them all under their row
    locks in one write, which also gives back ``worker``'s leases on those still in flight
    (added to ``released``).

    The first results of the batches whose status read would end them are read at once
    (``prefetch``): by the thread that read the status, or, for a status read from a list, by
    the prefetch's own readers while the snapshots are stored.
    """
    if not batches:
        return
    for batch in batches:
        _ = strategies[batch.provider]  # build clients before the threads share them

    def read(batch: ModelCompletionBatch) -> BatchSnapshot | Exception:
        try:
            snapshot = strategies[batch.provider].get_provider_batch(batch.provider_batch_id)
        except Exception as error:  # reported below, on the calling thread
            return error
        if prefetch is not None:
            prefetch.read_now(batch, snapshot)
        return snapshot

    # Where the provider's list is sorted newest first, a few calls of it sent together serve
    # every batch it holds; the rest are read one by one, concurrently.
    listed = _read_lists(batches, strategies)
    pairs: list[tuple[ModelCompletionBatch, BatchSnapshot | Exception]] = [
        (batch, listed[batch.provider_batch_id])
        for batch in batches
        if batch.provider_batch_id in listed
    ]
    if prefetch is not None:
        for batch, answer in pairs:
            if isinstance(answer, BatchSnapshot):
                prefetch.queue(batch, answer)
    unlisted = [batch for batch in batches if batch.provider_batch_id not in listed]
    refused = any(isinstance(answer, ProviderAuthenticationError) for _, answer in pairs)
    if unlisted and not refused:
        # The first read goes alone: a rejected key then stops the run after one call instead
        # of one call per batch.
        first = read(unlisted[0])
        pairs.append((unlisted[0], first))
        if not isinstance(first, ProviderAuthenticationError) and len(unlisted) > 1:
            workers = min(int(get_setting("POLL_CONCURRENCY")), len(unlisted) - 1)
            with Readers(read, workers, name="raif-poll") as readers:
                futures = [readers.put(batch) for batch in unlisted[1:]]
                wait_all(futures)
            pairs.extend(zip(unlisted[1:], (f.result() for f in futures), strict=True))
    readable: list[tuple[int, BatchSnapshot]] = []
    for batch, snapshot in pairs:
        if isinstance(snapshot, ProviderAuthenticationError):
            note_on_batch(batch, snapshot)
            report.fatal = snapshot
            return
        if isinstance(snapshot, Exception):
            # Any answer that could not be read (an error, a date past year 9999, JSON nested
            # too deep, a bad encoding…) is this batch's fault only.
            note_on_batch(batch, snapshot, kind=FailureKind.UNREADABLE)
            report.error(batch, snapshot)
            continue
        readable.append((batch.pk, snapshot))
    # One transaction and one bulk write for every snapshot of this run, on one reading of the
    # database clock; a batch deleted meanwhile is simply not among the stored.
    outcome = status.apply_snapshots(readable, now=db_now(), release=worker)
    released.update(outcome.released)
    report.refreshed += len(outcome.stored)
    by_pk = {batch.pk: batch for batch in batches}
    for pk, error in outcome.errors.items():
        note_on_batch(by_pk[pk], error)
        report.error(by_pk[pk], error)


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


#: Results of batches read ahead while others are stored, in pages of RESULTS_PAGE_SIZE: a
#: bound on memory whatever POLL_CONCURRENCY is (1,000 small batches fit at once; batches of
#: 50,000 lines are read a few at a time).
HARVEST_AHEAD_PAGES = 4


class _Prefetch:
    """The first results of the batches whose status read would end them
    (:func:`~raif_batches.lifecycle.transitions.would_end`), read before their snapshots are
    stored, so that the reads of statuses and of results overlap instead of coming one phase
    after the other; the harvest then takes them from ``futures``. HTTP only; a wrong guess
    costs a read. Only batches under a page of results, within the harvest's bound on memory.
    """

    def __init__(self, strategies: _Strategies) -> None:
        self.futures: dict[int, Future[results.OpenedResults]] = {}
        self._strategies = strategies
        self._budget = _ResultsBudget()
        self._now = db_now()  # earlier than the clock the snapshots are stored on: cautious
        self._readers: Readers[tuple[ModelCompletionBatch, BatchSnapshot], Any] | None = None

    def _wanted(self, batch: ModelCompletionBatch, snapshot: BatchSnapshot) -> bool:
        total = count_of(snapshot.counts, "total")
        return (
            total < self._budget.page
            and would_end(batch, snapshot, self._now)
            and self._budget.take(max(total, 1))
        )

    def _open(self, work: tuple[ModelCompletionBatch, BatchSnapshot]) -> results.OpenedResults:
        batch, snapshot = work
        strategy = self._strategies[batch.provider]
        return results.open_result_pages(strategy, batch.provider_batch_id, snapshot)

    def read_now(self, batch: ModelCompletionBatch, snapshot: BatchSnapshot) -> None:
        """In the thread that read the status."""
        if self._wanted(batch, snapshot):
            self.futures[batch.pk] = _done(self._open((batch, snapshot)))

    def queue(self, batch: ModelCompletionBatch, snapshot: BatchSnapshot) -> None:
        """From the calling thread: read by the prefetch's own threads."""
        if self._wanted(batch, snapshot):
            if self._readers is None:
                workers = int(get_setting("POLL_CONCURRENCY"))
                self._readers = Readers(self._open, workers, name="raif-prefetch")
            self.futures[batch.pk] = self._readers.put((batch, snapshot))

    def close(self) -> None:
        if self._readers is not None:
            self._readers.close()


class _ResultsBudget:
    """Results read ahead of their harvest, counted from any thread, within
    HARVEST_AHEAD_PAGES pages of RESULTS_PAGE_SIZE."""

    def __init__(self) -> None:
        self.page = max(1, int(get_setting("RESULTS_PAGE_SIZE")))
        self._left = self.page * HARVEST_AHEAD_PAGES
        self._lock = threading.Lock()

    def take(self, results: int) -> bool:
        with self._lock:
            if results > self._left:
                return False
            self._left -= results
            return True


def _harvest_concurrently(
    batches: list[ModelCompletionBatch],
    strategies: _Strategies,
    report: RunReport,
    prefetched: Mapping[int, Future[results.OpenedResults]] | None = None,
) -> None:
    """Harvest many batches, their results read over HTTP in parallel, stored on this thread.

    The first results of the batches are read in POLL_CONCURRENCY threads (HTTP and parsing
    only, :class:`~raif_batches.readahead.Readers`), within HARVEST_AHEAD_PAGES pages' worth
    of results expected from their counts; more are queued as batches are taken. Batches
    whose results came whole (fewer than a page) are stored together, a page's worth in one
    transaction
    (:func:`results.fetch_whole_results`); a bigger one is stored alone, reading its further
    pages as it goes. 1,000 small batches that end in one poll then cost about the time of
    their reads divided by the concurrency, and a few statements per page of results.
    ``prefetched``: results already read with the batches' statuses (their memory counted
    there), used instead of a read.
    """
    prefetched = prefetched or {}
    if not batches:
        return
    batches = sorted(batches, key=lambda batch: (batch.provider, batch.pk))
    for batch in batches:
        _ = strategies[batch.provider]  # build clients before the threads share them
    size = max(1, int(get_setting("RESULTS_PAGE_SIZE")))
    workers = max(1, min(int(get_setting("POLL_CONCURRENCY")), len(batches)))
    readers: Readers[ModelCompletionBatch, results.OpenedResults] = Readers(
        lambda batch: results.open_result_pages(
            strategies[batch.provider], batch.provider_batch_id
        ),
        workers,
        name="raif-harvest",
    )

    def expected(batch: ModelCompletionBatch) -> int:
        # A batch's first read holds up to a page; a bigger one has the next page in flight.
        total = count_of(batch.request_counts or {}, "total")
        return size * 2 if total > size else max(total, 1)

    ahead: list[Future[results.OpenedResults] | None] = []
    in_memory = 0

    def read_ahead(index: int) -> None:
        # As many reads queued as the bound on memory allows (``workers`` run at a time).
        nonlocal in_memory
        while len(ahead) < len(batches):
            batch = batches[len(ahead)]
            if len(ahead) > index and in_memory + expected(batch) > size * HARVEST_AHEAD_PAGES:
                return
            if batch.pk in prefetched:
                ahead.append(prefetched[batch.pk])
                continue
            in_memory += expected(batch)
            ahead.append(readers.put(batch) if batch.provider_batch_id else None)

    def wait_for_a_page(index: int) -> None:
        # Woken once for a page's worth of batches, not once per batch.
        end, total = index, 0
        while end < len(ahead) and (end == index or total + expected(batches[end]) <= size):
            total += expected(batches[end])
            end += 1
        wait_all(future for future in ahead[index:end] if future is not None)

    group: list[tuple[ModelCompletionBatch, list[ResultEntry]]] = []
    grouped = 0  # results in the group

    def store_group() -> None:
        nonlocal grouped
        if group:
            _harvest_whole(strategies[group[0][0].provider], list(group), report)
            group.clear()
            grouped = 0

    try:
        for index, batch in enumerate(batches):
            if index and report.should_stop():
                break
            read_ahead(index)
            future = ahead[index]
            if future is not None and not future.done():
                wait_for_a_page(index)
            opened = future.result() if future is not None else None
            if batch.pk not in prefetched:
                in_memory -= expected(batch)
            if opened is not None and opened.whole is not None:
                if group and (
                    group[0][0].provider != batch.provider or grouped + len(opened.whole) > size
                ):
                    store_group()
                group.append((batch, opened.whole))
                grouped += len(opened.whole)
                continue
            store_group()
            pages = opened.pages if opened is not None else None
            _harvest_one(strategies[batch.provider], batch, report, pages=pages)
            if report.fatal is not None:
                return
        store_group()  # the batches in hand are stored, even when a stop was asked
    finally:
        readers.close()


def _done(value: results.OpenedResults) -> Future[results.OpenedResults]:
    future: Future[results.OpenedResults] = Future()
    future.set_result(value)
    return future


def _harvest_whole(
    strategy: BatchStrategy,
    group: list[tuple[ModelCompletionBatch, list[ResultEntry]]],
    report: RunReport,
) -> None:
    """Store batches read whole in one transaction; should it fail, each batch alone, so
    that one batch's fault is its own (their results are still in memory)."""
    try:
        applied, stored, left = results.fetch_whole_results(strategy, group)
    except Exception as error:
        logger.warning(
            "Storing the results of %d batches at once failed (%s); storing each alone",
            len(group),
            error_text(error),
        )
        applied, stored, left = 0, [], group
    report.results_applied += applied
    for locked in stored:
        _report_harvest(report, locked.pk, _harvest_state(locked))
    for batch, entries in left:
        _harvest_one(strategy, batch, report, pages=iter([entries]))
        if report.fatal is not None:
            return


def _harvest_state(batch: ModelCompletionBatch) -> dict[str, Any]:
    return {
        "results_fetched_at": batch.results_fetched_at,
        "results_stored_count": batch.results_stored_count,
        "request_counts": batch.request_counts,
    }


def _harvest_one(
    strategy: BatchStrategy,
    batch: ModelCompletionBatch,
    report: RunReport,
    *,
    pages: Any = None,
) -> None:
    try:
        report.results_applied += results.fetch_results(strategy, batch, pages=pages)
    except ModelCompletionBatch.DoesNotExist:
        return  # deleted by another process meanwhile
    except ProviderAuthenticationError as error:
        report.fatal = error
        return
    except BatchStateError as error:
        report.error(batch, error)
        return
    except Exception as error:
        note_on_batch(batch, error)
        report.error(batch, error)
        return
    state = (
        ModelCompletionBatch.objects.filter(pk=batch.pk)
        .values("results_fetched_at", "results_stored_count", "request_counts")
        .first()
    )
    if state is not None:
        _report_harvest(report, batch.pk, state)


def _report_harvest(report: RunReport, pk: int, state: Mapping[str, Any]) -> None:
    if state["results_fetched_at"] is not None:
        report.finished.append(pk)
    else:
        # Results lag behind the counters: a condition that resolves on a later run.
        counts = state["request_counts"] or {}
        report.notes.append(
            f"batch {pk}: {state['results_stored_count']} of "
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


def _age_start(batch: ModelCompletionBatch) -> datetime:
    """A batch's age counts from its submission: time spent pending costs nothing."""
    return batch.submitted_at or batch.created_at
