"""The API key never leaves the Authorization header.

A whole batch life, with transient faults, a lost create, a cancel and a rejected key, runs with
every logger at DEBUG; then the logs, the exceptions (messages, arguments, attached responses and
their causes), the commands' output, every column of every row of both tables, and everything the
emulator recorded are searched for the key.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from raif_batches.emulator import Fault, run_emulator
from raif_batches.exceptions import ProviderError
from raif_batches.models import ModelCompletion, ModelCompletionBatch
from raif_batches.polling import poll
from raif_batches.providers import get_strategy

from .helpers import make_batch, run_to_end

pytestmark = pytest.mark.django_db

SECRET = "xai-S3cr3tK3y-0f1e2d3c4b5a69788796a5b4c3d2e1f0"
WRONG = "xai-Wr0ngK3y-aaaabbbbccccddddeeeeffff00001111"


@pytest.fixture
def keyed_emulator(settings: Any) -> Iterator[Any]:
    with run_emulator(api_key=SECRET) as emulator:
        settings.RAIF_BATCHES = {
            **settings.RAIF_BATCHES,
            "XAI_BASE_URL": emulator.base_url,
            "XAI_API_KEY": SECRET,
        }
        yield emulator


def exception_texts(error: BaseException | None) -> Iterator[str]:
    """Everything an error reporter could show: message, arguments, request headers, causes."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield str(error)
        yield repr(error)
        yield repr(error.args)
        for holder in (getattr(error, "response", None), error):
            request = getattr(holder, "request", None)
            if request is not None:
                yield repr(dict(request.headers))
        yield repr(getattr(error, "payload", None))
        error = error.__cause__ or error.__context__


def database_text() -> str:
    rows = [
        *ModelCompletionBatch.objects.values(),
        *ModelCompletion.objects.values(),
    ]
    assert rows
    return json.dumps(rows, default=str)


def command(*args: str, errors: list[BaseException]) -> str:
    out, err = StringIO(), StringIO()
    try:
        call_command(*args, stdout=out, stderr=err)
    except CommandError as error:
        errors.append(error)
        return out.getvalue() + err.getvalue() + str(error)
    return out.getvalue() + err.getvalue()


def test_the_key_appears_nowhere(keyed_emulator: Any, settings: Any, caplog: Any) -> None:
    emulator = keyed_emulator
    caplog.set_level(logging.DEBUG)  # every logger, urllib3's included
    errors: list[BaseException] = []
    output = []
    emulator.state.add_fault(Fault("upload_file", "drop"))
    emulator.state.add_fault(Fault("create_batch", "accept_then_drop"))
    emulator.state.add_fault(Fault("get_batch", "status", status=503, times=2))
    emulator.state.add_fault(Fault("list_results", "status", status=429, retry_after=0.01))
    emulator.config.requests_per_read = 2
    first, second = make_batch(3, failing=1), make_batch(4)
    output.append(command("submit_batches", errors=errors))  # the create's answer is lost
    output.append(command("poll_batches", "--force", errors=errors))  # adopted by name
    output.append(command("cancel_batch", str(second.pk), errors=errors))
    run_to_end(first)
    run_to_end(second)

    # The wrong key: through a command, and straight through the strategy.
    settings.RAIF_BATCHES = {**settings.RAIF_BATCHES, "XAI_API_KEY": WRONG}
    third = make_batch(1)
    output.append(command("submit_batches", errors=errors))
    strategy = get_strategy("xai")
    with pytest.raises(ProviderError) as rejected:
        strategy.get_provider_batch(first.provider_batch_id)
    errors.append(rejected.value)
    with pytest.raises(ProviderError) as missing:
        strategy.get_provider_batch("batch_does_not_exist")
    errors.append(missing.value)
    emulator.state.add_fault(Fault("create_batch", "drop"))
    with pytest.raises(ProviderError) as lost:
        strategy.create_provider_batch(third)
    errors.append(lost.value)
    poll(force=True)

    # The run did what it says: faults met, results stored, the wrong key refused.
    assert {c.status for c in emulator.state.calls} >= {0, 200, 400, 429, 503}
    assert ModelCompletion.objects.filter(status="completed").count() >= 3
    assert len(errors) >= 4 and "xAI rejected the API key" in output[-1]
    assert repr(strategy.client) == f"<XAIClient {emulator.base_url}>"

    haystacks = {
        "logs": caplog.text + "".join(str(r.args) for r in caplog.records),
        "command output": "\n".join(output),
        "exceptions": "\n".join(text for e in errors for text in exception_texts(e)),
        "database": database_text(),
        "emulator calls": repr(emulator.state.calls),
        "emulator batches": repr([vars(b) for b in emulator.state.batches.values()]),
    }
    assert "Incorrect API key" in haystacks["exceptions"]
    for where, text in haystacks.items():
        for key in (SECRET, WRONG):
            assert key not in text, f"the API key leaked into the {where}"
            assert key[8:24] not in text, f"part of the API key leaked into the {where}"
