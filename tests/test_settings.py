"""Settings per provider, one lookup, and a missing key that stops only the work needing it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.checks import Error

from raif_batches.checks import check_settings
from raif_batches.conf import api_key, base_url, get_setting, require_api_key
from raif_batches.exceptions import BatchConfigurationError

ROOT = Path(__file__).resolve().parent.parent
PROVIDER_ENV = (
    "XAI_API_KEY",
    "XAI_BASE_URL",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL",
    "ACME_API_KEY",
    "ACME_BASE_URL",
)
ACME = "raif_batches.providers.xai.XAIStrategy"  # any importable strategy will do


@pytest.fixture(autouse=True)
def _no_provider_environment(monkeypatch: Any) -> None:
    for name in PROVIDER_ENV:
        monkeypatch.delenv(name, raising=False)


def ids(problems: list[Any]) -> set[str]:
    return {problem.id for problem in problems}


# --- the lookup -------------------------------------------------------------------------------


def test_each_provider_has_its_defaults() -> None:
    assert get_setting("XAI_BASE_URL") == "https://api.x.ai/v1"
    assert get_setting("OPENAI_BASE_URL") == "https://api.openai.com/v1"
    assert get_setting("ANTHROPIC_BASE_URL") == "https://api.anthropic.com"
    assert get_setting("BASE_URL", provider="anthropic") == "https://api.anthropic.com"
    assert get_setting("OPENAI_API_KEY") is None


def test_settings_outrank_the_environment_which_outranks_the_default(
    settings: Any, monkeypatch: Any
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "from-env")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:1/anthropic")
    assert api_key("openai") == "from-env"
    assert get_setting("ANTHROPIC_BASE_URL") == "http://127.0.0.1:1/anthropic"
    settings.RAIF_BATCHES = {"OPENAI_API_KEY": "from-settings"}
    assert api_key("openai") == "from-settings"
    # Only provider keys and URLs come from the environment.
    monkeypatch.setenv("POLL_INTERVAL", "1")
    assert get_setting("POLL_INTERVAL") == 60.0


def test_api_key_honours_its_provider_and_names_the_exact_setting(settings: Any) -> None:
    settings.RAIF_BATCHES = {"XAI_API_KEY": "xai-key"}
    assert api_key("xai") == "xai-key"
    with pytest.raises(BatchConfigurationError) as caught:
        api_key("openai")
    message = str(caught.value)
    assert "OpenAI" in message and "RAIF_BATCHES['OPENAI_API_KEY']" in message
    assert "the OPENAI_API_KEY environment variable" in message
    assert "xai-key" not in message and "\n" not in message
    with pytest.raises(BatchConfigurationError, match="ANTHROPIC_API_KEY"):
        api_key("anthropic")


def test_a_registered_third_party_provider_reads_its_own_pair(
    settings: Any, monkeypatch: Any
) -> None:
    monkeypatch.setenv("ACME_API_KEY", "acme-from-env")
    settings.RAIF_BATCHES = {"PROVIDERS": {"acme": ACME}, "ACME_BASE_URL": "https://acme.test/v2/"}
    assert api_key("acme") == "acme-from-env"
    assert base_url("acme") == "https://acme.test/v2"
    assert get_setting("ACME_BASE_URL") == "https://acme.test/v2/"
    with pytest.raises(BatchConfigurationError, match=r"No acme-eu API key.*ACME_EU_API_KEY"):
        api_key("acme-eu")
    assert not [p for p in check_settings() if p.id in {"raif_batches.E002", "raif_batches.W002"}]


def test_a_provider_may_override_a_general_setting(settings: Any) -> None:
    settings.RAIF_BATCHES = {
        "POLL_INTERVAL": 30,
        "OPENAI_POLL_INTERVAL": 300,
        "OPENAI_RETRY": {"MAX_ATTEMPTS": 2},
    }
    assert get_setting("POLL_INTERVAL", provider="openai") == 300
    assert get_setting("POLL_INTERVAL", provider="xai") == 30
    assert get_setting("RETRY", provider="openai")["MAX_ATTEMPTS"] == 2
    assert get_setting("RETRY", provider="openai")["BACKOFF_MAX"] == 30.0  # merged over defaults
    assert "raif_batches.E002" not in ids(check_settings())


def test_unknown_names_are_still_refused(settings: Any) -> None:
    with pytest.raises(KeyError):
        get_setting("POLL_INTERVALS")
    settings.RAIF_BATCHES = {"XAI_API_KEY": "k", "POLL_INTERVALS": 3}
    assert "raif_batches.E002" in ids(check_settings())


# --- system checks ----------------------------------------------------------------------------


def test_no_key_is_a_warning_not_an_error(settings: Any) -> None:
    settings.RAIF_BATCHES = {}
    problems = check_settings()
    assert not [p for p in problems if isinstance(p, Error)], problems
    assert ids(problems) == {"raif_batches.W010"}
    settings.RAIF_BATCHES = {"ANTHROPIC_API_KEY": "k"}  # any one provider's key will do
    assert check_settings() == []


def test_each_provider_base_url_is_checked_under_its_own_name(settings: Any) -> None:
    settings.RAIF_BATCHES = {
        "XAI_API_KEY": "k",
        "OPENAI_BASE_URL": "api.openai.com/v1",
        "ANTHROPIC_BASE_URL": "https://api.anthropic.com?beta=1",
    }
    messages = [p.msg for p in check_settings() if p.id == "raif_batches.E003"]
    assert len(messages) == 2, messages
    assert any(m.startswith("OPENAI_BASE_URL ") for m in messages)
    assert any(m.startswith("ANTHROPIC_BASE_URL ") for m in messages)


def test_a_key_with_a_line_break_is_an_error_that_does_not_show_it(settings: Any) -> None:
    secret = "sk-secret-value"
    settings.RAIF_BATCHES = {"OPENAI_API_KEY": secret + "\n"}
    problems = [p for p in check_settings() if p.id == "raif_batches.E013"]
    assert len(problems) == 1
    assert "OPENAI_API_KEY" in problems[0].msg
    assert secret not in problems[0].msg + str(problems[0].hint)


def test_settings_of_an_unregistered_provider_are_a_warning(settings: Any) -> None:
    settings.RAIF_BATCHES = {"XAI_API_KEY": "k", "ACME_API_KEY": "a"}
    problems = check_settings()
    assert ids(problems) == {"raif_batches.W002"}
    assert "ACME_API_KEY" in problems[0].msg


def test_require_api_key_stops_only_when_no_provider_has_one(settings: Any) -> None:
    settings.RAIF_BATCHES = {}
    with pytest.raises(BatchConfigurationError, match=r"^No xAI API key: set"):
        require_api_key()
    settings.RAIF_BATCHES = {"OPENAI_API_KEY": "k"}
    require_api_key()
    with pytest.raises(BatchConfigurationError, match="XAI_API_KEY"):
        require_api_key(["xai"])


# --- real manage.py processes without any key ---------------------------------------------------


def manage(tmp_path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in PROVIDER_ENV}
    env.update(
        DJANGO_SETTINGS_MODULE="example_project.settings",
        DATABASE_URL=f"sqlite:///{tmp_path / 'site.sqlite3'}",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_a_site_without_any_key_migrates_and_checks_but_does_not_poll(tmp_path: Path) -> None:
    migrated = manage(tmp_path, "migrate", "--noinput", "-v", "0")
    assert migrated.returncode == 0, migrated.stderr
    checked = manage(tmp_path, "check")
    assert checked.returncode == 0, checked.stderr
    assert "raif_batches.W010" in checked.stderr and "ERRORS" not in checked.stderr

    for command in ("poll_batches", "submit_batches", "harvest_batches"):
        stopped = manage(tmp_path, command)
        assert stopped.returncode != 0, (command, stopped.stdout)
        assert "Traceback" not in stopped.stderr, stopped.stderr
        last = stopped.stderr.strip().splitlines()[-1]
        assert last == (
            "CommandError: configuration: No xAI API key: set RAIF_BATCHES['XAI_API_KEY'] "
            "or the XAI_API_KEY environment variable."
        ), stopped.stderr


def test_the_emulator_starts_without_any_key(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in PROVIDER_ENV}
    env.update(
        DJANGO_SETTINGS_MODULE="example_project.settings",
        DATABASE_URL=f"sqlite:///{tmp_path / 'site.sqlite3'}",
    )
    process = subprocess.Popen(
        [sys.executable, "-u", "manage.py", "xai_emulator", "--port", "0"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()  # the listening line, or "" if it exited
        assert "http://127.0.0.1:" in first, (first, process.poll())
        assert process.poll() is None
    finally:
        process.terminate()
        process.communicate(timeout=30)


@pytest.mark.django_db
def test_a_database_without_skip_locked_is_an_error(monkeypatch: Any) -> None:
    from django.db import connection

    from raif_batches.checks import check_databases

    assert check_databases(databases=["default"]) == []
    if connection.vendor == "sqlite":
        monkeypatch.setattr(connection, "vendor", "mysql")  # SQLite alone is exempt
    monkeypatch.setattr(connection.features, "has_select_for_update_skip_locked", False)
    problems = check_databases(databases=["default"])
    assert [p.id for p in problems] == ["raif_batches.E012"]
    assert "MariaDB 10.6+" in str(problems[0].hint)


@pytest.mark.parametrize(
    ("url", "verify"),
    [("https://api.x.ai/v1", "/etc/ssl/site-bundle.pem"), ("http://127.0.0.1:8777/v1", True)],
)
def test_a_ca_bundle_from_the_environment_applies_to_https_hosts(
    monkeypatch: Any, url: str, verify: Any
) -> None:
    from raif_batches.http import build_session

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/site-bundle.pem")
    session = build_session(base_url=url)
    assert session.verify == verify
    assert session.trust_env is False
