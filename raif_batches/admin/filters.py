"""Sidebar filters that never scan a large table for their choices.

Django's ``list_filter = ("model",)`` runs ``SELECT DISTINCT model`` over every batch on each
page view, and a related-field filter loads every batch into the sidebar. At 100,000 batches and
5,000,000 completions those queries were a third of the page. Choices here come from what is
already known without scanning: providers from settings, models from the price table plus the
most recent batches (a bounded read), and the batch filter shows only the selected batch.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from ..models import ModelCompletionBatch
from ..pricing import pricing_table
from ..providers import provider_paths

#: Recent batches read for model names that the price table does not know.
RECENT_BATCHES_FOR_MODELS = 500


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
    title = "model"
    parameter_name = field_name = "model"

    def known_values(self) -> list[str]:
        try:
            # Keys with a wildcard are patterns for model families, not model names.
            priced = [name for name in pricing_table() if "*" not in name]
        except Exception:  # a malformed PRICES setting is reported by the checks, not here
            priced = []
        recent = ModelCompletionBatch.objects.order_by("-created_at", "-pk").values_list(
            "model", flat=True
        )[:RECENT_BATCHES_FOR_MODELS]
        return priced + list(recent)


class BatchFilter(admin.SimpleListFilter):
    """Completions of one batch; lists only the selected batch, never all of them.

    The batch page links here; any batch id can also be typed into the box the filter shows, so
    no query lists batches for the sidebar.
    """

    title = "batch"
    parameter_name = "batch"
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
        if not value or not value.isdigit():
            return []
        batch = ModelCompletionBatch.objects.filter(pk=int(value)).only("pk", "name").first()
        if batch is None:
            return [(value, f"#{value} (no such batch)")]
        return [(str(batch.pk), f"#{batch.pk} {batch.name}".strip())]

    def has_output(self) -> bool:
        return True  # the box to type a batch id into is shown even when nothing is selected

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value and value.isdigit():
            return queryset.filter(batch_id=int(value))
        if value:
            return queryset.none()
        return queryset
