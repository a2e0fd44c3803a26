"""Anthropic's Message Batches API: inline requests, a status field, JSONL results by custom id.

Everything here follows the fact sheet (``shared/anthropic-batch-api.md``). The rules, and why:

* **No upload.** The requests travel inline in the create call's JSON body. ``upload_input``
  only checks the limits (100,000 requests, 256 MB) while consuming the lines and returns the
  constant ``"inline"``; ``create_provider_batch`` streams the lines from the database into a
  spooled temporary file and POSTs it with its length, so the body is never one Python string.
* **Every call carries the key and the version**: ``x-api-key`` and ``anthropic-version``, the
  results download included (it goes through the same client). ``529 overloaded_error`` is
  retried like a 503.
* **Requests are translated** from the chat-completions shape we store to a Messages body (see
  :func:`messages_params`): system and developer messages become ``system``, tool calls and
  tool messages become ``tool_use`` / ``tool_result`` blocks, OpenAI-style function tools get an
  ``input_schema``, ``tool_choice`` is mapped, ``stop`` becomes ``stop_sequences``. There is no
  JSON mode: a ``response_format`` is turned into an instruction appended to ``system`` (the
  schema included for ``json_schema``), and the answer is checked as JSON when it is stored.
  Other parameters (``thinking``, ``metadata``, ``top_k``...) pass through unchanged.
* **Custom ids** must match ``[a-zA-Z0-9_-]{1,64}``: Anthropic refuses the whole create with a
  400 otherwise, so :data:`AnthropicStrategy.custom_id_pattern` is checked by ``create_batch``.
  ``max_tokens`` is required (:meth:`AnthropicStrategy.check_request`).
* **Status and counts** are mapped exactly as the fact sheet's tables say
  (:func:`normalise_status`, :func:`normalise_counts`): ``ended`` with ``cancel_initiated_at``
  is ``canceled``, ``ended`` with expired requests ``expired``, else ``ended``. An unknown
  ``processing_status`` reads as ``in_progress`` (polled again, bounded by the batch's deadline),
  never as an end.
* **Results** are one JSON line per request in any order, ``\\n`` or ``\\r\\n``, the last maybe
  without one; they are downloaded to disk (``GET .../results``, the path built from the id:
  the absolute ``results_url`` is not followed, so the key only ever goes to the configured
  origin) and read line by line. ``succeeded`` carries a
  Messages response; ``errored`` the nested error envelope (a flat ``{"type", "message"}`` is
  accepted too); ``canceled`` / ``expired`` lines never ran. A line that is not JSON or has no
  custom id is skipped, logged and counted (``ignored_entries``). A 404 on the results is
  :class:`~raif_batches.exceptions.ProviderNotFound`, which the lifecycle counts.

Finding a lost create, and its limits. A batch has no name and no metadata, and the list cannot
be filtered: a create whose answer was lost can only be matched by **when** it was made and
**how many** requests it holds. :meth:`AnthropicStrategy.find_provider_batches` pages the list
(newest first) back past the earliest attempt and offers every batch created within
[attempt - margin, end of the call + margin] (:data:`RECONCILE_CLOCK_MARGIN`, the clock
difference allowed between Anthropic and our database) whose five counts sum to the request
count. When several fit and every one of them has ended, their results are read and the
one whose custom ids are exactly our batch's is the only candidate kept (a batch our create
made holds exactly our ids). The lifecycle drops candidates another local batch already owns,
adopts a single one, and holds the batch for the operator when several remain.

What stays ambiguous: candidates still running (they are compared once they end: the batch is
held meanwhile, and each later run looks again), and a stranger in the same workspace who
sends the same custom ids in a batch of the same size within the window. The custom ids are
not made unique to the batch: they are the users' own ids, up to the 64 characters Anthropic
allows, so no batch marker fits beside them without changing what users see.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from collections import Counter
from collections.abc import Collection, Iterable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from time import monotonic
from typing import Any, Protocol

import requests

from ..conf import get_setting, request_timeout
from ..exceptions import InvalidBatchRequest, ProviderError, ProviderUnavailable
from ..http import ApiClient, describe, json_object
from ..models import ModelCompletion, ModelCompletionBatch
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

logger = logging.getLogger("raif_batches.anthropic")

ANTHROPIC_VERSION = "2023-06-01"
BATCHES_PATH = "/v1/messages/batches"
#: What ``upload_input`` returns: there is no file, the requests go inline in the create.
INLINE_INPUT = "inline"
#: The clock difference allowed between Anthropic's ``created_at`` and our database's clock
#: when a lost create is matched by time.
RECONCILE_CLOCK_MARGIN = timedelta(seconds=120)
#: The list's largest page.
MAX_LIST_LIMIT = 1000
#: Result lines longer than this are skipped (one line is one Messages response).
MAX_RESULT_LINE_BYTES = 64 * 1024 * 1024
#: Anthropic's ``stop_reason`` -> the chat-completions ``finish_reason``.
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "model_context_window_exceeded": "length",
}
#: The normalised statuses of an ended batch, whose results can be read.
ENDED = frozenset({"ended", "canceled", "expired"})
JSON_OBJECT_INSTRUCTION = (
    "Answer with a single valid JSON object and nothing else: no prose, no code fences."
)


class AnthropicClient(ApiClient):
    """Anthropic's errors are ``{"type": "error", "error": {"type", "message"}}``; the key goes
    in ``x-api-key``; ``529 overloaded_error`` is as transient as a 503."""

    auth_header = "x-api-key"
    auth_prefix = ""
    default_headers: Mapping[str, str] = {"anthropic-version": ANTHROPIC_VERSION}

    def classify_error(self, response: requests.Response) -> ProviderError:
        failure = super().classify_error(response)
        if response.status_code == 529 and not isinstance(failure, ProviderUnavailable):
            return ProviderUnavailable(
                str(failure),
                status_code=failure.status_code,
                payload=failure.payload,
                response=response,
            )
        return failure

    def error_message(self, payload: Any) -> str:
        if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
            error = payload["error"]
            message = error.get("message") if isinstance(error.get("message"), str) else ""
            kind = error.get("type") if isinstance(error.get("type"), str) else ""
            return f"{kind}: {message}" if kind and message else (message or kind)
        return super().error_message(payload)

    def is_authentication_error(self, response: requests.Response, payload: Any) -> bool:
        error = payload.get("error") if isinstance(payload, dict) else None
        kind = error.get("type") if isinstance(error, dict) else None
        return response.status_code == 401 or kind == "authentication_error"


# --- Reading the wire: never raises ---------------------------------------------------------


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 time (``2024-09-24T18:37:24.100435Z``); None when absent or unreadable."""
    if not isinstance(value, str) or not value or len(value) > 64:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except (ValueError, TypeError, OverflowError):
        logger.warning("Unreadable time from Anthropic: %.80r", value)
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _count(value: Any) -> int:
    """A counter or token count: a non-negative int, else 0."""
    if isinstance(value, bool):
        return 0
    try:
        return max(int(value or 0), 0)
    except (TypeError, ValueError, OverflowError):
        return 0


def _int_or_none(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def normalise_counts(raw: Any) -> dict[str, int] | None:
    """``request_counts`` mapped per the fact sheet; None when it is not an object."""
    if not isinstance(raw, dict):
        return None
    processing, succeeded = _count(raw.get("processing")), _count(raw.get("succeeded"))
    errored, canceled = _count(raw.get("errored")), _count(raw.get("canceled"))
    expired = _count(raw.get("expired"))
    return {
        "total": processing + succeeded + errored + canceled + expired,
        "pending": processing,
        "succeeded": succeeded,
        "failed": errored,
        "cancelled": canceled + expired,
    }


def normalise_status(payload: dict[str, Any]) -> str:
    """``processing_status`` (with ``cancel_initiated_at`` and the expired count) mapped to a
    normalised status. An unknown value reads as in flight: it is never taken for an end."""
    status = payload.get("processing_status")
    if status == "ended":
        if payload.get("cancel_initiated_at"):
            return "canceled"
        if _count(_dict(payload.get("request_counts")).get("expired")) > 0:
            return "expired"
        return "ended"
    if status == "canceling":
        return "cancelling"
    if status != "in_progress":
        logger.warning("Unknown processing_status from Anthropic: %.80r", status)
    return "in_progress"


def parse_batch(payload: Any) -> BatchSnapshot:
    """A snapshot of a ``message_batch`` object; never raises, whatever the fields hold."""
    if not isinstance(payload, dict):
        payload = {}
    return BatchSnapshot(
        provider_batch_id=_text(payload.get("id")),
        counts=normalise_counts(payload.get("request_counts")),
        status=normalise_status(payload),
        created_at=parse_time(payload.get("created_at")),
        cancelled_at=parse_time(payload.get("cancel_initiated_at")),
        expires_at=parse_time(payload.get("expires_at")),
        raw=payload,
    )


def tool_call(block: dict[str, Any]) -> dict[str, Any]:
    """A ``tool_use`` block as an OpenAI-shaped tool call (arguments as JSON text)."""
    try:
        arguments = json.dumps(block.get("input", {}), ensure_ascii=False)
    except (TypeError, ValueError):
        arguments = "{}"
    return {
        "id": _text(block.get("id")),
        "type": "function",
        "function": {"name": _text(block.get("name")), "arguments": arguments},
    }


def parse_message(payload: dict[str, Any]) -> ParsedCompletion:
    """Parse a Messages response (synchronous or a batch line's ``message``).

    Text blocks are joined; ``tool_use`` blocks become tool calls; thinking blocks are kept in
    the payload only. Every input token counts in ``prompt_tokens`` (uncached, cache writes and
    cache reads); thinking is part of ``output_tokens`` (``reasoning_included``).
    """
    content = payload.get("content")
    blocks = [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []
    text = "".join(_text(b.get("text")) for b in blocks if b.get("type") == "text")
    calls = [tool_call(b) for b in blocks if b.get("type") == "tool_use"]
    stop_reason = _text(payload.get("stop_reason"))
    usage = _dict(payload.get("usage"))
    uncached = _int_or_none(usage.get("input_tokens"))
    written = _int_or_none(usage.get("cache_creation_input_tokens"))
    read = _int_or_none(usage.get("cache_read_input_tokens"))
    output = _int_or_none(usage.get("output_tokens"))
    parts = [p for p in (uncached, written, read) if p is not None]
    prompt = sum(parts) if parts else None
    written_1h = _int_or_none(_dict(usage.get("cache_creation")).get("ephemeral_1h_input_tokens"))
    thinking = _int_or_none(_dict(usage.get("output_tokens_details")).get("thinking_tokens"))
    total = None if prompt is None and output is None else (prompt or 0) + (output or 0)
    return ParsedCompletion(
        text=text,
        tool_calls=calls or None,
        finish_reason=FINISH_REASONS.get(stop_reason, stop_reason),
        prompt_tokens=prompt,
        completion_tokens=output,
        total_tokens=total,
        reasoning_tokens=thinking,
        cached_tokens=read,
        cost_ticks=None,  # Anthropic reports no cost: the lifecycle prices from the table
        payload=payload,
        cache_write_tokens=written,
        cache_write_1h_tokens=written_1h,
        reasoning_included=True,
    )


def error_text(error: Any) -> str:
    """An ``errored`` line's reason: the nested envelope ``{"type": "error", "error": {"type",
    "message"}}``, or a flat ``{"type", "message"}``, as ``"<type>: <message>"``."""
    if isinstance(error, str) and error:
        return error
    outer = _dict(error)
    inner = outer.get("error")
    source = inner if isinstance(inner, dict) else outer
    kind, message = _text(source.get("type")), _text(source.get("message"))
    if kind == "error":
        kind = ""
    if kind and message:
        return f"{kind}: {message}"
    if message or kind:
        return message or kind
    return "The provider reported an error without a message."


def parse_result_line(item: dict[str, Any], custom_id: str) -> ResultEntry:
    """One results line, by its ``result.type``."""
    result = _dict(item.get("result"))
    kind = result.get("type")
    if kind == "succeeded":
        message = result.get("message")
        if isinstance(message, dict):
            return ResultEntry(custom_id=custom_id, completion=parse_message(message))
        return ResultEntry(
            custom_id=custom_id,
            error="The provider's succeeded result for this request carries no message object.",
        )
    if kind == "errored":
        return ResultEntry(custom_id=custom_id, error=error_text(result.get("error")))
    if kind == "canceled":
        return ResultEntry(
            custom_id=custom_id,
            error="The batch was canceled before this request ran.",
            not_run="cancelled",
        )
    if kind == "expired":
        return ResultEntry(
            custom_id=custom_id,
            error="The batch expired before this request ran.",
            not_run="expired",
        )
    if kind is None:
        return ResultEntry(
            custom_id=custom_id, error="The provider's line for this request carries no result."
        )
    return ResultEntry(
        custom_id=custom_id,
        error=f"The provider returned an unknown result type {str(kind)[:40]!r}.",
    )


def listing_page(payload: Any) -> str | None:
    """The list's page: an object whose ``data`` is a list (or absent)."""
    if not isinstance(payload, dict):
        return f"expected a JSON object, got {describe(payload)}"
    if not isinstance(payload.get("data") or [], list):
        return "'data' is not a list"
    return None


# --- Writing the wire: chat-completions body -> Messages body -------------------------------


def _content_blocks(content: Any) -> list[dict[str, Any]]:
    """Chat content (a string or content parts) as Messages content blocks."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text":
            block = {"type": "text", "text": _text(part.get("text"))}
            if "cache_control" in part:
                block["cache_control"] = part["cache_control"]
            blocks.append(block)
        elif kind == "image_url":
            url = _text(_dict(part.get("image_url")).get("url") or part.get("image_url"))
            blocks.append({"type": "image", "source": _image_source(url)})
        else:
            blocks.append(part)  # already an Anthropic block (image, document, tool_result...)
    return blocks


def _image_source(url: str) -> dict[str, Any]:
    if url.startswith("data:") and ";base64," in url:
        media_type, _, data = url[5:].partition(";base64,")
        return {"type": "base64", "media_type": media_type, "data": data}
    return {"type": "url", "url": url}


def _tool_use(call: Any) -> dict[str, Any] | None:
    if not isinstance(call, dict):
        return None
    function = _dict(call.get("function"))
    raw = function.get("arguments")
    try:
        arguments = json.loads(raw) if isinstance(raw, str) and raw else (raw or {})
    except ValueError:
        arguments = {"arguments": raw}
    return {
        "type": "tool_use",
        "id": _text(call.get("id")),
        "name": _text(function.get("name")),
        "input": arguments if isinstance(arguments, dict) else {"value": arguments},
    }


def _tool(tool: Any) -> Any:
    if isinstance(tool, dict) and tool.get("type") == "function":
        function = _dict(tool.get("function"))
        converted: dict[str, Any] = {
            "name": function.get("name"),
            "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
        }
        if function.get("description"):
            converted["description"] = function["description"]
        return converted
    return tool  # an Anthropic tool already (a server tool, a client tool with input_schema)


def _tool_choice(choice: Any) -> Any:
    if choice == "auto":
        return {"type": "auto"}
    if choice == "none":
        return {"type": "none"}
    if choice == "required":
        return {"type": "any"}
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "tool", "name": _dict(choice.get("function")).get("name")}
    return choice


def _format_instruction(response_format: Any) -> str | None:
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return JSON_OBJECT_INSTRUCTION
    if kind == "json_schema":
        schema = _dict(response_format.get("json_schema")).get("schema")
        return (
            f"{JSON_OBJECT_INSTRUCTION} It must match this JSON schema: "
            f"{json.dumps(schema, ensure_ascii=False, separators=(',', ':'))}"
        )
    return None


def messages_params(body: Mapping[str, Any]) -> dict[str, Any]:
    """A chat-completions body as a Messages create body (see the module docstring)."""
    params: dict[str, Any] = {"model": body.get("model")}
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)  # consecutive turns of one role merge
        else:
            messages.append({"role": role, "content": blocks})

    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            system.extend(_content_blocks(content))
        elif role == "tool":
            result: dict[str, Any] = {
                "type": "tool_result",
                "tool_use_id": _text(message.get("tool_call_id")),
                "content": content if isinstance(content, str) else _content_blocks(content),
            }
            add("user", [result])
        elif role == "assistant":
            blocks = _content_blocks(content)
            for call in message.get("tool_calls") or []:
                use = _tool_use(call)
                if use is not None:
                    blocks.append(use)
            add("assistant", blocks)
        else:
            add("user", _content_blocks(content))
    for turn in messages:  # a lone text block reads as the plain string it was
        blocks = turn["content"]
        if len(blocks) == 1 and blocks[0].get("type") == "text" and len(blocks[0]) == 2:
            turn["content"] = blocks[0]["text"]
    instruction = _format_instruction(body.get("response_format"))
    if instruction:
        system.append({"type": "text", "text": instruction})
    if system:
        plain = all(set(block) == {"type", "text"} for block in system)
        params["system"] = "\n\n".join(b["text"] for b in system) if plain else system
    params["messages"] = messages
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    if max_tokens is not None:
        params["max_tokens"] = max_tokens
    if body.get("tools"):
        params["tools"] = [_tool(tool) for tool in body["tools"]]
    if body.get("tool_choice") is not None:
        params["tool_choice"] = _tool_choice(body["tool_choice"])
    stop = body.get("stop")
    if stop:
        params["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    handled = {
        "model",
        "messages",
        "max_tokens",
        "max_completion_tokens",
        "tools",
        "tool_choice",
        "response_format",
        "stop",
    }
    for key, value in body.items():
        if key not in handled:
            params[key] = value  # temperature, top_p, top_k, thinking, metadata...
    return params


class AnthropicStrategy(BatchStrategy):
    provider = "anthropic"
    default_model = "claude-haiku-4-5"
    max_requests_per_batch = 100_000
    max_file_bytes = 256 * 1024 * 1024
    # No per-line limit is documented: a line is bounded by the whole body's.
    max_line_bytes = 256 * 1024 * 1024
    max_custom_id_length = 64
    custom_id_pattern = "[a-zA-Z0-9_-]{1,64}"
    reconcile_by_name = False
    results_lag_counters = False
    batch_list_newest_first = True
    list_page_size = MAX_LIST_LIMIT

    def __init__(self, client: AnthropicClient | None = None):
        super().__init__()
        self._client = client
        #: Result lines and list entries skipped, by reason.
        self.ignored_entries: Counter[str] = Counter()

    @property
    def client(self) -> AnthropicClient:
        if self._client is None:
            self._client = AnthropicClient.for_provider(self.provider)
        return self._client

    # -- submission ---------------------------------------------------------------------------

    @classmethod
    def check_request(cls, request: Mapping[str, Any]) -> str | None:
        max_tokens = request.get("max_tokens", request.get("max_completion_tokens"))
        if max_tokens is None:
            return "max_tokens is required by Anthropic's Messages API."
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            return "max_tokens must be a positive integer for Anthropic."
        temperature = request.get("temperature")
        if isinstance(temperature, int | float) and not 0 <= temperature <= 1:
            return "temperature must be between 0 and 1 for Anthropic."
        return None

    def build_line(self, batch: ModelCompletionBatch, completion: ModelCompletion) -> bytes:
        """One element of the create body's ``requests`` list (no separator)."""
        request = {
            "custom_id": completion.batch_custom_id,
            "params": messages_params(completion.request_body(batch.model)),
        }
        return json.dumps(request, ensure_ascii=False, separators=(",", ":")).encode()

    def upload_input(self, batch: ModelCompletionBatch, lines: Iterable[bytes]) -> str:
        """Nothing to upload: check the create body's limits while consuming the lines."""
        self._write_body(_Discard(), lines)
        return INLINE_INPUT

    def _write_body(self, out: _Sink, lines: Iterable[bytes]) -> int:
        """``{"requests":[...]}`` into ``out``; its size. Refuses the batch past the limits."""
        size = out.write(b'{"requests":[')
        count = 0
        for count, line in enumerate(lines, start=1):
            if count > self.max_requests_per_batch:
                raise InvalidBatchRequest(
                    f"more than {self.max_requests_per_batch} requests; Anthropic accepts at most "
                    "that many per batch. Split them with raif_batches.create_batches()."
                )
            if count > 1:
                size += out.write(b",")
            size += out.write(line)
            if size + 2 > self.max_file_bytes:
                raise InvalidBatchRequest(
                    f"the create body exceeds {self.max_file_bytes} bytes; Anthropic accepts at "
                    "most that much per batch. Split the requests with "
                    "raif_batches.create_batches()."
                )
        if count == 0:
            raise InvalidBatchRequest("a batch needs at least one request.")
        size += out.write(b"]}")
        return size

    def create_provider_batch(self, batch: ModelCompletionBatch) -> BatchSnapshot:
        from ..lifecycle.submission import iter_lines

        with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as body:
            size = self._write_body(body, iter_lines(self, batch))
            body.seek(0)
            logger.info("Batch %s: creating with a %d-byte inline body", batch.pk, size)
            answer = self.client.request(
                "POST",
                BATCHES_PATH,
                idempotent=False,
                data=body,
                headers={"Content-Type": "application/json", "Content-Length": str(size)},
                # Without an id the batch may still exist: ambiguous, reconciled by time.
                expect=json_object("id"),
            )
        return parse_batch(answer)

    def find_provider_batches(
        self, lost: Collection[LostCreate], *, created_after: datetime | None
    ) -> BatchListing:
        """Candidates for each lost create, by time window and request count.

        The list is newest first: it is read back until a whole page is older than every
        window (and than ``created_after``), and bounded by RECONCILE_MAX_PAGES /
        RECONCILE_MAX_SECONDS (then ``complete=False``). Several candidates for one create
        are narrowed by their custom ids once every one of them has ended
        (:meth:`_narrow_by_custom_ids`); otherwise every candidate is returned and the
        lifecycle decides (see the module docstring).
        """
        listing = self._list_candidates(lost, created_after=created_after)
        found = {
            name: self._narrow_by_custom_ids(name, candidates)
            for name, candidates in listing.found.items()
        }
        return dataclasses.replace(listing, found=found)

    def _narrow_by_custom_ids(
        self, name: str, candidates: tuple[BatchSnapshot, ...]
    ) -> tuple[BatchSnapshot, ...]:
        """The one candidate whose results carry exactly our batch's custom ids, when all
        the candidates have ended and their results could be read; else all of them.

        A batch our create made holds exactly our custom ids, so when exactly one candidate
        does, it is ours. Anything less certain (a candidate still running, results that
        cannot be read, no match, or several: a stranger's copy of the same requests) changes
        nothing: the operator is shown every candidate. Never raises.
        """
        if len(candidates) < 2 or any(c.status not in ENDED for c in candidates):
            return candidates
        wanted = self._local_custom_ids(name)
        if wanted is None:
            return candidates
        matching = []
        for candidate in candidates:
            served = self._result_custom_ids(candidate.provider_batch_id)
            if served is None:
                return candidates
            if served == wanted:
                matching.append(candidate)
        if len(matching) == 1:
            logger.warning(
                "Lost create %s: provider batch %s alone holds its %d custom ids",
                name,
                matching[0].provider_batch_id,
                len(wanted),
            )
            return tuple(matching)
        return candidates

    def _local_custom_ids(self, name: str) -> set[str] | None:
        """The custom ids of the local batch a lost create was for (a read, never a write)."""
        ids = set(
            ModelCompletion.objects.filter(
                batch__provider=self.provider, batch__provider_batch_name=name
            ).values_list("batch_custom_id", flat=True)
        )
        return ids or None

    def _result_custom_ids(self, provider_batch_id: str) -> set[str] | None:
        """The custom ids a batch's results carry; None when they cannot be read."""
        ids: set[str] = set()
        try:
            for page in self._result_pages(provider_batch_id):
                ids.update(entry.custom_id for entry in page)
        except ProviderError as error:
            logger.warning("Results of candidate %s unreadable: %s", provider_batch_id, error)
            return None
        return ids

    def _list_candidates(
        self, lost: Collection[LostCreate], *, created_after: datetime | None
    ) -> BatchListing:
        wanted = frozenset(create.name for create in lost)
        windows = {create.name: self._window(create) for create in lost}
        earliest = min((start for start, _ in windows.values()), default=None)
        if created_after is not None and (earliest is None or created_after < earliest):
            earliest = created_after
        found: dict[str, list[BatchSnapshot]] = {}
        max_pages = int(get_setting("RECONCILE_MAX_PAGES"))
        max_seconds = float(get_setting("RECONCILE_MAX_SECONDS"))
        started = monotonic()
        pages = 0
        after: str | None = None
        seen: set[str] = set()
        while True:
            params: dict[str, Any] = {"limit": MAX_LIST_LIMIT}
            if after:
                params["after_id"] = after
            answer = self.client.request(
                "GET", BATCHES_PATH, idempotent=True, params=params, expect=listing_page
            )
            pages += 1
            items = [i for i in answer.get("data") or [] if isinstance(i, dict)][:MAX_LIST_LIMIT]
            older = 0
            for item in items:
                snapshot = parse_batch(item)
                if not snapshot.provider_batch_id or snapshot.provider_batch_id in seen:
                    continue
                seen.add(snapshot.provider_batch_id)
                created = snapshot.created_at
                if created is None:
                    continue
                if earliest is not None and created < earliest:
                    older += 1
                total = (snapshot.counts or {}).get("total", 0)
                for create in lost:
                    start, end = windows[create.name]
                    if start <= created <= end and total == create.request_count:
                        found.setdefault(create.name, []).append(snapshot)
            listing = BatchListing(names=wanted, found={k: tuple(v) for k, v in found.items()})
            last_id = answer.get("last_id")
            if not answer.get("has_more") or not items or not isinstance(last_id, str):
                return listing
            if older and older == len(items):
                return listing  # the rest of the list is older than any window
            if last_id == after:
                return BatchListing(
                    names=wanted,
                    found=listing.found,
                    complete=False,
                    stopped_because="the list's cursor did not move",
                )
            after = last_id
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

    def list_batches_page(self, after: str | None) -> BatchListPage:
        params: dict[str, Any] = {"limit": self.list_page_size}
        if after:
            params["after_id"] = after
        answer = self.client.request(
            "GET", BATCHES_PATH, idempotent=True, params=params, expect=listing_page
        )
        items = [i for i in answer.get("data") or [] if isinstance(i, dict)][: self.list_page_size]
        last_id = answer.get("last_id")
        more = bool(answer.get("has_more")) and bool(items) and isinstance(last_id, str)
        more = more and last_id != after
        return BatchListPage([parse_batch(item) for item in items], last_id if more else None)

    @staticmethod
    def _window(create: LostCreate) -> tuple[datetime, datetime]:
        end = create.ended_at or create.attempted_at + timedelta(seconds=sum(request_timeout()))
        return create.attempted_at - RECONCILE_CLOCK_MARGIN, end + RECONCILE_CLOCK_MARGIN

    # -- status, cancel -----------------------------------------------------------------------

    def get_provider_batch(self, provider_batch_id: str) -> BatchSnapshot:
        return parse_batch(
            self.client.request(
                "GET", f"{BATCHES_PATH}/{provider_batch_id}", idempotent=True, expect=json_object()
            )
        )

    def cancel_provider_batch(self, provider_batch_id: str) -> BatchSnapshot:
        # Cancelling twice is harmless, so the call may be retried.
        return parse_batch(
            self.client.request(
                "POST",
                f"{BATCHES_PATH}/{provider_batch_id}/cancel",
                idempotent=True,
                expect=json_object(),
            )
        )

    # -- results ------------------------------------------------------------------------------

    def iter_result_pages(self, provider_batch_id: str) -> Iterator[list[ResultEntry]]:
        """Pages of parsed results, read from a download (in memory up to 8 MB, then on disk);
        the next page is parsed while the caller stores this one (see
        :mod:`raif_batches.readahead`)."""
        return read_ahead(self._result_pages(provider_batch_id), name="raif-results")

    def _result_pages(self, provider_batch_id: str) -> Iterator[list[ResultEntry]]:
        path = f"{BATCHES_PATH}/{provider_batch_id}/results"
        size = max(1, int(get_setting("RESULTS_PAGE_SIZE")))
        # In memory up to 8 MB, as OpenAI's files: a file on disk per batch cost a poll in
        # which 1,000 small batches end 0.4 ms each to close alone.
        with tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024) as sink:
            self.client.download(path, sink)
            page = ResultPage()
            for raw in iter(lambda: sink.readline(MAX_RESULT_LINE_BYTES + 1), b""):
                if not raw.strip():
                    continue  # blank lines between results are allowed
                entry = self._parse_line(raw)
                if entry is None:
                    page.unreadable += 1
                else:
                    page.append(entry)
                if len(page) >= size:
                    yield page
                    page = ResultPage()
            if page or page.unreadable:
                yield page

    def _parse_line(self, raw: bytes) -> ResultEntry | None:
        if len(raw) > MAX_RESULT_LINE_BYTES:
            self.ignored_entries["line too long"] += 1
            logger.warning("Anthropic result line over %d bytes skipped", MAX_RESULT_LINE_BYTES)
            return None
        line = raw.strip()
        if not line:
            return None
        try:
            item = json.loads(line)
        except (ValueError, RecursionError):
            self.ignored_entries["not JSON"] += 1
            logger.warning("Anthropic result line that is not JSON skipped: %.200r", line)
            return None
        custom_id = item.get("custom_id") if isinstance(item, dict) else None
        if not isinstance(custom_id, str) or not custom_id:
            self.ignored_entries["without an id"] += 1
            logger.warning("Anthropic result line without a custom_id skipped: %.200r", line)
            return None
        return parse_result_line(item, custom_id)

    def parse_completion(self, payload: dict[str, Any]) -> ParsedCompletion:
        return parse_message(payload)


class _Sink(Protocol):
    def write(self, data: bytes, /) -> int: ...


class _Discard:
    """A sink that only counts: the limits are checked without keeping the body."""

    def write(self, data: bytes) -> int:
        return len(data)
