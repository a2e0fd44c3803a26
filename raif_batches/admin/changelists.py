"""Change lists whose cost does not grow with the table: bounded counts, few loaded columns.

A change list page runs two expensive statements by default: ``COUNT(*)`` of the filtered rows
(and a second of all rows) and ``OFFSET`` pagination. At 5,000,000 completions an exact count
alone is a sequential scan of seconds. So:

- **The unfiltered list shows an estimate** on PostgreSQL (the planner's ``reltuples``, kept
  fresh by autovacuum), read from the catalogue in well under a millisecond, once the table
  holds more rows than the list would count anyway.
- **A filtered list counts at most ``count_limit`` rows** (``SELECT COUNT(*) FROM (… LIMIT
  n)``): one batch's completions (a batch holds at most ``BATCH_COUNT_LIMIT``) are counted
  exactly; across batches the count stops at ``WIDE_COUNT_LIMIT`` and reads "10,000+".
- **Pages stop where the count stops**: a deep ``OFFSET`` reads every skipped row, so the pages
  offered end with the counted rows; to go further, filter (by batch, by status).
- **Deep pages read ids first**: past ``KEYS_FIRST_AFTER`` rows, a page's ids are read with
  ``OFFSET`` from the index alone (an index-only scan), then its rows by id; an ``OFFSET`` over
  whole rows would fetch every skipped row from the table.
- **Large columns stay in the database**: the lists defer payloads and request JSON.
"""

from __future__ import annotations

import math
from typing import Any

from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.functional import cached_property

#: Columns the batch list never shows, left in the database so 100 rows stay small.
BATCH_LIST_DEFERRED = ("provider_response", "metadata", "failure_reason", "handler_error")
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
#: Rows counted at most within one batch: the largest batch any provider accepts.
BATCH_COUNT_LIMIT = 100_000
#: Rows counted at most for any other list (100 pages of 100).
WIDE_COUNT_LIMIT = 10_000
#: Offset from which a page reads its ids first, then its rows.
KEYS_FIRST_AFTER = 1_000


def estimated_rows(queryset: QuerySet[Any]) -> int | None:
    """The planner's row estimate of the queryset's table, or None where there is none."""
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
            [queryset.model._meta.db_table],
        )
        row = cursor.fetchone()
    # -1 means never analysed: no estimate, count instead.
    return int(row[0]) if row and row[0] is not None and row[0] >= 0 else None


class BoundedCountPaginator(Paginator):
    """A paginator that never counts more than ``count_limit`` rows nor pages past them.

    ``estimated`` is True when ``count`` is the planner's estimate of an unfiltered table,
    ``capped`` when the counting stopped at the limit; the pagination template says so.
    """

    def __init__(self, *args: Any, count_limit: int = WIDE_COUNT_LIMIT, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.count_limit = count_limit
        self.estimated = False
        self.capped = False

    @property
    def queryset(self) -> QuerySet[Any]:
        return self.object_list  # type: ignore[return-value]  # the admin passes a QuerySet

    @cached_property
    def count(self) -> int:
        queryset = self.queryset
        if not queryset.query.where:
            estimate = estimated_rows(queryset)
            if estimate is not None and estimate > self.count_limit:
                self.estimated = True
                return estimate
        counted = queryset.order_by()[: self.count_limit + 1].count()
        if counted > self.count_limit:
            self.capped = True
            return self.count_limit
        return counted

    def page(self, number: Any) -> Any:
        page = super().page(number)
        bottom = (page.number - 1) * self.per_page
        if bottom >= KEYS_FIRST_AFTER and isinstance(page.object_list, QuerySet):
            ids = list(self.queryset.values_list("pk", flat=True)[bottom : bottom + self.per_page])
            page.object_list = self.queryset.filter(pk__in=ids)
        return page

    @cached_property
    def num_pages(self) -> int:
        rows = min(self.count, self.count_limit)
        if rows == 0 and not self.allow_empty_first_page:
            return 0
        hits = max(1, rows - self.orphans)
        return math.ceil(hits / self.per_page)


class BatchChangeList(ChangeList):
    """Leaves the large JSON and text columns in the database when listing batches."""

    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> QuerySet[Any]:
        return super().get_queryset(request, exclude_parameters).defer(*BATCH_LIST_DEFERRED)


class CompletionChangeList(ChangeList):
    def get_queryset(self, request: HttpRequest, exclude_parameters: Any = None) -> QuerySet[Any]:
        return super().get_queryset(request, exclude_parameters).defer(*COMPLETION_LIST_DEFERRED)
