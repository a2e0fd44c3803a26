"""OpenAI's Batch API (chat completions): JSONL upload, batch objects, output and error files.

Everything here follows the provider as it serves (``shared/openai-batch-api.md``):

* Submission is an upload (``POST /files``, ``purpose=batch``, file ``raif_batch_<pk>.jsonl``,
  streamed from disk) and a create (``POST /batches``) naming the file, ``endpoint``
  ``/v1/chat/completions``, ``completion_window`` ``24h`` and ``metadata`` carrying the local
  batch's unique name and id. No idempotency key exists, so the create is sent once; a lost
  answer is found again by that metadata in the newest-first list of batches.
* A batch has a status field, mapped to the normalised one by :data:`STATUS_MAP`; the counters
  (``{total, completed, failed}``) are believed only while the batch is in flight. After a cancel
  or an expiry they lie (a line counted completed can be in neither file), so the files are the
  truth: ``results_lag_counters`` is False and a line in neither file fails ("entry missing").
* ``failed`` is a validation failure: nothing ran, no files; ``errors.data`` (code, line,
  message) is kept as the rejection. A batch whose lines all failed is ``completed`` with
  ``output_file_id: null``; an empty-string file id is read as null.
* Results are the output file (rows answered 2xx: a synchronous chat completion, parsed by the
  same parser as xAI's) and the error file (non-2xx rows, and ``batch_cancelled`` /
  ``batch_expired`` rows for lines that never ran). Each file is downloaded to disk and read
  line by line: memory stays bounded whatever the size.
* ``cached_tokens`` are inside ``prompt_tokens`` and ``reasoning_tokens`` inside
  ``completion_tokens``; no cost is reported, so lines are priced from the configured table.
* Errors are ``{"error": {"message", "type", "param", "code"}}``; 401 (``invalid_api_key``) is an
  authentication error; a 409 on cancel (the batch already finished) is a state conflict and is
  not retried.

Nothing the provider sends may crash a parser here: a field of the wrong type reads as absent, a
time that cannot be represented as unknown, a result line that is not JSON or has no
``custom_id`` is skipped with a warning and counted (:attr:`OpenAIStrategy.ignored_entries`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
import uuid
from collections import Counter
from collections.abc import Collection, Iterable, Iterator
from datetime import UTC, datetime
from time import monotonic
from typing import IO, Any
from urllib.parse import quote

import requests

from ..conf import get_setting
from ..exceptions import InvalidBatchRequest, ProviderError
from ..http import ApiClient, Validator, describe, json_object
from ..models import TERMINAL_STATUSES, ModelCompletion, ModelCompletionBatch
from ..readahead import read_ahead
from .base import (
    BatchListing,
    BatchListPage,
    BatchSnapshot,
    BatchStrategy,
    LostCreate,
    ParsedCompletion,
    ResultEntry,
    ResultPage,
)
from .xai import parse_chat_completion

logger = logging.getLogger("raif_batches.openai")

CHAT_COMPLETIONS_URL = "/v1/chat/completions"
COMPLETION_WINDOW = "24h"
#: The list's largest page (``limit`` 1..100).
LIST_PAGE_SIZE = 100
#: The metadata keys a batch carries, by which a lost create is found again.
NAME_KEY = "raif_batch_name"
ID_KEY = "raif_batch_id"

#: OpenAI's status -> the normalised one (the fact sheet's mapping table).
STATUS_MAP = {
    "validating": "submitted",
    "in_progress": "in_progress",
    "finalizing": "in_progress",
    "cancelling": "cancelling",
    "completed": "ended",
    "cancelled": "canceled",
    "expired": "expired",
    "failed": "failed",
}
TERMINAL = frozenset({"completed", "cancelled", "expired", "failed"})
#: Error-file codes of lines that never ran, and what they mean for the line.
NOT_RUN_CODES = {"batch_cancelled": "cancelled", "batch_expired": "expired"}


class OpenAIClient(ApiClient):
    """OpenAI's error body is ``{"error": {"message", "type", "param", "code"}}``; a bad key is
    a 401 with ``code: "invalid_api_key"``."""

    def error_message(self, payload: Any) -> str:
        error = payload.get("error") if isinstance(payload, dict) else None
        if isinstance(error, dict):
            message = _text(error.get("message"))
            code = _text(error.get("code")) or _text(error.get("type"))
            if message and code:
                return f"{message} ({code})"
            return message or code
        return super().error_message(payload)

    def classify_error(self, response: requests.Response) -> ProviderError:
        """As the base class, and ``x-should-retry: false`` (the SDK obeys it) makes an error
        final that would otherwise be retried. ``true`` is not taken to retry a refusal: a 4xx
        stays a refusal here, and the lifecycle reads the batch again later anyway."""
        error = super().classify_error(response)
        if error.retryable and response.headers.get("x-should-retry", "").lower() == "false":
            error.retryable = False
        return error

    def is_authentication_error(self, response: requests.Response, payload: Any) -> bool:
        error = payload.get("error") if isinstance(payload, dict) else None
        code = _text(error.get("code")) if isinstance(error, dict) else ""
        return response.status_code == 401 or code == "invalid_api_key"


# --- parsing helpers: never raise ----------------------------------------------------------


def _text(value: Any) -> str:
    """A string field: strings and numbers as text, anything else empty."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return ""


def _count(value: Any) -> int:
    """A counter: a non-negative int, else 0."""
    if isinstance(value, bool):
        return 0
    try:
        return max(int(value or 0), 0)
    except (TypeError, ValueError, OverflowError):
        return 0


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def file_id(value: Any) -> str | None:
    """A file id from a batch object: ``null`` and ``""`` (seen on a clean batch) are none."""
    text = _text(value).strip()
    return text or None


def parse_time(value: Any) -> datetime | None:
    """Unix seconds (int or float) as a UTC time; anything else, or out of range, is unknown."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return datetime.fromtimestamp(value, tz=UTC)
    except (ValueError, OverflowError, OSError):
        logger.warning("Unreadable time from OpenAI: %.80r", value)
        return None


def normalise_counts(status: str, counts: Any) -> dict[str, int] | None:
    """``{total, completed, failed}`` -> the five normalised counts.

    In flight they are the provider's (pending is what is neither completed nor failed). On a
    terminal batch nothing is pending; the counters are not the truth there (the files are,
    once harvested), so the unaccounted rest reads as cancelled on a cancelled or expired batch
    and as failed on a completed one (a line in neither file fails).
    """
    if not isinstance(counts, dict):
        return None
    total = _count(counts.get("total"))
    succeeded = min(_count(counts.get("completed")), total)
    failed = min(_count(counts.get("failed")), total - succeeded)
    rest = total - succeeded - failed
    if status not in TERMINAL:
        return {
            "total": total,
            "pending": rest,
            "succeeded": succeeded,
            "failed": failed,
            "cancelled": 0,
        }
    cancelled = rest if status in ("cancelled", "expired") else 0
    if status == "completed":
        failed += rest
    return {
        "total": total,
        "pending": 0,
        "succeeded": succeeded,
        "failed": failed,
        "cancelled": cancelled,
    }


def rejection_text(errors: Any) -> str | None:
    """``errors.data[]`` as one text: ``code (line N): message`` per entry, ``; ``-joined."""
    data = _dict(errors).get("data") if isinstance(errors, dict) else errors
    if not isinstance(data, list):
        return None
    parts = []
    for item in data:
        if not isinstance(item, dict):
            continue
        code, message = _text(item.get("code")), _text(item.get("message"))
        line = item.get("line")
        where = f" (line {line})" if isinstance(line, int) and not isinstance(line, bool) else ""
        head = f"{code}{where}" if code else where.strip(" ()")
        parts.append(f"{head}: {message}" if head and message else head or message)
    text = "; ".join(part for part in parts if part)
    return text[:2000] or None


def parse_batch(payload: Any) -> BatchSnapshot:
    """A snapshot of a batch object; never raises, whatever the fields hold.

    An unknown status is read as in progress (the batch exists and is not known to be over).
    """
    if not isinstance(payload, dict):
        payload = {}
    status = _text(payload.get("status"))
    normalised = STATUS_MAP.get(status, "in_progress")
    rejection = rejection_text(payload.get("errors")) if status == "failed" else None
    if status == "failed" and not rejection:
        rejection = "OpenAI failed the batch without saying why."
    cancel_started = payload.get("cancelling_at") or payload.get("cancelled_at")
    return BatchSnapshot(
        provider_batch_id=_text(payload.get("id")),
        name=_text(_dict(payload.get("metadata")).get(NAME_KEY)),
        counts=normalise_counts(status, payload.get("request_counts")),
        status=normalised,
        created_at=parse_time(payload.get("created_at")),
        rejection=rejection,
        cancelled_at=parse_time(cancel_started),
        expires_at=parse_time(payload.get("expires_at")),
        input_file_id=_text(payload.get("input_file_id")),
        raw=payload,
    )


def list_page() -> Validator:
    """A list envelope: ``data`` a list (or absent), ``has_more`` a boolean or absent."""

    def check(payload: Any) -> str | None:
        if not isinstance(payload, dict):
            return f"expected a JSON object, got {describe(payload)}"
        if not isinstance(payload.get("data") or [], list):
            return "'data' is not a list"
        return None

    return check


def row_error(row: dict[str, Any]) -> tuple[str, str | None]:
    """(message, not_run) of a row that is not a 2xx completion.

    ``error`` (``batch_cancelled``/``batch_expired`` or another code) or a non-2xx
    ``response`` whose body carries ``error.message`` (with its type/code).
    """
    error = row.get("error")
    if isinstance(error, dict) and error:
        code = _text(error.get("code"))
        message = _text(error.get("message")) or code or json.dumps(error, default=str)[:500]
        if code in NOT_RUN_CODES:
            return message, NOT_RUN_CODES[code]
        return (f"{message} ({code})" if code and code not in message else message), None
    if isinstance(error, str) and error:
        return error, None
    response = _dict(row.get("response"))
    status = response.get("status_code")
    body = response.get("body")
    inner = _dict(body).get("error")
    if isinstance(inner, dict):
        message = _text(inner.get("message"))
        kind = _text(inner.get("code")) or _text(inner.get("type"))
        if message:
            return (f"{message} ({kind})" if kind else message), None
        if kind:
            return kind, None
    if isinstance(inner, str) and inner:
        return inner, None
    if response:
        return f"The provider answered HTTP {_text(status) or '?'} with no error message.", None
    return "The provider returned neither a response nor an error.", None


def parse_row(row: dict[str, Any]) -> ResultEntry:
    """One row of the output or error file (``custom_id`` already checked)."""
    custom_id = str(row["custom_id"])
    response = row.get("response")
    if isinstance(response, dict) and not row.get("error"):
        status = response.get("status_code")
        body = response.get("body")
        ok = isinstance(status, int) and not isinstance(status, bool) and 200 <= status < 300
        if ok and isinstance(body, dict) and "choices" in body:
            return ResultEntry(custom_id=custom_id, completion=parse_completion(body))
        if ok:
            return ResultEntry(
                custom_id=custom_id,
                error="The provider's response for this request carries no completion.",
            )
    message, not_run = row_error(row)
    return ResultEntry(custom_id=custom_id, error=message, not_run=not_run)


def parse_completion(payload: dict[str, Any]) -> ParsedCompletion:
    """A chat completion, as a synchronous one: reasoning is inside the completion tokens and
    no cost is reported (the table prices it)."""
    parsed = parse_chat_completion(payload)
    return dataclasses.replace(parsed, reasoning_included=True, cost_ticks=None)


def iter_jsonl(source: IO[bytes]) -> Iterator[bytes]:
    """Lines of a downloaded file: ``\\n`` or ``\\r\\n`` endings, a last line without one;
    blank lines are skipped."""
    for raw in source:
        line = raw.strip()
        if line:
            yield line


class OpenAIStrategy(BatchStrategy):
    provider = "openai"
    default_model = "gpt-5-mini"
    max_requests_per_batch = 50_000
    max_file_bytes = 200 * 1024 * 1024
    # No per-line limit is documented: one line may fill the file.
    max_line_bytes = 200 * 1024 * 1024 - 1024
    # No documented charset or length: 100+ non-ASCII characters round-trip byte for byte.
    max_custom_id_length = 512
    custom_id_pattern = None
    reconcile_by_name = True
    results_lag_counters = False
    batch_list_newest_first = True
    list_page_size = LIST_PAGE_SIZE

    def __init__(self, client: OpenAIClient | None = None):
        super().__init__()
        self._client = client
        #: Entries skipped, by reason (not JSON, not an object, without a custom id).
        self.ignored_entries: Counter[str] = Counter()

    @property
    def client(self) -> OpenAIClient:
        if self._client is None:
            self._client = OpenAIClient.for_provider(self.provider)
        return self._client

    @classmethod
    def check_request(cls, request: Any) -> str | None:
        if request.get("stream") or _dict(request.get("extra_body")).get("stream"):
            return "stream is not supported by OpenAI's Batch API (it fails the whole batch)"
        return None

    # -- submission ---------------------------------------------------------------------------

    def build_line(self, batch: ModelCompletionBatch, completion: ModelCompletion) -> bytes:
        line = {
            "custom_id": completion.batch_custom_id,
            "method": "POST",
            "url": CHAT_COMPLETIONS_URL,
            "body": completion.request_body(batch.model),
        }
        return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"

    def upload_input(self, batch: ModelCompletionBatch, lines: Iterable[bytes]) -> str:
        """Stream the JSONL into a multipart body on disk, then upload it with its length.

        Idempotent: a second upload only leaves an unused file (they expire after 30 days).
        """
        boundary = f"raif-batches-{uuid.uuid4().hex}"
        with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as body:
            size = self._write_multipart(body, boundary, batch, lines)
            logger.info("Batch %s: uploading %d bytes of JSONL to OpenAI", batch.pk, size)
            answer = self.client.request(
                "POST",
                "/files",
                idempotent=True,
                data=body,
                headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
                expect=json_object("id"),
            )
        return str(answer["id"])

    def _write_multipart(
        self, out: IO[bytes], boundary: str, batch: ModelCompletionBatch, lines: Iterable[bytes]
    ) -> int:
        out.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n'
            f"batch\r\n--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; '
            f'filename="raif_batch_{batch.pk}.jsonl"\r\n'
            "Content-Type: application/jsonl\r\n\r\n".encode()
        )
        size = count = 0
        for line in lines:
            count += 1
            if count > self.max_requests_per_batch:
                raise InvalidBatchRequest(
                    f"the batch has more than {self.max_requests_per_batch} requests; OpenAI "
                    "accepts at most that many per file."
                )
            size += len(line)
            if size > self.max_file_bytes:
                raise InvalidBatchRequest(
                    f"the batch file exceeds {self.max_file_bytes} bytes; split the requests "
                    "with raif_batches.create_batches()."
                )
            out.write(line)
        out.write(f"\r\n--{boundary}--\r\n".encode())
        out.seek(0)
        return size

    def create_provider_batch(self, batch: ModelCompletionBatch) -> BatchSnapshot:
        answer = self.client.request(
            "POST",
            "/batches",
            idempotent=False,
            json={
                "input_file_id": batch.input_file_id,
                "endpoint": CHAT_COMPLETIONS_URL,
                "completion_window": COMPLETION_WINDOW,
                "metadata": {NAME_KEY: batch.provider_batch_name, ID_KEY: str(batch.pk)},
            },
            # Without an id the batch may still exist: ambiguous, found again by metadata.
            expect=json_object("id"),
        )
        return parse_batch(answer)

    def find_provider_batches(
        self, lost: Collection[LostCreate], *, created_after: datetime | None
    ) -> BatchListing:
        """Page the newest-first list; every batch whose metadata names a wanted batch is it.

        Stops when every name is found, when a whole page is older than ``created_after``
        (nothing further back can be ours), or when the list ends; bounded by
        RECONCILE_MAX_PAGES and RECONCILE_MAX_SECONDS (then ``complete=False``).
        """
        wanted = frozenset(create.name for create in lost)
        found: dict[str, list[BatchSnapshot]] = {}
        max_pages = int(get_setting("RECONCILE_MAX_PAGES"))
        max_seconds = float(get_setting("RECONCILE_MAX_SECONDS"))
        started = monotonic()
        pages = 0
        after: str | None = None
        seen_after: set[str] = set()
        while True:
            params: dict[str, Any] = {"limit": LIST_PAGE_SIZE}
            if after:
                params["after"] = after
            answer = self.client.request(
                "GET", "/batches", idempotent=True, params=params, expect=list_page()
            )
            pages += 1
            items = [item for item in answer.get("data") or [] if isinstance(item, dict)]
            older = 0
            for item in items:
                name = _dict(item.get("metadata")).get(NAME_KEY)
                if isinstance(name, str) and name in wanted:
                    snapshot = parse_batch(item)
                    listed = found.setdefault(name, [])
                    # A page served twice must not make one batch look like two.
                    if all(s.provider_batch_id != snapshot.provider_batch_id for s in listed):
                        listed.append(snapshot)
                created = parse_time(item.get("created_at"))
                if created_after is not None and created is not None and created < created_after:
                    older += 1
            listing = BatchListing(names=wanted, found={k: tuple(v) for k, v in found.items()})
            if wanted <= found.keys():
                return listing
            if items and older == len(items):
                return listing  # the rest of the list is older than any create we look for
            last = _text(answer.get("last_id")) or (_text(items[-1].get("id")) if items else "")
            if answer.get("has_more") is not True or not items:
                return listing
            if not last or last in seen_after:
                # More is promised but cannot be reached: a name not found proves nothing.
                why = "repeated" if last else "missing"
                return dataclasses.replace(
                    listing, complete=False, stopped_because=f"the list's cursor was {why}"
                )
            seen_after.add(last)
            after = last
            elapsed = monotonic() - started
            if pages >= max_pages or elapsed >= max_seconds:
                return dataclasses.replace(
                    listing,
                    complete=False,
                    stopped_because=(
                        f"stopped after {pages} page(s) in {elapsed:.1f}s "
                        "(RECONCILE_MAX_PAGES / RECONCILE_MAX_SECONDS)"
                    ),
                )

    def list_batches_page(self, after: str | None) -> BatchListPage:
        params: dict[str, Any] = {"limit": self.list_page_size}
        if after:
            params["after"] = after
        answer = self.client.request(
            "GET", "/batches", idempotent=True, params=params, expect=list_page()
        )
        items = [item for item in answer.get("data") or [] if isinstance(item, dict)]
        last = _text(answer.get("last_id")) or (_text(items[-1].get("id")) if items else "")
        more = answer.get("has_more") is True and bool(items) and bool(last) and last != after
        return BatchListPage([parse_batch(item) for item in items], last if more else None)

    # -- status, cancel -----------------------------------------------------------------------

    def get_provider_batch(self, provider_batch_id: str) -> BatchSnapshot:
        return parse_batch(self._get_batch(provider_batch_id))

    def _get_batch(self, provider_batch_id: str) -> dict[str, Any]:
        answer: dict[str, Any] = self.client.request(
            "GET",
            f"/batches/{quote(provider_batch_id, safe='')}",
            idempotent=True,
            expect=json_object("id"),
        )
        return answer

    def cancel_provider_batch(self, provider_batch_id: str) -> BatchSnapshot:
        """Cancelling twice is harmless, so transient faults are retried; a 409 (the batch
        already finished) is a state conflict, raised as a refusal and not retried."""
        return parse_batch(
            self.client.request(
                "POST",
                f"/batches/{quote(provider_batch_id, safe='')}/cancel",
                idempotent=True,
                expect=json_object("id"),
            )
        )

    # -- results ------------------------------------------------------------------------------

    def iter_result_pages(self, provider_batch_id: str) -> Iterator[list[ResultEntry]]:
        """Pages of parsed rows of the batch's output and error files; the next page is read
        while the caller stores this one (see :mod:`raif_batches.readahead`)."""
        return read_ahead(self._result_pages(provider_batch_id), name="raif-results")

    def iter_result_pages_after(self, ended: BatchSnapshot) -> Iterator[list[ResultEntry]]:
        """The files named by the answer that ended the batch: they do not change once it has
        ended, so the batch is not read again for them."""
        if ended.status not in TERMINAL_STATUSES or not ended.raw:
            return self.iter_result_pages(ended.provider_batch_id)
        pages = self._file_pages(ended.provider_batch_id, ended.raw)
        return read_ahead(pages, name="raif-results")

    def _result_pages(self, provider_batch_id: str) -> Iterator[list[ResultEntry]]:
        yield from self._file_pages(provider_batch_id, self._get_batch(provider_batch_id))

    def _file_pages(
        self, provider_batch_id: str, batch: dict[str, Any]
    ) -> Iterator[list[ResultEntry]]:
        size = max(1, int(get_setting("RESULTS_PAGE_SIZE")))
        for key in ("output_file_id", "error_file_id"):
            file = file_id(batch.get(key))
            if file is None:
                continue
            with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as sink:
                written = self.client.download(f"/files/{quote(file, safe='')}/content", sink)
                logger.info("OpenAI batch %s: %s is %d bytes", provider_batch_id, key, written)
                page = ResultPage()
                for line in iter_jsonl(sink):
                    entry = self._parse_line(line)
                    if entry is None:
                        page.unreadable += 1
                        continue
                    page.append(entry)
                    if len(page) >= size:
                        yield page
                        page = ResultPage()
                if page or page.unreadable:
                    yield page

    def _parse_line(self, line: bytes) -> ResultEntry | None:
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            self.ignored_entries["not JSON"] += 1
            logger.warning("OpenAI result line that is not JSON skipped: %.200r", line)
            return None
        if not isinstance(row, dict):
            self.ignored_entries["not an object"] += 1
            logger.warning("OpenAI result line that is not an object skipped: %.200r", line)
            return None
        custom_id = row.get("custom_id")
        if isinstance(custom_id, bool) or not isinstance(custom_id, str | int) or custom_id == "":
            self.ignored_entries["without a custom id"] += 1
            logger.warning("OpenAI result line without a custom_id skipped: %.200r", line)
            return None
        row["custom_id"] = str(custom_id)
        return parse_row(row)

    def parse_completion(self, payload: dict[str, Any]) -> ParsedCompletion:
        return parse_completion(payload)
