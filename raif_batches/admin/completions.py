"""The completion admin: view-only, and cheap at 5,000,000 rows.

- **View-only.** A completion is a request the caller made and the answer the provider gave;
  requests are rebuilt byte for byte and results are stored once, so nothing is edited, and a
  completion belongs to its batch's counts and costs, so it is deleted only with its batch.
- **One order, served by an index.** Within a batch the list reads completions in request
  order off the ``(batch, id)`` index; unfiltered, newest first off the primary key. No column
  sort is offered: any other order would sort millions of rows for one page.
- **Bounded counts** (``changelists``): an estimate for the whole table, an exact count within a
  batch, a capped one otherwise; no sidebar counts ("Show counts" would count every row once
  per filter choice).
- **Filters an index serves** (``filters``): by batch, by status (the ``(status, id)`` index
  across batches), and by completion date once a batch is chosen (that column has no index).
- **Search within a batch, by exact custom id.** Custom ids are unique per batch and indexed with
  it; a substring search, or one across every batch, would read every row it covers, so the
  list asks for a batch first and matches the whole id.
- **Model output is text.** Answers and payloads are escaped, in ``<pre>`` on the page and cut
  by CSS in the list with the whole answer in the tooltip.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Paginator
from django.db.models import Model, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from .changelists import (
    BATCH_COUNT_LIMIT,
    WIDE_COUNT_LIMIT,
    BoundedCountPaginator,
    CompletionChangeList,
)
from .filters import BatchFilter, DateWithinBatchFilter, selected_batch
from .rendering import (
    CSS,
    batch_change_url,
    clipped,
    escaped,
    fieldset_names,
    money,
    pretty_json,
    pretty_text,
    short_time,
    status_badge,
)


class ModelCompletionAdmin(admin.ModelAdmin):
    """View-only: a completion is a request the caller made and the answer the provider gave."""

    list_display = (
        "batch_custom_id",
        "batch_link",
        "status_badge",
        "tokens",
        "cost",
        "answer_preview",
        "completed",
    )
    sortable_by = ()
    list_filter = (BatchFilter, "status", ("completed_at", DateWithinBatchFilter))
    search_fields = ("batch_custom_id",)
    search_help_text = "Search by exact custom id within the selected batch."
    list_per_page = 100
    # The unfiltered total would count every completion of every batch on each page view, and
    # the sidebar's counts ("Show counts") every completion once per filter choice.
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    fieldsets = (
        (None, {"fields": ("batch_link", "batch_custom_id", "status_badge", "source_link")}),
        (
            "Request",
            {
                "fields": (
                    "messages_pretty",
                    "temperature",
                    "max_tokens",
                    "response_format_pretty",
                    "tools_pretty",
                    "tool_choice_pretty",
                    "extra_body_pretty",
                )
            },
        ),
        (
            "Response",
            {
                "fields": (
                    "answer_pretty",
                    "response_json_pretty",
                    "response_tool_calls_pretty",
                    "finish_reason",
                )
            },
        ),
        ("Failure", {"fields": ("failure_error", "failure_reason_pretty")}),
        (
            "Usage and cost",
            {
                "fields": (
                    "prompt_tokens",
                    "cached_tokens",
                    "completion_tokens",
                    "reasoning_tokens",
                    "total_tokens",
                    "prompt_cost",
                    "output_cost",
                    "cost",
                )
            },
        ),
        ("Times", {"fields": ("created_at", "started_at", "completed_at", "failed_at")}),
        (
            "Provider payload",
            {"classes": ("collapse",), "fields": ("response_payload_pretty",)},
        ),
    )

    class Media:
        css = CSS

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Requests are rebuilt byte for byte and results are stored once: nothing to edit.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # A completion belongs to its batch's counts and costs; delete the batch instead.
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return fieldset_names(self.fieldsets)

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return CompletionChangeList

    def get_ordering(self, request: HttpRequest) -> tuple[str, ...]:
        # Request order within a batch ((batch, id) index); newest first across batches (pk).
        return ("pk",) if selected_batch(request) is not None else ("-pk",)

    def get_paginator(
        self, request: HttpRequest, queryset: Any, per_page: int, *args: Any, **kwargs: Any
    ) -> Paginator:
        limit = BATCH_COUNT_LIMIT if selected_batch(request) is not None else WIDE_COUNT_LIMIT
        return BoundedCountPaginator(queryset, per_page, *args, count_limit=limit, **kwargs)

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        if search_term.strip() and selected_batch(request) is None:
            self.message_user(
                request,
                "Choose a batch first (the batch filter, or the link on a batch's page): "
                "custom ids are searched within one batch.",
                messages.WARNING,
            )
            return queryset.none(), False
        term = search_term.strip().strip('"').strip()
        if not term:
            return queryset, False
        # Exact: one probe of the unique (batch, custom id) index; a substring match would read
        # every completion of the batch.
        return queryset.filter(batch_custom_id=term), False

    @admin.display(description="batch")
    def batch_link(self, obj: Any) -> SafeString:
        # The id alone: the batch's name would cost a join on every row.
        return mark_safe(f'<a href="{escaped(batch_change_url(obj.batch_id))}">#{obj.batch_id}</a>')

    @admin.display(description="status")
    def status_badge(self, obj: Any) -> SafeString:
        return status_badge(obj.status, obj.get_status_display())

    @admin.display(description="tokens")
    def tokens(self, obj: Any) -> SafeString:
        if obj.total_tokens is None:
            return clipped("")
        prompt = obj.prompt_tokens if obj.prompt_tokens is not None else "?"
        completion = obj.completion_tokens if obj.completion_tokens is not None else "?"
        return mark_safe(
            f'<span class="raif-tokens-cell" title="{prompt} prompt + {completion} completion">'
            f"{escaped(obj.total_tokens)}</span>"
        )

    @admin.display(description="cost")
    def cost(self, obj: Any) -> SafeString:
        return money(obj.total_cost)

    @admin.display(description="prompt token cost")
    def prompt_cost(self, obj: Any) -> SafeString:
        return money(obj.prompt_token_cost)

    @admin.display(description="output token cost")
    def output_cost(self, obj: Any) -> SafeString:
        return money(obj.output_token_cost)

    @admin.display(description="answer")
    def answer_preview(self, obj: Any) -> SafeString:
        return clipped(obj.raw_response or obj.failure_error)

    @admin.display(description="completed")
    def completed(self, obj: Any) -> SafeString:
        return short_time(obj.completed_at)

    @admin.display(description="source")
    def source_link(self, obj: Any) -> SafeString | str:
        if not obj.source_content_type_id:
            return "—"
        source: Model | None = obj.source
        if source is None:
            return f"{obj.source_content_type} #{obj.source_object_id} (deleted)"
        url = None
        try:
            url = reverse(
                f"admin:{source._meta.app_label}_{source._meta.model_name}_change",
                args=[source.pk],
            )
        except Exception:  # the source's model is not in this admin
            url = None
        if url is None:
            return str(source)
        return format_html('<a href="{}">{}</a>', url, str(source))

    @admin.display(description="messages")
    def messages_pretty(self, obj: Any) -> SafeString:
        return pretty_json(obj.messages)

    @admin.display(description="response format")
    def response_format_pretty(self, obj: Any) -> SafeString:
        return pretty_json(obj.response_format)

    @admin.display(description="tools")
    def tools_pretty(self, obj: Any) -> SafeString:
        return pretty_json(obj.tools)

    @admin.display(description="tool choice")
    def tool_choice_pretty(self, obj: Any) -> SafeString:
        return pretty_json(obj.tool_choice)

    @admin.display(description="other parameters")
    def extra_body_pretty(self, obj: Any) -> SafeString:
        return pretty_json(obj.extra_body or None)

    @admin.display(description="answer")
    def answer_pretty(self, obj: Any) -> SafeString:
        return pretty_text(obj.raw_response)

    @admin.display(description="answer as JSON")
    def response_json_pretty(self, obj: Any) -> SafeString:
        return pretty_json(obj.response_json)

    @admin.display(description="tool calls")
    def response_tool_calls_pretty(self, obj: Any) -> SafeString:
        return pretty_json(obj.response_tool_calls)

    @admin.display(description="failure reason")
    def failure_reason_pretty(self, obj: Any) -> SafeString:
        return pretty_text(obj.failure_reason)

    @admin.display(description="provider payload")
    def response_payload_pretty(self, obj: Any) -> SafeString:
        return pretty_json(obj.response_payload)
