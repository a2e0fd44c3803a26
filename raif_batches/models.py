"""The two tables: one row per provider batch, one row per request line and its result.

The state rules live here, once: which statuses can be submitted, polled, cancelled or retried
(``can_*`` properties and the matching querysets), the kinds of failure (:class:`FailureKind`),
and the lease on a batch (``claimable()``/``locked()``/``claim()``/``release()``). The
lifecycle, the commands and the admin ask these; they do not restate them.
"""

from __future__ import annotations

import os
import socket
import uuid
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, ClassVar

from django.contrib.contenttypes.fields import GenericForeignKey
from django.contrib.contenttypes.models import ContentType
from django.db import DatabaseError, connections, models, transaction
from django.db.models import F, Q
from django.db.models.functions import Now
from django.utils import timezone

from .exceptions import BatchBusy

#: Identifies this process in leases; threads of one process share it (only one does DB work).
WORKER_ID = f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _cost_field() -> models.DecimalField:
    # USD to 1e-10, the size of one xAI tick; 10 integer digits is ten billion dollars.
    return models.DecimalField(max_digits=20, decimal_places=10, null=True, blank=True)


def empty_counts() -> dict[str, int]:
    return {"total": 0, "pending": 0, "succeeded": 0, "failed": 0, "cancelled": 0}


def new_provider_batch_name() -> str:
    return f"raif_batch_{uuid.uuid4().hex}"


class BatchStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SUBMITTING = "submitting", "Submitting"
    SUBMITTED = "submitted", "Submitted"
    IN_PROGRESS = "in_progress", "In progress"
    CANCELLING = "cancelling", "Cancelling"
    ENDED = "ended", "Ended"
    CANCELED = "canceled", "Canceled"
    EXPIRED = "expired", "Expired"
    FAILED = "failed", "Failed"


TERMINAL_STATUSES = frozenset(
    {BatchStatus.ENDED, BatchStatus.CANCELED, BatchStatus.EXPIRED, BatchStatus.FAILED}
)
#: Statuses that a poller refreshes from the provider.
IN_FLIGHT_STATUSES = frozenset(
    {BatchStatus.SUBMITTED, BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING}
)
#: Statuses in which a paid provider batch may exist and still be running: never deletable.
#: ``submitting`` is included because the create call may be on the wire (or its answer lost).
AT_PROVIDER_STATUSES = IN_FLIGHT_STATUSES | {BatchStatus.SUBMITTING}


def _undeletable() -> Q:
    """Batches whose deletion would lose paid work, as one condition (see ``can_delete``)."""
    return Q(status__in=AT_PROVIDER_STATUSES) | (
        Q(status__in=TERMINAL_STATUSES, results_fetched_at__isnull=True) & ~Q(provider_batch_id="")
    )


#: Statuses from which a batch can be submitted (or its interrupted submission resumed).
SUBMITTABLE_STATUSES = frozenset({BatchStatus.PENDING, BatchStatus.SUBMITTING})
#: Statuses in which a cancel can be asked: a pending batch is cancelled here, an in-flight one
#: at the provider (asking again while cancelling is harmless). A submitting batch is not: its
#: create may be in flight.
CANCELLABLE_STATUSES = frozenset(
    {
        BatchStatus.PENDING,
        BatchStatus.SUBMITTED,
        BatchStatus.IN_PROGRESS,
        BatchStatus.CANCELLING,
    }
)


class FailureKind(models.TextChoices):
    """What ``failure_error`` holds: a few words naming the failure (the reason says more).

    The values are the strings stored since the first release, so none needs migrating. The
    provider errors' kinds (:mod:`raif_batches.exceptions`, ``ProviderError.kind``) are the
    same strings, kept there as literals because that module loads before the app registry.
    """

    # A batch's own end.
    REJECTED = "rejected by provider", "Rejected by the provider"
    EXPIRED = "expired", "Expired"
    MAX_AGE = "max age exceeded", "Past its maximum age"
    CANCELED_UNSUBMITTED = "canceled before submission", "Canceled before submission"
    # Why a batch is not moving (notes; its status is unchanged).
    INVALID_REQUEST = "invalid request", "Invalid request"
    CONFIGURATION = "configuration", "Configuration (a key or setting is missing)"
    UNEXPECTED = "unexpected error", "Unexpected error"
    UNREADABLE = "unreadable answer", "Unreadable answer"
    PROVIDER_ERROR = "provider error", "Provider error"
    API_KEY_REJECTED = "API key rejected", "API key rejected"
    NOT_FOUND = "not found at provider", "Not found at the provider"
    REQUEST_REJECTED = "request rejected by provider", "Request rejected by the provider"
    UNAVAILABLE = "provider unavailable", "Provider unavailable"
    UNREADABLE_ANSWER = "unreadable answer from provider", "Unreadable answer from the provider"
    ANSWER_TOO_LARGE = "provider answer too large", "Provider answer too large"
    SUBMISSION_UNKNOWN = "submission outcome unknown", "Submission outcome unknown"
    RECONCILE_AMBIGUOUS = (
        "lost create ambiguous",
        "Lost create ambiguous (adopt a candidate or abandon)",
    )
    ABANDONED = "abandoned by operator", "Abandoned by the operator"
    # Harvests.
    RESULTS_INCOMPLETE = "results incomplete", "Results incomplete (reading again)"
    RESULTS_MISSING = "results missing", "Results missing"
    RESULTS_UNAVAILABLE = "results unavailable", "Results unavailable"
    # One line's failure.
    REQUEST_CANCELLED = "request cancelled", "Request cancelled"
    REQUEST_EXPIRED = "request expired", "Request expired"
    ENTRY_MISSING = "entry missing", "No result served"
    BATCH_CANCELED = "batch canceled", "Batch canceled"
    BATCH_EXPIRED = "batch expired", "Batch expired"
    BATCH_FAILED = "batch failed", "Batch failed"
    UNSTORABLE = "unstorable result", "Result could not be stored"
    INVALID_JSON = "invalid JSON answer", "Invalid JSON answer"


#: A batch's own failure, set when it ended; a later note (why a read or harvest did not get
#: through) must not hide it.
OWN_FAILURE_KINDS = frozenset(
    {
        FailureKind.REJECTED,
        FailureKind.EXPIRED,
        FailureKind.MAX_AGE,
        FailureKind.CANCELED_UNSUBMITTED,
        FailureKind.ABANDONED,
    }
)
#: Failure kinds of a line that came from the provider's error entry: a success for the same
#: line, read later in the same harvest, replaces them (results outrank errors).
PROVIDER_ERROR_KINDS = (FailureKind.PROVIDER_ERROR, FailureKind.REQUEST_CANCELLED)
#: Stored outcomes that the provider's counters do not count as succeeded or failed.
UNCOUNTED_KINDS = (FailureKind.REQUEST_CANCELLED,)


class CompletionStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"


class ModelCompletionBatchQuerySet(models.QuerySet["ModelCompletionBatch"]):
    def terminal(self) -> ModelCompletionBatchQuerySet:
        return self.filter(status__in=TERMINAL_STATUSES)

    def not_terminal(self) -> ModelCompletionBatchQuerySet:
        return self.exclude(status__in=TERMINAL_STATUSES)

    def claimable(self, now: datetime | Now) -> ModelCompletionBatchQuerySet:
        """Batches whose lease is free or has lapsed at ``now`` (the database clock's time)."""
        return self.filter(Q(claimed_until__isnull=True) | Q(claimed_until__lte=now))

    def locked(self) -> ModelCompletionBatchQuerySet:
        """The rows, locked until the surrounding transaction ends."""
        return self.select_for_update()

    def claim(self, worker: str, *, limit: int | None = None) -> list[ModelCompletionBatch]:
        """Take a lease on up to ``limit`` unclaimed batches of this queryset, skipping rows
        another transaction holds; the claimed batches, in primary-key order.

        The lease is counted on the database's clock, the one clock every host shares. On
        PostgreSQL it is one statement (``UPDATE … RETURNING`` of the rows its subquery locks);
        elsewhere the rows are locked, leased and read in three.
        """
        from .clock import db_now
        from .conf import get_setting

        lease = timedelta(seconds=float(get_setting("LEASE_SECONDS")))
        db = connections[self.db]
        if db.vendor == "postgresql":
            return self._claim_returning(worker, lease, limit)
        skip_locked = db.features.has_select_for_update_skip_locked
        with transaction.atomic(using=self.db):
            now = db_now(self.db)
            candidates = self._most_overdue(now).select_for_update(skip_locked=skip_locked)
            ids = list(candidates[: limit or None].values_list("pk", flat=True))
            if ids:
                self.model.objects.using(self.db).filter(pk__in=ids).update(
                    claimed_by=worker, claimed_until=now + lease
                )
        return list(self.model.objects.using(self.db).filter(pk__in=ids).order_by("pk"))

    def _most_overdue(self, now: datetime | Now) -> ModelCompletionBatchQuerySet:
        """The claimable rows, in the order a claim takes them: most overdue first."""
        return self.claimable(now).order_by(F("next_poll_at").asc(nulls_first=True), "pk")

    def _claim_returning(
        self, worker: str, lease: timedelta, limit: int | None
    ) -> list[ModelCompletionBatch]:
        """:meth:`claim` on PostgreSQL: the rows locked (``FOR UPDATE SKIP LOCKED``), leased
        and read back in one statement, on that statement's clock (``STATEMENT_TIMESTAMP()``,
        the time :func:`~raif_batches.clock.db_now` reads)."""
        db = connections[self.db]
        quote = db.ops.quote_name
        meta = self.model._meta
        columns = ", ".join(quote(str(f.column)) for f in meta.concrete_fields)
        assert meta.pk is not None
        # One statement needs no transaction of its own; FOR UPDATE is written here because
        # Django compiles it only inside one.
        candidates = self._most_overdue(Now())[: limit or None].values_list("pk")
        subquery, params = candidates.query.sql_with_params()
        claimed = list(
            self.model.objects.db_manager(self.db).raw(
                f"UPDATE {quote(meta.db_table)} SET {quote('claimed_by')} = %s, "
                f"{quote('claimed_until')} = STATEMENT_TIMESTAMP() + %s "
                f"WHERE {quote(str(meta.pk.column))} IN ({subquery} FOR UPDATE SKIP LOCKED) "
                f"RETURNING {columns}",
                [worker, lease, *params],
            )
        )
        claimed.sort(key=lambda batch: batch.pk)
        return claimed

    def release(self, worker: str = WORKER_ID) -> int:
        """Give back this worker's leases on these batches; a lease another worker has taken
        meanwhile is left alone.

        Outside a transaction, a connection lost during the run is replaced once: the leases
        would otherwise hold the batches away from this worker's next run too, for a whole
        LEASE_SECONDS.
        """
        mine = self.filter(claimed_by=worker)
        try:
            return mine.update(claimed_by="", claimed_until=None)
        except DatabaseError:
            db = connections[mine.db]
            if db.in_atomic_block or db.is_usable():
                raise
            try:
                db.close()  # the next query opens a new connection
            except DatabaseError:
                pass
            return mine.update(claimed_by="", claimed_until=None)

    def submittable(self) -> ModelCompletionBatchQuerySet:
        """Batches that can be submitted, or whose interrupted submission can be resumed."""
        return self.filter(status__in=SUBMITTABLE_STATUSES)

    def cancellable(self) -> ModelCompletionBatchQuerySet:
        return self.filter(status__in=CANCELLABLE_STATUSES)

    def pollable(self) -> ModelCompletionBatchQuerySet:
        """Batches whose status a poll reads: in flight, or submitting (to reconcile)."""
        return self.filter(Q(status__in=IN_FLIGHT_STATUSES) | Q(status=BatchStatus.SUBMITTING))

    def due_for_poll(self, now: Any = None) -> ModelCompletionBatchQuerySet:
        """In-flight batches whose next status read is due, plus interrupted submissions."""
        now = now or timezone.now()
        return self.filter(
            Q(status__in=IN_FLIGHT_STATUSES, next_poll_at__lte=now)
            | Q(status__in=IN_FLIGHT_STATUSES, next_poll_at__isnull=True)
            | Q(status=BatchStatus.SUBMITTING)
        )

    def deletable(self) -> ModelCompletionBatchQuerySet:
        """Batches that may be deleted: nothing runs at the provider, no paid result is unread.

        The one statement of the rule; ``ModelCompletionBatch.can_delete`` is the same rule for
        one row, and the ``pre_delete`` guard in ``signals`` enforces it for every delete.
        """
        return self.exclude(_undeletable())

    def undeletable(self) -> ModelCompletionBatchQuerySet:
        return self.filter(_undeletable())

    def delete(self) -> tuple[int, dict[str, int]]:
        """Delete, or raise ``BatchInFlight`` before anything is touched if any batch may not go.

        The check runs before Django's delete transaction opens, so a caller that catches the
        error can go on using its own transaction; the ``pre_delete`` guard still covers a
        batch whose status changes between this check and the delete.
        """
        refuse_undeletable(self)
        return super().delete()

    def awaiting_harvest(self) -> ModelCompletionBatchQuerySet:
        """Terminal batches whose results have not been fetched yet."""
        return self.filter(status__in=TERMINAL_STATUSES, results_fetched_at__isnull=True)

    def awaiting_handler(self) -> ModelCompletionBatchQuerySet:
        return self.filter(
            results_fetched_at__isnull=False,
            handler_called_at__isnull=True,
            handler_gave_up=False,
        ).exclude(handler="")


def refuse_undeletable(queryset: models.QuerySet[Any]) -> None:
    from .exceptions import BatchInFlight

    refused = (
        queryset.model.objects.filter(pk__in=queryset.order_by().values("pk"))
        .filter(_undeletable())
        .only("pk", "status", "results_fetched_at", "provider_batch_id")
        .order_by("pk")
        .first()
    )
    if refused is not None:
        raise BatchInFlight(f"Batch {refused.pk} cannot be deleted: {refused.delete_refusal}.")


class ModelCompletionBatch(models.Model):
    """One batch at one provider, and everything the provider said about it."""

    Status = BatchStatus

    provider = models.CharField(max_length=32, default="xai", db_index=True)
    model = models.CharField(max_length=128, help_text="Provider model name, e.g. grok-4.3.")
    name = models.CharField(max_length=255, blank=True)
    metadata = models.JSONField(default=dict, blank=True)

    status = models.CharField(
        max_length=16, choices=BatchStatus.choices, default=BatchStatus.PENDING
    )
    provider_batch_name = models.CharField(
        max_length=64,
        unique=True,
        default=new_provider_batch_name,
        editable=False,
        help_text="Name given to the provider batch; unique, so a lost create can be found again.",
    )
    provider_batch_id = models.CharField(max_length=128, blank=True, default="")
    input_file_id = models.CharField(max_length=128, blank=True, default="")
    provider_response = models.JSONField(null=True, blank=True)
    request_counts = models.JSONField(default=empty_counts)

    failure_error = models.CharField(max_length=255, blank=True, default="")
    failure_reason = models.TextField(blank=True, default="")

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    submitted_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    results_fetched_at = models.DateTimeField(null=True, blank=True)
    next_poll_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    # Crash-safe submission: when the create call was last sent (its answer may be lost), and
    # when that call ended, whatever its outcome (empty while it is in flight, or when its
    # worker died during it). Both are read from the database clock.
    create_attempted_at = models.DateTimeField(null=True, blank=True)
    create_ended_at = models.DateTimeField(null=True, blank=True)
    # Second provider batches found for this batch (a late create answer, two of the same name
    # in the provider's list): each is cancelled at once and recorded here for the operator.
    duplicate_provider_batches = models.JSONField(default=list, blank=True)
    # Provider batches that may be the one a lost create made, at a provider whose batches
    # carry no name (Anthropic): same time and size. With more than one, nothing is guessed
    # and nothing is created again: the operator adopts one or abandons the batch.
    reconcile_candidates = models.JSONField(default=list, blank=True)
    # Cancellation: who asked and when; the counts are trusted only after a grace period.
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    cancel_reason = models.CharField(max_length=32, blank=True, default="")
    counts_changed_at = models.DateTimeField(null=True, blank=True)
    # When the provider's rejection (cancel_by_xai_message) was first seen: lines still running
    # then are waited for like a cancel, counted from this moment.
    rejected_at = models.DateTimeField(null=True, blank=True)

    # A harvest that came up short (fewer results than the provider's counters report, or the
    # results endpoint answering "not found") is read again later, with backoff, up to a bound.
    results_lacking_since = models.DateTimeField(
        null=True, blank=True, help_text="When a harvest first found results missing."
    )
    results_next_read_at = models.DateTimeField(
        null=True, blank=True, help_text="When the results are read again."
    )
    results_read_attempts = models.PositiveIntegerField(
        default=0, help_text="Harvests that came up short so far."
    )
    results_stored_count = models.PositiveIntegerField(
        null=True, blank=True, help_text="Outcomes stored when the results were last read."
    )

    # A poller's lease on the batch: work is claimed in a short transaction, done unlocked.
    claimed_by = models.CharField(max_length=64, blank=True, default="")
    claimed_until = models.DateTimeField(null=True, blank=True)

    # Completion handler: dotted path called once after the results are stored.
    handler = models.CharField(max_length=255, blank=True, default="")
    handler_attempts = models.PositiveIntegerField(default=0)
    handler_called_at = models.DateTimeField(null=True, blank=True)
    handler_gave_up = models.BooleanField(default=False)
    handler_error = models.TextField(blank=True, default="")
    # The handler call's own lease: two workers never run it at the same time, and a crashed
    # call's claim lapses after HANDLER_LEASE_SECONDS.
    handler_claimed_by = models.CharField(max_length=64, blank=True, default="")
    handler_claimed_until = models.DateTimeField(null=True, blank=True)

    retry_of = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="retries",
        help_text="The batch whose failed requests this batch retries.",
    )

    prompt_token_cost = _cost_field()
    output_token_cost = _cost_field()
    total_cost = _cost_field()

    objects: ClassVar[ModelCompletionBatchQuerySet] = ModelCompletionBatchQuerySet.as_manager()  # type: ignore[assignment]

    class Meta:
        verbose_name = "model completion batch"
        verbose_name_plural = "model completion batches"
        ordering = ("-created_at", "-pk")
        permissions = (
            ("submit_modelcompletionbatch", "Can submit batches to the provider"),
            ("poll_modelcompletionbatch", "Can poll batches at the provider"),
            ("cancel_modelcompletionbatch", "Can cancel batches at the provider"),
            ("harvest_modelcompletionbatch", "Can fetch batch results"),
            ("retry_modelcompletionbatch", "Can retry the failed requests of a batch"),
            ("export_modelcompletionbatch", "Can export batch results"),
        )
        indexes = (
            models.Index(fields=("status", "next_poll_at"), name="raif_batch_status_poll"),
            models.Index(fields=("provider_batch_id",), name="raif_batch_provider_id"),
            models.Index(
                fields=("status",),
                condition=Q(results_fetched_at__isnull=True),
                name="raif_batch_unharvested",
            ),
            # The admin's batch list: newest first, one page read straight off the index.
            models.Index(fields=("created_at", "id"), name="raif_batch_created_id"),
            # The batch list filtered by status, provider or model: its page, newest first, and
            # its bounded count off one index, however old the matching batches are (a walk of
            # the creation index would read every newer batch first). The name search has a
            # vendor-specific index of its own (migration 0005).
            models.Index(fields=("status", "created_at", "id"), name="raif_batch_status_created"),
            models.Index(
                fields=("provider", "created_at", "id"), name="raif_batch_provider_created"
            ),
            models.Index(fields=("model", "created_at", "id"), name="raif_batch_model_created"),
        )

    def __str__(self) -> str:
        label = self.name or self.provider_batch_name
        return f"{label} ({self.provider}/{self.model}, {self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def delete(self, *args: Any, **kwargs: Any) -> tuple[int, dict[str, int]]:
        """Delete with the batch's completions, unless the row (as stored now) may not go."""
        refuse_undeletable(type(self).objects.filter(pk=self.pk))
        return super().delete(*args, **kwargs)

    @property
    def can_delete(self) -> bool:
        """Whether deleting this batch loses nothing paid (the rule of ``deletable()``)."""
        return self.delete_refusal is None

    @property
    def delete_refusal(self) -> str | None:
        """Why this batch may not be deleted now, in an operator's words; None if it may."""
        if self.status in AT_PROVIDER_STATUSES:
            return (
                f"it is {self.get_status_display().lower()} at the provider: the paid provider "
                "batch keeps running; cancel it first and delete it once it has settled"
            )
        if self.is_terminal and self.results_fetched_at is None and self.provider_batch_id:
            return (
                "its results have not been fetched yet: the provider has billed them; fetch the "
                "results first and delete it afterwards"
            )
        return None

    @property
    def can_submit(self) -> bool:
        return self.status in SUBMITTABLE_STATUSES

    @property
    def can_cancel(self) -> bool:
        return self.status in CANCELLABLE_STATUSES

    @property
    def can_poll(self) -> bool:
        return self.status in IN_FLIGHT_STATUSES or self.status == BatchStatus.SUBMITTING

    @property
    def awaits_harvest(self) -> bool:
        """Ended, and its results not stored yet."""
        return self.is_terminal and self.results_fetched_at is None

    @property
    def can_retry(self) -> bool:
        """Its results are stored and some requests failed (one query)."""
        return (
            self.results_fetched_at is not None
            and self.completions.filter(status=CompletionStatus.FAILED).exists()
        )

    @property
    def age(self) -> timedelta:
        return timezone.now() - self.created_at

    # Leases. The caller holds the row lock (``objects.locked()``) and passes the database
    # clock's time, so that hosts whose clocks disagree still agree on who owns the batch.
    def leased_to_other(self, worker: str, now: datetime) -> bool:
        return bool(
            self.claimed_by
            and self.claimed_by != worker
            and self.claimed_until is not None
            and self.claimed_until > now
        )

    def claim(self, worker: str, now: datetime, seconds: float | None = None) -> None:
        """Take (or renew) the lease on the locked row; the caller saves.

        :class:`~raif_batches.exceptions.BatchBusy` when another worker's lease still runs.
        ``seconds`` defaults to LEASE_SECONDS.
        """
        if self.leased_to_other(worker, now):
            until = self.claimed_until
            raise BatchBusy(
                f"Batch {self.pk} is being worked on by {self.claimed_by} "
                f"until {until:%Y-%m-%d %H:%M:%S}."
                if until is not None
                else f"Batch {self.pk} is being worked on by {self.claimed_by}."
            )
        if seconds is None:
            from .conf import get_setting

            seconds = float(get_setting("LEASE_SECONDS"))
        self.claimed_by = worker
        self.claimed_until = now + timedelta(seconds=seconds)

    def release(self, worker: str = WORKER_ID) -> None:
        """Give the lease back, unless another worker has taken it meanwhile."""
        type(self).objects.filter(pk=self.pk).release(worker)

    def get_strategy(self) -> Any:
        from .providers import get_strategy

        return get_strategy(self.provider)

    # Driving a batch from code (:mod:`raif_batches.lifecycle`). Each method takes its own
    # locks; none may be called while a transaction holds this batch's row.
    def submit(self) -> ModelCompletionBatch:
        from .lifecycle import submission

        return submission.submit(self.get_strategy(), self)

    def refresh_status(self) -> ModelCompletionBatch:
        from .lifecycle import status

        return status.fetch_status(self.get_strategy(), self)

    def cancel(self, reason: str = "requested") -> ModelCompletionBatch:
        from .lifecycle import status

        return status.cancel(self.get_strategy(), self, reason=reason)

    def fetch_results(self) -> int:
        from .lifecycle import results

        return results.fetch_results(self.get_strategy(), self)


class ModelCompletion(models.Model):
    """One request line of a batch and, once known, its result."""

    Status = CompletionStatus
    #: The chat-completion parameters kept in columns of their own; the others in extra_body.
    PARAMETER_FIELDS = ("temperature", "max_tokens", "response_format", "tools", "tool_choice")
    #: The fields the request body is rebuilt from (:meth:`request_body`).
    REQUEST_FIELDS = ("messages", *PARAMETER_FIELDS, "extra_body")

    batch = models.ForeignKey(
        ModelCompletionBatch, on_delete=models.CASCADE, related_name="completions"
    )
    batch_custom_id = models.CharField(max_length=64)

    # The request, kept so that the exact body can be rebuilt.
    messages = models.JSONField()
    temperature = models.FloatField(null=True, blank=True)
    max_tokens = models.PositiveIntegerField(null=True, blank=True)
    response_format = models.JSONField(null=True, blank=True)
    tools = models.JSONField(null=True, blank=True)
    tool_choice = models.JSONField(null=True, blank=True)
    extra_body = models.JSONField(
        default=dict, blank=True, help_text="Other chat-completion parameters (top_p, seed, …)."
    )

    status = models.CharField(
        max_length=16, choices=CompletionStatus.choices, default=CompletionStatus.PENDING
    )
    raw_response = models.TextField(blank=True, default="", help_text="The assistant's text.")
    response_payload = models.JSONField(
        null=True, blank=True, help_text="The provider's full completion payload."
    )
    response_tool_calls = models.JSONField(null=True, blank=True)
    response_json = models.JSONField(
        null=True, blank=True, help_text="The answer parsed as JSON, for structured output."
    )
    finish_reason = models.CharField(max_length=32, blank=True, default="")

    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    total_tokens = models.PositiveIntegerField(null=True, blank=True)
    reasoning_tokens = models.PositiveIntegerField(null=True, blank=True)
    cached_tokens = models.PositiveIntegerField(null=True, blank=True)

    prompt_token_cost = _cost_field()
    output_token_cost = _cost_field()
    total_cost = _cost_field()

    failure_error = models.CharField(max_length=255, blank=True, default="")
    failure_reason = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)

    source_content_type = models.ForeignKey(
        ContentType, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    source_object_id = models.CharField(max_length=64, blank=True, default="")
    source = GenericForeignKey("source_content_type", "source_object_id")

    class Meta:
        verbose_name = "model completion"
        ordering = ("batch_id", "pk")
        constraints = (
            models.UniqueConstraint(
                fields=("batch", "batch_custom_id"), name="raif_completion_unique_custom_id"
            ),
        )
        indexes = (
            models.Index(fields=("batch", "status"), name="raif_completion_batch_status"),
            # One batch's completions in request order (admin list, exports): a page is read
            # off this index instead of walking the primary key past other batches' rows.
            models.Index(fields=("batch", "id"), name="raif_completion_batch_id"),
            # The completion list filtered by status across batches, newest first: without it,
            # a status found only in old batches made PostgreSQL walk the primary key past
            # every newer row (7.5 s at 5,000,000). Built concurrently on PostgreSQL (0005).
            models.Index(fields=("status", "id"), name="raif_completion_status_id"),
            models.Index(
                fields=("source_content_type", "source_object_id"), name="raif_completion_source"
            ),
        )

    def __str__(self) -> str:
        return f"{self.batch_custom_id} ({self.status})"

    def request_body(self, model: str) -> dict[str, Any]:
        """The chat-completions body this line sends, rebuilt from the stored fields."""
        body: dict[str, Any] = {"model": model, "messages": self.messages}
        for key in self.PARAMETER_FIELDS:
            value = getattr(self, key)
            if value is not None:
                body[key] = value
        body.update(self.extra_body or {})
        return body

    @property
    def cost(self) -> Decimal | None:
        return self.total_cost
