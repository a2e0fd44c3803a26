"""xAI's wire format: JSONL lines, the file and batch endpoints, counters → snapshot, results.

Everything here follows the provider's observed behaviour (``shared/xai-batch-api.md``): there
is no status field, ids are ``batch_id``, times may be date-only, ``state`` may be absent, the
last page's token is ``null`` or ``""``, a failed line's error comes in three shapes, and
reasoning tokens are not part of ``completion_tokens``.

Nothing the provider sends may crash a parser here: every answer's shape is checked by the HTTP
client (``expect``), so a wrongly shaped one is a retried provider fault; inside a valid shape, a
field of the wrong type reads as absent, a time that cannot be represented as unknown, and a
result line in an unknown envelope fails with a reason. A create answered without a
``batch_id`` is ambiguous (it may exist), never a snapshot with an empty id.
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

from ..conf import get_setting, listing_bounds
from ..exceptions import AnswerTooLarge, InvalidBatchRequest, ProviderUnavailable
from ..http import ApiClient, Validator, describe, json_object
from ..models import ModelCompletion, ModelCompletionBatch
from ..readahead import read_ahead
from .base import (
    BatchListing,
    BatchSnapshot,
    BatchStrategy,
    LostCreate,
    ParsedCompletion,
    ResultEntry,
    ResultPage,
)

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
    treated as expired while the provider may still be working on it. Never raises: a time that
    cannot be read or represented (``1e300``, ``9999-12-31`` plus a day, a list) is unknown.
    """
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        if isinstance(value, int | float):
            return datetime.fromtimestamp(value, tz=UTC)
        if not isinstance(value, str) or len(value) > 64:
            raise ValueError("not a time string")
        text = value.strip()
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime.combine(day, time.min, tzinfo=UTC)
            return moment + timedelta(days=1) if end_of_day else moment
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, TypeError, OverflowError, OSError):
        logger.warning("Unreadable time from xAI: %.80r", value)
        return None


def _count(value: Any) -> int:
    """A counter or token count from the wire: a non-negative int, else 0."""
    if isinstance(value, bool):
        return 0
    try:
        number = int(value or 0)
    except (TypeError, ValueError, OverflowError):
        return 0
    return max(number, 0)


def normalise_counts(state: Any) -> dict[str, int] | None:
    if not isinstance(state, dict):
        return None  # "not always populated": the caller keeps the last known counts
    return {
        "total": _count(state.get("num_requests")),
        "pending": _count(state.get("num_pending")),
        "succeeded": _count(state.get("num_success")),
        "failed": _count(state.get("num_error")),
        "cancelled": _count(state.get("num_cancelled")),
    }


def _text(value: Any) -> str:
    """A string field from the wire: strings and numbers as text, anything else empty."""
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return ""


def _message(value: Any) -> str | None:
    """A message that may come as a string or an object (``{"code", "message"}``)."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, dict):
        inner = value.get("message") or value.get("error")
        if isinstance(inner, str) and inner:
            return inner
        return json.dumps(value, default=str)[:1000] if value else None
    if value in (None, False, [], 0):
        return None
    return json.dumps(value, default=str)[:1000]


def parse_batch(payload: Any) -> BatchSnapshot:
    """A snapshot of a batch object; never raises, whatever the fields hold."""
    if not isinstance(payload, dict):
        payload = {}
    return BatchSnapshot(
        provider_batch_id=_text(payload.get("batch_id") or payload.get("id")),
        name=_text(payload.get("name")),
        counts=normalise_counts(payload.get("state")),
        rejection=_message(payload.get("cancel_by_xai_message")),
        cancelled_at=parse_time(payload.get("cancel_time")),
        expires_at=parse_time(
            payload.get("expire_time") or payload.get("expires_at"), end_of_day=True
        ),
        input_file_id=_text(payload.get("input_file_id")),
        raw=payload,
    )


def _int_or_none(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def message_text(message: dict[str, Any]) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def final_choice(choices: Any) -> dict[str, Any]:
    """The choice that holds the answer: the last assistant message with text.

    Answers from server-side tools (web search…) carry the intermediate turns as several
    choices, the tool calls first and the answer last; a plain answer has one choice. With no
    text anywhere (a tool call), the last choice.
    """
    listed = [c for c in choices if isinstance(c, dict)] if isinstance(choices, list) else []
    for choice in reversed(listed):
        message = _dict(choice.get("message"))
        if message.get("role", "assistant") == "assistant" and message_text(message):
            return choice
    return listed[-1] if listed else {}


def parse_chat_completion(payload: dict[str, Any]) -> ParsedCompletion:
    """Parse a chat completion; the same parser serves synchronous and batch answers.

    Never raises: a field of the wrong type reads as absent. The whole payload (tool turns and
    ``citations`` included) is kept as it came.
    """
    choices = payload.get("choices")
    choice = final_choice(choices)
    message = _dict(choice.get("message"))
    finish_reason = _text(choice.get("finish_reason"))
    if not finish_reason and isinstance(choices, list):
        # Tool answers end with ``""`` on the answer turn; the last reason given is the best.
        reasons = [_text(c.get("finish_reason")) for c in choices if isinstance(c, dict)]
        finish_reason = next((r for r in reversed(reasons) if r), "")
    usage = _dict(payload.get("usage"))
    prompt_details = _dict(usage.get("prompt_tokens_details"))
    completion_details = _dict(usage.get("completion_tokens_details"))
    tool_calls = message.get("tool_calls")
    return ParsedCompletion(
        text=message_text(message),
        tool_calls=tool_calls if isinstance(tool_calls, list) and tool_calls else None,
        finish_reason=finish_reason,
        prompt_tokens=_int_or_none(usage.get("prompt_tokens")),
        completion_tokens=_int_or_none(usage.get("completion_tokens")),
        total_tokens=_int_or_none(usage.get("total_tokens")),
        reasoning_tokens=_int_or_none(completion_details.get("reasoning_tokens")),
        cached_tokens=_int_or_none(prompt_details.get("cached_tokens")),
        cost_ticks=_int_or_none(usage.get("cost_in_usd_ticks")),
        payload=payload,
    )


def error_text(entry: dict[str, Any]) -> str | None:
    """A failed line's message, from any shape seen in the wild: ``batch_result.error`` or a
    top-level ``error`` (a string or ``{"code", "message"}``), or ``error_message``."""
    result = entry.get("batch_result")
    for value in (
        result.get("error") if isinstance(result, dict) else None,
        entry.get("error"),
        entry.get("error_message"),
    ):
        text = _message(value)
        if text:
            return text
    return None


def listing_page(key: str) -> Validator:
    """A validator for a listing page: an object whose ``key`` is a list (or absent, an empty
    page) and whose ``pagination_token`` is a string or absent."""

    def check(payload: Any) -> str | None:
        if not isinstance(payload, dict):
            return f"expected a JSON object, got {describe(payload)}"
        if not isinstance(payload.get(key) or [], list):
            return f"{key!r} is not a list"
        if not isinstance(payload.get("pagination_token") or "", str):
            return "'pagination_token' is not a string"
        return None

    return check


def find_response(entry: dict[str, Any]) -> tuple[bool, Any]:
    """(found, response) of a result line: ``batch_result.response`` or a top-level
    ``response``, unwrapped from ``chat_get_completion`` (or an OpenAI-style ``body``)."""
    result = entry.get("batch_result")
    if isinstance(result, dict) and "response" in result and result["response"] is not None:
        response = result["response"]
    elif entry.get("response") is not None:
        response = entry["response"]
    else:
        return False, None
    if isinstance(response, dict):
        for key in ("chat_get_completion", "body"):
            if key in response:
                return True, response[key]
    return True, response


class XAIStrategy(BatchStrategy):
    provider = "xai"
    default_model = "grok-4.3"
    # Observed: a batch whose counters say done can serve only part of its results for a while.
    results_lag_counters = True

    def __init__(self, client: XAIClient | None = None):
        super().__init__()
        self._client = client
        #: Listing entries skipped, by reason (beyond the asked limit, not an object, no id).
        self.ignored_entries: Counter[str] = Counter()

    @property
    def client(self) -> XAIClient:
        if self._client is None:
            self._client = XAIClient.for_provider(self.provider)
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
            # Without a batch id the batch may still exist: ambiguous, reconciled by name.
            expect=json_object("batch_id"),
        )
        return parse_batch(answer)

    def find_provider_batches(
        self, lost: Collection[LostCreate], *, created_after: datetime | None
    ) -> BatchListing:
        """One read of the team-wide list, for every wanted name at once.

        xAI documents no order for the list (the emulator serves it oldest first), so the read
        cannot stop at batches older than ``created_after``: it stops when every name is found,
        and otherwise at RECONCILE_MAX_PAGES pages or RECONCILE_MAX_SECONDS, incomplete.
        """
        wanted = frozenset(create.name for create in lost)
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
            self.client.request(
                "GET", f"/batches/{provider_batch_id}", idempotent=True, expect=json_object()
            )
        )

    def cancel_provider_batch(self, provider_batch_id: str) -> BatchSnapshot:
        # Cancelling twice is harmless, so the call may be retried.
        return parse_batch(
            self.client.request(
                "POST",
                f"/batches/{provider_batch_id}:cancel",
                idempotent=True,
                expect=json_object(),
            )
        )

    # -- results ------------------------------------------------------------------------------

    def iter_result_pages(self, provider_batch_id: str) -> Iterator[list[ResultEntry]]:
        """Pages of parsed results; the next page is read and parsed while the caller stores
        this one (see :mod:`raif_batches.readahead`)."""
        path = f"/batches/{provider_batch_id}/results"
        return read_ahead(self._result_pages(path), name="raif-results")

    def _result_pages(self, path: str) -> Iterator[list[ResultEntry]]:
        for page in self._pages(path, "results"):
            entries = ResultPage()
            for item in page:
                custom_id = item.get("batch_request_id") or item.get("custom_id")
                if isinstance(custom_id, bool) or not isinstance(custom_id, str | int):
                    self.ignored_entries["without an id"] += 1
                    entries.unreadable += 1
                    logger.warning("xAI result without an id skipped: %.200r", item)
                    continue
                entries.append(self.parse_entry(str(custom_id), item))
            yield entries

    def parse_entry(self, custom_id: str, item: dict[str, Any]) -> ResultEntry:
        """One result line, in any envelope (see :func:`find_response`, :func:`error_text`).

        A response that is not a completion object fails the line with a reason that says so.
        """
        found, response = find_response(item)
        if isinstance(response, dict) and "choices" in response:
            return ResultEntry(custom_id=custom_id, completion=self.parse_completion(response))
        error = error_text(item)
        if error is None and isinstance(response, dict):
            error = "The provider's response for this request carries no completion (no choices)."
        elif error is None and found:
            error = (
                "The provider's response for this request is not an object "
                f"({type(response).__name__}: {str(response)[:100]!r})."
            )
        return ResultEntry(
            custom_id=custom_id,
            error=error or "The provider returned neither a result nor an error.",
        )

    def parse_completion(self, payload: dict[str, Any]) -> ParsedCompletion:
        return parse_chat_completion(payload)

    # -- pagination ---------------------------------------------------------------------------

    def _pages(self, path: str, key: str) -> Iterator[list[dict[str, Any]]]:
        """Yield each page's items until the token is ``null`` or ``""`` (both observed).

        Bounded whatever the provider sends: a page over ``MAX_RESPONSE_BYTES`` is asked again
        with half the page size (and later pages keep it); entries beyond the ``limit`` asked
        are ignored (a page served again brings them back, or they were bogus); items that are
        not objects are skipped; and a listing longer than ``LISTING_MAX_PAGES`` pages or
        ``LISTING_MAX_SECONDS`` is a provider fault, as is a token that keeps coming back.
        """
        limit = max(1, min(int(get_setting("RESULTS_PAGE_SIZE")), MAX_PAGE_SIZE))
        max_pages, max_seconds = listing_bounds()
        started = monotonic()
        token: str | None = None
        seen_tokens: Counter[str] = Counter()
        pages = 0
        while True:
            params: dict[str, Any] = {"limit": limit}
            if token:
                params["pagination_token"] = token
            try:
                answer = self.client.request(
                    "GET",
                    path,
                    idempotent=True,
                    params=params,
                    expect=listing_page(key),
                    lenient_numbers=key == "results",
                )
            except AnswerTooLarge as error:
                if limit == 1:
                    raise ProviderUnavailable(
                        f"GET {path}: one entry alone is over MAX_RESPONSE_BYTES ({error})",
                        status_code=error.status_code,
                    ) from None
                limit //= 2
                logger.warning("GET %s: page too large (%s); asking %d a page", path, error, limit)
                continue
            pages += 1
            yield self._page_items(path, answer.get(key) or [], limit)
            token = answer.get("pagination_token") or None
            if token is None:
                return
            # A page served twice is harmless (results apply once), so a token that comes back
            # is followed again; one that never moves on would loop forever.
            seen_tokens[token] += 1
            if seen_tokens[token] > MAX_TOKEN_REPEATS:
                raise ProviderUnavailable(f"GET {path}: pagination token repeated; stopping.")
            elapsed = monotonic() - started
            if pages >= max_pages or elapsed > max_seconds:
                raise ProviderUnavailable(
                    f"GET {path}: the listing did not end after {pages} page(s) in "
                    f"{elapsed:.0f}s (LISTING_MAX_PAGES={max_pages}, "
                    f"LISTING_MAX_SECONDS={max_seconds:g}); stopping."
                )

    def _page_items(self, path: str, items: list[Any], limit: int) -> list[dict[str, Any]]:
        if len(items) > limit:
            self.ignored_entries["beyond the limit"] += len(items) - limit
            logger.warning(
                "GET %s: %d entries for a limit of %d; the %d beyond it are ignored",
                path,
                len(items),
                limit,
                len(items) - limit,
            )
            items = items[:limit]
        objects = [item for item in items if isinstance(item, dict)]
        if len(objects) < len(items):
            self.ignored_entries["not an object"] += len(items) - len(objects)
            logger.warning("GET %s: %d entries are not objects; skipped", path, len(items))
        return objects

    def _paginate(self, path: str, key: str) -> Iterator[dict[str, Any]]:
        for page in self._pages(path, key):
            yield from page
