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

from django.dispatch import Signal

batch_submitted = Signal()
batch_finished = Signal()
completions_finished = Signal()
