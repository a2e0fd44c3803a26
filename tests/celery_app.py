"""A Celery app for the scheduler tests: the broker and results are the local Redis, database 7.

The worker runs as another process with ``tests.subprocess_settings`` (the test database comes
from ``DATABASE_URL``), the way a project's worker runs beside its web processes.
"""

import os

import django
from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.subprocess_settings")
django.setup()

REDIS_URL = os.environ.get("RAIF_TEST_REDIS_URL", "redis://127.0.0.1:6379/7")

app = Celery("raif_test", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    task_default_queue="raif_batches_test",
    result_expires=600,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
app.autodiscover_tasks(["raif_batches"])
