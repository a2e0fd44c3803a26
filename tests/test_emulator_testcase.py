"""A plain Django ``TestCase`` uses the emulator as easily as pytest does (issue 12, item 7).

``EmulatorTestMixin`` and ``use_emulator()`` from ``raif_batches.emulator.testing``: the settings
point at the emulator, a whole batch runs through the real client, each test starts from a clean
provider, and the settings come back when the block or the test ends.
"""

from __future__ import annotations

from django.conf import settings
from django.test import TestCase

from raif_batches import poll, submit
from raif_batches.emulator import EmulatorConfig
from raif_batches.emulator.testing import EmulatorTestMixin, use_emulator

from .helpers import make_batch


def run_batch(rounds: int = 20) -> int:
    """Submit one three-line batch and poll it to its end; return the polls it took."""
    batch = make_batch(3)
    assert submit([batch.pk]).ok
    for number in range(1, rounds + 1):
        poll([batch.pk], force=True)
        batch.refresh_from_db()
        if batch.results_fetched_at is not None:
            assert batch.completions.filter(status="completed").count() == 3
            return number
    raise AssertionError(f"batch still {batch.status} after {rounds} polls")


class RealisticEmulatorTests(EmulatorTestMixin, TestCase):
    """The default profile: xAI's pacing and quirks."""

    emulator_settings = {"CANCEL_GRACE_SECONDS": 0}

    def test_settings_point_at_the_emulator(self) -> None:
        raif = settings.RAIF_BATCHES
        self.assertEqual(raif["XAI_BASE_URL"], self.emulator.base_url)
        self.assertEqual(raif["XAI_API_KEY"], "test-key")
        self.assertEqual(raif["CANCEL_GRACE_SECONDS"], 0)
        self.assertEqual(self.emulator.config, EmulatorConfig())

    def test_a_batch_runs_to_its_end_over_several_polls(self) -> None:
        polls = run_batch()
        self.assertGreater(polls, 2)  # validation, then lines finishing over reads
        self.assertEqual(self.emulator.state.count_calls("create_batch"), 1)
        self.assertEqual(len(self.emulator.state.batches), 1)

    def test_each_test_starts_from_a_clean_provider(self) -> None:
        self.emulator.config.validation_reads = 0  # reset before the next test
        run_batch()
        self.assertEqual(len(self.emulator.state.batches), 1)


class FastEmulatorTests(EmulatorTestMixin, TestCase):
    emulator_profile = "fast"

    def test_fast_profile(self) -> None:
        self.assertEqual(self.emulator.config, EmulatorConfig.fast())
        self.assertEqual(run_batch(), 2)  # one validation read, then done


class UseEmulatorTests(TestCase):
    def test_context_manager_overrides_and_restores(self) -> None:
        before = settings.RAIF_BATCHES
        with use_emulator(profile="fast", POLL_INTERVAL=5) as emu:
            self.assertEqual(settings.RAIF_BATCHES["XAI_BASE_URL"], emu.base_url)
            self.assertEqual(settings.RAIF_BATCHES["POLL_INTERVAL"], 5)
            run_batch()
            self.assertEqual(emu.state.count_calls("create_batch"), 1)
        self.assertEqual(settings.RAIF_BATCHES, before)
