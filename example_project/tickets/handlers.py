"""Completion handlers of the example app: results written back to the tickets."""

from __future__ import annotations

from raif_batches.models import ModelCompletionBatch

from .models import Ticket

LABELS = ["billing", "bug", "feature", "account", "other"]

#: The structured output each classification asks for.
LABEL_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "ticket_label",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"label": {"type": "string", "enum": LABELS}},
            "required": ["label"],
            "additionalProperties": False,
        },
    },
}


def write_labels(batch: ModelCompletionBatch) -> None:
    """Called once, after every result of ``batch`` is stored."""
    done = batch.completions.filter(status="completed", source_object_id__gt="")
    updates = []
    for completion in done.prefetch_related("source").iterator(chunk_size=1000):
        ticket = completion.source
        if isinstance(ticket, Ticket) and completion.response_json:
            ticket.label = completion.response_json["label"]
            updates.append(ticket)
    Ticket.objects.bulk_update(updates, ["label"], batch_size=1000)
