"""What the OpenAI emulator serves: input-line checks, result rows, batch objects, usage."""

from __future__ import annotations

import copy
import hashlib
import json
import uuid
from typing import Any

from ..completions import chat_messages, model_matches
from .config import CANCELLED_MESSAGE, EXPIRED_MESSAGE, OpenAIApiError, OpenAIEmulatorConfig
from .records import Batch, Line

#: (code, message, param) of a validation error, as ``errors.data[]`` carries it.
Problem = tuple[str, str, "str | None"]


def check_line(
    batch: Batch,
    number: int,
    start: int,
    end: int,
    seen: set[str],
    models: set[str],
    supported_models: tuple[str, ...],
) -> Problem | None:
    """What is wrong with one input line, as OpenAI's validation says it (code, message,
    param); None when the line is valid. ``models`` collects the batch's model."""
    try:
        data = json.loads(batch.source[start:end])
    except ValueError:
        return "invalid_json_line", f"Line {number} is not valid JSON.", None
    if not isinstance(data, dict):
        return "invalid_json_line", f"Line {number} is not a JSON object.", None
    custom_id = data.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return (
            "missing_required_parameter",
            "Missing required parameter: 'custom_id'.",
            ("custom_id"),
        )
    if custom_id in seen:
        return (
            "duplicate_custom_id",
            (f"The custom_id '{custom_id}' is used more than once in this file."),
            "custom_id",
        )
    if data.get("method") != "POST":
        return "invalid_request", "Only POST requests are supported.", "method"
    if data.get("url") != batch.endpoint:
        return (
            "invalid_url",
            (f"The url '{data.get('url')}' does not match the batch endpoint '{batch.endpoint}'."),
            "url",
        )
    body = data.get("body")
    if not isinstance(body, dict):
        return "missing_required_parameter", "Missing required parameter: 'body'.", "body"
    if "messages" not in body:
        return (
            "missing_required_parameter",
            "Missing required parameter: 'messages'.",
            ("body.messages"),
        )
    if not chat_messages(body):
        return (
            "invalid_request",
            "Invalid 'messages': expected a non-empty array.",
            ("body.messages"),
        )
    if body.get("stream"):
        return (
            "streaming_unsupported",
            "Streaming is not supported in the Batch API.",
            ("body.stream"),
        )
    model = body.get("model")
    if not isinstance(model, str) or not model:
        return (
            "missing_required_parameter",
            "Missing required parameter: 'model'.",
            ("body.model"),
        )
    if not model_matches(model, supported_models):
        return (
            "model_not_found",
            (f"The model '{model}' does not exist or you do not have access to it."),
            "body.model",
        )
    if models and model not in models:
        return (
            "mismatched_model",
            (
                f"The model '{model}' differs from the batch's model '{next(iter(models))}'; "
                "a batch takes one model."
            ),
            "body.model",
        )
    models.add(model)
    return None


def result_row(batch: Batch, line: Line) -> dict[str, Any]:
    """A line's row in the output file (2xx) or the error file (a 400, or never run)."""
    digest = hashlib.sha256(f"{batch.id}/{line.custom_id}".encode()).hexdigest()
    row_id = f"batch_req_{digest[:32]}"
    request_id = f"req_{digest[32:64]}" if line.number % 2 else str(uuid.UUID(digest[:32]))
    if line.state == "succeeded":
        response = {"status_code": 200, "request_id": request_id, "body": line.completion}
        return {"id": row_id, "custom_id": line.custom_id, "response": response, "error": None}
    if line.state in ("cancelled", "expired"):
        code = f"batch_{line.state}"
        message = CANCELLED_MESSAGE if line.state == "cancelled" else EXPIRED_MESSAGE
        return {
            "id": row_id,
            "custom_id": line.custom_id,
            "response": None,
            "error": {"code": code, "message": message},
        }
    body = {
        "error": {
            "message": line.error or "Invalid request.",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    }
    response = {"status_code": 400, "request_id": request_id, "body": body}
    return {"id": row_id, "custom_id": line.custom_id, "response": response, "error": None}


def batch_view(batch: Batch, cfg: OpenAIEmulatorConfig) -> dict[str, Any]:
    """The batch object as OpenAI serves it, quirks of ``cfg`` applied."""
    counts = {"total": 0, "completed": 0, "failed": 0}
    usage = {"input": 0, "cached": 0, "output": 0, "reasoning": 0}
    if batch.status not in ("validating", "failed"):
        counts["total"] = len(batch.lines)
        for line in batch.lines:
            if line.state == "succeeded":
                counts["completed"] += 1
                line_usage = (line.completion or {}).get("usage") or {}
                usage["input"] += _int(line_usage.get("prompt_tokens"))
                usage["output"] += _int(line_usage.get("completion_tokens"))
                details = line_usage.get("prompt_tokens_details") or {}
                usage["cached"] += _int(details.get("cached_tokens"))
                reasoning = line_usage.get("completion_tokens_details") or {}
                usage["reasoning"] += _int(reasoning.get("reasoning_tokens"))
            elif line.state == "failed":
                counts["failed"] += 1
    if batch.status == "cancelled" and cfg.cancel_counts_zero:
        counts["completed"] = counts["failed"] = 0
    absent: str | None = "" if cfg.empty_file_id and batch.seq % 2 == 0 else None
    terminal = batch.status in ("completed", "cancelled", "expired")
    view: dict[str, Any] = {
        "id": batch.id,
        "object": "batch",
        "endpoint": batch.endpoint,
        "model": batch.model or None,
        "errors": (
            {"object": "list", "data": [dict(e) for e in batch.errors]} if batch.errors else None
        ),
        "input_file_id": batch.input_file_id,
        "completion_window": "24h",
        "status": batch.status,
        "output_file_id": batch.output_file_id or (absent if terminal else None),
        "error_file_id": batch.error_file_id or (absent if terminal else None),
        "created_at": int(batch.created_at),
        "in_progress_at": _at(batch, "in_progress_at"),
        "expires_at": int(batch.expires_at),
        "finalizing_at": _at(batch, "finalizing_at"),
        "completed_at": _at(batch, "completed_at"),
        "failed_at": _at(batch, "failed_at"),
        "expired_at": _at(batch, "expired_at"),
        "cancelling_at": _at(batch, "cancelling_at"),
        "cancelled_at": _at(batch, "cancelled_at"),
        "request_counts": counts,
        "metadata": dict(batch.metadata) or None,
    }
    if cfg.batch_usage:
        view["usage"] = {
            "input_tokens": usage["input"],
            "input_tokens_details": {"cached_tokens": usage["cached"]},
            "output_tokens": usage["output"],
            "output_tokens_details": {"reasoning_tokens": usage["reasoning"]},
            "total_tokens": usage["input"] + usage["output"],
        }
    return view


def openai_shape(completion: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """xAI's completion payload as OpenAI's: reasoning inside ``completion_tokens``, no cost,
    no ``reasoning_content``; a reasoning model (gpt-5, o-series) reports reasoning tokens."""
    shaped = copy.deepcopy(completion)
    usage = shaped.get("usage") or {}
    usage.pop("cost_in_usd_ticks", None)
    usage.pop("num_sources_used", None)
    shaped.pop("citations", None)
    for choice in shaped.get("choices") or []:
        if isinstance(choice, dict) and isinstance(choice.get("message"), dict):
            choice["message"].pop("reasoning_content", None)
    model = str(body.get("model", ""))
    details = usage.get("completion_tokens_details")
    if isinstance(details, dict) and isinstance(usage.get("completion_tokens"), int):
        reasoning = 0
        if model.startswith(("gpt-5", "o3", "o4")):
            texts = [str(m.get("content")) for m in chat_messages(body)]
            reasoning = 64 + len("".join(texts)) // 8
        details["reasoning_tokens"] = reasoning
        details.setdefault("accepted_prediction_tokens", 0)
        details.setdefault("rejected_prediction_tokens", 0)
        usage["completion_tokens"] += reasoning
        if isinstance(usage.get("prompt_tokens"), int):
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    shaped["service_tier"] = "default"
    return shaped


def _at(batch: Batch, key: str) -> int | None:
    value = batch.times.get(key)
    return None if value is None else int(value)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def page_limit(query: dict[str, str], default: int, maximum: int) -> int:
    if "limit" not in query:
        return default
    try:
        limit = int(query["limit"])
    except ValueError as exc:
        raise OpenAIApiError(400, "Invalid 'limit': expected an integer.", param="limit") from exc
    if not 1 <= limit <= maximum:
        raise OpenAIApiError(
            400, f"Invalid 'limit': must be between 1 and {maximum}.", param="limit"
        )
    return limit


def check_metadata(metadata: Any) -> None:
    if not isinstance(metadata, dict):
        raise OpenAIApiError(400, "Invalid 'metadata': expected an object.", param="metadata")
    if len(metadata) > 16:
        raise OpenAIApiError(400, "Invalid 'metadata': at most 16 pairs.", param="metadata")
    for key, value in metadata.items():
        if len(key) > 64 or not isinstance(value, str) or len(value) > 512:
            raise OpenAIApiError(
                400,
                "Invalid 'metadata': keys up to 64 characters, string values up to 512.",
                param="metadata",
            )
