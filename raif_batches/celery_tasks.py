"""The three runs as Celery tasks (``pip install 'raif-batches[celery]'``).

Registered with ``shared_task`` under the names ``raif_batches.submit_batches``,
``raif_batches.poll_batches`` and ``raif_batches.harvest_batches``, so they bind to your
project's Celery app. ``app.autodiscover_tasks()`` finds them (it imports
``raif_batches.tasks``, which imports this module when Celery is installed); or list
``"raif_batches.celery_tasks"`` in the app's ``include``. Each returns
:meth:`RunReport.as_dict() <raif_batches.polling.RunReport.as_dict>`, a JSON-serialisable dict.

Overlapping runs are safe (leases and row locks coordinate them), so a beat schedule can fire
every minute without ``expires`` or locks of its own; the README has one.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from .polling import harvest, poll, submit


@shared_task(name="raif_batches.submit_batches", ignore_result=False)
def submit_batches_task(
    batch_ids: list[int] | None = None, limit: int | None = None
) -> dict[str, Any]:
    """Submit pending batches (all, or ``batch_ids``), like ``manage.py submit_batches``."""
    return submit(batch_ids, limit=limit or None).as_dict()


@shared_task(name="raif_batches.poll_batches", ignore_result=False)
def poll_batches_task(
    batch_ids: list[int] | None = None, force: bool = False, limit: int | None = None
) -> dict[str, Any]:
    """Refresh due batches and harvest ended ones, like ``manage.py poll_batches``."""
    return poll(batch_ids, force=force, limit=limit or None).as_dict()


@shared_task(name="raif_batches.harvest_batches", ignore_result=False)
def harvest_batches_task(
    batch_ids: list[int] | None = None, limit: int | None = None
) -> dict[str, Any]:
    """Fetch the results of ended batches, like ``manage.py harvest_batches``."""
    return harvest(batch_ids, limit=limit or None).as_dict()
