"""One statement per page of results (or chunk of requests), instead of one query per row.

Applying 1,000 results costs one statement whatever their number; Django's ``bulk_update``
builds a ``CASE`` per column and row, which grows with the page, and ``save()`` per row is a
round trip each.

On PostgreSQL the rows travel as **one** ``jsonb`` parameter unpacked by
``jsonb_to_recordset``: a page of 1,000 rows by 20 columns as 20,000 bound parameters made psycopg
rewrite a 200 KB statement and adapt every value one by one on each page, which cost more than
the update itself. One JSON document is encoded in C and parsed by the server in one go. SQLite
(3.33+, for development and tests) gets the same statement shape with a ``VALUES`` list.
MySQL 8 and MariaDB 10.6+ have no ``UPDATE … FROM``: they get ``UPDATE t JOIN (SELECT … UNION
ALL SELECT …) v ON … SET …`` with the values bound as parameters (mysqlclient inlines them, so the
statement is as big as its data).

Every statement is bounded by rows **and** by bytes (``MAX_STATEMENT_BYTES``, 16 MB by default):
a page of 1,000 answers of 140 KB would otherwise be one 140 MB document (PostgreSQL refuses a
``jsonb`` value over 256 MB; MySQL refuses a statement over ``max_allowed_packet``, so there the
bound is also held under half of it, leaving room for escaping). Rows are encoded one at a time
and sent as soon as a statement is full, so memory beyond the caller's rows stays within a few
times that bound. A single row bigger than the bound still goes alone, in one statement.
"""

from __future__ import annotations

import datetime
import decimal
import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from django.db import connections, models
from django.db.backends.base.base import BaseDatabaseWrapper

from .conf import get_setting

# Stay well below SQLite's 32,766 bound parameters per statement.
MAX_PARAMS = 30_000
# What a statement carries besides its values (SQL text, quoting), counted per value.
_VALUE_OVERHEAD = 8
# Room kept below MySQL's max_allowed_packet for the SQL text around the values.
_PACKET_MARGIN = 64 * 1024

T = TypeVar("T")


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
    key_matches = " AND ".join(f"t.{quote(_col(f))} = v.{quote(_col(f))}" for f in keys)
    matches = key_matches + (f" AND ({where})" if where else "")
    if connection.vendor == "postgresql":
        return _update_postgresql(model, connection, fields, values, matches, rows, where_params)
    if connection.vendor == "mysql":
        return _update_mysql(
            model, connection, fields, values, key_matches, where, rows, where_params
        )
    return _update_values_list(model, connection, fields, values, matches, rows, where_params)


def insert_instances(
    model: type[models.Model], objs: Sequence[models.Model], *, using: str = "default"
) -> int:
    """Insert unsaved ``objs`` in as few statements as the bounds allow; pks are not read back.

    On PostgreSQL the rows travel as one ``jsonb`` document, as in :func:`update_from_values`:
    ``bulk_create`` prepares every value of every row in Python and, for text columns, escapes
    them into array literals, which made a 50,000-request batch take seconds longer than the
    insert itself. Elsewhere the values are prepared as ``bulk_create`` prepares them and sent
    as a ``VALUES`` list. Either way, statements are bounded by rows and bytes.
    """
    if not objs:
        return 0
    connection = connections[using]
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    # Only fields that compute their value at save time (auto_now, files) need pre_save.
    computed = {f.attname for f in fields if type(f).pre_save is not models.Field.pre_save}
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    columns = ", ".join(quote(_col(f)) for f in fields)

    def value(f: models.Field[Any, Any], obj: models.Model) -> Any:
        return f.pre_save(obj, True) if f.attname in computed else getattr(obj, f.attname)

    inserted = 0
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            types = ", ".join(f"{quote(_col(f))} {_recordset_type(f, connection)}" for f in fields)
            sql = (
                f"INSERT INTO {table} ({columns}) "
                f"SELECT {columns} FROM jsonb_to_recordset(%s::jsonb) AS v({types})"
            )
            encoded = (
                _encode_row({_col(f): _json_value(f, value(f, obj), connection) for f in fields})
                for obj in objs
            )
            for document in _chunks(encoded, _text_bytes, statement_bytes(connection), len(objs)):
                cursor.execute(sql, ["[" + ",".join(document) + "]"])
                inserted += int(cursor.rowcount)
            return inserted
        placeholders = "(" + ", ".join("%s" for _ in fields) + ")"
        prepared = ([f.get_db_prep_save(value(f, obj), connection) for f in fields] for obj in objs)
        for chunk in _chunks(
            prepared, _params_bytes, statement_bytes(connection), max(1, MAX_PARAMS // len(fields))
        ):
            cursor.execute(
                f"INSERT INTO {table} ({columns}) VALUES {', '.join([placeholders] * len(chunk))}",
                [param for row in chunk for param in row],
            )
            inserted += len(chunk)
    return inserted


def statement_bytes(connection: BaseDatabaseWrapper) -> int:
    """The most bytes of values one statement may carry on ``connection``."""
    limit = int(get_setting("MAX_STATEMENT_BYTES"))
    if connection.vendor == "mysql":
        limit = min(limit, _mysql_max_packet(connection) // 2 - _PACKET_MARGIN)
    return max(1, limit)


def _mysql_max_packet(connection: BaseDatabaseWrapper) -> int:
    # Read once per connection wrapper: a server-wide value that changes only with a restart.
    cached = getattr(connection, "_raif_max_allowed_packet", None)
    if cached is None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT @@max_allowed_packet")
            cached = int(cursor.fetchone()[0])
        connection._raif_max_allowed_packet = cached  # type: ignore[attr-defined]
    return int(cached)


def _chunks(
    items: Iterable[T], size_of: Callable[[T], int], max_bytes: int, max_rows: int
) -> Iterator[list[T]]:
    """``items`` in lists of at most ``max_rows`` and, unless one item alone is bigger,
    ``max_bytes``; consumed lazily, so only one list is held at a time."""
    chunk: list[T] = []
    used = 0
    for item in items:
        size = size_of(item)
        if chunk and (used + size > max_bytes or len(chunk) >= max_rows):
            yield chunk
            chunk, used = [], 0
        chunk.append(item)
        used += size
    if chunk:
        yield chunk


def _text_bytes(text: str) -> int:
    # surrogatepass: a lone surrogate is counted, not raised here; the database will judge it.
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _params_bytes(row: Sequence[Any]) -> int:
    size = 0
    for param in row:
        if isinstance(param, str):
            size += _text_bytes(param)
        elif isinstance(param, bytes | bytearray | memoryview):
            size += len(param)
        else:
            size += 24  # a number, a date or NULL as SQL text
    return size + _VALUE_OVERHEAD * len(row)


def _encode_row(row: dict[str, Any]) -> str:
    return json.dumps(row, default=_json_default, ensure_ascii=False, separators=(",", ":"))


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
    sql = (
        f"UPDATE {quote(model._meta.db_table)} AS t SET {assignments} "
        f"FROM jsonb_to_recordset(%s::jsonb) AS v({columns}) WHERE {matches}"
    )
    encoded = (
        _encode_row({_col(f): _json_value(f, row[f.name], connection) for f in fields})
        for row in rows
    )
    changed = 0
    with connection.cursor() as cursor:
        for chunk in _chunks(encoded, _text_bytes, statement_bytes(connection), len(rows)):
            cursor.execute(sql, ["[" + ",".join(chunk) + "]", *where_params])
            changed += int(cursor.rowcount)
    return changed


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
    prepared = ([f.get_db_prep_save(row[f.name], connection) for f in fields] for row in rows)
    changed = 0
    with connection.cursor() as cursor:
        for chunk in _chunks(
            prepared, _params_bytes, statement_bytes(connection), max(1, MAX_PARAMS // len(fields))
        ):
            sql = (
                f"UPDATE {quote(model._meta.db_table)} AS t SET {assignments} "
                f"FROM (SELECT {select_list} FROM (VALUES "
                f"{', '.join([placeholders] * len(chunk))}) AS vv) AS v WHERE {matches}"
            )
            cursor.execute(sql, [*(p for row in chunk for p in row), *where_params])
            changed += cursor.rowcount
    return changed


def _update_mysql(
    model: type[models.Model],
    connection: BaseDatabaseWrapper,
    fields: list[models.Field[Any, Any]],
    values: list[models.Field[Any, Any]],
    key_matches: str,
    where: str,
    rows: Sequence[dict[str, Any]],
    where_params: Sequence[Any],
) -> int:
    """``UPDATE … JOIN (SELECT … UNION ALL …)``: the form MySQL 8 and MariaDB both accept.

    The first ``SELECT`` names the columns; both servers type each column of the union from all
    of its rows, so a ``NULL`` in the first row does not narrow it. Django opens MySQL
    connections with ``CLIENT_FOUND_ROWS``, so the row count is of matched rows, as elsewhere.
    """
    quote = connection.ops.quote_name
    first = "SELECT " + ", ".join(f"%s AS {quote(_col(f))}" for f in fields)
    other = " UNION ALL SELECT " + ", ".join("%s" for _ in fields)
    assignments = ", ".join(f"t.{quote(_col(f))} = v.{quote(_col(f))}" for f in values)
    condition = f" WHERE ({where})" if where else ""
    prepared = ([f.get_db_prep_save(row[f.name], connection) for f in fields] for row in rows)
    changed = 0
    with connection.cursor() as cursor:
        for chunk in _chunks(
            prepared, _params_bytes, statement_bytes(connection), max(1, MAX_PARAMS // len(fields))
        ):
            derived = first + other * (len(chunk) - 1)
            sql = (
                f"UPDATE {quote(model._meta.db_table)} AS t INNER JOIN ({derived}) AS v "
                f"ON {key_matches} SET {assignments}{condition}"
            )
            cursor.execute(sql, [*(p for row in chunk for p in row), *where_params])
            changed += cursor.rowcount
    return changed
