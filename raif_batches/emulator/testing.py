"""The emulator in Django's own test runner: a context manager and a ``TestCase`` mixin.

``use_emulator()`` starts an emulator and points ``settings.RAIF_BATCHES`` (``XAI_BASE_URL``,
``XAI_API_KEY``) at it with ``override_settings`` for the ``with`` block, keeping the other keys::

    with use_emulator(profile="fast") as emu:
        submit(); poll(force=True)
        assert emu.state.count_calls("create_batch") == 1

``EmulatorTestMixin`` does the same for every test of a ``TestCase``: one emulator per class
(started in ``setUpClass``, stopped at class cleanup), its state and config reset before each test
so tests cannot see each other's batches, and the settings overridden per test (``setUp``), so
they win over anything the runner or a fixture set before the test started::

    class LabelTests(EmulatorTestMixin, TestCase):
        emulator_profile = "fast"        # default "realistic": xAI's pacing and quirks

        def test_labels(self):
            ...
            self.assertEqual(self.emulator.state.count_calls("create_batch"), 1)

The key is ``test-key`` (refused when different), so a test may also try a wrong key.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, ClassVar

from django.conf import settings
from django.test import override_settings

from .server import EmulatorServer, run_emulator
from .state import EmulatorConfig

TEST_KEY = "test-key"


def emulator_settings(emu: EmulatorServer, **extra: Any) -> dict[str, Any]:
    """The current ``RAIF_BATCHES`` with the emulator's URL and key (and ``extra``) merged in."""
    current = getattr(settings, "RAIF_BATCHES", None) or {}
    return {**current, **extra, "XAI_BASE_URL": emu.base_url, "XAI_API_KEY": emu.api_key}


@contextlib.contextmanager
def use_emulator(
    profile: str = "realistic",
    config: EmulatorConfig | None = None,
    api_key: str | None = TEST_KEY,
    **raif_settings: Any,
) -> Iterator[EmulatorServer]:
    """Run an emulator and point ``RAIF_BATCHES`` at it for the block; ``raif_settings`` are
    merged into ``RAIF_BATCHES`` too (e.g. ``CANCEL_GRACE_SECONDS=0``)."""
    with run_emulator(api_key=api_key, config=config, profile=profile) as emu:
        with override_settings(RAIF_BATCHES=emulator_settings(emu, **raif_settings)):
            yield emu


class EmulatorTestMixin:
    """Put before ``TestCase`` in the bases. Class attributes choose the emulator."""

    emulator_profile: ClassVar[str] = "realistic"
    emulator_config: ClassVar[EmulatorConfig | None] = None  # wins over the profile
    emulator_api_key: ClassVar[str | None] = TEST_KEY
    emulator_settings: ClassVar[dict[str, Any]] = {}  # merged into RAIF_BATCHES
    emulator: ClassVar[EmulatorServer]

    @classmethod
    def setUpClass(cls) -> None:
        config = cls.emulator_config
        server = EmulatorServer(
            api_key=cls.emulator_api_key,
            config=None if config is None else _copy(config),
            profile=cls.emulator_profile,
        )
        cls.emulator = server.start()
        cls.addClassCleanup(server.stop)  # type: ignore[attr-defined]
        super().setUpClass()  # type: ignore[misc]

    def setUp(self) -> None:
        self.emulator.state.reset()
        override = override_settings(
            RAIF_BATCHES=emulator_settings(self.emulator, **self.emulator_settings)
        )
        override.enable()
        self.addCleanup(override.disable)  # type: ignore[attr-defined]
        super().setUp()  # type: ignore[misc]


def _copy(config: EmulatorConfig) -> EmulatorConfig:
    import copy

    return copy.deepcopy(config)
