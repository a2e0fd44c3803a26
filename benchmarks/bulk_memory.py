"""Peak memory of storing one page of big answers with ``update_from_values``.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/raif_bench \\
        python -m benchmarks.bulk_memory --rows 200 --answer-bytes 1000000

Migrates the database named by DATABASE_URL (a scratch one: it adds a batch and deletes it),
creates a batch of ``--rows`` pending completions, builds one results page whose every answer is
``--answer-bytes`` of text (also kept in the payload, as a provider's answer is), and stores it
as a harvest does. Prints the peak resident memory before the page is built, after, and after it
is stored: the last step is what ``MAX_STATEMENT_BYTES`` bounds.
"""

from __future__ import annotations

import argparse
import os
import resource
import time


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--answer-bytes", type=int, default=1_000_000)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "example_project.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection, transaction
    from django.utils import timezone

    from raif_batches import create_batch
    from raif_batches.bulk import statement_bytes, update_from_values
    from raif_batches.models import CompletionStatus, ModelCompletion

    call_command("migrate", verbosity=0)
    batch = create_batch(
        provider="xai",
        model="grok-4.3",
        requests=[
            {"custom_id": f"r{i}", "messages": [{"role": "user", "content": "hi"}]}
            for i in range(args.rows)
        ],
        name="bulk memory benchmark",
    )
    try:
        pks = list(batch.completions.values_list("pk", flat=True))
        before = peak_mb()
        now = timezone.now()
        rows = []
        for i, pk in enumerate(pks):
            text = (f"{i:06d}" + "lorem ipsum dolor sit amet, ") * (args.answer_bytes // 34 + 1)
            text = text[: args.answer_bytes]
            rows.append(
                {
                    "id": pk,
                    "status": CompletionStatus.COMPLETED,
                    "raw_response": text,
                    "response_payload": {"choices": [{"message": {"content": text}}]},
                    "completed_at": now,
                }
            )
        built = peak_mb()
        started = time.perf_counter()
        with transaction.atomic():
            changed = update_from_values(
                ModelCompletion,
                key_fields=("id",),
                set_fields=("status", "raw_response", "response_payload", "completed_at"),
                rows=rows,
                where="t.status = %s",
                where_params=[CompletionStatus.PENDING],
            )
        took = time.perf_counter() - started
        stored = peak_mb()
        print(
            f"{connection.vendor}: {changed} rows of {args.answer_bytes:,} bytes (x2: text and "
            f"payload), statement bound {statement_bytes(connection):,} bytes, {took:.1f} s\n"
            f"peak RSS: {before:.0f} MB before the page, {built:.0f} MB with the page built, "
            f"{stored:.0f} MB after storing it (+{stored - built:.0f} MB for the writes)"
        )
    finally:
        batch.delete()


if __name__ == "__main__":
    main()
