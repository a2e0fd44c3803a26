"""A local stand-in for Anthropic's Message Batches API, as the fact sheet describes it.

Same control surface as xAI's emulator (:mod:`.state`, :mod:`.server`): a lazy state under one
``RLock`` (a batch moves on only when a call observes it, by reads and emulator time; a read is
a GET of the batch or its entry on a served list page), the same knob names where they mean the
same (``latency``, ``seed``, ``transient_failure_rate``,
``requests_per_read``, ``share_per_read``, ``seconds_per_request``, ``max_page_size``,
``default_page_size``, ``expire_after_seconds``, ``supported_models``, ``prices``,
``missing_result_ids``...), the same faults and endpoint names (``create_batch``,
``get_batch``, ``list_batches``, ``cancel_batch``, ``list_results``, ``delete_batch``).

What the default (``realistic``) profile reproduces, each a switch:

* inline creates validated synchronously with the exact 400 messages (empty list, custom id
  pattern and length, duplicates), 413 past ``max_body_bytes``; ``params`` validated late:
  missing ``messages``, an unknown model (``not_found_error``), ``max_tokens`` absent or 0,
  ``stream: true`` come back as ``errored`` lines;
* no validation phase (``validation_reads`` is accepted and ignored); lines finish over several
  reads (``share_per_read``); counts: ``processing`` only until the batch ends, the others 0
  (the reference; ``live_counts=True`` fills them as lines finish, as [GW] observed);
* ``retry-after: 10`` on in-progress polls (``retry_after_in_progress``);
* results only once ended (404 ``has no available results`` before), in shuffled order
  (``shuffle_results``), mixed ``\\n`` / ``\\r\\n`` (``mixed_line_endings``), the last line without
  a newline (``last_line_newline=False``), ``content-type: application/x-jsonl``; an absolute
  ``results_url`` on the emulator's own origin;
* cancel: ``canceling`` with ``cancel_initiated_at``, ``cancel_finishes`` in-flight lines still
  succeed, the rest ``canceled``, ``ended`` after ``cancel_reads`` reads or ``cancel_seconds``;
* expiry at ``created_at + expire_after_seconds`` (24 h): finished lines kept, the rest
  ``expired``; ``archived_at`` and results gone after ``retention_seconds`` (29 days);
* delete only once ended (400 otherwise); the nested error envelope, 401
  ``authentication_error``, 400 without ``anthropic-version``; list newest first with
  ``has_more`` / ``first_id`` / ``last_id``, ``after_id`` / ``before_id``.

Hostile switches, off by default: ``results_gone_status``, ``page_overflow``,
``endless_pagination``, ``flat_errors`` (errored lines as ``{"type","message"}``),
``blank_result_lines``, ``garbage_result_lines``.

Answers come from :func:`.completions.complete` (its ``[[emulator:...]]`` markers work: an error
marker makes an ``errored`` line), reshaped to a Messages response. A system prompt asking for
a JSON object (the wording the client turns ``response_format`` into) is answered with JSON,
following the schema it names. Prompt caching: a system
prompt or block with ``cache_control`` is written to the cache by the first line of the batch
that sends it (``cache_creation_input_tokens``, 5-minute or 1-hour by its ``ttl``) and read by the
later ones (``cache_read_input_tokens``).
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from typing import Any

from .base import Call, EmulatorStateBase, Profiles
from .completions import ModelPrice, complete, model_matches
from .faults import Fault
from .server import EmulatorServer, RawAnswer, Routes, _Handler, _HTTPServer, _json
from .state import ApiError

MB = 1024 * 1024
ANTHROPIC_VERSION = "2023-06-01"
CUSTOM_ID_PATTERN = "^[a-zA-Z0-9_-]{1,64}$"
MAX_LIST_LIMIT = 1000  # the list's documented range of ``limit``: 1..1000
ROUTES: Routes = [
    ("POST", re.compile(r"/v1/messages/batches"), "create_batch"),
    ("GET", re.compile(r"/v1/messages/batches"), "list_batches"),
    ("GET", re.compile(r"/v1/messages/batches/(?P<id>[^/]+)"), "get_batch"),
    ("DELETE", re.compile(r"/v1/messages/batches/(?P<id>[^/]+)"), "delete_batch"),
    ("POST", re.compile(r"/v1/messages/batches/(?P<id>[^/]+)/cancel"), "cancel_batch"),
    ("GET", re.compile(r"/v1/messages/batches/(?P<id>[^/]+)/results"), "list_results"),
]
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
BAD_KEY_MESSAGE = "invalid x-api-key"
STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


class AnthropicApiError(ApiError):
    """An error answer with Anthropic's envelope; ``type`` defaults from the status."""

    def __init__(self, status: int, message: str, error_type: str | None = None) -> None:
        super().__init__(status, message)
        self.error_type = error_type or ERROR_TYPES.get(status, "api_error")


def error_envelope(status: int, message: str, error_type: str | None = None) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": error_type or ERROR_TYPES.get(status, "api_error"), "message": message},
        "request_id": f"req_{uuid.uuid4().hex[:24]}",
    }


def _default_prices() -> dict[str, ModelPrice]:
    # Only used for the emulator's own figures (Anthropic reports no cost): 50% off in batches.
    return {
        "claude-haiku-4-5*": ModelPrice(
            input=1.0, cached_input=0.10, output=5.0, batch_discount=0.5
        ),
        "claude-sonnet-4-5*": ModelPrice(
            input=3.0, cached_input=0.30, output=15.0, batch_discount=0.5
        ),
        "claude-opus-4-1*": ModelPrice(
            input=15.0, cached_input=1.5, output=75.0, batch_discount=0.5
        ),
    }


SUPPORTED_MODELS = (
    "claude-haiku-4-5*",
    "claude-sonnet-4-5*",
    "claude-sonnet-4-0*",
    "claude-sonnet-4-2*",
    "claude-opus-4-5*",
    "claude-opus-4-1*",
    "claude-opus-4-0*",
    "claude-opus-4-2*",
    "claude-3-7-sonnet*",
    "claude-3-5-haiku*",
    "claude-3-haiku*",
)
#: What the fast profile changes from the default: no pacing, no quirks.
FAST_PROFILE: dict[str, Any] = {
    "requests_per_read": None,
    "share_per_read": 0.0,
    "seconds_per_request": 0.0,
    "shuffle_results": False,
    "mixed_line_endings": False,
    "last_line_newline": True,
    "retry_after_in_progress": None,
    "cancel_finishes": 0,
    "cancel_reads": 0,
}


@dataclass
class AnthropicEmulatorConfig(Profiles):
    """Every knob of the Anthropic emulator; tests may change fields while it runs."""

    fast_profile = FAST_PROFILE

    latency: float = 0.0
    seed: int = 0
    transient_failure_rate: float = 0.0
    requests_per_read: int | None = None  # lines finished per read (a GET, or a served list entry)
    share_per_read: float = 0.25  # else this share per read (at least one line)
    seconds_per_request: float = 0.0  # emulator seconds per finished line (0: off)
    validation_reads: int = 0  # accepted and ignored: Anthropic has no validation phase
    max_page_size: int = 1000  # larger limits (up to the API's 1000) are served this many
    default_page_size: int = 20
    expire_after_seconds: float = 24 * 3600.0
    retention_seconds: float = 29 * 86400.0  # results kept after created_at
    supported_models: tuple[str, ...] = SUPPORTED_MODELS
    prices: dict[str, ModelPrice] = field(default_factory=_default_prices)
    missing_result_ids: set[str] = field(default_factory=set)  # never served as results
    max_requests: int = 100_000
    max_body_bytes: int = 256 * MB
    # -- realistic quirks (on by default, off in the fast profile) ------------------------------
    live_counts: bool = False  # False: the reference (only `processing` moves until ended)
    shuffle_results: bool = True
    mixed_line_endings: bool = True
    last_line_newline: bool = False
    retry_after_in_progress: float | None = 10.0
    absolute_results_url: bool = True
    cancel_finishes: int = 1  # in-flight lines that still succeed after a cancel
    cancel_reads: int = 1  # GETs after the cancel's own answer that still read `canceling`
    cancel_seconds: float = 25.0  # or this much emulator time
    # -- hostile switches (off by default) -------------------------------------------------------
    results_gone_status: int | None = None  # results answer this once the batch has ended
    page_overflow: int = 0  # list pages carry this many entries beyond the asked limit
    endless_pagination: tuple[str, ...] = ()  # "list_batches": has_more never ends (wraps)
    flat_errors: bool = False  # errored lines carry {"type","message"} instead of the envelope
    blank_result_lines: bool = False  # blank lines between result lines
    garbage_result_lines: int = 0  # this many non-JSON / id-less lines in the results


@dataclass(eq=False, slots=True)
class Line:
    custom_id: str
    params: Any
    state: str = "pending"  # pending | succeeded | failed | cancelled | expired
    result: dict[str, Any] | None = None
    finish_time: float | None = None


@dataclass(eq=False)
class Batch:
    id: str
    seq: int
    created_at: float
    expires_at: float
    lines: list[Line] = field(default_factory=list)
    next_pending: int = 0
    credit: float = 0.0
    last_progress: float = 0.0
    ended_at: float | None = None
    cancel_initiated_at: float | None = None
    cancel_reads_left: int = 0
    reads: int = 0
    cache: set[str] = field(default_factory=set)

    def counts(self, live: bool) -> dict[str, int]:
        counts = dict.fromkeys(("processing", "succeeded", "errored", "canceled", "expired"), 0)
        if self.ended_at is None and not live:
            counts["processing"] = len(self.lines)
            return counts
        key = {
            "pending": "processing",
            "succeeded": "succeeded",
            "failed": "errored",
            "cancelled": "canceled",
            "expired": "expired",
        }
        for line in self.lines:
            counts[key[line.state]] += 1
        return counts


def rfc3339(value: float | None) -> str | None:
    if value is None:
        return None
    return datetime.fromtimestamp(value, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class AnthropicEmulatorState(EmulatorStateBase[AnthropicEmulatorConfig]):
    """The emulated provider: batches, over the shared clock, calls and faults; all public
    methods take the one lock."""

    config_class = AnthropicEmulatorConfig

    def __init__(
        self, config: AnthropicEmulatorConfig | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(config, clock)
        self.batches: dict[str, Batch] = {}
        self._seq = 0
        self.origin = ""  # set by the server: results_url points at it

    def _forget(self) -> None:
        self.batches.clear()
        self._seq = 0

    def _transient_fault(self) -> Fault | None:
        transient = super()._transient_fault()
        if transient is not None and transient.kind == "status":
            # The shared book writes xAI's body; the server then writes Anthropic's.
            transient = Fault(None, "status", status=transient.status)
        return transient

    # -- batches -------------------------------------------------------------------------------
    def create_batch(self, data: dict[str, Any]) -> dict[str, Any]:
        """Validate the envelope synchronously (the exact 400s), then accept every line."""
        with self._lock:
            requests = data.get("requests")
            if not isinstance(requests, list):
                raise AnthropicApiError(400, "requests: Field required")
            if not requests:
                raise AnthropicApiError(
                    400, "requests: List should have at least 1 item after validation, not 0"
                )
            if len(requests) > self.config.max_requests:
                raise AnthropicApiError(
                    400,
                    f"requests: List should have at most {self.config.max_requests} items after "
                    f"validation, not {len(requests)}",
                )
            seen: set[str] = set()
            lines: list[Line] = []
            for index, request in enumerate(requests):
                if not isinstance(request, dict):
                    raise AnthropicApiError(
                        400, f"requests.{index}: Input should be a valid dictionary"
                    )
                custom_id = request.get("custom_id")
                if not isinstance(custom_id, str):
                    raise AnthropicApiError(400, f"requests.{index}.custom_id: Field required")
                if len(custom_id) > 64:
                    raise AnthropicApiError(
                        400,
                        f"requests.{index}.custom_id: String should have at most 64 characters",
                    )
                if not re.fullmatch(CUSTOM_ID_PATTERN, custom_id):
                    raise AnthropicApiError(
                        400,
                        f"requests.{index}.custom_id: String should match pattern "
                        f"'{CUSTOM_ID_PATTERN}'",
                    )
                if "params" not in request:
                    raise AnthropicApiError(400, f"requests.{index}.params: Field required")
                lines.append(Line(custom_id, request["params"]))
            for line in lines:
                if line.custom_id in seen:
                    raise AnthropicApiError(
                        400,
                        "requests: custom_id's must be unique within a batch. Duplicate "
                        f"custom_id found: {line.custom_id}",
                    )
                seen.add(line.custom_id)
            self._seq += 1
            now = self.now()
            batch = Batch(
                id=f"msgbatch_{uuid.uuid4().hex[:24]}",
                seq=self._seq,
                created_at=now,
                expires_at=now + self.config.expire_after_seconds,
                lines=lines,
                last_progress=now,
            )
            self.batches[batch.id] = batch
            return self._view(batch)

    def get_batch(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            batch = self._batch(batch_id)
            self._observe(batch, read=True)
            return self._view(batch)

    def list_batches(
        self, limit: int | None, after_id: str | None, before_id: str | None
    ) -> dict[str, Any]:
        with self._lock:
            cfg = self.config
            size = cfg.default_page_size if limit is None else limit
            if not 1 <= size <= MAX_LIST_LIMIT:
                raise AnthropicApiError(
                    400, f"limit: Input should be between 1 and {MAX_LIST_LIMIT}"
                )
            size = min(size, cfg.max_page_size)  # a smaller page than asked, as any server may
            ordered = sorted(self.batches.values(), key=lambda b: b.seq, reverse=True)
            start, stop = 0, len(ordered)
            ids = [b.id for b in ordered]
            if after_id:
                if after_id not in ids:
                    raise AnthropicApiError(400, f"after_id: unknown batch {after_id}")
                start = ids.index(after_id) + 1
            if before_id:
                if before_id not in ids:
                    raise AnthropicApiError(400, f"before_id: unknown batch {before_id}")
                stop = ids.index(before_id)
                start = max(start, stop - size)
            take = size + max(0, cfg.page_overflow)
            page = ordered[start:stop][:take]
            has_more = start + len(page) < stop
            if "list_batches" in cfg.endless_pagination and not has_more and ordered:
                # Hostile: the list never ends; it wraps around to the newest again.
                has_more = True
                if not page:
                    page = ordered[:take]
            for batch in page:  # an entry on a served page is a look at it, as a GET is
                self._observe(batch, read=True)
            return {
                "data": [self._view(b) for b in page],
                "has_more": has_more,
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
            }

    def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            batch = self._batch(batch_id)
            self._observe(batch)
            if batch.ended_at is not None or batch.cancel_initiated_at is not None:
                return self._view(batch)  # undocumented; answered as is
            now = self.now()
            batch.cancel_initiated_at = now
            batch.cancel_reads_left = self.config.cancel_reads
            # Requests already running may finish.
            for line in batch.lines[batch.next_pending :][: self.config.cancel_finishes]:
                self._finish(batch, line, now)
                batch.next_pending += 1
            return self._view(batch)

    def delete_batch(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            batch = self._batch(batch_id)
            self._observe(batch)
            if batch.ended_at is None:
                raise AnthropicApiError(
                    400,
                    "In progress batches cannot be deleted. Consider canceling the batch instead.",
                )
            del self.batches[batch_id]
            return {"id": batch_id, "type": "message_batch_deleted"}

    def results(self, batch_id: str) -> bytes:
        """The JSONL results of an ended batch (404 before), with the configured quirks."""
        with self._lock:
            cfg = self.config
            batch = self._batch(batch_id)
            self._observe(batch)
            if batch.ended_at is None:
                raise AnthropicApiError(404, f"Message Batch {batch_id} has no available results.")
            if cfg.results_gone_status is not None:
                raise AnthropicApiError(
                    cfg.results_gone_status, f"Message Batch {batch_id} has no available results."
                )
            if self.now() >= batch.created_at + cfg.retention_seconds:
                raise AnthropicApiError(404, f"Message Batch {batch_id} has no available results.")
            entries = [
                json.dumps({"custom_id": line.custom_id, "result": self._served(line)}).encode()
                for line in batch.lines
                if line.result is not None and line.custom_id not in cfg.missing_result_ids
            ]
            for n in range(cfg.garbage_result_lines):
                entries.insert(0, b'{"result": {"type": "succeeded"}}' if n % 2 else b"<html>")
            rng = random.Random(f"{cfg.seed}/{batch.id}")
            if cfg.shuffle_results:
                rng.shuffle(entries)
            out = bytearray()
            for number, entry in enumerate(entries):
                out += entry
                last = number == len(entries) - 1
                if last and not cfg.last_line_newline:
                    break
                out += b"\r\n" if cfg.mixed_line_endings and number % 2 else b"\n"
                if cfg.blank_result_lines and not last:
                    out += b"\n"
            return bytes(out)

    def _served(self, line: Line) -> dict[str, Any] | None:
        """A line's result as served: ``flat_errors`` flattens the nested error envelope."""
        result = line.result
        if self.config.flat_errors and result is not None and result["type"] == "errored":
            inner = result["error"]["error"]
            return {
                "type": "errored",
                "error": {"type": inner["type"], "message": inner["message"]},
            }
        return result

    def retry_after(self, batch_id: str) -> float | None:
        with self._lock:
            batch = self.batches.get(batch_id)
            if batch is None or batch.ended_at is not None:
                return None
            return self.config.retry_after_in_progress

    # -- lazy progress -------------------------------------------------------------------------
    def _batch(self, batch_id: str) -> Batch:
        batch = self.batches.get(batch_id)
        if batch is None:
            raise AnthropicApiError(404, f"Message Batch {batch_id} not found.")
        return batch

    def _observe(self, batch: Batch, read: bool = False) -> None:
        if batch.ended_at is not None:
            return
        now = self.now()
        if batch.cancel_initiated_at is not None:
            if read:
                batch.cancel_reads_left -= 1
            waited = now - batch.cancel_initiated_at
            if batch.cancel_reads_left < 0 or waited >= self.config.cancel_seconds:
                self._end_cancel(batch, now)
            return
        # A read after the expiry finds the batch expired; it makes no progress.
        self._progress(batch, min(now, batch.expires_at), read and now < batch.expires_at)
        if batch.next_pending >= len(batch.lines):
            batch.ended_at = max(batch.last_progress, batch.created_at)
        elif now >= batch.expires_at:
            for line in batch.lines[batch.next_pending :]:
                line.state, line.result, line.finish_time = "expired", {"type": "expired"}, now
            batch.next_pending = len(batch.lines)
            batch.ended_at = batch.expires_at

    def _end_cancel(self, batch: Batch, now: float) -> None:
        for line in batch.lines[batch.next_pending :]:
            line.state, line.result, line.finish_time = "cancelled", {"type": "canceled"}, now
        batch.next_pending = len(batch.lines)
        batch.ended_at = now

    def _finish(self, batch: Batch, line: Line, now: float) -> None:
        line.finish_time = now
        problem = self._late_problem(line.params)
        if problem is not None:
            line.state, line.result = "failed", self._errored(*problem)
            return
        params: dict[str, Any] = line.params
        chat = chat_body(params)
        outcome = complete(
            chat,
            completion_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{batch.id}/{line.custom_id}")),
            created=int(now),
            cache_hit=False,
            prices=self.config.prices,
        )
        if outcome.error is not None or outcome.completion is None:
            error = outcome.error or "Internal server error"
            line.state, line.result = "failed", self._errored("invalid_request_error", error)
            return
        message = self._message(batch, line, params, outcome.completion)
        line.state, line.result = "succeeded", {"type": "succeeded", "message": message}

    def _late_problem(self, params: Any) -> tuple[str, str] | None:
        """What Anthropic refuses per line, after the batch ends: (error type, message)."""
        if not isinstance(params, dict):
            return "invalid_request_error", "params: Input should be a valid dictionary"
        if params.get("stream") is True:
            return (
                "invalid_request_error",
                '"stream=True" is not supported in the Message Batches API',
            )
        if "messages" not in params:
            return "invalid_request_error", "messages: Field required"
        if not isinstance(params["messages"], list) or not params["messages"]:
            return "invalid_request_error", "messages: at least one message is required"
        if "max_tokens" not in params:
            return "invalid_request_error", "max_tokens: Field required"
        max_tokens = params["max_tokens"]
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            return "invalid_request_error", "max_tokens: Input should be greater than or equal to 1"
        model = params.get("model")
        if not isinstance(model, str) or not model_matches(model, self.config.supported_models):
            return "not_found_error", f"model: {model}"
        return None

    def _errored(self, error_type: str, message: str) -> dict[str, Any]:
        return {
            "type": "errored",
            "error": {
                "type": "error",
                "error": {
                    "details": {"error_visibility": "user_facing"},
                    "type": error_type,
                    "message": message,
                },
                "request_id": None,
            },
        }

    def _message(
        self, batch: Batch, line: Line, params: dict[str, Any], chat: dict[str, Any]
    ) -> dict[str, Any]:
        """A chat completion from :func:`complete` reshaped as a Messages response."""
        choice = chat["choices"][-1]
        answer = choice["message"]
        usage = chat["usage"]
        content: list[dict[str, Any]] = []
        thinking_tokens = 0
        thinking = params.get("thinking")
        if isinstance(thinking, dict) and thinking.get("type") == "enabled":
            thinking_tokens = 50 + len(line.custom_id)
            content.append(
                {"type": "thinking", "thinking": "Emulated thinking.", "signature": "emulator"}
            )
        if answer.get("content"):
            content.append({"type": "text", "text": answer["content"]})
        for call in answer.get("tool_calls") or []:
            content.append(
                {
                    "type": "tool_use",
                    "id": f"toolu_{call['id'][5:]}",
                    "name": call["function"]["name"],
                    "input": json.loads(call["function"]["arguments"]),
                }
            )
        prompt = int(usage["prompt_tokens"])
        cached, ttl = cached_prefix(params)
        written = read = written_1h = 0
        if cached is not None:
            prefix = min(prompt, max(1, len(cached) // 4))
            if cached in batch.cache:
                read = prefix
            else:
                batch.cache.add(cached)
                written = prefix
                written_1h = prefix if ttl == "1h" else 0
        output = int(usage["completion_tokens"]) + thinking_tokens
        message_usage: dict[str, Any] = {
            "input_tokens": prompt - written - read,
            "cache_creation_input_tokens": written,
            "cache_read_input_tokens": read,
            "cache_creation": {
                "ephemeral_5m_input_tokens": written - written_1h,
                "ephemeral_1h_input_tokens": written_1h,
            },
            "output_tokens": output,
            "service_tier": "batch",
        }
        if thinking_tokens:
            message_usage["output_tokens_details"] = {"thinking_tokens": thinking_tokens}
        return {
            "id": f"msg_{uuid.uuid5(uuid.NAMESPACE_URL, chat['id']).hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": params.get("model"),
            "content": content,
            "stop_reason": STOP_REASONS.get(choice["finish_reason"], "end_turn"),
            "stop_sequence": None,
            "usage": message_usage,
        }

    def _view(self, batch: Batch) -> dict[str, Any]:
        ended = batch.ended_at is not None
        status = "ended" if ended else "canceling" if batch.cancel_initiated_at else "in_progress"
        archived = self.now() >= batch.created_at + self.config.retention_seconds
        url = f"{self.origin}/v1/messages/batches/{batch.id}/results"
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": status,
            "request_counts": batch.counts(self.config.live_counts),
            "ended_at": rfc3339(batch.ended_at),
            "created_at": rfc3339(batch.created_at),
            "expires_at": rfc3339(batch.expires_at),
            "archived_at": rfc3339(batch.created_at + self.config.retention_seconds)
            if archived
            else None,
            "cancel_initiated_at": rfc3339(batch.cancel_initiated_at),
            "results_url": (
                (
                    url
                    if self.config.absolute_results_url
                    else f"/v1/messages/batches/{batch.id}/results"
                )
                if ended
                else None
            ),
        }


def _block_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            b.get("text", "") if isinstance(b.get("text"), str) else ""
            for b in content
            if isinstance(b, dict)
        )
    return ""


def chat_body(params: dict[str, Any]) -> dict[str, Any]:
    """A Messages body as the chat body :func:`complete` answers (text only, tools as
    functions), so the deterministic answers and markers serve both."""
    messages: list[dict[str, Any]] = []
    system = params.get("system")
    if system:
        messages.append({"role": "system", "content": _block_text(system)})
    for message in params.get("messages") or []:
        if isinstance(message, dict):
            messages.append(
                {"role": str(message.get("role")), "content": _block_text(message.get("content"))}
            )
    body: dict[str, Any] = {"model": params.get("model"), "messages": messages}
    response_format = json_request(_block_text(system) if system else "")
    if response_format is not None:
        body["response_format"] = response_format
    if isinstance(params.get("max_tokens"), int):
        body["max_tokens"] = params["max_tokens"]
    tools = [t for t in params.get("tools") or [] if isinstance(t, dict) and "name" in t]
    if tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {"name": t["name"], "parameters": t.get("input_schema") or {}},
            }
            for t in tools
        ]
    return body


JSON_INSTRUCTION = "Answer with a single valid JSON object"
SCHEMA_INSTRUCTION = "It must match this JSON schema: "


def json_request(system: str) -> dict[str, Any] | None:
    """A model told in its system prompt to answer JSON (the wording the client's
    ``response_format`` becomes) answers JSON, following the schema when one is given."""
    if JSON_INSTRUCTION not in system:
        return None
    _, found, rest = system.partition(SCHEMA_INSTRUCTION)
    if found:
        try:
            schema = json.JSONDecoder().raw_decode(rest.strip())[0]
        except ValueError:
            schema = None
        if isinstance(schema, dict):
            return {"type": "json_schema", "json_schema": {"schema": schema}}
    return {"type": "json_object"}


def cached_prefix(params: dict[str, Any]) -> tuple[str | None, str]:
    """The system text up to its last ``cache_control`` breakpoint, and the breakpoint's TTL
    ("5m" or "1h"); (None, "") without one. A top-level ``cache_control`` caches the system."""
    system = params.get("system")
    top = params.get("cache_control")
    if isinstance(system, list):
        text, mark, ttl = "", None, ""
        for block in system:
            if not isinstance(block, dict):
                continue
            text += block.get("text", "") if isinstance(block.get("text"), str) else ""
            control = block.get("cache_control")
            if isinstance(control, dict):
                mark, ttl = text, str(control.get("ttl", "5m"))
        if mark is not None:
            return mark, ttl
        system = text
    if isinstance(top, dict) and isinstance(system, str) and system:
        return system, str(top.get("ttl", "5m"))
    return None, ""


class _AnthropicHandler(_Handler):
    """Adds the headers an answer asks for (``retry-after``, ``request-id``)."""

    answer_headers: dict[str, str]

    def end_headers(self) -> None:
        for name, value in getattr(self, "answer_headers", {}).items():
            self.send_header(name, value)
        self.answer_headers = {}
        super().end_headers()


class _AnthropicHTTPServer(_HTTPServer):
    def __init__(self, address: tuple[str, int], emulator: EmulatorServer) -> None:
        self.emulator = emulator
        ThreadingHTTPServer.__init__(self, address, _AnthropicHandler)


class AnthropicEmulatorServer(EmulatorServer):
    """Anthropic's Message Batches API on a loopback port (``x-api-key`` auth)."""

    provider = "anthropic"
    routes = ROUTES
    path_prefix = ""
    state: AnthropicEmulatorState

    def new_state(self, config: Any) -> AnthropicEmulatorState:
        return AnthropicEmulatorState(config)

    def config_for(self, profile: str) -> AnthropicEmulatorConfig:
        return AnthropicEmulatorConfig.profile(profile)

    def error_body(
        self, status: int, message: str, error: ApiError | None = None
    ) -> dict[str, Any]:
        return error_envelope(status, message, getattr(error, "error_type", None))

    def max_body_bytes(self) -> int:
        return int(self.state.config.max_body_bytes)

    def too_large(self) -> tuple[int, dict[str, Any]]:
        return 413, error_envelope(413, "Request exceeds the maximum allowed number of bytes.")

    def authorize(self, headers: Any) -> None:
        key = (headers.get("x-api-key") if headers is not None else None) or ""
        if not self.key_matches(key.strip()):
            raise AnthropicApiError(401, BAD_KEY_MESSAGE, "authentication_error")
        if not headers.get("anthropic-version"):
            raise AnthropicApiError(400, "anthropic-version: header is required")

    def dispatch(
        self, handler: Any, call: Call, batch_id: str | None, body: bytes, bend: str | None
    ) -> dict[str, Any] | RawAnswer:
        state = self.state
        state.origin = self.origin
        handler.answer_headers = {"request-id": f"req_{uuid.uuid4().hex[:24]}"}
        endpoint, query = call.endpoint, call.query
        if endpoint == "create_batch":
            return state.create_batch(_json(body))
        if endpoint == "list_batches":
            raw = query.get("limit")
            try:
                limit = None if raw is None else int(raw)
            except ValueError:
                raise AnthropicApiError(400, "limit: Input should be a valid integer") from None
            return state.list_batches(limit, query.get("after_id"), query.get("before_id"))
        assert batch_id is not None
        if endpoint == "get_batch":
            answer = state.get_batch(batch_id)
            wait = state.retry_after(batch_id)
            if wait is not None:
                handler.answer_headers["retry-after"] = f"{wait:g}"
            return answer
        if endpoint == "cancel_batch":
            return state.cancel_batch(batch_id)
        if endpoint == "delete_batch":
            return state.delete_batch(batch_id)
        return RawAnswer(state.results(batch_id), "application/x-jsonl")

    def start(self) -> AnthropicEmulatorServer:
        self._httpd = _AnthropicHTTPServer((self.host, self.port), self)
        self.port = self._httpd.server_address[1]
        self.state.origin = self.origin
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            args=(0.05,),
            name=f"{self.provider}-emulator-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self
