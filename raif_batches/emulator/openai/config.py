"""The OpenAI emulator's routes, constants, error envelope and config (see the package doc)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..base import Profiles
from ..completions import (
    LINE_QUIRKS,
    ModelPrice,
)
from ..server import Routes
from ..state import ApiError

ROUTES: Routes = [
    ("POST", re.compile(r"/v1/files"), "upload_file"),
    ("GET", re.compile(r"/v1/files"), "list_files"),
    ("GET", re.compile(r"/v1/files/(?P<id>[^/]+)"), "get_file"),
    ("GET", re.compile(r"/v1/files/(?P<id>[^/]+)/content"), "list_results"),
    ("POST", re.compile(r"/v1/batches"), "create_batch"),
    ("GET", re.compile(r"/v1/batches"), "list_batches"),
    ("GET", re.compile(r"/v1/batches/(?P<id>[^/]+)"), "get_batch"),
    ("POST", re.compile(r"/v1/batches/(?P<id>[^/]+)/cancel"), "cancel_batch"),
]
ENDPOINTS = tuple(name for _, _, name in ROUTES)
CHAT_URL = "/v1/chat/completions"
BATCH_ENDPOINTS = ("/v1/chat/completions", "/v1/responses", "/v1/embeddings", "/v1/completions")
MB = 1024 * 1024
DAY = 86400.0
BAD_KEY_MESSAGE = (
    "Incorrect API key provided. You can find your API key at "
    "https://platform.openai.com/account/api-keys."
)
CANCELLED_MESSAGE = "This request was not executed because the batch was cancelled."
EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."
IN_FLIGHT = ("validating", "in_progress", "finalizing", "cancelling")
TERMINAL = ("completed", "failed", "expired", "cancelled")
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    429: "requests",
}


class OpenAIApiError(ApiError):
    """An error answer with OpenAI's ``{"error": {"message", "type", "param", "code"}}``."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        type: str | None = None,
    ) -> None:
        super().__init__(status, message)
        self.code, self.param, self.type = code, param, type


def error_envelope(status: int, message: str, error: ApiError | None = None) -> dict[str, Any]:
    code = getattr(error, "code", None)
    kind = getattr(error, "type", None) or ERROR_TYPES.get(status, "server_error")
    return {
        "error": {
            "message": message,
            "type": kind,
            "param": getattr(error, "param", None),
            "code": code,
        }
    }


def _default_prices() -> dict[str, ModelPrice]:
    # The emulator's own usage figures (no cost is served): list prices, half off in a batch.
    half = 0.5
    return {
        "gpt-5-mini*": ModelPrice(input=0.25, cached_input=0.025, output=2.0, batch_discount=half),
        "gpt-5-nano*": ModelPrice(input=0.05, cached_input=0.005, output=0.4, batch_discount=half),
        "gpt-5*": ModelPrice(input=1.25, cached_input=0.125, output=10.0, batch_discount=half),
        "gpt-4.1*": ModelPrice(input=2.0, cached_input=0.5, output=8.0, batch_discount=half),
        "gpt-4o*": ModelPrice(input=2.5, cached_input=1.25, output=10.0, batch_discount=half),
    }


#: What the fast profile changes from the default: every line done at the first read after
#: create, no pacing, no quirks.
FAST_PROFILE: dict[str, Any] = {
    "validation_reads": 0,
    "finalizing_reads": 0,
    "cancel_reads": 0,
    "requests_per_read": None,
    "share_per_read": 0.0,
    "seconds_per_request": 0.0,
    "empty_file_id": False,
    "cancel_counts_zero": False,
    "cancel_loses_lines": 0,
    "shuffle_results": False,
    "enqueued_token_limit": None,
}


@dataclass
class OpenAIEmulatorConfig(Profiles):
    """Every knob; tests may change fields while the server runs. The defaults play OpenAI as
    the fact sheet says; :meth:`fast` is the quiet one. Names shared with xAI's
    :class:`~raif_batches.emulator.state.EmulatorConfig` mean the same."""

    fast_profile = FAST_PROFILE

    # A read of a batch: a GET of it, or its entry on a served list page.
    validation_reads: int = 2  # GETs of a batch that read ``validating`` before validation
    finalizing_reads: int = 1  # GETs that read ``finalizing`` (counts at 100%) before the end
    cancel_reads: int = 1  # GETs that read ``cancelling`` before ``cancelled``
    requests_per_read: int | None = None  # lines finished per GET (see xAI's state)
    share_per_read: float = 0.25  # share of the lines finished per GET (at least one)
    seconds_per_request: float = 0.0  # emulator seconds per finished line (0: off)
    supported_models: tuple[str, ...] = ("gpt-5*", "gpt-4.1*", "gpt-4o*", "o3*", "o4-mini*")
    prices: dict[str, ModelPrice] = field(default_factory=_default_prices)
    missing_result_ids: set[str] = field(default_factory=set)  # in neither file
    expire_after_seconds: float = DAY
    latency: float = 0.0
    seed: int = 0
    transient_failure_rate: float = 0.0
    max_file_bytes: int = 200 * MB
    max_lines: int = 50_000
    max_page_size: int = 100
    default_page_size: int = 20
    max_creates_per_hour: int = 2000
    # -- realistic quirks (on by default, off in the fast profile) ------------------------------
    empty_file_id: bool = True  # an absent file id reads "" instead of null on every other batch
    cancel_counts_zero: bool = True  # a cancelled batch's counters read {total, 0, 0}
    cancel_loses_lines: int = 1  # completed lines of a cancelled batch left out of both files
    cancel_output_file: bool = True  # finished lines of a cancelled batch in an output file
    shuffle_results: bool = True  # file rows in a seeded random order
    enqueued_token_limit: int | None = 2_000_000  # per model, prompt tokens of in-flight batches
    batch_usage: bool = True  # the batch object carries ``usage`` (successful rows)
    # -- hostile switches (off by default) -------------------------------------------------------
    results_gone_status: int | None = None  # file content answers this once the batch ended
    page_overflow: int = 0  # list pages carry this many entries beyond the limit
    endless_pagination: tuple[str, ...] = ()  # list endpoints whose has_more never ends
    line_quirks: dict[str, str] = field(default_factory=dict)  # custom id -> LINE_QUIRKS
    nested_depth: int = 0  # batch GETs carry a JSON array nested this deep

    def __post_init__(self) -> None:
        unknown = set(self.line_quirks.values()) - set(LINE_QUIRKS)
        if unknown:
            raise ValueError(f"line_quirks values must be in {LINE_QUIRKS}, not {sorted(unknown)}")
