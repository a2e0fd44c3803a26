"""What must hold, checked against the emulator's own record (the provider's truth).

Each check returns ``(invariant, message)`` pairs; an empty list means it holds. The names are
the ones the tally and the report use:

- ``one provider batch``: every local batch that reached the provider has exactly one provider
  batch under its name (and its stored id is that batch's); one never submitted has none; no
  provider batch under our prefix is left without a local row unless the provider cancelled it;
- ``outcome``: every line of a harvested batch stores what the provider holds: succeeded ↔
  completed with the provider's text and tokens, and its cost (xAI's own figure; elsewhere a
  price-table cost, positive and the sum of its parts); failed, cancelled, expired or never
  served ↔ failed;
- ``stuck``: after settling, every batch is terminal with its results fetched, or was canceled
  before it was ever sent;
- ``totals``: a harvested batch's counts and cost equal the sum of its lines;
- ``lease``: no lease is left held by a run that ended (nor, after settling, by anyone);
- ``traceback``: no command or call ended in a traceback or an unexpected exception.
"""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any

from django.db.models import Sum
from django.utils import timezone

from raif_batches.clock import db_now
from raif_batches.models import TERMINAL_STATUSES, ModelCompletionBatch

from .providers import NOT_ANSWERED, ProviderModel, Remote, RemoteLine

Violation = tuple[str, str]


class View:
    """The provider's record as the invariants read it: a :class:`ProviderModel` bound to its
    emulator and to the history's custom id -> local batch name map."""

    def __init__(self, model: ProviderModel, emulator: Any, names: dict[str, str]) -> None:
        self.model, self.emulator, self.names = model, emulator, names

    def remotes(self) -> list[Remote]:
        return self.model.remotes(self.emulator, self.names)

    def lines(self, provider_batch_id: str) -> dict[str, RemoteLine] | None:
        return self.model.lines(self.emulator, provider_batch_id)


def provider_names(view: View) -> Counter[str]:
    return Counter(r.name for r in view.remotes() if r.name)


def duplicates(view: View) -> list[Violation]:
    """Checked after every step: a second paid batch is a violation the moment it exists."""
    found = []
    remotes = view.remotes()
    for name, count in Counter(r.name for r in remotes if r.name).items():
        if count > 1:
            cancelled = sum(1 for r in remotes if r.name == name and r.cancelled)
            found.append(
                (
                    "one provider batch",
                    f"{count} provider batches named {name} ({cancelled} cancelled)",
                )
            )
    return found


def leases_of(worker: str) -> list[Violation]:
    """Checked after every in-process run: the run released what it claimed."""
    held = list(ModelCompletionBatch.objects.filter(claimed_by=worker).values_list("pk", "status"))
    return [("lease", f"batch {pk} ({status}) still claimed by {worker}") for pk, status in held]


def one_provider_batch(
    view: View, deleted: dict[str, str], deleted_safely: set[str]
) -> list[Violation]:
    """``deleted``: names of rows deleted while sent and not harvested (their status then);
    ``deleted_safely``: rows deleted before sending or after harvesting."""
    found = []
    remotes = view.remotes()
    names = Counter(r.name for r in remotes if r.name)
    by_id = {r.id: r for r in remotes}
    rows = {b.provider_batch_name: b for b in ModelCompletionBatch.objects.all()}
    for name, batch in rows.items():
        have = names.get(name, 0)
        if batch.provider_batch_id:
            remote = by_id.get(batch.provider_batch_id)
            if remote is None or remote.name != name:
                found.append(("one provider batch", f"batch {batch.pk} stores unknown provider id"))
            elif have != 1:
                found.append(("one provider batch", f"batch {batch.pk}: {have} provider batches"))
        elif have:
            found.append(
                (
                    "one provider batch",
                    f"batch {batch.pk} ({batch.status}) has no provider id but the provider "
                    f"holds {have} batch(es) under its name",
                )
            )
    for remote in remotes:
        if remote.name in rows or not remote.name.startswith("raif_"):
            continue
        if remote.name in deleted_safely:
            continue
        status = deleted.get(remote.name)
        if status is None:
            found.append(("one provider batch", f"provider batch {remote.id} has no row"))
        elif not remote.cancelled:
            found.append(
                (
                    "one provider batch",
                    f"provider batch {remote.id} orphaned: its local row was deleted while "
                    f"{status} and nobody cancelled it",
                )
            )
    return found


def outcomes(view: View) -> list[Violation]:
    found = []
    harvested = ModelCompletionBatch.objects.filter(results_fetched_at__isnull=False)
    for batch in harvested.exclude(provider_batch_id=""):
        lines = view.lines(batch.provider_batch_id)
        if lines is None:
            continue  # reported by one_provider_batch
        for completion in batch.completions.all():
            line = lines.get(completion.batch_custom_id)
            where = f"batch {batch.pk} line {completion.batch_custom_id}"
            if line is None or not line.served:  # refused with its file, or never served
                if completion.status != "failed":
                    found.append(("outcome", f"{where}: {completion.status}, provider has none"))
                continue
            if line.state == "succeeded":
                if completion.status != "completed":
                    found.append(
                        (
                            "outcome",
                            f"{where}: stored {completion.status} "
                            f"({completion.failure_error}) but the provider succeeded it",
                        )
                    )
                    continue
                cost_ok = (
                    completion.total_cost == line.cost
                    if line.cost is not None
                    else completion.total_cost is not None
                    and completion.total_cost > 0
                    and completion.prompt_token_cost is not None
                    and completion.output_token_cost is not None
                    and completion.prompt_token_cost + completion.output_token_cost
                    == completion.total_cost
                )
                if (
                    completion.raw_response != line.text
                    or completion.prompt_tokens != line.prompt_tokens
                    or completion.completion_tokens != line.completion_tokens
                    or not cost_ok
                ):
                    found.append(("outcome", f"{where}: stored text/tokens/cost differ"))
            elif line.state in NOT_ANSWERED:
                if completion.status != "failed":
                    found.append(
                        ("outcome", f"{where}: stored {completion.status}, provider {line.state}")
                    )
            else:
                found.append(("outcome", f"{where}: harvested while the provider has it pending"))
    return found


def totals() -> list[Violation]:
    found = []
    for batch in ModelCompletionBatch.objects.filter(results_fetched_at__isnull=False):
        lines = batch.completions
        completed = lines.filter(status="completed").count()
        failed = lines.filter(status="failed").count()
        pending = lines.filter(status="pending").count()
        cost = lines.aggregate(total=Sum("total_cost"))["total"]
        where = f"batch {batch.pk} ({batch.status})"
        if pending:
            found.append(("totals", f"{where}: harvested with {pending} line(s) pending"))
        if (batch.total_cost or Decimal(0)) != (cost or Decimal(0)):
            found.append(("totals", f"{where}: total {batch.total_cost} != sum of lines {cost}"))
        counts = batch.request_counts or {}
        if batch.provider_batch_id and (
            counts.get("succeeded") != completed
            or counts.get("failed", 0) + counts.get("cancelled", 0) != failed
        ):
            found.append(
                (
                    "totals",
                    f"{where}: counts {counts} but {completed} completed / {failed} failed lines",
                )
            )
    return found


def settled() -> list[Violation]:
    found = []
    for batch in ModelCompletionBatch.objects.all():
        never_sent = (
            batch.status in ("pending", "canceled")
            and not batch.provider_batch_id
            and batch.create_attempted_at is None
        )
        if never_sent:
            continue
        if batch.status not in TERMINAL_STATUSES or batch.results_fetched_at is None:
            found.append(
                (
                    "stuck",
                    f"batch {batch.pk} is {batch.status}, results fetched: "
                    f"{batch.results_fetched_at is not None}; {batch.failure_error} "
                    f"{batch.failure_reason[:160]}",
                )
            )
    return found


def no_leases_after_settling() -> list[Violation]:
    now = max(timezone.now(), db_now())
    held = ModelCompletionBatch.objects.filter(claimed_until__gt=now).exclude(claimed_by="")
    return [("lease", f"batch {b.pk} still leased to {b.claimed_by}") for b in held]
