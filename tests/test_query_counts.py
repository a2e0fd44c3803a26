"""The shape of the database cost: queries grow with pages, batches and chunks, never with rows.

Timings belong to the benchmark (``python -m benchmarks.run``); these tests pin only what an
N+1 would break. Each compares two or three sizes of the same operation and asserts that the
difference is a whole number of pages (batches, chunks) times a small constant.

Savepoint statements are left out of the counts: the test transaction turns every
``atomic()`` into a savepoint pair that a real run, in autocommit, does not send as queries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from raif_batches import api
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


def test_a_poll_costs_a_constant_number_of_queries_per_batch(emulator: Any) -> None:
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

    one, three, six = polled(1), polled(3), polled(6)
    per_batch, remainder = divmod(three - one, 2)
    assert remainder == 0
    assert six - three == 3 * per_batch
    assert 1 <= per_batch <= 3
    assert ModelCompletionBatch.objects.filter(pk__in=ids, status="in_progress").count() == 6


def test_create_batch_queries_grow_with_insert_chunks_not_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(api, "INSERT_CHUNK", 10)

    def created(rows: int) -> int:
        requests = [{"custom_id": f"q-{i}", "messages": user(f"Q{i}")} for i in range(rows)]
        queries, batch = count_queries(lambda: api.create_batch(requests=requests))
        assert batch.completions.count() == rows
        return queries

    one_row, one_chunk, three_chunks = created(1), created(10), created(25)
    assert one_row == one_chunk
    assert three_chunks == one_chunk + 2
