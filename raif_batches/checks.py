"""System checks (``raif_batches.E001`` …): bad settings fail at startup, with a hint.

A missing API key is not an error here: it stops only the work that needs it (submit, poll,
cancel, harvest, each with the same one line), so ``migrate``, ``runserver``, ``test``, CI builds
and the emulators run without one. ``W010`` says so when no provider has a key at all. Each
registered provider's own settings are checked under their exact names (``E003`` base URL,
``E013`` key shape); a ``<PREFIX>_API_KEY``/``<PREFIX>_BASE_URL`` of a provider that is not
registered is only a warning (``W002``), since it may belong to a provider added later.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.checks import CheckMessage, Error, Tags, Warning, register
from django.db import connections

from .conf import (
    DEFAULTS,
    PROVIDER_LABELS,
    PROVIDER_SETTINGS,
    get_setting,
    is_provider_setting,
    known_providers,
    provider_setting_name,
)
from .exceptions import BatchConfigurationError
from .providers import BUILTIN_PROVIDERS, get_strategy_class, provider_paths

NUMBER_SETTINGS = (
    "POLL_INTERVAL",
    "LEASE_SECONDS",
    "MAX_BATCH_AGE",
    "CANCEL_GRACE_SECONDS",
    "RECONCILE_AFTER_SECONDS",
    "RECONCILE_MAX_SECONDS",
    "HANDLER_LEASE_SECONDS",
    "RESULTS_WAIT_SECONDS",
    "LISTING_MAX_SECONDS",
)
INTEGER_SETTINGS = (
    "POLL_CONCURRENCY",
    "RESULTS_PAGE_SIZE",
    "HANDLER_MAX_ATTEMPTS",
    "RECONCILE_MAX_PAGES",
    "RESULTS_GONE_ATTEMPTS",
    "MAX_RESPONSE_BYTES",
    "LISTING_MAX_PAGES",
    "MAX_STATEMENT_BYTES",
)
#: Seconds a lease must outlast one whole HTTP call (connect + read timeout): the time between
#: renewing the lease under the row lock and sending the create, and recording its end.
LEASE_MARGIN_SECONDS = 1.0


def _error(code: int, message: str, hint: str) -> Error:
    return Error(message, hint=hint, id=f"raif_batches.E{code:03d}")


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[CheckMessage]:
    configured = getattr(settings, "RAIF_BATCHES", {})
    if not isinstance(configured, dict):
        return [
            _error(1, "settings.RAIF_BATCHES must be a dict.", "RAIF_BATCHES = {'XAI_API_KEY': …}")
        ]
    problems: list[CheckMessage] = []
    try:
        providers = known_providers()
    except BatchConfigurationError:
        # E009 below says what is wrong with PROVIDERS.
        providers = list(dict.fromkeys([*BUILTIN_PROVIDERS, *PROVIDER_LABELS]))
    problems.extend(_unknown_keys(configured, providers))
    problems.extend(_provider_problems(providers))
    for name in NUMBER_SETTINGS:
        value = get_setting(name)
        if not _valid_number(value):
            problems.append(
                _error(
                    4,
                    f"RAIF_BATCHES['{name}'] must be a non-negative number of seconds, "
                    f"not {value!r}.",
                    f"The default is {DEFAULTS[name]!r}.",
                )
            )
    for name in INTEGER_SETTINGS:
        value = get_setting(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            problems.append(
                _error(
                    5,
                    f"RAIF_BATCHES['{name}'] must be a positive integer, not {value!r}.",
                    f"The default is {DEFAULTS[name]!r}.",
                )
            )
    timeout = get_setting("REQUEST_TIMEOUT")
    if not _valid_timeout(timeout):
        problems.append(
            _error(
                6,
                f"RAIF_BATCHES['REQUEST_TIMEOUT'] is {timeout!r}.",
                "Use seconds, or a (connect, read) pair of seconds, e.g. (10, 60).",
            )
        )
    elif _valid_number(get_setting("LEASE_SECONDS")):
        problems.extend(_check_lease_outlasts_a_call(timeout))
    retry = configured.get("RETRY", {})
    if (
        not isinstance(retry, dict)
        or set(retry) - set(DEFAULTS["RETRY"])
        or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and v >= 0
            for v in (retry.values() if isinstance(retry, dict) else [])
        )
    ):
        problems.append(
            _error(
                7,
                f"RAIF_BATCHES['RETRY'] is malformed: {retry!r}.",
                f"Use a dict with numeric keys among {', '.join(DEFAULTS['RETRY'])}.",
            )
        )
    try:
        from .pricing import pricing_table

        pricing_table()
    except BatchConfigurationError as error:
        problems.append(_error(8, str(error), "See the pricing section of the README."))
    try:
        for provider in provider_paths():
            get_strategy_class(provider)
    except BatchConfigurationError as error:
        problems.append(_error(9, str(error), "Point it at a BatchStrategy subclass."))
    return problems


def _check_lease_outlasts_a_call(timeout: Any) -> list[Error]:
    """A lease shorter than one create call lets a second worker take a batch whose create is
    still in flight; refuse it at start-up."""
    connect, read = (timeout, timeout) if isinstance(timeout, int | float) else timeout
    needed = float(connect) + float(read) + LEASE_MARGIN_SECONDS
    lease = float(get_setting("LEASE_SECONDS"))
    if lease >= needed:
        return []
    return [
        _error(
            11,
            f"RAIF_BATCHES['LEASE_SECONDS'] ({lease:g}) does not outlast one HTTP call: the "
            f"connect + read timeout ({float(connect) + float(read):g}) plus "
            f"{LEASE_MARGIN_SECONDS:g} s.",
            f"Set LEASE_SECONDS to at least {needed:g}, or shorten REQUEST_TIMEOUT.",
        )
    ]


def _valid_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and value >= 0


def _valid_timeout(value: Any) -> bool:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value > 0
    if isinstance(value, list | tuple) and len(value) == 2:
        return all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in value)
    return False


def _unknown_keys(configured: dict[str, Any], providers: list[str]) -> list[CheckMessage]:
    known = set(DEFAULTS)
    for provider in providers:
        known.update(provider_setting_name(name, provider) for name in PROVIDER_SETTINGS)
        # A provider may override a general setting under its prefix.
        known.update(provider_setting_name(name, provider) for name in DEFAULTS)
    unknown = set(configured) - known
    foreign = sorted(name for name in unknown if is_provider_setting(name))
    unknown -= set(foreign)
    problems: list[CheckMessage] = []
    if unknown:
        problems.append(
            _error(
                2,
                f"Unknown RAIF_BATCHES keys: {', '.join(sorted(unknown))}.",
                f"Known keys: {', '.join(sorted(DEFAULTS))}.",
            )
        )
    if foreign:
        problems.append(
            Warning(
                f"RAIF_BATCHES has settings of providers that are not registered: "
                f"{', '.join(foreign)}.",
                hint=f"Registered providers: {', '.join(providers)}; add yours to "
                "RAIF_BATCHES['PROVIDERS'].",
                id="raif_batches.W002",
            )
        )
    return problems


def _provider_problems(providers: list[str]) -> list[CheckMessage]:
    problems: list[CheckMessage] = []
    any_key = False
    for provider in providers:
        url_name = provider_setting_name("BASE_URL", provider)
        url = get_setting(url_name)
        if url is not None and not _valid_base_url(url):
            problems.append(
                _error(
                    3,
                    f"{url_name} must be an http(s) URL without query or fragment, not {url!r}.",
                    f"For example {DEFAULTS.get(url_name) or 'https://api.example.com/v1'!r}"
                    + (" (the default)." if url_name in DEFAULTS else "."),
                )
            )
        key_name = provider_setting_name("API_KEY", provider)
        key = get_setting(key_name)
        if not key:
            continue
        any_key = True
        if not isinstance(key, str) or any(c.isspace() or not c.isprintable() for c in key):
            # Never echo the key: only what is wrong with it.
            problems.append(
                _error(
                    13,
                    f"{key_name} must be a string without spaces, line breaks or control "
                    "characters (as copied into an Authorization header).",
                    "Check for a trailing newline in the secret's file or variable.",
                )
            )
    if not any_key:
        names = ", ".join(provider_setting_name("API_KEY", p) for p in providers)
        problems.append(
            Warning(
                "No provider API key is configured; submitting, polling, cancelling and "
                "harvesting batches will stop with a one-line error until one is set.",
                hint=f"Set one of {names} in RAIF_BATCHES or the environment (read at run "
                "time, never stored).",
                id="raif_batches.W010",
            )
        )
    return problems


def _valid_base_url(value: Any) -> bool:
    if not isinstance(value, str) or value != value.strip():
        return False
    parts = urlsplit(value)
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and not (parts.query or parts.fragment or any(c.isspace() for c in value))
    )


@register(Tags.database)
def check_databases(app_configs: Any = None, databases: Any = None, **kwargs: Any) -> list[Error]:
    """Concurrent pollers need ``SELECT … FOR UPDATE SKIP LOCKED``: PostgreSQL, MySQL 8.0.1+ or
    MariaDB 10.6+. SQLite (development, one process) has no row locks and needs none.

    Run by ``migrate`` and ``check --database``, since it asks the server for its version.
    """
    problems: list[Error] = []
    for alias in databases or ():
        connection = connections[alias]
        if connection.vendor == "sqlite":
            continue
        if not connection.features.has_select_for_update_skip_locked:
            problems.append(
                _error(
                    12,
                    f"Database {alias!r} ({connection.display_name}) has no SELECT ... FOR "
                    "UPDATE SKIP LOCKED, which concurrent pollers need.",
                    "Use PostgreSQL, MySQL 8.0.1+ or MariaDB 10.6+.",
                )
            )
    return problems
