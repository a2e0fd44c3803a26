"""One command for every scale target of issue 5: ``python -m benchmarks.run``.

The parent process prepares the database (``DATABASE_URL``, by default the PostgreSQL database
``raif_bench`` on 127.0.0.1, created and migrated when missing; its raif_batches tables are
emptied), starts two xAI emulators in processes of their own (one instant, one whose answers
carry 4 KB), then runs each operation in a fresh child process and prints the table. The poll
rows start their own emulators, one per provider with 50 ms of latency per call
(:mod:`benchmarks.polling`). ``--only`` runs some operations alone (those that need an earlier
one's data, such as ``submit`` after ``create``, fail without it).

Why a child per operation: peak memory is read from ``getrusage().ru_maxrss``, the process's
resident high-water mark, which only rises. In a fresh process that mark belongs to one
operation, counts memory allocated by C code (psycopg, json) that ``tracemalloc`` cannot see,
and costs nothing while the clock runs (``tracemalloc`` slows Python code several times, which
would make the timings, baselines included, meaningless).

Why queries are counted with ``connection.execute_wrapper`` rather than
``CaptureQueriesContext``: the latter keeps at most 9,000 statements (the per-row baseline runs
more) and renders every statement's SQL while the clock runs. Both count the same thing: one per
``execute``/``executemany`` sent on the connection. The tests use ``CaptureQueriesContext``.

``--scale`` runs the admin at scale instead (``benchmarks/admin_scale.py``): 5,000,000
completions in 100,000 batches, built with SQL once and kept, then every admin page timed. Its
database is ``DATABASE_URL`` too, by default its own (``raif_admin``): the other operations
empty the raif_batches tables of theirs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/raif_bench"

#: Child operations, in the order they must run (later ones use the data earlier ones built).
OPERATIONS = (
    "create",  # and its floor, by turns
    "create_baseline_per_row",
    "submit",
    "submit_baseline_in_memory",
    "harvest_baseline_save",
    "harvest_baseline_bulk_update",
    "harvest",
    "harvest_db",
    "padded_setup",
    "harvest_memory_debug",
    "harvest_memory",
    "harvest_memory_floor",
    "poll_baseline_sequential",
    "poll",
    "poll_end",
    "lease",
    "admin",
)
#: ``--quick``: every operation at a tenth of the size or less, for a run of a few seconds each.
QUICK = {
    "rows": 5_000,
    "batches": 100,
    "admin_batches": 1_000,
    "save_sample": 1_000,
    "bulk_sample": 2_000,
    "poll_sample": 20,
}


# --- the parent: database, emulators, children, table ----------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", choices=OPERATIONS, help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=50_000, help="requests in the big batch")
    parser.add_argument("--batches", type=int, default=1_000, help="in-flight batches to poll")
    parser.add_argument("--admin-batches", type=int, default=10_000)
    parser.add_argument("--save-sample", type=int, default=5_000, help="rows for save() baseline")
    parser.add_argument("--bulk-sample", type=int, default=10_000, help="rows for bulk_update")
    parser.add_argument("--poll-sample", type=int, default=100, help="batches, sequential poll")
    parser.add_argument(
        "--poll-providers", default="", help="the poll rows' providers, comma-separated (all)"
    )
    parser.add_argument(
        "--poll-concurrency", type=int, default=0, help="POLL_CONCURRENCY (default: its default)"
    )
    parser.add_argument(
        "--only", default="", help="run only these operations, comma-separated (see OPERATIONS)"
    )
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    parser.add_argument("--quick", action="store_true", help="small sizes (see QUICK)")
    parser.add_argument(
        "--scale", action="store_true", help="the admin pages at 5M completions (admin_scale)"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs of an operation timed against its floor"
    )
    args = parser.parse_args()
    if args.scale:
        admin_scale = [sys.executable, "-m", "benchmarks.admin_scale"]
        raise SystemExit(subprocess.run(admin_scale, cwd=ROOT, check=False).returncode)
    if args.quick:
        for name, value in QUICK.items():
            setattr(args, name, value)
    os.environ.setdefault("DATABASE_URL", DEFAULT_DATABASE_URL)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    # Timings with DEBUG=False, as in production; the example project defaults to True, and
    # the one operation that measures DEBUG=True sets it itself.
    os.environ.setdefault("DJANGO_DEBUG", "false")
    if args.child:
        from . import operations

        measurements = operations.run(args.child, args, json.loads(os.environ["BENCH_CONTEXT"]))
        print("BENCH-RESULT " + json.dumps(measurements), flush=True)
        return
    started = time.monotonic()
    prepare_database()
    results: list[dict[str, Any]] = []
    chosen = [name for name in args.only.split(",") if name] or list(OPERATIONS)
    with emulator() as instant, emulator("--padding-kb", "4") as padded:
        # The poll rows start emulators of their own (benchmarks/polling.py).
        context = {"instant": instant, "padded": padded}
        for operation in OPERATIONS:
            if operation in chosen:
                results.extend(run_child(operation, context))
    print()
    print(render_table(results))
    print(f"\nbenchmark finished in {time.monotonic() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def prepare_database() -> None:
    """Create the database if it is missing, migrate it, and empty the app's tables."""
    import environ

    config = environ.Env.db_url_config(os.environ["DATABASE_URL"])
    if "postgresql" in config["ENGINE"]:
        import psycopg

        admin_dsn = (
            f"host={config.get('HOST') or '127.0.0.1'} port={config.get('PORT') or 5432} "
            f"user={config.get('USER') or 'postgres'} dbname=postgres"
        )
        if config.get("PASSWORD"):
            admin_dsn += f" password={config['PASSWORD']}"
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            exists = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [config["NAME"]]
            ).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{config["NAME"]}"')
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from raif_batches.models import ModelCompletion, ModelCompletionBatch

    call_command("migrate", verbosity=0)
    if connection.vendor == "postgresql":
        tables = [ModelCompletion._meta.db_table, ModelCompletionBatch._meta.db_table]
        with connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
    else:
        ModelCompletionBatch.objects.all().delete()
    connection.close()
    print(f"database: {connection.vendor} {connection.settings_dict['NAME']}", flush=True)


@contextmanager
def emulator(*options: str) -> Iterator[dict[str, Any]]:
    """An emulator process; yields what it printed once listening (base_url, batch_ids)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.emulator_process", *options],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if not line:
            raise RuntimeError("the emulator process exited before it was ready")
        yield json.loads(line)
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=10)


def run_child(operation: str, context: dict[str, Any]) -> list[dict[str, Any]]:
    print(f"running {operation} ...", flush=True)
    env = {**os.environ, "BENCH_CONTEXT": json.dumps(context)}
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--child", operation, *sys.argv[1:]],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    for line in completed.stdout.splitlines():
        if line.startswith("BENCH-RESULT "):
            measurements: list[dict[str, Any]] = json.loads(line.removeprefix("BENCH-RESULT "))
            return measurements
    sys.stderr.write(completed.stdout + completed.stderr)
    raise SystemExit(f"benchmark operation {operation} failed (exit {completed.returncode})")


def render_table(results: list[dict[str, Any]]) -> str:
    """A Markdown table; ratios compare time (or memory) per item with the named baseline, and
    ours with the floor (ours / floor: 1.0 is the floor itself)."""
    by_key = {result["key"]: result for result in results}
    header = (
        "| operation | N | wall | per item | peak RSS (Δ) | queries | per unit "
        "| vs baseline | target |"
    )
    lines = [header, "|" + "---|" * 9]
    for result in results:
        ratio = ""
        floor = by_key.get(result.get("floor", ""))
        if floor is not None:
            if result.get("compare") == "memory":
                value = result["peak_rss_mb"] / max(floor["peak_rss_mb"], 0.1)
                ratio += f"{value:.2f}x the peak of {floor['label']}; "
            else:
                value = result["seconds_per_item"] / floor["seconds_per_item"]
                ratio += f"{value:.2f}x the time of {floor['label']}"
                wanted = result.get("floor_max")
                if wanted:
                    ratio += f" ({'✓' if value <= wanted else '✗'} ≤ {wanted}x)"
                ratio += "; "
        for baseline_key in result.get("baselines", []):
            baseline = by_key.get(baseline_key)
            if baseline is None:
                continue
            if result.get("compare") == "memory":
                value = baseline["rss_delta_mb"] / max(result["rss_delta_mb"], 0.1)
                ratio += f"{value:.1f}x less memory than {baseline['label']}; "
            else:
                value = baseline["seconds_per_item"] / result["seconds_per_item"]
                ratio += f"{value:.1f}x faster than {baseline['label']}"
                wanted = result.get("min_speedup", {}).get(baseline_key)
                if wanted:
                    ratio += f" ({'✓' if value >= wanted else '✗'} ≥ {wanted}x)"
                ratio += "; "
        per_unit = (
            f"{result['queries'] / result['units']:.2f} / {result['unit']}"
            if result.get("units")
            else ""
        )
        lines.append(
            f"| {result['operation']} | {result['n']:,} {result['item']} "
            f"| {result['wall']:.2f} s | {result['seconds_per_item'] * 1000:.3f} ms "
            f"| {result['peak_rss_mb']:.0f} MB ({result['rss_delta_mb']:+.0f}) "
            f"| {result['queries']:,} | {per_unit} | {ratio.rstrip('; ')} "
            f"| {result.get('target', '')} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
