"""The one settings lookup: ``RAIF_BATCHES[name]`` → environment (provider keys and URLs) → default.

Rules:

- Every value is read at call time, so ``override_settings`` and pytest-django's ``settings``
  fixture take effect at once.
- A provider's own settings are ``<PREFIX>_API_KEY`` and ``<PREFIX>_BASE_URL``, where the prefix
  is the provider key upper-cased (``openai`` → ``OPENAI_API_KEY``). Only these fall back to the
  environment variable of the same name (read with django-environ): secrets and endpoints are what
  deployments inject, and the rest of the settings belong in ``settings.py``. A third-party
  provider registered in ``PROVIDERS`` reads its own pair the same way, so such names are never
  refused as unknown.
- ``get_setting("API_KEY", provider="openai")`` is ``get_setting("OPENAI_API_KEY")``; for a
  general setting, ``get_setting("POLL_INTERVAL", provider="openai")`` takes
  ``RAIF_BATCHES["OPENAI_POLL_INTERVAL"]`` when set, else the general value.
- A missing key is an error only for the work that needs it (:func:`api_key`), never at import
  or start-up: ``migrate``, ``check``, ``runserver``, tests and the emulators run without one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import environ
from django.conf import settings

from .exceptions import BatchConfigurationError

_env = environ.Env()

#: The settings each provider has under its own prefix.
PROVIDER_SETTINGS = ("API_KEY", "BASE_URL")
_PROVIDER_SETTING = re.compile(r"^(?P<prefix>[A-Z][A-Z0-9_]*?)_(?P<name>API_KEY|BASE_URL)$")

#: How messages name the built-in providers; any other provider is named by its key.
PROVIDER_LABELS = {"xai": "xAI", "openai": "OpenAI", "anthropic": "Anthropic"}

DEFAULTS: dict[str, Any] = {
    "XAI_API_KEY": None,
    "XAI_BASE_URL": "https://api.x.ai/v1",
    "OPENAI_API_KEY": None,
    "OPENAI_BASE_URL": "https://api.openai.com/v1",
    "ANTHROPIC_API_KEY": None,
    "ANTHROPIC_BASE_URL": "https://api.anthropic.com",
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
    # Parallel HTTP reads (statuses, first pages of results) in one poll_batches run, and the
    # connection pool per provider: 1,000 GETs at 50 ms each take about 1 s at 64, 3.5 s at 16
    # (benchmarks.run). Lower it for a provider that limits concurrent calls.
    "POLL_CONCURRENCY": 64,
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
    # Bytes of row data in one bulk statement (results page, request chunk); bigger pages are
    # split. Well under PostgreSQL's 256 MB jsonb limit; on MySQL/MariaDB also held under half
    # of the server's max_allowed_packet.
    "MAX_STATEMENT_BYTES": 16 * 1024 * 1024,
}


def setting_prefix(provider: str) -> str:
    """``openai`` → ``OPENAI``; a character that cannot be in an environment name becomes ``_``."""
    return re.sub(r"[^A-Z0-9]", "_", provider.upper())


def provider_setting_name(name: str, provider: str) -> str:
    return f"{setting_prefix(provider)}_{name}"


def is_provider_setting(name: str) -> bool:
    """Whether ``name`` is some provider's ``<PREFIX>_API_KEY`` or ``<PREFIX>_BASE_URL``."""
    return _PROVIDER_SETTING.match(name) is not None


def configured_settings() -> dict[str, Any]:
    configured = getattr(settings, "RAIF_BATCHES", None) or {}
    if not isinstance(configured, dict):
        raise BatchConfigurationError(
            f"settings.RAIF_BATCHES must be a dict, not {type(configured).__name__}."
        )
    return configured


def get_setting(name: str, provider: str | None = None) -> Any:
    """Return a raif_batches setting, with the documented precedence.

    With ``provider``, ``name`` is either a provider setting without its prefix (``API_KEY``,
    ``BASE_URL``) or a general setting that the provider may override under its prefix.
    """
    if provider is not None:
        prefixed = provider_setting_name(name, provider)
        if name in PROVIDER_SETTINGS:
            return get_setting(prefixed)
        general = get_setting(name)
        configured = configured_settings()
        if prefixed not in configured:
            return general
        value = configured[prefixed]
        return (
            {**general, **value} if isinstance(general, dict) and isinstance(value, dict) else value
        )
    if name not in DEFAULTS and not is_provider_setting(name):
        raise KeyError(f"Unknown raif_batches setting {name!r}")
    configured = configured_settings()
    default = DEFAULTS.get(name)
    if name in configured:
        value = configured[name]
    elif is_provider_setting(name) and _env.str(name, default=""):
        value = _env.str(name)
    else:
        value = default
    if isinstance(default, dict) and isinstance(value, dict):
        value = {**default, **value}
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


def provider_label(provider: str) -> str:
    return PROVIDER_LABELS.get(provider, provider)


def missing_key_message(provider: str) -> str:
    """The one line every command, action and task shows when ``provider`` has no key."""
    name = provider_setting_name("API_KEY", provider)
    return (
        f"No {provider_label(provider)} API key: set RAIF_BATCHES['{name}'] or the {name} "
        "environment variable."
    )


def api_key(provider: str = "xai") -> str:
    """``provider``'s key; :class:`BatchConfigurationError` naming the exact setting if unset."""
    key = get_setting("API_KEY", provider=provider)
    if not key:
        raise BatchConfigurationError(missing_key_message(provider))
    return str(key)


def base_url(provider: str = "xai") -> str:
    """``provider``'s base URL without a trailing slash."""
    url = get_setting("BASE_URL", provider=provider)
    if not url:
        raise BatchConfigurationError(
            f"No {provider_label(provider)} base URL: set "
            f"RAIF_BATCHES['{provider_setting_name('BASE_URL', provider)}']."
        )
    return str(url).rstrip("/")


def known_providers() -> list[str]:
    """The registered providers and the built-in ones, xAI first."""
    from .providers import provider_paths

    return list(dict.fromkeys([*provider_paths(), *PROVIDER_LABELS]))


def configured_api_keys() -> list[str]:
    """Every provider key that is set, for redaction wherever an error is shown."""
    keys = []
    for provider in known_providers():
        try:
            key = get_setting("API_KEY", provider=provider)
        except BatchConfigurationError:
            continue
        if key:
            keys.append(str(key))
    return keys


def require_api_key(providers: list[str] | None = None) -> None:
    """Stop before any work when none of ``providers`` (default: every known one) has a key.

    The message is the first provider's (xAI's by default), the same line the work itself would
    fail with, so a run without any key fails at once, even with nothing due.
    """
    wanted = providers if providers is not None else known_providers()
    if wanted and not any(get_setting("API_KEY", provider=p) for p in wanted):
        raise BatchConfigurationError(missing_key_message(wanted[0]))
