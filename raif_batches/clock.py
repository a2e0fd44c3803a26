"""The one clock for decisions that several hosts must agree on: the database's.

Leases, reconcile waits, cancel grace periods and deadlines compare times written by different
processes, often on different hosts. Each host's ``timezone.now()`` may be off by minutes; the
database server's clock is the same for every worker, so every such decision reads it here.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.db import connections


def db_now(using: str = "default") -> datetime:
    """The database server's current time, timezone-aware (UTC).

    On SQLite (development) the database runs in this process, so this is the host's clock.
    """
    connection = connections[using]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # statement_timestamp(): CURRENT_TIMESTAMP would be the start of the transaction.
            cursor.execute("SELECT statement_timestamp()")
        elif connection.vendor == "mysql":
            cursor.execute("SELECT UTC_TIMESTAMP(6)")
        else:
            cursor.execute("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")
        (value,) = cursor.fetchone()
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)
