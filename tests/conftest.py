"""Shared fixtures: the bundled emulator over real HTTP, and fast retry settings.

``emulator`` / ``xai_emulator`` use the emulator's ``fast`` profile (no pacing, no quirks), as
most tests only want an answer; ``hostile_emulator`` is the realistic default, xAI as observed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection

pytest_plugins = ["raif_batches.emulator.pytest_plugin", "tests.audit"]

FAST_SETTINGS: dict[str, Any] = {
    "RETRY": {
        "MAX_ATTEMPTS": 6,
        "BACKOFF_BASE": 0.01,
        "BACKOFF_MAX": 0.05,
        "MAX_TOTAL_SECONDS": 5.0,
    },
    "REQUEST_TIMEOUT": (2.0, 5.0),
    "RECONCILE_AFTER_SECONDS": 0,
    "CANCEL_GRACE_SECONDS": 0,
    "POLL_INTERVAL": 60,
}


@pytest.fixture(autouse=True)
def _fast_raif_settings(settings: Any) -> None:
    settings.RAIF_BATCHES = {**FAST_SETTINGS}


@pytest.fixture
def xai_emulator_profile() -> str:
    return "fast"


@pytest.fixture
def emulator(xai_emulator: Any, settings: Any) -> Any:
    """The emulator with the fast settings kept beside its URL and key."""
    settings.RAIF_BATCHES = {
        **FAST_SETTINGS,
        "XAI_BASE_URL": xai_emulator.base_url,
        "XAI_API_KEY": xai_emulator.api_key,
    }
    return xai_emulator


@pytest.fixture
def hostile_emulator(settings: Any) -> Iterator[Any]:
    """The realistic default profile (xAI's pacing and quirks), settings pointed at it."""
    from raif_batches.emulator import run_emulator
    from raif_batches.emulator.pytest_plugin import FIXTURE_KEY

    with run_emulator(api_key=FIXTURE_KEY, profile="realistic") as emu:
        settings.RAIF_BATCHES = {
            **FAST_SETTINGS,
            "XAI_BASE_URL": emu.base_url,
            "XAI_API_KEY": emu.api_key,
        }
        yield emu


#: Every built-in provider: the behaviour suite (``any_emulator``) runs once for each.
PROVIDERS = ("xai", "openai", "anthropic")


def provider_settings(emu: Any, **extra: Any) -> dict[str, Any]:
    """The fast settings, pointed at ``emu`` under its provider's prefix."""
    prefix = emu.provider.upper()
    return {
        **FAST_SETTINGS,
        f"{prefix}_BASE_URL": emu.base_url,
        f"{prefix}_API_KEY": emu.api_key,
        **extra,
    }


@pytest.fixture(params=PROVIDERS)
def provider(request: Any) -> str:
    return str(request.param)


@pytest.fixture
def any_emulator(provider: str, settings: Any) -> Iterator[Any]:
    """Each provider's emulator in turn (fast profile), settings pointed at it."""
    from raif_batches.emulator import run_emulator
    from raif_batches.emulator.pytest_plugin import FIXTURE_KEY

    with run_emulator(api_key=FIXTURE_KEY, profile="fast", provider=provider) as emu:
        settings.RAIF_BATCHES = provider_settings(emu)
        yield emu


@pytest.fixture
def any_realistic_emulator(provider: str, settings: Any) -> Iterator[Any]:
    """Each provider's emulator in turn, as the provider really answers (pacing, quirks)."""
    from raif_batches.emulator import run_emulator
    from raif_batches.emulator.pytest_plugin import FIXTURE_KEY

    with run_emulator(api_key=FIXTURE_KEY, profile="realistic", provider=provider) as emu:
        settings.RAIF_BATCHES = provider_settings(emu)
        yield emu


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    from django.conf import settings

    if not settings.configured:
        return
    # `row_locks`: real processes and SKIP LOCKED, which MySQL 8 / MariaDB 10.6+ have too;
    # `postgres`: PostgreSQL itself (its triggers, its SQL).
    vendor = connection.vendor
    for item in items:
        if "postgres" in item.keywords and vendor != "postgresql":
            item.add_marker(pytest.mark.skip(reason="needs PostgreSQL"))
        elif "row_locks" in item.keywords and vendor not in ("postgresql", "mysql"):
            item.add_marker(pytest.mark.skip(reason="needs real row locks (PostgreSQL or MariaDB)"))
