"""The provider interface and the state rules: a provider writes wire code only, and the
rules the lifecycle applies are the ones the model answers (``can_submit``, ``can_cancel``)."""

from __future__ import annotations

from typing import Any

import pytest

from raif_batches import exceptions
from raif_batches.exceptions import BatchStateError
from raif_batches.lifecycle import submission
from raif_batches.models import BatchStatus, FailureKind, ModelCompletionBatch
from raif_batches.providers import get_strategy
from raif_batches.providers.base import LIFECYCLE_NAMES
from raif_batches.providers.xai import XAIStrategy

from .helpers import make_batch

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("name", sorted(LIFECYCLE_NAMES))
def test_a_provider_that_overrides_a_lifecycle_step_is_refused_when_defined(name: str) -> None:
    with pytest.raises(TypeError, match=name):
        type("OldStyleProvider", (XAIStrategy,), {name: lambda self, *args, **kwargs: None})


def test_a_provider_with_wire_hooks_only_is_accepted() -> None:
    wire = type("WireOnly", (XAIStrategy,), {"max_requests_per_batch": 10})
    assert wire.max_requests_per_batch == 10


def test_every_provider_error_kind_is_a_failure_kind() -> None:
    kinds = {
        cls.kind
        for cls in vars(exceptions).values()
        if isinstance(cls, type) and issubclass(cls, exceptions.ProviderError)
    }
    assert kinds <= set(FailureKind.values)


@pytest.mark.parametrize("status", list(BatchStatus))
@pytest.mark.parametrize(
    ("verb", "queryset"), [("cancel", "cancellable"), ("submit", "submittable")]
)
def test_an_action_is_refused_exactly_where_the_model_says_it_cannot_be_done(
    emulator: Any, status: str, verb: str, queryset: str
) -> None:
    batch = make_batch(1)
    if verb == "cancel":
        submission.submit(get_strategy("xai"), batch)  # a provider batch to cancel
    ModelCompletionBatch.objects.filter(pk=batch.pk).update(status=status)
    batch.refresh_from_db()
    allowed = getattr(batch, f"can_{verb}")
    listed = getattr(ModelCompletionBatch.objects, queryset)().filter(pk=batch.pk).exists()
    try:
        getattr(batch, verb)()
    except BatchStateError:
        refused = True
    else:
        refused = False
    assert refused == (not allowed)
    assert listed == allowed
