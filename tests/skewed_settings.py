"""Settings of a real process whose host clock runs ``RAIF_TEST_CLOCK_SKEW`` seconds (default
400) ahead: ``django.utils.timezone.now`` is shifted before any app code is imported, so every
host-clock reading in the process is off, as on a badly synchronised cron host."""

import os
from datetime import timedelta

from django.utils import timezone

from tests.subprocess_settings import *  # noqa: F403

_host_now = timezone.now
_SKEW = timedelta(seconds=float(os.environ.get("RAIF_TEST_CLOCK_SKEW") or 400))


def _skewed_now():  # type: ignore[no-untyped-def]
    return _host_now() + _SKEW


timezone.now = _skewed_now
