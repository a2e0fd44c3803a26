"""The floors: the cheapest way this machine reaches the same database state (PostgreSQL only).

Each floor writes what our code writes, and nothing checks it: no validation, no per-row Python
but building the row and, for results, the same parsing (``result_row``) as the harvest, so the
ratio to it is the cost of our way of reaching the database plus the checks our code makes.

* creation: one ``COPY`` of every request row into the completions table;
* harvest: every result row ``COPY``'d into one temporary table, then one ``UPDATE … FROM`` it,
  matched on (batch, custom id), pending lines only;
* poll (:mod:`benchmarks.polling`): one ``UPDATE … FROM (VALUES …)`` of every polled batch; for
  a poll in which batches end, their lines as the harvest floor, and one ``UPDATE`` of them.

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


class ResultColumns:
    """The completion columns a result writes, as a temporary table and an UPDATE from it."""

    def __init__(self) -> None:
        from django.db import connection

        from raif_batches.lifecycle.results import RESULT_FIELDS
        from raif_batches.models import ModelCompletion

        fields: list[Any] = [ModelCompletion._meta.get_field(name) for name in RESULT_FIELDS]
        self.names = RESULT_FIELDS
        self.json_columns = {f.name for f in fields if f.get_internal_type() == "JSONField"}
        self.types = ", ".join(f'"{f.column}" {f.db_type(connection)}' for f in fields)
        self.assignments = ", ".join(f'"{f.column}" = v."{f.column}"' for f in fields)
        self.table = ModelCompletion._meta.db_table

    def row(self, values: dict[str, Any]) -> list[Any]:
        return [_json(values[n]) if n in self.json_columns else values[n] for n in self.names]


def copy_results_then_update(batch: Any, pages: Iterable[list[Any]]) -> int:
    """Parse every result as the harvest does, COPY the rows into one temporary table, then
    one UPDATE of the pending lines from it. Returns rows changed."""
    from django.utils import timezone

    from raif_batches.lifecycle.results import Prices, result_row

    columns = ResultColumns()
    prices = Prices()
    now = timezone.now()

    def rows() -> Iterator[list[Any]]:
        for page in pages:
            for entry in page:
                # Every line of the benchmark batch asks for no response_format.
                values = result_row(batch, entry, None, now, prices)
                yield [entry.custom_id, *columns.row(values)]

    types, assignments, table = columns.types, columns.assignments, columns.table
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


def write_snapshots(pairs: list[tuple[int, Any]], status: str) -> int:
    """Poll floor: one UPDATE … FROM (VALUES …) of every batch's status, counts, answer and
    next poll, from the provider's parsed answers."""
    from datetime import timedelta

    from django.utils import timezone

    from raif_batches.models import ModelCompletionBatch

    table = ModelCompletionBatch._meta.db_table
    next_poll = timezone.now() + timedelta(minutes=1)
    values = ", ".join(["(%s, %s, %s::jsonb, %s::jsonb)"] * len(pairs))
    params: list[Any] = []
    for pk, snapshot in pairs:
        params += [pk, snapshot.status or status, _json(snapshot.counts), _json(snapshot.raw)]
    with _raw_cursor() as cursor:
        cursor.execute(
            f'UPDATE "{table}" AS t SET status = v.status, request_counts = v.counts, '
            "provider_response = v.answer, next_poll_at = %s "
            f"FROM (VALUES {values}) AS v(id, status, counts, answer) WHERE t.id = v.id",
            [next_poll, *params],
        )
        return int(cursor.rowcount)


#: The statements :func:`write_results` sends.
WRITE_RESULTS_STATEMENTS = 4


def write_results(batch_by_provider_id: dict[str, Any], results: dict[str, list[Any]]) -> int:
    """End-of-poll floor: every line of every batch parsed as the harvest does, COPY'd into
    one temporary table, one UPDATE of the pending lines from it; then one UPDATE of the
    batches (ended, results fetched, total cost). Returns lines changed."""
    from django.utils import timezone

    from raif_batches.lifecycle.results import Prices, result_row
    from raif_batches.models import ModelCompletionBatch

    columns = ResultColumns()
    prices = Prices()
    now = timezone.now()
    totals: dict[int, Any] = {}
    with _raw_cursor() as cursor:
        cursor.execute(
            "CREATE TEMPORARY TABLE floor_lines (batch_id bigint, custom_id varchar(64), "
            f"{columns.types}) ON COMMIT DROP"
        )
        with cursor.copy("COPY floor_lines FROM STDIN") as copy:
            for provider_id, entries in results.items():
                batch = batch_by_provider_id[provider_id]
                for entry in entries:
                    values = result_row(batch, entry, None, now, prices)
                    totals[batch.pk] = (totals.get(batch.pk) or 0) + (values["total_cost"] or 0)
                    copy.write_row([batch.pk, entry.custom_id, *columns.row(values)])
        cursor.execute(
            f'UPDATE "{columns.table}" AS t SET {columns.assignments} FROM floor_lines AS v '
            "WHERE t.batch_id = v.batch_id AND t.batch_custom_id = v.custom_id "
            "AND t.status = %s",
            ["pending"],
        )
        changed = int(cursor.rowcount)
        values_sql = ", ".join(["(%s, %s::numeric)"] * len(totals))
        cursor.execute(
            f'UPDATE "{ModelCompletionBatch._meta.db_table}" AS t SET status = %s, '
            "ended_at = %s, results_fetched_at = %s, total_cost = v.total "
            f"FROM (VALUES {values_sql}) AS v(id, total) WHERE t.id = v.id",
            ["ended", now, now, *[x for pair in totals.items() for x in pair]],
        )
    return changed
