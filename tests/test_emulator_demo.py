"""``manage.py demo`` (issue 12, item 10): it says where the answers come from, explains the line
the provider counted as a success that failed here, and ends with the next steps."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command

from raif_batches.models import ModelCompletionBatch

pytestmark = pytest.mark.django_db


def test_demo_runs_against_the_realistic_emulator_and_explains_itself(settings: Any) -> None:
    settings.RAIF_BATCHES = {**settings.RAIF_BATCHES}
    settings.RAIF_BATCHES.pop("XAI_BASE_URL", None)
    out = StringIO()
    call_command("demo", "--interval", "0", stdout=out)
    text = out.getvalue()
    assert "Answers come from the bundled xAI emulator at http://127.0.0.1:" in text
    assert "not from xAI" in text and "nothing billed" in text
    # Realistic pacing: a validation phase, then lines finishing over several polls.
    assert "submitted: 0 succeeded, 0 failed, 0 pending" in text
    assert text.count("in_progress:") >= 2
    batch = ModelCompletionBatch.objects.get()
    assert batch.status == "ended"
    bad = batch.completions.get(batch_custom_id="badjson-01")
    assert (bad.status, bad.failure_error) == ("failed", "invalid JSON answer")
    assert bad.raw_response and bad.total_cost is not None
    assert (
        "The provider answered 23 requests with a success and 2 with an error; here 22 completed "
        "and 3 failed." in text
    )
    assert "Why badjson-01 failed although the provider counted it a success:" in text
    assert batch.request_counts == {
        "total": 25,
        "pending": 0,
        "succeeded": 22,
        "failed": 3,
        "cancelled": 0,
    }
    steps = text[text.index("Next steps:") :]
    for command in ("createsuperuser", "runserver", "/admin/raif_batches/modelcompletionbatch/"):
        assert command in steps
    # The emulator's settings did not outlive the command.
    assert "XAI_BASE_URL" not in settings.RAIF_BATCHES


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_demo_runs_on_every_provider(settings: Any, provider: str) -> None:
    out = StringIO()
    call_command("demo", "--interval", "0", "--provider", provider, stdout=out)
    text = out.getvalue()
    label = {"openai": "OpenAI", "anthropic": "Anthropic"}[provider]
    assert f"Answers come from the bundled {label} emulator at http://127.0.0.1:" in text
    batch = ModelCompletionBatch.objects.get()
    assert (batch.provider, batch.status) == (provider, "ended")
    assert batch.completions.filter(status="completed").count() == 22
    assert batch.total_cost is not None and batch.total_cost > 0
    bad = batch.completions.get(batch_custom_id="fail-01")
    assert "Content violates usage policy" in bad.failure_reason
    assert f"python manage.py {provider}_emulator" in text
    assert f"{provider.upper()}_BASE_URL" not in settings.RAIF_BATCHES
