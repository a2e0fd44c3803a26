"""The one settings lookup: ``RAIF_BATCHES[name]`` → environment (for the two xAI keys) → default.

Every value is read at call time, so ``override_settings`` and pytest-django's ``settings``
fixture take effect at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import environ
from django.conf import settings

from .exceptions import BatchConfigurationError

_env = environ.Env()

#: Names that fall back to an environment variable of the same name.
ENVIRONMENT_FALLBACK = ("XAI_API_KEY", "XAI_BASE_URL")

DEFAULTS: dict[str, Any] = {
    "XAI_API_KEY": None,
    "XAI_BASE_URL": "https://api.x.ai/v1",
    # Seconds: (connect, read) for each HTTP call.
    "REQUEST_TIMEOUT": (10.0, 60.0),
    # Retries of idempotent calls on timeouts, dropped connections, 5xx and 429.
    "RETRY": {
        "MAX_ATTEMPTS": 6,
        "BACKOFF_BASE": 0.5,
        "BACKOFF_MAX": 30.0,
        "MAX_TOTAL_SECONDS": 120.0,
    },
    # Seconds between two status reads of an in-flight batch.
    "POLL_INTERVAL": 60.0,
    # Seconds a poller owns a claimed batch before another may take it over, counted on the
    # database's clock. It is renewed right before a create call, so it must outlast a whole
    # call: the system check refuses less than the connect + read timeout plus
    # raif_batches.checks.LEASE_MARGIN_SECONDS.
    "LEASE_SECONDS": 300.0,
    # Parallel HTTP status reads in one poll_batches run.
    "POLL_CONCURRENCY": 16,
    # Seconds after submission when an unfinished batch is cancelled (the rest expires).
    "MAX_BATCH_AGE": 2 * 24 * 3600.0,
    # Seconds a cancelled batch's counts must stay unchanged before they are trusted.
    "CANCEL_GRACE_SECONDS": 120.0,
    # Seconds to wait, after an unanswered or unreadable batch create ENDED, before looking for
    # the batch by name (a create may land at the provider after our client gave up). When the
    # worker died during the call, the wait counts from the call's start plus the connect + read
    # timeout. Until the lookup has read the list, the batch is never created again.
    "RECONCILE_AFTER_SECONDS": 30.0,
    # Bounds of one read of the provider's batch list when lost creates are looked up by name
    # (one read per run serves every batch awaiting reconciliation). Reaching a bound before the
    # wanted names is a provider fault: those batches stay submitting and are never created
    # again on that evidence.
    "RECONCILE_MAX_PAGES": 50,
    "RECONCILE_MAX_SECONDS": 120.0,
    # Seconds a completion handler call owns its batch's handler (database clock): no other
    # worker calls the handler meanwhile; after a crash, the claim lapses and the handler is
    # called again. Must outlast the slowest handler.
    "HANDLER_LEASE_SECONDS": 900.0,
    # Results fetched per page (xAI allows up to 1000).
    "RESULTS_PAGE_SIZE": 1000,
    # Per-model prices; see raif_batches.pricing for the shape and the defaults.
    "PRICING": {},
    # Provider key -> dotted path of a BatchStrategy subclass, merged over the built-ins.
    "PROVIDERS": {},
    # Attempts at a batch's completion handler before it is given up.
    "HANDLER_MAX_ATTEMPTS": 5,
    # Seconds a harvest waits for results the provider's counters say exist but its results
    # endpoint does not serve yet, before those lines are failed as never served.
    "RESULTS_WAIT_SECONDS": 6 * 3600.0,
    # Harvests that meet "not found" (404/410) on a finished batch's results before its
    # unserved lines are failed as no longer available (or RESULTS_WAIT_SECONDS, if sooner).
    "RESULTS_GONE_ATTEMPTS": 5,
    # Bytes of one provider answer read at most: a bigger results page is asked again with half
    # the page size. This bounds a harvest's peak memory whatever the provider sends: two pages
    # are in flight (one stored, one read ahead), each held as bytes, text and objects; measured
    # at about 9x this value (benchmarks/big_pages.py).
    "MAX_RESPONSE_BYTES": 32 * 1024 * 1024,
    # Pages and seconds one listing (results, batch list) may take before it is abandoned as a
    # provider fault: a pagination token that changes on every page would never end.
    "LISTING_MAX_PAGES": 10_000,
    "LISTING_MAX_SECONDS": 1800.0,
}


def get_setting(name: str) -> Any:
    """Return a raif_batches setting, with the documented precedence."""
    if name not in DEFAULTS:
        raise KeyError(f"Unknown raif_batches setting {name!r}")
    configured = getattr(settings, "RAIF_BATCHES", None) or {}
    if not isinstance(configured, dict):
        raise BatchConfigurationError(
            f"settings.RAIF_BATCHES must be a dict, not {type(configured).__name__}."
        )
    if name in configured:
        value = configured[name]
    elif name in ENVIRONMENT_FALLBACK and _env.str(name, default=""):
        value = _env.str(name)
    else:
        value = DEFAULTS[name]
    if isinstance(DEFAULTS[name], dict) and isinstance(value, dict):
        value = {**DEFAULTS[name], **value}
    return value


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    backoff_base: float
    backoff_max: float
    max_total_seconds: float

    @classmethod
    def from_settings(cls) -> RetryPolicy:
        raw = get_setting("RETRY")
        return cls(
            max_attempts=int(raw["MAX_ATTEMPTS"]),
            backoff_base=float(raw["BACKOFF_BASE"]),
            backoff_max=float(raw["BACKOFF_MAX"]),
            max_total_seconds=float(raw["MAX_TOTAL_SECONDS"]),
        )


def request_timeout() -> tuple[float, float]:
    value = get_setting("REQUEST_TIMEOUT")
    if isinstance(value, int | float):
        return (float(value), float(value))
    connect, read = value
    return (float(connect), float(read))


def positive_integer_setting(name: str) -> int:
    value = get_setting(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BatchConfigurationError(
            f"RAIF_BATCHES[{name!r}] must be a positive integer, not {value!r}."
        )
    return value


def seconds_setting(name: str) -> float:
    value = get_setting(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e12:
        raise BatchConfigurationError(
            f"RAIF_BATCHES[{name!r}] must be a non-negative number of seconds, not {value!r}."
        )
    return float(value)


def max_response_bytes() -> int:
    return positive_integer_setting("MAX_RESPONSE_BYTES")


def listing_bounds() -> tuple[int, float]:
    """(pages, seconds) one listing may take."""
    return positive_integer_setting("LISTING_MAX_PAGES"), seconds_setting("LISTING_MAX_SECONDS")


def api_key(provider: str = "xai") -> str:
    key = get_setting("XAI_API_KEY")
    if not key:
        raise BatchConfigurationError(
            "No xAI API key: set RAIF_BATCHES['XAI_API_KEY'] or the XAI_API_KEY environment "
            "variable."
        )
    return str(key)
