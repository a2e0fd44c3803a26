"""The floors: the cheapest way this machine reaches the same database state (PostgreSQL only).

Each floor writes what our code writes, and nothing checks it: no validation, no per-row Python
but building the row and, for results, the same parsing (``result_row``) as the harvest, so the
ratio to it is the cost of our way of reaching the database plus the checks our code makes.

* creation: one ``COPY`` of every request row into the completions table;
* harvest: every result row ``COPY``'d into one temporary table, then one ``UPDATE … FROM`` it,
  matched on (batch, custom id), pending lines only.

The rows go out on psycopg's own cursor, as a hand-written script would send them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

CREATE_CONSTANTS = {"status": "pending", "raw_response": "", "finish_reason": ""}


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _raw_cursor() -> Any:
    from django.db import connection

    connection.ensure_connection()
    return connection.connection.cursor()


def copy_requests(batch_id: int, requests: Iterable[dict[str, Any]]) -> int:
    """COPY one completion row per request (the columns ``create_batch`` fills, the others at
    their defaults), inside the caller's transaction."""
    from django.utils import timezone

    from raif_batches.models import ModelCompletion

    fields = [f for f in ModelCompletion._meta.concrete_fields if not f.primary_key]
    defaults = {f.attname: f.get_default() for f in fields}
    defaults.update(CREATE_CONSTANTS)
    names = [f.attname for f in fields]
    json_columns = {f.attname for f in fields if f.get_internal_type() == "JSONField"}
    template = [_json(defaults[n]) if n in json_columns else defaults[n] for n in names]
    at = {name: position for position, name in enumerate(names)}
    now = timezone.now()
    columns = ", ".join(f'"{f.column}"' for f in fields)
    sent = 0
    with (
        _raw_cursor() as cursor,
        cursor.copy(f'COPY "{ModelCompletion._meta.db_table}" ({columns}) FROM STDIN') as copy,
    ):
        for request in requests:
            row = list(template)
            row[at["batch_id"]] = batch_id
            row[at["batch_custom_id"]] = request["custom_id"]
            row[at["messages"]] = _json(request["messages"])
            row[at["temperature"]] = request.get("temperature")
            row[at["max_tokens"]] = request.get("max_tokens")
            row[at["created_at"]] = now
            copy.write_row(row)
            sent += 1
    return sent


def copy_results_then_update(batch: Any, pages: Iterable[list[Any]]) -> int:
    """Parse every result as the harvest does, COPY the rows into one temporary table, then
    one UPDATE of the pending lines from it. Returns rows changed."""
    from django.db import connection
    from django.utils import timezone

    from raif_batches.lifecycle.results import RESULT_FIELDS, Prices, result_row
    from raif_batches.models import ModelCompletion

    fields = [ModelCompletion._meta.get_field(name) for name in RESULT_FIELDS]
    json_columns = {f.name for f in fields if f.get_internal_type() == "JSONField"}
    types = ", ".join(f'"{f.column}" {f.db_type(connection)}' for f in fields)
    table = ModelCompletion._meta.db_table
    prices = Prices()
    now = timezone.now()

    def rows() -> Iterator[list[Any]]:
        for page in pages:
            for entry in page:
                # Every line of the benchmark batch asks for no response_format.
                values = result_row(batch, entry, None, now, prices)
                yield [entry.custom_id] + [
                    _json(values[n]) if n in json_columns else values[n] for n in RESULT_FIELDS
                ]

    assignments = ", ".join(f'"{f.column}" = v."{f.column}"' for f in fields)
    with _raw_cursor() as cursor:
        cursor.execute(
            f"CREATE TEMPORARY TABLE floor_results (custom_id varchar(64), {types}) ON COMMIT DROP"
        )
        with cursor.copy("COPY floor_results FROM STDIN") as copy:
            for row in rows():
                copy.write_row(row)
        cursor.execute(
            f'UPDATE "{table}" AS t SET {assignments} FROM floor_results AS v '
            "WHERE t.batch_id = %s AND t.batch_custom_id = v.custom_id AND t.status = %s",
            [batch.pk, "pending"],
        )
        return int(cursor.rowcount)
