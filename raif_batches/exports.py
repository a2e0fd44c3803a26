"""Exporting batch results as JSONL or CSV, streamed.

A batch holds up to 50,000 completions and an export may cover several batches, so rows are
read with ``.iterator()`` in chunks and written to the response as they are read: memory stays
bounded by one chunk, whatever the number of rows. Only the columns the export writes are
loaded; the request messages are left out (they are the caller's own input, and the largest
column).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.http import StreamingHttpResponse
from django.utils import timezone

from .models import ModelCompletion

CHUNK_SIZE = 2000

#: Columns of both formats, in order. JSONL adds the structured fields after them.
COLUMNS: tuple[str, ...] = (
    "batch_id",
    "custom_id",
    "status",
    "finish_reason",
    "response",
    "prompt_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "cached_tokens",
    "total_tokens",
    "prompt_token_cost",
    "output_token_cost",
    "total_cost",
    "failure_error",
    "failure_reason",
    "completed_at",
    "failed_at",
)
#: Structured fields that only JSONL can carry faithfully.
JSON_ONLY: tuple[str, ...] = ("response_json", "response_tool_calls")

#: The model fields behind COLUMNS + JSON_ONLY, in the same order.
_RENAMED = {"custom_id": "batch_custom_id", "response": "raw_response"}
_FIELDS = tuple(_RENAMED.get(column, column) for column in COLUMNS) + JSON_ONLY
# A spreadsheet runs a cell that starts with one of these as a formula; model output and
# provider messages are untrusted text, so such cells are written with a leading quote.
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def iter_rows(batch_ids: Sequence[int]) -> Iterator[dict[str, Any]]:
    """Yield one dict per completion of the given batches, in batch then request order."""
    rows = (
        ModelCompletion.objects.filter(batch_id__in=list(batch_ids))
        .order_by("batch_id", "pk")
        .values(*_FIELDS)
        .iterator(chunk_size=CHUNK_SIZE)
    )
    for row in rows:
        row["custom_id"] = row.pop("batch_custom_id")
        row["response"] = row.pop("raw_response")
        yield row


def iter_jsonl(batch_ids: Sequence[int]) -> Iterator[str]:
    """One JSON object per line; Decimals as strings so that costs keep every digit."""
    for row in iter_rows(batch_ids):
        record = {key: row[key] for key in (*COLUMNS, *JSON_ONLY)}
        yield json.dumps(record, ensure_ascii=False, default=_json_default) + "\n"


class _Echo:
    """A file-like object whose write returns the line, so csv.writer can feed a generator."""

    def write(self, value: str) -> str:
        return value


def iter_csv(batch_ids: Sequence[int]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield writer.writerow(COLUMNS)
    for row in iter_rows(batch_ids):
        yield writer.writerow([_csv_cell(row[key]) for key in COLUMNS])


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str) and value.startswith(_FORMULA_PREFIXES):
        return "'" + value
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def export_filename(batch_ids: Iterable[int], extension: str) -> str:
    ids = sorted(batch_ids)
    label = f"batch-{ids[0]}" if len(ids) == 1 else f"{len(ids)}-batches"
    return f"raif-{label}-{timezone.now():%Y%m%d-%H%M%S}.{extension}"


def jsonl_response(batch_ids: Sequence[int]) -> StreamingHttpResponse:
    """A streamed JSONL download of the results of ``batch_ids``."""
    response = StreamingHttpResponse(
        iter_jsonl(batch_ids), content_type="application/x-ndjson; charset=utf-8"
    )
    response["Content-Disposition"] = (
        f'attachment; filename="{export_filename(batch_ids, "jsonl")}"'
    )
    return response


def csv_response(batch_ids: Sequence[int]) -> StreamingHttpResponse:
    """A streamed CSV download of the results of ``batch_ids``."""
    response = StreamingHttpResponse(iter_csv(batch_ids), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{export_filename(batch_ids, "csv")}"'
    return response
