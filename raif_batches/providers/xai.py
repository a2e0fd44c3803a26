"""xAI's wire format: JSONL lines, the file and batch endpoints, counters → snapshot, results.

Everything here follows the provider's observed behaviour (``shared/xai-batch-api.md``): there
is no status field, ids are ``batch_id``, times may be date-only, ``state`` may be absent, the
last page's token is ``null`` or ``""``, a failed line's error comes in three shapes, and
reasoning tokens are not part of ``completion_tokens``.
"""

from __future__ import annotations

import json
import logging
import tempfile
import uuid
from collections import Counter
from collections.abc import Collection, Iterable, Iterator
from datetime import UTC, date, datetime, time, timedelta
from time import monotonic
from typing import IO, Any

import requests

from ..conf import api_key, get_setting
from ..exceptions import InvalidBatchRequest, ProviderUnavailable
from ..http import ApiClient, build_session
from ..models import ModelCompletion, ModelCompletionBatch
from ..readahead import read_ahead
from .base import BatchListing, BatchSnapshot, BatchStrategy, ParsedCompletion, ResultEntry

logger = logging.getLogger("raif_batches.xai")

CHAT_COMPLETIONS_URL = "/v1/chat/completions"
MAX_PAGE_SIZE = 1000
#: Times one pagination token may come back before the listing is abandoned as looping.
MAX_TOKEN_REPEATS = 3


class XAIClient(ApiClient):
    """xAI's error bodies are ``{"code": "<gRPC status text>", "error": "<message>"}``; a bad
    key answers HTTP 400, not 401."""

    def is_authentication_error(self, response: requests.Response, payload: Any) -> bool:
        message = self.error_message(payload).lower()
        return response.status_code in (400, 401, 403) and (
            "api key" in message or response.status_code == 401
        )


def parse_time(value: Any, *, end_of_day: bool = False) -> datetime | None:
    """Accept RFC 3339 (``2026-08-25T12:30:00Z``) and date-only (``2026-08-28``) times.

    A date-only expiry is a whole day: it is taken as the end of that day, so nothing is
    treated as expired while the provider may still be working on it.
    """
    if value in (None, ""):
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, tz=UTC)
    text = str(value).strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime.combine(day, time.min, tzinfo=UTC)
            return moment + timedelta(days=1) if end_of_day else moment
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        logger.warning("Unreadable time from xAI: %r", value)
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def normalise_counts(state: Any) -> dict[str, int] | None:
    if not isinstance(state, dict):
        return None  # "not always populated": the caller keeps the last known counts

    def number(key: str) -> int:
        try:
            return int(state.get(key) or 0)
        except (TypeError, ValueError):
            return 0

    return {
        "total": number("num_requests"),
        "pending": number("num_pending"),
        "succeeded": number("num_success"),
        "failed": number("num_error"),
        "cancelled": number("num_cancelled"),
    }


def parse_batch(payload: dict[str, Any]) -> BatchSnapshot:
    return BatchSnapshot(
        provider_batch_id=str(payload.get("batch_id") or payload.get("id") or ""),
        name=str(payload.get("name") or ""),
        counts=normalise_counts(payload.get("state")),
        rejection=payload.get("cancel_by_xai_message") or None,
        cancelled_at=parse_time(payload.get("cancel_time")),
        expires_at=parse_time(
            payload.get("expire_time") or payload.get("expires_at"), end_of_day=True
        ),
        input_file_id=str(payload.get("input_file_id") or ""),
        raw=payload,
    )


def _int_or_none(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def parse_chat_completion(payload: dict[str, Any]) -> ParsedCompletion:
    """Parse a chat completion; the same parser serves synchronous and batch answers."""
    choices = payload.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    usage = payload.get("usage") or {}
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    return ParsedCompletion(
        text=message.get("content") or "",
        tool_calls=message.get("tool_calls") or None,
        finish_reason=str(choice.get("finish_reason") or ""),
        prompt_tokens=_int_or_none(usage.get("prompt_tokens")),
        completion_tokens=_int_or_none(usage.get("completion_tokens")),
        total_tokens=_int_or_none(usage.get("total_tokens")),
        reasoning_tokens=_int_or_none(completion_details.get("reasoning_tokens")),
        cached_tokens=_int_or_none(prompt_details.get("cached_tokens")),
        cost_ticks=_int_or_none(usage.get("cost_in_usd_ticks")),
        payload=payload,
    )


def error_text(entry: dict[str, Any]) -> str | None:
    """A failed line's message, from any of the three shapes seen in the wild."""
    result = entry.get("batch_result") or {}
    error = result.get("error") if isinstance(result, dict) else None
    if isinstance(error, str) and error:
        return error
    if isinstance(error, dict):
        return str(error.get("message") or json.dumps(error))
    if entry.get("error_message"):
        return str(entry["error_message"])
    return None


class XAIStrategy(BatchStrategy):
    provider = "xai"

    def __init__(self, client: XAIClient | None = None):
        super().__init__()
        self._client = client

    @property
    def client(self) -> XAIClient:
        if self._client is None:
            pool = int(get_setting("POLL_CONCURRENCY"))
            self._client = XAIClient(
                str(get_setting("XAI_BASE_URL")),
                api_key(),
                session=build_session(pool_size=max(pool, 4)),
            )
        return self._client

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

        The whole file is never in memory; a spooled file stays in RAM only while small.
        """
        boundary = f"raif-batches-{uuid.uuid4().hex}"
        with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as body:
            size = self._write_multipart(body, boundary, batch, lines)
            logger.info("Batch %s: uploading %d bytes of JSONL", batch.pk, size)
            answer = self.client.request(
                "POST",
                "/files",
                idempotent=True,  # a second upload only costs an unused file
                data=body,
                headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
            )
        file_id = (answer or {}).get("id")
        if not file_id:
            raise ProviderUnavailable(f"file upload answered without an id: {answer!r}")
        return str(file_id)

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
        size = 0
        for number, line in enumerate(lines, start=1):
            if len(line) > self.max_line_bytes:
                raise InvalidBatchRequest(
                    f"line {number} is {len(line)} bytes; xAI accepts at most "
                    f"{self.max_line_bytes}."
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
            json={"name": batch.provider_batch_name, "input_file_id": batch.input_file_id},
        )
        return parse_batch(answer)

    def find_provider_batches(
        self, names: Collection[str], *, created_after: datetime | None
    ) -> BatchListing:
        """One read of the team-wide list, for every wanted name at once.

        xAI documents no order for the list (the emulator serves it oldest first), so the read
        cannot stop at batches older than ``created_after``: it stops when every name is found,
        and otherwise at RECONCILE_MAX_PAGES pages or RECONCILE_MAX_SECONDS, incomplete.
        """
        wanted = frozenset(names)
        found: dict[str, list[BatchSnapshot]] = {}
        max_pages = int(get_setting("RECONCILE_MAX_PAGES"))
        max_seconds = float(get_setting("RECONCILE_MAX_SECONDS"))
        started = monotonic()
        pages = 0
        for page in self._pages("/batches", "batches"):
            pages += 1
            older = 0
            for item in page:
                if not isinstance(item, dict):
                    continue
                if item.get("name") in wanted:
                    found.setdefault(str(item["name"]), []).append(parse_batch(item))
                created = parse_time(item.get("create_time"), end_of_day=True)
                if created_after is not None and created is not None and created < created_after:
                    older += 1
            listing = BatchListing(names=wanted, found={k: tuple(v) for k, v in found.items()})
            if wanted <= found.keys():
                return listing
            if self.batch_list_newest_first and page and older == len(page):
                return listing  # the rest of the list is older than any create we look for
            elapsed = monotonic() - started
            if pages >= max_pages or elapsed >= max_seconds:
                return BatchListing(
                    names=wanted,
                    found=listing.found,
                    complete=False,
                    stopped_because=(
                        f"stopped after {pages} page(s) in {elapsed:.1f}s "
                        "(RECONCILE_MAX_PAGES / RECONCILE_MAX_SECONDS)"
                    ),
                )
        return BatchListing(names=wanted, found={k: tuple(v) for k, v in found.items()})

    # -- status, cancel -----------------------------------------------------------------------

    def get_provider_batch(self, provider_batch_id: str) -> BatchSnapshot:
        return parse_batch(
            self.client.request("GET", f"/batches/{provider_batch_id}", idempotent=True)
        )

    def cancel_provider_batch(self, provider_batch_id: str) -> BatchSnapshot:
        # Cancelling twice is harmless, so the call may be retried.
        return parse_batch(
            self.client.request("POST", f"/batches/{provider_batch_id}:cancel", idempotent=True)
        )

    # -- results ------------------------------------------------------------------------------

    def iter_result_pages(self, provider_batch_id: str) -> Iterator[list[ResultEntry]]:
        """Pages of parsed results; the next page is read and parsed while the caller stores
        this one (see :mod:`raif_batches.readahead`)."""
        path = f"/batches/{provider_batch_id}/results"
        return read_ahead(self._result_pages(path), name="raif-results")

    def _result_pages(self, path: str) -> Iterator[list[ResultEntry]]:
        for page in self._pages(path, "results"):
            entries: list[ResultEntry] = []
            for item in page:
                custom_id = item.get("batch_request_id") or item.get("custom_id")
                if not custom_id:
                    logger.warning("xAI result without an id skipped: %.200r", item)
                    continue
                entries.append(self.parse_entry(str(custom_id), item))
            yield entries

    def parse_entry(self, custom_id: str, item: dict[str, Any]) -> ResultEntry:
        result = item.get("batch_result") or {}
        response = result.get("response") if isinstance(result, dict) else None
        completion = (response or {}).get("chat_get_completion")
        if isinstance(completion, dict):
            return ResultEntry(custom_id=custom_id, completion=self.parse_completion(completion))
        return ResultEntry(
            custom_id=custom_id,
            error=error_text(item) or "The provider returned neither a result nor an error.",
        )

    def parse_completion(self, payload: dict[str, Any]) -> ParsedCompletion:
        return parse_chat_completion(payload)

    # -- pagination ---------------------------------------------------------------------------

    def _pages(self, path: str, key: str) -> Iterator[list[dict[str, Any]]]:
        """Yield each page's items until the token is ``null`` or ``""`` (both observed)."""
        limit = max(1, min(int(get_setting("RESULTS_PAGE_SIZE")), MAX_PAGE_SIZE))
        token: str | None = None
        seen_tokens: Counter[str] = Counter()
        while True:
            params: dict[str, Any] = {"limit": limit}
            if token:
                params["pagination_token"] = token
            answer = self.client.request("GET", path, idempotent=True, params=params) or {}
            yield list(answer.get(key) or [])
            token = answer.get("pagination_token") or None
            if token is None:
                return
            # A page served twice is harmless (results apply once), so a token that comes back
            # is followed again; one that never moves on would loop forever.
            seen_tokens[token] += 1
            if seen_tokens[token] > MAX_TOKEN_REPEATS:
                raise ProviderUnavailable(f"GET {path}: pagination token repeated; stopping.")

    def _paginate(self, path: str, key: str) -> Iterator[dict[str, Any]]:
        for page in self._pages(path, key):
            yield from page
