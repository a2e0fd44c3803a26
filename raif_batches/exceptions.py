"""Errors raised by raif_batches.

Each error is also the Django or standard type a caller already expects, so that generic
handlers keep working: bad input is a ``ValueError``, bad configuration is an
``ImproperlyConfigured``, and an answer from a provider is a ``requests.HTTPError``.
"""

from __future__ import annotations

from typing import Any

import requests
from django.core.exceptions import ImproperlyConfigured


class RaifBatchesError(Exception):
    """Base class of every error raised by raif_batches."""


class BatchConfigurationError(RaifBatchesError, ImproperlyConfigured):
    """A setting is missing or malformed. The message names the setting to fix."""


class InvalidBatchRequest(RaifBatchesError, ValueError):
    """Input to :func:`raif_batches.create_batch` is invalid; nothing was created."""

    def __init__(self, message: str, *, custom_id: str | None = None, index: int | None = None):
        self.custom_id = custom_id
        self.index = index
        where = ""
        if custom_id is not None:
            where = f"request {custom_id!r}: "
        elif index is not None:
            where = f"request #{index}: "
        super().__init__(f"{where}{message}")


class BatchStateError(RaifBatchesError, ValueError):
    """The batch is not in a state that allows the operation (e.g. submitting an ended batch)."""


class BatchInFlight(BatchStateError):
    """A delete was refused: the batch is at the provider, or its paid results are unread.

    Deleting it would leave a paid provider batch running with no owner (or throw away results
    already billed). Cancel it, let it settle and fetch its results, then delete it.
    """


class BatchBusy(BatchStateError):
    """Another worker holds this batch's lease."""


class DuplicateSubmission(BatchStateError):
    """A second provider batch was found for a batch; it was cancelled and recorded."""


class ProviderError(RaifBatchesError, requests.HTTPError):
    """The provider answered with an error, or could not be reached within the retry policy.

    ``kind`` is a few words that name the failure (kept in ``failure_error``); ``str(error)`` is
    the provider's own message (kept in ``failure_reason``). The API key never appears in either.
    """

    kind = "provider error"
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        payload: Any = None,
        response: requests.Response | None = None,
    ):
        super().__init__(message, response=response)
        self.status_code = status_code
        self.payload = payload

    @property
    def one_line(self) -> str:
        text = " ".join(str(self).split())
        return f"{self.kind}: {text}"


class ProviderAuthenticationError(ProviderError):
    """The provider rejected the API key (xAI answers this with HTTP 400, not 401).

    ``provider`` names whose key it was, so that the message names the setting to fix.
    """

    kind = "API key rejected"
    provider = ""


class ProviderNotFound(ProviderError):
    kind = "not found at provider"


class ProviderRejected(ProviderError):
    """A 4xx other than authentication: the request itself was refused and will be again."""

    kind = "request rejected by provider"


class ProviderUnavailable(ProviderError):
    """Transient faults (timeouts, dropped connections, 5xx, 429) outlasted the retry policy."""

    kind = "provider unavailable"
    retryable = True


class UnreadableAnswer(ProviderUnavailable):
    """A 2xx (or 3xx) whose body is empty, not JSON, or not of the expected shape: a provider
    fault, retried like a 5xx for idempotent calls. On a create it is an
    :class:`AmbiguousSubmission` instead: the batch may have been created."""

    kind = "unreadable answer from provider"


class AnswerTooLarge(ProviderUnavailable):
    """An answer bigger than ``MAX_RESPONSE_BYTES``: reading it would break the memory bound.
    Listings ask again for smaller pages; anything else gives up at once."""

    kind = "provider answer too large"


class AmbiguousSubmission(ProviderError):
    """A non-idempotent call (batch create) may or may not have reached the provider.

    It is never retried blindly: the batch stays in ``submitting`` and is reconciled later by
    looking the batch up by its unique name.
    """

    kind = "submission outcome unknown"
    retryable = True
