"""Pytest fixtures for testing code that talks to a provider, offline, against its emulator.

Enable with ``pytest_plugins = ["raif_batches.emulator.pytest_plugin"]``. Works without
pytest-django; with it, each fixture also points ``settings.RAIF_BATCHES`` at its emulator
(``<PROVIDER>_BASE_URL`` and ``<PROVIDER>_API_KEY``).

``xai_emulator``, ``openai_emulator`` and ``anthropic_emulator`` play each provider as it really
answers (the ``realistic`` profile: pacing, quirks): code that passes against them copes with the
real provider. Override the ``<provider>_emulator_profile`` fixture to return ``"fast"`` where
only speed matters. The fixtures name the key ``test-key`` and refuse others, so a test can try a
wrong key.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .server import EmulatorServer, run_emulator

FIXTURE_KEY = "test-key"


def point_settings_at(request: pytest.FixtureRequest, emu: EmulatorServer) -> None:
    """Set ``RAIF_BATCHES`` <PROVIDER>_BASE_URL / _API_KEY through pytest-django's ``settings``."""
    try:
        settings = request.getfixturevalue("settings")
    except (pytest.FixtureLookupError, pytest.skip.Exception):
        return
    try:
        current = getattr(settings, "RAIF_BATCHES", {}) or {}
    except Exception:  # Django installed but not configured: leave settings alone
        return
    prefix = emu.provider.upper()
    settings.RAIF_BATCHES = {
        **current,
        f"{prefix}_BASE_URL": emu.base_url,
        f"{prefix}_API_KEY": emu.api_key,
    }


def _serve(request: pytest.FixtureRequest, provider: str, profile: str) -> Iterator[EmulatorServer]:
    with run_emulator(api_key=FIXTURE_KEY, profile=profile, provider=provider) as emu:
        point_settings_at(request, emu)
        yield emu


@pytest.fixture
def xai_emulator_profile() -> str:
    """The profile ``xai_emulator`` and ``xai_emulator_server`` start with; override to change."""
    return "realistic"


@pytest.fixture
def xai_emulator(
    request: pytest.FixtureRequest, xai_emulator_profile: str
) -> Iterator[EmulatorServer]:
    """A fresh xAI emulator per test; Django settings (when available) use its URL and key."""
    yield from _serve(request, "xai", xai_emulator_profile)


@pytest.fixture
def openai_emulator_profile() -> str:
    return "realistic"


@pytest.fixture
def openai_emulator(
    request: pytest.FixtureRequest, openai_emulator_profile: str
) -> Iterator[EmulatorServer]:
    """A fresh OpenAI Batch API emulator per test, settings pointed at it."""
    yield from _serve(request, "openai", openai_emulator_profile)


@pytest.fixture
def anthropic_emulator_profile() -> str:
    return "realistic"


@pytest.fixture
def anthropic_emulator(
    request: pytest.FixtureRequest, anthropic_emulator_profile: str
) -> Iterator[EmulatorServer]:
    """A fresh Anthropic Message Batches emulator per test, settings pointed at it."""
    yield from _serve(request, "anthropic", anthropic_emulator_profile)


@pytest.fixture(scope="session")
def xai_emulator_server() -> Iterator[EmulatorServer]:
    """One realistic emulator for the whole session (fast to start); call
    ``emu.state.reset()`` between tests."""
    with run_emulator(api_key=FIXTURE_KEY) as emu:
        yield emu
