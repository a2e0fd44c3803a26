"""Completion handlers: the dotted path a batch names, called once its results are stored.

The call is claimed under the row lock with a lease of its own (``handler_claimed_by`` /
``handler_claimed_until``, HANDLER_LEASE_SECONDS on the database's clock), so two workers never
run it at the same time, whatever their batch leases do; no transaction is open during it.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils.module_loading import import_string

from .clock import db_now
from .conf import get_setting
from .models import WORKER_ID, ModelCompletionBatch

logger = logging.getLogger("raif_batches")


def run_handler(batch: ModelCompletionBatch, worker: str = WORKER_ID) -> bool:
    """Call the batch's handler once its results are stored; True when it succeeded now.

    Called outside any lock or transaction. The call itself is claimed under the row lock
    (``handler_claimed_by``/``handler_claimed_until``, HANDLER_LEASE_SECONDS on the database's
    clock), so two workers never run it at the same time, whatever their batch leases do. A
    handler that raises is recorded on the batch and tried again on a later run, up to
    ``HANDLER_MAX_ATTEMPTS``; after a success it is never called again. (Should the process
    die during the handler or before its success is recorded, the claim lapses and the handler
    runs again: make it idempotent.) A batch deleted meanwhile is skipped.
    """
    if not batch.handler:
        return False
    max_attempts = int(get_setting("HANDLER_MAX_ATTEMPTS"))
    lease = timedelta(seconds=float(get_setting("HANDLER_LEASE_SECONDS")))
    try:
        with transaction.atomic():
            locked = ModelCompletionBatch.objects.locked().get(pk=batch.pk)
            now = db_now()
            if (
                locked.results_fetched_at is None
                or locked.handler_called_at is not None
                or locked.handler_gave_up
                or (
                    locked.handler_claimed_until is not None
                    and locked.handler_claimed_until > now
                    and locked.handler_claimed_by != worker
                )
            ):
                return False
            locked.handler_attempts += 1
            locked.handler_claimed_by = worker
            locked.handler_claimed_until = now + lease
            locked.save(
                update_fields=["handler_attempts", "handler_claimed_by", "handler_claimed_until"]
            )
    except ModelCompletionBatch.DoesNotExist:
        return False
    outcome: dict[str, Any]
    try:
        function: Any = import_string(locked.handler)
        function(locked)
    except Exception as error:
        logger.exception("Handler %s of batch %s failed", locked.handler, locked.pk)
        outcome = {
            "handler_error": f"{type(error).__name__}: {error}"[:2000],
            "handler_gave_up": locked.handler_attempts >= max_attempts,
        }
        succeeded = False
    else:
        outcome = {"handler_called_at": db_now(), "handler_error": ""}
        succeeded = True
    # Written only while the claim is still this call's; a deleted batch updates nothing.
    ModelCompletionBatch.objects.filter(pk=batch.pk, handler_claimed_by=worker).update(
        handler_claimed_by="", handler_claimed_until=None, **outcome
    )
    return succeeded
