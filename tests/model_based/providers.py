"""Each provider as the randomized histories see it: how to read its emulator's record, what
lasting quirks it can switch on, and how its clock may move.

The invariants compare our rows with the provider's own record, which each emulator keeps in
its own shape. :class:`ProviderModel` reads that record into one shape (:class:`Remote`,
:class:`RemoteLine`) straight from the emulator's state, never through our client: xAI names a
batch itself, OpenAI carries our name in ``metadata``, and Anthropic has no name at all, so an
Anthropic batch is ours when its custom ids are a local batch's (each history gives every batch
ids of its own, recorded when the batch is created and kept after a delete).

The provider's clock: xAI's and OpenAI's lost creates are found by name, so their emulators'
clocks may jump by days (expiry, slow progress). Anthropic's are found by creation time, which
the product documents as needing the provider's clock within ``RECONCILE_CLOCK_MARGIN`` of the
database's; a provider clock a day ahead is outside that promise, so Anthropic's histories move
its clock by seconds only (within the margin in all) and make batches expire early instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .catalogue import SWITCHES as XAI_SWITCHES
from .catalogue import Switch

TICK = Decimal("1e-10")
#: Outcomes of a line that never produced an answer: stored as failed.
NOT_ANSWERED = ("failed", "cancelled", "expired")


@dataclass(frozen=True)
class RemoteLine:
    """A line as the provider holds it. ``served``: whether its results carry it at all."""

    state: str  # pending | succeeded | failed | cancelled | expired
    served: bool = True
    text: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost: Decimal | None = None  # only where the provider reports one (xAI)


@dataclass(frozen=True)
class Remote:
    id: str
    name: str  # the local batch's provider_batch_name, or "" when not ours
    cancelled: bool


def _missing(ids: list[str], draw: int) -> dict[str, Any]:
    return {"missing_result_ids": {ids[draw % len(ids)]} if ids else set()}


@dataclass
class ProviderModel:
    """The base is xAI; OpenAI and Anthropic override what differs."""

    name: str = "xai"
    switches: list[Switch] = field(default_factory=lambda: list(XAI_SWITCHES))
    advances: tuple[int, ...] = (1, 30, 600, 3600, 86400)
    settle_advance: int = 3600
    #: At most this many emulator seconds of jumps in a history (None: unbounded).
    clock_budget: float | None = None

    def prepare(self, config: Any, cancel_revert_after: float) -> None:
        config.cancel_revert_after = cancel_revert_after

    def remotes(self, emulator: Any, names: dict[str, str]) -> list[Remote]:
        """``names``: custom id -> local batch name, for providers without a batch name."""
        return [
            Remote(b.batch_id, b.name, b.cancel_time is not None)
            for b in list(emulator.state.batches.values())
        ]

    def lines(self, emulator: Any, provider_batch_id: str) -> dict[str, RemoteLine] | None:
        """The lines of one provider batch brought up to the provider's clock (None: no such
        batch); a line absent from the map never ran (the provider refused the file)."""
        state = emulator.state
        remote = state.batches.get(provider_batch_id)
        if remote is None:
            return None
        state.get_batch(provider_batch_id)
        return {line.custom_id: self.line(state, remote, line) for line in remote.lines}

    def line(self, state: Any, remote: Any, line: Any) -> RemoteLine:
        """One line of the emulator's record, in the invariants' shape."""
        if line.state != "succeeded":
            return RemoteLine(line.state)
        body = state._body(remote, line)
        outcome = state._complete(
            remote, line.custom_id, body, line.finish_time or state.now(), line.cache_hit
        )
        completion = outcome.completion
        assert completion is not None
        usage = completion["usage"]
        return RemoteLine(
            "succeeded",
            text=completion["choices"][0]["message"]["content"],
            prompt_tokens=usage["prompt_tokens"],
            completion_tokens=usage["completion_tokens"],
            cost=Decimal(usage["cost_in_usd_ticks"]) * TICK,
        )


class OpenAIModel(ProviderModel):
    def prepare(self, config: Any, cancel_revert_after: float) -> None:
        pass

    def remotes(self, emulator: Any, names: dict[str, str]) -> list[Remote]:
        return [
            Remote(b.id, b.name, b.status in ("cancelling", "cancelled"))
            for b in list(emulator.state.batches.values())
        ]

    def line(self, state: Any, remote: Any, line: Any) -> RemoteLine:
        if line.state != "succeeded" or line.completion is None:
            return RemoteLine(line.state, served=line.in_files)
        usage = line.completion["usage"]
        return RemoteLine(
            "succeeded",
            served=line.in_files,
            text=line.completion["choices"][0]["message"]["content"],
            prompt_tokens=usage["prompt_tokens"],
            completion_tokens=usage["completion_tokens"],
        )


class AnthropicModel(ProviderModel):
    def prepare(self, config: Any, cancel_revert_after: float) -> None:
        pass

    def remotes(self, emulator: Any, names: dict[str, str]) -> list[Remote]:
        found = []
        for b in list(emulator.state.batches.values()):
            owners = {names.get(line.custom_id, "") for line in b.lines}
            name = owners.pop() if len(owners) == 1 else ""
            found.append(Remote(b.id, name, b.cancel_initiated_at is not None))
        return found

    def line(self, state: Any, remote: Any, line: Any) -> RemoteLine:
        result = line.result or {}
        if line.state != "succeeded" or result.get("type") != "succeeded":
            return RemoteLine(line.state)
        message = result["message"]
        usage = message["usage"]
        return RemoteLine(
            "succeeded",
            text="".join(b["text"] for b in message["content"] if b.get("type") == "text"),
            prompt_tokens=usage["input_tokens"]
            + usage["cache_creation_input_tokens"]
            + usage["cache_read_input_tokens"],
            completion_tokens=usage["output_tokens"],
        )


OPENAI_SWITCHES = [
    Switch("validation takes 4 reads", {"validation_reads": 4}),
    Switch("one line per read", {"requests_per_read": 1}),
    Switch("one line per 5 emulator seconds", {"seconds_per_request": 5.0}),
    Switch("transient failures 20%", {"transient_failure_rate": 0.2}),
    Switch("finalizing takes 3 reads", {"finalizing_reads": 3}),
    Switch("cancel loses 2 finished lines", {"cancel_loses_lines": 2}),
    Switch("cancel counters read zero", {"cancel_counts_zero": True}),
    Switch("a line in neither file", {}, pick=_missing),
    Switch("list pages overflow their limit by 2", {"page_overflow": 2}),
    Switch("list pages of 1", {"default_page_size": 1, "max_page_size": 1}),
    Switch("batches expire after 10 emulator minutes", {"expire_after_seconds": 600.0}),
]
ANTHROPIC_SWITCHES = [
    Switch("one line per read", {"requests_per_read": 1}),
    Switch("one line per 5 emulator seconds", {"seconds_per_request": 5.0}),
    Switch("transient failures 20%", {"transient_failure_rate": 0.2}),
    Switch("live counts", {"live_counts": True}),
    Switch("flat errors", {"flat_errors": True}),
    Switch("blank result lines", {"blank_result_lines": True}),
    Switch("2 garbage result lines", {"garbage_result_lines": 2}),
    Switch("cancel lets 3 lines finish", {"cancel_finishes": 3}),
    Switch("cancel takes 3 reads", {"cancel_reads": 3}),
    Switch("list pages overflow their limit by 2", {"page_overflow": 2}),
    Switch("list pages of 1", {"max_page_size": 1}),
    Switch("batches expire after 20 emulator seconds", {"expire_after_seconds": 20.0}),
]

MODELS: dict[str, ProviderModel] = {
    "xai": ProviderModel(),
    "openai": OpenAIModel("openai", OPENAI_SWITCHES),
    "anthropic": AnthropicModel(
        "anthropic",
        ANTHROPIC_SWITCHES,
        advances=(1, 5, 30),
        settle_advance=0,
        clock_budget=60.0,
    ),
}
