"""The OpenAI emulator's in-memory world: files, batches, lines, their lazy progress."""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from ..base import EmulatorStateBase
from ..completions import (
    chat_messages,
    complete,
    prompt_cache_hit,
)
from ..server import RawAnswer
from ..state import _line_spans as line_spans
from .config import (
    BATCH_ENDPOINTS,
    DAY,
    IN_FLIGHT,
    TERMINAL,
    OpenAIApiError,
    OpenAIEmulatorConfig,
)
from .records import Batch, Line, StoredFile
from .wire import (
    batch_view,
    check_line,
    check_metadata,
    openai_shape,
    page_limit,
    result_row,
)


class OpenAIEmulatorState(EmulatorStateBase[OpenAIEmulatorConfig]):
    """The emulated provider: files and batches, over the shared clock, calls and faults."""

    config_class = OpenAIEmulatorConfig

    def __init__(
        self, config: OpenAIEmulatorConfig | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(config, clock)
        self.files: dict[str, StoredFile] = {}
        self.batches: dict[str, Batch] = {}
        self._seq = 0

    def _forget(self) -> None:
        self.files.clear()
        self.batches.clear()
        self._seq = 0

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _new_id(self, prefix: str) -> str:
        return f"{prefix}{uuid.uuid4().hex[:24]}"

    # -- files ---------------------------------------------------------------------------------
    def add_file(self, filename: str, purpose: str, content: bytes) -> dict[str, Any]:
        with self._lock:
            if purpose != "batch":
                raise OpenAIApiError(
                    400,
                    f"Invalid value for 'purpose': {purpose!r}. This endpoint takes 'batch' here.",
                    param="purpose",
                )
            if not filename.endswith(".jsonl"):
                raise OpenAIApiError(400, "Invalid file format for Batch API. Must be .jsonl")
            if len(content) > self.config.max_file_bytes:
                raise OpenAIApiError(
                    400,
                    f"File is too large: {len(content)} bytes; the Batch API accepts at most "
                    f"{self.config.max_file_bytes}.",
                )
            now = self.now()
            stored = StoredFile(
                self._new_id("file-"), filename, purpose, content, now, now + 30 * DAY
            )
            self.files[stored.id] = stored
            return stored.as_json()

    def get_file(self, file_id: str) -> dict[str, Any]:
        with self._lock:
            return self._file(file_id).as_json()

    def list_files(self, query: dict[str, str]) -> dict[str, Any]:
        with self._lock:
            items = [f for f in self.files.values() if f.purpose == query.get("purpose", f.purpose)]
            items.sort(key=lambda f: f.created_at, reverse=query.get("order", "desc") == "desc")
            limit = page_limit(query, 10_000, 10_000)
            return self._envelope(items, StoredFile.as_json, query.get("after"), limit, None)

    def file_content(self, file_id: str) -> RawAnswer:
        with self._lock:
            stored = self._file(file_id)
            gone = self.config.results_gone_status
            if gone is not None and stored.batch_id is not None:
                raise OpenAIApiError(gone, f"No such File object: {file_id}")
            return RawAnswer(stored.content, "application/octet-stream")

    def _file(self, file_id: str) -> StoredFile:
        """A stored file; one past its ``expires_at`` (30 days: input and result files alike)
        is deleted, as OpenAI deletes it."""
        stored = self.files.get(file_id)
        if stored is not None and stored.expires_at is not None and self.now() >= stored.expires_at:
            del self.files[file_id]
            stored = None
        if stored is None:
            raise OpenAIApiError(404, f"No such File object: {file_id}", param="id")
        return stored

    # -- batches -------------------------------------------------------------------------------
    def create_batch(self, data: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            file_id = data.get("input_file_id")
            if not isinstance(file_id, str) or not file_id:
                raise OpenAIApiError(
                    400, "Missing required parameter: 'input_file_id'.", param="input_file_id"
                )
            endpoint = data.get("endpoint")
            if endpoint not in BATCH_ENDPOINTS:
                raise OpenAIApiError(
                    400, f"Invalid value for 'endpoint': {endpoint!r}.", param="endpoint"
                )
            if data.get("completion_window") != "24h":
                raise OpenAIApiError(
                    400,
                    "Invalid value for 'completion_window': only '24h' is supported.",
                    param="completion_window",
                )
            metadata = data.get("metadata") or {}
            check_metadata(metadata)
            now = self.now()
            recent = [b for b in self.batches.values() if b.created_at > now - 3600]
            if len(recent) >= self.config.max_creates_per_hour:
                raise OpenAIApiError(
                    429,
                    "Rate limit reached for batch creations: "
                    f"{self.config.max_creates_per_hour} per hour.",
                    code="rate_limit_exceeded",
                )
            stored = self.files.get(file_id)
            batch = Batch(
                id=self._new_id("batch_"),
                input_file_id=file_id,
                endpoint=str(endpoint),
                metadata=dict(metadata),
                created_at=now,
                expires_at=now + self.config.expire_after_seconds,
                seq=self._next_seq(),
                source=stored.content if stored is not None else b"",
                reads_left=self.config.validation_reads,
                last_progress=now,
            )
            self.batches[batch.id] = batch
            return batch_view(batch, self.config)

    def get_batch(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            batch = self._batch(batch_id)
            self._observe(batch, read=True)
            return batch_view(batch, self.config)

    def list_batches(self, query: dict[str, str], bend: str | None) -> dict[str, Any]:
        with self._lock:
            cfg = self.config
            limit = page_limit(query, cfg.default_page_size, cfg.max_page_size)
            ordered = sorted(self.batches.values(), key=lambda b: b.seq, reverse=True)

            def view(batch: Batch) -> dict[str, Any]:
                # Only the batches listed are brought up to the clock and rendered, as a
                # server pages its store: a page costs the same whatever the list's length.
                # An entry on a served page is a look at the batch, as a GET is: the batches
                # a client polls by the list move on as those it reads one by one do.
                self._observe(batch, read=True)
                return batch_view(batch, self.config)

            endless = "list_batches" in cfg.endless_pagination
            return self._envelope(ordered, view, query.get("after"), limit, bend, endless=endless)

    def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        with self._lock:
            batch = self._batch(batch_id)
            self._observe(batch)
            if batch.status in TERMINAL:
                raise OpenAIApiError(409, f"Cannot cancel a batch with status '{batch.status}'.")
            if batch.status != "cancelling":
                batch.status = "cancelling"
                batch.times["cancelling_at"] = self.now()
                batch.reads_left = self.config.cancel_reads
            return batch_view(batch, self.config)

    def _batch(self, batch_id: str) -> Batch:
        batch = self.batches.get(batch_id)
        if batch is None:
            raise OpenAIApiError(404, f"No batch found with id '{batch_id}'.")
        return batch

    def _envelope(
        self,
        items: Sequence[Any],
        view: Callable[[Any], dict[str, Any]],
        after: str | None,
        limit: int,
        bend: str | None,
        endless: bool = False,
    ) -> dict[str, Any]:
        """Cursor pagination: ``after`` is the id of the last item already seen; ``view``
        renders an item (each has an ``id``), for the page's items only."""
        start = 0
        if after and bend != "repeat_page":  # that fault: the cursor is ignored
            ids = [item.id for item in items]
            start = ids.index(after) + 1 if after in ids else len(items)
        if endless and start >= len(items):
            start = 0  # the list starts over, for ever
        size = limit + max(0, self.config.page_overflow)
        page = [view(item) for item in items[start : start + size]]
        more = start + size < len(items)
        last = page[-1]["id"] if page else None
        if endless:
            more = True
        return {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": last,
            "has_more": more,
        }

    # -- progress ------------------------------------------------------------------------------
    def _observe(self, batch: Batch, read: bool = False) -> None:
        """Bring a batch up to the clock: validation, progress, finalizing, cancel, expiry."""
        now = self.now()
        expired = now >= batch.expires_at
        if batch.status == "validating":
            if read and batch.reads_left > 0 and not expired:
                batch.reads_left -= 1
                return
            if batch.reads_left > 0 and not expired:
                return
            self._validate(batch, now)
        if batch.status == "in_progress":
            # Reads after the window closed run nothing more.
            self._progress(batch, min(now, batch.expires_at), read and not expired)
            if batch.next_pending >= len(batch.lines):
                batch.status = "finalizing"
                batch.times["finalizing_at"] = now
                batch.reads_left = self.config.finalizing_reads
                read = False  # the read that finished the lines sees finalizing
            elif expired:
                self._end(batch, "expired", batch.expires_at)
                return
        if batch.status == "finalizing":
            if read and batch.reads_left > 0:
                batch.reads_left -= 1
            if batch.reads_left <= 0:
                self._end(batch, "completed", now)
        elif batch.status == "cancelling":
            if read and batch.reads_left > 0:
                batch.reads_left -= 1
                return
            if batch.reads_left <= 0:
                self._end(batch, "cancelled", now)

    def _validate(self, batch: Batch, now: float) -> None:
        """Check the whole file; the first bad line fails the batch, nothing runs."""
        if batch.input_file_id not in self.files:
            self._fail(
                batch,
                "invalid_request",
                f"The input file {batch.input_file_id} could not be found.",
                None,
                now,
            )
            return
        lines: list[Line] = []
        seen: set[str] = set()
        models: set[str] = set()
        prompt = 0
        for number, start, end in line_spans(batch.source):
            problem = check_line(
                batch, number, start, end, seen, models, self.config.supported_models
            )
            if problem is not None:
                code, message, param = problem
                self._fail(batch, code, message, number, now, param)
                return
            data = json.loads(batch.source[start:end])
            prompt += sum(len(json.dumps(m)) for m in chat_messages(data["body"])) // 4
            lines.append(Line(str(data["custom_id"]), (start, end), number))
            seen.add(str(data["custom_id"]))
        if not lines:
            self._fail(batch, "invalid_request", "The batch input file is empty.", None, now)
            return
        if len(lines) > self.config.max_lines:
            self._fail(
                batch,
                "invalid_request",
                f"The batch input file has {len(lines)} requests; at most "
                f"{self.config.max_lines} are allowed.",
                None,
                now,
            )
            return
        batch.model = next(iter(models))
        limit = self.config.enqueued_token_limit
        if limit is not None:
            queued = sum(
                b.prompt_estimate
                for b in self.batches.values()
                if b is not batch and b.model == batch.model and b.status in IN_FLIGHT
            )
            if queued + prompt > limit:
                self._fail(
                    batch,
                    "token_limit_exceeded",
                    f"Enqueued token limit reached for {batch.model} in organization "
                    f"org-emulator. Limit: {limit:,} enqueued tokens. Please try again once "
                    "some in_progress batches have been completed.",
                    None,
                    now,
                )
                return
        batch.lines, batch.prompt_estimate = lines, prompt
        batch.status, batch.last_progress = "in_progress", now
        batch.times["in_progress_at"] = now

    def _fail(
        self,
        batch: Batch,
        code: str,
        message: str,
        line: int | None,
        now: float,
        param: str | None = None,
    ) -> None:
        batch.status = "failed"
        batch.errors = [{"code": code, "line": line, "message": message, "param": param}]
        batch.times["failed_at"] = now
        batch.lines = []

    def _finish(self, batch: Batch, line: Line, now: float) -> None:
        body = json.loads(batch.source[line.span[0] : line.span[1]])["body"]
        completion_id = "chatcmpl-" + uuid.uuid5(uuid.NAMESPACE_URL, batch.id + line.custom_id).hex
        outcome = complete(
            body,
            completion_id=completion_id,
            created=int(now),
            # A hit caches half the prompt tokens, as in xAI's emulator.
            cache_hit=prompt_cache_hit(batch.systems_seen, body),
            prices=self.config.prices,
            quirk=self.config.line_quirks.get(line.custom_id),
        )
        if outcome.completion is None:
            line.state, line.error = "failed", outcome.error
        else:
            line.state, line.completion = "succeeded", openai_shape(outcome.completion, body)
        if line.custom_id in self.config.missing_result_ids:
            line.in_files = False

    def _end(self, batch: Batch, status: str, when: float) -> None:
        """A terminal status: lines that never ran are cancelled/expired; the files are written."""
        left = "expired" if status == "expired" else "cancelled"
        for line in batch.lines[batch.next_pending :]:
            line.state = left
        batch.next_pending = len(batch.lines)
        if status == "cancelled" and self.config.cancel_loses_lines > 0:
            done = [line for line in batch.lines if line.state == "succeeded"]
            for line in done[-self.config.cancel_loses_lines :]:
                line.in_files = False
        batch.status = status
        batch.times[f"{status}_at"] = when
        if status == "completed":
            batch.times["completed_at"] = when
        output, errors = [], []
        for line in batch.lines:
            if not line.in_files:
                continue
            if line.state == "succeeded":
                if status != "cancelled" or self.config.cancel_output_file:
                    output.append(result_row(batch, line))
            else:
                errors.append(result_row(batch, line))
        if self.config.shuffle_results:
            rng = random.Random(f"{self.config.seed}/{batch.id}")
            rng.shuffle(output)
            rng.shuffle(errors)
        batch.output_file_id = self._result_file(batch, "output", output)
        batch.error_file_id = self._result_file(batch, "error", errors)

    def _result_file(self, batch: Batch, kind: str, rows: list[dict[str, Any]]) -> str | None:
        if not rows:
            return None
        content = b"".join(json.dumps(row, ensure_ascii=False).encode() + b"\n" for row in rows)
        now = self.now()
        stored = StoredFile(
            self._new_id("file-"),
            f"{batch.id}_{kind}.jsonl",
            "batch_output",
            content,
            now,
            now + 30 * DAY,
            batch_id=batch.id,
        )
        self.files[stored.id] = stored
        return stored.id
