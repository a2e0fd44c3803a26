"""The runs as scheduled tasks, run for real: through Django's tasks framework (a real backend),
and through Celery (a real worker process, the local Redis as broker, PostgreSQL as database)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from raif_batches.models import ModelCompletion, ModelCompletionBatch
from raif_batches.polling import RunReport, poll

from .helpers import make_batch
from .processes import ROOT, environment

REDIS_URL = "redis://127.0.0.1:6379/7"
QUEUE = "raif_batches_test"


def immediate_backend() -> str:
    try:
        import django.tasks  # type: ignore[import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        return "django_tasks.backends.immediate.ImmediateBackend"
    return "django.tasks.backends.immediate.ImmediateBackend"


def end_without_harvest(batch: ModelCompletionBatch) -> None:
    """Bring a submitted batch to its end at the provider without fetching its results."""
    from raif_batches.lifecycle.status import fetch_status
    from raif_batches.providers import get_strategy

    assert poll([batch.pk], force=True).ok  # the validation read
    batch.refresh_from_db()
    fetch_status(get_strategy("xai"), batch)
    batch.refresh_from_db()
    assert batch.status == "ended" and batch.results_fetched_at is None


def test_run_report_as_dict_is_json() -> None:
    report = RunReport(claimed=2, submitted=[1, 2], notes=["n"], errors=["batch 3: e"])
    data = report.as_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["ok"] is False and data["submitted"] == [1, 2] and data["fatal"] is None


@pytest.mark.django_db
def test_django_tasks_through_a_real_backend(emulator: Any, settings: Any) -> None:
    settings.TASKS = {"default": {"BACKEND": immediate_backend()}}
    from raif_batches.tasks import harvest_batches_task, poll_batches_task, submit_batches_task

    first, second = make_batch(2), make_batch(3, failing=1)
    submitted = submit_batches_task.enqueue()
    assert submitted.status == "SUCCESSFUL", submitted.errors
    assert submitted.return_value["submitted"] == [first.pk, second.pk]
    assert json.loads(json.dumps(submitted.return_value)) == submitted.return_value
    assert ModelCompletionBatch.objects.filter(status="submitted").count() == 2

    end_without_harvest(second)
    harvested = harvest_batches_task.enqueue(batch_ids=[second.pk])
    assert harvested.return_value["finished"] == [second.pk]
    assert harvested.return_value["results_applied"] == 4
    assert second.completions.filter(status="completed").count() == 3

    for _ in range(5):
        polled = poll_batches_task.enqueue(force=True)
        assert polled.return_value["ok"], polled.return_value
        if first.pk in polled.return_value["finished"]:
            break
    first.refresh_from_db()
    assert first.results_fetched_at is not None
    assert not ModelCompletion.objects.filter(status="pending").exists()


def test_tasks_module_imports_without_a_framework(monkeypatch: Any) -> None:
    """Celery's autodiscovery imports every app's ``tasks``: without a tasks framework the
    module still imports, and only using a task says what to install."""
    import importlib

    import raif_batches.tasks

    for name in ("django.tasks", "django_tasks"):
        monkeypatch.setitem(sys.modules, name, None)
    for name in raif_batches.tasks.TASK_NAMES:  # reload() keeps a module's old names
        monkeypatch.delattr(raif_batches.tasks, name)
    try:
        module = importlib.reload(raif_batches.tasks)
        with pytest.raises(ImportError, match="django-tasks"):
            module.poll_batches_task  # noqa: B018
    finally:
        monkeypatch.undo()
        importlib.reload(raif_batches.tasks)


# --- Celery ---------------------------------------------------------------------------------


@pytest.fixture
def redis_url() -> str:
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=2)
    try:
        client.ping()
    except redis.exceptions.RedisError as error:
        pytest.skip(f"Redis is not reachable at {REDIS_URL}: {error}")
    client.flushdb()
    return REDIS_URL


@pytest.fixture
def celery_worker(emulator: Any, redis_url: str) -> Iterator[subprocess.Popen[str]]:
    pytest.importorskip("celery")
    env = {**environment(emulator), "RAIF_TEST_REDIS_URL": redis_url}
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "tests.celery_app",
            "worker",
            "--pool=solo",
            "--queues",
            QUEUE,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "--loglevel=WARNING",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    yield worker
    worker.send_signal(signal.SIGTERM)
    try:
        worker.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.communicate()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_celery_tasks_through_a_real_worker(
    emulator: Any, redis_url: str, celery_worker: subprocess.Popen[str]
) -> None:
    from celery import Celery

    client = Celery("raif_test_client", broker=redis_url, backend=redis_url)

    def run(name: str, **kwargs: Any) -> dict[str, Any]:
        result = client.send_task(f"raif_batches.{name}", kwargs=kwargs, queue=QUEUE)
        value = result.get(timeout=120)
        assert isinstance(value, dict), value
        return value

    first, second = make_batch(2), make_batch(3, failing=1)
    submitted = run("submit_batches")
    assert submitted["ok"] and sorted(submitted["submitted"]) == [first.pk, second.pk]
    assert ModelCompletionBatch.objects.filter(status="submitted").count() == 2
    assert emulator.state.count_calls("create_batch") == 2

    end_without_harvest(second)
    harvested = run("harvest_batches", batch_ids=[second.pk])
    assert harvested["finished"] == [second.pk] and harvested["results_applied"] == 4

    for _ in range(5):
        if first.pk in run("poll_batches", force=True)["finished"]:
            break
        time.sleep(0.1)
    first.refresh_from_db()
    assert first.results_fetched_at is not None
    assert not ModelCompletion.objects.filter(status="pending").exists()
