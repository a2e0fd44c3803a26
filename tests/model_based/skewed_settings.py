"""Settings of a real process whose host clock is off: ``timezone.now`` shifted by
``RAIF_TEST_CLOCK_SKEW`` seconds (positive: fast).

The database server's clock is untouched, as on a real host whose NTP has drifted: whatever the
product decides from ``timezone.now()`` this process decides with a wrong clock.
"""

import os
from datetime import timedelta

from django.utils import timezone

from tests.subprocess_settings import *  # noqa: F403

_SKEW = timedelta(seconds=float(os.environ.get("RAIF_TEST_CLOCK_SKEW") or 0))
if _SKEW:
    _true_now = timezone.now

    def _skewed_now():  # type: ignore[no-untyped-def]
        return _true_now() + _SKEW

    timezone.now = _skewed_now
