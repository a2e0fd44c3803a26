"""Results: fetch them page by page, apply each page, finish the harvest.

The rules it keeps:

* a result is applied only to a completion that is still pending (or, for a success, to one
  the provider's error for the same id failed earlier in the harvest), so applying a page twice
  changes nothing, and results are fetched whatever the batch's end;
* a harvest never ends short of the outcomes the provider's counters report: it is read again
  later, with backoff, up to ``RESULTS_WAIT_SECONDS``; one line that cannot be stored is
  cleaned or failed alone (:mod:`raif_batches.storable`);
* every write happens on the batch's row taken with ``locked()``, and no transaction is open
  across an HTTP call (the next page is read while this one is stored, see
  :mod:`raif_batches.readahead`);
* decisions in time (waits for results) read the database clock.

The provider is reached only through ``iter_result_pages`` (and the prices through
:mod:`raif_batches.pricing`).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import DatabaseError, connection, transaction
from django.db.models import BooleanField, Count, Q, Sum
from django.db.models.expressions import RawSQL
from django.utils import timezone

from .. import signals
from ..bulk import update_from_values
from ..clock import db_now
from ..conf import get_setting
from ..exceptions import BatchStateError, ProviderError, ProviderNotFound
from ..models import (
    OWN_FAILURE_KINDS,
    PROVIDER_ERROR_KINDS,
    UNCOUNTED_KINDS,
    BatchStatus,
    CompletionStatus,
    FailureKind,
    ModelCompletion,
    ModelCompletionBatch,
)
from ..pricing import ModelPrice, completion_cost, price_for
from ..providers.base import BatchSnapshot, BatchStrategy, ResultEntry, ResultPage
from ..storable import CLEANED_KEY, clean_json, clean_text, cost_fits, storable_count
from .transitions import FAILURE_TEXT_LIMIT, count_of, one_line

logger = logging.getLogger("raif_batches")

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


class Prices(dict[str, ModelPrice | None]):
    """Model prices, read from settings once per harvest rather than once per row."""

    def __missing__(self, model: str) -> ModelPrice | None:
        price = price_for(model)
        self[model] = price
        return price


def fetch_results(
    strategy: BatchStrategy,
    batch: ModelCompletionBatch,
    *,
    pages: Iterator[list[ResultEntry]] | None = None,
) -> int:
    """Fetch and store the results of a terminal batch. Returns results applied.

    ``pages`` is the batch's ``iter_result_pages`` already opened by the caller (the runner
    reads the first pages of many batches at once, see :func:`open_result_pages`); by default
    they are read here.

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
    prices = Prices()  # as configured now, for this whole harvest
    applied = unreadable = 0
    if batch.provider_batch_id:
        try:
            if pages is None:
                pages = strategy.iter_result_pages(batch.provider_batch_id)
            for page in pages:
                applied += apply_result_page(batch, page, prices)
                unreadable += getattr(page, "unreadable", 0)
        except ProviderError as error:
            if not _results_gone(error) or not _results_gone_for_good(batch, error):
                raise
            finish_results(batch, unavailable=error)
            return applied
    # Entries skipped as unreadable (not JSON, no custom id) may have been some of our lines:
    # a body bent on the way (a proxy, a cut file) is read again before they are failed.
    finish_results(batch, counters_lead=strategy.results_lag_counters, unreadable=unreadable > 0)
    return applied


@dataclass(frozen=True)
class OpenedResults:
    """A batch's result pages with the first ones already read (:func:`open_result_pages`).

    ``whole``: every result the provider served, when they came in fewer than
    ``RESULTS_PAGE_SIZE`` entries (the pages ended there); None when there are more to read
    from ``pages``, or when reading failed (``pages`` then raises the fault).
    """

    pages: Iterator[list[ResultEntry]]
    whole: list[ResultEntry] | None = None


def open_result_pages(
    strategy: BatchStrategy, provider_batch_id: str, ended_by: BatchSnapshot | None = None
) -> OpenedResults:
    """Read a batch's first result pages (HTTP only, any thread), until the provider has no
    more or ``RESULTS_PAGE_SIZE`` results are read. ``ended_by``: the provider's answer that
    ends the batch, which may save a call (:meth:`BatchStrategy.iter_result_pages_after`).

    What reading raised is raised again where that page would have been, so the caller
    (:func:`fetch_results`) meets the fault as if it had read the page itself.
    """
    limit = max(1, int(get_setting("RESULTS_PAGE_SIZE")))
    read: list[list[ResultEntry]] = []
    count = 0
    try:
        if ended_by is not None:
            pages = strategy.iter_result_pages_after(ended_by)
        else:
            pages = strategy.iter_result_pages(provider_batch_id)
        while count < limit:
            page = next(pages, None)
            if page is None:
                whole = ResultPage(entry for page in read for entry in page)
                whole.unreadable = sum(getattr(page, "unreadable", 0) for page in read)
                return OpenedResults(iter(read), whole=whole)
            read.append(page)
            count += len(page)
    except Exception as error:
        return OpenedResults(itertools.chain(read, _raising(error)))
    return OpenedResults(itertools.chain(read, pages))


def _raising(error: Exception) -> Iterator[list[ResultEntry]]:
    raise error
    yield []  # pragma: no cover  (makes this a generator)


def _results_gone_for_good(batch: ModelCompletionBatch, error: ProviderError) -> bool:
    """Count one more "not found" on the results; True once the bound is reached, else the
    next read is scheduled (and the caller reports the error)."""
    now = db_now()
    wait = timedelta(seconds=float(get_setting("RESULTS_WAIT_SECONDS")))
    with transaction.atomic():
        locked = ModelCompletionBatch.objects.locked().get(pk=batch.pk)
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


def apply_result_page(
    batch: ModelCompletionBatch, entries: list[ResultEntry], prices: Prices | None = None
) -> int:
    """Apply one page of results in a few queries; idempotent. Returns rows changed.

    A result applies to a pending line; a success also replaces a provider error stored
    earlier in the harvest (the same id served twice, on another page), so the outcome does
    not depend on page boundaries, and an error never replaces anything but a pending line.
    A line whose values cannot be stored is failed alone, with the reason.
    """
    prices = prices if prices is not None else Prices()
    if not entries:
        return 0
    with transaction.atomic():
        locked = ModelCompletionBatch.objects.locked().get(pk=batch.pk)
        if locked.results_fetched_at is not None:
            return 0
        return _apply_locked([(locked, entries)], prices, timezone.now())


def _apply_locked(
    pages: list[tuple[ModelCompletionBatch, list[ResultEntry]]], prices: Prices, now: datetime
) -> int:
    """Apply pages of results of batches whose rows the caller's transaction has locked, in
    the same statements whatever their number: one read of the lines they name, one write
    (two when successes replace errors). Returns rows changed."""
    wanted: dict[tuple[int, str], tuple[ModelCompletionBatch, ResultEntry]] = {}
    for locked, entries in pages:
        pk = locked.pk
        for entry in entries:
            key = (pk, entry.custom_id)
            kept = wanted.get(key)
            if kept is None or (kept[1].completion is None and entry.completion is not None):
                wanted[key] = (locked, entry)
    if not wanted:
        return 0
    # The lines of these batches with these ids (a superset when batches share ids), by the
    # (batch, custom id) index; the pairs not wanted are passed over below.
    stored = ModelCompletion.objects.filter(
        _any_of("batch_id", sorted({pk for pk, _ in wanted})),
        _any_of("batch_custom_id", sorted({custom_id for _, custom_id in wanted})),
    ).values_list("pk", "batch_id", "batch_custom_id", "status", "failure_error", "response_format")
    # What each matched line becomes is decided here; its row is made as the write sends it
    # (see _rows), so that parsing the answers overlaps with the database storing them.
    to_pending: list[_Line] = []
    replacing: list[_Line] = []
    seen = set()
    for pk, batch_id, custom_id, status, failure_error, response_format in stored:
        found = wanted.get((batch_id, custom_id))
        if found is None:
            continue
        seen.add((batch_id, custom_id))
        locked, entry = found
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
        target.append((pk, locked, entry, response_format))
    for batch_id, custom_id in wanted.keys() - seen:
        logger.warning(
            "Batch %s: provider returned a result for unknown id %r; skipped",
            batch_id,
            custom_id,
        )
    for locked, _ in pages:
        _ = prices[locked.model]  # read before the write: none is read while a COPY is open
    # Matched on the primary key read above: with (batch, custom id) and the status
    # filter, PostgreSQL may probe the (batch, status) index and scan every pending row
    # of the batch for each result, when its statistics say that few rows are pending.
    changed = _store_rows(to_pending, now, prices, "t.status = %s", [PENDING])
    if replacing:
        changed += _store_rows(
            replacing,
            now,
            prices,
            "t.status = %s AND t.failure_error IN (%s, %s)",
            [CompletionStatus.FAILED, *PROVIDER_ERROR_KINDS],
        )
    finished: dict[int, list[str]] = {}
    for _, locked, entry, _ in (*to_pending, *replacing):
        finished.setdefault(locked.pk, []).append(entry.custom_id)
    for locked, _ in pages:  # one signal per batch's page, as for a page alone
        _completions_finished_on_commit(locked, finished.get(locked.pk, []))
    return changed


def _any_of(column: str, values: list[Any]) -> Q | RawSQL:
    """``column IN values`` (a completion column, named as its attribute); on PostgreSQL as
    ``= ANY`` of one array parameter: the same plan, for one parameter instead of a thousand
    that Django and psycopg prepare one by one (a tenth of a page's write)."""
    if connection.vendor != "postgresql":
        return Q(**{f"{column}__in": values})
    quoted = connection.ops.quote_name(column)
    return RawSQL(f"{quoted} = ANY(%s)", [values], output_field=BooleanField())


#: A line a page of results writes: its completion's pk, its locked batch, the result, and
#: the completion's response_format.
_Line = tuple[int, ModelCompletionBatch, ResultEntry, Any]


def _rows(lines: list[_Line], now: datetime, prices: Prices) -> Iterator[dict[str, Any]]:
    """The column values each line writes, made one at a time as they are read: by the
    ``COPY`` on PostgreSQL, while the server stores the rows before. Uses no database."""
    for pk, locked, entry, response_format in lines:
        try:
            row = result_row(locked, entry, response_format, now, prices)
        except Exception as error:  # one odd line must not stop the page
            row = _unstorable_row(locked.pk, entry.custom_id, error, now)
        row["id"] = pk
        yield row


def _completions_finished_on_commit(locked: ModelCompletionBatch, custom_ids: list[str]) -> None:
    def send() -> None:
        # The queryset is built only for a listener: 1,000 batches stored together would
        # otherwise build 1,000 of them for nobody.
        if signals.completions_finished.has_listeners(ModelCompletion):
            signals.completions_finished.send(
                sender=ModelCompletion,
                batch=locked,
                completions=ModelCompletion.objects.filter(
                    batch_id=locked.pk, batch_custom_id__in=custom_ids
                ),
            )

    transaction.on_commit(send)


def _store_rows(
    lines: list[_Line], now: datetime, prices: Prices, where: str, params: list[Any]
) -> int:
    """One statement for the page, its rows made as it sends them; should the database refuse
    it, row by row, failing only the rows it refuses (their reason says why)."""
    if not lines:
        return 0

    def store(part: Iterable[dict[str, Any]]) -> int:
        with _savepoint():
            return update_from_values(
                ModelCompletion,
                key_fields=("id",),
                set_fields=RESULT_FIELDS,
                rows=part,
                where=where,
                where_params=params,
            )

    made: list[dict[str, Any]] = []  # kept as they are sent, for a second try row by row
    rows = _rows(lines, now, prices)

    def kept() -> Iterator[dict[str, Any]]:
        for row in rows:
            made.append(row)
            yield row

    try:
        return store(kept())
    except STORE_ERRORS as error:
        made.extend(rows)  # those the refused statement had not read yet
        logger.warning(
            "Batch %s: a page of %d results was refused (%s); storing it row by row",
            ", ".join(sorted({str(row["batch"]) for row in made})),
            len(made),
            one_line(error),
        )
    changed = 0
    for row in made:
        try:
            changed += store([row])
            continue
        except STORE_ERRORS as error:
            failed = _unstorable_row(row["batch"], row["batch_custom_id"], error, timezone.now())
            failed["id"] = row["id"]
        # A failure row holds only plain values: should even it be refused, the fault is
        # not in this line but in the statement or the database, and is raised.
        changed += store([failed])
    return changed


def result_row(
    batch: ModelCompletionBatch,
    entry: ResultEntry,
    response_format: Any,
    now: datetime,
    prices: Prices,
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
        kind = {
            "cancelled": FailureKind.REQUEST_CANCELLED,
            "expired": FailureKind.REQUEST_EXPIRED,
        }.get(entry.not_run or "") or _failure_kind(message)
        row.update(
            status=CompletionStatus.FAILED,
            failure_error=kind,
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
    output_tokens = tokens["completion_tokens"] or 0
    if not parsed.reasoning_included:
        output_tokens += tokens["reasoning_tokens"] or 0
    cost = completion_cost(
        prices[batch.model],
        prompt_tokens=tokens["prompt_tokens"] or 0,
        cached_tokens=tokens["cached_tokens"] or 0,
        output_tokens=output_tokens,
        provider_ticks=parsed.cost_ticks,
        cache_write_tokens=storable_count(parsed.cache_write_tokens) or 0,
        cache_write_1h_tokens=storable_count(parsed.cache_write_1h_tokens) or 0,
    )
    if cleaned and isinstance(payload, dict):
        payload = {**payload, CLEANED_KEY: cleaned}
    row.update(
        status=COMPLETED,
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
            failure_error=FailureKind.UNSTORABLE,
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
                failure_error=FailureKind.INVALID_JSON,
                failure_reason=f"The answer is not valid JSON: {error}",
                completed_at=None,
                failed_at=now,
            )
    return row


def finish_results(
    batch: ModelCompletionBatch,
    *,
    unavailable: ProviderError | None = None,
    counters_lead: bool = True,
    unreadable: bool = False,
) -> ModelCompletionBatch:
    """Fail what the provider never answered, total the costs, mark the results fetched.

    With ``counters_lead`` (a provider whose results may lag its counters), not while results
    are missing that the provider's counters count (succeeded + failed): then the shortfall is
    recorded (``results_lacking_since``, ``results_stored_count``) and a later read scheduled
    (``results_next_read_at``, with backoff), until ``RESULTS_WAIT_SECONDS`` have passed since
    the first short harvest. Without it, what the provider served once the batch ended is the
    whole truth, unless ``unreadable`` (the read skipped entries it could not read) while lines
    are still pending: then they are waited for in the same way, since the skipped entries may
    have been theirs. ``unavailable`` (the results are gone) ends the harvest at once.
    """
    now = db_now()
    with transaction.atomic():
        locked = ModelCompletionBatch.objects.locked().get(pk=batch.pk)
        if locked.results_fetched_at is None:
            _finish_locked(
                [locked],
                now,
                unavailable=unavailable,
                counters_lead=counters_lead,
                unreadable={locked.pk} if unreadable else frozenset(),
            )
    return locked


def fetch_whole_results(
    strategy: BatchStrategy,
    harvests: Sequence[tuple[ModelCompletionBatch, list[ResultEntry]]],
) -> tuple[int, list[ModelCompletionBatch], list[tuple[ModelCompletionBatch, list[ResultEntry]]]]:
    """Store and finish the results of many batches, each read whole (``entries``: every
    result the provider served for it), in one transaction and the same few statements
    whatever their number: what :func:`fetch_results` does for each, a thousand small batches
    that end in one poll costing a dozen statements instead of a dozen each.

    The batches' rows are locked in one statement, in primary-key order. Returns (results
    applied, the batches stored, as locked and saved: harvested, or awaiting results that lag
    the counters; the harvests left to :func:`fetch_results`, one by one: a batch not
    terminal, deleted or harvested meanwhile, whose outcome that function reports). Should the
    database refuse the transaction, nothing of it is stored and the exception is raised: the
    caller stores each batch alone.
    """
    by_pk = {batch.pk: (batch, entries) for batch, entries in harvests}
    now = db_now()
    prices = Prices()
    with transaction.atomic():
        locked = [
            row
            for row in ModelCompletionBatch.objects.locked().filter(pk__in=by_pk).order_by("pk")
            if row.is_terminal and row.results_fetched_at is None
        ]
        applied = _apply_locked([(row, by_pk[row.pk][1]) for row in locked], prices, now)
        # As fetch_results: entries skipped as unreadable make the batch read again first.
        unreadable = {row.pk for row in locked if getattr(by_pk[row.pk][1], "unreadable", 0)}
        _finish_locked(
            locked, now, counters_lead=strategy.results_lag_counters, unreadable=unreadable
        )
    taken = {row.pk for row in locked}
    return applied, locked, [by_pk[pk] for pk in by_pk if pk not in taken]


#: The batch columns that finishing a harvest (or waiting for more of it) writes.
FINISH_FIELDS = (
    "request_counts",
    "failure_error",
    "failure_reason",
    "prompt_token_cost",
    "output_token_cost",
    "total_cost",
    "results_fetched_at",
    "results_next_read_at",
    "results_stored_count",
    "results_lacking_since",
    "results_read_attempts",
)


def _finish_locked(
    batches: Sequence[ModelCompletionBatch],
    now: datetime,
    *,
    counters_lead: bool,
    unavailable: ProviderError | None = None,
    unreadable: Collection[int] = frozenset(),
) -> None:
    """:func:`finish_results` for batches whose rows the caller's transaction has locked and
    whose results are not fetched yet: one tally of their lines, one update of the lines left
    pending (per reason), one write of the batches. ``unreadable``: the batches whose read
    skipped entries it could not read."""
    if not batches:
        return
    wait = float(get_setting("RESULTS_WAIT_SECONDS"))
    tallies = _tallies([batch.pk for batch in batches])
    pending_by_reason: dict[tuple[str, str], list[int]] = {}
    expired: list[int] = []
    finished: list[tuple[ModelCompletionBatch, dict[str, int]]] = []
    for locked in batches:
        tally = tallies.get(locked.pk) or NO_LINES
        reason = {
            BatchStatus.ENDED: (
                FailureKind.ENTRY_MISSING,
                "The provider returned no result for it.",
            ),
            BatchStatus.CANCELED: (
                FailureKind.BATCH_CANCELED,
                "The batch was canceled and the provider returned no result for it.",
            ),
            BatchStatus.EXPIRED: (
                FailureKind.BATCH_EXPIRED,
                "The batch expired and the provider returned no result for it.",
            ),
            BatchStatus.FAILED: (
                FailureKind.BATCH_FAILED,
                locked.failure_reason or "The provider failed the batch.",
            ),
        }[BatchStatus(locked.status)]
        short = None if unavailable is not None or not counters_lead else _short(locked, tally)
        if short is None and locked.pk in unreadable and unavailable is None:
            short = _lines_short(tally)
        if short is not None:
            stored, expected = short
            since = locked.results_lacking_since or now
            if now - since < timedelta(seconds=wait):
                _wait_for_results(locked, now, since, stored, expected)
                continue
            if locked.status == BatchStatus.ENDED and counters_lead:
                reason = (
                    FailureKind.ENTRY_MISSING,
                    "The provider counted this result but never served it, "
                    f"after waiting {wait:g} s.",
                )
            elif locked.status == BatchStatus.ENDED:
                reason = (
                    FailureKind.ENTRY_MISSING,
                    "The provider's results held entries that could not be read and none for "
                    f"this line, read again over {wait:g} s.",
                )
        if unavailable is not None:
            reason = (
                FailureKind.RESULTS_UNAVAILABLE,
                "Results no longer available: " + one_line(unavailable),
            )
        # Under the batch's lock no line changes but by this harvest: the pending lines
        # counted are the ones failed below.
        failed_now = tally["pending"]
        if failed_now:
            key = (reason[0], reason[1][:FAILURE_TEXT_LIMIT])
            pending_by_reason.setdefault(key, []).append(locked.pk)
        if locked.status == BatchStatus.EXPIRED:
            expired.append(locked.pk)
        not_run = tally["not_run"] + (failed_now if reason[0] in NOT_RUN_KINDS else 0)
        failed = tally["failed"] + failed_now
        # The provider's counters can lie after a cancel or an expiry: from now on the counts
        # are the stored lines' (the provider's last report stays in provider_response).
        locked.request_counts = {
            "total": tally["all"],
            "pending": 0,
            "succeeded": tally["completed"],
            "failed": failed - not_run,
            "cancelled": not_run,
        }
        if locked.failure_error not in OWN_FAILURE_KINDS:
            # Notes on reads that did not get through are moot once the harvest is over.
            if unavailable is not None:
                locked.failure_error = FailureKind.RESULTS_UNAVAILABLE
                locked.failure_reason = (
                    f"The provider no longer serves this batch's results "
                    f"({one_line(unavailable)}); {failed_now} request(s) without a result "
                    "were failed."
                )
            elif short is not None:
                locked.failure_error = FailureKind.RESULTS_MISSING
                locked.failure_reason = (
                    f"The provider served {short[0]} of the {short[1]} results its counters "
                    f"report, and no more after waiting {wait:g} s; {failed_now} request(s) "
                    "were failed as never served."
                )
            elif locked.status in (BatchStatus.ENDED, BatchStatus.CANCELED):
                locked.failure_error = ""
                locked.failure_reason = ""
        locked.prompt_token_cost = tally["prompt"]
        locked.output_token_cost = tally["output"]
        locked.total_cost = tally["total"]
        locked.results_fetched_at = now
        locked.results_next_read_at = None
        locked.results_stored_count = tally["all"] - failed_now
        finished.append(
            (locked, {"total": tally["all"], "completed": tally["completed"], "failed": failed})
        )
    for (kind, text), pks in pending_by_reason.items():
        ModelCompletion.objects.filter(batch_id__in=pks, status=CompletionStatus.PENDING).update(
            status=CompletionStatus.FAILED, failure_error=kind, failure_reason=text, failed_at=now
        )
    if expired:
        # The provider reports lines cut by a deadline as cancelled; they expired.
        ModelCompletion.objects.filter(
            batch_id__in=expired, failure_error=FailureKind.REQUEST_CANCELLED
        ).update(failure_error=FailureKind.REQUEST_EXPIRED)
    if len(batches) == 1:
        batches[0].save(update_fields=FINISH_FIELDS)
    else:
        update_from_values(
            ModelCompletionBatch,
            key_fields=("id",),
            set_fields=FINISH_FIELDS,
            rows=[{"id": b.pk, **{f: getattr(b, f) for f in FINISH_FIELDS}} for b in batches],
        )
    for locked, counts in finished:
        _batch_finished_on_commit(locked, counts)


def _batch_finished_on_commit(locked: ModelCompletionBatch, counts: dict[str, int]) -> None:
    transaction.on_commit(
        lambda: signals.batch_finished.send(
            sender=ModelCompletionBatch, batch=locked, status=locked.status, counts=counts
        )
    )


#: The tally of a batch without lines.
NO_LINES: dict[str, Any] = {
    **dict.fromkeys(("prompt", "output", "total")),
    **dict.fromkeys(("completed", "failed", "not_run", "pending", "all", "counted"), 0),
}


def _tallies(batch_pks: list[int]) -> dict[int, dict[str, Any]]:
    """Per batch, in one statement: its lines' cost sums and counts by outcome, and how many
    of its finished lines the provider's counters count (``counted``)."""
    rows = (
        ModelCompletion.objects.filter(batch_id__in=batch_pks)
        .values("batch_id")
        .annotate(
            prompt=Sum("prompt_token_cost"),
            output=Sum("output_token_cost"),
            total=Sum("total_cost"),
            completed=Count("pk", filter=Q(status=CompletionStatus.COMPLETED)),
            failed=Count("pk", filter=Q(status=CompletionStatus.FAILED)),
            not_run=Count(
                "pk",
                filter=Q(status=CompletionStatus.FAILED, failure_error__in=NOT_RUN_KINDS),
            ),
            pending=Count("pk", filter=Q(status=CompletionStatus.PENDING)),
            uncounted=Count(
                "pk",
                filter=~Q(status=CompletionStatus.PENDING) & Q(failure_error__in=UNCOUNTED_KINDS),
            ),
            all=Count("pk"),
        )
        .order_by()
    )
    tallies: dict[int, dict[str, Any]] = {}
    for row in rows:
        tally: dict[str, Any] = dict(row)
        tally["counted"] = tally["all"] - tally["pending"] - tally["uncounted"]
        tallies[tally.pop("batch_id")] = tally
    return tallies


def _wait_for_results(
    locked: ModelCompletionBatch, now: datetime, since: datetime, stored: int, expected: int
) -> None:
    """Record a short harvest and when to read again; the batch stays awaiting harvest (the
    caller saves)."""
    wait = timedelta(seconds=float(get_setting("RESULTS_WAIT_SECONDS")))
    attempts = locked.results_read_attempts + 1
    next_read = now + _results_backoff(attempts, since + wait - now)
    locked.results_lacking_since = since
    locked.results_read_attempts = attempts
    locked.results_next_read_at = next_read
    locked.results_stored_count = stored
    if locked.failure_error not in OWN_FAILURE_KINDS:
        locked.failure_error = FailureKind.RESULTS_INCOMPLETE
        locked.failure_reason = (
            f"The provider has served {stored} of the {expected} results its counters "
            f"report; reading again after {next_read:%Y-%m-%d %H:%M:%S} UTC, for up to "
            f"{wait.total_seconds():g} s after {since:%Y-%m-%d %H:%M:%S} UTC."
        )
    logger.info("Batch %s: %s of %s results served so far", locked.pk, stored, expected)


STORE_ERRORS = (DatabaseError, ValueError, RecursionError, OverflowError)
#: A line's failure that means it never ran: counted as cancelled, not as failed.
NOT_RUN_KINDS = (
    FailureKind.REQUEST_CANCELLED,
    FailureKind.REQUEST_EXPIRED,
    FailureKind.BATCH_CANCELED,
    FailureKind.BATCH_EXPIRED,
)
TOKEN_FIELDS = (
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "reasoning_tokens",
    "cached_tokens",
)
PENDING = CompletionStatus.PENDING
#: As a plain string: the bulk write passes a ``str`` as it is, and prepares an enum member.
COMPLETED = CompletionStatus.COMPLETED.value


def _savepoint() -> Any:
    """A savepoint where a refused statement would abort the whole transaction (PostgreSQL);
    elsewhere the transaction survives a refused statement, and a savepoint costs two queries."""
    if connection.vendor == "postgresql":
        return transaction.atomic()
    return contextlib.nullcontext()


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
        failure_error=FailureKind.UNSTORABLE,
        failure_reason=clean_text(f"The result could not be stored: {one_line(error)}")[0][
            :FAILURE_TEXT_LIMIT
        ],
        failed_at=now,
    )
    return row


def _results_gone(error: ProviderError) -> bool:
    """The provider says this batch's results do not exist (any more)."""
    return isinstance(error, ProviderNotFound) or error.status_code in (404, 410)


def _short(batch: ModelCompletionBatch, tally: dict[str, Any]) -> tuple[int, int] | None:
    """(outcomes stored, outcomes the provider counts) when results are still to come."""
    counts = batch.request_counts or {}
    expected = count_of(counts, "succeeded") + count_of(counts, "failed")
    if not expected or tally["counted"] >= expected:
        return None
    if not tally["pending"]:
        return None  # nothing left to wait for, whatever the counters say
    return tally["counted"], expected


def _lines_short(tally: dict[str, Any]) -> tuple[int, int] | None:
    """(lines with an outcome, lines) while some line is still pending."""
    total, pending = tally["all"], tally["pending"]
    return (total - pending, total) if pending else None


def _results_backoff(attempts: int, remaining: timedelta) -> timedelta:
    """Doubling from POLL_INTERVAL, capped, and never past the end of the wait."""
    base = max(float(get_setting("POLL_INTERVAL")), 1.0)
    delay = timedelta(seconds=min(base * 2 ** min(attempts - 1, 16), RESULTS_BACKOFF_MAX))
    return max(min(delay, remaining), timedelta(0))


def _wants_json(response_format: Any) -> bool:
    return isinstance(response_format, dict) and response_format.get("type") in STRUCTURED_FORMATS


def _failure_kind(message: str) -> str:
    lowered = message.lower()
    if "cancel" in lowered:
        return FailureKind.REQUEST_CANCELLED
    if "expired" in lowered:
        return FailureKind.REQUEST_EXPIRED
    return FailureKind.PROVIDER_ERROR
