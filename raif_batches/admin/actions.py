"""The batch admin's actions, as module-level ``@admin.action`` functions.

Each runs the same code as the management commands (``raif_batches.polling`` and the
strategies) on the selected batches, reports what it did with counts (``ngettext``), and turns
a provider error into an error message with any key redacted, never a server error. Each needs
its own permission (``permissions=[...]``, checked by ``has_<name>_permission`` on the admin);
the batch page's buttons run these same functions on one batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseBase
from django.utils.html import format_html, format_html_join
from django.utils.translation import ngettext

from .. import exports
from ..api import retry_failed
from ..exceptions import BatchStateError, InvalidBatchRequest, ProviderAuthenticationError
from ..lifecycle import status
from ..polling import RunReport, harvest, poll, submit
from ..providers import get_strategy
from .changelists import BATCH_LIST_DEFERRED
from .rendering import batch_change_url, counts_of, safe_message

logger = logging.getLogger("raif_batches")

#: Problems listed one by one in an action's messages before they are summarised.
MAX_PROBLEMS_SHOWN = 5


def _run(
    modeladmin: Any, request: HttpRequest, verb: str, function: Callable[[], RunReport]
) -> RunReport | None:
    """Run a polling function; a failure becomes an error message instead of a 500."""
    try:
        return function()
    except Exception as error:
        logger.exception("Admin action %r failed", verb)
        modeladmin.message_user(request, f"Could not {verb}: {safe_message(error)}", messages.ERROR)
        return None


def _list_problems(
    modeladmin: Any, request: HttpRequest, problems: Iterable[str], level: int
) -> None:
    problems = list(problems)
    for problem in problems[:MAX_PROBLEMS_SHOWN]:
        modeladmin.message_user(request, safe_message(Exception(problem)), level)
    hidden = len(problems) - MAX_PROBLEMS_SHOWN
    if hidden > 0:
        modeladmin.message_user(
            request,
            ngettext(
                "… and %(count)d more (see the log).",
                "… and %(count)d more (see the log).",
                hidden,
            )
            % {"count": hidden},
            level,
        )


def _report_problems(modeladmin: Any, request: HttpRequest, report: RunReport) -> None:
    if report.fatal is not None:
        modeladmin.message_user(request, f"Stopped: {safe_message(report.fatal)}", messages.ERROR)
    _list_problems(modeladmin, request, report.errors, messages.ERROR)
    _list_problems(modeladmin, request, report.notes, messages.WARNING)
    if report.skipped_busy:
        modeladmin.message_user(
            request,
            ngettext(
                "%(count)d batch was skipped: another worker is busy with it.",
                "%(count)d batches were skipped: another worker is busy with them.",
                report.skipped_busy,
            )
            % {"count": report.skipped_busy},
            messages.WARNING,
        )


def _skipped(modeladmin: Any, request: HttpRequest, count: int, why: str) -> None:
    if count > 0:
        modeladmin.message_user(
            request,
            ngettext(
                "%(count)d batch skipped: %(why)s",
                "%(count)d batches skipped: %(why)s",
                count,
            )
            % {"count": count, "why": why},
            messages.WARNING,
        )


def _report_results(modeladmin: Any, request: HttpRequest, report: RunReport) -> None:
    finished = len(report.finished)
    if finished:
        modeladmin.message_user(
            request,
            ngettext(
                "Results fetched for %(count)d batch (%(results)d results stored).",
                "Results fetched for %(count)d batches (%(results)d results stored).",
                finished,
            )
            % {"count": finished, "results": report.results_applied},
            messages.SUCCESS,
        )


@admin.action(description="Submit to the provider", permissions=["submit"])
def submit_action(modeladmin: Any, request: HttpRequest, queryset: QuerySet[Any]) -> None:
    ids = list(queryset.values_list("pk", flat=True))
    report = _run(modeladmin, request, "submit", lambda: submit(ids))
    if report is None:
        return
    count = len(report.submitted)
    modeladmin.message_user(
        request,
        ngettext("%(count)d batch submitted.", "%(count)d batches submitted.", count)
        % {"count": count},
        messages.SUCCESS if count else messages.INFO,
    )
    _skipped(modeladmin, request, len(ids) - report.claimed, "only pending batches are submitted.")
    _report_problems(modeladmin, request, report)


@admin.action(description="Poll now", permissions=["poll"])
def poll_action(modeladmin: Any, request: HttpRequest, queryset: QuerySet[Any]) -> None:
    ids = list(queryset.values_list("pk", flat=True))
    report = _run(modeladmin, request, "poll", lambda: poll(ids, force=True))
    if report is None:
        return
    modeladmin.message_user(
        request,
        ngettext(
            "%(count)d batch refreshed from the provider.",
            "%(count)d batches refreshed from the provider.",
            report.refreshed,
        )
        % {"count": report.refreshed},
        messages.SUCCESS if report.refreshed or report.finished else messages.INFO,
    )
    _report_results(modeladmin, request, report)
    _skipped(
        modeladmin,
        request,
        len(ids) - report.claimed,
        "nothing to poll (not submitted yet, or finished with results fetched).",
    )
    _report_problems(modeladmin, request, report)


@admin.action(description="Cancel at the provider", permissions=["cancel"])
def cancel_action(modeladmin: Any, request: HttpRequest, queryset: QuerySet[Any]) -> None:
    strategies: dict[str, Any] = {}
    cancelled = 0
    skipped: list[str] = []
    errors: list[str] = []
    for batch in queryset.only("pk", "provider", "status").order_by("pk"):
        try:
            if batch.provider not in strategies:
                strategies[batch.provider] = get_strategy(batch.provider)
            status.cancel(strategies[batch.provider], batch, reason="admin")
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
    modeladmin.message_user(
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
    _list_problems(modeladmin, request, skipped, messages.WARNING)
    _list_problems(modeladmin, request, errors, messages.ERROR)


@admin.action(description="Fetch results", permissions=["harvest"])
def harvest_action(modeladmin: Any, request: HttpRequest, queryset: QuerySet[Any]) -> None:
    ids = list(queryset.values_list("pk", flat=True))
    report = _run(modeladmin, request, "fetch results", lambda: harvest(ids))
    if report is None:
        return
    if not report.finished:
        modeladmin.message_user(request, "No results fetched.", messages.INFO)
    _report_results(modeladmin, request, report)
    _skipped(
        modeladmin,
        request,
        len(ids) - report.claimed,
        "results are fetched once a batch has ended, and only once.",
    )
    _report_problems(modeladmin, request, report)


@admin.action(description="Retry failed requests in a new batch", permissions=["retry"])
def retry_action(modeladmin: Any, request: HttpRequest, queryset: QuerySet[Any]) -> None:
    created: list[tuple[int, int]] = []
    skipped = 0
    for batch in queryset.defer(*BATCH_LIST_DEFERRED).order_by("pk"):
        try:
            retry = retry_failed(batch)
        except InvalidBatchRequest:
            skipped += 1
            continue
        except Exception as error:
            logger.exception("Admin retry of batch %s failed", batch.pk)
            modeladmin.message_user(
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
        modeladmin.message_user(
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
        modeladmin.message_user(request, "No retry batch created.", messages.INFO)
    _skipped(modeladmin, request, skipped, "no failed completions to retry.")


@admin.action(description="Export results as JSONL", permissions=["export"])
def export_jsonl_action(
    modeladmin: Any, request: HttpRequest, queryset: QuerySet[Any]
) -> HttpResponseBase:
    return exports.jsonl_response(list(queryset.values_list("pk", flat=True)))


@admin.action(description="Export results as CSV", permissions=["export"])
def export_csv_action(
    modeladmin: Any, request: HttpRequest, queryset: QuerySet[Any]
) -> HttpResponseBase:
    return exports.csv_response(list(queryset.values_list("pk", flat=True)))


#: Every action of the batch admin, in the order the list and the batch page offer them.
BATCH_ACTIONS = (
    submit_action,
    poll_action,
    cancel_action,
    harvest_action,
    retry_action,
    export_jsonl_action,
    export_csv_action,
)
