"""On MySQL/MariaDB, compare custom ids and provider names case-sensitively, as providers do.

Their default collations ignore case, so ``"a"`` and ``"A"`` — two distinct custom ids for the
provider and for ``create_batch`` — broke the unique constraint, and lookups by id matched both.
A binary collation makes the column compare as every other database does. No model state
changes: elsewhere this migration does nothing.
"""

from django.db import migrations

# (model, field) whose values are identifiers that differ by case only.
COLUMNS = (
    ("modelcompletion", "batch_custom_id"),
    ("modelcompletionbatch", "provider_batch_name"),
    ("modelcompletionbatch", "provider_batch_id"),
)


def binary_collation(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor != "mysql":
        return
    quote = connection.ops.quote_name
    for model_name, field_name in COLUMNS:
        model = apps.get_model("raif_batches", model_name)
        field = model._meta.get_field(field_name)
        schema_editor.execute(
            f"ALTER TABLE {quote(model._meta.db_table)} MODIFY {quote(field.column)} "
            f"{field.db_type(connection)} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin "
            f"{'NULL' if field.null else 'NOT NULL'}"
        )


class Migration(migrations.Migration):
    dependencies = [("raif_batches", "0002_leases_harvest_waits_and_list_indexes")]

    operations = [
        # MySQL cannot roll DDL back, and Django refuses DDL inside a transaction there.
        migrations.RunPython(binary_collation, migrations.RunPython.noop, atomic=False),
    ]
