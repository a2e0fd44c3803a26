"""Polling many batches at once: by the providers' lists, and harvests stored together.

Counts of calls the emulator saw and of rows, never timings (those are the benchmark's,
``python -m benchmarks.run``). The lists are read with pages of two batches here, so that a
handful of batches takes several stretches of the list, as 1,000 take at the real page sizes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from raif_batches import create_batch
from raif_batches.emulator import run_emulator
from raif_batches.emulator.pytest_plugin import FIXTURE_KEY
from raif_batches.lifecycle import results
from raif_batches.models import ModelCompletion, ModelCompletionBatch
from raif_batches.polling import poll, submit
from raif_batches.providers import get_strategy_class

from .conftest import provider_settings
from .helpers import user

pytestmark = pytest.mark.django_db

PAGE = 2


@pytest.fixture(params=["openai", "anthropic"])
def list_emulator(request: Any, settings: Any, monkeypatch: Any) -> Iterator[Any]:
    """A provider that lists batches newest first, its list read two batches a page."""
    monkeypatch.setattr(get_strategy_class(request.param), "list_page_size", PAGE)
    with run_emulator(api_key=FIXTURE_KEY, profile="fast", provider=request.param) as emu:
        settings.RAIF_BATCHES = provider_settings(emu)
        yield emu


def new_batches(provider: str, count: int, lines: int = 2) -> list[ModelCompletionBatch]:
    return [
        create_batch(
            provider=provider,
            requests=[
                {"custom_id": f"b{n}-{i}", "messages": user(f"Question {n}.{i}"), "max_tokens": 16}
                for i in range(lines)
            ],
        )
        for n in range(count)
    ]


def in_flight(emu: Any, count: int) -> list[int]:
    """``count`` submitted batches whose lines never finish, past the provider's validation."""
    emu.config.requests_per_read = 0
    batches = new_batches(emu.provider, count)
    assert len(submit().submitted) == count
    poll(force=True)
    return [batch.pk for batch in batches]


def ended(batches: list[ModelCompletionBatch]) -> None:
    """Read each batch's status until it has ended; results not fetched yet."""
    for batch in batches:
        batch.refresh_from_db()
        for _ in range(5):
            batch = batch.refresh_status()
            if batch.is_terminal:
                break
        assert batch.status == "ended", batch.status


def calls(emu: Any, endpoint: str) -> int:
    return int(emu.state.count_calls(endpoint))


def no_lease_held() -> bool:
    return not ModelCompletionBatch.objects.exclude(claimed_by="").exists()


def test_a_list_read_in_stretches_serves_every_batch_without_a_get(list_emulator: Any) -> None:
    ids = in_flight(list_emulator, 6)
    lists, gets = calls(list_emulator, "list_batches"), calls(list_emulator, "get_batch")

    report = poll(force=True)

    assert report.ok and report.refreshed == 6, report.errors
    # Three stretches of two, each after the last batch of the one before: one call each.
    assert calls(list_emulator, "list_batches") - lists == 3
    assert calls(list_emulator, "get_batch") == gets
    assert ModelCompletionBatch.objects.filter(pk__in=ids, status="in_progress").count() == 6
    assert no_lease_held()


def test_batches_listed_between_ours_are_read_past(list_emulator: Any) -> None:
    ids = in_flight(list_emulator, 4)
    # Batches created after these (not polled here): newer, so listed before every one.
    new_batches(list_emulator.provider, 3)
    assert len(submit().submitted) == 3
    lists = calls(list_emulator, "list_batches")
    gets = calls(list_emulator, "get_batch")

    report = poll(ids, force=True)

    assert report.ok and report.refreshed == 4, report.errors
    # The first stretch reads past the three newer batches to reach its own two; the second
    # starts after our second-newest, wherever it is listed.
    assert calls(list_emulator, "list_batches") - lists >= 3
    assert calls(list_emulator, "get_batch") == gets
    assert no_lease_held()


def test_a_batch_the_list_does_not_hold_is_read_by_itself(list_emulator: Any) -> None:
    ids = in_flight(list_emulator, 4)
    missing = ModelCompletionBatch.objects.get(pk=ids[0])
    # Gone from the list (as if listed far from where its submission time puts it), still
    # readable by id.
    remote = list_emulator.state.batches.pop(missing.provider_batch_id)
    gets = calls(list_emulator, "get_batch")
    try:
        seen: list[str] = []
        original = list_emulator.state.get_batch

        def get_batch(batch_id: str) -> Any:
            seen.append(batch_id)
            list_emulator.state.batches[batch_id] = remote
            try:
                return original(batch_id)
            finally:
                list_emulator.state.batches.pop(batch_id, None)

        list_emulator.state.get_batch = get_batch
        report = poll(ids, force=True)
    finally:
        list_emulator.state.batches[missing.provider_batch_id] = remote

    assert report.ok and report.refreshed == 4, report.errors
    assert seen == [missing.provider_batch_id]
    assert calls(list_emulator, "get_batch") == gets + 1
    assert no_lease_held()


def test_small_batches_that_end_together_are_stored_whole(any_emulator: Any) -> None:
    batches = new_batches(any_emulator.provider, 5, lines=3)
    assert len(submit().submitted) == 5

    for _ in range(4):
        report = poll(force=True)
        assert report.ok, report.errors
        any_emulator.state.advance(61)
        if ModelCompletionBatch.objects.filter(results_fetched_at__isnull=True).count() == 0:
            break

    for batch in batches:
        batch.refresh_from_db()
        assert batch.results_fetched_at is not None, batch.status
        assert batch.request_counts == {
            "total": 3,
            "pending": 0,
            "succeeded": 3,
            "failed": 0,
            "cancelled": 0,
        }
        lines = batch.completions.all()
        assert [line.status for line in lines] == ["completed"] * 3
        assert batch.total_cost == sum(line.total_cost for line in lines)
    assert no_lease_held()


def test_a_batch_deleted_before_its_group_is_stored_is_skipped(emulator: Any) -> None:
    batches = new_batches("xai", 3)
    assert len(submit().submitted) == 3
    ended(batches)
    strategy = get_strategy_class("xai")()
    opened = [
        (batch, results.open_result_pages(strategy, batch.provider_batch_id).whole)
        for batch in batches
    ]
    assert all(whole is not None and len(whole) == 2 for _, whole in opened)
    doomed = batches[1]
    ModelCompletion.objects.filter(batch_id=doomed.pk)._raw_delete("default")
    ModelCompletionBatch.objects.filter(pk=doomed.pk)._raw_delete("default")

    applied, stored, left = results.fetch_whole_results(
        strategy, [(batch, whole or []) for batch, whole in opened]
    )

    assert applied == 4
    assert [batch.pk for batch in stored] == [batches[0].pk, batches[2].pk]
    assert [batch.pk for batch, _ in left] == [doomed.pk]
    for batch in stored:
        assert batch.results_fetched_at is not None
        assert set(batch.completions.values_list("status", flat=True)) == {"completed"}


def test_results_stored_twice_change_nothing(emulator: Any) -> None:
    batches = new_batches("xai", 2)
    assert len(submit().submitted) == 2
    ended(batches)
    strategy = get_strategy_class("xai")()
    opened = [
        (batch, results.open_result_pages(strategy, batch.provider_batch_id).whole or [])
        for batch in batches
    ]
    first = results.fetch_whole_results(strategy, opened)
    before = list(ModelCompletion.objects.order_by("pk").values_list("status", "completed_at"))
    again = results.fetch_whole_results(strategy, opened)

    assert first[0] == 4
    assert again[0] == 0 and again[1] == []  # harvested already: each left to fetch_results
    assert list(ModelCompletion.objects.order_by("pk").values_list("status", "completed_at")) == (
        before
    )


def test_batches_a_list_shows_ended_are_harvested_without_reading_them_again(
    list_emulator: Any,
) -> None:
    ids = in_flight(list_emulator, 5)
    list_emulator.config.requests_per_read = None  # every line done at the next read
    gets = calls(list_emulator, "get_batch")

    report = poll(force=True)

    assert report.ok and sorted(report.finished) == sorted(ids), (report.errors, report.notes)
    assert report.results_applied == 10
    # The list's answers named the results (OpenAI: the files), read at once: no GET of a batch.
    assert calls(list_emulator, "get_batch") == gets
    done = ModelCompletion.objects.filter(batch_id__in=ids, status="completed")
    assert done.count() == 10
    assert no_lease_held()


def test_read_ahead_reads_two_pages_itself_then_one_ahead_in_a_helper() -> None:
    import threading

    from raif_batches.readahead import read_ahead

    where: list[str] = []

    def pages(count: int) -> Iterator[int]:
        for number in range(count):
            where.append(threading.current_thread().name)
            yield number

    caller = threading.current_thread().name
    assert list(read_ahead(pages(1))) == [0] and where == [caller]
    where.clear()
    assert list(read_ahead(pages(2))) == [0, 1] and where == [caller, caller]
    where.clear()
    assert list(read_ahead(pages(5), name="helper")) == [0, 1, 2, 3, 4]
    assert where[:2] == [caller, caller]
    assert all(name.startswith("helper") for name in where[2:])


def test_readers_answer_each_item_in_order_and_raise_where_taken() -> None:
    from raif_batches.readahead import Readers, wait_all

    def read(number: int) -> int:
        if number == 3:
            raise ValueError("three")
        return number * 10

    with Readers(read, 4, name="test-readers") as readers:
        futures = [readers.put(number) for number in range(8)]
        wait_all(futures)
    assert [f.result() for f in futures if f.exception() is None] == [0, 10, 20, 40, 50, 60, 70]
    with pytest.raises(ValueError, match="three"):
        futures[3].result()


@pytest.mark.parametrize(
    ("status", "counts", "ends"),
    [
        ("ended", {"total": 2, "pending": 0, "succeeded": 2}, True),
        ("in_progress", {"total": 2, "pending": 0, "succeeded": 2}, False),  # believed
        (None, {"total": 2, "pending": 1, "succeeded": 1}, False),
        (None, {"total": 2, "pending": 0, "succeeded": 2}, True),  # xAI: from the counters
        (None, {"total": 0, "pending": 0}, False),  # still validating
    ],
)
def test_would_end_says_what_storing_the_snapshot_would_decide(
    status: str | None, counts: dict[str, int], ends: bool
) -> None:
    from django.utils import timezone

    from raif_batches.lifecycle.transitions import would_end
    from raif_batches.providers.base import BatchSnapshot

    batch = ModelCompletionBatch(status="in_progress", provider_batch_id="b-1")
    snapshot = BatchSnapshot(provider_batch_id="b-1", status=status, counts=counts)
    assert would_end(batch, snapshot, timezone.now()) is ends
    assert batch.status == "in_progress" and batch.request_counts != counts  # unchanged
