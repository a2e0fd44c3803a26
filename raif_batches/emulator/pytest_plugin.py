"""Pytest fixtures for testing code that talks to xAI, offline, against the emulator.

Enable with ``pytest_plugins = ["raif_batches.emulator.pytest_plugin"]``. Works without
pytest-django; with it, ``xai_emulator`` also points ``settings.RAIF_BATCHES`` at the emulator.

``xai_emulator`` plays xAI as it really answers (the ``realistic`` profile: validation phase,
lines finishing over several reads, quirks): code that passes against it copes with the real
provider. Override the ``xai_emulator_profile`` fixture to return ``"fast"`` where only speed
matters. The fixtures name the key ``test-key`` and refuse others, so a test can try a wrong key.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .server import EmulatorServer, run_emulator

FIXTURE_KEY = "test-key"


@pytest.fixture
def xai_emulator_profile() -> str:
    """The profile ``xai_emulator`` and ``xai_emulator_server`` start with; override to change."""
    return "realistic"


@pytest.fixture
def xai_emulator(
    request: pytest.FixtureRequest, xai_emulator_profile: str
) -> Iterator[EmulatorServer]:
    """A fresh emulator per test; Django settings (when available) use its URL and key."""
    with run_emulator(api_key=FIXTURE_KEY, profile=xai_emulator_profile) as emu:
        point_settings_at(request, emu)
        yield emu


def point_settings_at(request: pytest.FixtureRequest, emu: EmulatorServer) -> None:
    """Set ``RAIF_BATCHES`` XAI_BASE_URL / XAI_API_KEY through pytest-django's ``settings``."""
    try:
        settings = request.getfixturevalue("settings")
    except (pytest.FixtureLookupError, pytest.skip.Exception):
        return
    try:
        current = getattr(settings, "RAIF_BATCHES", {}) or {}
    except Exception:  # Django installed but not configured: leave settings alone
        return
    settings.RAIF_BATCHES = {**current, "XAI_BASE_URL": emu.base_url, "XAI_API_KEY": emu.api_key}


@pytest.fixture(scope="session")
def xai_emulator_server() -> Iterator[EmulatorServer]:
    """One realistic emulator for the whole session (fast to start); call
    ``emu.state.reset()`` between tests."""
    with run_emulator(api_key=FIXTURE_KEY) as emu:
        yield emu
