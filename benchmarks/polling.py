"""The poll rows of ``python -m benchmarks.run``: each provider's emulator at 50 ms a call.

Every operation starts its own emulator process (``benchmarks.emulator_process``, the fast
profile plus ``--latency``), seeded with the provider batches it needs, and builds the local
rows that point at them; then it times ``polling.poll()`` and the floor, in the same process,
each the median of ``--repeats`` runs (an emulator of ending batches serves one run, so each run
of those rows gets a fresh one).

Two kinds of rows, for xAI, OpenAI and Anthropic:

* ``poll N in flight``: every batch is read and stays in progress. The floor reads the same
  answers the cheapest way the provider allows (OpenAI and Anthropic: their newest-first list,
  every page needed at once, from cursors that a client holding the ids can name; xAI: one GET
  per batch, as many at once as our poll sends), parses them with the provider module's own
  parser, and writes the status, counts and answer of every batch in one ``UPDATE … FROM
  (VALUES …)``. Also measured: the time our poll spends in SQL statements (``db``), against
  the floor's one bulk write.
* ``one poll in which N small batches end``: every batch reads ended, its results (two lines)
  are read and stored, its costs totalled. The floor reads the statuses as above and every
  results file at once, parses the lines with the provider's parser and ``result_row``, and
  writes every line in one ``COPY`` into a temporary table + one ``UPDATE``, and every batch
  in one more.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from . import floors
from .operations import Measure, measure, row, vacuum, verdict

PROVIDERS = ("xai", "openai", "anthropic")
API_KEY = "bench-key"
LATENCY = 0.05
#: Lines in each batch of the "batches end" rows.
LINES = 2
#: issue 13's targets: wall seconds for the in-flight poll (by list / by GET), and the end poll.
IN_FLIGHT_TARGET = {"xai": 1.5, "openai": 0.5, "anthropic": 0.5}
END_TARGET = 3.0
#: "Database work per polled batch within 2x of one bulk write per run".
DB_TARGET = 2.0
PREFIX = "bench-poll-"


# --- the emulator and the local rows ---------------------------------------------------------


@contextmanager
def provider_emulator(provider: str, *options: str) -> Iterator[dict[str, Any]]:
    from .run import emulator

    with emulator("--provider", provider, "--latency", str(LATENCY), *options) as started:
        yield started


#: POLL_CONCURRENCY for our poll and the floors' width (``--poll-concurrency``; 0: the default).
CONCURRENCY: dict[str, int] = {}


def use(provider: str, base_url: str, **extra: Any) -> None:
    from django.conf import settings

    key = provider.upper()
    settings.RAIF_BATCHES = {
        f"{key}_BASE_URL": base_url,
        f"{key}_API_KEY": API_KEY,
        **CONCURRENCY,
        **extra,
    }


def local_batches(provider: str, provider_ids: list[str], *, lines: int = 0) -> list[int]:
    """One in-progress local batch per provider batch (submitted in the same order, a
    millisecond apart), all due for a status read, with ``lines`` pending completions each
    (custom ids ``r-0`` …)."""
    from django.utils import timezone

    from raif_batches.models import BatchStatus, ModelCompletion, ModelCompletionBatch

    from .emulator_process import MODELS

    earlier = ModelCompletionBatch.objects.filter(name__startswith=PREFIX)
    # The emulators' batches are gone with their processes; the local rows of an earlier
    # setup are let go as harvested, which the model's guard against deleting paid batches
    # accepts.
    earlier.update(status=BatchStatus.ENDED, results_fetched_at=timezone.now())
    ModelCompletion.objects.filter(batch__name__startswith=PREFIX).delete()
    earlier.delete()
    start = timezone.now() - timedelta(minutes=5)
    created = ModelCompletionBatch.objects.bulk_create(
        [
            ModelCompletionBatch(
                name=f"{PREFIX}{number}",
                provider=provider,
                model=MODELS[provider],
                status=BatchStatus.IN_PROGRESS,
                provider_batch_id=provider_id,
                submitted_at=start + timedelta(milliseconds=number),
                started_at=start + timedelta(milliseconds=number),
                request_counts={
                    "total": max(lines, 1),
                    "pending": max(lines, 1),
                    "succeeded": 0,
                    "failed": 0,
                    "cancelled": 0,
                },
            )
            for number, provider_id in enumerate(provider_ids)
        ],
        batch_size=1000,
    )
    if lines:
        ModelCompletion.objects.bulk_create(
            (
                ModelCompletion(
                    batch_id=batch.pk,
                    batch_custom_id=f"r-{line}",
                    messages=[{"role": "user", "content": f"Review {batch.pk}.{line}"}],
                    max_tokens=64,
                )
                for batch in created
                for line in range(lines)
            ),
            batch_size=2000,
        )
    vacuum(ModelCompletionBatch, ModelCompletion)
    return [batch.pk for batch in created]


def make_due(ids: list[int]) -> None:
    from raif_batches.models import ModelCompletionBatch

    ModelCompletionBatch.objects.filter(pk__in=ids).update(next_poll_at=None)
    vacuum(ModelCompletionBatch)


# --- the floors ------------------------------------------------------------------------------


class Wire:
    """The provider's calls as a hand-written script makes them at the least cost: urllib3's
    keep-alive pool (what ``requests`` runs on, without its per-call merging of settings),
    JSON decoded, parsed by the provider module's own functions."""

    def __init__(self, provider: str, base_url: str, width: int) -> None:
        import urllib3

        self.provider, self.base_url = provider, base_url.rstrip("/")
        self.pool = urllib3.PoolManager(maxsize=width, retries=False)
        self.headers = (
            {"x-api-key": API_KEY, "anthropic-version": "2023-06-01"}
            if provider == "anthropic"
            else {"Authorization": f"Bearer {API_KEY}"}
        )
        self.batches_path = "/v1/messages/batches" if provider == "anthropic" else "/batches"
        self.page_size = {"openai": 100, "anthropic": 1000}.get(provider, 0)

    def get(self, path: str, **params: Any) -> Any:
        answer = self.pool.request(
            "GET", self.base_url + path, fields=params or None, headers=self.headers
        )
        if answer.status >= 400:
            raise RuntimeError(f"GET {path}: HTTP {answer.status}")
        if answer.headers.get("Content-Type", "").startswith("application/json"):
            return json.loads(answer.data)
        return answer.data

    def parse_batch(self, payload: Any) -> Any:
        from raif_batches.providers import anthropic, openai, xai

        module = {"xai": xai, "openai": openai, "anthropic": anthropic}[self.provider]
        return module.parse_batch(payload)

    def list_from(self, cursor: str | None) -> list[Any]:
        params: dict[str, Any] = {"limit": self.page_size}
        if cursor:
            params["after_id" if self.provider == "anthropic" else "after"] = cursor
        return [self.parse_batch(item) for item in self.get(self.batches_path, **params)["data"]]

    def statuses(self, pool: ThreadPoolExecutor, ids: list[str]) -> list[Any]:
        """Every batch's snapshot: its list's pages at once (each from the cursor that
        precedes it), or a GET per batch."""
        if not self.page_size:
            return list(pool.map(lambda i: self.parse_batch(self.get(f"/batches/{i}")), ids))
        newest_first = ids[::-1]
        cursors = [None] + [
            newest_first[k * self.page_size - 1]
            for k in range(1, math.ceil(len(ids) / self.page_size))
        ]
        return [snapshot for page in pool.map(self.list_from, cursors) for snapshot in page]

    def results(self, snapshot: Any) -> list[Any]:
        """One batch's result lines, parsed (its output file for OpenAI)."""
        from raif_batches.providers import anthropic, openai

        if self.provider == "xai":
            from raif_batches.providers.xai import XAIStrategy

            parser = XAIStrategy()
            answer = self.get(f"/batches/{snapshot.provider_batch_id}/results", limit=1000)
            return [
                parser.parse_entry(item["batch_request_id"], item) for item in answer["results"]
            ]
        if self.provider == "openai":
            file = snapshot.raw["output_file_id"]
            lines = self.get(f"/files/{file}/content").splitlines()
            return [openai.parse_row(json.loads(line)) for line in lines if line.strip()]
        body = self.get(f"{self.batches_path}/{snapshot.provider_batch_id}/results")
        items = [json.loads(line) for line in body.splitlines() if line.strip()]
        return [anthropic.parse_result_line(item, item["custom_id"]) for item in items]


# --- measuring ours --------------------------------------------------------------------------


class StatementClock:
    """Seconds spent inside SQL statements (the ``db`` figure), on top of ``measure``'s count."""

    def __init__(self) -> None:
        self.seconds = 0.0

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            self.seconds += time.perf_counter() - started


@contextmanager
def timed_statements() -> Iterator[StatementClock]:
    from django.db import connection

    clock = StatementClock()
    with connection.execute_wrapper(clock):
        yield clock


def _median(runs: list[tuple[Measure, float]]) -> tuple[Measure, float]:
    ordered = sorted(runs, key=lambda run: run[0].wall)
    return ordered[len(ordered) // 2]


def _threads() -> int:
    from raif_batches.conf import get_setting

    return int(get_setting("POLL_CONCURRENCY"))


def _db_note(ours_db: float, floor_db: float, n: int) -> str:
    ratio = ours_db / max(floor_db, 1e-6)
    return (
        f"db {ours_db * 1000 / n:.2f} ms/batch = {ratio:.1f}x the bulk write "
        f"({'✓' if ratio <= DB_TARGET else '✗'} ≤ {DB_TARGET:g}x)"
    )


def _poll_in_flight(provider: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    from django.db import transaction

    from raif_batches.polling import poll

    n = args.batches
    with provider_emulator(provider, "--in-flight", str(n)) as emulator:
        use(provider, emulator["base_url"])
        ids = local_batches(provider, emulator["batch_ids"])
        by_provider_id = dict(zip(emulator["batch_ids"], ids, strict=True))
        ours: list[tuple[Measure, float]] = []
        for _ in range(args.repeats):
            make_due(ids)
            with measure() as m, timed_statements() as sql:
                report = poll()
            assert report.ok and report.refreshed == n, (report.errors, report.refreshed)
            ours.append((m, sql.seconds))
        floor_runs: list[tuple[Measure, float]] = []
        wire = Wire(provider, emulator["base_url"], _threads())
        for _ in range(args.repeats):
            make_due(ids)
            with ThreadPoolExecutor(max_workers=_threads()) as pool, measure() as m:
                snapshots = wire.statuses(pool, emulator["batch_ids"])
                pairs = [(by_provider_id[s.provider_batch_id], s) for s in snapshots]
                started = time.perf_counter()
                with transaction.atomic():
                    assert floors.write_snapshots(pairs, "in_progress") == n
                write = time.perf_counter() - started
            floor_runs.append((m, write))
    m, ours_db = _median(ours)
    floor, floor_db = _median(floor_runs)
    how = (
        f"by GETs, {_threads()} threads"
        if provider == "xai"
        else f"by list ({math.ceil(n / wire.page_size)} page(s) of {wire.page_size})"
    )
    floor_how = (
        f"{n:,} GETs at once ({_threads()} threads)"
        if provider == "xai"
        else f"{math.ceil(n / wire.page_size)} list call(s) at once"
    )
    floor.queries = 1
    target = IN_FLIGHT_TARGET[provider]
    return _pair(
        f"poll_{provider}",
        f"poll {n:,} in flight, 50 ms a call, {provider}: {how}",
        (m, ours_db),
        f"floor: {floor_how} + one bulk UPDATE",
        (floor, floor_db),
        n,
        verdict(m.wall < target, f"< {target:g} s") + "; " + _db_note(ours_db, floor_db, n),
        args.repeats,
        baselines=("poll_sequential",) if provider == "xai" else (),
    )


def _poll_ending(provider: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    from django.db import transaction

    from raif_batches.models import CompletionStatus, ModelCompletion, ModelCompletionBatch
    from raif_batches.polling import poll

    n = args.batches
    ending = ("--ending", str(n), "--lines", str(LINES))
    ours: list[tuple[Measure, float]] = []
    for _ in range(args.repeats):
        with provider_emulator(provider, *ending) as emulator:
            use(provider, emulator["base_url"])
            ids = local_batches(provider, emulator["batch_ids"], lines=LINES)
            with measure() as m, timed_statements() as sql:
                report = poll()
            assert report.ok and len(report.finished) == n, (report.errors[:3], report.notes[:3])
            done = ModelCompletion.objects.filter(
                batch_id__in=ids, status=CompletionStatus.COMPLETED
            )
            assert done.count() == n * LINES
            ours.append((m, sql.seconds))
    floor_runs: list[tuple[Measure, float]] = []
    for _ in range(args.repeats):
        with provider_emulator(provider, *ending) as emulator:
            use(provider, emulator["base_url"])
            ids = local_batches(provider, emulator["batch_ids"], lines=LINES)
            batches = {
                b.provider_batch_id: b for b in ModelCompletionBatch.objects.filter(pk__in=ids)
            }
            wire = Wire(provider, emulator["base_url"], _threads())
            with ThreadPoolExecutor(max_workers=_threads()) as pool, measure() as m:
                snapshots = wire.statuses(pool, emulator["batch_ids"])
                pages = dict(
                    zip(
                        [s.provider_batch_id for s in snapshots],
                        pool.map(wire.results, snapshots),
                        strict=True,
                    )
                )
                started = time.perf_counter()
                with transaction.atomic():
                    assert floors.write_results(batches, pages) == n * LINES
                write = time.perf_counter() - started
            floor_runs.append((m, write))
    m, ours_db = _median(ours)
    floor, floor_db = _median(floor_runs)
    floor.queries = floors.WRITE_RESULTS_STATEMENTS
    return _pair(
        f"poll_end_{provider}",
        f"one poll in which {n:,} batches of {LINES} lines end, 50 ms a call, {provider}",
        (m, ours_db),
        f"floor: statuses as above + {n:,} results reads at once, one COPY + 2 UPDATEs",
        (floor, floor_db),
        n,
        verdict(m.wall < END_TARGET, f"< {END_TARGET:g} s")
        + f"; db {ours_db * 1000 / n:.2f} ms/batch = {ours_db / max(floor_db, 1e-6):.1f}x the "
        "floor's writes",
        args.repeats,
    )


def _pair(
    key: str,
    label: str,
    ours: tuple[Measure, float],
    floor_label: str,
    floor: tuple[Measure, float],
    n: int,
    target: str,
    repeats: int,
    baselines: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """Our row and its floor's, each with its time in SQL (``db``)."""
    return [
        row(
            key,
            f"{label} (median of {repeats}; db {ours[1] * 1000:.0f} ms)",
            ours[0],
            n=n,
            item="batches",
            units=n,
            unit="batch",
            floor=f"{key}_floor",
            target=target,
            baselines=baselines,
        ),
        row(
            f"{key}_floor",
            f"{floor_label} (median of {repeats}; db {floor[1] * 1000:.0f} ms)",
            floor[0],
            n=n,
            item="batches",
            units=n,
            unit="batch",
            label="the floor",
        ),
    ]


def _sequential_baseline(args: argparse.Namespace) -> list[dict[str, Any]]:
    from raif_batches.polling import poll

    sample = args.poll_sample
    with provider_emulator("xai", "--in-flight", str(sample)) as emulator:
        use("xai", emulator["base_url"], POLL_CONCURRENCY=1)
        local_batches("xai", emulator["batch_ids"])
        with measure() as m:
            report = poll()
        assert report.ok and report.refreshed == sample, report
    return [
        row(
            "poll_sequential",
            f"baseline: xai, one status read at a time (sample of {sample:,}, per batch)",
            m,
            n=sample,
            item="batches",
            units=sample,
            unit="batch",
            label="sequential reads",
        )
    ]


def _lease(args: argparse.Namespace) -> list[dict[str, Any]]:
    """A claim and a release of every batch, as each poll takes and gives back its leases, on
    the batch table at migration 0006's fill factor and at PostgreSQL's default (100), the
    table rewritten (``VACUUM FULL``) for each; before every run all batches are written once
    as a poll's bulk write does (an indexed column changes, so the rows move)."""
    from django.db import connection

    from raif_batches.clock import db_now
    from raif_batches.models import ModelCompletionBatch
    from raif_batches.polling import claim_batches, release_all

    migration = importlib.import_module("raif_batches.migrations.0006_batch_table_fillfactor")
    fillfactor = migration.FILLFACTOR
    n = args.batches
    ids = local_batches("xai", [f"lease-{number}" for number in range(n)])
    table = connection.ops.quote_name(ModelCompletionBatch._meta.db_table)
    runs: dict[int, list[tuple[Measure, float]]] = {}
    try:
        for factor in (fillfactor, 100):
            with connection.cursor() as cursor:
                cursor.execute(f"ALTER TABLE {table} SET (fillfactor = {factor})")
                cursor.execute(f"VACUUM FULL {table}")
            runs[factor] = []
            for _ in range(max(args.repeats, 5)):
                ModelCompletionBatch.objects.filter(pk__in=ids).update(next_poll_at=db_now())
                make_due(ids)
                with measure() as m, timed_statements() as sql:
                    claimed = claim_batches(ModelCompletionBatch.objects.due_for_poll(db_now()))
                    release_all(claimed)
                assert len(claimed) == n, len(claimed)
                runs[factor].append((m, sql.seconds))
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE {table} SET (fillfactor = {fillfactor})")
            cursor.execute(f"VACUUM FULL {table}")
    (ours, ours_sql), (base, base_sql) = _median(runs[fillfactor]), _median(runs[100])
    return [
        row(
            "lease",
            f"claim + release of {n:,} batches, batch table at fill factor {fillfactor} "
            f"(migration 0006; median of {len(runs[fillfactor])}; db {ours_sql * 1000:.0f} ms)",
            ours,
            n=n,
            item="batches",
            baselines=("lease_full_pages",),
        ),
        row(
            "lease_full_pages",
            f"baseline: the same at PostgreSQL's default fill factor, 100 "
            f"(median of {len(runs[100])}; db {base_sql * 1000:.0f} ms)",
            base,
            n=n,
            item="batches",
            label="full pages",
        ),
    ]


def _postgresql_only(
    operation: Callable[[argparse.Namespace], list[dict[str, Any]]], args: argparse.Namespace
) -> list[dict[str, Any]]:
    from django.db import connection

    return operation(args) if connection.vendor == "postgresql" else []


def _each(
    kind: Callable[[str, argparse.Namespace], list[dict[str, Any]]],
) -> Callable[[argparse.Namespace, dict[str, Any]], list[dict[str, Any]]]:
    def run(args: argparse.Namespace, context: dict[str, Any]) -> list[dict[str, Any]]:
        from django.db import connection

        if connection.vendor != "postgresql":
            return []  # the floors write with psycopg
        if args.poll_concurrency:
            CONCURRENCY["POLL_CONCURRENCY"] = args.poll_concurrency
        providers = args.poll_providers.split(",") if args.poll_providers else PROVIDERS
        return [measured for provider in providers for measured in kind(provider, args)]

    return run


OPERATIONS = {
    "poll_baseline_sequential": lambda args, context: _sequential_baseline(args),
    "poll": _each(_poll_in_flight),
    "poll_end": _each(_poll_ending),
    "lease": lambda args, context: _postgresql_only(_lease, args),
}
