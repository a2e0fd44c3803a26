"""System checks (``raif_batches.E001`` …): bad settings fail at startup, with a hint."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, register

from .conf import DEFAULTS, get_setting
from .exceptions import BatchConfigurationError

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
)
#: Seconds a lease must outlast one whole HTTP call (connect + read timeout): the time between
#: renewing the lease under the row lock and sending the create, and recording its end.
LEASE_MARGIN_SECONDS = 1.0


def _error(code: int, message: str, hint: str) -> Error:
    return Error(message, hint=hint, id=f"raif_batches.E{code:03d}")


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    configured = getattr(settings, "RAIF_BATCHES", {})
    if not isinstance(configured, dict):
        return [
            _error(1, "settings.RAIF_BATCHES must be a dict.", "RAIF_BATCHES = {'XAI_API_KEY': …}")
        ]
    problems: list[Error] = []
    unknown = set(configured) - set(DEFAULTS)
    if unknown:
        problems.append(
            _error(
                2,
                f"Unknown RAIF_BATCHES keys: {', '.join(sorted(unknown))}.",
                f"Known keys: {', '.join(sorted(DEFAULTS))}.",
            )
        )
    if not get_setting("XAI_API_KEY"):
        problems.append(
            _error(
                10,
                "No xAI API key is configured; batches cannot be submitted or polled.",
                "Set RAIF_BATCHES['XAI_API_KEY'] or the XAI_API_KEY environment variable "
                "(the key is read at run time and never stored).",
            )
        )
    base_url = get_setting("XAI_BASE_URL")
    if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
        problems.append(
            _error(
                3,
                f"XAI_BASE_URL must be an http(s) URL, not {base_url!r}.",
                "For example 'https://api.x.ai/v1' (the default).",
            )
        )
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
        from .providers import get_strategy_class, provider_paths

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
