"""Indexes for the admin at 100,000 batches and 5,000,000 completions: filters and name search.

- ``raif_batch_{status,provider,model}_created`` (the column, created_at, id): the batch list
  filtered by one of them reads its page, newest first, and its bounded count off the index,
  however old the matching batches are.
- ``raif_completion_status_id`` (status, id): the completion list filtered by status across
  batches, newest first. The table is the large one, so on PostgreSQL the index is built
  ``CONCURRENTLY`` (writes go on while it is built; hence ``atomic = False``); MySQL/MariaDB
  build it online anyway, SQLite is for development.
- ``raif_batch_name_prefix``, outside the model's state because no portable ``Index`` can say
  it: the admin searches names by case-insensitive prefix (``name__istartswith``).
  - PostgreSQL compares ``UPPER(name::text) LIKE 'TERM%'``; only a btree on that expression
    with ``text_pattern_ops`` serves it under a collation other than ``C`` (no extension, no
    superuser needed).
  - MySQL/MariaDB compare ``name LIKE 'term%'`` under the column's case-insensitive collation,
    which a plain index on ``name`` serves.
  - SQLite's ``LIKE`` ignores case and uses no index on a column without ``NOCASE``; it is for
    development, so nothing is made there.
"""

from django.db import migrations, models

NAME_PREFIX_INDEX = "raif_batch_name_prefix"
COMPLETION_STATUS_INDEX = models.Index(fields=["status", "id"], name="raif_completion_status_id")


def create_name_prefix_index(apps, schema_editor):
    connection = schema_editor.connection
    model = apps.get_model("raif_batches", "ModelCompletionBatch")
    quote = connection.ops.quote_name
    table, column = quote(model._meta.db_table), quote(model._meta.get_field("name").column)
    if connection.vendor == "postgresql":
        schema_editor.execute(
            f"CREATE INDEX {quote(NAME_PREFIX_INDEX)} ON {table} (UPPER({column}) text_pattern_ops)"
        )
    elif connection.vendor == "mysql":
        schema_editor.execute(f"CREATE INDEX {quote(NAME_PREFIX_INDEX)} ON {table} ({column})")


def drop_name_prefix_index(apps, schema_editor):
    connection = schema_editor.connection
    model = apps.get_model("raif_batches", "ModelCompletionBatch")
    quote = connection.ops.quote_name
    if connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {quote(NAME_PREFIX_INDEX)}")
    elif connection.vendor == "mysql":
        schema_editor.execute(
            f"DROP INDEX {quote(NAME_PREFIX_INDEX)} ON {quote(model._meta.db_table)}"
        )


def completion_status_index(create):
    """The operation that creates (or drops) ``raif_completion_status_id``."""

    def operation(apps, schema_editor):
        model = apps.get_model("raif_batches", "ModelCompletion")
        if schema_editor.connection.vendor == "postgresql":
            sql = (
                COMPLETION_STATUS_INDEX.create_sql if create else COMPLETION_STATUS_INDEX.remove_sql
            )
            schema_editor.execute(sql(model, schema_editor, concurrently=True))
        elif create:
            schema_editor.add_index(model, COMPLETION_STATUS_INDEX)
        else:
            schema_editor.remove_index(model, COMPLETION_STATUS_INDEX)

    return operation


class Migration(migrations.Migration):
    # CREATE INDEX CONCURRENTLY cannot run inside a transaction; MySQL cannot roll DDL back.
    atomic = False

    dependencies = [("raif_batches", "0004_reconcile_candidates")]

    operations = [
        migrations.AddIndex(
            model_name="modelcompletionbatch",
            index=models.Index(
                fields=["status", "created_at", "id"], name="raif_batch_status_created"
            ),
        ),
        migrations.AddIndex(
            model_name="modelcompletionbatch",
            index=models.Index(
                fields=["provider", "created_at", "id"], name="raif_batch_provider_created"
            ),
        ),
        migrations.AddIndex(
            model_name="modelcompletionbatch",
            index=models.Index(
                fields=["model", "created_at", "id"], name="raif_batch_model_created"
            ),
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AddIndex(model_name="modelcompletion", index=COMPLETION_STATUS_INDEX)
            ],
            database_operations=[
                migrations.RunPython(
                    completion_status_index(create=True), completion_status_index(create=False)
                )
            ],
        ),
        migrations.RunPython(create_name_prefix_index, drop_name_prefix_index),
    ]
