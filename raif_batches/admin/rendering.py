"""Small renderers shared by the admin pages: badges, money, times, progress, JSON and text.

Rules: every value a provider or a model wrote is escaped (``format_html``, ``escaped`` in the
renderers a list calls for each row, or an autoescaping template), never marked safe; money is
shown by one formatter (``money``) everywhere, so a cost reads the same in both lists and on
both pages; the larger fragments are templates under ``raif_batches/admin/`` so that their
markup can be read (and overridden) as HTML.
"""

from __future__ import annotations

import html
import json
from datetime import datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any

from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import formats, timezone, translation
from django.utils.dates import MONTHS_3
from django.utils.html import format_html
from django.utils.http import urlencode
from django.utils.safestring import SafeString, mark_safe

from ..conf import configured_api_keys
from ..http import redact
from ..models import ModelCompletionBatch

COUNT_KEYS = ("total", "pending", "succeeded", "failed", "cancelled")
#: Digits after the point that money is shown with; the exact stored value is in the tooltip.
MONEY_PLACES = 6
MONEY_QUANTUM = Decimal(1).scaleb(-MONEY_PLACES)
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


def escaped(value: Any) -> str:
    """``value`` as text escaped for HTML, exactly as ``django.utils.html.escape`` does it.

    Both call ``html.escape``; this skips Django's lazy-string check and ``SafeString``, for the
    renderers that run for every cell of a 100-row list. Never for text already safe HTML: it
    would be escaped twice.
    """
    return html.escape(str(value))


def number(value: int) -> str:
    return formats.number_format(value, force_grouping=True)


def muted(text: str = "—") -> SafeString:
    return mark_safe(f'<span class="raif-muted">{escaped(text)}</span>')


def status_badge(status: str, label: str) -> SafeString:
    return mark_safe(
        f'<span class="raif-badge raif-status-{escaped(status.replace("_", "-"))}">'
        f"{escaped(label)}</span>"
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
    # Integers and the labels above only; built as a string, not a template or format_html:
    # this runs for each of a list's 100 rows.
    title = (
        f"{counts['succeeded']} succeeded, {counts['failed']} failed, "
        f"{counts['cancelled']} cancelled, {counts['pending']} pending of {total}"
    )
    bar = "".join(
        f'<span class="raif-progress-{key}" style="width: {share}%"></span>'
        for key, share in segments
    )
    return mark_safe(
        f'<div class="raif-progress-wrap{" raif-progress-wide" if wide else ""}" title="{title}">'
        f'<div class="raif-progress" role="img" aria-label="{title}">{bar}</div>'
        f'<span class="raif-progress-label">{escaped(number(done))} / {escaped(number(total))}'
        "</span></div>"
    )


def money(value: Decimal | None) -> SafeString:
    """USD to ``MONEY_PLACES`` digits, the exact stored value in the tooltip: the one format."""
    if value is None:
        return muted()
    exact = format(value.normalize(), "f")
    shown = format(value.quantize(MONEY_QUANTUM), "f")
    return mark_safe(f'<span class="raif-money" title="${exact}">${shown}</span>')


def short_time(value: datetime | None) -> SafeString:
    """A time short enough for three time columns beside the filters, the full one in the tooltip.

    The year is shown only when it is not this year's. Built by hand rather than by
    ``format_html`` and ``DateFormat``: this runs three times for each of a list's 100 rows, and
    those two were most of the list's rendering time. The parts are ours (digits, the zone's
    abbreviation, a translated month name) and are escaped all the same.
    """
    if value is None:
        return muted()
    zone = timezone.get_current_timezone()
    local = value.astimezone(zone)
    full = local.strftime("%Y-%m-%d %H:%M:%S %Z")
    day = f"{month_abbreviation(local.month)} {local.day}"
    if local.year != datetime.now(zone).year:
        day = f"{day}, {local.year}"
    return mark_safe(
        f'<time class="raif-time" datetime="{escaped(value.isoformat())}" title="{escaped(full)}">'
        f'{escaped(day)} <span class="raif-muted">{escaped(full[11:16])}</span></time>'
    )


def month_abbreviation(month: int) -> str:
    """The month's three-letter name in the active language, as ``DateFormat``'s ``M``."""
    return _month_abbreviations(translation.get_language())[month]


@lru_cache(maxsize=64)
def _month_abbreviations(language: str | None) -> dict[int, str]:
    # Evaluated with ``language`` active: the cache key is the language the names are in.
    return {month: str(name).title() for month, name in MONTHS_3.items()}


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
    return mark_safe(
        f'<span class="raif-clip" title="{escaped(flat)}">{escaped(flat[: width * 4])}</span>'
    )


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
