"""PostgreSQL: the batch table keeps half of each page free, so that a lease can change in place.

Every run claims its batches and gives them back, two ``UPDATE``s of every batch it touches that
change no indexed column. PostgreSQL writes such a row's new version beside the old one,
without touching any of the table's indexes (a "HOT" update), only when the page has room for
it; at the default fill factor (100) a page is full as soon as rows are written into it, so
every lease costs an entry in each of the table's fifteen indexes. At 50, each row of a page
has room for one new version of itself even when a single statement updates them all, as a
claim of 1,000 batches does: that claim took 43 ms of SQL against 99 ms, the release 22 ms
against 85 ms (``docs/benchmarks.md``). The table holds one row per batch, a few hundred
bytes to a few kilobytes each: twice its size is small beside the completions' table, which
keeps the default (its updates change indexed columns, so the free space would buy nothing).

The setting applies to pages written from now on; ``VACUUM FULL`` of the table (it locks it
while it runs) applies it to the rows already there. MySQL/MariaDB (InnoDB updates unindexed
columns in place anyway) and SQLite have nothing to set.
"""

from django.db import migrations

FILLFACTOR = 50


def set_fillfactor(apps, schema_editor):
    _alter(apps, schema_editor, f"SET (fillfactor = {FILLFACTOR})")


def reset_fillfactor(apps, schema_editor):
    _alter(apps, schema_editor, "RESET (fillfactor)")


def _alter(apps, schema_editor, change):
    if schema_editor.connection.vendor != "postgresql":
        return
    model = apps.get_model("raif_batches", "ModelCompletionBatch")
    table = schema_editor.connection.ops.quote_name(model._meta.db_table)
    schema_editor.execute(f"ALTER TABLE {table} {change}")


class Migration(migrations.Migration):
    dependencies = [
        ("raif_batches", "0005_admin_list_indexes"),
    ]

    operations = [
        migrations.RunPython(set_fillfactor, reset_fillfactor, elidable=False),
    ]
