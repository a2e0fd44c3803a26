"""Sidebar filters that never scan a large table for their choices.

Django's ``list_filter = ("model",)`` runs ``SELECT DISTINCT model`` over every batch on each
page view, and a related-field filter loads every batch into the sidebar. At 100,000 batches and
5,000,000 completions those queries were a third of the page. Choices here come from what is
already known, or found by index seeks: providers from settings, models by a loose scan of the
(model, created_at, id) index (one seek per model name, whatever the number of batches), and the
batch filter shows only the selected batch.

What a filter selects must be served by an index too: each batch filter has its own
(column, created_at, id) index, completion status its (status, id) one. The completion date has
none (one more index on the largest table for a rarely used filter), so it is offered once a
batch is chosen, where the read is bounded by the batch's size.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db import connections, models
from django.db.models import QuerySet
from django.http import HttpRequest

from ..models import ModelCompletionBatch
from ..providers import provider_paths

#: Model names offered at most in the sidebar (a longer list is not read there anyway).
MAX_MODEL_CHOICES = 100
#: The completion list's parameter naming the batch whose completions are listed.
BATCH_PARAMETER = "batch"


def indexed_distinct(model: type[models.Model], field_name: str, limit: int) -> list[str]:
    """The column's distinct values, in order, by a loose scan of an index that leads with it.

    ``SELECT DISTINCT`` reads every row; this recursive query asks the index for the smallest
    value, then for the smallest one above it, and so on: one index seek per value, at most
    ``limit``. It is plain SQL that PostgreSQL, MySQL 8 / MariaDB 10.2+ and SQLite all run.
    """
    connection = connections[model._default_manager.db]
    field = model._meta.get_field(field_name)
    if not isinstance(field, models.Field) or not field.column:
        raise ValueError(f"{model.__name__}.{field_name} is not a column")
    quote = connection.ops.quote_name
    table, column = quote(model._meta.db_table), quote(field.column)
    sql = (
        f"WITH RECURSIVE found (value, n) AS ("
        f" SELECT MIN({column}), 1 FROM {table}"
        f" UNION ALL"
        f" SELECT (SELECT MIN({column}) FROM {table} WHERE {column} > found.value), found.n + 1"
        f" FROM found WHERE found.value IS NOT NULL AND found.n < %s"
        f") SELECT value FROM found WHERE value IS NOT NULL"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [limit])
        return [row[0] for row in cursor.fetchall()]


def selected_batch(request: HttpRequest) -> int | None:
    """The id of the batch whose completions the request lists, if it names one."""
    value = request.GET.get(BATCH_PARAMETER, "")
    return int(value) if value.isascii() and value.isdigit() else None


class ValueFilter(admin.SimpleListFilter):
    """An exact-match filter on one column whose choices are supplied, not scanned for."""

    field_name = ""

    def known_values(self) -> list[str]:
        raise NotImplementedError

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        values = set(self.known_values())
        selected = self.value()
        if selected:
            values.add(selected)  # a value typed into the URL stays visible and clearable
        return [(value, value) for value in sorted(values)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value():
            return queryset.filter(**{self.field_name: self.value()})
        return queryset


class ProviderFilter(ValueFilter):
    title = "provider"
    parameter_name = field_name = "provider"

    def known_values(self) -> list[str]:
        try:
            return list(provider_paths())
        except Exception:  # a malformed PROVIDERS setting is reported by the checks, not here
            return []


class ModelFilter(ValueFilter):
    """Every model name batches use, found off ``raif_batch_model_created``."""

    title = "model"
    parameter_name = field_name = "model"

    def known_values(self) -> list[str]:
        return indexed_distinct(ModelCompletionBatch, "model", MAX_MODEL_CHOICES)


class BatchFilter(admin.SimpleListFilter):
    """Completions of one batch; lists only the selected batch, never all of them.

    The batch page links here; any batch id can also be typed into the box the filter shows, so
    no query lists batches for the sidebar.
    """

    title = "batch"
    parameter_name = BATCH_PARAMETER
    template = "admin/raif_batches/batch_filter.html"

    def __init__(self, request: HttpRequest, params: Any, model: Any, model_admin: Any) -> None:
        super().__init__(request, params, model, model_admin)
        # The id box submits a GET form: keep the other filters, drop the page number.
        skip = {self.parameter_name, "p", "e"}
        self.hidden_params = [
            (key, value)
            for key, values in request.GET.lists()
            if key not in skip
            for value in values
        ]

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        value = self.value()
        if not value or not (value.isascii() and value.isdigit()):
            return []
        batch = ModelCompletionBatch.objects.filter(pk=int(value)).only("pk", "name").first()
        if batch is None:
            return [(value, f"#{value} (no such batch)")]
        return [(str(batch.pk), f"#{batch.pk} {batch.name}".strip())]

    def has_output(self) -> bool:
        return True  # the box to type a batch id into is shown even when nothing is selected

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value and value.isascii() and value.isdigit():
            return queryset.filter(batch_id=int(value))
        if value:
            return queryset.none()
        return queryset


class DateWithinBatchFilter(admin.DateFieldListFilter):
    """Django's date filter, offered once a batch is chosen.

    The date column has no index: across every batch a day without completions would read the
    whole table for the page and again for its count. Within one batch the read is bounded by
    the batch (at most ``BATCH_COUNT_LIMIT`` rows). A date in the URL without a batch is
    ignored (a filter without output is left out of the change list, its parameters taken),
    and the page says so.
    """

    def __init__(self, field: Any, request: HttpRequest, *args: Any, **kwargs: Any) -> None:
        super().__init__(field, request, *args, **kwargs)
        self.batch = selected_batch(request)
        if self.batch is None and self.used_parameters:
            messages.warning(
                request, f"Choose a batch first: the {self.title} filter applies within one batch."
            )

    def has_output(self) -> bool:
        return self.batch is not None

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        if self.batch is None:
            return queryset
        return super().queryset(request, queryset)
