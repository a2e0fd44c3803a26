"""The batch admin: configuration, list columns and the batch page.

Design rules, each for a reason:

- **Pages cost a fixed number of queries.** A batch can hold 50,000 completions and a site
  100,000 batches, so nothing here runs a query per row: progress comes from the stored
  ``request_counts``, the batch page links to the filtered completion list instead of an
  inline, only a short preview of failed completions is loaded, filters do not scan for their
  choices (``filters``), and counts are bounded (``changelists``).
- **Only sorts an index serves.** The list sorts by id or creation time (both indexed); status,
  model, cost and the other times would sort every batch for one page.
- **The machine owns provider state.** Everything the provider or a poller writes is read-only
  here; batches are not added (a batch is created from code, with its requests, by
  ``raif_batches.create_batch``).
- **A batch at the provider is not deleted.** ``ModelCompletionBatch.delete_refusal`` says why;
  the delete page shows it and the ``pre_delete`` guard (``raif_batches.signals``) enforces it
  for every other path. The page counts the completion rows that really go.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import unquote
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Count, Q, QuerySet, Sum
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
)
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe
from django.utils.text import Truncator
from django.utils.translation import gettext, ngettext

from ..exceptions import BatchBusy, BatchInFlight, BatchStateError, ProviderError
from ..lifecycle import submission
from ..models import (
    IN_FLIGHT_STATUSES,
    BatchStatus,
    CompletionStatus,
    ModelCompletion,
    ModelCompletionBatch,
)
from ..providers import get_strategy
from .actions import BATCH_ACTIONS
from .changelists import WIDE_COUNT_LIMIT, BatchChangeList, BoundedCountPaginator
from .filters import ModelFilter, ProviderFilter
from .object_actions import ObjectActionsMixin
from .rendering import (
    CSS,
    batch_change_url,
    completion_list_url,
    counts_of,
    elapsed,
    escaped,
    fieldset_names,
    fragment,
    money,
    muted,
    number,
    pretty_json,
    pretty_text,
    progress_bar,
    safe_message,
    short_time,
    status_badge,
    when,
)

#: Failed completions previewed on a batch page; the rest are one click away.
FAILED_PREVIEW = 20


class ModelCompletionBatchAdmin(ObjectActionsMixin, admin.ModelAdmin):
    list_display = (
        "display_name",
        "status_badge",
        "provider_model",
        "progress",
        "cost",
        "created",
        "submitted",
        "ended",
    )
    # Indexed sorts only: the primary key and (created_at, id).
    sortable_by = ("display_name", "created")
    list_filter = ("status", ProviderFilter, ModelFilter, ("created_at", admin.DateFieldListFilter))
    search_fields = ("name", "provider_batch_id", "provider_batch_name")
    search_help_text = (
        "Search by the beginning of a name (any case), or by a whole id: a batch's #123, its "
        "provider batch id or its provider batch name."
    )
    list_per_page = 100
    # One bounded count per page, not a second one of every batch, nor the sidebar's counts of
    # every batch once per filter choice ("Show counts").
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    actions = BATCH_ACTIONS
    object_actions = tuple(action.__name__ for action in BATCH_ACTIONS)
    danger_actions = ("cancel_action",)
    fieldsets = (
        (None, {"fields": ("name", "status_badge", "provider", "model")}),
        ("Failure", {"fields": ("failure_error", "failure_reason_pretty")}),
        (
            "Progress",
            {"fields": ("progress_wide", "counts_table", "failed_preview")},
        ),
        (
            "Totals",
            {"fields": ("prompt_cost", "output_cost", "total_cost_full", "token_totals")},
        ),
        ("Timeline", {"fields": ("timeline",)}),
        (
            "Provider",
            {
                "fields": (
                    "provider_batch_id",
                    "provider_batch_name",
                    "input_file_id",
                    "provider_response_pretty",
                ),
            },
        ),
        ("Retries", {"fields": ("retry_of_link", "retries_links")}),
        ("Metadata", {"fields": ("metadata",)}),
        (
            "Completion handler",
            {
                "classes": ("collapse",),
                "fields": (
                    "handler",
                    "handler_attempts",
                    "handler_called_at",
                    "handler_gave_up",
                    "handler_error",
                ),
            },
        ),
        (
            "Poller bookkeeping",
            {
                "classes": ("collapse",),
                "fields": (
                    "next_poll_at",
                    "expires_at",
                    "claimed_by",
                    "claimed_until",
                    "create_attempted_at",
                    "create_ended_at",
                    "reconcile_candidates",
                    "counts_changed_at",
                    "cancel_reason",
                ),
            },
        ),
    )
    #: What an operator may edit: a label and free-form metadata. The rest is the machine's.
    editable_fields = ("name", "metadata")

    class Media:
        css = CSS

    # -- permissions ---------------------------------------------------------------------------

    def has_add_permission(self, request: HttpRequest) -> bool:
        # A batch without requests cannot be submitted; batches are created from code.
        return False

    def _has_custom_perm(self, request: HttpRequest, action: str) -> bool:
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.{action}_{opts.model_name}")

    def has_submit_permission(self, request: HttpRequest) -> bool:
        return self._has_custom_perm(request, "submit")

    def has_poll_permission(self, request: HttpRequest) -> bool:
        return self._has_custom_perm(request, "poll")

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return self._has_custom_perm(request, "cancel")

    def has_harvest_permission(self, request: HttpRequest) -> bool:
        return self._has_custom_perm(request, "harvest")

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return self._has_custom_perm(request, "retry")

    def has_export_permission(self, request: HttpRequest) -> bool:
        return self._has_custom_perm(request, "export")

    # -- a lost create that the provider's list cannot tell apart: adopt or abandon ----------

    def get_urls(self) -> list[Any]:
        prefix = f"{self.opts.app_label}_{self.opts.model_name}"
        extra = [
            path(
                "<path:object_id>/adopt/<str:provider_batch_id>/",
                self.admin_site.admin_view(self.adopt_view),
                name=f"{prefix}_adopt",
            ),
            path(
                "<path:object_id>/abandon/",
                self.admin_site.admin_view(self.abandon_view),
                name=f"{prefix}_abandon",
            ),
        ]
        return extra + super().get_urls()

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        extra_context = dict(extra_context or {})
        obj = self.get_object(request, unquote(object_id))
        if (
            obj is not None
            and obj.status == BatchStatus.SUBMITTING
            and obj.reconcile_candidates
            and self.has_submit_permission(request)
        ):
            prefix = f"admin:{self.opts.app_label}_{self.opts.model_name}"
            extra_context["raif_candidates"] = [
                {
                    **candidate,
                    "url": reverse(
                        f"{prefix}_adopt",
                        args=[obj.pk, str(candidate.get("provider_batch_id"))],
                    ),
                }
                for candidate in obj.reconcile_candidates
                if isinstance(candidate, dict) and candidate.get("provider_batch_id")
            ]
            extra_context["raif_abandon_url"] = reverse(f"{prefix}_abandon", args=[obj.pk])
        return super().change_view(request, object_id, form_url, extra_context)

    def _operator_choice(
        self, request: HttpRequest, object_id: str, choose: Any, done: str
    ) -> HttpResponseBase:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        obj = self.get_object(request, unquote(object_id))
        if obj is None or not self.has_submit_permission(request):
            raise PermissionDenied
        try:
            choose(obj)
        except (BatchStateError, BatchBusy, ProviderError) as error:
            self.message_user(request, safe_message(error), messages.ERROR)
        else:
            self.message_user(request, done, messages.SUCCESS)
        return HttpResponseRedirect(batch_change_url(obj.pk))

    def adopt_view(
        self, request: HttpRequest, object_id: str, provider_batch_id: str
    ) -> HttpResponseBase:
        """The operator says which provider batch the lost create made."""
        return self._operator_choice(
            request,
            object_id,
            lambda batch: submission.adopt_candidate(
                get_strategy(batch.provider), batch, provider_batch_id
            ),
            f"Adopted provider batch {provider_batch_id}; it is polled from now on.",
        )

    def abandon_view(self, request: HttpRequest, object_id: str) -> HttpResponseBase:
        """The operator gives the batch up: failed, never created again."""
        return self._operator_choice(
            request,
            object_id,
            lambda batch: submission.abandon(batch),
            "Abandoned: the batch is failed and will not be created again. Cancel any provider "
            "batch it made at the provider; retry its requests as a new batch if needed.",
        )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [
            field for field in fieldset_names(self.fieldsets) if field not in self.editable_fields
        ]

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return BatchChangeList

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        """What an index serves: ids and provider names whole, the label by its beginning.

        Django's default matches a case-insensitive substring in every search field, which no
        btree can serve: at 100,000 batches that was a scan of the table for the page and
        another for its count. Here the local id (``123`` or ``#123``, the primary key), the
        provider batch id and name (their own indexes) match exactly, and the name matches by
        case-insensitive prefix (``raif_batch_name_prefix``, migration 0005).
        """
        term = search_term.strip().strip('"').strip()
        if not term:
            return queryset, False
        matches = (
            Q(provider_batch_id=term) | Q(provider_batch_name=term) | Q(name__istartswith=term)
        )
        local_id = term.removeprefix("#")
        if local_id.isascii() and local_id.isdigit() and int(local_id) < 2**63:
            matches |= Q(pk=int(local_id))
        return queryset.filter(matches), False

    def get_paginator(
        self, request: HttpRequest, queryset: Any, per_page: int, *args: Any, **kwargs: Any
    ) -> Paginator:
        return BoundedCountPaginator(
            queryset, per_page, *args, count_limit=WIDE_COUNT_LIMIT, **kwargs
        )

    # -- deletion ------------------------------------------------------------------------------

    def get_deleted_objects(
        self, objs: Any, request: HttpRequest
    ) -> tuple[list[Any], dict[str, int], set[str], list[Any]]:
        """Summarise what a delete takes with it, and refuse batches that may not go.

        Django's default collects and renders each related row: 50,000 completions per batch
        would make the confirmation page itself the outage. The completion rows are counted
        per batch in one grouped query (the stored provider counts are not the rows: a batch
        whose lines were never stored, or whose provider counted differently, would be
        misreported). A batch that ``delete_refusal`` refuses goes into ``protected`` with its
        reason; Django then deletes nothing and the page says why.
        """
        batches = list(objs)
        rows = dict(
            ModelCompletion.objects.filter(batch_id__in=[batch.pk for batch in batches])
            .order_by()
            .values_list("batch_id")
            .annotate(n=Count("pk"))
            .values_list("batch_id", "n")
        )
        summary = [
            format_html(
                "{}: {} ({})",
                "Model completion batch",
                str(batch),
                ngettext("%(n)s completion", "%(n)s completions", rows.get(batch.pk, 0))
                % {"n": number(rows.get(batch.pk, 0))},
            )
            for batch in batches
        ]
        model_count = {
            str(ModelCompletionBatch._meta.verbose_name_plural): len(batches),
            str(ModelCompletion._meta.verbose_name_plural): sum(rows.values()),
        }
        protected = [
            format_html("#{} {}: {}.", batch.pk, batch.name or batch.provider_batch_name, reason)
            for batch in batches
            if (reason := batch.delete_refusal) is not None
        ]
        perms_needed: set[str] = set()
        if not self.has_delete_permission(request):
            perms_needed.add(str(ModelCompletionBatch._meta.verbose_name))
        return summary, model_count, perms_needed, protected

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        # The page showed the batch as deletable, but a worker may have submitted it since.
        try:
            super().delete_model(request, obj)
        except BatchInFlight as error:
            request.__dict__["_raif_delete_refused"] = True
            self.message_user(request, str(error), messages.ERROR)

    def response_delete(self, request: HttpRequest, obj_display: str, obj_id: Any) -> HttpResponse:
        if request.__dict__.get("_raif_delete_refused"):
            return HttpResponseRedirect(batch_change_url(int(obj_id)))
        return super().response_delete(request, obj_display, obj_id)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        try:
            super().delete_queryset(request, queryset)
        except BatchInFlight as error:
            self.message_user(request, f"Nothing was deleted: {error}", messages.ERROR)

    # -- list columns --------------------------------------------------------------------------

    def action_checkbox(self, obj: Any) -> SafeString:
        """Django's checkbox markup, without rendering a form widget template on every row.

        The widget's template rendering was a fifth of the 100-row list's time.
        """
        label = gettext("Select this object for an action - {}").format(escaped(str(obj)))
        return mark_safe(
            f'<input type="checkbox" name="{helpers.ACTION_CHECKBOX_NAME}" '
            f'value="{escaped(obj.pk)}" class="action-select" aria-label="{label}">'
        )

    @admin.display(description="batch", ordering="pk")
    def display_name(self, obj: ModelCompletionBatch) -> SafeString:
        label = escaped(obj.name or obj.provider_batch_name)
        return mark_safe(f'#{obj.pk} <span class="raif-clip" title="{label}">{label}</span>')

    @admin.display(description="status")
    def status_badge(self, obj: ModelCompletionBatch) -> SafeString:
        return status_badge(obj.status, obj.get_status_display())

    @admin.display(description="provider / model")
    def provider_model(self, obj: ModelCompletionBatch) -> SafeString:
        # One column for both keeps the list's times in view beside the filter sidebar.
        model = escaped(obj.model)
        return mark_safe(
            f'<span class="raif-muted">{escaped(obj.provider)}</span><br>'
            f'<span class="raif-clip" title="{model}">{model}</span>'
        )

    @admin.display(description="progress")
    def progress(self, obj: ModelCompletionBatch) -> SafeString:
        return progress_bar(obj)

    @admin.display(description="cost")
    def cost(self, obj: ModelCompletionBatch) -> SafeString:
        return money(obj.total_cost)

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: ModelCompletionBatch) -> SafeString:
        return short_time(obj.created_at)

    @admin.display(description="submitted")
    def submitted(self, obj: ModelCompletionBatch) -> SafeString:
        return short_time(obj.submitted_at)

    @admin.display(description="ended")
    def ended(self, obj: ModelCompletionBatch) -> SafeString:
        return short_time(obj.ended_at)

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        """The failure section only when there is a failure to read, so it is never missed."""
        fieldsets = super().get_fieldsets(request, obj)
        if obj is not None and not (obj.failure_error or obj.failure_reason):
            fieldsets = [fs for fs in fieldsets if fs[0] != "Failure"]
        return fieldsets

    @admin.display(description="failure reason")
    def failure_reason_pretty(self, obj: ModelCompletionBatch) -> SafeString:
        return pretty_text(obj.failure_reason)

    @admin.display(description="prompt token cost")
    def prompt_cost(self, obj: ModelCompletionBatch) -> SafeString:
        return money(obj.prompt_token_cost)

    @admin.display(description="output token cost")
    def output_cost(self, obj: ModelCompletionBatch) -> SafeString:
        return money(obj.output_token_cost)

    @admin.display(description="total cost")
    def total_cost_full(self, obj: ModelCompletionBatch) -> SafeString:
        return money(obj.total_cost)

    # -- batch page ----------------------------------------------------------------------------

    @admin.display(description="progress")
    def progress_wide(self, obj: ModelCompletionBatch) -> SafeString:
        return progress_bar(obj, wide=True)

    @admin.display(description="request counts")
    def counts_table(self, obj: ModelCompletionBatch) -> SafeString:
        """The stored counts, each a link to the matching completions."""
        counts = counts_of(obj)
        rows = [
            ("total", counts["total"], None),
            ("succeeded", counts["succeeded"], CompletionStatus.COMPLETED),
            ("failed", counts["failed"], CompletionStatus.FAILED),
            ("cancelled", counts["cancelled"], CompletionStatus.FAILED),
            ("pending", counts["pending"], CompletionStatus.PENDING),
        ]
        return fragment(
            "counts.html",
            {
                "rows": [
                    (label, number(n), completion_list_url(obj.pk, status))
                    for label, n, status in rows
                ],
                "all_url": completion_list_url(obj.pk),
                "total": number(counts["total"]),
            },
        )

    @admin.display(description=f"failed completions (first {FAILED_PREVIEW})")
    def failed_preview(self, obj: ModelCompletionBatch) -> SafeString:
        failed = list(
            obj.completions.filter(status=CompletionStatus.FAILED)
            .order_by("pk")
            .only("pk", "batch_id", "batch_custom_id", "failure_error", "failure_reason")[
                : FAILED_PREVIEW + 1
            ]
        )
        change = "admin:raif_batches_modelcompletion_change"
        return fragment(
            "failed_preview.html",
            {
                "rows": [
                    (
                        reverse(change, args=[c.pk]),
                        c.batch_custom_id,
                        c.failure_error,
                        Truncator(c.failure_reason).chars(200),
                    )
                    for c in failed[:FAILED_PREVIEW]
                ],
                "more_url": completion_list_url(obj.pk, CompletionStatus.FAILED)
                if len(failed) > FAILED_PREVIEW
                else None,
            },
        )

    @admin.display(description="tokens")
    def token_totals(self, obj: ModelCompletionBatch) -> SafeString:
        """Token sums over the batch's completions: one aggregate query, whatever the size."""
        sums = obj.completions.aggregate(
            prompt=Sum("prompt_tokens"),
            completion=Sum("completion_tokens"),
            reasoning=Sum("reasoning_tokens"),
            cached=Sum("cached_tokens"),
            total=Sum("total_tokens"),
        )
        parts = [
            (label, number(sums[key] or 0))
            for key, label in (
                ("prompt", "prompt"),
                ("cached", "cached prompt"),
                ("completion", "completion"),
                ("reasoning", "reasoning"),
                ("total", "total"),
            )
        ]
        return fragment("tokens.html", {"parts": parts})

    @admin.display(description="timeline")
    def timeline(self, obj: ModelCompletionBatch) -> SafeString:
        """The batch's life in order, each step with the time since creation."""
        status = obj.get_status_display().lower()
        events: list[tuple[datetime | None, str]] = [
            (obj.created_at, "Created"),
            (obj.create_attempted_at, "Create call sent to the provider"),
            (obj.submitted_at, "Submitted"),
            (obj.started_at, "Started at the provider"),
            (
                obj.cancel_requested_at,
                f"Cancel requested ({obj.cancel_reason})"
                if obj.cancel_reason
                else "Cancel requested",
            ),
            (obj.ended_at, f"Ended: {status}" if obj.is_terminal else "Ended"),
            (obj.results_fetched_at, "Results fetched"),
            (obj.handler_called_at, "Completion handler ran"),
        ]
        past = sorted(
            ((moment, label) for moment, label in events if moment is not None),
            key=lambda item: item[0],
        )
        upcoming = []
        if obj.next_poll_at and not obj.is_terminal:
            upcoming.append((when(obj.next_poll_at), "Next status poll due"))
        if obj.expires_at and not obj.is_terminal:
            upcoming.append((when(obj.expires_at), "Expires at the provider"))
        return fragment(
            "timeline.html",
            {
                "past": [
                    (
                        moment.isoformat(),
                        when(moment),
                        label,
                        "" if moment == obj.created_at else f"+{elapsed(moment - obj.created_at)}",
                    )
                    for moment, label in past
                ],
                "upcoming": upcoming,
            },
        )

    @admin.display(description="provider response")
    def provider_response_pretty(self, obj: ModelCompletionBatch) -> SafeString:
        return pretty_json(obj.provider_response)

    @admin.display(description="retry of")
    def retry_of_link(self, obj: ModelCompletionBatch) -> SafeString:
        if obj.retry_of_id is None:
            return muted()
        return format_html(
            '<a href="{}">#{}</a>', batch_change_url(obj.retry_of_id), obj.retry_of_id
        )

    @admin.display(description="retried by")
    def retries_links(self, obj: ModelCompletionBatch) -> SafeString:
        retries = list(obj.retries.order_by("pk").values_list("pk", "status")[:20])
        if not retries:
            return muted()
        return format_html_join(
            ", ",
            '<a href="{}">#{}</a> ({})',
            ((batch_change_url(pk), pk, status) for pk, status in retries),
        )

    # -- the batch page's buttons (ObjectActionsMixin) ------------------------------------------

    def action_applies(self, name: str, obj: Any) -> bool:
        batch: ModelCompletionBatch = obj
        counts = counts_of(batch)
        awaiting_results = batch.is_terminal and batch.results_fetched_at is None
        applicable = {
            "submit_action": batch.status in (BatchStatus.PENDING, BatchStatus.SUBMITTING),
            "poll_action": batch.status in IN_FLIGHT_STATUSES
            or batch.status == BatchStatus.SUBMITTING
            or awaiting_results,
            "cancel_action": batch.status
            in (BatchStatus.PENDING, BatchStatus.SUBMITTED, BatchStatus.IN_PROGRESS),
            "harvest_action": awaiting_results,
            "retry_action": batch.results_fetched_at is not None
            and counts["failed"] + counts["cancelled"] > 0,
        }
        return applicable.get(name, True)
