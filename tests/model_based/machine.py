"""The model-based test: random histories of batch work against a hostile provider and a
hostile host, with invariants checked after every step and once the history has settled.

A history is a sequence of Hypothesis rules: create a batch (some lines the emulator fails),
run ``submit_batches`` / ``poll_batches`` (forced or not) / ``harvest_batches`` /
``cancel_batch``, advance the provider's clock, inject a provider fault or switch on a quirk,
delete a batch, and, on PostgreSQL, start real processes: several at once, killed with SIGKILL
at a random point of their conversation with the provider, with a host clock that is off, slowed
past their lease, or with their database connection terminated. Commands run in this process
go through ``call_command`` so that "one line, non-zero exit" is checked as the user sees it.

Why the rules are what they are: each is something a real deployment does (cron runs,
operators, NTP drift, OOM kills, a database failover), and the provider side is everything the
emulator can play. Nothing here knows how the product works; the invariants read the rows and
compare them with the emulator's own record.

Settling: clear every fault and quirk, move the provider's clock on, wait out leases and grace
periods in real time (they are seconds here), then run ``submit`` and ``poll(force=True)`` a
bounded number of rounds. What is still not harvested then is stuck.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from io import StringIO
from typing import Any, ClassVar

from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.db.models import Max, ProtectedError
from django.utils import timezone
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from raif_batches import create_batch
from raif_batches.emulator import Fault
from raif_batches.exceptions import BatchStateError
from raif_batches.models import WORKER_ID, ModelCompletion, ModelCompletionBatch
from raif_batches.polling import poll, submit

from . import invariants, tally
from .catalogue import (
    CANCEL_REVERT_AFTER,
    ENDPOINTS,
    READ_TIMEOUT,
    SETTINGS,
    TEMPLATES,
)
from .providers import MODELS, ProviderModel
from .runners import Outcome, Run, run_all, terminate_backends

MAX_BATCHES = 4
#: Real-process rules per history (each costs a second or more of real time), and of those,
#: slow workers (each waits out a lease).
MAX_PROCESS_RULES = 3
MAX_SLOW_WORKERS = 1
SETTLE_ROUNDS = 8
#: Seconds a settling round that moved nothing waits before the next.
SETTLE_PAUSE = 0.25
SKEWS = (0.0, 0.0, 130.0, 400.0, -400.0)
#: The command whose run calls an endpoint first.
MEETS = {
    "create_batch": "submit_batches",
    "upload_file": "submit_batches",
    "list_batches": "submit_batches",
    "get_batch": "poll_batches --force",
    "list_results": "poll_batches --force",
    "cancel_batch": "cancel",
}
IN_PROCESS_COMMANDS = ("submit_batches", "poll_batches --force", "harvest_batches", "cancel")
COMMANDS = ("submit_batches", "poll_batches --force", "poll_batches", "harvest_batches", "cancel")
#: Invariants whose violations are counted but do not stop the history (comma-separated names,
#: e.g. ``RAIF_RANDOMIZED_TOLERATE=outcome,traceback``, or ``*`` for all): a long run then finds
#: every kind instead of stopping at the first.
TOLERATE = {
    name.strip() for name in os.environ.get("RAIF_RANDOMIZED_TOLERATE", "").split(",") if name
}
#: Errors that a delete may raise once deleting in-flight batches is refused.
DELETE_REFUSALS = (BatchStateError, ProtectedError, PermissionDenied, ValidationError, ValueError)


class Violation(AssertionError):
    pass


def wipe_tables() -> None:
    """Empty both tables without the ORM (a fixed product may refuse deleting in-flight rows)."""
    tables = [ModelCompletion._meta.db_table, ModelCompletionBatch._meta.db_table]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE")
        else:
            for table in tables:
                cursor.execute(f"DELETE FROM {table}")


class BatchHistory(RuleBasedStateMachine):
    """In-process rules only (any database). :class:`ProcessHistory` adds real processes."""

    emulator: ClassVar[Any] = None  # set by the test before running
    model: ClassVar[ProviderModel] = MODELS["xai"]  # the provider, set with the emulator
    processes: ClassVar[bool] = False

    def __init__(self) -> None:
        super().__init__()
        wipe_tables()
        state = self.emulator.state
        state.reset()
        self.model.prepare(state.config, CANCEL_REVERT_AFTER)
        self.base_config = copy.deepcopy(state.config)
        self.names: dict[str, str] = {}  # custom id -> local batch name, kept after deletes
        self.view = invariants.View(self.model, self.emulator, self.names)
        self.clock_moved = 0.0
        self.steps: list[str] = []
        self.batch_pks: list[int] = []
        self.custom_ids: list[str] = []
        self.deleted: dict[str, str] = {}
        self.deleted_safely: set[str] = set()
        self.faults: list[tuple[str, Fault]] = []
        self.violated: set[str] = set()
        self.created = 0
        tally.count("histories")
        tally.count(f"histories on {self.model.name}")

    # -- bookkeeping -----------------------------------------------------------------------------
    def step(self, text: str) -> None:
        self.steps.append(text)
        tally.count("steps")

    def violation(self, invariant_name: str, message: str) -> None:
        if invariant_name not in self.violated:
            self.violated.add(invariant_name)
            tally.violation(invariant_name, self.steps, message)
        if invariant_name not in TOLERATE and "*" not in TOLERATE:
            raise Violation(f"[{invariant_name}] {message}")

    def check(self, found: list[tuple[str, str]]) -> None:
        for name, message in found:
            self.violation(name, message)

    def pick(self, index: int) -> int | None:
        return self.batch_pks[index % len(self.batch_pks)] if self.batch_pks else None

    def command(self, *args: str) -> None:
        """A management command in this process: a CommandError is its one-line failure."""
        try:
            call_command(*args, stdout=StringIO(), stderr=StringIO())
        except CommandError as error:
            tally.count(f"one-line failure: {args[0]}")
            self.steps[-1] += f"  -> {str(error)[:100]}"
        except Exception as error:
            self.violation("traceback", f"{' '.join(args)} raised {type(error).__name__}: {error}")
        self.check(invariants.leases_of(WORKER_ID))

    # -- rules: work ---------------------------------------------------------------------------
    @initialize(good=st.integers(1, 4), bad=st.integers(0, 2), sent=st.booleans())
    def first_batch(self, good: int, bad: int, sent: bool) -> None:
        self.create(good, bad)
        if sent:
            self.submit_all()

    @precondition(lambda self: self.created < MAX_BATCHES)
    @rule(good=st.integers(1, 4), bad=st.integers(0, 2))
    def create(self, good: int, bad: int) -> None:
        self.created += 1
        number = self.created
        self.step(f"create batch #{number}: {good} good + {bad} failing lines")
        requests: list[dict[str, Any]] = [
            {
                "custom_id": f"b{number}-ok-{i}",
                "messages": [{"role": "user", "content": f"Question {i} of batch {number}"}],
                "max_tokens": 64,
            }
            for i in range(good)
        ]
        requests += [
            {
                "custom_id": f"b{number}-bad-{i}",
                "messages": [
                    {"role": "user", "content": f"[[emulator:error Line {i} refused by policy]]"}
                ],
                "max_tokens": 64,
            }
            for i in range(bad)
        ]
        batch = create_batch(provider=self.model.name, requests=requests)
        self.batch_pks.append(batch.pk)
        self.custom_ids += [r["custom_id"] for r in requests]
        self.names.update(
            dict.fromkeys(self.custom_ids[-len(requests) :], batch.provider_batch_name)
        )

    @rule()
    def submit_all(self) -> None:
        self.step("submit_batches")
        self.command("submit_batches")

    @precondition(lambda self: self.batch_pks)
    @rule(index=st.integers(0, 7))
    def submit_one(self, index: int) -> None:
        pk = self.pick(index)
        self.step(f"submit_batches --batch {pk}")
        self.command("submit_batches", "--batch", str(pk))

    @rule(force=st.booleans())
    def poll(self, force: bool) -> None:
        self.step("poll_batches" + (" --force" if force else ""))
        self.command("poll_batches", *(["--force"] if force else []))

    @rule()
    def harvest(self) -> None:
        self.step("harvest_batches")
        self.command("harvest_batches")

    @precondition(lambda self: self.batch_pks)
    @rule(index=st.integers(0, 7))
    def cancel(self, index: int) -> None:
        pk = self.pick(index)
        self.step(f"cancel_batch {pk}")
        tally.count("cancels")
        self.command("cancel_batch", str(pk))

    @rule(choice=st.integers(0, 4))
    def advance(self, choice: int) -> None:
        seconds = self.model.advances[choice % len(self.model.advances)]
        budget = self.model.clock_budget
        if budget is not None and self.clock_moved + seconds > budget:
            return  # the provider's clock stays within what the product is promised
        self.clock_moved += seconds
        self.step(f"provider clock +{seconds}s")
        self.emulator.state.advance(seconds)

    # -- rules: the provider's faults and quirks -----------------------------------------------
    @rule(template=st.sampled_from(TEMPLATES), endpoint=st.sampled_from(ENDPOINTS))
    def fault(self, template: Any, endpoint: str | None) -> None:
        if endpoint not in self.emulator.endpoints:
            endpoint = None  # an endpoint this provider lacks: whichever call comes next
        recipe = template.on(endpoint)
        self.step(f"fault: {recipe.name}")
        kind = (
            recipe.kind
            if recipe.kind not in ("status", "raw")
            else f"{recipe.kind} {recipe.status}"
        )
        tally.count(f"fault injected: {kind}")
        self.faults.append((kind, self.emulator.add_fault(recipe.build())))

    @rule(
        template=st.sampled_from(TEMPLATES),
        endpoint=st.sampled_from(ENDPOINTS),
        command=st.sampled_from(IN_PROCESS_COMMANDS),
    )
    def fault_then_command(self, template: Any, endpoint: str | None, command: str) -> None:
        """A fault, then at once the command that calls its endpoint (a fault left for later
        may be cleared by the settling before any call meets it); ``command`` serves a fault
        on whichever call comes next."""
        self.fault(template, endpoint)
        if endpoint not in self.emulator.endpoints:
            endpoint = None
        args = self.args_of(MEETS.get(endpoint, command))
        self.step(" ".join(args))
        self.command(*args)

    def args_of(self, command: str) -> tuple[str, ...]:
        if command == "cancel":
            live = ModelCompletionBatch.objects.exclude(status__in=("canceled", "ended", "failed"))
            pk = live.values_list("pk", flat=True).first() or (self.batch_pks or [1])[0]
            return ("cancel_batch", str(pk))
        return tuple(command.split())

    @rule(index=st.integers(0, 63), draw=st.integers(0, 20))
    def quirk(self, index: int, draw: int) -> None:
        switch = self.model.switches[index % len(self.model.switches)]
        self.step(f"quirk: {switch.name}")
        tally.count(f"quirk: {switch.name}")
        switch.apply(self.emulator.state.config, self.custom_ids, draw)

    # -- rules: our own side ---------------------------------------------------------------------
    @precondition(lambda self: self.batch_pks)
    @rule(index=st.integers(0, 7))
    def delete(self, index: int) -> None:
        pk = self.pick(index)
        self.step(f"delete batch {pk} (ORM)")
        self.delete_batch(pk)

    def delete_batch(self, pk: int | None) -> None:
        row = ModelCompletionBatch.objects.filter(pk=pk).first()
        if row is None:
            return
        risky = row.results_fetched_at is None and (
            bool(row.provider_batch_id)
            or row.create_attempted_at is not None
            or row.status == "submitting"
        )
        try:
            row.delete()
        except DELETE_REFUSALS as error:
            tally.count("deletes refused")
            self.steps[-1] += f"  -> refused: {str(error)[:80]}"
            self.deleted[row.provider_batch_name] = f"{row.status} (delete refused)"
            return
        except Exception as error:
            self.violation(
                "traceback", f"delete of batch {pk} raised {type(error).__name__}: {error}"
            )
            return
        tally.count("deletes done" + (" (in flight)" if risky else ""))
        if pk in self.batch_pks:
            self.batch_pks.remove(pk)
        if risky:
            self.deleted[row.provider_batch_name] = row.status
        else:
            self.deleted_safely.add(row.provider_batch_name)

    # -- invariants ------------------------------------------------------------------------------
    @invariant()
    def no_second_provider_batch(self) -> None:
        self.check(invariants.duplicates(self.view))

    @invariant()
    def harvested_totals(self) -> None:
        self.check(invariants.totals())

    def teardown(self) -> None:
        try:
            if "*" in TOLERATE or self.violated <= TOLERATE:
                self.settle()
        finally:
            for kind, fault in self.faults:
                if fault.fired:
                    tally.count(f"fault fired: {kind}", fault.fired)

    def settle(self) -> None:
        state = self.emulator.state
        state.clear_faults()
        for f in dataclasses.fields(state.config):
            setattr(state.config, f.name, copy.deepcopy(getattr(self.base_config, f.name)))
        self.step("settle")
        waits = float(SETTINGS["RECONCILE_AFTER_SECONDS"]), float(SETTINGS["CANCEL_GRACE_SECONDS"])
        # Rounds until every batch has settled. A round that moved something in the database
        # is followed at once by the next; one that did not sleeps a little (the emulator may
        # move batches on with reads that change nothing here, or a reconcile or a cancel's
        # grace is still running), within as much time in all as SETTLE_ROUNDS full waits.
        budget = SETTLE_ROUNDS * (max(waits) + 0.1)
        before: list[tuple[Any, ...]] | None = None
        for _ in range(SETTLE_ROUNDS * 25):
            if self.model.settle_advance:
                state.advance(self.model.settle_advance)
            self.wait_for_leases()
            for run in (submit, lambda: poll(force=True)):
                try:
                    run()
                except Exception as error:
                    self.violation("traceback", f"settling raised {type(error).__name__}: {error}")
            if not invariants.settled():
                break
            after = _progress_mark()
            if after == before:
                if budget <= 0:
                    break
                budget -= SETTLE_PAUSE
                time.sleep(SETTLE_PAUSE)
            before = after
        tally.count("histories settled")
        tally.count(f"histories settled on {self.model.name}")
        self.check(invariants.duplicates(self.view))
        self.check(invariants.one_provider_batch(self.view, self.deleted, self.deleted_safely))
        self.check(invariants.settled())
        self.check(invariants.outcomes(self.view))
        self.check(invariants.totals())
        self.check(invariants.no_leases_after_settling())

    def wait_for_leases(self) -> None:
        """Sleep until every lease has run out, at most one lease length (a lease written from
        a fast clock may reach further; that is the skew's violation to show, not to wait out)."""
        until = ModelCompletionBatch.objects.aggregate(until=Max("claimed_until"))["until"]
        if until is None:
            return
        seconds = (until - timezone.now()).total_seconds()
        time.sleep(min(max(0.0, seconds) + 0.05, float(SETTINGS["LEASE_SECONDS"]) + 0.5))


def _progress_mark() -> list[tuple[Any, ...]]:
    """What a settling round can move: every batch's status, provider id, counts, results
    and failure."""
    rows = ModelCompletionBatch.objects.order_by("pk").values_list(
        "pk", "status", "provider_batch_id", "request_counts", "results_fetched_at", "failure_error"
    )
    return [(*row[:3], repr(row[3]), *row[4:]) for row in rows]


class ProcessHistory(BatchHistory):
    """Adds real ``manage.py`` processes (PostgreSQL only): concurrency, crashes, skewed clocks,
    slow workers past their lease, and killed database connections."""

    processes = True

    def __init__(self) -> None:
        super().__init__()
        self.process_rules = 0
        self.slow_workers = 0

    def can_start(self) -> bool:
        return self.process_rules < MAX_PROCESS_RULES

    def outcome_of(self, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            tally.count("processes run")
            label = outcome.run.label()
            if outcome.killed and outcome.returncode == -9:
                tally.count("crashes (SIGKILL)")
            if outcome.hung:
                self.violation("stuck", f"{label} hung for {60}s")
            if "Traceback" in outcome.stderr:
                last = outcome.stderr.strip().splitlines()[-1]
                self.violation("traceback", f"{label} ended in a traceback: {last[:200]}")
            elif outcome.returncode not in (0, -9):
                tally.count(f"one-line failure: {outcome.run.args[0]}")
        self.check(invariants.duplicates(self.view))

    @precondition(lambda self: self.can_start())
    @rule(
        runs=st.lists(
            st.tuples(
                st.sampled_from(COMMANDS),
                st.sampled_from(SKEWS),
                st.none() | st.integers(1, 8),
            ),
            min_size=1,
            max_size=2,
        ),
        delete_index=st.none() | st.integers(0, 7),
    )
    def processes_run(
        self, runs: list[tuple[str, float, int | None]], delete_index: int | None
    ) -> None:
        self.process_rules += 1
        planned = [Run(self.args_of(c), skew=s, kill_after_calls=k) for c, s, k in runs]
        self.step(
            "processes: "
            + " || ".join(run.label() for run in planned)
            + (f" || delete batch {self.pick(delete_index)}" if delete_index is not None else "")
        )
        if len(planned) > 1:
            tally.count("concurrent runs")
        tally.count("skewed processes", sum(1 for run in planned if run.skew))
        during = None
        if delete_index is not None:
            during = lambda: self.delete_batch(self.pick(delete_index))  # noqa: E731
        self.outcome_of(run_all(self.emulator, planned, SETTINGS, during=during))

    @precondition(lambda self: self.can_start() and self.slow_workers < MAX_SLOW_WORKERS)
    @rule(
        command=st.sampled_from(("submit_batches", "poll_batches --force")),
        lease=st.sampled_from((1.5, 2.5)),
        slow_calls=st.integers(2, 6),
        skew=st.sampled_from(SKEWS),
    )
    def slow_worker(self, command: str, lease: float, slow_calls: int, skew: float) -> None:
        """A worker whose calls are slow (each under the timeout) until its lease has run out,
        while a second worker (this process) runs the same command once the lease is over."""
        self.step(
            f"slow worker: {command} [lease {lease}s, {slow_calls} calls of "
            f"{READ_TIMEOUT * 0.8:g}s, clock {skew:+g}s] then the same here"
        )
        tally.count("slow workers")
        self.process_rules += 1
        self.slow_workers += 1
        self.emulator.add_fault(Fault(None, "latency", delay=READ_TIMEOUT * 0.8, times=slow_calls))
        run = Run(tuple(command.split()), skew=skew, settings={"LEASE_SECONDS": lease})

        def second_worker() -> None:
            time.sleep(lease + 0.1)
            self.command(*command.split())

        self.outcome_of(run_all(self.emulator, [run], SETTINGS, during=second_worker))

    @precondition(lambda self: self.can_start())
    @rule(command=st.sampled_from(("submit_batches", "poll_batches --force", "harvest_batches")))
    def kill_db_connection(self, command: str) -> None:
        self.step(f"kill the database connection of: {command}")
        self.process_rules += 1
        app = "raif_randomized_victim"
        self.emulator.add_fault(Fault(None, "latency", delay=0.3, times=2))

        def cut() -> None:
            if terminate_backends(app):
                tally.count("database connections killed")

        run = Run(tuple(command.split()), app_name=app)
        self.outcome_of(run_all(self.emulator, [run], SETTINGS, during=cut))
