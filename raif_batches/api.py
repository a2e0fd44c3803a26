"""Creating batches: validate every request, then insert everything in one transaction.

What is accepted, and why, is in :mod:`raif_batches.validation`.
"""

from __future__ import annotations

import itertools
import json
import re
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from django.contrib.contenttypes.models import ContentType
from django.db import models, transaction
from django.utils.module_loading import import_string

from .bulk import encode_json, insert_rows
from .conf import provider_label
from .exceptions import BatchConfigurationError, InvalidBatchRequest
from .models import CompletionStatus, ModelCompletion, ModelCompletionBatch
from .providers import get_strategy_class
from .validation import (
    MAX_NAME_LENGTH,
    MAX_TOKENS_LIMIT,
    ROLES,
    UnknownModelWarning,
    check_batch_args,
    check_request_values,
    plain_messages,
)

#: Matched with ``fullmatch``: ``$`` alone would accept a trailing newline.
CUSTOM_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}")
RESPONSE_FORMATS = frozenset({"text", "json_object", "json_schema"})
#: Keys of a request that are stored in their own columns.
COLUMN_KEYS = ModelCompletion.PARAMETER_FIELDS
#: Keys of a request stored as JSON in their own columns (the others: ``extra_body``).
JSON_COLUMN_KEYS = ("response_format", "tools", "tool_choice")
#: The keys of a request that :meth:`_RequestRows.row` checks by its shortest path.
PLAIN_KEYS = frozenset({"custom_id", "messages", "temperature", "max_tokens", "source"})
#: Keys a batch line must not carry: the model is the batch's, streaming is not batchable.
FORBIDDEN_KEYS = frozenset({"model", "stream", "stream_options"})
_NUMBER = (int, float)
INSERT_CHUNK = 2000


class _SourceRef(NamedTuple):
    """A source given by content type and primary key, for :func:`retry_failed` only: callers
    pass a model instance as ``source``."""

    content_type_id: int
    object_id: str


# The JSON that wraps a body in a line: {"custom_id":…,"method":"POST","url":…,"body":…}.
LINE_OVERHEAD = 100


def create_batch(
    provider: str = "xai",
    model: str | None = None,
    requests: Iterable[Mapping[str, Any]] = (),
    name: str | None = None,
    metadata: dict[str, Any] | None = None,
    handler: str | None = None,
    retry_of: ModelCompletionBatch | None = None,
) -> ModelCompletionBatch:
    """Create a ``pending`` batch with one completion per request, in one transaction.

    Each request is ``{"custom_id": ..., "messages": [...], **chat_completion_parameters}``,
    optionally with ``"source": <model instance>`` to link the completion to a domain object.
    ``model`` defaults to the provider's ``default_model`` (xAI: ``grok-4.3``, OpenAI:
    ``gpt-5-mini``, Anthropic: ``claude-haiku-4-5``). The provider's own limits are checked
    here too (requests and bytes per batch, the custom id's characters and length, and what
    it requires of a request, such as Anthropic's ``max_tokens``).
    Invalid input raises :class:`~raif_batches.exceptions.InvalidBatchRequest` (a
    ``ValueError``) naming the request and the problem, and creates nothing. A model missing
    from the price table gets an :class:`~raif_batches.validation.UnknownModelWarning`.
    """
    strategy, model = _validate_batch_args(provider, model, name, metadata, handler, requests)
    return _create(strategy, provider, model, requests, name, metadata, handler, retry_of)


def _create(
    strategy: Any,
    provider: str,
    model: str,
    requests: Iterable[Mapping[str, Any]],
    name: str | None,
    metadata: dict[str, Any] | None,
    handler: str | None,
    retry_of: ModelCompletionBatch | None,
) -> ModelCompletionBatch:
    with transaction.atomic():
        batch = ModelCompletionBatch.objects.create(
            provider=provider,
            model=model,
            name=name or "",
            metadata=metadata or {},
            handler=handler or "",
            retry_of=retry_of,
        )
        count = insert_rows(
            ModelCompletion,
            _RequestRows.COLUMNS,
            _RequestRows(strategy, provider, model).chunks(requests, INSERT_CHUNK),
            # One creation time for the whole batch: its rows are written in one transaction.
            shared={"batch_id": batch.pk, "created_at": batch.created_at},
        )
        if count == 0:
            raise InvalidBatchRequest("a batch needs at least one request.")
        batch.request_counts = {
            "total": count,
            "pending": count,
            "succeeded": 0,
            "failed": 0,
            "cancelled": 0,
        }
        batch.save(update_fields=["request_counts"])
    return batch


def create_batches(
    provider: str = "xai",
    model: str | None = None,
    requests: Iterable[Mapping[str, Any]] = (),
    name: str | None = None,
    metadata: dict[str, Any] | None = None,
    handler: str | None = None,
) -> list[ModelCompletionBatch]:
    """Like :func:`create_batch`, but splits requests beyond the provider's limits (lines per
    file, bytes per file) into as many batches as needed, all created in one transaction.

    Custom ids must be unique across the whole set, so that a result maps back to one request.
    """
    strategy, model = _validate_batch_args(provider, model, name, metadata, handler, requests)
    batches: list[ModelCompletionBatch] = []
    seen: set[str] = set()
    with transaction.atomic():
        for part, chunk in enumerate(_split(requests, strategy, model, seen), start=1):
            suffix = f" ({part})"
            # The part number must fit in the name column too.
            label = f"{name[: MAX_NAME_LENGTH - len(suffix)]}{suffix}" if name else ""
            batches.append(
                _create(strategy, provider, model, chunk, label, metadata, handler, None)
            )
    if not batches:
        raise InvalidBatchRequest("a batch needs at least one request.")
    return batches


def _split(
    requests: Iterable[Mapping[str, Any]], strategy: Any, model: str, seen: set[str]
) -> Iterator[list[Mapping[str, Any]]]:
    chunk: list[Mapping[str, Any]] = []
    size = 0
    for index, request in enumerate(requests):
        if not isinstance(request, Mapping):
            raise InvalidBatchRequest("each request must be a dict.", index=index)
        custom_id = request.get("custom_id")
        if isinstance(custom_id, str):
            # Before measuring: a value nested too deep would overflow json.dumps.
            check_request_values(request, custom_id)
            if custom_id in seen:
                raise InvalidBatchRequest("custom_id is not unique.", custom_id=custom_id)
            seen.add(custom_id)
        line = _line_size(model, request)
        if chunk and (
            len(chunk) >= strategy.max_requests_per_batch or size + line > strategy.max_file_bytes
        ):
            yield chunk
            chunk, size = [], 0
        chunk.append(request)
        size += line
    if chunk:
        yield chunk


def retry_failed(batch: ModelCompletionBatch, *, name: str | None = None) -> ModelCompletionBatch:
    """A new pending batch with the requests of ``batch``'s failed completions, linked to it.

    Custom ids and sources are kept, so results map back to the same domain objects.
    """
    failed = batch.completions.filter(status=CompletionStatus.FAILED).order_by("pk")
    if not failed.exists():
        raise InvalidBatchRequest(f"Batch {batch.pk} has no failed completions to retry.")

    def requests() -> Iterator[dict[str, Any]]:
        for completion in failed.iterator(chunk_size=INSERT_CHUNK):
            request: dict[str, Any] = {
                "custom_id": completion.batch_custom_id,
                "messages": completion.messages,
                **(completion.extra_body or {}),
            }
            for key in COLUMN_KEYS:
                value = getattr(completion, key)
                if value is not None:
                    request[key] = value
            if completion.source_content_type_id and completion.source_object_id:
                request["source"] = _SourceRef(
                    completion.source_content_type_id, completion.source_object_id
                )
            yield request

    return create_batch(
        batch.provider,
        batch.model,
        requests(),
        name=name or f"Retry of {batch.name or batch.provider_batch_name}",
        metadata={**(batch.metadata or {}), "retry_of": batch.pk},
        handler=batch.handler or None,
        retry_of=batch,
    )


# --- validation -----------------------------------------------------------------------------


def _validate_batch_args(
    provider: Any, model: Any, name: Any, metadata: Any, handler: Any, requests: Any
) -> tuple[Any, str]:
    """The provider's strategy class and the model (its default when none is named)."""
    if not isinstance(provider, str):
        check_batch_args(provider, model, name, metadata, handler, requests)
    try:
        strategy = get_strategy_class(provider)
    except ValueError as error:
        raise InvalidBatchRequest(str(error)) from error
    if model is None:
        model = strategy.default_model
    check_batch_args(provider, model, name, metadata, handler, requests)
    _warn_unknown_model(provider, model)
    if handler:
        try:
            target = import_string(handler)
        except ImportError as error:
            raise InvalidBatchRequest(f"handler {handler!r} cannot be imported: {error}") from error
        if not callable(target):
            raise InvalidBatchRequest(f"handler {handler!r} is not callable.")
    return strategy, model


def _warn_unknown_model(provider: str, model: str) -> None:
    from .pricing import price_for

    try:
        known = price_for(model) is not None
    except BatchConfigurationError:
        return  # a malformed price table is the system check's to report, not ours
    if not known:
        warnings.warn(
            f"model {model!r} is not in the price table, so {provider} may not serve it (the "
            "batch is created; a mistyped model fails at the provider). Add it to "
            "RAIF_BATCHES['PRICING'] to silence this and to estimate its costs.",
            UnknownModelWarning,
            stacklevel=4,
        )


class _RequestRows:
    """Checks requests one by one and turns each into the row of its completion, measuring its
    line (the provider's JSONL line, or its share of Anthropic's create body) as it goes.

    Built once per batch, so that what depends on the provider or the model (limits, the custom
    id rule, the JSON of the model's name) is looked up once, not once per request. Each JSON
    column is encoded once, by :data:`~raif_batches.bulk.encode_json`; the line is measured
    from those texts instead of encoding the body again: ``json.dumps`` of a dict is the
    concatenation of its keys' and values' texts, so its length is their sum plus the
    separators'. The insert sends the same texts.
    """

    #: The values of a row, in order (:func:`~raif_batches.bulk.insert_rows`).
    COLUMNS = (
        "batch_custom_id",
        *ModelCompletion.REQUEST_FIELDS,
        "source_content_type_id",
        "source_object_id",
    )
    #: The request keys that are not stored in ``extra_body``.
    NOT_EXTRA = frozenset({"custom_id", "messages", "source", *COLUMN_KEYS})

    def __init__(self, strategy: Any, provider: str, model: str):
        self.strategy = strategy
        self.provider = provider
        self.seen: set[str] = set()
        self.total_bytes = 0
        self.max_requests = strategy.max_requests_per_batch
        self.max_line_bytes = strategy.max_line_bytes
        self.max_file_bytes = strategy.max_file_bytes
        self.label = provider_label(strategy.provider)
        self.max_custom_id_length = strategy.max_custom_id_length
        self.custom_id_pattern = strategy.custom_id_pattern
        self.matches_provider_pattern = (
            re.compile(self.custom_id_pattern).fullmatch
            if self.custom_id_pattern is not None
            else None
        )
        # '{"model": <model>, "messages": ' and the closing brace: the same in every body.
        self.fixed_bytes = _utf8_length(f'{{"model": {encode_json(model)}, "messages": }}')

    def chunks(
        self, requests: Iterable[Mapping[str, Any]], size: int
    ) -> Iterator[Iterator[tuple[Any, ...]]]:
        """The rows of ``requests``, ``size`` requests to a chunk, for
        :func:`~raif_batches.bulk.insert_rows`.

        A chunk's rows are made while its ``COPY`` is open, when the connection serves nothing
        else: what needs the database is done before the chunk is handed out. Its requests are
        drawn then (``requests`` may read them from the database, as :func:`retry_failed`
        does), and the content types of their sources read.

        Requests given as a list or a tuple are in memory already: drawing them uses no
        database, so they go as one chunk, made while the server stores the rows before (their
        sources' content types are read first).
        """
        if isinstance(requests, list | tuple):
            self._read_content_types(requests)
            yield self.rows(requests, 0)
            return
        iterator = iter(requests)
        start = 0
        while drawn := list(itertools.islice(iterator, size)):
            self._read_content_types(drawn)
            yield self.rows(drawn, start)
            start += len(drawn)

    @staticmethod
    def _read_content_types(requests: Sequence[Mapping[str, Any]]) -> None:
        """Read the content types of the sources into Django's cache, for :meth:`row`."""
        for request in requests:
            # (type() first, as in row().)
            if type(request) is not dict and not isinstance(request, Mapping):
                continue
            source = request.get("source")
            if source is not None and isinstance(source, models.Model) and source.pk is not None:
                ContentType.objects.get_for_model(source)

    def rows(self, requests: Sequence[Mapping[str, Any]], start: int) -> Iterator[tuple[Any, ...]]:
        """The row of each request (numbered from ``start``); raises on the first invalid
        request or exceeded limit."""
        for index, request in enumerate(requests, start):
            row, line_bytes = self.row(index, request)
            self.total_bytes += line_bytes
            if index >= self.max_requests:
                raise InvalidBatchRequest(
                    f"more than {self.max_requests} requests; {self.provider} accepts at most "
                    "that many per batch. Use raif_batches.create_batches() to split them."
                )
            if line_bytes > self.max_line_bytes:
                raise InvalidBatchRequest(
                    f"the request line is {line_bytes} bytes; {self.provider} accepts at most "
                    f"{self.max_line_bytes} bytes per line.",
                    custom_id=row[0],
                )
            if self.total_bytes > self.max_file_bytes:
                raise InvalidBatchRequest(
                    f"the batch file would exceed {self.max_file_bytes} bytes. Use "
                    "raif_batches.create_batches() to split the requests."
                )
            yield row

    def row(self, index: int, request: Mapping[str, Any]) -> tuple[tuple[Any, ...], int]:
        """The row of one request (:attr:`COLUMNS`) and the bytes of its line."""
        # (type() first: isinstance against an ABC costs more than the rest of a check.)
        if type(request) is not dict and not isinstance(request, Mapping):
            raise InvalidBatchRequest("each request must be a dict.", index=index)
        custom_id = self._custom_id(index, request)
        messages_plain = plain_messages(request.get("messages"))
        plain = messages_plain and self._is_plain(request)
        if not plain:
            self._check(custom_id, request, messages_plain)

        source = request.get("source")
        content_type_id: int | None = None
        object_id = ""
        if source is None:
            pass
        elif isinstance(source, _SourceRef):
            content_type_id, object_id = source
        else:
            if not isinstance(source, models.Model) or source.pk is None:
                raise InvalidBatchRequest(
                    "source must be a saved model instance.", custom_id=custom_id
                )
            content_type_id = ContentType.objects.get_for_model(source).pk
            object_id = str(source.pk)
            if len(object_id) > 64:
                raise InvalidBatchRequest(
                    "source's primary key is longer than 64 characters.", custom_id=custom_id
                )
        try:
            return self._encode(custom_id, request, content_type_id, object_id, plain)
        except (TypeError, ValueError) as error:
            raise InvalidBatchRequest(
                f"the request is not JSON-serialisable: {error}", custom_id=custom_id
            ) from error

    def _custom_id(self, index: int, request: Mapping[str, Any]) -> str:
        """The request's custom id, checked and recorded as seen."""
        custom_id = request.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            raise InvalidBatchRequest("custom_id is required and must be a string.", index=index)
        if not CUSTOM_ID_PATTERN.fullmatch(custom_id):
            raise InvalidBatchRequest(
                "custom_id must be 1-64 characters of letters, digits and _ . : - "
                "(starting with a letter or digit).",
                custom_id=custom_id[:80],
            )
        if len(custom_id) > self.max_custom_id_length:
            raise InvalidBatchRequest(
                f"custom_id is {len(custom_id)} characters; {self.label} accepts at most "
                f"{self.max_custom_id_length}.",
                custom_id=custom_id,
            )
        if (
            self.matches_provider_pattern is not None
            and self.matches_provider_pattern(custom_id) is None
        ):
            raise InvalidBatchRequest(
                f"custom_id must match {self.custom_id_pattern} for {self.label}.",
                custom_id=custom_id,
            )
        if custom_id in self.seen:
            raise InvalidBatchRequest("custom_id is not unique in this batch.", custom_id=custom_id)
        self.seen.add(custom_id)
        return custom_id

    def _check(self, custom_id: str, request: Mapping[str, Any], messages_plain: bool) -> None:
        """Every check of a request but its custom id's and its source's; raises
        :class:`InvalidBatchRequest` naming the first problem. ``messages_plain``: its
        messages are of :func:`plain_messages`' shape."""
        check_request_values(request, custom_id, checked="messages" if messages_plain else None)
        problem = _parameter_problem(request, messages_plain) or self.strategy.check_request(
            request
        )
        if problem:
            raise InvalidBatchRequest(problem, custom_id=custom_id)

    def _is_plain(self, request: Mapping[str, Any]) -> bool:
        """Whether ``request``, whose messages are of :func:`plain_messages`' shape, is of the
        usual shape, which :meth:`_check` would pass: a dict of the :data:`PLAIN_KEYS` only, a
        float ``temperature`` and an int ``max_tokens`` in range, and nothing the provider refuses.
        Answered in one short pass, where :meth:`_check` costs twice as much; ``False`` leaves
        the request to :meth:`_check`, which finds and names any problem
        (``tests/test_request_checks.py`` holds the two to the same answers)."""
        if type(request) is not dict or not request.keys() <= PLAIN_KEYS:
            return False
        temperature = request.get("temperature")
        if temperature is not None and (
            type(temperature) is not float or not 0 <= temperature <= 2
        ):
            return False
        max_tokens = request.get("max_tokens")
        if max_tokens is not None and (
            type(max_tokens) is not int or not 1 <= max_tokens <= MAX_TOKENS_LIMIT
        ):
            return False
        return self.strategy.check_request(request) is None

    def _encode(
        self,
        custom_id: str,
        request: Mapping[str, Any],
        content_type_id: int | None,
        object_id: str,
        plain: bool,
    ) -> tuple[tuple[Any, ...], int]:
        """The row of a valid request, and the bytes of its line: those of the body that
        :meth:`ModelCompletion.request_body` rebuilds from the row, as ``json.dumps`` (default
        separators, ``ensure_ascii=False``) would write it, and the line's own. ``plain``: the
        request has none but the :data:`PLAIN_KEYS`."""
        messages = encode_json(request["messages"])
        size = self.fixed_bytes + LINE_OVERHEAD + len(custom_id) + _utf8_length(messages)
        # Each key present in the body adds ', "<key>": <value>', len(key) + 6 bytes and more.
        temperature = request.get("temperature")
        if temperature is not None:
            size += len("temperature") + 6 + len(_number_json(temperature))
            if type(temperature) is not float:
                temperature = float(temperature)  # as the FloatField stores it
        max_tokens = request.get("max_tokens")
        if max_tokens is not None:
            size += len("max_tokens") + 6 + len(_number_json(max_tokens))
            if type(max_tokens) is not int:
                max_tokens = int(max_tokens)
        texts: list[str | None] = [None, None, None]  # SQL NULL, and not in the body
        extra_text = "{}"
        if not plain:
            for position, key in enumerate(JSON_COLUMN_KEYS):
                value = request.get(key)
                if value is not None:
                    texts[position] = text = encode_json(value)
                    size += len(key) + 6 + _utf8_length(text)
            if not self.NOT_EXTRA.issuperset(request):
                extra = {key: value for key, value in request.items() if key not in self.NOT_EXTRA}
                extra_text = encode_json(extra)
                # The extra keys follow in the same object: ', ' in place of their braces.
                size += _utf8_length(extra_text)
        response_format, tools, tool_choice = texts
        row = (
            custom_id,
            messages,
            temperature,
            max_tokens,
            response_format,
            tools,
            tool_choice,
            extra_text,
            content_type_id,
            object_id,
        )
        return row, size


def _parameter_problem(request: Mapping[str, Any], plain: bool = False) -> str | None:
    """What the common rules refuse in a request's parameters and messages, or ``None``
    (``plain``: its messages are known to be of the usual shape, :func:`plain_messages`)."""
    if not FORBIDDEN_KEYS.isdisjoint(request):
        forbidden = FORBIDDEN_KEYS.intersection(request)
        return (
            f"{', '.join(sorted(forbidden))} cannot be set per request (the model is the "
            "batch's; batches do not stream)."
        )
    problem = None if plain else _messages_problem(request.get("messages"))
    if problem:
        return problem
    temperature = request.get("temperature")
    if temperature is not None and (
        isinstance(temperature, bool)
        or not isinstance(temperature, _NUMBER)
        or not 0 <= temperature <= 2
    ):
        return "temperature must be a number between 0 and 2."
    max_tokens = request.get("max_tokens")
    if max_tokens is not None and (
        isinstance(max_tokens, bool)
        or not isinstance(max_tokens, int)
        or not 1 <= max_tokens <= MAX_TOKENS_LIMIT
    ):
        return f"max_tokens must be a positive integer of at most {MAX_TOKENS_LIMIT}."
    response_format = request.get("response_format")
    if response_format is not None and (
        not isinstance(response_format, dict)
        or not isinstance(response_format.get("type"), str)
        or response_format["type"] not in RESPONSE_FORMATS
    ):
        return (
            "response_format must be a dict whose type is one of "
            f"{', '.join(sorted(RESPONSE_FORMATS))}."
        )
    tools = request.get("tools")
    if tools is not None and not isinstance(tools, list):
        return "tools must be a list."
    return None


def _number_json(value: int | float) -> str:
    """A number as ``json.dumps`` writes it (``repr`` of a plain int or finite float)."""
    return repr(value) if type(value) is float or type(value) is int else encode_json(value)


def _utf8_length(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())


def _line_size(model: str, request: Mapping[str, Any]) -> int:
    body = {k: v for k, v in request.items() if k != "source"}
    try:
        return len(json.dumps({**body, "model": model}, ensure_ascii=False).encode()) + (
            LINE_OVERHEAD
        )
    except (TypeError, ValueError) as error:
        raise InvalidBatchRequest(
            f"the request is not JSON-serialisable: {error}",
            custom_id=str(request.get("custom_id")),
        ) from error


def _messages_problem(messages: Any) -> str | None:
    if not isinstance(messages, list) or not messages:
        return "messages must be a non-empty list of {role, content} dicts."
    for position, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"messages[{position}] must be a dict with role and content."
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            return (
                f"messages[{position}].role is {role!r}; expected one of "
                f"{', '.join(sorted(ROLES))}."
            )
        content = message.get("content")
        if content is None and role == "assistant" and message.get("tool_calls"):
            continue
        if isinstance(content, str):
            continue
        if isinstance(content, list) and content and all(isinstance(p, dict) for p in content):
            continue  # multimodal parts
        return f"messages[{position}].content must be a string or a list of content parts."
    return None
