"""Slow workers for the real-process tests: a create that stalls before it is sent, and a
completion handler that records each call and takes its time.

``RAIF_TEST_PAUSE_BEFORE_CREATE`` (seconds) stalls the create after the lease was checked and
renewed, as a paused VM or a long garbage collection would. ``record_call`` appends
``start <pk>`` and ``end <pk>`` to the file named by ``RAIF_TEST_HANDLER_LOG`` around a sleep of
``RAIF_TEST_HANDLER_SECONDS``.
"""

from __future__ import annotations

import os
import time

from raif_batches.models import ModelCompletionBatch
from raif_batches.providers.base import BatchSnapshot
from raif_batches.providers.xai import XAIStrategy


class SlowCreateStrategy(XAIStrategy):
    def create_provider_batch(self, batch: ModelCompletionBatch) -> BatchSnapshot:
        time.sleep(float(os.environ.get("RAIF_TEST_PAUSE_BEFORE_CREATE") or 0))
        return super().create_provider_batch(batch)


def record_call(batch: ModelCompletionBatch) -> None:
    path = os.environ["RAIF_TEST_HANDLER_LOG"]
    with open(path, "a") as log:
        log.write(f"start {batch.pk}\n")
    time.sleep(float(os.environ.get("RAIF_TEST_HANDLER_SECONDS") or 0))
    with open(path, "a") as log:
        log.write(f"end {batch.pk}\n")
