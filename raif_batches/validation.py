"""What ``create_batch`` accepts, checked before anything is written.

Rules, and why:

- Every value stored in a JSON column (messages, metadata, parameters) must be plain JSON:
  dicts with string keys, lists, strings, finite numbers, booleans and ``None``. A ``datetime``,
  a ``set`` or ``NaN`` would otherwise fail inside the database driver (or, for ``NaN``, be
  stored on SQLite and refused by PostgreSQL), far from the request that carried it.
- No text may hold ``\\u0000`` (PostgreSQL cannot store it in ``text`` or ``jsonb``) or a lone
  surrogate (not encodable as UTF-8, so no database and no provider accepts it).
- JSON is nested at most :data:`MAX_JSON_DEPTH` levels of objects and arrays, counted in the
  stored column: MariaDB's ``JSON_VALID`` refuses deeper documents (MySQL stops at 100), and
  values thousands deep overflow the recursion of every JSON encoder.
- Columns have sizes: a model name fits in 128 characters, a batch name in 255, ``max_tokens``
  in a 32-bit integer.
- Keys starting with ``_`` are reserved for raif_batches; a caller cannot pass them.

Each problem raises :class:`~raif_batches.exceptions.InvalidBatchRequest` naming the request
(when there is one) and the field, e.g. ``request 't-1': messages[0].content contains …``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from .exceptions import InvalidBatchRequest

#: MariaDB 10.11's JSON_VALID refuses 32 levels; 31 are stored everywhere.
MAX_JSON_DEPTH = 31
MAX_MODEL_LENGTH = 128
MAX_NAME_LENGTH = 255
MAX_HANDLER_LENGTH = 255
#: The largest value of a PositiveIntegerField on every supported database.
MAX_TOKENS_LIMIT = 2**31 - 1
#: The roles a message may have.
ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
#: NUL, and every UTF-16 surrogate code point (only ever lone in a Python ``str``).
_BAD_CHARACTERS = re.compile("[\x00\ud800-\udfff]")


class UnknownModelWarning(RuntimeWarning):
    """``create_batch`` was given a model that is not in the price table.

    Only a warning: providers add models before this package knows them. The batch is created;
    its costs are unknown until results carry the provider's own figures.
    """


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as text, or ``None``."""
    found = _BAD_CHARACTERS.search(value)
    if found is None:
        return None
    if found.group() == "\x00":
        return "contains a NUL character (\\u0000), which databases cannot store"
    return f"contains a lone surrogate (\\u{ord(found.group()):04x}), which is not valid Unicode"


def _is_clean(value: Any, depth: int) -> bool:
    """:func:`json_problem` without the paths: the fast answer for the usual, valid input.

    Scalars are checked where their container is read, so that only containers go on the
    stack: a request is mostly strings, and a push and a pop per string cost more than
    checking it.
    """
    stack: list[tuple[Any, int]] = [(value, depth)]
    pop, push, search, isfinite = stack.pop, stack.append, _BAD_CHARACTERS.search, math.isfinite
    while stack:
        item, level = pop()
        kind = type(item)
        children: Iterable[Any]
        if kind is dict:
            if level >= MAX_JSON_DEPTH:
                return False
            for key in item:
                if type(key) is not str or ((not key.isascii() or "\x00" in key) and search(key)):
                    return False
            children = item.values()
        elif kind is list or kind is tuple:
            if level >= MAX_JSON_DEPTH:
                return False
            children = item
        else:
            children = (item,)  # a scalar at the top
            level -= 1
        level += 1
        for child in children:
            kind = type(child)
            if kind is str:
                # ASCII without NUL holds no bad character: a flag and a memchr, where the
                # regex would scan the whole text.
                if (not child.isascii() or "\x00" in child) and search(child):
                    return False
            elif kind is dict or kind is list or kind is tuple:
                push((child, level))
            elif kind is float:
                if not isfinite(child):
                    return False
            elif not (child is None or kind is int or kind is bool):
                return False  # subclasses and other types: the slow walk decides
    return True


def json_problem(value: Any, path: str, depth: int = 0) -> str | None:
    """The first reason ``value`` is not storable JSON, as ``"<path> <reason>"``, or ``None``.

    ``depth`` is the number of containers around ``value`` in its column. Iterative, so that a
    value nested thousands deep is refused instead of overflowing the stack.
    """
    if _is_clean(value, depth):
        return None
    stack: list[tuple[Any, str, int]] = [(value, path, depth)]
    while stack:
        item, where, depth = stack.pop()
        if item is None or isinstance(item, bool | int):
            continue
        if isinstance(item, str):
            problem = text_problem(item)
            if problem:
                return f"{where} {problem}"
            continue
        if isinstance(item, float):
            if not math.isfinite(item):
                return f"{where} is {item!r}, which JSON cannot represent"
            continue
        if depth >= MAX_JSON_DEPTH:
            return f"{where} is nested more than {MAX_JSON_DEPTH} levels deep"
        if isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    return f"{where} has a key {key!r} that is not a string"
                problem = text_problem(key)
                if problem:
                    return f"{where} has a key that {problem}"
                stack.append((child, f"{where}[{key!r}]" if where else repr(key), depth + 1))
        elif isinstance(item, list | tuple):
            for position, child in enumerate(item):
                stack.append((child, f"{where}[{position}]", depth + 1))
        else:
            return f"{where} is of type {type(item).__name__}, which is not JSON-serialisable"
    return None


def check_batch_args(
    provider: Any, model: Any, name: Any, metadata: Any, handler: Any, requests: Any
) -> None:
    """Check the arguments of ``create_batch`` that are not per request."""
    if not isinstance(provider, str):
        raise InvalidBatchRequest(
            f"provider must be a string such as 'xai', not {type(provider).__name__}."
        )
    if not isinstance(model, str) or not model.strip():
        raise InvalidBatchRequest("model must be a non-empty string such as 'grok-4.3'.")
    if len(model) > MAX_MODEL_LENGTH:
        raise InvalidBatchRequest(
            f"model is {len(model)} characters; at most {MAX_MODEL_LENGTH} are stored."
        )
    problem = text_problem(model)
    if problem:
        raise InvalidBatchRequest(f"model {problem}.")
    if name is not None:
        if not isinstance(name, str):
            raise InvalidBatchRequest(f"name must be a string, not {type(name).__name__}.")
        if len(name) > MAX_NAME_LENGTH:
            raise InvalidBatchRequest(
                f"name is {len(name)} characters; at most {MAX_NAME_LENGTH} are stored."
            )
        problem = text_problem(name)
        if problem:
            raise InvalidBatchRequest(f"name {problem}.")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise InvalidBatchRequest("metadata must be a dict.")
        problem = json_problem(metadata, "metadata")
        if problem:
            raise InvalidBatchRequest(f"{problem}.")
    if handler is not None and not isinstance(handler, str):
        raise InvalidBatchRequest(
            f"handler must be a dotted path string, not {type(handler).__name__}."
        )
    if handler and len(handler) > MAX_HANDLER_LENGTH:
        raise InvalidBatchRequest(f"handler is longer than {MAX_HANDLER_LENGTH} characters.")
    if requests is None or isinstance(requests, str | bytes | Mapping):
        raise InvalidBatchRequest(
            "requests must be an iterable (a list, a generator…) of request dicts, not "
            f"{type(requests).__name__}."
        )
    if not hasattr(requests, "__iter__"):
        raise InvalidBatchRequest(
            f"requests must be an iterable of request dicts, not {type(requests).__name__}."
        )


def plain_messages(messages: Any) -> bool:
    """Whether ``messages`` is a non-empty list of ``{"role": <role>, "content": <text>}``
    dicts whose texts are storable: the usual shape, answered without a walk. ``False`` says
    only that the general checks must decide."""
    if type(messages) is not list or not messages:
        return False
    search = _BAD_CHARACTERS.search
    for message in messages:
        # Two keys, and both found: they are these two.
        if type(message) is not dict or len(message) != 2:
            return False
        role = message.get("role")
        content = message.get("content")
        if type(role) is not str or role not in ROLES or type(content) is not str:
            return False
        if (not content.isascii() or "\x00" in content) and search(content):
            return False
    return True


def _is_clean_request(request: dict[str, Any], checked: str | None) -> bool:
    """:func:`_is_clean` of a request's values (``source`` and ``checked`` excepted), and no
    reserved key: the request's own scalars are checked here, its containers walked."""
    search, isfinite = _BAD_CHARACTERS.search, math.isfinite
    for key, value in request.items():
        if (
            type(key) is not str
            or key.startswith("_")
            or ((not key.isascii() or "\x00" in key) and search(key))
        ):
            return False
        kind = type(value)
        if kind is str:
            if (not value.isascii() or "\x00" in value) and search(value):
                return False
        elif kind is float:
            if not isfinite(value):
                return False
        elif value is None or kind is int or kind is bool or key == checked or key == "source":
            continue
        elif not _is_clean(value, 1):
            return False
    return True


def check_request_values(
    request: Mapping[str, Any], custom_id: str, *, checked: str | None = None
) -> None:
    """Check every key and value of one request (``source`` excepted) for storable JSON.

    ``checked`` names a key whose value the caller has found storable already (``messages``,
    by :func:`plain_messages`)."""
    # The usual, valid request is answered by one pass; any problem is then found, and named,
    # key by key (reserved keys included).
    if type(request) is dict:
        clean = _is_clean_request(request, checked)
    else:  # another mapping: its values as one dict
        values = {key: value for key, value in request.items() if key != "source"}
        clean = _is_clean(values, 0) and not any(key.startswith("_") for key in values)
    if not clean:
        _check_each_value(request, custom_id)
    max_tokens = request.get("max_tokens")
    if isinstance(max_tokens, int) and max_tokens > MAX_TOKENS_LIMIT:
        raise InvalidBatchRequest(
            f"max_tokens is {max_tokens}; at most {MAX_TOKENS_LIMIT} can be stored.",
            custom_id=custom_id,
        )


def _check_each_value(request: Mapping[str, Any], custom_id: str) -> None:
    for key, value in request.items():
        if not isinstance(key, str):
            raise InvalidBatchRequest(f"the key {key!r} is not a string.", custom_id=custom_id)
        problem = text_problem(key)
        if problem:
            raise InvalidBatchRequest(f"a key {problem}.", custom_id=custom_id)
        if key.startswith("_"):
            raise InvalidBatchRequest(
                f"{key} is reserved for raif_batches (keys starting with '_' cannot be passed).",
                custom_id=custom_id,
            )
        if key == "source":
            continue
        # 1: a parameter is stored inside the extra_body object.
        problem = json_problem(value, key, depth=1)
        if problem:
            raise InvalidBatchRequest(f"{problem}.", custom_id=custom_id)
