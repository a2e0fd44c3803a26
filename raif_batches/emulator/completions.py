"""Deterministic fake chat completions, shaped like xAI's ``chat_get_completion`` payload.

The answer depends only on the request body (and on whether the line hit the prompt cache), so a
test can predict the text, the token counts and the price of every line it submits. Markers in the
last user message let a test ask for the awkward cases a real model produces now and then:

- ``[[emulator:error <text>]]``: the line fails with ``<text>`` (as xAI's per-line errors do);
- ``[[emulator:invalid-json]]``: answer plain text even when JSON output was requested;
- ``[[emulator:tool-call]]``: answer with ``tool_calls`` when the request offers ``tools``;
- ``[[emulator:quirk <name>]]``: one of :data:`LINE_QUIRKS`, the malformed answers a client must
  survive (also set per custom id with ``EmulatorConfig.line_quirks``).

A request offering a server-side tool (``{"type": "web_search"}``, ``x_search``, …) is answered
the way xAI answers it: several assistant turns (the tool calls, then the answer), the
intermediate ones with ``finish_reason: ""``, and a top-level ``citations`` list of URLs.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any

ERROR_MARKER = re.compile(r"\[\[emulator:error\s+(.*?)\]\]", re.DOTALL)
INVALID_JSON_MARKER = "[[emulator:invalid-json]]"
TOOL_CALL_MARKER = "[[emulator:tool-call]]"
QUIRK_MARKER = re.compile(r"\[\[emulator:quirk\s+([a-z_]+)\]\]")
#: Malformed answers: a NUL or a lone surrogate in the text and finish_reason, token counts
#: below zero or beyond 64 bits, a cost of 10^21 ticks, a ``response`` that is not an object.
LINE_QUIRKS = (
    "nul",
    "surrogate",
    "negative_tokens",
    "huge_tokens",
    "huge_cost",
    "response_string",
    "response_list",
)
SERVER_TOOLS = (
    "web_search",
    "x_search",
    "code_execution",
    "code_interpreter",
    "collections_search",
)
MAX_TOKENS_ERROR = "Maximum number of tokens max_tokens must be positive but max_tokens = {}"
LABELS = ("positive", "negative", "neutral")

#: One USD is 1e10 ticks, and prices are per million tokens: a price of $1/M is 1e4 ticks a token.
TICKS_PER_USD_PER_MILLION_TOKENS = Decimal(10_000)


@dataclass(frozen=True)
class ModelPrice:
    """USD per million tokens; ``batch_discount`` is the fraction taken off every token type."""

    input: float = 1.25
    cached_input: float = 0.20
    output: float = 2.50
    batch_discount: float = 0.20


@dataclass(frozen=True)
class Outcome:
    """What one line produced: a completion with its price, or a per-line error message."""

    completion: dict[str, Any] | None
    error: str | None
    cost_ticks: int
    quirk: str | None = None


def model_matches(model: str, patterns: Any) -> bool:
    """``patterns`` holds exact names or prefixes ending in ``*`` (``"grok-4.20-0309*"``)."""
    return any(model.startswith(p[:-1]) if p.endswith("*") else model == p for p in patterns)


def price_for(model: str, prices: dict[str, ModelPrice]) -> ModelPrice:
    """Exact name first, then the longest matching ``prefix*``; else list price, no discount."""
    if model in prices:
        return prices[model]
    prefixes = [p for p in prices if p.endswith("*") and model.startswith(p[:-1])]
    if prefixes:
        return prices[max(prefixes, key=len)]
    return ModelPrice(batch_discount=0.0)


def cost_ticks(usage: dict[str, Any], price: ModelPrice) -> int:
    """Price a usage block the way xAI bills a batch line: reasoning tokens at the output rate."""
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    uncached = usage["prompt_tokens"] - cached
    output = usage["completion_tokens"] + usage["completion_tokens_details"]["reasoning_tokens"]
    usd_millionths = (
        uncached * Decimal(str(price.input))
        + cached * Decimal(str(price.cached_input))
        + output * Decimal(str(price.output))
    )
    discounted = usd_millionths * (1 - Decimal(str(price.batch_discount)))
    ticks = discounted * TICKS_PER_USD_PER_MILLION_TOKENS
    return int(ticks.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def message_text(message: dict[str, Any]) -> str:
    """Text of a message whose content is a string or a list of ``{"type": "text"}`` parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return ""


def chat_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Messages of a chat body, or of a ``/v1/responses`` body (``input``), which xAI converts."""
    messages = body.get("messages")
    if messages is None:
        raw = body.get("input", "")
        messages = [{"role": "user", "content": raw}] if isinstance(raw, str) else raw
    return [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []


def system_prompt(body: dict[str, Any]) -> str | None:
    """The system text, used to decide whether a later line of the batch hits the prompt cache."""
    texts = [message_text(m) for m in chat_messages(body) if m.get("role") == "system"]
    return "\n".join(texts) if texts else None


def prompt_cache_hit(seen: set[str], body: dict[str, Any]) -> bool:
    """Whether a line hits the prompt cache: an earlier line of its batch had its system text.
    ``seen`` is the batch's set of system texts so far; this line's is added to it."""
    system = system_prompt(body)
    if system is None:
        return False
    hit = system in seen
    seen.add(system)
    return hit


def is_reasoning_model(model: str) -> bool:
    """grok-4.3 always reasons; the grok-4.20 family says so in its name (or "non-reasoning")."""
    return model == "grok-4.3" or ("reasoning" in model and "non-reasoning" not in model)


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def fill_schema(schema: Any, text: str, depth: int = 0) -> Any:
    """A value that satisfies a (simple) JSON schema, so strict-schema parsers accept the answer."""
    if not isinstance(schema, dict) or depth > 8:
        return text
    if schema.get("enum"):
        return schema["enum"][_digest(text) % len(schema["enum"])]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {name: fill_schema(sub, text, depth + 1) for name, sub in props.items()}
    if kind == "array":
        return [fill_schema(schema.get("items", {}), text, depth + 1)]
    if kind == "integer":
        return _digest(text) % 10
    if kind == "number":
        return (_digest(text) % 1000) / 100
    if kind == "boolean":
        return _digest(text) % 2 == 0
    if kind == "null":
        return None
    return text


def _json_answer(response_format: dict[str, Any], text: str) -> str:
    schema = (response_format.get("json_schema") or {}).get("schema")
    if isinstance(schema, dict) and (schema.get("properties") or schema.get("type") == "object"):
        return json.dumps(fill_schema(schema, text))
    return json.dumps({"answer": text, "label": LABELS[_digest(text) % len(LABELS)]})


def complete(
    body: dict[str, Any],
    *,
    completion_id: str,
    created: int,
    cache_hit: bool,
    prices: dict[str, ModelPrice],
    quirk: str | None = None,
) -> Outcome:
    """Answer one chat-completions body, or fail it the way xAI fails a single line."""
    model = str(body.get("model", ""))
    messages = chat_messages(body)
    user_texts = [message_text(m) for m in messages if m.get("role") == "user"]
    last_user = user_texts[-1] if user_texts else ""
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    if isinstance(max_tokens, int) and max_tokens <= 0:
        return Outcome(None, MAX_TOKENS_ERROR.format(max_tokens), 0)
    marker = ERROR_MARKER.search(last_user)
    if marker:
        return Outcome(None, marker.group(1).strip(), 0)

    if quirk is None:
        found = QUIRK_MARKER.search(last_user)
        quirk = found.group(1) if found else None
    if quirk is not None and quirk not in LINE_QUIRKS:
        raise ValueError(f"unknown line quirk {quirk!r}; expected one of {LINE_QUIRKS}")
    clean = re.sub(r"\[\[emulator:[^\]]*\]\]", "", last_user).strip()
    answer = f"Emulated answer to: {clean[:60]}"
    tool_calls: list[dict[str, Any]] | None = None
    finish_reason = "stop"
    content: str | None
    response_format = body.get("response_format") or {}
    tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
    server_tools = [str(t["type"]) for t in tools if t.get("type") in SERVER_TOOLS]
    if server_tools:
        answer = f"Emulated answer, with sources, to: {clean[:60]}"
    if tools and TOOL_CALL_MARKER in last_user and not server_tools:
        function = tools[0].get("function") or {}
        arguments = fill_schema(function.get("parameters") or {"type": "object"}, clean[:60])
        tool_calls = [
            {
                "id": f"call_{uuid.uuid5(uuid.NAMESPACE_URL, completion_id).hex[:24]}",
                "type": "function",
                "function": {
                    "name": function.get("name", "tool"),
                    "arguments": json.dumps(arguments),
                },
            }
        ]
        content, finish_reason = None, "tool_calls"
    elif (
        isinstance(response_format, dict)
        and response_format.get("type") in ("json_object", "json_schema")
        and INVALID_JSON_MARKER not in last_user
    ):
        content = _json_answer(response_format, answer)
    else:
        content = answer
    if content is not None and isinstance(max_tokens, int) and len(content) // 4 > max_tokens:
        content, finish_reason = content[: max_tokens * 4], "length"

    prompt_tokens = sum(len(message_text(m)) for m in messages) // 4 + 10
    completion_source = content if content is not None else json.dumps(tool_calls)
    completion_tokens = max(1, len(completion_source) // 4)
    message: dict[str, Any] = {"role": "assistant", "content": content}
    reasoning_tokens = 0
    if is_reasoning_model(model):
        message["reasoning_content"] = f"Emulated reasoning about: {clean[:60]}"
        reasoning_tokens = 100 + len(clean) // 4
    if tool_calls:
        message["tool_calls"] = tool_calls
    message["refusal"] = None
    usage: dict[str, Any] = {
        "prompt_tokens": prompt_tokens,
        # The batch wire leaves reasoning out of completion_tokens but counts it in the total.
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens + reasoning_tokens,
        "prompt_tokens_details": {"cached_tokens": prompt_tokens // 2 if cache_hit else 0},
        "completion_tokens_details": {"reasoning_tokens": reasoning_tokens},
    }
    ticks = cost_ticks(usage, price_for(model, prices))
    usage["cost_in_usd_ticks"] = ticks
    choices = [{"index": 0, "message": message, "finish_reason": finish_reason}]
    completion: dict[str, Any] = {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": usage,
        "system_fingerprint": "fp_emulator",
    }
    if server_tools:
        turns = _server_tool_turns(server_tools, clean[:60], completion_id)
        choices[:] = [*turns, {**choices[0], "index": len(turns)}]
        completion["citations"] = [
            f"https://example.com/source-{_digest(clean + str(i)) % 1000}" for i in range(3)
        ]
        usage["num_sources_used"] = len(completion["citations"])
    if quirk is not None:
        ticks = _apply_quirk(completion, quirk, ticks)
    return Outcome(completion, None, ticks, quirk)


def _server_tool_turns(kinds: list[str], query: str, completion_id: str) -> list[dict[str, Any]]:
    """The intermediate turns of a server-side tool answer: one tool call per tool, then a
    progress note, each with the empty finish_reason xAI gives unfinished turns."""
    turns: list[dict[str, Any]] = []
    for kind in kinds:
        call_id = f"call_{uuid.uuid5(uuid.NAMESPACE_URL, completion_id + kind).hex[:24]}"
        call = {
            "id": call_id,
            "type": "function",
            "function": {"name": kind, "arguments": json.dumps({"query": query})},
        }
        message = {"role": "assistant", "content": "", "tool_calls": [call]}
        turns.append({"index": len(turns), "message": message, "finish_reason": ""})
    note = {"role": "assistant", "content": "Reading the sources found."}
    turns.append({"index": len(turns), "message": note, "finish_reason": ""})
    return turns


def _apply_quirk(completion: dict[str, Any], quirk: str, ticks: int) -> int:
    """Spoil an answer the way real ones are spoilt now and then; return the line's ticks."""
    choice = completion["choices"][-1]
    usage = completion["usage"]
    if quirk in ("nul", "surrogate"):
        odd = "\u0000" if quirk == "nul" else "\ud800"
        content = choice["message"].get("content") or ""
        choice["message"]["content"] = f"{content[:20]}{odd}{content[20:]}"
        choice["finish_reason"] = f"{choice['finish_reason']}{odd}"
    elif quirk == "negative_tokens":
        usage["prompt_tokens"], usage["completion_tokens"] = -5, -1
        usage["total_tokens"] = -6
    elif quirk == "huge_tokens":
        usage["prompt_tokens"] = usage["total_tokens"] = 2**63 + 5
        usage["completion_tokens_details"]["reasoning_tokens"] = 10**30
    elif quirk == "huge_cost":
        ticks = usage["cost_in_usd_ticks"] = 10**21
    return ticks
