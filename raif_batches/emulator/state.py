"""The emulator's in-memory world: files, batches, their lines and results, and a clock.

Everything is lazy: nothing runs in the background. A batch moves on (validation, progress,
expiry, the revert after a cancel) only when a call observes it, computed from the emulator clock
and the number of reads, so tests are deterministic and can jump in time with :meth:`advance`.

Progress rule. After validation a batch finishes its pending lines in file order, paced by three
knobs whose budgets add up: every ``GET /v1/batches/{id}`` adds ``requests_per_read`` lines or,
when that is ``None``, ``share_per_read`` of the batch's lines (at least one), and every
``seconds_per_request`` of emulator time adds one line. A knob that is off (``None`` / 0) adds
nothing; with all three off every line finishes at the first observation after validation.

Profiles. The default :class:`EmulatorConfig` plays xAI as observed (``xai-batch-api.md``): a
validation phase, lines finishing over several reads (so a cancel really cancels), ``null`` and
``""`` end tokens in turn, ``state`` left out of every third read, a cancel that partly reverts,
a rejected file with every counter at 0, real prices. ``EmulatorConfig.fast()`` drops the pacing
and the quirks for tests that only want speed. Every hostile case of issue 9 is a field that is off
by default (see the field comments and the README table), or a :class:`~.faults.Fault`.

All public methods take the one ``RLock``, so the threaded HTTP server can call them freely.
"""

from __future__ import annotations

import base64
import bisect
import json
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .base import PROFILES as PROFILES  # importable from here, as before
from .base import Call as Call  # importable from here, where it was first defined
from .base import EmulatorStateBase, Profiles
from .completions import (
    LINE_QUIRKS,
    ModelPrice,
    Outcome,
    chat_messages,
    complete,
    model_matches,
    prompt_cache_hit,
)

ENDPOINTS = (
    "upload_file",
    "create_batch",
    "get_batch",
    "list_batches",
    "list_requests",
    "list_results",
    "cancel_batch",
    "add_requests",
)
CHAT_ENDPOINT = "xai_api.Chat/GetCompletion"
LINE_KEYS = ("custom_id", "method", "url", "body")
CHAT_URLS = ("/v1/chat/completions", "/v1/responses")
MB = 1024 * 1024


class ApiError(Exception):
    """An HTTP error answer with xAI's ``{"code", "error"}`` body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _default_prices() -> dict[str, ModelPrice]:
    # xAI's prices for the batchable models in late 2026: $1.25 input, $0.20 cached input, $2.50
    # output per million tokens, 20% off in a batch (a published capture solves exactly with it).
    batch_price = ModelPrice(input=1.25, cached_input=0.20, output=2.50, batch_discount=0.20)
    return {"grok-4.3": batch_price, "grok-4.20-0309*": batch_price}


#: What the fast profile changes from the default: every line done at the first read after
#: validation, no pacing, no quirks.
FAST_PROFILE: dict[str, Any] = {
    "validation_reads": 1,  # the create and one read see all-zero counters, the next sees it done
    "requests_per_read": None,
    "share_per_read": 0.0,
    "seconds_per_request": 0.0,
    "pagination_end": None,
    "pagination_end_alternate": False,
    "omit_state_every": 0,
    "cancel_revert_count": 0,
}
RESULT_LAG_SHAPES = ("partial", "empty", "object")
ERROR_SHAPES = (
    "string",  # batch_result.error: "text" (xAI's REST answer)
    "object",  # batch_result.error: {"code", "message"}
    "error_message",  # top-level error_message: "text"
    "error_message_object",  # top-level error_message: {"code", "message"}
    "top_level",  # top-level error: "text"
    "top_level_object",  # top-level error: {"code", "message"}
)
SUCCESS_SHAPES = ("batch_result", "response")  # batch_result.response or top-level response


@dataclass
class EmulatorConfig(Profiles):
    """Every knob of the emulator. Tests may change fields while the server runs.

    The defaults play xAI as observed; :meth:`fast` (or ``profile("fast")``) is the quiet one.
    Fields after ``default_page_size`` are the hostile switches of issue 9, all off by default.
    """

    fast_profile = FAST_PROFILE

    validation_reads: int = 2  # GETs that read all-zero counters before the file is validated
    requests_per_read: int | None = None  # lines finished per GET of the batch (see module doc)
    seconds_per_request: float = 0.0  # emulator seconds per finished line (0: off)
    supported_models: tuple[str, ...] = ("grok-4.3", "grok-4.20-0309*")  # "prefix*" allowed
    prices: dict[str, ModelPrice] = field(default_factory=_default_prices)
    error_shape: str = "string"  # one of ERROR_SHAPES
    pagination_end: str | None = None  # last page token: None (JSON null) or ""
    missing_result_ids: set[str] = field(default_factory=set)  # never served as results
    extra_result_ids: set[str] = field(default_factory=set)  # unknown ids on the first page
    cancel_revert_count: int = 2  # lines a cancel cancels that later flip back to succeeded
    cancel_revert_after: float = 10.0  # emulator seconds after the cancel
    expire_after_seconds: float = 30 * 86400.0
    time_format: str = "date"  # "date" ("2026-08-28") or "rfc3339" ("2026-08-25T12:30:00Z")
    omit_state_reads: int = 0  # the next N batch GETs omit "state" (counts down)
    latency: float = 0.0  # seconds added to every call
    seed: int = 0  # seeds fault probabilities and transient_failure_rate
    transient_failure_rate: float = 0.0  # share of calls answering 503 / dropped, alternately
    max_file_bytes: int = 200 * MB
    max_line_bytes: int = 25 * MB
    max_lines: int = 50_000
    max_page_size: int = 1000  # larger limits are clamped to this
    default_page_size: int = 100
    # -- realistic pacing and quirks (on by default, off in the fast profile) -------------------
    share_per_read: float = 0.25  # share of a batch's lines finished per GET (at least one line)
    pagination_end_alternate: bool = True  # last page token alternates null and "" per listing
    omit_state_every: int = 3  # every Nth GET of a batch omits "state" (0: never)
    rejected_counts: str = "zero"  # a rejected file's counters: "zero" (xAI) or "cancelled"
    # -- hostile switches (off by default) -------------------------------------------------------
    success_shape: str = "batch_result"  # one of SUCCESS_SHAPES
    results_lag_reads: int = 0  # first-page result reads that do not yet see a finished line
    results_lag_seconds: float = 0.0  # emulator seconds a finished line stays unserved
    results_lag_shape: str = "partial"  # while lagging: "partial" (every other lagging line
    #   left out), "empty" (an empty last page) or "object" (the body is just {})
    results_gone_status: int | None = None  # 404/410 on results once no line is pending
    reject_pending_message: str | None = None  # cancel_by_xai_message set while lines pend
    duplicate_result_ids: set[str] = field(default_factory=set)  # also served as an error entry
    duplicate_error_first: bool = True  # the error copy leads the first page (else ends the last)
    line_quirks: dict[str, str] = field(default_factory=dict)  # custom id -> one of LINE_QUIRKS
    expire_time_value: Any = None  # served verbatim as expire_time ("9999-12-31", 1e300, …)
    nested_depth: int = 0  # batch GETs carry a JSON array nested this deep
    result_padding_kb: int = 0  # each answer's reasoning_content padded to this many KB
    page_overflow: int = 0  # every list page carries this many entries beyond the asked limit
    endless_pagination: tuple[str, ...] = ()  # list endpoints whose token changes and never ends

    def __post_init__(self) -> None:
        for name, allowed in (
            ("error_shape", ERROR_SHAPES),
            ("success_shape", SUCCESS_SHAPES),
            ("results_lag_shape", RESULT_LAG_SHAPES),
            ("rejected_counts", ("zero", "cancelled")),
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, not {getattr(self, name)!r}")
        unknown = set(self.line_quirks.values()) - set(LINE_QUIRKS)
        if unknown:
            raise ValueError(f"line_quirks values must be in {LINE_QUIRKS}, not {sorted(unknown)}")


@dataclass
class UploadedFile:
    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: float
    expires_at: float | None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": int(self.created_at),
            "expires_at": None if self.expires_at is None else int(self.expires_at),
            "filename": self.filename,
            "purpose": self.purpose,
        }


@dataclass(eq=False, slots=True)
class Line:
    """One request of a batch. File lines keep a span into the file instead of a parsed body, so
    50,000 lines cost one copy of the file plus these small records."""

    custom_id: str
    model: str
    create_time: float
    span: tuple[int, int] | None = None
    inline_body: dict[str, Any] | None = None
    cache_hit: bool = False
    state: str = "pending"  # pending | succeeded | failed | cancelled
    error: str | None = None
    cost_ticks: int = 0
    finish_time: float | None = None
    results_mark: int = 0  # the batch's first-page result reads when the line finished


@dataclass(eq=False)
class Batch:
    batch_id: str
    name: str
    input_file_id: str | None
    create_time: float
    expire_time: float
    api_key_id: str
    seq: int
    source: bytes = b""
    cancel_time: float | None = None
    cancel_by_xai_message: str | None = None
    lines: list[Line] = field(default_factory=list)
    by_id: dict[str, Line] = field(default_factory=dict)
    sorted_ids: list[str] = field(default_factory=list)
    zero_reads_left: int = 0
    validated: bool = False
    rejected_count: int = 0  # lines of a file xAI refused during validation
    next_pending: int = 0  # lines before this index are finished (they finish in order)
    credit: float = 0.0
    last_progress: float = 0.0
    expired: bool = False
    systems_seen: set[str] = field(default_factory=set)
    revert_lines: list[Line] = field(default_factory=list)
    revert_at: float = 0.0
    reads: int = 0  # GETs of this batch, for omit_state_every
    results_calls: int = 0  # first-page result reads, for results_lag_reads
    reject_open: bool = False  # rejected with lines pending; the next GET cancels them


def encode_token(after: str, serial: int | None = None) -> str:
    data: dict[str, Any] = {"after": after}
    if serial is not None:  # endless pagination: a token that differs on every page
        data["n"] = serial
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def decode_token(token: str | None) -> str | None:
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        after = json.loads(raw)["after"]
    except (ValueError, KeyError, TypeError) as exc:
        raise ApiError(400, "Invalid pagination token") from exc
    if not isinstance(after, str):
        raise ApiError(400, "Invalid pagination token")
    return after


class EmulatorState(EmulatorStateBase[EmulatorConfig]):
    """The emulated provider. The clock, calls and faults are :class:`~.base.EmulatorStateBase`'s;
    this holds xAI's files and batches."""

    config_class = EmulatorConfig

    def __init__(
        self, config: EmulatorConfig | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(config, clock)
        self.files: dict[str, UploadedFile] = {}
        self.batches: dict[str, Batch] = {}
        self._listings = 0  # list calls served, for pagination_end_alternate
        self._serial = 0  # tokens minted by endless pagination

    def _forget(self) -> None:
        self.files.clear()
        self.batches.clear()
        self._listings = self._serial = 0

    # -- files ---------------------------------------------------------------------------------
    def add_file(
        self, filename: str, purpose: str, content: bytes, expires_after: int | None = None
    ) -> dict[str, Any]:
        if expires_after is not None and not 3600 <= expires_after <= 2_592_000:
            raise ApiError(400, "expires_after must be between 3600 and 2592000 seconds")
        if len(content) > self.config.max_file_bytes:
            raise ApiError(400, f"File is larger than {self.config.max_file_bytes} bytes")
        with self._lock:
            now = self.now()
            record = UploadedFile(
                id=f"file_{uuid.uuid4()}",
                filename=filename,
                purpose=purpose,
                content=content,
                created_at=now,
                expires_at=None if expires_after is None else now + expires_after,
            )
            self.files[record.id] = record
            return record.as_json()

    # -- batches -------------------------------------------------------------------------------
    def create_batch(self, name: str, input_file_id: str | None, api_key_id: str) -> dict[str, Any]:
        with self._lock:
            now = self.now()
            source = b""
            if input_file_id is not None:
                file = self.files.get(input_file_id)
                if file is None or (file.expires_at is not None and file.expires_at <= now):
                    raise ApiError(404, f"File {input_file_id} not found")
                source = file.content
            batch = Batch(
                batch_id=f"batch_{uuid.uuid4()}",
                name=name,
                input_file_id=input_file_id,
                create_time=now,
                expire_time=now + self.config.expire_after_seconds,
                api_key_id=api_key_id,
                seq=len(self.batches),
                source=source,
                zero_reads_left=max(0, self.config.validation_reads),
            )
            self.batches[batch.batch_id] = batch
            if input_file_id is None or batch.zero_reads_left == 0:
                self._validate(batch, now)
            return self._view(batch)

    def get_batch(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            batch = self._batch(batch_id)
            self._observe(batch, read=True)
            batch.reads += 1
            every = self.config.omit_state_every
            omit = self.config.omit_state_reads > 0 or (every > 0 and batch.reads % every == 0)
            if self.config.omit_state_reads > 0:
                self.config.omit_state_reads -= 1
            return self._view(batch, omit_state=omit)

    def list_batches(
        self, limit: int | None, token: str | None, bend: str | None = None
    ) -> dict[str, Any]:
        with self._lock:
            ordered = {f"{b.seq:012d}": b for b in self.batches.values()}
            keys, next_token = self._page(
                sorted(ordered), lambda k: True, limit, token, bend, "list_batches"
            )
            views = []
            for key in keys:
                self._observe(ordered[key])
                views.append(self._view(ordered[key]))
            return {"batches": views, "pagination_token": next_token}

    def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            batch = self._batch(batch_id)
            now = self.now()
            if not batch.validated:
                self._validate(batch, now)
            self._observe(batch)
            if batch.cancel_time is None:
                batch.cancel_time = now
                cancelled = self._cancel_pending(batch, now)
                batch.revert_lines = cancelled[: max(0, self.config.cancel_revert_count)]
                batch.revert_at = now + self.config.cancel_revert_after
            return self._view(batch)

    def add_requests(self, batch_id: str, payload: Any) -> dict[str, Any]:
        """Inline mode: all-or-nothing, so a refused call adds nothing."""
        with self._lock:
            batch = self._batch(batch_id)
            self._observe(batch)
            if batch.input_file_id is not None:
                raise ApiError(412, "Cannot add inline requests to a file-based batch")
            if batch.cancel_time is not None or batch.expired:
                raise ApiError(403, "Cannot add requests to a cancelled or expired batch")
            items = payload.get("batch_requests") if isinstance(payload, dict) else None
            if not isinstance(items, list):
                raise ApiError(400, "batch_requests must be a list")
            new: dict[str, dict[str, Any]] = {}
            for item in items:
                rid = item.get("batch_request_id") if isinstance(item, dict) else None
                req = item.get("batch_request") if isinstance(item, dict) else None
                body = req.get("chat_get_completion") if isinstance(req, dict) else None
                if not isinstance(rid, str) or not rid or not isinstance(body, dict):
                    raise ApiError(
                        400,
                        "Each batch request needs batch_request_id and "
                        "batch_request.chat_get_completion",
                    )
                model = str(body.get("model", ""))
                if not model_matches(model, self.config.supported_models):
                    raise ApiError(400, f"Model {model} is not supported for batch processing.")
                known = batch.by_id.get(rid)
                earlier = self._body(batch, known) if known else new.get(rid)
                if earlier is not None and earlier != body:
                    raise ApiError(412, f"Batch request {rid} already exists with other content")
                if known is None:
                    new[rid] = body
            now = self.now()
            for rid, body in new.items():
                line = Line(rid, str(body.get("model")), now, inline_body=body)
                line.cache_hit = prompt_cache_hit(batch.systems_seen, body)
                batch.lines.append(line)
                batch.by_id[rid] = line
            batch.sorted_ids = sorted(batch.by_id)
            return {}

    def list_requests(
        self, batch_id: str, limit: int | None, token: str | None, bend: str | None = None
    ) -> dict[str, Any]:
        with self._lock:
            batch = self._batch(batch_id)
            self._observe(batch)
            ids, next_token = self._page(
                batch.sorted_ids, lambda k: True, limit, token, bend, "list_requests"
            )
            metadata = []
            for rid in ids:
                line = batch.by_id[rid]
                metadata.append(
                    {
                        "batch_request_id": rid,
                        "endpoint": CHAT_ENDPOINT,
                        "model": line.model,
                        "state": line.state,
                        "create_time": self._time(line.create_time),
                        "finish_time": self._time(line.finish_time),
                    }
                )
            return {"batch_request_metadata": metadata, "pagination_token": next_token}

    def list_results(
        self, batch_id: str, limit: int | None, token: str | None, bend: str | None = None
    ) -> dict[str, Any]:
        """Finished lines, sorted by id; ``extra_result_ids`` and (by default) the error copies
        of ``duplicate_result_ids`` lead the first page."""
        with self._lock:
            cfg = self.config
            batch = self._batch(batch_id)
            self._observe(batch)
            if not token:
                batch.results_calls += 1
            if (
                cfg.results_gone_status
                and batch.validated
                and batch.next_pending >= len(batch.lines)
            ):
                raise ApiError(cfg.results_gone_status, f"Results of {batch_id} are gone")
            missing = cfg.missing_result_ids
            lagging = self._lagging(batch)
            if lagging and cfg.results_lag_shape == "object":
                return {}
            if lagging and cfg.results_lag_shape == "empty":
                return {"results": [], "pagination_token": self._end_token()}
            position = {rid: i for i, rid in enumerate(batch.sorted_ids)} if lagging else {}

            def served(rid: str) -> bool:
                if batch.by_id[rid].state == "pending" or rid in missing:
                    return False
                return rid not in lagging or position[rid] % 2 == 0

            ids, next_token = self._page(
                batch.sorted_ids, served, limit, token, bend, "list_results"
            )
            results = []
            duplicates = sorted(
                rid for rid in cfg.duplicate_result_ids if rid in batch.by_id and served(rid)
            )
            if not token:
                for rid in sorted(cfg.extra_result_ids):
                    body = {"model": "grok-4.3", "messages": [{"role": "user", "content": rid}]}
                    outcome = self._complete(batch, rid, body, self.now(), False)
                    results.append(self._result_entry(rid, "succeeded", outcome.completion, None))
                if cfg.duplicate_error_first:
                    results += [self._duplicate_entry(rid) for rid in duplicates]
            for rid in ids:
                line = batch.by_id[rid]
                completion, quirk = None, None
                if line.state == "succeeded":
                    body = self._body(batch, line)
                    finished = line.finish_time or self.now()
                    outcome = self._complete(batch, rid, body, finished, line.cache_hit)
                    completion, quirk = outcome.completion, outcome.quirk
                    if completion is not None and cfg.result_padding_kb > 0:
                        message = completion["choices"][-1]["message"]
                        message["reasoning_content"] = _padding(cfg.result_padding_kb * 1024)
                results.append(self._result_entry(rid, line.state, completion, line.error, quirk))
            if not next_token and not cfg.duplicate_error_first:
                results += [self._duplicate_entry(rid) for rid in duplicates]
            return {"results": results, "pagination_token": next_token}

    # -- internals (call with the lock held) ---------------------------------------------------
    def _batch(self, batch_id: str) -> Batch:
        batch = self.batches.get(batch_id)
        if batch is None:
            raise ApiError(404, f"Batch {batch_id} not found")
        return batch

    def _time(self, value: float | None) -> str | None:
        if value is None:
            return None
        pattern = "%Y-%m-%dT%H:%M:%SZ" if self.config.time_format == "rfc3339" else "%Y-%m-%d"
        return time.strftime(pattern, time.gmtime(value))

    def _page(
        self,
        keys: list[str],
        include: Callable[[str], bool],
        limit: int | None,
        token: str | None,
        bend: str | None,
        endpoint: str = "",
    ) -> tuple[list[str], str | None]:
        """Cursor pagination over sorted keys: a token is "start after this key", so lines that
        finish between two pages neither shift nor duplicate the next page."""
        cfg = self.config
        size = cfg.default_page_size if limit is None else limit
        if size <= 0:
            raise ApiError(400, "limit must be a positive integer")
        size = min(size, cfg.max_page_size) + max(0, cfg.page_overflow)
        after = decode_token(token)
        index = 0 if after is None else bisect.bisect_right(keys, after)
        page: list[str] = []
        more = False
        for key in keys[index:]:
            if not include(key):
                continue
            if len(page) == size:
                more = True
                break
            page.append(key)
        if bend == "repeat_page" and page:
            return page, encode_token(after or "")
        if bend == "overlap_page" and more and len(page) > 1:
            return page, encode_token(page[len(page) - 1 - min(2, len(page) - 1)])
        if more:
            return page, encode_token(page[-1])
        if endpoint in cfg.endless_pagination:
            self._serial += 1
            return page, encode_token(page[-1] if page else (after or ""), self._serial)
        return page, self._end_token()

    def _end_token(self) -> str | None:
        """The last page's token: ``pagination_end``, or null and "" in turn (both observed)."""
        self._listings += 1
        if self.config.pagination_end_alternate:
            return None if self._listings % 2 else ""
        return self.config.pagination_end

    def _lagging(self, batch: Batch) -> set[str]:
        """Finished lines whose results are not served yet (results_lag_reads / _seconds)."""
        cfg = self.config
        if cfg.results_lag_reads <= 0 and cfg.results_lag_seconds <= 0:
            return set()
        now = self.now()
        return {
            line.custom_id
            for line in batch.lines[: batch.next_pending]
            if batch.results_calls - line.results_mark <= cfg.results_lag_reads
            or now - (line.finish_time or now) < cfg.results_lag_seconds
        }

    def _observe(self, batch: Batch, read: bool = False) -> None:
        """Bring a batch up to the emulator clock: validation, progress, expiry, revert."""
        now = self.now()
        if not batch.validated:
            if read and batch.zero_reads_left > 0:
                batch.zero_reads_left -= 1
                return
            if batch.zero_reads_left > 0:
                return
            self._validate(batch, now)
        if batch.reject_open and read:
            # The rejection came with lines pending; they are cancelled at the next GET.
            batch.reject_open = False
            self._cancel_pending(batch, now)
        self._progress(batch, min(now, batch.expire_time), read)
        message = self.config.reject_pending_message
        pending = batch.next_pending < len(batch.lines)
        if message and pending and batch.cancel_by_xai_message is None and batch.next_pending:
            batch.cancel_by_xai_message, batch.cancel_time = message, now
            batch.reject_open = True
        if now >= batch.expire_time and not batch.expired:
            # Lines left at expiry read "Batch cancelled"; cancel_time stays null, as nobody
            # cancelled: a client tells expiry apart by expire_time.
            batch.expired = True
            self._cancel_pending(batch, batch.expire_time)
        if batch.revert_lines and now >= batch.revert_at:
            for line in batch.revert_lines:
                self._finish(batch, line, batch.revert_at)
            batch.revert_lines = []

    def _finish(self, batch: Batch, line: Line, now: float) -> None:
        body = self._body(batch, line)
        outcome = self._complete(batch, line.custom_id, body, now, line.cache_hit)
        line.state = "succeeded" if outcome.error is None else "failed"
        line.error, line.cost_ticks, line.finish_time = outcome.error, outcome.cost_ticks, now
        line.results_mark = batch.results_calls

    def _cancel_pending(self, batch: Batch, now: float) -> list[Line]:
        cancelled = batch.lines[batch.next_pending :]
        for line in cancelled:
            line.state, line.error, line.finish_time = "cancelled", "Batch cancelled", now
        batch.next_pending = len(batch.lines)
        return cancelled

    def _complete(
        self, batch: Batch, rid: str, body: dict[str, Any], when: float, hit: bool
    ) -> Outcome:
        completion_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{batch.batch_id}/{rid}"))
        return complete(
            body,
            completion_id=completion_id,
            created=int(when),
            cache_hit=hit,
            prices=self.config.prices,
            quirk=self.config.line_quirks.get(rid),
        )

    def _body(self, batch: Batch, line: Line) -> dict[str, Any]:
        if line.inline_body is not None:
            return line.inline_body
        assert line.span is not None
        body: dict[str, Any] = json.loads(batch.source[line.span[0] : line.span[1]])["body"]
        return body

    def _validate(self, batch: Batch, now: float) -> None:
        """xAI checks the whole file after create; one bad line cancels the whole batch."""
        batch.validated, batch.last_progress = True, now
        if batch.input_file_id is None:
            return
        problem: str | None = None
        lines: list[Line] = []
        count = 0
        for number, start, end in _line_spans(batch.source):
            count += 1
            if problem is None:
                problem = self._check_line(batch, number, start, end, lines)
        if problem is None and count == 0:
            problem = "file has no request lines"
        if problem is None and count > self.config.max_lines:
            problem = f"file has {count} lines, more than {self.config.max_lines}"
        if problem is not None:
            batch.cancel_by_xai_message = f"JSONL file validation failed: {problem}"
            batch.cancel_time, batch.rejected_count = now, count
            batch.systems_seen.clear()
            batch.by_id.clear()
            return
        batch.lines = lines
        batch.by_id = {line.custom_id: line for line in lines}
        batch.sorted_ids = sorted(batch.by_id)

    def _check_line(
        self, batch: Batch, number: int, start: int, end: int, lines: list[Line]
    ) -> str | None:
        if end - start > self.config.max_line_bytes:
            return f"line {number}: line is longer than {self.config.max_line_bytes} bytes"
        try:
            data = json.loads(batch.source[start:end])
        except ValueError as exc:
            return f"line {number}: invalid JSON: {exc}"
        if not isinstance(data, dict):
            return f"line {number}: a line must be a JSON object"
        for key in LINE_KEYS:
            if key not in data:
                return f"line {number}: missing required field '{key}'"
        extra = sorted(set(data) - set(LINE_KEYS))
        if extra:
            return f"line {number}: unknown field '{extra[0]}'"
        custom_id, body = data["custom_id"], data["body"]
        if not isinstance(custom_id, str) or not custom_id:
            return f"line {number}: custom_id must be a non-empty string"
        if data["method"] != "POST" or data["url"] not in CHAT_URLS:
            return f"line {number}: unsupported method or url {data['method']} {data['url']}"
        if not isinstance(body, dict) or not chat_messages(body):
            return f"line {number}: body must be a chat completion request with messages"
        model = str(body.get("model", ""))
        if not model_matches(model, self.config.supported_models):
            return f"Model {model} is not supported for batch processing."
        if custom_id in batch.by_id:
            return f"line {number}: duplicate custom_id '{custom_id}'"
        line = Line(custom_id, model, batch.create_time, span=(start, end))
        line.cache_hit = prompt_cache_hit(batch.systems_seen, body)
        lines.append(line)
        batch.by_id[custom_id] = line
        return None

    def _view(self, batch: Batch, omit_state: bool = False) -> dict[str, Any]:
        counts = {
            "num_requests": 0,
            "num_pending": 0,
            "num_success": 0,
            "num_error": 0,
            "num_cancelled": 0,
        }
        ticks = finished = 0
        if batch.rejected_count:
            # xAI leaves every counter of a refused file at 0 (observed); "cancelled" is the
            # older reading, kept as a switch.
            if self.config.rejected_counts == "cancelled":
                counts["num_requests"] = counts["num_cancelled"] = batch.rejected_count
        elif batch.validated:
            counts["num_requests"] = len(batch.lines)
            key = {
                "pending": "num_pending",
                "succeeded": "num_success",
                "failed": "num_error",
                "cancelled": "num_cancelled",
            }
            for line in batch.lines:
                counts[key[line.state]] += 1
                ticks += line.cost_ticks
            finished = counts["num_success"] + counts["num_error"]
        endpoint_costs = (
            [{"endpoint": CHAT_ENDPOINT, "cost_usd_ticks": ticks, "request_count": finished}]
            if finished
            else []
        )
        view: dict[str, Any] = {
            "batch_id": batch.batch_id,
            "name": batch.name,
            "create_time": self._time(batch.create_time),
            "expire_time": self._time(batch.expire_time),
            "create_api_key_id": batch.api_key_id,
            "cancel_time": self._time(batch.cancel_time),
            "cancel_by_xai_message": batch.cancel_by_xai_message,
            "state": counts,
            "cost_breakdown": {
                "total_cost_usd_ticks": ticks,
                "endpoint_costs": endpoint_costs,
                "calculation_time": self._time(self.now()),
            },
            "input_file_id": batch.input_file_id,
        }
        if self.config.expire_time_value is not None:
            view["expire_time"] = self.config.expire_time_value
        if omit_state:
            del view["state"]
        return view

    def _result_entry(
        self,
        rid: str,
        state: str,
        completion: dict[str, Any] | None,
        error: str | None,
        quirk: str | None = None,
    ) -> dict[str, Any]:
        cfg = self.config
        if completion is not None:
            response: Any = {"chat_get_completion": completion}
            if quirk == "response_string":
                response = "chat_get_completion unavailable"
            elif quirk == "response_list":
                response = [response]
            if cfg.success_shape == "response":
                return {"batch_request_id": rid, "response": response}
            return {"batch_request_id": rid, "batch_result": {"response": response}}
        message = error or "Unknown error"
        code = 1 if state == "cancelled" else 3  # gRPC CANCELLED / INVALID_ARGUMENT
        shaped = {"code": code, "message": message}
        shape = cfg.error_shape
        if shape == "error_message":
            return {"batch_request_id": rid, "error_message": message}
        if shape == "error_message_object":
            return {"batch_request_id": rid, "error_message": shaped}
        if shape == "top_level":
            return {"batch_request_id": rid, "error": message}
        if shape == "top_level_object":
            return {"batch_request_id": rid, "error": shaped}
        if shape == "object":
            return {"batch_request_id": rid, "batch_result": {"error": shaped}}
        return {"batch_request_id": rid, "batch_result": {"error": message}}

    def _duplicate_entry(self, rid: str) -> dict[str, Any]:
        """The failed twin of a line that succeeded: a retried attempt served as well."""
        return self._result_entry(rid, "failed", None, "Internal error: attempt superseded")


def _padding(size: int) -> str:
    words = "The emulator pads this reasoning to make a big answer. "
    return (words * (size // len(words) + 1))[:size]


def _line_spans(content: bytes) -> Iterable[tuple[int, int, int]]:
    """(line number, start, end) of every non-blank line, without splitting the file in memory."""
    number, pos, size = 0, 0, len(content)
    while pos < size:
        end = content.find(b"\n", pos)
        end = size if end == -1 else end
        number += 1
        stop = end - 1 if end > pos and content[end - 1 : end] == b"\r" else end
        # Only short lines can be blank in practice; testing them alone avoids copying big ones.
        if stop - pos >= 64 or content[pos:stop].strip():
            yield number, pos, stop
        pos = end + 1
