"""Admin pages at scale: 5,000,000 completions in 100,000 batches, timed server-side.

Run ``python -m benchmarks.admin_scale`` (``DATABASE_URL`` defaults to the PostgreSQL database
``raif_admin`` on 127.0.0.1; ``python -m benchmarks.run --scale`` runs this too). It migrates,
builds the data set once with SQL (``generate_series``; the ORM would take an hour), then times
every admin page with Django's test client and ``DEBUG=False``: the median of 5 requests after
one warm-up, and the number of statements each sent. ``--rebuild`` drops and rebuilds the data;
``--build-only`` stops after it. The client runs without ``setup_test_environment()``, whose
template instrumentation (a copy of every template's context, kept for the tests) is no part of
what a server does.

Columns: ``ms`` is the wall-clock median (the target), ``CPU ms`` the Python process's own CPU
time (what the page costs when the machine is shared), ``SQL ms`` the time spent waiting on the
statements, ``queries`` the statements sent (the most of the 5 runs), ``load`` the one-minute
load average when the page was timed (the machine's cores are shared).

The data set: 100,000 batches (every status, three providers, five models, costs). Every
1,000th batch (ids 1000, 2000, … 100000) holds 50,000 completions, so both the oldest and
the newest big batch can be opened; the others hold none. 2% of the completions failed. Some
values are found only among the oldest rows, where an index that does not lead with the filtered
column would read every newer row first: the provider ``anthropic`` and the model
``claude-haiku-4-5`` (the first 1,000 batches), names beginning ``Nightly summaries 5``
(11,111 batches, none of the newest 40,000), and pending completions (only the oldest big
batch's, which is still in progress).

What a target means (issue 13): every page under 100 ms and at most 10 queries, whatever batch
is opened. The script prints a table and exits non-zero when a page misses either bound.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlencode

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/raif_admin"
BATCHES = 100_000
BIG_EVERY = 1_000
PER_BIG_BATCH = 50_000
RUNS = 5
TARGET_MS = 100.0
TARGET_QUERIES = 10


def setup() -> None:
    os.environ.setdefault("DATABASE_URL", DEFAULT_DATABASE_URL)
    create_database_if_missing(os.environ["DATABASE_URL"])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    os.environ["DJANGO_DEBUG"] = "false"
    import django

    django.setup()
    from django.conf import settings

    settings.DEBUG = False
    # The test client's host; setup_test_environment(), which would allow it, is not called.
    settings.ALLOWED_HOSTS = ["testserver"]


def create_database_if_missing(url: str) -> None:
    """The data set is built with PostgreSQL's SQL: make its database on that server if needed."""
    import environ
    import psycopg

    config = environ.Env.db_url_config(url)
    if "postgresql" not in config["ENGINE"]:
        raise SystemExit(f"admin_scale builds its data with PostgreSQL's SQL; {url} is not one")
    server = psycopg.conninfo.make_conninfo(
        host=config.get("HOST") or "127.0.0.1",
        port=config.get("PORT") or 5432,
        user=config.get("USER") or "postgres",
        password=config.get("PASSWORD") or None,
        dbname="postgres",
    )
    with psycopg.connect(server, autocommit=True) as connection:
        if not connection.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [config["NAME"]]
        ).fetchone():
            connection.execute(f'CREATE DATABASE "{config["NAME"]}"')


def build(rebuild: bool) -> None:
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM raif_batches_modelcompletionbatch")
        (have,) = cursor.fetchone()
        if have >= BATCHES and not rebuild:
            print(f"data set present ({have:,} batches); --rebuild to build it again")
            return
        started = time.perf_counter()
        cursor.execute(
            "TRUNCATE raif_batches_modelcompletion, raif_batches_modelcompletionbatch "
            "RESTART IDENTITY CASCADE"
        )
        cursor.execute(BATCH_SQL, {"batches": BATCHES, "every": BIG_EVERY, "per": PER_BIG_BATCH})
        print(f"{BATCHES:,} batches in {time.perf_counter() - started:.1f} s", flush=True)
        cursor.execute(COMPLETION_SQL, {"every": BIG_EVERY, "per": PER_BIG_BATCH})
        print(
            f"{BATCHES // BIG_EVERY * PER_BIG_BATCH:,} completions in "
            f"{time.perf_counter() - started:.1f} s",
            flush=True,
        )
        cursor.execute("VACUUM ANALYZE raif_batches_modelcompletionbatch")
        cursor.execute("VACUUM ANALYZE raif_batches_modelcompletion")
        print(f"built and analysed in {time.perf_counter() - started:.1f} s", flush=True)


# Every NOT NULL column is given: the models' defaults are Python-side, not in the schema.
BATCH_SQL = """
INSERT INTO raif_batches_modelcompletionbatch (
    provider, model, name, metadata, status, provider_batch_name, provider_batch_id,
    input_file_id, provider_response, request_counts, failure_error, failure_reason,
    created_at, submitted_at, started_at, ended_at, results_fetched_at,
    cancel_reason, claimed_by, handler, handler_attempts, handler_gave_up, handler_error,
    duplicate_provider_batches, handler_claimed_by, results_read_attempts, reconcile_candidates,
    prompt_token_cost, output_token_cost, total_cost
)
SELECT
    CASE WHEN i <= %(every)s THEN 'anthropic' WHEN i %% 10 = 0 THEN 'openai' ELSE 'xai' END,
    CASE WHEN i <= %(every)s THEN 'claude-haiku-4-5'
         ELSE (ARRAY['grok-4.3', 'grok-4.20-0309', 'grok-3-mini', 'gpt-4.1-mini'])[1 + i %% 4] END,
    'Nightly summaries ' || i,
    '{}'::jsonb,
    CASE WHEN i = %(every)s THEN 'in_progress'
         WHEN i %% %(every)s = 0 THEN 'ended'
         ELSE (ARRAY['pending', 'submitted', 'in_progress', 'ended', 'ended', 'ended',
                     'canceled', 'expired', 'failed'])[1 + i %% 9] END,
    'raif_batch_' || md5(i::text),
    'batch_' || lpad(i::text, 6, '0'),
    '',
    NULL,
    CASE WHEN i = %(every)s
         THEN jsonb_build_object('total', %(per)s, 'pending', %(per)s,
                                 'succeeded', 0, 'failed', 0, 'cancelled', 0)
         WHEN i %% %(every)s = 0
         THEN jsonb_build_object('total', %(per)s, 'pending', 0,
                                 'succeeded', %(per)s - %(per)s / 50,
                                 'failed', %(per)s / 50, 'cancelled', 0)
         ELSE '{"total": 0, "pending": 0, "succeeded": 0, "failed": 0, "cancelled": 0}'::jsonb
    END,
    '', '',
    now() - make_interval(mins => %(batches)s - i),
    now() - make_interval(mins => %(batches)s - i),
    now() - make_interval(mins => %(batches)s - i),
    CASE WHEN i <> %(every)s THEN now() - make_interval(mins => %(batches)s - i)
                                  + interval '20 minutes' END,
    CASE WHEN i <> %(every)s THEN now() - make_interval(mins => %(batches)s - i)
                                  + interval '21 minutes' END,
    '', '', '', 0, false, '',
    '[]'::jsonb, '', 0, '[]'::jsonb,
    (i %% 997) * 0.0000123, (i %% 991) * 0.0000456, (i %% 997) * 0.0000123 + (i %% 991) * 0.0000456
FROM generate_series(1, %(batches)s) AS i
ORDER BY i
"""

# The oldest big batch (b = 1) is still in progress: its lines are pending.
COMPLETION_SQL = """
INSERT INTO raif_batches_modelcompletion (
    batch_id, batch_custom_id, messages, extra_body, status, raw_response, finish_reason,
    prompt_tokens, completion_tokens, total_tokens, prompt_token_cost, output_token_cost,
    total_cost, failure_error, failure_reason, created_at, completed_at, failed_at,
    source_object_id
)
SELECT
    b * %(every)s,
    'row-' || lpad(n::text, 5, '0'),
    jsonb_build_array(jsonb_build_object('role', 'user', 'content', 'Summarise ticket ' || n)),
    '{}'::jsonb,
    status,
    CASE WHEN status = 'completed'
         THEN 'The customer asks about invoice ' || n || '; answer with the refund policy '
              'and the expected delay, then offer a follow-up call.'
         ELSE '' END,
    CASE WHEN status = 'completed' THEN 'stop' ELSE '' END,
    CASE WHEN status <> 'pending' THEN 120 + n %% 40 END,
    CASE WHEN status <> 'pending' THEN 30 + n %% 20 END,
    CASE WHEN status <> 'pending' THEN 150 + n %% 40 + n %% 20 END,
    CASE WHEN status <> 'pending' THEN (120 + n %% 40) * 0.0000001 END,
    CASE WHEN status <> 'pending' THEN (30 + n %% 20) * 0.0000004 END,
    CASE WHEN status <> 'pending'
         THEN (120 + n %% 40) * 0.0000001 + (30 + n %% 20) * 0.0000004 END,
    CASE WHEN status = 'failed' THEN 'invalid request' ELSE '' END,
    CASE WHEN status = 'failed' THEN 'Line ' || n || ' was refused' ELSE '' END,
    now(),
    CASE WHEN status = 'completed' THEN now() END,
    CASE WHEN status = 'failed' THEN now() END,
    ''
FROM (
    SELECT b, n, CASE WHEN b = 1 THEN 'pending' WHEN n %% 50 = 0 THEN 'failed'
                      ELSE 'completed' END AS status
    FROM generate_series(1, 100) AS b, generate_series(1, %(per)s) AS n
) AS line
ORDER BY b, n
"""


@contextmanager
def counted() -> Iterator[list[float]]:
    from django.db import connection

    sent: list[float] = [0, 0.0]  # statements, seconds spent in them

    def wrapper(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        sent[0] += 1
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            sent[1] += time.perf_counter() - started

    with connection.execute_wrapper(wrapper):
        yield sent


def pages() -> list[tuple[str, str]]:
    from django.urls import reverse

    from raif_batches.models import ModelCompletion, ModelCompletionBatch

    batches = reverse("admin:raif_batches_modelcompletionbatch_changelist")
    completions = reverse("admin:raif_batches_modelcompletion_changelist")
    newest = BATCHES // BIG_EVERY * BIG_EVERY
    oldest = BIG_EVERY
    small = ModelCompletionBatch.objects.filter(pk=BATCHES - 1).values_list("pk", flat=True)[0]
    one = ModelCompletion.objects.filter(batch_id=newest).order_by("pk").values_list("pk")[0][0]
    # A day on which no completion of the batch completed: the date filter reads the batch.
    no_day = {
        "completed_at__gte": "2020-01-01 00:00:00+00:00",
        "completed_at__lt": "2020-01-02 00:00:00+00:00",
    }

    def batch(pk: int, view: str = "change") -> str:
        return reverse(f"admin:raif_batches_modelcompletionbatch_{view}", args=[pk])

    def batch_list(**query: Any) -> str:
        return f"{batches}?{urlencode(query)}"

    def completion_list(**query: Any) -> str:
        return f"{completions}?{urlencode(query)}"

    return [
        ("batch list", batches),
        ("batch list, status ended", batch_list(status__exact="ended")),
        ("batch list, provider openai", batch_list(provider="openai")),
        ("batch list, provider of old batches only", batch_list(provider="anthropic")),
        ("batch list, model grok-3-mini", batch_list(model="grok-3-mini")),
        ("batch list, model of old batches only", batch_list(model="claude-haiku-4-5")),
        ("batch list, search: provider batch id", batch_list(q="batch_054321")),
        ("batch list, search: #id", batch_list(q="#54321")),
        ("batch list, search: name prefix, old only", batch_list(q="nightly summaries 5")),
        ("batch list, search: prefix of every name", batch_list(q="Nightly")),
        ("batch list, sorted by created", batch_list(o=6)),
        ("batch list, page 100 (last offered)", batch_list(p=99)),
        ("batch page, newest big batch", batch(newest)),
        ("batch page, oldest big batch (in progress)", batch(oldest)),
        ("batch page, empty batch", batch(small)),
        ("batch delete page, big batch", batch(newest, "delete")),
        ("completion list, unfiltered", completions),
        ("completion list, unfiltered, page 100", completion_list(p=99)),
        ("completion list, newest big batch", completion_list(batch=newest)),
        ("completion list, oldest big batch", completion_list(batch=oldest)),
        ("completion list, batch + failed", completion_list(batch=newest, status__exact="failed")),
        (
            "completion list, batch + completed, page 400",
            completion_list(batch=newest, status__exact="completed", p=399),
        ),
        ("completion list, batch + a day without any", completion_list(batch=newest, **no_day)),
        ("completion list, status failed", completion_list(status__exact="failed")),
        ("completion list, pending (oldest batch only)", completion_list(status__exact="pending")),
        ("completion list, batch, page 400", completion_list(batch=oldest, p=399)),
        ("completion list, search in batch", completion_list(batch=newest, q="row-04242")),
        ("completion page", reverse("admin:raif_batches_modelcompletion_change", args=[one])),
    ]


def time_pages() -> bool:
    from django.contrib.auth import get_user_model
    from django.test import Client

    users = get_user_model()
    account = users.objects.filter(username="bench").first() or users.objects.create_superuser(
        "bench", "bench@example.com", "bench"
    )
    client = Client()
    client.force_login(account)
    ok = True
    print(f"load average {load_average()} on {os.cpu_count()} cores; medians of {RUNS}")
    print(f"{'page':<46} {'ms':>7} {'CPU ms':>7} {'SQL ms':>7} {'queries':>7} {'load':>5}  HTTP")
    for label, url in pages():
        client.get(url)  # warm templates, content types and the session
        timings, cpu, in_database, queries = [], [], [], []
        for _ in range(RUNS):
            with counted() as sent:
                started, started_cpu = time.perf_counter(), time.process_time()
                response = client.get(url)
                timings.append((time.perf_counter() - started) * 1000)
                cpu.append((time.process_time() - started_cpu) * 1000)
            queries.append(int(sent[0]))
            in_database.append(sent[1] * 1000)
        ms = statistics.median(timings)
        db_ms = statistics.median(in_database)
        cpu_ms = statistics.median(cpu)
        missed = ms >= TARGET_MS or max(queries) > TARGET_QUERIES or response.status_code != 200
        ok = ok and not missed
        flag = "  <- misses the target" if missed else ""
        print(
            f"{label:<46} {ms:>7.1f} {cpu_ms:>7.1f} {db_ms:>7.1f} {max(queries):>7} "
            f"{os.getloadavg()[0]:>5.1f}  {response.status_code}{flag}",
            flush=True,
        )
    print(f"load average {load_average()} at the end")
    return ok


def load_average() -> str:
    """The 1-, 5- and 15-minute load averages, as ``uptime`` prints them."""
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rebuild", action="store_true", help="drop and build the data again")
    parser.add_argument("--build-only", action="store_true", help="build, do not time")
    args = parser.parse_args()
    setup()
    try:
        build(args.rebuild)
        if args.build_only:
            return
        ok = time_pages()
    except Exception as error:  # one line, non-zero exit: a benchmark is a command
        print(f"admin_scale: {type(error).__name__}: {error}", file=sys.stderr)
        sys.exit(1)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
