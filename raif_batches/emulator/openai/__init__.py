"""An emulator of OpenAI's Batch API (chat completions), as the provider serves it.

Files (``/v1/files``), batches (``/v1/batches``), their output and error files, OpenAI's error
envelope and key check, over the same HTTP server, faults and control surface as xAI's emulator
(:mod:`raif_batches.emulator.server`, :mod:`~raif_batches.emulator.faults`). Answers come from
:func:`raif_batches.emulator.completions.complete` (its ``[[emulator:...]]`` markers included),
reshaped to OpenAI's usage: reasoning tokens inside ``completion_tokens``, no cost.

Everything is lazy, as in xAI's state: a batch moves on (validation, progress, finalizing, the
end of a cancel, expiry) only when a call observes it, from the emulator clock and the number of
reads, so tests are deterministic and jump in time with :meth:`OpenAIEmulatorState.advance`.

The default config plays the fact sheet (``shared/openai-batch-api.md``).

Each quirk, its switch (default; fast profile):

- ``validating`` for some reads, counts all 0: ``validation_reads`` (2; 0).
- validation fails the whole batch at its first bad line (``errors.data``: code, line, message),
  and a nonexistent input file is accepted by create and fails there: always.
- ``finalizing`` with counts at 100%: ``finalizing_reads`` (1; 0).
- lines finish over several reads: ``share_per_read`` (0.25; off), or ``requests_per_read`` /
  ``seconds_per_request``.
- every line failed: ``completed`` with ``output_file_id: null``: always.
- ``""`` for an absent file id, on every other batch: ``empty_file_id`` (True; off).
- ``cancelling`` for some reads: ``cancel_reads`` (1; 0).
- after a cancel the counters read ``{total, 0, 0}``: ``cancel_counts_zero`` (True; off).
- a completed line of a cancelled batch in neither file: ``cancel_loses_lines`` (1; 0).
- finished lines of a cancelled batch in an output file (the reference), or only an error file
  (observed): ``cancel_output_file`` (True; True).
- expiry after 24 h, unfinished lines ``batch_expired``: ``expire_after_seconds`` (86400).
- the enqueued-token limit: created, then ``failed`` ``token_limit_exceeded``:
  ``enqueued_token_limit`` (2,000,000 prompt tokens per model; off).
- result rows in any order: ``shuffle_results`` (True; off).
- ``request_id`` as ``req_…`` or a UUID, alternately; files deleted after 30 days (then 404);
  409 on cancel of a finished batch; 401 ``invalid_api_key``; 404 for an unknown batch: always.
- usage on the batch (successful rows only): ``batch_usage`` (True; True).
- 2,000 creates per hour, then 429: ``max_creates_per_hour`` (2000).

Hostile switches, off by default: ``results_gone_status`` (the file content answers 404/410
once the batch has ended), ``page_overflow`` (list pages longer than asked),
``endless_pagination`` (``("list_batches",)``: ``has_more`` never false), ``missing_result_ids``
(lines left out of both files), ``line_quirks`` (malformed answers, see completions).

All public state methods take one ``RLock``; the threaded server calls them freely.

Layout: :mod:`.config` (routes, constants, the error envelope, the config), :mod:`.records`
(files, batches, lines), :mod:`.wire` (line checks, result rows, the batch object),
:mod:`.state` (the lazy world under its lock), :mod:`.server` (auth and dispatch).
"""

from __future__ import annotations

from .config import FAST_PROFILE, ROUTES, OpenAIApiError, OpenAIEmulatorConfig, error_envelope
from .records import Batch, Line, StoredFile
from .server import OpenAIEmulatorServer
from .state import OpenAIEmulatorState
from .wire import openai_shape

__all__ = [
    "FAST_PROFILE",
    "ROUTES",
    "Batch",
    "Line",
    "OpenAIApiError",
    "OpenAIEmulatorConfig",
    "OpenAIEmulatorServer",
    "OpenAIEmulatorState",
    "StoredFile",
    "error_envelope",
    "openai_shape",
]
