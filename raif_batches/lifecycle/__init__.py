"""The life of a batch, for every provider: submit, read status, cancel, fetch results.

These modules own every transaction and every row lock; a provider (a
:class:`~raif_batches.providers.base.BatchStrategy`) is passed in and reached only through its
wire hooks, so a provider module cannot change a transaction by overriding a method.

* :mod:`.transitions`: :func:`~.transitions.next_status`, the one place that decides a batch's
  next status, and the status and failure writes;
* :mod:`.submission`: crash-safe submission and the reconciliation of lost creates;
* :mod:`.status`: snapshots of the provider's view, and cancel;
* :mod:`.results`: fetch, apply and finish the results.

Leases and row locks are the model's (``ModelCompletionBatch.objects.locked()``,
``claimable()``, ``claim()``, ``release()``); the state rules too (``can_submit``,
``can_cancel``, ``is_terminal``…). Claimed runs over many batches are
:mod:`raif_batches.polling`'s.
"""
