"""One statement per page of results (or chunk of requests), instead of one query per row.

Applying 1,000 results costs a fixed number of statements whatever their number; Django's
``bulk_update`` builds a ``CASE`` per column and row, which grows with the page, and ``save()``
per row is a round trip each.

On PostgreSQL the rows travel by ``COPY``: inserted rows straight into the table, updates into a
temporary table (``ON COMMIT DROP``) that one ``UPDATE … FROM`` then applies and empties. psycopg
formats each row in C and streams it, so nothing is built per statement: the earlier form (the
page as one ``jsonb`` document unpacked by ``jsonb_to_recordset``) cost twice the time in
encoding, parsing and interpolating a multi-MB parameter, and a ``COPY`` has no size limit but
the server's for one value. SQLite (3.33+, for development and tests) gets ``UPDATE … FROM
(VALUES …)``. MySQL 8 and MariaDB 10.6+ have no ``UPDATE … FROM``: they get ``UPDATE t JOIN
(SELECT … UNION ALL SELECT …) v ON … SET …`` with the values bound as parameters (mysqlclient
inlines them, so the statement is as big as its data).

There, every statement is bounded by rows **and** by bytes (``MAX_STATEMENT_BYTES``, 16 MB by
default): a page of 1,000 answers of 140 KB would otherwise be one 140 MB statement (MySQL
refuses a statement over ``max_allowed_packet``, so there the bound is also held under half of
it, leaving room for escaping). Rows are encoded one at a time and sent as soon as a statement
is full, so memory beyond the caller's rows stays within a few times that bound. A single row
bigger than the bound still goes alone, in one statement.

Every statement here is sent on a cursor without Django's debug wrapper (``make_cursor``):
with ``DEBUG=True`` the wrapper keeps each statement with its values interpolated in
``connection.queries_log``, several MB a page, for the life of the process. The statements still
pass through ``connection.execute_wrapper`` hooks and Django's error translation, and, when
queries are logged, their SQL text alone (placeholders, no values) is logged, so
``CaptureQueriesContext`` still counts one entry per statement sent.
"""

from __future__ import annotations

import contextlib
import datetime
import decimal
import functools
import hashlib
import itertools
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from operator import itemgetter
from typing import Any, TypeVar

from django.conf import settings
from django.db import connections, models, transaction
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
    rows: Iterable[dict[str, Any]],
    where: str = "",
    where_params: Sequence[Any] = (),
    using: str = "default",
) -> int:
    """Update ``model`` rows matched on ``key_fields`` with the values in ``rows``.

    ``rows`` are keyed by field name (``"batch"`` for a foreign key, given as the related pk).
    ``where`` is extra SQL on the target table (aliased ``t``), e.g. ``t.status = %s``, which
    makes the update idempotent. Returns the number of rows changed.

    ``rows`` is read once, lazily, as the statement is sent: rows made by a generator are made
    while the server stores the ones before (on PostgreSQL, while the ``COPY`` is open: making
    them must not use the database, see :func:`insert_rows`).
    """
    pending = iter(rows)
    first = next(pending, None)
    if first is None:
        return 0
    rows = itertools.chain((first,), pending)
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


#: JSON text as :func:`insert_rows` takes it for a ``JSONField``: Python's default separators,
#: non-ASCII characters kept (``create_batch`` measures a request's line from the same text).
#: Without the check for cycles, which costs a sixth of the call: it encodes values already
#: checked (``validation.json_problem`` refuses nesting deeper than 31, so any cycle).
encode_json = json.JSONEncoder(ensure_ascii=False, check_circular=False).encode


def insert_rows(
    model: type[models.Model],
    columns: Sequence[str],
    chunks: Iterable[Iterable[tuple[Any, ...]]],
    *,
    shared: dict[str, Any] | None = None,
    using: str = "default",
) -> int:
    """Insert the rows of ``chunks``, each row the values of ``columns`` (attribute names) in
    that order, one statement per chunk (more where the bounds ask for it); pks are not read
    back. Returns the rows inserted.

    A value is what its column stores, as the field's preparation would return it: ``None``, an
    ``int``, ``float``, ``str`` or aware ``datetime``, and for a ``JSONField`` its JSON text
    from :data:`encode_json` (``None`` for SQL ``NULL``), so that a caller who encoded a value
    already (to measure it) does not pay for it twice. ``shared`` gives the values common to
    every row (by attribute name); every other field takes its default, prepared once per call.
    A field whose default is callable or computed at save time (``auto_now``) must be given.

    ``chunks`` and each chunk are consumed lazily, so a chunk may be a generator that validates
    each row as it goes; an exception it raises stops the insert (the caller's transaction rolls
    back what was sent). On PostgreSQL each chunk is one ``COPY``, its rows drawn while it is
    open, so that making them overlaps with the server storing the rows before (the shared
    and default values are appended to each as one prepared tuple). While a ``COPY`` is open
    the connection serves nothing else: drawing a chunk's rows must not use the database (a
    statement sent then raises :class:`StatementDuringCopy` instead of waiting for the
    ``COPY`` forever); what needs it belongs where the next chunk is made, between statements.

    Elsewhere the rows are sent as ``VALUES`` lists, in statements bounded by bytes and by
    bound parameters. JSON text is stored there as Django stores it, every non-ASCII character
    escaped (a MySQL or MariaDB column in ``utf8mb3`` refuses four-byte characters).
    """
    connection = connections[using]
    shared = shared or {}
    given = [_concrete_field(model, name) for name in columns]
    named = {*columns, *shared}
    others = [
        f for f in model._meta.concrete_fields if not f.primary_key and f.attname not in named
    ]
    per_row = [
        f.attname
        for f in others
        if (f.has_default() and callable(f.default)) or _computes_on_save(f)
    ]
    if per_row:
        raise ValueError(f"insert_rows needs a value for {', '.join(per_row)} (set per row)")
    fixed = [_concrete_field(model, name) for name in shared] + others
    fixed_values = [*shared.values(), *(f.get_default() for f in others)]
    fields = given + fixed
    quote = connection.ops.quote_name
    table = quote(model._meta.db_table)
    column_list = ", ".join(quote(_col(f)) for f in fields)
    inserted = 0
    with quiet_cursor(connection) as cursor:
        if connection.vendor == "postgresql":
            appended = tuple(_copy_row(fixed_values, _copy_plan(fixed, connection)))
            sql = f"COPY {table} ({column_list}) FROM STDIN"
            for chunk in chunks:
                inserted += copy_rows(connection, cursor, sql, (row + appended for row in chunk))
            return inserted
        appended = tuple(
            f.get_db_prep_save(value, connection)
            for f, value in zip(fixed, fixed_values, strict=True)
        )
        json_at = [i for i, f in enumerate(given) if isinstance(f, models.JSONField)]

        def prepared(row: tuple[Any, ...]) -> tuple[Any, ...]:
            values = list(row)
            for i in json_at:
                values[i] = _stored_json(values[i])
            return (*values, *appended)

        placeholders = "(" + ", ".join("%s" for _ in fields) + ")"
        for chunk in chunks:
            for statement in _chunks(
                map(prepared, chunk),
                _params_bytes,
                statement_bytes(connection),
                max(1, MAX_PARAMS // len(fields)),
            ):
                values = ", ".join([placeholders] * len(statement))
                execute_quietly(
                    connection,
                    cursor,
                    f"INSERT INTO {table} ({column_list}) VALUES {values}",
                    [param for row in statement for param in row],
                )
                inserted += len(statement)
    return inserted


def _stored_json(text: str | None) -> str | None:
    """:data:`encode_json`'s text as Django stores JSON outside PostgreSQL (``json.dumps``'s
    defaults: every character past ``~`` escaped), without a second encoding when it is ASCII."""
    if text is None or (text.isascii() and "\x7f" not in text):
        return text
    return json.dumps(json.loads(text))


@contextlib.contextmanager
def quiet_cursor(connection: BaseDatabaseWrapper) -> Iterator[Any]:
    """A cursor without Django's debug wrapper, whose statements never keep their values in
    ``connection.queries_log``; run statements on it with :func:`execute_quietly` or
    :func:`copy_rows`, which log their SQL text alone."""
    connection.validate_thread_sharing()
    connection.ensure_connection()
    with connection.wrap_database_errors:
        cursor = connection.make_cursor(connection.create_cursor())
    with cursor:
        yield cursor


def execute_quietly(
    connection: BaseDatabaseWrapper, cursor: Any, sql: str, params: Sequence[Any]
) -> int:
    """``cursor.execute`` (execute wrappers and error translation included); returns the row
    count. When queries are logged, only ``sql`` is, without its values."""
    started = time.monotonic()
    try:
        cursor.execute(sql, params)
        return int(cursor.rowcount)
    finally:
        _log_statement(connection, sql, started)


def copy_rows(
    connection: BaseDatabaseWrapper, cursor: Any, sql: str, rows: Iterable[Sequence[Any]]
) -> int:
    """Stream ``rows`` by ``sql`` (a PostgreSQL ``COPY … FROM STDIN``); returns rows sent.

    psycopg's ``copy()`` is not an ``execute``, so the execute wrappers and the error
    translation are applied here as Django applies them to a statement. ``rows`` is consumed
    lazily; an exception it raises aborts the ``COPY`` (the transaction then rolls back) and
    propagates as it is."""
    raw = cursor.cursor

    def send(sql: str, params: Any, many: bool, context: dict[str, Any]) -> int:
        connection.validate_no_broken_transaction()
        sent = 0
        with (
            connection.wrap_database_errors,
            raw.copy(sql) as copy,
            connection.execute_wrapper(_refuse_during_copy),
        ):
            for row in rows:
                copy.write_row(row)
                sent += 1
        return sent

    run: Callable[..., int] = send
    for wrapper in reversed(connection.execute_wrappers):
        run = functools.partial(wrapper, run)
    started = time.monotonic()
    try:
        return int(run(sql, None, False, {"connection": connection, "cursor": cursor}))
    finally:
        _log_statement(connection, sql, started)


class StatementDuringCopy(RuntimeError):
    """A statement was sent on a connection while a ``COPY`` was open on it (by code that made
    the ``COPY``'s rows): psycopg would wait for the ``COPY`` to end, which never comes."""


def _refuse_during_copy(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
    raise StatementDuringCopy(
        f"{sql[:60]!r} was sent while a COPY was open on the same connection; rows drawn for a "
        "COPY must not use the database (do it before the chunk is made)."
    )


def _computes_on_save(field: models.Field[Any, Any]) -> bool:
    if type(field).pre_save is models.Field.pre_save:
        return False
    # A date field's pre_save computes only with auto_now(_add); Django's own date and time
    # fields, checked by exact class, add nothing else to it.
    if type(field) in (models.DateTimeField, models.DateField, models.TimeField):
        return bool(field.auto_now or field.auto_now_add)  # type: ignore[attr-defined]
    return True


def _log_statement(connection: BaseDatabaseWrapper, sql: str, started: float) -> None:
    if connection.queries_logged:
        connection.queries_log.append({"sql": sql, "time": f"{time.monotonic() - started:.3f}"})


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
    rows: Iterable[dict[str, Any]],
    where_params: Sequence[Any],
) -> int:
    """``COPY`` into a temporary table, then one ``UPDATE … FROM`` it that also empties it.

    The table is dropped at commit, so nothing outlives the transaction (safe behind a
    transaction-pooling proxy); ``IF NOT EXISTS`` serves a second call in the same transaction
    and survives a savepoint rolled back, and the ``DELETE … RETURNING`` in the ``UPDATE``
    leaves it empty for that call.
    """
    quote = connection.ops.quote_name
    names = ", ".join(quote(_col(f)) for f in fields)
    types = ", ".join(f"{quote(_col(f))} {_column_type(f, connection)}" for f in fields)
    digest = hashlib.sha1(f"{model._meta.db_table} {types}".encode()).hexdigest()[:16]
    temp = quote(f"raif_bulk_{digest}")
    assignments = ", ".join(f"{quote(_col(f))} = v.{quote(_col(f))}" for f in values)
    plan = _copy_plan(fields, connection)
    get = _values_getter(itemgetter, [f.name for f in fields])
    encoded = (_copy_row(get(row), plan) for row in rows)
    in_transaction = connection.in_atomic_block
    with (
        contextlib.nullcontext() if in_transaction else transaction.atomic(using=connection.alias),
        quiet_cursor(connection) as cursor,
    ):
        execute_quietly(
            connection,
            cursor,
            f"CREATE TEMPORARY TABLE IF NOT EXISTS {temp} ({types}) ON COMMIT DROP",
            [],
        )
        copy_rows(connection, cursor, f"COPY {temp} ({names}) FROM STDIN", encoded)
        return execute_quietly(
            connection,
            cursor,
            f"WITH v AS (DELETE FROM {temp} RETURNING *) "
            f"UPDATE {quote(model._meta.db_table)} AS t SET {assignments} FROM v WHERE {matches}",
            list(where_params),
        )


def _column_type(field: models.Field[Any, Any], connection: BaseDatabaseWrapper) -> str:
    return str(field.db_type(connection))


#: Per column: the exact types of the values that ``COPY`` sends as they are, and the function
#: that prepares any other value.
_CopyPlan = list[tuple[frozenset[type], Callable[[Any], Any]]]


def _copy_plan(
    fields: Sequence[models.Field[Any, Any]], connection: BaseDatabaseWrapper
) -> _CopyPlan:
    """How each field's value goes into a ``COPY`` row: skipping the field's preparation where
    it would return the value unchanged saves most of the Python time; any other value (a
    subclass, an expression, a naive datetime) goes through the field's own preparation."""
    plan: _CopyPlan = []
    for field in fields:
        if isinstance(field, models.JSONField) and field.encoder is None:
            # Encoded here, in one C call; a top-level None is SQL NULL, as Django's JSONField
            # stores it.
            plan.append((_ONLY_NONE, _json_text))
            continue
        prepare = functools.partial(field.get_db_prep_save, connection=connection)
        if type(field) is models.DateTimeField and settings.USE_TZ:
            plan.append((_ONLY_NONE, functools.partial(_aware_datetime, prepare)))
            continue
        kind = _UNCHANGED_BY_PREPARATION.get(type(field))
        plan.append((_ONLY_NONE | {kind} if kind else _ONLY_NONE, prepare))
    return plan


def _copy_row(values: Sequence[Any], plan: _CopyPlan) -> list[Any]:
    # Exact types: a bool is not an int here, and a str enum is prepared by its field.
    return [
        value if type(value) in passing else prepare(value)
        for value, (passing, prepare) in zip(values, plan, strict=True)
    ]


_ONLY_NONE: frozenset[type] = frozenset({type(None)})


def _values_getter(
    getter: Callable[..., Callable[[Any], Any]], names: Sequence[str]
) -> Callable[[Any], Sequence[Any]]:
    """``getter(*names)``, one C call a row, always returning a tuple (even for one name)."""
    if len(names) == 1:
        one = getter(names[0])
        return lambda item: (one(item),)
    return getter(*names)


def _aware_datetime(prepare: Callable[[Any], Any], value: Any) -> Any:
    # An aware datetime comes out of a DateTimeField's preparation unchanged; a naive one is
    # made aware there, with Django's warning.
    if type(value) is datetime.datetime and value.utcoffset() is not None:
        return value
    return prepare(value)


def _json_text(value: Any) -> str | None:
    if value is None:
        return None
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


#: Django's own fields whose preparation returns a value of this type unchanged (on
#: PostgreSQL, the one database that ``COPY`` serves); checked by exact class, so a subclass
#: with its own preparation still goes through it.
_UNCHANGED_BY_PREPARATION: dict[type[models.Field[Any, Any]], type] = {
    # The keys an update is matched on: a fifth of a page's preparation, otherwise.
    models.AutoField: int,
    models.BigAutoField: int,
    models.SmallAutoField: int,
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


def _update_values_list(
    model: type[models.Model],
    connection: BaseDatabaseWrapper,
    fields: list[models.Field[Any, Any]],
    values: list[models.Field[Any, Any]],
    matches: str,
    rows: Iterable[dict[str, Any]],
    where_params: Sequence[Any],
) -> int:
    quote = connection.ops.quote_name
    select_list = ", ".join(f"column{i + 1} AS {quote(_col(f))}" for i, f in enumerate(fields))
    assignments = ", ".join(f"{quote(_col(f))} = v.{quote(_col(f))}" for f in values)
    placeholders = "(" + ", ".join("%s" for _ in fields) + ")"
    prepared = ([f.get_db_prep_save(row[f.name], connection) for f in fields] for row in rows)
    changed = 0
    with quiet_cursor(connection) as cursor:
        for chunk in _chunks(
            prepared, _params_bytes, statement_bytes(connection), max(1, MAX_PARAMS // len(fields))
        ):
            sql = (
                f"UPDATE {quote(model._meta.db_table)} AS t SET {assignments} "
                f"FROM (SELECT {select_list} FROM (VALUES "
                f"{', '.join([placeholders] * len(chunk))}) AS vv) AS v WHERE {matches}"
            )
            changed += execute_quietly(
                connection, cursor, sql, [*(p for row in chunk for p in row), *where_params]
            )
    return changed


def _update_mysql(
    model: type[models.Model],
    connection: BaseDatabaseWrapper,
    fields: list[models.Field[Any, Any]],
    values: list[models.Field[Any, Any]],
    key_matches: str,
    where: str,
    rows: Iterable[dict[str, Any]],
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
    with quiet_cursor(connection) as cursor:
        for chunk in _chunks(
            prepared, _params_bytes, statement_bytes(connection), max(1, MAX_PARAMS // len(fields))
        ):
            derived = first + other * (len(chunk) - 1)
            sql = (
                f"UPDATE {quote(model._meta.db_table)} AS t INNER JOIN ({derived}) AS v "
                f"ON {key_matches} SET {assignments}{condition}"
            )
            changed += execute_quietly(
                connection, cursor, sql, [*(p for row in chunk for p in row), *where_params]
            )
    return changed
