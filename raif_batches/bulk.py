"""One ``UPDATE … FROM (VALUES …)`` per page of results, instead of one query per row.

Applying 1,000 results costs one statement whatever their number; Django's ``bulk_update``
builds a ``CASE`` per column and row, which grows with the page, and ``save()`` per row is a
round trip each. Works on PostgreSQL and SQLite (3.33+), the databases this app is tested on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import connections, models

# Stay well below SQLite's 32,766 and PostgreSQL's 65,535 bound parameters per statement.
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

    ``where`` is extra SQL on the target table (aliased ``t``), e.g. ``t.status = %s``, which
    makes the update idempotent. Returns the number of rows changed.
    """
    if not rows:
        return 0
    connection = connections[using]
    quote = connection.ops.quote_name
    meta = model._meta
    columns = [*key_fields, *set_fields]
    fields: list[models.Field[Any, Any]] = []
    for name in columns:
        model_field = meta.get_field(name)
        assert isinstance(model_field, models.Field), name
        fields.append(model_field)
    is_postgres = connection.vendor == "postgresql"
    if is_postgres:
        placeholders = "(" + ", ".join(f"%s::{f.db_type(connection)}" for f in fields) + ")"
    else:
        placeholders = "(" + ", ".join("%s" for _ in fields) + ")"
    names = [str(f.column) for f in fields]
    select_list = ", ".join(f"column{i + 1} AS {quote(name)}" for i, name in enumerate(names))
    assignments = ", ".join(f"{quote(name)} = v.{quote(name)}" for name in names[len(key_fields) :])
    matches = " AND ".join(
        f"t.{quote(name)} = v.{quote(name)}" for name in names[: len(key_fields)]
    )
    target = f"{quote(meta.db_table)} AS t"
    rows_per_statement = max(1, MAX_PARAMS // len(fields))
    changed = 0
    with connection.cursor() as cursor:
        for start in range(0, len(rows), rows_per_statement):
            chunk = rows[start : start + rows_per_statement]
            params: list[Any] = []
            for row in chunk:
                for field in fields:
                    params.append(field.get_db_prep_save(row[field.name], connection))
            values = ", ".join([placeholders] * len(chunk))
            sql = (
                f"UPDATE {target} SET {assignments} "
                f"FROM (SELECT {select_list} FROM (VALUES {values}) AS vv) AS v "
                f"WHERE {matches}"
            )
            if where:
                sql += f" AND ({where})"
            cursor.execute(sql, [*params, *where_params])
            changed += cursor.rowcount
    return changed
