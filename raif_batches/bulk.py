"""One statement per page of results (or chunk of requests), instead of one query per row.

Applying 1,000 results costs one statement whatever their number; Django's ``bulk_update``
builds a ``CASE`` per column and row, which grows with the page, and ``save()`` per row is a
round trip each.

On PostgreSQL the rows travel as **one** ``jsonb`` parameter unpacked by
``jsonb_to_recordset``: a page of 1,000 rows by 20 columns as 20,000 bound parameters made psycopg
rewrite a 200 KB statement and adapt every value one by one on each page, which cost more than
the update itself. One JSON document is encoded in C and parsed by the server in one go. SQLite
(3.33+, for development and tests) gets the same statement shape with a ``VALUES`` list.
"""

from __future__ import annotations

import datetime
import decimal
import json
import uuid
from collections.abc import Sequence
from typing import Any

from django.db import connections, models
from django.db.backends.base.base import BaseDatabaseWrapper

# Stay well below SQLite's 32,766 bound parameters per statement.
MAX_PARAMS = 30_000


def update_from_values(
    model: type[models.Model],
    *,
    key_fields: Sequence[str],
    set_fields: Sequence[str],
    rows: Sequence[dict[str, Any]],
    where: str = "",
    where_params: Sequence[Any] = (),
    using: str = "default",
) -> int:
    """Update ``model`` rows matched on ``key_fields`` with the values in ``rows``.

    ``rows`` are keyed by field name (``"batch"`` for a foreign key, given as the related pk).
    ``where`` is extra SQL on the target table (aliased ``t``), e.g. ``t.status = %s``, which
    makes the update idempotent. Returns the number of rows changed.
    """
    if not rows:
        return 0
    connection = connections[using]
    fields = [_concrete_field(model, name) for name in (*key_fields, *set_fields)]
    quote = connection.ops.quote_name
    keys, values = fields[: len(key_fields)], fields[len(key_fields) :]
    matches = " AND ".join(f"t.{quote(_col(f))} = v.{quote(_col(f))}" for f in keys)
    if where:
        matches += f" AND ({where})"
    if connection.vendor == "postgresql":
        return _update_postgresql(model, connection, fields, values, matches, rows, where_params)
    return _update_values_list(model, connection, fields, values, matches, rows, where_params)


def insert_instances(
    model: type[models.Model], objs: Sequence[models.Model], *, using: str = "default"
) -> int:
    """Insert unsaved ``objs`` in one statement; their primary keys are not read back.

    On PostgreSQL the rows travel as one ``jsonb`` document, as in :func:`update_from_values`:
    ``bulk_create`` prepares every value of every row in Python and, for text columns, escapes
    them into array literals, which made a 50,000-request batch take seconds longer than the
    insert itself. Elsewhere this is ``bulk_create``.
    """
    if not objs:
        return 0
    connection = connections[using]
    if connection.vendor != "postgresql":
        model._default_manager.using(using).bulk_create(objs)
        return len(objs)
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    # Only fields that compute their value at save time (auto_now, files) need pre_save.
    computed = {f.attname for f in fields if type(f).pre_save is not models.Field.pre_save}
    quote = connection.ops.quote_name
    columns = ", ".join(quote(_col(f)) for f in fields)
    types = ", ".join(f"{quote(_col(f))} {_recordset_type(f, connection)}" for f in fields)
    document = json.dumps(
        [
            {
                f.column: _json_value(
                    f,
                    f.pre_save(obj, True) if f.attname in computed else getattr(obj, f.attname),
                    connection,
                )
                for f in fields
            }
            for obj in objs
        ],
        default=_json_default,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    sql = (
        f"INSERT INTO {quote(model._meta.db_table)} ({columns}) "
        f"SELECT {columns} FROM jsonb_to_recordset(%s::jsonb) AS v({types})"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [document])
        return int(cursor.rowcount)


def _col(field: models.Field[Any, Any]) -> str:
    return str(field.column)  # always set on a concrete field


def _concrete_field(model: type[models.Model], name: str) -> models.Field[Any, Any]:
    field = model._meta.get_field(name)
    if not isinstance(field, models.Field) or not field.concrete:
        raise ValueError(f"{model.__name__}.{name} is not a concrete column")
    return field


def _update_postgresql(
    model: type[models.Model],
    connection: BaseDatabaseWrapper,
    fields: list[models.Field[Any, Any]],
    values: list[models.Field[Any, Any]],
    matches: str,
    rows: Sequence[dict[str, Any]],
    where_params: Sequence[Any],
) -> int:
    quote = connection.ops.quote_name
    columns = ", ".join(f"{quote(_col(f))} {_recordset_type(f, connection)}" for f in fields)
    assignments = ", ".join(f"{quote(_col(f))} = v.{quote(_col(f))}" for f in values)
    document = json.dumps(
        [{_col(f): _json_value(f, row[f.name], connection) for f in fields} for row in rows],
        default=_json_default,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    sql = (
        f"UPDATE {quote(model._meta.db_table)} AS t SET {assignments} "
        f"FROM jsonb_to_recordset(%s::jsonb) AS v({columns}) WHERE {matches}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [document, *where_params])
        return int(cursor.rowcount)


def _recordset_type(field: models.Field[Any, Any], connection: BaseDatabaseWrapper) -> str:
    # A JSON value is nested in the document as it is: no second encoding, and a top-level
    # None arrives as SQL NULL, as Django's JSONField stores it.
    return "jsonb" if isinstance(field, models.JSONField) else str(field.db_type(connection))


#: Django's own fields whose preparation returns a value of this type unchanged; checked by
#: exact class, so a subclass with its own preparation still goes through it.
_UNCHANGED_BY_PREPARATION: dict[type[models.Field[Any, Any]], type] = {
    models.CharField: str,
    models.TextField: str,
    models.IntegerField: int,
    models.PositiveIntegerField: int,
    models.PositiveSmallIntegerField: int,
    models.PositiveBigIntegerField: int,
    models.SmallIntegerField: int,
    models.BigIntegerField: int,
    models.FloatField: float,
    models.BooleanField: bool,
    models.DecimalField: decimal.Decimal,  # sent as its exact text, rounded by the column
}


def _json_value(field: models.Field[Any, Any], value: Any, connection: BaseDatabaseWrapper) -> Any:
    """The value as the document carries it; skipping the field's preparation where it would
    return the value unchanged saves most of the Python time on a page."""
    if value is None:
        return value
    kind = _UNCHANGED_BY_PREPARATION.get(type(field))
    # isinstance lets str enums (TextChoices) through; a bool is an int only for a BooleanField.
    if kind is not None and isinstance(value, kind) and (kind is bool or type(value) is not bool):
        return value
    if isinstance(field, models.JSONField):
        if field.encoder is None:
            return value
        return json.loads(json.dumps(value, cls=field.encoder))
    return field.get_db_prep_save(value, connection)


def _json_default(value: Any) -> Any:
    """Text that PostgreSQL's input functions read back exactly (a float would lose digits)."""
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    raise TypeError(f"cannot send {type(value).__name__} through update_from_values")


def _update_values_list(
    model: type[models.Model],
    connection: BaseDatabaseWrapper,
    fields: list[models.Field[Any, Any]],
    values: list[models.Field[Any, Any]],
    matches: str,
    rows: Sequence[dict[str, Any]],
    where_params: Sequence[Any],
) -> int:
    quote = connection.ops.quote_name
    select_list = ", ".join(f"column{i + 1} AS {quote(_col(f))}" for i, f in enumerate(fields))
    assignments = ", ".join(f"{quote(_col(f))} = v.{quote(_col(f))}" for f in values)
    placeholders = "(" + ", ".join("%s" for _ in fields) + ")"
    rows_per_statement = max(1, MAX_PARAMS // len(fields))
    changed = 0
    with connection.cursor() as cursor:
        for start in range(0, len(rows), rows_per_statement):
            chunk = rows[start : start + rows_per_statement]
            params = [f.get_db_prep_save(row[f.name], connection) for row in chunk for f in fields]
            sql = (
                f"UPDATE {quote(model._meta.db_table)} AS t SET {assignments} "
                f"FROM (SELECT {select_list} FROM (VALUES "
                f"{', '.join([placeholders] * len(chunk))}) AS vv) AS v WHERE {matches}"
            )
            cursor.execute(sql, [*params, *where_params])
            changed += cursor.rowcount
    return changed
