"""The shape of the database cost: queries grow with pages, batches and chunks, never with rows.

Timings belong to the benchmark (``python -m benchmarks.run``); these tests pin only what an
N+1 would break. Each compares two or three sizes of the same operation and asserts that the
difference is a whole number of pages (batches, chunks) times a small constant.

Savepoint statements are left out of the counts: the test transaction turns every
``atomic()`` into a savepoint pair that a real run, in autocommit, does not send as queries.

Bulk statements (:mod:`raif_batches.bulk`) bypass Django's debug cursor so that their values
never sit in the query log; each still appears in ``CaptureQueriesContext`` once, by its SQL
text, and a PostgreSQL ``COPY`` counts as one statement however many rows it streams.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from raif_batches import api, create_batch
from raif_batches.lifecycle import results
from raif_batches.models import ModelCompletionBatch
from raif_batches.polling import poll, submit

from .helpers import make_batch, user

pytestmark = pytest.mark.django_db

SAVEPOINT_PREFIXES = ("SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK TO SAVEPOINT")


def count_queries(action: Callable[[], Any]) -> tuple[int, Any]:
    """(statements sent, what ``action`` returned), savepoints excluded."""
    with CaptureQueriesContext(connection) as context:
        outcome = action()
    statements = [
        query["sql"]
        for query in context.captured_queries
        if not query["sql"].lstrip().upper().startswith(SAVEPOINT_PREFIXES)
    ]
    return len(statements), outcome


def ended_batch(rows: int) -> ModelCompletionBatch:
    """A batch of ``rows`` requests that the provider has finished, results not fetched yet."""
    batch = make_batch(rows)
    report = submit([batch.pk])
    assert report.submitted == [batch.pk], report.errors
    batch.refresh_from_db()
    for _ in range(5):
        batch = batch.refresh_status()
        if batch.is_terminal:
            return batch
    raise AssertionError(f"batch {batch.pk} still {batch.status}")


def harvest_queries(settings: Any, rows: int, page_size: int) -> int:
    settings.RAIF_BATCHES = {**settings.RAIF_BATCHES, "RESULTS_PAGE_SIZE": page_size}
    batch = ended_batch(rows)
    queries, applied = count_queries(batch.fetch_results)
    assert applied == rows
    assert batch.completions.filter(status="completed").count() == rows
    return queries


def test_a_page_of_results_costs_the_same_queries_whatever_its_size(
    emulator: Any, settings: Any
) -> None:
    one_page_of_10 = harvest_queries(settings, rows=10, page_size=10)
    one_page_of_200 = harvest_queries(settings, rows=200, page_size=200)
    four_pages_of_50 = harvest_queries(settings, rows=200, page_size=50)

    assert one_page_of_10 == one_page_of_200
    per_page, remainder = divmod(four_pages_of_50 - one_page_of_200, 3)
    assert remainder == 0
    assert 1 <= per_page <= 5  # the bound: at most 5 queries a page


def test_applying_a_page_twice_adds_no_rows_and_no_per_row_queries(emulator: Any) -> None:
    batch = ended_batch(30)
    strategy = batch.get_strategy()
    page = next(iter(strategy.iter_result_pages(batch.provider_batch_id)))
    first, changed = count_queries(lambda: results.apply_result_page(batch, page))
    again, changed_again = count_queries(lambda: results.apply_result_page(batch, page))

    assert changed == 30
    assert changed_again == 0  # exactly once: results apply only to pending completions
    assert again <= first


def test_a_poll_costs_the_same_statements_whatever_its_batches(emulator: Any) -> None:
    emulator.config.requests_per_read = 0  # lines never finish: every batch stays in flight
    batches = [make_batch(2) for _ in range(6)]
    report = submit([batch.pk for batch in batches])
    assert len(report.submitted) == 6, report.errors
    ids = [batch.pk for batch in batches]
    poll(ids, force=True)  # past the provider's validation, so every read below is alike

    def polled(count: int) -> int:
        queries, report = count_queries(lambda: poll(ids[:count], force=True))
        assert report.ok and report.refreshed == count, report.errors
        return queries

    # Every snapshot of a run is stored in one transaction: the rows locked in one statement
    # and written in one bulk statement, so a run's statements do not grow with its batches.
    one, three, six = polled(1), polled(3), polled(6)
    assert one == three == six
    assert six <= 16
    assert ModelCompletionBatch.objects.filter(pk__in=ids, status="in_progress").count() == 6


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_poll_by_list_costs_the_same_statements_whatever_its_batches(
    provider: str, settings: Any
) -> None:
    from raif_batches.emulator import run_emulator

    from .conftest import provider_settings

    with run_emulator(profile="fast", provider=provider) as emu:
        settings.RAIF_BATCHES = provider_settings(emu)
        emu.config.requests_per_read = 0  # lines never finish: every batch stays in flight
        batches = [
            create_batch(
                provider=provider,
                requests=[
                    {"custom_id": f"r-{i}", "messages": user("Hi"), "max_tokens": 16}
                    for i in range(2)
                ],
            )
            for _ in range(6)
        ]
        report = submit([batch.pk for batch in batches])
        assert len(report.submitted) == 6, report.errors
        ids = [batch.pk for batch in batches]
        poll(ids, force=True)
        gets = emu.state.count_calls("get_batch")

        def polled(count: int) -> int:
            queries, report = count_queries(lambda: poll(ids[:count], force=True))
            assert report.ok and report.refreshed == count, report.errors
            return queries

        two, six = polled(2), polled(6)
        assert emu.state.count_calls("get_batch") == gets  # the list served every read
    assert two == six
    assert six <= 16


def test_a_poll_in_which_batches_end_costs_the_same_statements_whatever_their_number(
    emulator: Any,
) -> None:
    """Status reads, results and the end of each harvest, for batches that end together:
    stored in one transaction, so their statements do not grow with their number."""

    def ending(count: int) -> int:
        batches = [make_batch(3) for _ in range(count)]
        report = submit([batch.pk for batch in batches])
        assert len(report.submitted) == count, report.errors
        emulator.config.requests_per_read = 0  # in flight: past the provider's validation
        poll([batch.pk for batch in batches], force=True)
        emulator.config.requests_per_read = None  # every line done at the next read
        queries, report = count_queries(lambda: poll([batch.pk for batch in batches], force=True))
        assert report.ok and sorted(report.finished) == [batch.pk for batch in batches]
        assert report.results_applied == 3 * count
        return queries

    one, three, ten = ending(1), ending(3), ending(10)
    assert three == ten, (one, three, ten)
    assert one <= three <= 30, (one, three, ten)  # 20 on SQLite, 27 on PostgreSQL (COPY)


def test_create_batch_queries_grow_with_insert_chunks_not_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Requests from a generator are drawn a chunk at a time, one INSERT (a COPY on
    PostgreSQL) each; requests given as a list need no drawing: one statement for all of
    them, whatever their number (within the statement bounds elsewhere)."""
    monkeypatch.setattr(api, "INSERT_CHUNK", 10)

    def created(rows: int, *, as_list: bool) -> int:
        made = ({"custom_id": f"q-{i}", "messages": user(f"Q{i}")} for i in range(rows))
        requests = list(made) if as_list else made
        queries, batch = count_queries(lambda: api.create_batch(requests=requests))
        assert batch.completions.count() == rows
        return queries

    one_row, one_chunk, three_chunks = (created(n, as_list=False) for n in (1, 10, 25))
    assert one_row == one_chunk
    assert three_chunks == one_chunk + 2
    assert created(1, as_list=True) == created(25, as_list=True) == one_row


# --- admin pages --------------------------------------------------------------------------------
# Issue 13's targets at row counts CI can afford: every page within 10 statements whatever batch
# is opened, no DISTINCT scan for filter choices, no COUNT that reads every row of the
# completions table (counts are estimated or bounded by a LIMIT), and on PostgreSQL every
# statement on the app's tables served by an index (the timings at 5,000,000 completions are
# the benchmark's: python -m benchmarks.run --scale).

ADMIN_BATCHES = 2_000
ADMIN_BIG_BATCHES = 10
ADMIN_PER_BIG_BATCH = 2_000


def admin_data() -> list[int]:
    """2,000 batches; ten of them (the oldest to the newest) hold 2,000 completions each."""
    from django.utils import timezone

    from raif_batches.models import ModelCompletion

    now = timezone.now()
    statuses = [choice for choice, _ in ModelCompletionBatch.Status.choices]
    ModelCompletionBatch.objects.bulk_create(
        (
            ModelCompletionBatch(
                name=f"Nightly {i}",
                provider="openai" if i < 100 else "xai",  # a provider of old batches only
                model="grok-3-mini" if i % 10 == 0 else "grok-4.3",
                status=statuses[i % len(statuses)],
                provider_batch_id=f"batch_{i:06d}",
                created_at=now,
            )
            for i in range(ADMIN_BATCHES)
        ),
        batch_size=1000,
    )
    ids = list(ModelCompletionBatch.objects.order_by("pk").values_list("pk", flat=True))
    step = len(ids) // ADMIN_BIG_BATCHES
    big = [ids[i * step] for i in range(ADMIN_BIG_BATCHES - 1)] + [ids[-1]]
    ModelCompletion.objects.bulk_create(
        (
            ModelCompletion(
                batch_id=pk,
                batch_custom_id=f"row-{n:05d}",
                messages=user(f"Q{n}"),
                status="failed" if n % 50 == 0 else "completed",
                raw_response=f"Answer {n}",
            )
            for pk in big
            for n in range(ADMIN_PER_BIG_BATCH)
        ),
        batch_size=5000,
    )
    return big


def admin_pages(big: list[int]) -> list[tuple[str, str]]:
    from django.urls import reverse

    from raif_batches.models import ModelCompletion

    batches = reverse("admin:raif_batches_modelcompletionbatch_changelist")
    completions = reverse("admin:raif_batches_modelcompletion_changelist")
    empty = ModelCompletionBatch.objects.exclude(pk__in=big).values_list("pk", flat=True)[0]
    one = ModelCompletion.objects.filter(batch_id=big[-1]).values_list("pk", flat=True)[0]

    def batch(pk: int, view: str = "change") -> str:
        return reverse(f"admin:raif_batches_modelcompletionbatch_{view}", args=[pk])

    day = urlencode(
        {
            "completed_at__gte": "2020-01-01 00:00:00+00:00",
            "completed_at__lt": "2020-01-02 00:00:00+00:00",
        }
    )
    pages = [
        ("batch list", batches),
        ("batch list by status", f"{batches}?status__exact=ended"),
        ("batch list by provider (old batches only)", f"{batches}?provider=openai"),
        ("batch list by model", f"{batches}?model=grok-3-mini"),
        ("batch list, sidebar counts asked for", f"{batches}?_facets=True"),
        ("batch list search", f"{batches}?q=batch_000042"),
        ("batch list search by #id", f"{batches}?q=%23{empty}"),
        ("batch list search by name prefix", f"{batches}?q=nightly+15"),
        ("batch list, last page", f"{batches}?p=19"),
        ("empty batch page", batch(empty)),
        ("empty batch delete page", batch(empty, "delete")),
        ("completion list", completions),
        ("completion list by status", f"{completions}?status__exact=failed"),
        ("completion list, sidebar counts asked for", f"{completions}?_facets=True"),
        ("completion list, a day without a batch", f"{completions}?{day}"),
        ("completion page", reverse("admin:raif_batches_modelcompletion_change", args=[one])),
    ]
    for pk in (big[0], big[-1]):
        pages += [
            (f"batch page {pk}", batch(pk)),
            (f"delete page {pk}", batch(pk, "delete")),
            (f"completions of {pk}", f"{completions}?batch={pk}"),
            (f"failed of {pk}", f"{completions}?batch={pk}&status__exact=failed"),
            (f"completions of {pk}, last page", f"{completions}?batch={pk}&p=19"),
            (f"search in {pk}", f"{completions}?batch={pk}&q=row-01234"),
            (f"a day in {pk}", f"{completions}?batch={pk}&{day}"),
        ]
    return pages


def test_every_admin_page_stays_within_10_queries_whatever_batch_is_opened(
    admin_client: Any,
) -> None:
    big = admin_data()
    for label, url in admin_pages(big):
        admin_client.get(url)  # the session and content types, cached from here on
        with CaptureQueriesContext(connection) as context:
            response = admin_client.get(url)
        assert response.status_code == 200, (label, response.status_code)
        statements = [query["sql"] for query in context.captured_queries]
        assert len(statements) <= 10, (label, len(statements), statements)
        for sql in statements:
            upper = sql.upper()
            # Filter choices are never found by scanning for distinct values.
            assert "DISTINCT" not in upper, (label, sql)
            # A count of completions is an estimate (pg_class) or stops at a LIMIT; the
            # sidebar's per-choice counts (COUNT … FILTER) are never run.
            if "COUNT(" in upper and 'RAIF_BATCHES_MODELCOMPLETION"' in upper:
                assert "LIMIT" in upper or "GROUP BY" in upper, (label, sql)
            assert "FILTER (WHERE" not in upper, (label, sql)


def wasteful_scans(plan: dict[str, Any], limited: bool = False) -> list[str]:
    """The scans of the app's tables in a JSON plan that read rows they do not return.

    A sequential scan; an index walk with a ``Filter`` and no ``Index Cond`` (it discards
    whatever does not match, and stops only when enough rows did: the walk of the primary key
    past every newer batch's completions); and a walk with neither that no ``Limit`` above it
    stops (it reads the whole index).
    """
    found = []
    if plan.get("Relation Name", "").startswith("raif_batches_"):
        kind = plan["Node Type"]
        walk = kind in ("Index Scan", "Index Only Scan") and "Index Cond" not in plan
        if kind == "Seq Scan" or (walk and ("Filter" in plan or not limited)):
            found.append(f"{kind} on {plan['Relation Name']}: {plan.get('Filter', '')}")
    limited = limited or plan["Node Type"] == "Limit"
    for child in plan.get("Plans", []):
        found += wasteful_scans(child, limited)
    return found


@pytest.mark.postgres
def test_every_admin_page_reads_the_app_tables_through_indexes(admin_client: Any) -> None:
    """Every statement an admin page sends to the app's tables is served by an index.

    With ``enable_seqscan`` off PostgreSQL still plans a sequential scan where no index can
    serve the statement, so the check holds however small the test's tables are; an index walk
    that filters (see ``wasteful_scans``) is caught as well.
    """
    big = admin_data()
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE raif_batches_modelcompletionbatch")
        cursor.execute("ANALYZE raif_batches_modelcompletion")
    for label, url in admin_pages(big):
        admin_client.get(url)
        with CaptureQueriesContext(connection) as context:
            assert admin_client.get(url).status_code == 200, label
        for query in context.captured_queries:
            sql = query["sql"]
            reads = sql.lstrip().upper().startswith(("SELECT", "WITH"))
            if "raif_batches_" not in sql or not reads:
                continue
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL enable_seqscan = off")
                cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}")
                (document,) = cursor.fetchone()
                cursor.execute("SET LOCAL enable_seqscan = on")
            plan = (json.loads(document) if isinstance(document, str) else document)[0]["Plan"]
            assert not wasteful_scans(plan), (label, sql, wasteful_scans(plan))


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_claim_on_postgresql_is_one_statement_that_skips_rows_held_elsewhere(
    settings: Any,
) -> None:
    """``UPDATE … RETURNING`` over the rows its subquery locks: the most overdue first, a row
    another transaction holds skipped, the lease counted on the database's clock."""
    import threading
    from datetime import timedelta

    from django.db import connections, transaction
    from django.utils import timezone

    from raif_batches.clock import db_now

    settings.RAIF_BATCHES = {**settings.RAIF_BATCHES, "LEASE_SECONDS": 300}
    batches = [make_batch(1) for _ in range(4)]
    now = timezone.now()
    for offset, batch in zip((3, 1, 4, 2), batches, strict=True):
        batch.next_poll_at = now - timedelta(minutes=offset)
        batch.save(update_fields=["next_poll_at"])
    held, locked, release = batches[2], threading.Event(), threading.Event()  # most overdue

    def hold() -> None:
        try:
            with transaction.atomic():
                ModelCompletionBatch.objects.select_for_update().get(pk=held.pk)
                locked.set()
                release.wait(30)
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert locked.wait(30)
        before = db_now()
        queries, claimed = count_queries(
            lambda: ModelCompletionBatch.objects.all().claim("w:1", limit=2)
        )
    finally:
        release.set()
        holder.join()
    assert queries == 1
    # The next most overdue after the held one: batches[0] (3 min), then batches[3] (2 min).
    assert [b.pk for b in claimed] == sorted([batches[0].pk, batches[3].pk])
    for batch in ModelCompletionBatch.objects.filter(pk__in=[b.pk for b in claimed]):
        assert batch.claimed_by == "w:1"
        assert batch.claimed_until is not None
        assert before + timedelta(seconds=299) < batch.claimed_until < db_now() + timedelta(300)
    assert ModelCompletionBatch.objects.get(pk=held.pk).claimed_by == ""
    assert [b.claimed_by for b in claimed] == ["w:1", "w:1"]


@pytest.mark.postgres
@pytest.mark.django_db
def test_a_claim_of_many_batches_writes_no_index_entry_on_postgresql() -> None:
    """The batch table leaves room on its pages (migration 0006), so a claim that updates
    every row of its pages in one statement keeps each new version on its row's page: no index
    entry is written for it (PostgreSQL's count of "HOT" updates, this transaction's own). At
    the default fill factor the rows fill their pages as they are written, and most of the
    claim's updates write an entry in each of the table's indexes."""
    from raif_batches.models import BatchStatus

    ModelCompletionBatch.objects.bulk_create(
        ModelCompletionBatch(
            name=f"lease-{n}", status=BatchStatus.IN_PROGRESS, provider_batch_id=f"pb-{n}"
        )
        for n in range(200)
    )

    def updates() -> tuple[int, int]:
        with connection.cursor() as cursor:
            table = ModelCompletionBatch._meta.db_table
            cursor.execute(
                "SELECT pg_stat_get_xact_tuples_updated(%s::regclass),"
                " pg_stat_get_xact_tuples_hot_updated(%s::regclass)",
                [table, table],
            )
            updated, hot = cursor.fetchone()
        return int(updated), int(hot)

    before = updates()
    claimed = ModelCompletionBatch.objects.all().claim("w:1")
    assert len(claimed) == 200
    updated, hot = (now - then for now, then in zip(updates(), before, strict=True))
    assert updated == 200
    assert hot == 200, f"{200 - hot} of the claim's 200 updates wrote index entries"
