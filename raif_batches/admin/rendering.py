"""Small renderers shared by the admin pages: badges, money, times, progress, JSON and text.

Rules: every value a provider or a model wrote is escaped (``format_html`` or an autoescaping
template), never marked safe; money is shown by one formatter (``money``) everywhere, so a cost
reads the same in both lists and on both pages; the larger fragments are templates under
``raif_batches/admin/`` so that their markup can be read (and overridden) as HTML.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import formats, timezone
from django.utils.dateformat import DateFormat
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import SafeString, mark_safe

from ..conf import configured_api_keys
from ..http import redact
from ..models import ModelCompletionBatch

COUNT_KEYS = ("total", "pending", "succeeded", "failed", "cancelled")
#: Digits after the point that money is shown with; the exact stored value is in the tooltip.
MONEY_PLACES = 6
CSS = {"all": ("raif_batches/admin.css",)}
TEMPLATES = "raif_batches/admin/"


def fragment(name: str, context: dict[str, Any]) -> SafeString:
    """A fragment template rendered with autoescaping; the result is safe HTML by construction."""
    return mark_safe(render_to_string(TEMPLATES + name, context))


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


def muted(text: str = "—") -> SafeString:
    return format_html('<span class="raif-muted">{}</span>', text)


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
    # format_html, not a template: this runs for each of a list's 100 rows.
    bar = format_html_join(
        "", '<span class="raif-progress-{}" style="width: {}%"></span>', segments
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


def money(value: Decimal | None) -> SafeString:
    """USD to ``MONEY_PLACES`` digits, the exact stored value in the tooltip: the one format."""
    if value is None:
        return muted()
    exact = format(value.normalize(), "f")
    shown = format(value.quantize(Decimal(1).scaleb(-MONEY_PLACES)), "f")
    return format_html('<span class="raif-money" title="${}">${}</span>', exact, shown)


def short_time(value: datetime | None) -> SafeString:
    if value is None:
        return muted()
    local = timezone.localtime(value)
    # Short enough for three time columns beside the filters; the year only when it differs.
    # DateFormat directly: formats.date_format looks each format up as a setting name first,
    # which was most of a 100-row list's rendering time (three times per row).
    day = "M j" if local.year == timezone.localtime().year else "M j, Y"
    return format_html(
        '<time class="raif-time" datetime="{}" title="{}">{} <span class="raif-muted">{}</span>'
        "</time>",
        value.isoformat(),
        local.strftime("%Y-%m-%d %H:%M:%S %Z"),
        DateFormat(local).format(day),  # the month's name, translated
        local.strftime("%H:%M"),
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
        return muted()
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)
    return format_html('<pre class="raif-pre">{}</pre>', text)


def pretty_text(value: str) -> SafeString:
    if not value:
        return muted()
    return format_html('<pre class="raif-pre raif-wrap">{}</pre>', value)


def clipped(text: str, width: int = 80) -> SafeString:
    """One line cut to ``width`` characters by CSS, the whole text in the tooltip."""
    flat = " ".join(text.split())
    if not flat:
        return muted()
    return format_html('<span class="raif-clip" title="{}">{}</span>', flat, flat[: width * 4])


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
        keys = configured_api_keys()
    except Exception:  # a broken setting must not hide the error being reported
        keys = []
    for key in keys:
        text = redact(text, key)
    return text
