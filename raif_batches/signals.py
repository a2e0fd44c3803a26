"""Lifecycle signals, each sent after the transaction that caused it has committed.

``batch_submitted(sender=ModelCompletionBatch, batch=...)``
    The provider accepted the batch; ``batch.provider_batch_id`` is set.
``batch_finished(sender=ModelCompletionBatch, batch=..., status=..., counts=...)``
    All results of a terminal batch are stored (``results_fetched_at`` is set). ``counts`` is the
    local tally ``{"total", "completed", "failed"}``.
``completions_finished(sender=ModelCompletion, batch=..., completions=...)``
    One page of results was applied. ``completions`` is a lazy queryset of exactly the
    completions that page finished, so a 50,000-line batch sends one signal per page, not per row.
"""

from typing import Any

from django.db.models.signals import pre_delete
from django.dispatch import Signal, receiver

batch_submitted = Signal()
batch_finished = Signal()
completions_finished = Signal()


# --- the delete guard ---------------------------------------------------------------------------
# Every delete of a batch, whatever its path (the admin, ``Model.delete()``, ``QuerySet.delete()``)
# sends ``pre_delete`` for each batch row: Django cannot fast-delete a model that has a receiver.
# The receiver re-reads the row under a lock inside the delete's own transaction, so a worker that
# commits ``submitting`` first makes the delete fail, and one that comes after finds no row.
@receiver(pre_delete, sender="raif_batches.ModelCompletionBatch", dispatch_uid="raif_delete_guard")
def refuse_deleting_batches_in_flight(sender: Any, instance: Any, **kwargs: Any) -> None:
    from .exceptions import BatchInFlight

    current = (
        sender.objects.select_for_update()
        .filter(pk=instance.pk)
        .only("pk", "status", "results_fetched_at", "provider_batch_id")
        .first()
    )
    if current is None:
        return
    refusal = current.delete_refusal
    if refusal is not None:
        raise BatchInFlight(f"Batch {instance.pk} cannot be deleted: {refusal}.")
