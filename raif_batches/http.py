"""All HTTP goes through here: one session factory, timeouts, safe retries, error mapping.

Only idempotent calls are retried. A call that creates something at the provider (a batch) is
sent once; if its answer is lost, :class:`~raif_batches.exceptions.AmbiguousSubmission` tells
the caller to reconcile instead of trying again.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from .conf import RetryPolicy, request_timeout
from .exceptions import (
    AmbiguousSubmission,
    ProviderAuthenticationError,
    ProviderError,
    ProviderNotFound,
    ProviderRejected,
    ProviderUnavailable,
)

logger = logging.getLogger("raif_batches.http")

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
# ChunkedEncodingError: the connection closed in the middle of the answer's body.
TRANSIENT_EXCEPTIONS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)
REDACTED = "[redacted]"


def build_session(pool_size: int = 16) -> requests.Session:
    """A keep-alive session whose connection pool fits the poller's concurrency."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def redact(text: str, secret: str | None) -> str:
    if secret and secret in text:
        return text.replace(secret, REDACTED)
    return text


def scrub_request(request: Any) -> None:
    """Blank the key in a sent request's headers: errors keep the request (``error.request``,
    ``error.response.request``), and error reporters show it."""
    headers = getattr(request, "headers", None)
    if headers is not None and "Authorization" in headers:
        headers["Authorization"] = f"Bearer {REDACTED}"


def retry_after_seconds(response: requests.Response | None) -> float | None:
    """Seconds asked by ``Retry-After`` (a number or an HTTP date); None when absent or bad."""
    if response is None:
        return None
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None  # unreadable: fall back to our own backoff
    return max(parsed.timestamp() - time.time(), 0.0)


class ApiClient:
    """A JSON API at ``base_url`` with a bearer key; provider modules build on it.

    ``classify_error`` may be overridden to turn a provider's error body into the right
    :class:`ProviderError` subclass.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        session: requests.Session | None = None,
        retry: RetryPolicy | None = None,
        timeout: tuple[float, float] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.session = session or build_session()
        self.retry = retry or RetryPolicy.from_settings()
        self.timeout = timeout or request_timeout()
        self._sleep = sleep

    def __repr__(self) -> str:  # never show the key
        return f"<{type(self).__name__} {self.base_url}>"

    def request(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        data: Any = None,
        files: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Send one call and return its decoded JSON, retrying only when that is safe."""
        url = f"{self.base_url}{path}"
        all_headers = {"Authorization": f"Bearer {self._api_key}", "Accept": "application/json"}
        all_headers.update(headers or {})
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            response: requests.Response | None = None
            if hasattr(data, "seek"):
                data.seek(0)  # a retried upload starts from the beginning again
            try:
                response = self.session.request(
                    method,
                    url,
                    params=params,
                    json=json,
                    data=data,
                    files=files,
                    headers=all_headers,
                    timeout=self.timeout,
                )
            except TRANSIENT_EXCEPTIONS as error:
                scrub_request(error.request)
                failure: ProviderError = self._transient(f"{type(error).__name__}: {error}")
                if not idempotent:
                    raise AmbiguousSubmission(
                        f"{method} {path} got no answer ({type(error).__name__}); "
                        "it may have been accepted."
                    ) from error
            else:
                for sent in (*response.history, response):
                    scrub_request(sent.request)
                if response.status_code < 400:
                    return self._decode(response)
                failure = self.classify_error(response)
                if not failure.retryable:
                    raise failure
                if not idempotent:
                    # A 5xx on create may still have created the batch: never repeat it blindly.
                    raise AmbiguousSubmission(
                        str(failure), status_code=response.status_code, response=response
                    )
            elapsed = time.monotonic() - started
            delay = self._backoff(attempt, retry_after_seconds(response))
            if attempt >= self.retry.max_attempts or elapsed + delay > self.retry.max_total_seconds:
                raise ProviderUnavailable(
                    f"gave up after {attempt} attempt(s) in {elapsed:.1f}s on {method} {path}: "
                    f"{failure}",
                    status_code=failure.status_code,
                )
            logger.warning(
                "Transient failure on %s %s (attempt %d): %s; retrying in %.2fs",
                method,
                path,
                attempt,
                failure,
                delay,
            )
            self._sleep(delay)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        cap = min(self.retry.backoff_max, self.retry.backoff_base * 2 ** (attempt - 1))
        delay = random.uniform(cap / 2, cap)  # jitter spreads many pollers apart
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay

    def _transient(self, message: str) -> ProviderUnavailable:
        return ProviderUnavailable(redact(message, self._api_key))

    def _decode(self, response: requests.Response) -> Any:
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError as error:
            raise ProviderUnavailable(
                f"{response.request.method} {response.url}: answer is not JSON "
                f"(HTTP {response.status_code})",
                status_code=response.status_code,
            ) from error

    def classify_error(self, response: requests.Response) -> ProviderError:
        """Map an error answer to an exception; override for a provider's error shapes."""
        try:
            payload = response.json()
        except ValueError:
            payload = None
        message = self.error_message(payload) or response.reason or "error"
        message = redact(f"HTTP {response.status_code}: {message}", self._api_key)
        status = response.status_code
        kwargs: dict[str, Any] = {"status_code": status, "payload": payload, "response": response}
        if status in RETRYABLE_STATUS:
            return ProviderUnavailable(message, **kwargs)
        if status in (401, 403) and self.is_authentication_error(response, payload):
            return ProviderAuthenticationError(message, **kwargs)
        if self.is_authentication_error(response, payload):
            return ProviderAuthenticationError(message, **kwargs)
        if status == 404:
            return ProviderNotFound(message, **kwargs)
        return ProviderRejected(message, **kwargs)

    def error_message(self, payload: Any) -> str:
        if isinstance(payload, dict):
            for key in ("error", "message", "detail"):
                value = payload.get(key)
                if isinstance(value, str):
                    return value
                if isinstance(value, dict) and isinstance(value.get("message"), str):
                    return str(value["message"])
        return ""

    def is_authentication_error(self, response: requests.Response, payload: Any) -> bool:
        return response.status_code == 401
