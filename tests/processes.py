"""Real ``manage.py`` processes against the test database and an in-process emulator.

Only for PostgreSQL tests: the processes must see what the test committed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.db import connection

from .conftest import FAST_SETTINGS

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Finished:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def database_url() -> str:
    """The URL of the database the test runs on (pytest-django's test database)."""
    db = connection.settings_dict
    mysql = connection.vendor == "mysql"
    host = db.get("HOST") or "127.0.0.1"
    port = db.get("PORT") or (3306 if mysql else 5432)
    user = db.get("USER") or ("root" if mysql else "postgres")
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"{'mysql' if mysql else 'postgres'}://{user}{password}@{host}:{port}/{db['NAME']}"


def environment(emulator: Any, **raif_settings: Any) -> dict[str, str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.subprocess_settings",
        "DATABASE_URL": database_url(),
        f"{emulator.provider.upper()}_BASE_URL": emulator.base_url,
        f"{emulator.provider.upper()}_API_KEY": emulator.api_key,
        "RAIF_TEST_SETTINGS": json.dumps({**FAST_SETTINGS, **raif_settings}),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    env.pop("RAIF_TEST_CRASH_AT", None)
    env.pop("RAIF_TEST_CRASH_HARD", None)
    return env


def start(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run_together(env: dict[str, str], *commands: tuple[str, ...]) -> list[Finished]:
    """Start every command at once, then wait for all of them."""
    started = [(args, start(env, *args)) for args in commands]
    finished = []
    for args, process in started:
        out, err = process.communicate(timeout=120)
        finished.append(Finished(args, process.returncode, out, err))
    return finished
