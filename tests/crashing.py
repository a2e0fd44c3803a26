"""A provider strategy that dies at a named step, to prove that submission survives crashes.

Registered through ``RAIF_BATCHES["PROVIDERS"] = {"xai": "tests.crashing.CrashingStrategy"}``.
In the test process a crash raises :class:`SimulatedCrash` (a ``BaseException``, so no handler in
the product catches it) and the dead worker releases nothing; in a real process started with
``RAIF_TEST_CRASH_HARD=1`` it ends the process on the spot with ``os._exit``.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any

from raif_batches.models import ModelCompletionBatch
from raif_batches.providers.base import BatchListing, BatchSnapshot, LostCreate
from raif_batches.providers.xai import XAIStrategy

PATH = "tests.crashing.CrashingStrategy"
STEPS = ("before_upload", "after_upload", "before_create", "after_create", "after_find")
HARD_EXIT_CODE = 137

#: Steps at which the next run dies (each fires once). Tests set it; real processes read the
#: comma-separated ``RAIF_TEST_CRASH_AT`` environment variable.
crash_at: set[str] = {step for step in os.environ.get("RAIF_TEST_CRASH_AT", "").split(",") if step}
#: Set once a crash has fired: a dead process releases no lease.
dead = False


class SimulatedCrash(BaseException):
    """The process died here."""


def crash_if(step: str) -> None:
    global dead
    if step not in crash_at:
        return
    crash_at.discard(step)
    dead = True
    if os.environ.get("RAIF_TEST_CRASH_HARD"):
        os._exit(HARD_EXIT_CODE)
    raise SimulatedCrash(step)


class CrashingStrategy(XAIStrategy):
    def upload_input(self, batch: ModelCompletionBatch, lines: Iterable[bytes]) -> str:
        crash_if("before_upload")
        file_id = super().upload_input(batch, lines)
        crash_if("after_upload")
        return file_id

    def create_provider_batch(self, batch: ModelCompletionBatch) -> BatchSnapshot:
        crash_if("before_create")
        snapshot = super().create_provider_batch(batch)
        crash_if("after_create")
        return snapshot

    def find_provider_batches(
        self, lost: Collection[LostCreate], *, created_after: datetime | None
    ) -> BatchListing:
        found = super().find_provider_batches(lost, created_after=created_after)
        crash_if("after_find")
        return found


def reset(*steps: str) -> None:
    global dead
    crash_at.clear()
    crash_at.update(steps)
    dead = False


def release_unless_dead(original: Any) -> Any:
    """Wrap ``ModelCompletionBatchQuerySet.release`` (every lease is given back through it) so
    that a dead worker keeps its leases."""

    def release(*args: Any, **kwargs: Any) -> int:
        if dead:
            return 0
        return int(original(*args, **kwargs))

    return release
