"""All HTTP goes through here: one session factory, timeouts, safe retries, error mapping.

The rules, and why:

* Only idempotent calls are retried. A call that creates something at the provider (a batch) is
  sent once; if its answer is lost **or cannot be read** (HTML from a proxy, an empty or cut
  body, JSON of the wrong shape), :class:`~raif_batches.exceptions.AmbiguousSubmission` tells
  the caller to reconcile instead of trying again: the batch may exist and cost money. Only a
  clear refusal (a 4xx) is taken as "nothing was created".
* Whatever the provider sends, the caller sees a :class:`~raif_batches.exceptions.ProviderError`
  and nothing else: an unreadable or wrongly shaped 2xx is a provider fault, retried like a 5xx
  for idempotent calls; anything ``requests`` or the JSON decoder raises (a bad
  ``Content-Encoding``, JSON nested thousands deep, an invalid URL) is mapped here.
* Memory is bounded whatever the provider sends: answers are streamed and refused past
  ``MAX_RESPONSE_BYTES`` (:class:`~raif_batches.exceptions.AnswerTooLarge`, which a paging caller
  answers by asking for smaller pages), and JSON deeper than :data:`MAX_JSON_DEPTH` is refused.
* Redirects are not followed: the API never redirects, and following one would resend the key
  and turn a POST into a GET. A 3xx is a provider fault like any unreadable answer.
* The key never escapes: it is added to each prepared request by an auth object (never kept in a
  local or a headers dict of ours), blanked in every request that an answer or an error keeps,
  and no error leaving the client chains to an exception raised inside ``requests`` (those carry
  the request and a traceback whose frames hold the headers).
"""

from __future__ import annotations

import email.utils
import json as jsonlib
import logging
import math
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, Any, Self

import requests
from requests.adapters import HTTPAdapter
from requests.auth import AuthBase

from .conf import (
    RetryPolicy,
    api_key,
    base_url,
    listing_bounds,
    max_response_bytes,
    positive_integer_setting,
    request_timeout,
)
from .exceptions import (
    AmbiguousSubmission,
    AnswerTooLarge,
    ProviderAuthenticationError,
    ProviderError,
    ProviderNotFound,
    ProviderRejected,
    ProviderUnavailable,
    UnreadableAnswer,
)

logger = logging.getLogger("raif_batches.http")

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
# Faults that may pass: a dropped or stalled connection, a body closed or garbled in transit.
TRANSIENT_EXCEPTIONS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)
# Raised while the request is being prepared: nothing reached the provider.
UNSENT_EXCEPTIONS = (
    requests.exceptions.InvalidURL,
    requests.exceptions.InvalidHeader,
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidSchema,
    requests.exceptions.URLRequired,
    requests.exceptions.InvalidJSONError,
)
REDACTED = "[redacted]"
#: Deeper JSON is refused: a real answer is a dozen levels deep, and a deep one would make
#: every later ``json.dumps`` (storing the payload) hit the recursion limit.
MAX_JSON_DEPTH = 100
CHUNK_BYTES = 256 * 1024

#: Checks a decoded answer; returns what is wrong with it, or None when it is usable.
Validator = Callable[[Any], "str | None"]


class _NoRedirectSession(requests.Session):
    """A session that never prepares a redirect: even with ``allow_redirects=False``, requests
    reads a 3xx body in full (unbounded) and keeps a copy of the request, key included, in
    ``response.next``."""

    def get_redirect_target(self, resp: requests.Response) -> str | None:
        return None


def build_session(pool_size: int = 16, *, base_url: str | None = None) -> requests.Session:
    """A keep-alive session whose connection pool fits the poller's concurrency.

    With ``base_url`` (the one host a client talks to), the environment's proxy and CA-bundle
    variables are read once, here: ``requests`` would otherwise read them again on every call,
    walking ``os.environ`` twice (a quarter of a status read's CPU, which 1,000 concurrent
    reads share on one core). What they say is applied all the same; a CA bundle only to an
    ``https`` host: plain HTTP has nothing to verify, and ``requests`` would still look the
    bundle's path up on the disk at every call.
    """
    session = _NoRedirectSession()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    if base_url is not None:
        session.proxies.update(requests.utils.get_environ_proxies(base_url))
        bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
        if bundle and base_url.lower().startswith("https:"):
            session.verify = bundle
        session.trust_env = False  # no .netrc either: every call carries its own auth
    return session


def redact(text: str, secret: str | None) -> str:
    """``text`` without ``secret``: also in the escaped form ``repr`` gives it in messages, and
    without any long piece of it (a key with a line break in it is quoted in pieces)."""
    if not secret:
        return text
    forms = {secret, secret.strip(), repr(secret)[1:-1]}
    forms.update(part for part in secret.split() if len(part) >= 8)
    for form in sorted(forms, key=len, reverse=True):
        if form and form in text:
            text = text.replace(form, REDACTED)
    return text


#: Headers that carry a key, by provider: each is blanked in every request an error keeps.
KEY_HEADERS = ("Authorization", "x-api-key")


def scrub_request(request: Any) -> None:
    """Blank the key in a sent request's headers: errors keep the request (``error.request``,
    ``error.response.request``), and error reporters show it."""
    headers = getattr(request, "headers", None)
    if headers is None:
        return
    for name in KEY_HEADERS:
        if name in headers:
            headers[name] = f"Bearer {REDACTED}" if name == "Authorization" else REDACTED


def scrub_response(response: Any) -> None:
    if response is None:
        return
    for sent in (*getattr(response, "history", ()), response):
        scrub_request(getattr(sent, "request", None))
    scrub_request(getattr(response, "_next", None))


def retry_after_seconds(response: requests.Response | None) -> float | None:
    """Seconds asked by ``retry-after-ms`` (OpenAI's and Anthropic's, in milliseconds) or else
    ``Retry-After`` (a number or an HTTP date); None when absent or bad."""
    if response is None:
        return None
    millis = response.headers.get("retry-after-ms")
    if millis:
        try:
            seconds = float(millis) / 1000
        except ValueError:
            pass
        else:
            if 0 <= seconds < float("inf"):
                return seconds
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if seconds < float("inf") else None  # NaN fails the test too
    try:
        parsed = email.utils.parsedate_to_datetime(value)
        return max(parsed.timestamp() - time.time(), 0.0)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None  # unreadable: fall back to our own backoff


def describe(payload: Any) -> str:
    """A few words naming a decoded answer's type, for messages (never its content)."""
    if isinstance(payload, dict):
        return "an object without the expected fields"
    if isinstance(payload, list):
        return f"a JSON list of {len(payload)} item(s)"
    return f"a JSON {type(payload).__name__}"


def json_object(*required: str) -> Validator:
    """A validator: the answer is a JSON object whose ``required`` fields are non-empty ids."""

    def check(payload: Any) -> str | None:
        if not isinstance(payload, dict):
            return f"expected a JSON object, got {describe(payload)}"
        for key in required:
            value = payload.get(key)
            if isinstance(value, bool) or not isinstance(value, str | int) or not str(value):
                return f"the answer has no {key!r}"
        return None

    return check


def json_depth_exceeds(payload: Any, limit: int) -> bool:
    """True when containers nest deeper than ``limit``; strings are not walked, so a page of
    big answers costs a few visits per entry."""
    stack: list[tuple[Any, int]] = [(payload, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def _refuse(name: str) -> Any:
    # NaN and Infinity are not JSON, and PostgreSQL refuses them in a jsonb column.
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 reads as infinity: as unstorable as Infinity
        raise ValueError(f"{text[:20]} is out of range")
    return value


class _KeyAuth(AuthBase):
    """Adds the key to each prepared request, so no headers dict of ours ever holds it."""

    def __init__(self, key: str, header: str = "Authorization", prefix: str = "Bearer ") -> None:
        self._key = key
        self._header = header
        self._prefix = prefix

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers[self._header] = self._prefix + self._key
        return request

    def __repr__(self) -> str:
        return f"<key in {self._header}>"


@dataclass
class _Fault:
    """A failed attempt. ``retry``: worth another attempt within this run (idempotent calls
    only); ``ambiguous``: the call may have reached the provider and taken effect."""

    error: ProviderError
    retry: bool
    ambiguous: bool
    response: requests.Response | None = None


class ApiClient:
    """A JSON API at ``base_url`` with a key; provider modules build on it.

    ``classify_error`` may be overridden to turn a provider's error body into the right
    :class:`ProviderError` subclass; ``auth_header``/``auth_prefix`` say where the key goes
    (a bearer token by default), ``default_headers`` what every call also sends.
    """

    auth_header = "Authorization"
    auth_prefix = "Bearer "
    default_headers: Mapping[str, str] = {}

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        session: requests.Session | None = None,
        retry: RetryPolicy | None = None,
        timeout: tuple[float, float] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        max_bytes: int | None = None,
        provider: str = "",
    ):
        self.provider = provider  # named on the errors that say the key was refused
        self.base_url = base_url.rstrip("/")
        # A key pasted with its line break (``$(cat key.txt)``) is the same key.
        self._api_key = api_key.strip()
        self._auth = _KeyAuth(self._api_key, self.auth_header, self.auth_prefix)
        self.session = session or build_session(base_url=self.base_url)
        self.retry = retry or RetryPolicy.from_settings()
        self.timeout = timeout or request_timeout()
        self.max_bytes = max_bytes or max_response_bytes()
        self._sleep = sleep

    def __repr__(self) -> str:  # never show the key
        return f"<{type(self).__name__} {self.base_url}>"

    @classmethod
    def for_provider(cls, provider: str) -> Self:
        """A client for ``provider`` from its settings (base URL, key), with a connection pool
        as wide as the run's parallel reads (``POLL_CONCURRENCY``)."""
        pool = positive_integer_setting("POLL_CONCURRENCY")
        url = base_url(provider)
        return cls(
            url,
            api_key(provider),
            session=build_session(pool_size=max(pool, 4), base_url=url),
            provider=provider,
        )

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
        expect: Validator | None = None,
        lenient_numbers: bool = False,
    ) -> Any:
        """Send one call and return its decoded JSON, retrying only when that is safe.

        ``expect`` checks the answer's shape; a wrongly shaped answer is a provider fault like an
        unreadable one. Every error raised is a :class:`ProviderError` with no exception chained.
        ``NaN``/``Infinity`` make an answer unreadable, except with ``lenient_numbers``: a page of
        results stays readable, and the one line carrying such a number fails alone when it is
        stored (a whole page refused for one line would block the harvest for good).
        """
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            if hasattr(data, "seek"):
                data.seek(0)  # a retried upload starts from the beginning again
            outcome = self._attempt(
                method,
                path,
                params=params,
                json=json,
                data=data,
                files=files,
                headers=headers,
                expect=expect,
                lenient_numbers=lenient_numbers,
                # One call lasts at most connect + read timeout, body included: the lease check
                # (raif_batches.E011) counts on that bound, and a body that trickles in byte by
                # byte would otherwise never time out.
                deadline=time.monotonic() + sum(self.timeout),
            )
            if not isinstance(outcome, _Fault):
                return outcome
            failure = outcome.error
            if not idempotent and outcome.ambiguous:
                # A create answered by a fault may still have created the batch: never repeat it
                # blindly; the caller looks it up by name.
                raise AmbiguousSubmission(
                    f"{method} {path}: {failure}; it may have been accepted.",
                    status_code=failure.status_code,
                    response=outcome.response,
                )
            if not outcome.retry or not idempotent:
                raise failure
            elapsed = time.monotonic() - started
            delay = self._backoff(attempt, retry_after_seconds(outcome.response))
            if attempt >= self.retry.max_attempts or elapsed + delay > self.retry.max_total_seconds:
                raise type(failure)(
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

    def download(
        self,
        path: str,
        sink: IO[bytes],
        *,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        url: str | None = None,
    ) -> int:
        """GET a file or stream of any size into ``sink`` (a file opened for writing); returns
        its size in bytes. Idempotent: a transient fault starts the download over.

        Unlike :meth:`request`, the body is not bounded by MAX_RESPONSE_BYTES (it goes to
        ``sink``, not to memory), and the whole call by LISTING_MAX_SECONDS rather than one
        connect + read timeout; every read still times out on its own. ``url`` (absolute, on
        this client's host) is used instead of ``base_url + path`` when the provider names it.
        """
        started = time.monotonic()
        _, max_seconds = listing_bounds()
        attempt = 0
        target = url or f"{self.base_url}{path}"
        while True:
            attempt += 1
            sink.seek(0)
            sink.truncate()
            outcome = self._attempt(
                "GET",
                path,
                expect=None,
                deadline=started + max_seconds,
                params=params,
                headers=headers,
                sink=sink,
                url=target,
            )
            if not isinstance(outcome, _Fault):
                sink.flush()
                sink.seek(0)
                return int(outcome)
            failure = outcome.error
            if not outcome.retry:
                raise failure
            elapsed = time.monotonic() - started
            delay = self._backoff(attempt, retry_after_seconds(outcome.response))
            if attempt >= self.retry.max_attempts or elapsed + delay > self.retry.max_total_seconds:
                raise type(failure)(
                    f"gave up after {attempt} attempt(s) in {elapsed:.1f}s on GET {path}: "
                    f"{failure}",
                    status_code=failure.status_code,
                )
            logger.warning(
                "Transient failure downloading %s (attempt %d): %s; retrying in %.2fs",
                path,
                attempt,
                failure,
                delay,
            )
            self._sleep(delay)

    def _attempt(
        self,
        method: str,
        path: str,
        *,
        expect: Validator | None,
        deadline: float,
        lenient_numbers: bool = False,
        sink: IO[bytes] | None = None,
        url: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """One call: the decoded answer (with ``sink``: the bytes written to it), or a
        :class:`_Fault`. Catches everything, so that the caller raises outside any ``except``
        block and no error chains to a ``requests`` one."""
        response: requests.Response | None = None
        headers = {**self.default_headers, **(kwargs.pop("headers", None) or {})}
        try:
            response = self._send(method, url or f"{self.base_url}{path}", headers, **kwargs)
            scrub_response(response)
            if sink is not None and response.status_code < 300:
                return self._copy_body(response, sink, deadline)
            body = self._read_body(response, deadline)
        except AnswerTooLarge as error:
            return _Fault(self._redacted(error, method, path), retry=False, ambiguous=True)
        except UNSENT_EXCEPTIONS as error:
            self._scrub_error(error)
            message = f"{method} {path} could not be sent ({type(error).__name__}: {error})"
            return _Fault(ProviderUnavailable(self._redact(message)), retry=False, ambiguous=False)
        except TRANSIENT_EXCEPTIONS as error:
            self._scrub_error(error)
            message = self._redact(f"{type(error).__name__}: {error}")
            return _Fault(ProviderUnavailable(message), retry=True, ambiguous=True)
        except Exception as error:  # mapped to the one error type the lifecycle expects
            self._scrub_error(error)
            message = self._redact(f"{method} {path}: {type(error).__name__}: {error}")
            return _Fault(ProviderUnavailable(message), retry=False, ambiguous=True)
        finally:
            if response is not None:
                response.close()
        status = response.status_code
        if status >= 400:
            response._content = bytes(body)
            failure = self.classify_error(response)
            retry = failure.retryable
            return _Fault(failure, retry=retry, ambiguous=retry, response=response)
        return self._decode(response, body, expect, lenient_numbers)

    def _send(
        self, method: str, url: str, headers: dict[str, str], **kwargs: Any
    ) -> requests.Response:
        """The call, streamed, redirects not followed.

        A session that reads nothing from the environment at each call (``trust_env`` off, as
        :func:`build_session` makes it for one host) is bypassed: the request is prepared
        here and handed to its adapter, with the session's headers, proxies and TLS settings.
        ``Session.request`` would merge the same settings again at each call and keep the
        provider's cookies, which no provider's API uses: a third of a status read's CPU,
        paid 1,000 times by a poll on one core. Any other session is used as it is.
        """
        session = self.session
        if session.trust_env:
            return session.request(
                method,
                url,
                auth=self._auth,
                timeout=self.timeout,
                allow_redirects=False,
                stream=True,
                headers=headers or None,
                **kwargs,
            )
        prepared = requests.PreparedRequest()
        prepared.prepare(
            method=method,
            url=url,
            headers={**session.headers, **headers},
            auth=self._auth,
            **kwargs,
        )
        return session.get_adapter(url).send(
            prepared,
            stream=True,
            timeout=self.timeout,
            verify=True if session.verify is None else session.verify,
            cert=session.cert,
            proxies=session.proxies,
        )

    def _copy_body(self, response: requests.Response, sink: IO[bytes], deadline: float) -> int:
        size = 0
        for chunk in response.iter_content(chunk_size=CHUNK_BYTES):
            sink.write(chunk)
            size += len(chunk)
            if time.monotonic() > deadline:
                raise requests.Timeout("the download outlasted LISTING_MAX_SECONDS")
        return size

    def _read_body(self, response: requests.Response, deadline: float) -> bytearray:
        """The answer's bytes, refused past ``max_bytes`` or past the call's time budget."""
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise AnswerTooLarge(
                f"the answer is {int(declared)} bytes, over MAX_RESPONSE_BYTES ({self.max_bytes})",
                status_code=response.status_code,
            )
        body = bytearray()
        for chunk in response.iter_content(chunk_size=CHUNK_BYTES):
            body += chunk
            if len(body) > self.max_bytes:
                raise AnswerTooLarge(
                    f"the answer exceeds MAX_RESPONSE_BYTES ({self.max_bytes})",
                    status_code=response.status_code,
                )
            if time.monotonic() > deadline:
                raise requests.Timeout("the answer's body outlasted the call's time budget")
        return body

    def _decode(
        self,
        response: requests.Response,
        body: bytearray,
        expect: Validator | None,
        lenient_numbers: bool = False,
    ) -> Any:
        """The decoded answer of a 2xx/3xx, or a fault that says in one line why it is unusable."""
        status = response.status_code
        problem: str | None = None
        payload: Any = None
        if status >= 300:
            where = self._redact(response.headers.get("Location", "nowhere"))
            problem = f"redirected to {where[:200]} (redirects are not followed)"
        elif not body.strip():
            problem = "the answer is empty"
        else:
            try:
                if lenient_numbers:
                    payload = jsonlib.loads(body)
                else:
                    payload = jsonlib.loads(body, parse_constant=_refuse, parse_float=_finite)
            except RecursionError:
                problem = f"the answer nests deeper than {MAX_JSON_DEPTH} levels"
            except ValueError:
                kind = response.headers.get("Content-Type", "no content type").split(";")[0]
                problem = f"the answer is not JSON ({kind[:60]}, {len(body)} bytes)"
            else:
                if json_depth_exceeds(payload, MAX_JSON_DEPTH):
                    problem = f"the answer nests deeper than {MAX_JSON_DEPTH} levels"
                elif expect is not None:
                    problem = expect(payload)
        if problem is None:
            return payload
        error = UnreadableAnswer(f"HTTP {status}: {problem}", status_code=status)
        return _Fault(error, retry=True, ambiguous=True, response=response)

    def _redact(self, text: str) -> str:
        return redact(text, self._api_key)

    def _redacted(self, error: ProviderError, method: str, path: str) -> ProviderError:
        """A fresh copy of ``error`` (so that nothing chains), naming the call."""
        message = self._redact(f"{method} {path}: {error}")
        return type(error)(message, status_code=error.status_code)

    def _scrub_error(self, error: BaseException) -> None:
        scrub_request(getattr(error, "request", None))
        scrub_response(getattr(error, "response", None))

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        cap = min(self.retry.backoff_max, self.retry.backoff_base * 2 ** (attempt - 1))
        delay = random.uniform(cap / 2, cap)  # jitter spreads many pollers apart
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay

    def classify_error(self, response: requests.Response) -> ProviderError:
        """Map an error answer to an exception; override for a provider's error shapes."""
        try:
            payload = jsonlib.loads(response.content or b"null")
        except (ValueError, RecursionError):
            payload = None
        message = self.error_message(payload) or response.reason or "error"
        message = self._redact(f"HTTP {response.status_code}: {message}")
        status = response.status_code
        kwargs: dict[str, Any] = {"status_code": status, "payload": payload, "response": response}
        if status in RETRYABLE_STATUS:
            return ProviderUnavailable(message, **kwargs)
        if self.is_authentication_error(response, payload):
            refused = ProviderAuthenticationError(message, **kwargs)
            refused.provider = self.provider
            return refused
        if status == 404:
            return ProviderNotFound(message, **kwargs)
        if status >= 500 and status != 501:  # 501: "not implemented", a clear refusal
            return ProviderUnavailable(message, **kwargs)
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
