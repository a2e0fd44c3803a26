"""The OpenAI emulator's records: stored files, batches and their lines."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class StoredFile:
    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: float
    expires_at: float | None
    batch_id: str | None = None  # for an output or error file: its batch

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": int(self.created_at),
            "expires_at": None if self.expires_at is None else int(self.expires_at),
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }


@dataclass(eq=False, slots=True)
class Line:
    """One request of a batch: a span into the input file, its outcome once it ran."""

    custom_id: str
    span: tuple[int, int]
    number: int
    state: str = "pending"  # pending | succeeded | failed | cancelled | expired
    completion: dict[str, Any] | None = None
    error: str | None = None
    in_files: bool = True  # False: left out of both files (a quirk or missing_result_ids)


@dataclass(eq=False)
class Batch:
    id: str
    input_file_id: str
    endpoint: str
    metadata: dict[str, str]
    created_at: float
    expires_at: float
    seq: int
    status: str = "validating"
    model: str = ""
    source: bytes = b""
    lines: list[Line] = field(default_factory=list)
    reads_left: int = 0  # reads left in the current waiting phase
    next_pending: int = 0
    credit: float = 0.0
    last_progress: float = 0.0
    errors: list[dict[str, Any]] = field(default_factory=list)
    output_file_id: str | None = None
    error_file_id: str | None = None
    times: dict[str, float] = field(default_factory=dict)  # in_progress_at, finalizing_at, ...
    prompt_estimate: int = 0
    systems_seen: set[str] = field(default_factory=set)  # for prompt-cache hits

    @property
    def name(self) -> str:
        """The local batch's unique name from the metadata: what tests shared with xAI's
        emulator read as ``batch.name``."""
        return str(self.metadata.get("raif_batch_name", ""))

    @property
    def batch_id(self) -> str:
        """``id``, under the name xAI's emulator uses."""
        return self.id

    @property
    def custom_ids(self) -> list[str]:
        return [line.custom_id for line in self.lines]
