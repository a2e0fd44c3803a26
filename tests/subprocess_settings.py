"""Settings of the real processes that the PostgreSQL tests start.

The example project's settings, with ``RAIF_BATCHES`` taken from the JSON in the
``RAIF_TEST_SETTINGS`` environment variable (a test-only channel: the product reads no such
variable). ``DATABASE_URL``, ``XAI_BASE_URL`` and ``XAI_API_KEY`` come from the environment as
they would on a cron host.
"""

import json
import os

from example_project.settings import *  # noqa: F403

RAIF_BATCHES = json.loads(os.environ.get("RAIF_TEST_SETTINGS") or "{}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {"raif_batches": {"handlers": ["console"], "level": "INFO"}},
}
