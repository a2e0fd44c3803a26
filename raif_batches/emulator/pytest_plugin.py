"""Pytest fixtures for testing code that talks to xAI, offline, against the emulator.

Enable with ``pytest_plugins = ["raif_batches.emulator.pytest_plugin"]``. Works without
pytest-django; with it, ``xai_emulator`` also points ``settings.RAIF_BATCHES`` at the emulator.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .server import EmulatorServer, run_emulator


@pytest.fixture
def xai_emulator(request: pytest.FixtureRequest) -> Iterator[EmulatorServer]:
    """A fresh emulator per test; Django settings (when available) use its URL and key."""
    with run_emulator() as emu:
        try:
            settings = request.getfixturevalue("settings")
        except (pytest.FixtureLookupError, pytest.skip.Exception):
            settings = None
        if settings is not None:
            try:
                current = getattr(settings, "RAIF_BATCHES", {}) or {}
            except Exception:  # Django installed but not configured: leave settings alone
                current = None
            if current is not None:
                settings.RAIF_BATCHES = {
                    **current,
                    "XAI_BASE_URL": emu.base_url,
                    "XAI_API_KEY": emu.api_key,
                }
        yield emu


@pytest.fixture(scope="session")
def xai_emulator_server() -> Iterator[EmulatorServer]:
    """One emulator for the whole session (fast); call ``emu.state.reset()`` between tests."""
    with run_emulator() as emu:
        yield emu
