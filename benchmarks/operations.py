"""The measured operations and their baselines; each runs in a child process of ``run.py``.

Every operation builds what it needs outside the measurement, resets the peak-memory mark, and
returns one measurement per line of the table. Baselines get the same data, the same HTTP pages
and the same per-result parsing (``result_row``) as our code; only the way rows reach the
database differs, so the ratio is the cost of that way and nothing else.
"""

from __future__ import annotations

import argparse
import gc
import math
import resource
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import django

MB = 1024 * 1024
BIG_BATCH = "bench-50k"
PADDED_BATCH = "bench-50k-4kb"
SYSTEM_PROMPT = (
    "You label customer reviews as positive, negative or neutral. Answer with the label and "
    "one short sentence that explains it."
)
API_KEY = "bench-key"


# --- measuring ------------------------------------------------------------------------------


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Lower the resident high-water mark to the current size (Linux 4.0+), so the peak read
    after an operation is that operation's, not its setup's."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        return False
    return True


def rss_mb() -> float:
    current = _status_kb("VmRSS")
    return current / 1024 if current is not None else peak_rss_mb()


def peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux; it follows VmHWM, including its reset.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class QueryCounter:
    """Counts statements sent on the connection (see run.py for why not CaptureQueriesContext)."""

    def __init__(self) -> None:
        self.count = 0
        self.savepoints = 0

    def __call__(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        self.count += 1
        if sql.lstrip().upper().startswith(("SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK TO")):
            self.savepoints += 1
        return execute(sql, params, many, context)


@dataclass
class Measure:
    wall: float = 0.0
    queries: int = 0
    savepoints: int = 0
    peak_rss_mb: float = 0.0
    rss_delta_mb: float = 0.0


@contextmanager
def measure() -> Iterator[Measure]:
    from django.db import connection

    gc.collect()
    reset_peak_rss()
    before = rss_mb()
    counter = QueryCounter()
    result = Measure()
    started = time.perf_counter()
    with connection.execute_wrapper(counter):
        yield result
    result.wall = time.perf_counter() - started
    result.queries = counter.count
    result.savepoints = counter.savepoints
    result.peak_rss_mb = peak_rss_mb()
    result.rss_delta_mb = result.peak_rss_mb - before


def row(
    key: str,
    operation: str,
    m: Measure,
    *,
    n: int,
    item: str,
    units: int = 0,
    unit: str = "",
    label: str = "",
    baselines: tuple[str, ...] = (),
    compare: str = "time",
    target: str = "",
    floor: str = "",
    floor_max: float = 0.0,
) -> dict[str, Any]:
    return {
        "floor": floor,
        "floor_max": floor_max,
        "key": key,
        "operation": operation,
        "label": label or operation,
        "n": n,
        "item": item,
        "wall": m.wall,
        "seconds_per_item": m.wall / max(n, 1),
        "peak_rss_mb": m.peak_rss_mb,
        "rss_delta_mb": m.rss_delta_mb,
        "queries": m.queries,
        "units": units,
        "unit": unit,
        "baselines": list(baselines),
        "compare": compare,
        "target": target,
    }


def verdict(ok: bool, text: str) -> str:
    return f"{'✓' if ok else '✗'} {text}"


def median_of(runs: list[Measure]) -> Measure:
    """The run of median wall time (its peak and queries with it)."""
    return sorted(runs, key=lambda m: m.wall)[len(runs) // 2]


def mark_fetched(batch: Any) -> None:
    """Leave a batch harvested, as the harvest would, so that later polls pass it by."""
    from django.utils import timezone

    type(batch).objects.filter(pk=batch.pk).update(results_fetched_at=timezone.now())


def delete_batch(batch: Any) -> None:
    from raif_batches.models import ModelCompletion

    ModelCompletion.objects.filter(batch_id=batch.pk).delete()
    batch.delete()
    vacuum(ModelCompletion, type(batch))


# --- data -----------------------------------------------------------------------------------


def review_requests(count: int, prefix: str) -> Iterator[dict[str, Any]]:
    """Realistic small classification requests, generated lazily (not held by the caller)."""
    for number in range(count):
        yield {
            "custom_id": f"{prefix}-{number:06d}",
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {
                    "role": "user",
                    "content": f"Review {number}: the parcel came {number % 17} days late, "
                    "but the kettle works well and boils quickly.",
                },
            ],
            "temperature": 0.2,
            "max_tokens": 64,
        }


def big_batch() -> Any:
    from raif_batches.models import ModelCompletionBatch

    return ModelCompletionBatch.objects.get(name=BIG_BATCH)


def use_emulator(base_url: str, **extra: Any) -> None:
    from django.conf import settings

    settings.RAIF_BATCHES = {"XAI_BASE_URL": base_url, "XAI_API_KEY": API_KEY, **extra}


def vacuum(*models: Any) -> None:
    """Leave no dead rows from a setup step for the measured step to wade through."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    with connection.cursor() as cursor:
        for model in models:
            cursor.execute(f"VACUUM ANALYZE {model._meta.db_table}")


# --- create ---------------------------------------------------------------------------------


def op_create(args: argparse.Namespace, context: dict[str, Any]) -> list[dict[str, Any]]:
    """create_batch and its floor, run by turns, for requests given two ways: drawn from a
    generator (made as they are read) and as a list built beforehand, outside both timings.

    By turns: on a machine whose load drifts (other processes share its cores), the runs of
    both sides see the same drift, so their medians compare."""
    from django.db import connection, transaction

    from raif_batches import create_batch
    from raif_batches.api import INSERT_CHUNK
    from raif_batches.models import ModelCompletionBatch

    from . import floors

    with_floor = connection.vendor == "postgresql"
    chunks = math.ceil(args.rows / INSERT_CHUNK)
    # shape: its row's key, how its requests are made, how they are inserted, chunks sent.
    shapes = {
        "generator": (
            "create",
            lambda prefix: review_requests(args.rows, prefix),
            f"drawn from a generator, {INSERT_CHUNK:,} at a time, one COPY (INSERT elsewhere) "
            "per chunk",
            chunks,
        ),
        "list": (
            "create_list",
            lambda prefix: list(review_requests(args.rows, prefix)),
            "given as a list, one COPY (INSERT elsewhere)",
            0,
        ),
    }
    ours: dict[str, list[Measure]] = {shape: [] for shape in shapes}
    floor_runs: dict[str, list[Measure]] = {shape: [] for shape in shapes}
    for attempt in range(args.repeats):
        for shape, (_, make, _, _) in shapes.items():
            requests = make("r")
            with measure() as m:
                batch = create_batch(
                    model="grok-4.3",
                    requests=requests,
                    name=BIG_BATCH if attempt == 0 and shape == "generator" else "bench-again",
                )
            assert batch.completions.count() == args.rows
            ours[shape].append(m)
            if attempt or shape != "generator":
                delete_batch(batch)
            if not with_floor:
                continue
            requests = make("f")
            with measure() as m, transaction.atomic():
                batch = ModelCompletionBatch.objects.create(model="grok-4.3", name="bench-floor")
                assert floors.copy_requests(batch.pk, requests) == args.rows
            floor_runs[shape].append(m)
            delete_batch(batch)
            del requests
    measured = []
    for shape, (key, _, how, units) in shapes.items():
        m = median_of(ours[shape])
        measured.append(
            row(
                key,
                f"create_batch: validated, requests {how} (median of {args.repeats}, by "
                "turns with the floor)",
                m,
                n=args.rows,
                item="requests",
                units=units,
                unit="chunk" if units else "",
                baselines=("create_per_row",),
                target=verdict(m.wall < 10, "a few seconds (< 10 s)"),
                floor=f"{key}_floor",
                floor_max=1.5,
            )
        )
        if with_floor:
            measured.append(
                row(
                    f"{key}_floor",
                    f"floor: one psycopg COPY of the same rows from the same {shape}, no "
                    f"validation (median of {args.repeats})",
                    median_of(floor_runs[shape]),
                    n=args.rows,
                    item="requests",
                    label="COPY",
                )
            )
    return measured


def op_create_baseline_per_row(
    args: argparse.Namespace, context: dict[str, Any]
) -> list[dict[str, Any]]:
    from django.db import transaction

    from raif_batches.models import ModelCompletion, ModelCompletionBatch

    sample = min(args.save_sample, args.rows)
    batch = ModelCompletionBatch.objects.create(model="grok-4.3", name="bench-baseline")
    with measure() as m, transaction.atomic():
        for request in review_requests(sample, "b"):
            ModelCompletion.objects.create(
                batch=batch,
                batch_custom_id=request["custom_id"],
                messages=request["messages"],
                temperature=request["temperature"],
                max_tokens=request["max_tokens"],
            )
    batch.delete()
    return [
        row(
            "create_per_row",
            f"baseline: one INSERT per request, one transaction (sample of {sample:,})",
            m,
            n=sample,
            item="requests",
            label="INSERT per row",
        )
    ]


# --- submit ---------------------------------------------------------------------------------


def op_submit(args: argparse.Namespace, context: dict[str, Any]) -> list[dict[str, Any]]:
    from raif_batches.lifecycle import status
    from raif_batches.polling import submit

    use_emulator(context["instant"]["base_url"])
    batch = big_batch()
    with measure() as m:
        report = submit([batch.pk])
    assert report.submitted == [batch.pk], report
    # Not measured: read the status until the emulator has run every line.
    batch.refresh_from_db()
    strategy = batch.get_strategy()
    for _ in range(10):
        batch = status.fetch_status(strategy, batch)
        if batch.is_terminal:
            break
    assert batch.status == "ended", batch.status
    return [
        row(
            "submit",
            "submit: JSONL streamed from the DB to the upload",
            m,
            n=args.rows,
            item="requests",
            baselines=("submit_in_memory",),
            compare="memory",
            target=verdict(m.peak_rss_mb < 200, "peak < 200 MB"),
        )
    ]


def op_submit_baseline_in_memory(
    args: argparse.Namespace, context: dict[str, Any]
) -> list[dict[str, Any]]:
    from raif_batches.models import ModelCompletion

    use_emulator(context["instant"]["base_url"])
    batch = big_batch()
    strategy: Any = batch.get_strategy()
    with measure() as m:
        completions = list(ModelCompletion.objects.filter(batch_id=batch.pk).order_by("pk"))
        jsonl = b"".join(strategy.build_line(batch, completion) for completion in completions)
        strategy.client.request(
            "POST",
            "/files",
            idempotent=True,
            data={"purpose": "batch"},
            files={"file": ("baseline.jsonl", jsonl, "application/jsonl")},
        )
    return [
        row(
            "submit_in_memory",
            "baseline: whole JSONL built in memory, then uploaded (the seed's way)",
            m,
            n=args.rows,
            item="requests",
            label="the in-memory JSONL",
        )
    ]


# --- harvest --------------------------------------------------------------------------------


def reset_results(batch: Any) -> None:
    """Put every completion back to pending, as before the results were fetched."""
    from raif_batches.lifecycle.results import RESULT_FIELDS
    from raif_batches.models import CompletionStatus, ModelCompletion

    blank: dict[str, Any] = {name: None for name in RESULT_FIELDS}
    blank.update(
        status=CompletionStatus.PENDING,
        raw_response="",
        finish_reason="",
        failure_error="",
        failure_reason="",
    )
    ModelCompletion.objects.filter(batch_id=batch.pk).update(**blank)
    type(batch).objects.filter(pk=batch.pk).update(
        results_fetched_at=None, prompt_token_cost=None, output_token_cost=None, total_cost=None
    )
    batch.refresh_from_db()
    vacuum(ModelCompletion, type(batch))


def _harvest_setup(context: dict[str, Any]) -> tuple[Any, Any]:
    use_emulator(context["instant"]["base_url"])
    batch = big_batch()
    reset_results(batch)
    return batch, batch.get_strategy()


def op_harvest(args: argparse.Namespace, context: dict[str, Any]) -> list[dict[str, Any]]:
    from raif_batches.conf import get_setting
    from raif_batches.lifecycle import results
    from raif_batches.models import CompletionStatus

    batch, strategy = _harvest_setup(context)
    with measure() as m:
        applied = results.fetch_results(strategy, batch)
    assert applied == args.rows, applied
    assert batch.completions.filter(status=CompletionStatus.COMPLETED).count() == args.rows
    pages = math.ceil(args.rows / int(get_setting("RESULTS_PAGE_SIZE")))
    # The statements per page are judged on the harvest_db row, which runs the pages alone:
    # here the few statements that start and end the harvest are shared out over its pages.
    return [
        row(
            "harvest",
            "harvest (HTTP included): per 1,000-result page, COPY into a temp table + one "
            f"UPDATE; {m.savepoints} of the statements are savepoints",
            m,
            n=args.rows,
            item="results",
            units=pages,
            unit="page",
            baselines=("harvest_save", "harvest_bulk_update"),
            target=verdict(m.peak_rss_mb < 200, "< 200 MB"),
        )
        | {"min_speedup": {"harvest_save": 10, "harvest_bulk_update": 3}}
    ]


def _harvest_baseline(
    context: dict[str, Any], sample: int, apply_page: Callable[[Any, Any, list[Any]], int]
) -> tuple[Measure, int, int]:
    batch, strategy = _harvest_setup(context)
    applied = pages = 0
    with measure() as m:
        for page in strategy.iter_result_pages(batch.provider_batch_id):
            applied += apply_page(strategy, batch, page)
            pages += 1
            if applied >= sample:
                break
    return m, applied, pages


def _apply_with_save(strategy: Any, batch: Any, page: list[Any]) -> int:
    """The seed's way: reload each completion, then ``save()`` it."""
    from django.db import transaction
    from django.utils import timezone

    from raif_batches.lifecycle import results
    from raif_batches.lifecycle.results import RESULT_FIELDS
    from raif_batches.models import CompletionStatus, ModelCompletion, ModelCompletionBatch

    prices = results.Prices()

    now = timezone.now()
    changed = 0
    with transaction.atomic():
        locked = ModelCompletionBatch.objects.locked().get(pk=batch.pk)
        for entry in page:
            completion = ModelCompletion.objects.get(
                batch_id=batch.pk, batch_custom_id=entry.custom_id
            )
            if completion.status != CompletionStatus.PENDING:
                continue
            values = results.result_row(locked, entry, completion.response_format, now, prices)
            for name in RESULT_FIELDS:
                setattr(completion, name, values[name])
            completion.save()
            changed += 1
    return changed


def _apply_with_bulk_update(strategy: Any, batch: Any, page: list[Any]) -> int:
    """Django's ``bulk_update``: one SELECT of the page, then CASE-per-column UPDATEs."""
    from django.db import transaction
    from django.utils import timezone

    from raif_batches.lifecycle import results
    from raif_batches.lifecycle.results import RESULT_FIELDS
    from raif_batches.models import CompletionStatus, ModelCompletion, ModelCompletionBatch

    prices = results.Prices()

    now = timezone.now()
    by_id = {entry.custom_id: entry for entry in page}
    with transaction.atomic():
        locked = ModelCompletionBatch.objects.locked().get(pk=batch.pk)
        completions = list(
            ModelCompletion.objects.filter(
                batch_id=batch.pk, batch_custom_id__in=list(by_id), status=CompletionStatus.PENDING
            )
        )
        for completion in completions:
            entry = by_id[completion.batch_custom_id]
            values = results.result_row(locked, entry, completion.response_format, now, prices)
            for name in RESULT_FIELDS:
                setattr(completion, name, values[name])
        ModelCompletion.objects.bulk_update(completions, RESULT_FIELDS, batch_size=1000)
    return len(completions)


def op_harvest_baseline_save(
    args: argparse.Namespace, context: dict[str, Any]
) -> list[dict[str, Any]]:
    m, applied, pages = _harvest_baseline(context, args.save_sample, _apply_with_save)
    return [
        row(
            "harvest_save",
            f"baseline: reload + save() per row (sample of {applied:,}, per row)",
            m,
            n=applied,
            item="results",
            units=pages,
            unit="page",
            label="save() per row",
        )
    ]


def op_harvest_baseline_bulk_update(
    args: argparse.Namespace, context: dict[str, Any]
) -> list[dict[str, Any]]:
    m, applied, pages = _harvest_baseline(context, args.bulk_sample, _apply_with_bulk_update)
    sample = "" if applied >= args.rows else f" (sample of {applied:,}, per row)"
    return [
        row(
            "harvest_bulk_update",
            f"baseline: bulk_update, chunks of 1,000{sample}",
            m,
            n=applied,
            item="results",
            units=pages,
            unit="page",
            label="bulk_update",
        )
    ]


def _read_pages(strategy: Any, batch: Any) -> list[Any]:
    return list(strategy.iter_result_pages(batch.provider_batch_id))


def op_harvest_db(args: argparse.Namespace, context: dict[str, Any]) -> list[dict[str, Any]]:
    """The harvest's database work alone: pages read first (HTTP not timed), then applied."""
    from django.db import connection, transaction
    from django.utils import timezone

    from raif_batches.lifecycle import results

    from . import floors

    batch, strategy = _harvest_setup(context)
    pages = _read_pages(strategy, batch)
    # What both ways share: the per-result parsing, timed alone (no database).
    prices = results.Prices()
    now = timezone.now()
    with measure() as parsing:
        for page in pages:
            for entry in page:
                results.result_row(batch, entry, None, now, prices)
    ours = []
    for _ in range(args.repeats):
        reset_results(batch)
        with measure() as m:
            prices = results.Prices()
            applied = sum(results.apply_result_page(batch, page, prices) for page in pages)
        assert applied == args.rows, applied
        ours.append(m)
    mid = median_of(ours)
    # As tests/test_query_counts.py counts them: the savepoint pair around each page's write
    # (so that a refused page can be stored row by row) apart.
    per_page = (mid.queries - mid.savepoints) / len(pages)
    measured = [
        row(
            "harvest_db",
            f"harvest, database work: apply_result_page on {len(pages)} pages of 1,000 "
            f"(median of {args.repeats})",
            mid,
            n=args.rows,
            item="results",
            units=len(pages),
            unit="page",
            target=verdict(per_page <= 5, "≤ 5 q/page, savepoints apart"),
            floor="harvest_db_floor",
            floor_max=1.5,
        ),
        row(
            "harvest_parse",
            "  of which per-result parsing (result_row, no database), in both ways",
            parsing,
            n=args.rows,
            item="results",
        ),
    ]
    if connection.vendor == "postgresql":
        floor_runs = []
        for _ in range(args.repeats):
            reset_results(batch)
            with measure() as m, transaction.atomic():
                assert floors.copy_results_then_update(batch, pages) == args.rows
            floor_runs.append(m)
        measured.append(
            row(
                "harvest_db_floor",
                f"floor: the same parsing, COPY into a temp table + one UPDATE "
                f"(median of {args.repeats})",
                median_of(floor_runs),
                n=args.rows,
                item="results",
                label="COPY + one UPDATE",
            )
        )
    mark_fetched(batch)
    return measured


def op_padded_setup(args: argparse.Namespace, context: dict[str, Any]) -> list[dict[str, Any]]:
    """A second batch of the same requests, ended at the emulator whose answers carry 4 KB."""
    from raif_batches import create_batch
    from raif_batches.lifecycle import status
    from raif_batches.polling import submit

    use_emulator(context["padded"]["base_url"])
    batch = create_batch(
        model="grok-4.3", requests=review_requests(args.rows, "p"), name=PADDED_BATCH
    )
    assert submit([batch.pk]).submitted == [batch.pk]
    batch.refresh_from_db()
    strategy = batch.get_strategy()
    for _ in range(10):
        batch = status.fetch_status(strategy, batch)
        if batch.is_terminal:
            break
    assert batch.status == "ended", batch.status
    return []


def _padded_setup(context: dict[str, Any], debug: bool) -> tuple[Any, Any]:
    from django.conf import settings

    from raif_batches.models import ModelCompletionBatch

    settings.DEBUG = debug
    use_emulator(context["padded"]["base_url"])
    batch = ModelCompletionBatch.objects.get(name=PADDED_BATCH)
    reset_results(batch)
    return batch, batch.get_strategy()


def _harvest_memory(args: argparse.Namespace, context: dict[str, Any], debug: bool) -> Any:
    from raif_batches.lifecycle import results

    batch, strategy = _padded_setup(context, debug)
    with measure() as m:
        applied = results.fetch_results(strategy, batch)
    assert applied == args.rows, applied
    return row(
        f"harvest_memory_{'debug' if debug else 'nodebug'}",
        f"harvest of ~4 KB answers, DEBUG={debug}: peak memory",
        m,
        n=args.rows,
        item="results",
        compare="memory",
        floor="harvest_memory_floor",
        target=verdict(m.peak_rss_mb < 200, "peak < 200 MB"),
    )


def op_harvest_memory_debug(args: argparse.Namespace, context: dict[str, Any]) -> list[Any]:
    return [_harvest_memory(args, context, debug=True)]


def op_harvest_memory(args: argparse.Namespace, context: dict[str, Any]) -> list[Any]:
    return [_harvest_memory(args, context, debug=False)]


def op_harvest_memory_floor(args: argparse.Namespace, context: dict[str, Any]) -> list[Any]:
    """The same pages read and parsed, COPY'd as they come into one temp table, one UPDATE."""
    from django.db import connection, transaction

    from . import floors

    if connection.vendor != "postgresql":
        return []
    batch, strategy = _padded_setup(context, debug=False)
    with measure() as m, transaction.atomic():
        pages = strategy.iter_result_pages(batch.provider_batch_id)
        assert floors.copy_results_then_update(batch, pages) == args.rows
    mark_fetched(batch)
    return [
        row(
            "harvest_memory_floor",
            "floor: the same pages, COPY into a temp table as they come + one UPDATE",
            m,
            n=args.rows,
            item="results",
            label="COPY + one UPDATE",
        )
    ]


# --- admin ----------------------------------------------------------------------------------


def op_admin(args: argparse.Namespace, context: dict[str, Any]) -> list[dict[str, Any]]:
    from django.contrib.auth import get_user_model
    from django.test import Client
    from django.test.utils import setup_test_environment
    from django.urls import reverse
    from django.utils import timezone

    from raif_batches.models import BatchStatus, ModelCompletionBatch

    setup_test_environment()  # lets the test client's "testserver" host in
    missing = args.admin_batches - ModelCompletionBatch.objects.count()
    now = timezone.now()
    ModelCompletionBatch.objects.bulk_create(
        (
            ModelCompletionBatch(
                name=f"bench-admin-{number}",
                model="grok-4.3",
                status=BatchStatus.ENDED,
                provider_batch_id=f"batch_admin_{number}",
                ended_at=now,
                results_fetched_at=now,
            )
            for number in range(max(missing, 0))
        ),
        batch_size=2000,
    )
    vacuum(ModelCompletionBatch)
    user_model = get_user_model()
    user = user_model.objects.filter(username="bench").first() or (
        user_model.objects.create_superuser("bench", "bench@example.com", "bench")
    )
    client = Client()
    client.force_login(user)
    batch = big_batch()
    total = ModelCompletionBatch.objects.count()
    pages = [
        (
            "admin: batch list",
            reverse("admin:raif_batches_modelcompletionbatch_changelist"),
            total,
            "batches",
        ),
        (
            "admin: batch page",
            reverse("admin:raif_batches_modelcompletionbatch_change", args=[batch.pk]),
            batch.completions.count(),
            "completions",
        ),
        (
            "admin: completions of the batch",
            reverse("admin:raif_batches_modelcompletion_changelist")
            + f"?batch__id__exact={batch.pk}",
            batch.completions.count(),
            "completions",
        ),
    ]
    results: list[dict[str, Any]] = []
    for label, url, n, item in pages:
        client.get(url)  # warm caches and templates; counts do not depend on it
        with measure() as m:
            response = client.get(url)
        status = f"HTTP {response.status_code}; "
        results.append(
            row(
                f"admin_{len(results)}",
                label,
                m,
                n=n,
                item=item,
                target=status + verdict(m.queries <= 10, "≤ 10 queries"),
            )
        )
    return results


OPERATIONS: dict[str, Callable[[argparse.Namespace, dict[str, Any]], list[dict[str, Any]]]] = {
    "create": op_create,
    "create_baseline_per_row": op_create_baseline_per_row,
    "submit": op_submit,
    "submit_baseline_in_memory": op_submit_baseline_in_memory,
    "harvest": op_harvest,
    "harvest_db": op_harvest_db,
    "padded_setup": op_padded_setup,
    "harvest_memory_debug": op_harvest_memory_debug,
    "harvest_memory": op_harvest_memory,
    "harvest_memory_floor": op_harvest_memory_floor,
    "harvest_baseline_save": op_harvest_baseline_save,
    "harvest_baseline_bulk_update": op_harvest_baseline_bulk_update,
    "admin": op_admin,
}


def run(name: str, args: argparse.Namespace, context: dict[str, Any]) -> list[dict[str, Any]]:
    django.setup()
    from . import polling

    return {**OPERATIONS, **polling.OPERATIONS}[name](args, context)
