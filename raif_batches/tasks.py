"""The three runs as tasks of Django's tasks framework: submit, poll, harvest.

``django.tasks`` on Django 6, the ``django-tasks`` package on Django 5.2 (``pip install
raif-batches[tasks]``): whichever exists is used. Each task takes JSON arguments and returns
:meth:`RunReport.as_dict() <raif_batches.polling.RunReport.as_dict>`, a JSON-serialisable dict
of what the run did (``ok`` is false when it met errors; ``fatal`` names one that stopped it).
Schedule them with whatever enqueues tasks periodically in your project; the runs are safe to
overlap, as the commands are.

Without either framework the module still imports (Celery's autodiscovery imports every app's
``tasks`` module), and using a task name raises an ImportError that says what to install. When
Celery is installed, importing this module also registers :mod:`raif_batches.celery_tasks`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .polling import harvest, poll, submit

task: Callable[..., Any] | None
try:
    from django.tasks import task  # type: ignore[import-not-found,no-redef,unused-ignore]
except ImportError:
    try:
        from django_tasks import task  # type: ignore[no-redef,unused-ignore]
    except ImportError:
        task = None

TASK_NAMES = ("submit_batches_task", "poll_batches_task", "harvest_batches_task")

if task is not None:

    @task()
    def submit_batches_task(
        batch_ids: list[int] | None = None, limit: int | None = None
    ) -> dict[str, Any]:
        """Submit pending batches (all, or ``batch_ids``), like ``manage.py submit_batches``."""
        return submit(batch_ids, limit=limit or None).as_dict()

    @task()
    def poll_batches_task(
        batch_ids: list[int] | None = None, force: bool = False, limit: int | None = None
    ) -> dict[str, Any]:
        """Refresh due batches and harvest ended ones, like ``manage.py poll_batches``."""
        return poll(batch_ids, force=force, limit=limit or None).as_dict()

    @task()
    def harvest_batches_task(
        batch_ids: list[int] | None = None, limit: int | None = None
    ) -> dict[str, Any]:
        """Fetch the results of ended batches, like ``manage.py harvest_batches``."""
        return harvest(batch_ids, limit=limit or None).as_dict()

else:

    def __getattr__(name: str) -> Any:
        if name in TASK_NAMES:
            raise ImportError(
                f"raif_batches.tasks.{name} needs Django's tasks framework: Django 6 "
                "(django.tasks), or on Django 5.2 the django-tasks package "
                "(pip install 'raif-batches[tasks]')."
            )
        raise AttributeError(f"module 'raif_batches.tasks' has no attribute {name!r}")


try:
    import celery  # noqa: F401
except ImportError:
    pass
else:
    from . import celery_tasks  # noqa: F401  (registers the Celery tasks for autodiscovery)
