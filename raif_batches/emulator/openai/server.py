"""The OpenAI emulator's HTTP face: auth, the error envelope, dispatch to the state."""

from __future__ import annotations

from typing import Any, cast

from ..server import EmulatorServer, RawAnswer, _json, parse_multipart
from ..state import ApiError, Call
from .config import (
    BAD_KEY_MESSAGE,
    ROUTES,
    OpenAIApiError,
    OpenAIEmulatorConfig,
    error_envelope,
)
from .state import OpenAIEmulatorState


class OpenAIEmulatorServer(EmulatorServer):
    """OpenAI's Batch API on a loopback port (``base_url`` ends in ``/v1``)."""

    provider = "openai"
    routes = ROUTES
    path_prefix = "/v1"

    def new_state(self, config: Any) -> OpenAIEmulatorState:
        return OpenAIEmulatorState(config)

    def config_for(self, profile: str) -> OpenAIEmulatorConfig:
        return OpenAIEmulatorConfig.profile(profile)

    def error_body(
        self, status: int, message: str, error: ApiError | None = None
    ) -> dict[str, Any]:
        return error_envelope(status, message, error)

    def authorize(self, headers: Any) -> None:
        header = headers.get("Authorization") if headers is not None else None
        scheme, _, key = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not self.key_matches(key.strip()):
            raise OpenAIApiError(401, BAD_KEY_MESSAGE, code="invalid_api_key")

    def dispatch(
        self, handler: Any, call: Call, batch_id: str | None, body: bytes, bend: str | None
    ) -> dict[str, Any] | RawAnswer:
        state = cast(OpenAIEmulatorState, self.state)
        endpoint, ident = call.endpoint, str(batch_id)
        if endpoint == "upload_file":
            fields, filename, content = parse_multipart(
                handler.headers.get("Content-Type", ""), body
            )
            return state.add_file(filename, fields.get("purpose", ""), content)
        if endpoint == "list_files":
            return state.list_files(call.query)
        if endpoint == "get_file":
            return state.get_file(ident)
        if endpoint == "list_results":
            return state.file_content(ident)
        if endpoint == "create_batch":
            return state.create_batch(_json(body))
        if endpoint == "list_batches":
            return state.list_batches(call.query, bend)
        if endpoint == "get_batch":
            return state.get_batch(ident)
        if endpoint == "cancel_batch":
            return state.cancel_batch(ident)
        raise OpenAIApiError(404, f"Unknown endpoint {call.method} {call.path}")
