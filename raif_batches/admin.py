"""The Django admin for batches and completions: watch them, and steer them safely.

Design rules, each for a reason:

- **Pages cost a fixed number of queries.** A batch can hold 50,000 completions and a site
  thousands of batches, so nothing here runs a query per row: progress comes from the stored
  ``request_counts``, the batch page links to the filtered completion list instead of an
  inline, and only a short preview of failed completions is loaded.
- **The machine owns provider state.** Everything the provider or a poller writes is
  read-only; completions are view-only, and neither batches nor completions are added here
  (a batch is created from code, with its requests, by ``raif_batches.create_batch``).
- **Every action is a permission.** Submitting, polling, cancelling, fetching results,
  retrying and exporting each have their own permission (``Meta.permissions``); an action the
  user may not run is neither offered in the list nor on the batch page.
- **Actions report, never crash.** Each runs the same code as the management commands
  (``raif_batches.polling`` and the strategies), reports what it did with counts, and shows a
  provider error as an error message (with any key redacted), never as a server error.
- **Model output is text.** Answers, messages and provider payloads are escaped and shown in
  ``<pre>``; nothing a model wrote is ever marked safe.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.db.models import Model, QuerySet, Sum
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseNotAllowed,
    HttpResponseRedirect,
)
from django.urls import URLPattern, path, reverse
from django.utils import formats, timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import SafeString
from django.utils.text import Truncator
from django.utils.translation import ngettext

from . import exports
from .api import retry_failed
from .conf import get_setting
from .exceptions import BatchStateError, InvalidBatchRequest, ProviderAuthenticationError
from .http import redact
from .models import (
    IN_FLIGHT_STATUSES,
    BatchStatus,
    CompletionStatus,
    ModelCompletion,
    ModelCompletionBatch,
)
from .polling import RunReport, harvest, poll, submit
from .providers import get_strategy

logger = logging.getLogger("raif_batches")

COUNT_KEYS = ("total", "pending", "succeeded", "failed", "cancelled")
#: Failed completions previewed on a batch page; the rest are one click away.
FAILED_PREVIEW = 20
#: Problems listed one by one in an action's messages before they are summarised.
MAX_PROBLEMS_SHOWN = 5
#: Columns the batch list never shows, left in the database so 100 rows stay small.
LIST_DEFERRED = ("provider_response", "metadata", "failure_reason", "handler_error")
#: Columns the completion list never shows: the request and the full provider payload.
COMPLETION_LIST_DEFERRED = (
    "messages",
    "response_payload",
    "response_tool_calls",
    "response_json",
    "response_format",
    "tools",
    "tool_choice",
    "extra_body",
    "failure_reason",
)
CSS = {"all": ("raif_batches/admin.css",)}


# --- small renderers --------------------------------------------------------------------------


def counts_of(batch: ModelCompletionBatch) -> dict[str, int]:
    """The batch's stored counts, with every key present and an integer, whatever was stored."""
    stored = batch.request_counts if isinstance(batch.request_counts, dict) else {}
    counts: dict[str, int] = {}
    for key in COUNT_KEYS:
        try:
            counts[key] = max(int(stored.get(key) or 0), 0)
        except (TypeError, ValueError):
            counts[key] = 0
    return counts


def number(value: int) -> str:
    return formats.number_format(value, force_grouping=True)


def status_badge(status: str, label: str) -> SafeString:
    return format_html(
        '<span class="raif-badge raif-status-{}">{}</span>', status.replace("_", "-"), label
    )


def progress_bar(batch: ModelCompletionBatch, *, wide: bool = False) -> SafeString:
    """Succeeded, failed and cancelled shares of the total as one bar, from the stored counts."""
    counts = counts_of(batch)
    total = counts["total"]
    done = counts["succeeded"] + counts["failed"] + counts["cancelled"]
    segments = []
    for key in ("succeeded", "failed", "cancelled"):
        share = 100.0 * counts[key] / total if total else 0.0
        if share:
            segments.append((key, f"{share:.2f}"))
    title = (
        f"{counts['succeeded']} succeeded, {counts['failed']} failed, "
        f"{counts['cancelled']} cancelled, {counts['pending']} pending of {total}"
    )
    bar = format_html_join(
        "",
        '<span class="raif-progress-{}" style="width: {}%"></span>',
        segments,
    )
    return format_html(
        '<div class="raif-progress-wrap{}" title="{}"><div class="raif-progress" role="img" '
        'aria-label="{}">{}</div><span class="raif-progress-label">{} / {}</span></div>',
        " raif-progress-wide" if wide else "",
        title,
        title,
        bar,
        number(done),
        number(total),
    )


def money(value: Decimal | None, places: int | None = None) -> SafeString:
    """USD with every stored digit (or ``places`` of them, the exact value in the tooltip)."""
    if value is None:
        return format_html('<span class="raif-muted">{}</span>', "—")
    exact = format(value.normalize(), "f")
    shown = exact if places is None else format(value.quantize(Decimal(1).scaleb(-places)), "f")
    return format_html('<span class="raif-money" title="${}">${}</span>', exact, shown)


def short_time(value: datetime | None) -> SafeString:
    if value is None:
        return format_html('<span class="raif-muted">{}</span>', "—")
    local = timezone.localtime(value)
    # Short enough for three time columns beside the filters; the year only when it differs.
    day = "M j" if local.year == timezone.localtime().year else "M j, Y"
    return format_html(
        '<time class="raif-time" datetime="{}" title="{}">{} <span class="raif-muted">{}</span>'
        "</time>",
        value.isoformat(),
        formats.date_format(local, "Y-m-d H:i:s T"),
        formats.date_format(local, day),
        formats.date_format(local, "H:i"),
    )


def elapsed(delta: timedelta) -> str:
    """A duration to the second, as an operator reads it: "4 s", "3 min 5 s", "2 d 1 h"."""
    seconds = max(int(delta.total_seconds()), 0)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "min"), (seconds, "s")]
    shown = [f"{n} {unit}" for n, unit in parts if n]
    return " ".join(shown[:2]) or "0 s"


def pretty_json(value: Any) -> SafeString:
    """JSON indented for reading, escaped: the content is the provider's or a model's, not ours."""
    if value is None or value == "":
        return format_html('<span class="raif-muted">{}</span>', "—")
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)
    return format_html('<pre class="raif-pre">{}</pre>', text)


def pretty_text(value: str) -> SafeString:
    if not value:
        return format_html('<span class="raif-muted">{}</span>', "—")
    return format_html('<pre class="raif-pre raif-wrap">{}</pre>', value)


def when(value: datetime | None) -> str:
    if value is None:
        return "—"
    return formats.date_format(timezone.localtime(value), "Y-m-d H:i:s")


def completion_list_url(batch_pk: int, status: str | None = None) -> str:
    query: dict[str, Any] = {"batch": batch_pk}
    if status:
        query["status__exact"] = status
    return reverse("admin:raif_batches_modelcompletion_changelist") + "?" + urlencode(query)


def batch_change_url(batch_pk: int) -> str:
    return reverse("admin:raif_batches_modelcompletionbatch_change", args=[batch_pk])


def fieldset_names(fieldsets: Any) -> list[str]:
    """Every field named in ``fieldsets``: the read-only list is derived, so it cannot drift."""
    names: list[str] = []
    for _, options in fieldsets:
        for entry in options["fields"]:
            names.extend([entry] if isinstance(entry, str) else entry)
    return names


def safe_message(error: BaseException) -> str:
    """One line for an operator, with the configured API key redacted should it ever appear."""
    text = " ".join(str(getattr(error, "one_line", None) or error).split()) or type(error).__name__
    try:
        key = get_setting("XAI_API_KEY")
    except Exception:  # a broken setting must not hide the error being reported
        key = None
    return redact(text, str(key) if key else None)


# --- filters ----------------------------------------------------------------------------------


class BatchFilter(admin.SimpleListFilter):
    """Completions of one batch; lists only the selected batch, never all of them.

    A related-field filter would load every batch into the sidebar; this one shows the batch
    the operator came from (the batch page links here) and a way back to all completions.
    """

    title = "batch"
    parameter_name = "batch"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        value = self.value()
        if not value or not value.isdigit():
            return []
        batch = ModelCompletionBatch.objects.filter(pk=int(value)).only("pk", "name").first()
        if batch is None:
            return []
        return [(str(batch.pk), f"#{batch.pk} {batch.name}".strip())]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value and value.isdigit():
            return queryset.filter(batch_id=int(value))
        return queryset


class BatchChangeList(ChangeList):
    """Leaves the large JSON and text columns in the database when listing batches."""

    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> QuerySet[Any]:
        return super().get_queryset(request, exclude_parameters).defer(*LIST_DEFERRED)


class CompletionChangeList(ChangeList):
    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> QuerySet[Any]:
        return super().get_queryset(request, exclude_parameters).defer(*COMPLETION_LIST_DEFERRED)


# --- batches ----------------------------------------------------------------------------------


@admin.register(ModelCompletionBatch)
class ModelCompletionBatchAdmin(admin.ModelAdmin):
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
    list_filter = ("status", "provider", "model", ("created_at", admin.DateFieldListFilter))
    search_fields = ("name", "provider_batch_id", "provider_batch_name")
    search_help_text = "Search by name, provider batch id or provider batch name."
    list_per_page = 100
    actions = (
        "submit_action",
        "poll_action",
        "cancel_action",
        "harvest_action",
        "retry_action",
        "export_jsonl_action",
        "export_csv_action",
    )
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

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [
            field for field in fieldset_names(self.fieldsets) if field not in self.editable_fields
        ]

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return BatchChangeList

    def get_deleted_objects(
        self, objs: Any, request: HttpRequest
    ) -> tuple[list[Any], dict[str, int], set[str], list[Any]]:
        """Summarise instead of listing every completion that a delete would take with it.

        Django's default collects and renders each related row: 50,000 completions per batch
        would make the confirmation page itself the outage. The counts come from the stored
        ``request_counts``.
        """
        batches = list(objs)
        completions = sum(counts_of(batch)["total"] for batch in batches)
        summary = [
            format_html(
                "{}: {} ({})",
                "Model completion batch",
                str(batch),
                ngettext("%(n)s completion", "%(n)s completions", counts_of(batch)["total"])
                % {"n": number(counts_of(batch)["total"])},
            )
            for batch in batches
        ]
        model_count = {
            str(ModelCompletionBatch._meta.verbose_name_plural): len(batches),
            str(ModelCompletion._meta.verbose_name_plural): completions,
        }
        perms_needed: set[str] = set()
        if not self.has_delete_permission(request):
            perms_needed.add(str(ModelCompletionBatch._meta.verbose_name))
        return summary, model_count, perms_needed, []

    # -- list columns --------------------------------------------------------------------------

    @admin.display(description="batch", ordering="pk")
    def display_name(self, obj: ModelCompletionBatch) -> str:
        return f"#{obj.pk} {obj.name or obj.provider_batch_name}"

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: ModelCompletionBatch) -> SafeString:
        return status_badge(obj.status, obj.get_status_display())

    @admin.display(description="provider / model", ordering="model")
    def provider_model(self, obj: ModelCompletionBatch) -> SafeString:
        # One column for both keeps the list's times in view beside the filter sidebar.
        return format_html('<span class="raif-muted">{} /</span> {}', obj.provider, obj.model)

    @admin.display(description="progress")
    def progress(self, obj: ModelCompletionBatch) -> SafeString:
        return progress_bar(obj)

    @admin.display(description="cost", ordering="total_cost")
    def cost(self, obj: ModelCompletionBatch) -> SafeString:
        return money(obj.total_cost, places=6)

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: ModelCompletionBatch) -> SafeString:
        return short_time(obj.created_at)

    @admin.display(description="submitted", ordering="submitted_at")
    def submitted(self, obj: ModelCompletionBatch) -> SafeString:
        return short_time(obj.submitted_at)

    @admin.display(description="ended", ordering="ended_at")
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
        cells = format_html_join(
            "",
            '<tr><th class="raif-count-{}">{}</th><td><a href="{}">{}</a></td></tr>',
            (
                (label, label, completion_list_url(obj.pk, status), number(n))
                for label, n, status in rows
            ),
        )
        return format_html(
            '<table class="raif-counts">{}</table><p class="raif-help"><a class="raif-completions-'
            'link" href="{}">View all {} completions of this batch</a> (counts as last reported '
            "by the provider; cancelled lines are stored as failed completions).</p>",
            cells,
            completion_list_url(obj.pk),
            number(counts["total"]),
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
        if not failed:
            return format_html('<span class="raif-muted">{}</span>', "None.")
        change = "admin:raif_batches_modelcompletion_change"
        rows = format_html_join(
            "",
            '<tr><td><a href="{}">{}</a></td><td>{}</td><td>{}</td></tr>',
            (
                (
                    reverse(change, args=[c.pk]),
                    c.batch_custom_id,
                    c.failure_error,
                    Truncator(c.failure_reason).chars(200),
                )
                for c in failed[:FAILED_PREVIEW]
            ),
        )
        more = ""
        if len(failed) > FAILED_PREVIEW:
            more = format_html(
                '<p><a href="{}">All failed completions…</a></p>',
                completion_list_url(obj.pk, CompletionStatus.FAILED),
            )
        return format_html(
            '<table class="raif-failed"><thead><tr><th>custom id</th><th>error</th>'
            "<th>reason</th></tr></thead><tbody>{}</tbody></table>{}",
            rows,
            more,
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
        return format_html(
            '<dl class="raif-tokens">{}</dl>',
            format_html_join("", "<dt>{}</dt><dd>{}</dd>", parts),
        )

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
        items = format_html_join(
            "",
            '<li><time datetime="{}">{}</time> <strong>{}</strong> <span class="raif-muted">{}'
            "</span></li>",
            (
                (
                    moment.isoformat(),
                    when(moment),
                    label,
                    "" if moment == obj.created_at else f"+{elapsed(moment - obj.created_at)}",
                )
                for moment, label in past
            ),
        )
        upcoming = []
        if obj.next_poll_at and not obj.is_terminal:
            upcoming.append((when(obj.next_poll_at), "Next status poll due"))
        if obj.expires_at and not obj.is_terminal:
            upcoming.append((when(obj.expires_at), "Expires at the provider"))
        later = format_html_join(
            "",
            '<li class="raif-upcoming">{} <strong>{}</strong></li>',
            upcoming,
        )
        return format_html('<ol class="raif-timeline">{}{}</ol>', items, later)

    @admin.display(description="provider response")
    def provider_response_pretty(self, obj: ModelCompletionBatch) -> SafeString:
        return pretty_json(obj.provider_response)

    @admin.display(description="retry of")
    def retry_of_link(self, obj: ModelCompletionBatch) -> SafeString:
        if obj.retry_of_id is None:
            return format_html('<span class="raif-muted">{}</span>', "—")
        return format_html(
            '<a href="{}">#{}</a>', batch_change_url(obj.retry_of_id), obj.retry_of_id
        )

    @admin.display(description="retried by")
    def retries_links(self, obj: ModelCompletionBatch) -> SafeString:
        retries = list(obj.retries.order_by("pk").values_list("pk", "status")[:20])
        if not retries:
            return format_html('<span class="raif-muted">{}</span>', "—")
        return format_html_join(
            ", ",
            '<a href="{}">#{}</a> ({})',
            ((batch_change_url(pk), pk, status) for pk, status in retries),
        )

    # -- actions on the batch page -------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        extra = [
            path(
                "<path:object_id>/run/<str:action>/",
                self.admin_site.admin_view(self.run_action_view),
                name="{}_{}_run".format(*info),
            )
        ]
        return extra + super().get_urls()

    def applicable_actions(self, request: HttpRequest, batch: ModelCompletionBatch) -> list[str]:
        """The permitted actions that make sense for this batch now, for its page's buttons."""
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
            "export_jsonl_action": True,
            "export_csv_action": True,
        }
        permitted = self.permitted_actions(request)
        return [name for name in permitted if applicable[name]]

    def permitted_actions(self, request: HttpRequest) -> dict[str, tuple[Callable[..., Any], str]]:
        """This admin's own actions that the user may run: name -> (function, label)."""
        offered = self.get_actions(request)
        permitted: dict[str, tuple[Callable[..., Any], str]] = {}
        for name in self.actions or ():
            entry = offered.get(name) if isinstance(name, str) else None
            if entry is not None:
                permitted[name] = (entry[0], str(entry[2]))
        return permitted

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        extra_context = dict(extra_context or {})
        batch = self.get_object(request, unquote(object_id))
        if batch is not None:
            permitted = self.permitted_actions(request)
            extra_context["raif_actions"] = [
                {
                    "name": name,
                    "label": permitted[name][1],
                    "url": reverse(
                        "admin:raif_batches_modelcompletionbatch_run", args=[batch.pk, name]
                    ),
                    "danger": name == "cancel_action",
                }
                for name in self.applicable_actions(request, batch)
            ]
        return super().change_view(request, object_id, form_url, extra_context)

    def get_object(
        self, request: HttpRequest, object_id: str, from_field: str | None = None
    ) -> Any:
        # change_view asks twice (for the buttons, then for the form): read the row once.
        cache: dict[str, Any] = request.__dict__.setdefault("_raif_batch_cache", {})
        key = f"{from_field}:{object_id}"
        if key not in cache:
            cache[key] = super().get_object(request, object_id, from_field)
        return cache[key]

    def run_action_view(
        self, request: HttpRequest, object_id: str, action: str
    ) -> HttpResponseBase:
        """Run one admin action on one batch from its page, then return to the page."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        batch = self.get_object(request, unquote(object_id))
        if batch is None or not self.has_view_or_change_permission(request, batch):
            raise PermissionDenied
        permitted = self.permitted_actions(request)
        if action not in permitted:
            raise PermissionDenied
        function = permitted[action][0]
        response = function(self, request, self.get_queryset(request).filter(pk=batch.pk))
        if isinstance(response, HttpResponseBase):
            return response
        return HttpResponseRedirect(batch_change_url(batch.pk))

    # -- actions -------------------------------------------------------------------------------

    def _run(
        self, request: HttpRequest, verb: str, function: Callable[[], RunReport]
    ) -> RunReport | None:
        """Run a polling function; a failure becomes an error message instead of a 500."""
        try:
            return function()
        except Exception as error:
            logger.exception("Admin action %r failed", verb)
            self.message_user(request, f"Could not {verb}: {safe_message(error)}", messages.ERROR)
            return None

    def _report_problems(self, request: HttpRequest, report: RunReport) -> None:
        if report.fatal is not None:
            self.message_user(request, f"Stopped: {safe_message(report.fatal)}", messages.ERROR)
        self._list_problems(request, report.errors, messages.ERROR)
        self._list_problems(request, report.notes, messages.WARNING)
        if report.skipped_busy:
            self.message_user(
                request,
                ngettext(
                    "%(count)d batch was skipped: another worker is busy with it.",
                    "%(count)d batches were skipped: another worker is busy with them.",
                    report.skipped_busy,
                )
                % {"count": report.skipped_busy},
                messages.WARNING,
            )

    def _list_problems(self, request: HttpRequest, problems: Iterable[str], level: int) -> None:
        problems = list(problems)
        for problem in problems[:MAX_PROBLEMS_SHOWN]:
            self.message_user(request, safe_message(Exception(problem)), level)
        hidden = len(problems) - MAX_PROBLEMS_SHOWN
        if hidden > 0:
            self.message_user(
                request,
                ngettext(
                    "… and %(count)d more (see the log).",
                    "… and %(count)d more (see the log).",
                    hidden,
                )
                % {"count": hidden},
                level,
            )

    def _skipped(self, request: HttpRequest, count: int, why: str) -> None:
        if count > 0:
            self.message_user(
                request,
                ngettext(
                    "%(count)d batch skipped: %(why)s",
                    "%(count)d batches skipped: %(why)s",
                    count,
                )
                % {"count": count, "why": why},
                messages.WARNING,
            )

    @admin.action(description="Submit to the provider", permissions=["submit"])
    def submit_action(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        report = self._run(request, "submit", lambda: submit(ids))
        if report is None:
            return
        count = len(report.submitted)
        self.message_user(
            request,
            ngettext("%(count)d batch submitted.", "%(count)d batches submitted.", count)
            % {"count": count},
            messages.SUCCESS if count else messages.INFO,
        )
        self._skipped(request, len(ids) - report.claimed, "only pending batches are submitted.")
        self._report_problems(request, report)

    @admin.action(description="Poll now", permissions=["poll"])
    def poll_action(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        report = self._run(request, "poll", lambda: poll(ids, force=True))
        if report is None:
            return
        self.message_user(
            request,
            ngettext(
                "%(count)d batch refreshed from the provider.",
                "%(count)d batches refreshed from the provider.",
                report.refreshed,
            )
            % {"count": report.refreshed},
            messages.SUCCESS if report.refreshed or report.finished else messages.INFO,
        )
        self._report_results(request, report)
        self._skipped(
            request,
            len(ids) - report.claimed,
            "nothing to poll (not submitted yet, or finished with results fetched).",
        )
        self._report_problems(request, report)

    def _report_results(self, request: HttpRequest, report: RunReport) -> None:
        finished = len(report.finished)
        if finished:
            self.message_user(
                request,
                ngettext(
                    "Results fetched for %(count)d batch (%(results)d results stored).",
                    "Results fetched for %(count)d batches (%(results)d results stored).",
                    finished,
                )
                % {"count": finished, "results": report.results_applied},
                messages.SUCCESS,
            )

    @admin.action(description="Cancel at the provider", permissions=["cancel"])
    def cancel_action(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        strategies: dict[str, Any] = {}
        cancelled = 0
        skipped: list[str] = []
        errors: list[str] = []
        for batch in queryset.only("pk", "provider", "status").order_by("pk"):
            try:
                if batch.provider not in strategies:
                    strategies[batch.provider] = get_strategy(batch.provider)
                strategies[batch.provider].cancel(batch, reason="admin")
            except BatchStateError as error:
                skipped.append(str(error))
            except ProviderAuthenticationError as error:
                errors.append(f"batch {batch.pk}: {safe_message(error)}")
                break  # the key is rejected: every other batch would fail the same way
            except Exception as error:
                logger.exception("Admin cancel of batch %s failed", batch.pk)
                errors.append(f"batch {batch.pk}: {safe_message(error)}")
            else:
                cancelled += 1
        self.message_user(
            request,
            ngettext(
                "Cancellation requested for %(count)d batch; results already produced will "
                "still be fetched.",
                "Cancellation requested for %(count)d batches; results already produced will "
                "still be fetched.",
                cancelled,
            )
            % {"count": cancelled},
            messages.SUCCESS if cancelled else messages.INFO,
        )
        self._list_problems(request, skipped, messages.WARNING)
        self._list_problems(request, errors, messages.ERROR)

    @admin.action(description="Fetch results", permissions=["harvest"])
    def harvest_action(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        ids = list(queryset.values_list("pk", flat=True))
        report = self._run(request, "fetch results", lambda: harvest(ids))
        if report is None:
            return
        if not report.finished:
            self.message_user(request, "No results fetched.", messages.INFO)
        self._report_results(request, report)
        self._skipped(
            request,
            len(ids) - report.claimed,
            "results are fetched once a batch has ended, and only once.",
        )
        self._report_problems(request, report)

    @admin.action(description="Retry failed requests in a new batch", permissions=["retry"])
    def retry_action(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        created: list[tuple[int, int]] = []
        skipped = 0
        for batch in queryset.defer(*LIST_DEFERRED).order_by("pk"):
            try:
                retry = retry_failed(batch)
            except InvalidBatchRequest:
                skipped += 1
                continue
            except Exception as error:
                logger.exception("Admin retry of batch %s failed", batch.pk)
                self.message_user(
                    request, f"Batch {batch.pk}: {safe_message(error)}", messages.ERROR
                )
                continue
            created.append((retry.pk, counts_of(retry)["total"]))
        if created:
            links = format_html_join(
                ", ",
                '<a href="{}">#{}</a> ({} requests)',
                ((batch_change_url(pk), pk, total) for pk, total in created),
            )
            self.message_user(
                request,
                format_html(
                    "{} {}. Submit them when ready.",
                    ngettext(
                        "%(count)d retry batch created:",
                        "%(count)d retry batches created:",
                        len(created),
                    )
                    % {"count": len(created)},
                    links,
                ),
                messages.SUCCESS,
            )
        else:
            self.message_user(request, "No retry batch created.", messages.INFO)
        self._skipped(request, skipped, "no failed completions to retry.")

    @admin.action(description="Export results as JSONL", permissions=["export"])
    def export_jsonl_action(
        self, request: HttpRequest, queryset: QuerySet[Any]
    ) -> HttpResponseBase:
        return exports.jsonl_response(list(queryset.values_list("pk", flat=True)))

    @admin.action(description="Export results as CSV", permissions=["export"])
    def export_csv_action(self, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponseBase:
        return exports.csv_response(list(queryset.values_list("pk", flat=True)))


# --- completions ------------------------------------------------------------------------------


@admin.register(ModelCompletion)
class ModelCompletionAdmin(admin.ModelAdmin):
    """View-only: a completion is a request the caller made and the answer the provider gave."""

    list_display = (
        "batch_custom_id",
        "batch_link",
        "status_badge",
        "prompt_tokens",
        "completion_tokens",
        "total_tokens",
        "total_cost",
        "finish_reason",
        "answer_preview",
        "completed_at",
    )
    list_filter = (BatchFilter, "status", ("completed_at", admin.DateFieldListFilter))
    search_fields = ("batch_custom_id",)
    search_help_text = "Search by custom id."
    list_per_page = 100
    # The unfiltered total would count every completion of every batch on each page view.
    show_full_result_count = False
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
                    "prompt_token_cost",
                    "output_token_cost",
                    "total_cost",
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

    @admin.display(description="batch", ordering="batch_id")
    def batch_link(self, obj: ModelCompletion) -> SafeString:
        # The id alone: the batch's name would cost a join on every row.
        return format_html('<a href="{}">#{}</a>', batch_change_url(obj.batch_id), obj.batch_id)

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj: ModelCompletion) -> SafeString:
        return status_badge(obj.status, obj.get_status_display())

    @admin.display(description="answer")
    def answer_preview(self, obj: ModelCompletion) -> str:
        text = obj.raw_response or obj.failure_error
        return Truncator(" ".join(text.split())).chars(80)

    @admin.display(description="source")
    def source_link(self, obj: ModelCompletion) -> SafeString | str:
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
    def messages_pretty(self, obj: ModelCompletion) -> SafeString:
        return pretty_json(obj.messages)

    @admin.display(description="response format")
    def response_format_pretty(self, obj: ModelCompletion) -> SafeString:
        return pretty_json(obj.response_format)

    @admin.display(description="tools")
    def tools_pretty(self, obj: ModelCompletion) -> SafeString:
        return pretty_json(obj.tools)

    @admin.display(description="tool choice")
    def tool_choice_pretty(self, obj: ModelCompletion) -> SafeString:
        return pretty_json(obj.tool_choice)

    @admin.display(description="other parameters")
    def extra_body_pretty(self, obj: ModelCompletion) -> SafeString:
        return pretty_json(obj.extra_body or None)

    @admin.display(description="answer")
    def answer_pretty(self, obj: ModelCompletion) -> SafeString:
        return pretty_text(obj.raw_response)

    @admin.display(description="answer as JSON")
    def response_json_pretty(self, obj: ModelCompletion) -> SafeString:
        return pretty_json(obj.response_json)

    @admin.display(description="tool calls")
    def response_tool_calls_pretty(self, obj: ModelCompletion) -> SafeString:
        return pretty_json(obj.response_tool_calls)

    @admin.display(description="failure reason")
    def failure_reason_pretty(self, obj: ModelCompletion) -> SafeString:
        return pretty_text(obj.failure_reason)

    @admin.display(description="provider payload")
    def response_payload_pretty(self, obj: ModelCompletion) -> SafeString:
        return pretty_json(obj.response_payload)
