"""The HTTP face of the emulators: routes, auth, error bodies and injected faults.

One ``ThreadingHTTPServer`` (daemon threads, HTTP/1.1 keep-alive, a ``Content-Length`` on every
answer) in front of a provider's state (xAI's :class:`~raif_batches.emulator.state.EmulatorState`
here). Each call is routed to an endpoint name, checked against the faults, authorised, served,
and recorded in ``state.calls`` (dropped connections with status 0).

:class:`EmulatorServer` is xAI's; another provider's emulator subclasses it and sets
``provider``, ``routes`` and ``path_prefix``, and overrides :meth:`~EmulatorServer.error_body`,
:meth:`~EmulatorServer.authorize`, :meth:`~EmulatorServer.new_state` and
:meth:`~EmulatorServer.dispatch`. Endpoint names are shared where the meaning is
(``upload_file``, ``create_batch``, ``get_batch``, ``list_batches``, ``cancel_batch``,
``list_results``), so a fault or a call count reads the same for every provider.

Keys. Unless told a key (``api_key="..."``), the emulator accepts any non-empty bearer key, so it
never needs a real one; ``emu.api_key`` is then :data:`DEFAULT_API_KEY`, a key clients may send.
Told a key, it refuses every other one with xAI's ``400`` (a test of a wrong key needs that).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from email.parser import HeaderParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from .faults import Fault, error_body
from .state import ApiError, Call, EmulatorConfig, EmulatorState

Routes = list[tuple[str, "re.Pattern[str]", str]]

DEFAULT_API_KEY = "emulator-key"
BAD_KEY_MESSAGE = "Incorrect API key provided. You can obtain an API key from https://console.x.ai."
ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("POST", re.compile(r"/v1/files"), "upload_file"),
    ("POST", re.compile(r"/v1/batches"), "create_batch"),
    ("GET", re.compile(r"/v1/batches"), "list_batches"),
    ("GET", re.compile(r"/v1/batches/(?P<id>[^/:]+)"), "get_batch"),
    ("POST", re.compile(r"/v1/batches/(?P<id>[^/:]+):cancel"), "cancel_batch"),
    ("GET", re.compile(r"/v1/batches/(?P<id>[^/:]+)/requests"), "list_requests"),
    ("POST", re.compile(r"/v1/batches/(?P<id>[^/:]+)/requests"), "add_requests"),
    ("GET", re.compile(r"/v1/batches/(?P<id>[^/:]+)/results"), "list_results"),
]
MULTIPART_OVERHEAD = 1024 * 1024  # room for part headers around a maximum-size file


class RawAnswer:
    """A 200 answer that is not JSON: a file's content, a JSONL stream."""

    def __init__(self, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.data = data
        self.content_type = content_type


def route(method: str, path: str, routes: Routes | None = None) -> tuple[str | None, str | None]:
    """(endpoint name, batch id) for a request, or (None, None) when nothing matches."""
    for verb, pattern, endpoint in ROUTES if routes is None else routes:
        match = pattern.fullmatch(path.rstrip("/"))
        if verb == method and match:
            return endpoint, match.groupdict().get("id")
    return None, None


def parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, str], str, bytes]:
    """(text fields, file name, file bytes) of a ``multipart/form-data`` body.

    The file part is sliced out of the body once; nothing else is copied. ``expires_after``
    counts only when it comes before ``file``, as on xAI, so a late one is an error.
    """
    boundary = HeaderParser().parsestr(f"Content-Type: {content_type}\n\n").get_param("boundary")
    if not isinstance(boundary, str) or not content_type.startswith("multipart/form-data"):
        raise ApiError(400, "Expected a multipart/form-data body with a boundary")
    delimiter = b"--" + boundary.encode("latin-1")
    fields: dict[str, str] = {}
    file: tuple[str, bytes] | None = None
    pos = body.find(delimiter)
    while pos != -1:
        pos += len(delimiter)
        if body[pos : pos + 2] == b"--":
            break
        pos += 2 if body[pos : pos + 2] == b"\r\n" else 0
        header_end = body.find(b"\r\n\r\n", pos)
        next_delimiter = body.find(b"\r\n" + delimiter, header_end)
        if header_end == -1 or next_delimiter == -1:
            raise ApiError(400, "Malformed multipart body")
        headers = HeaderParser().parsestr(body[pos:header_end].decode("utf-8", "replace"))
        name = headers.get_param("name", header="content-disposition")
        if name == "file":
            file = (headers.get_filename() or "file.jsonl", body[header_end + 4 : next_delimiter])
        elif isinstance(name, str):
            if name == "expires_after" and file is not None:
                raise ApiError(400, "expires_after must come before file in the form")
            fields[name] = body[header_end + 4 : next_delimiter].decode("utf-8", "replace")
        pos = next_delimiter + 2
    if file is None:
        raise ApiError(400, "The form has no file part")
    return fields, file[0], file[1]


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver listens with a backlog of 5: a client opening 64 connections at once (a
    # poll's readers) had the rest of its SYNs dropped and retried a second later, which no
    # provider does to it.
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], emulator: EmulatorServer) -> None:
        self.emulator = emulator
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes; don't wait for ACKs
    server: _HTTPServer
    call: Call | None = None

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    do_PUT = do_DELETE = do_PATCH = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        if not self.server.emulator.quiet:
            super().log_message(format, *args)

    def _handle(self) -> None:
        emulator = self.server.emulator
        state = emulator.state
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        query = dict(parse_qsl(parts.query))
        endpoint, batch_id = route(self.command, path, emulator.routes)
        self.call = Call(endpoint or "unknown", self.command, path, query, 0, 0, state.now())
        try:
            self._serve(self.call, batch_id)
        finally:
            self._record()

    def _record(self) -> None:
        """Record the call once, before the client can see an answer (tests read calls next)."""
        if self.call is not None:
            self.server.emulator.state.record(self.call)
            self.call = None

    def _serve(self, call: Call, batch_id: str | None) -> None:
        emulator, state = self.server.emulator, self.server.emulator.state
        length = int(self.headers.get("Content-Length") or 0)
        call.body_size = length
        if length > emulator.max_body_bytes():
            self._send(*emulator.too_large(), close=True)
            return
        if self.headers.get("Transfer-Encoding"):
            self._send(411, emulator.error_body(400, "Content-Length required"), close=True)
            return
        body = self.rfile.read(length) if length else b""
        if state.config.latency > 0:
            time.sleep(state.config.latency)
        fault = state.pick_fault(call.endpoint)
        if fault is not None and fault.kind == "latency":
            time.sleep(fault.delay)
            fault = None
        if fault is not None and fault.kind == "drop":
            self._drop()
            return
        extra = dict(fault.headers) if fault is not None else {}
        if fault is not None and fault.kind == "status":
            fault_body = fault.body or emulator.error_body(
                fault.status, f"Injected fault: HTTP {fault.status}"
            )
            self._send(fault.status, fault_body, fault.retry_after, headers=extra)
            return
        if fault is not None and fault.kind == "raw":
            self._send_raw(fault.status, fault.raw_body, fault.content_type, extra)
            return
        if fault is not None and fault.kind == "redirect_loop":
            self._send_raw(302, b"", "text/plain", {"Location": self.path, **extra})
            return
        bend = fault.kind if fault is not None else None
        answer: dict[str, Any] | RawAnswer
        try:
            emulator.authorize(self.headers)
            if call.endpoint == "unknown":
                raise ApiError(404, f"No route for {self.command} {call.path}")
            status, answer = 200, emulator.dispatch(self, call, batch_id, body, bend)
        except ApiError as exc:
            status, answer = exc.status, emulator.error_body(exc.status, exc.message, exc)
        payload: dict[str, Any] = answer if isinstance(answer, dict) else {}
        if fault is not None and fault.kind == "accept_then_drop":
            self._drop()
            return
        if fault is not None and fault.kind == "truncate":
            self._truncate(status, answer)
            return
        if fault is not None and fault.kind == "accept_then_raw":
            self._send_raw(fault.status, fault.raw_body, fault.content_type, extra)
            return
        if isinstance(answer, RawAnswer):
            self._send_raw(status, answer.data, answer.content_type, extra)
            return
        depth = getattr(state.config, "nested_depth", 0) if call.endpoint == "get_batch" else 0
        self._send(status, payload, headers=extra, nested_depth=depth if status == 200 else 0)

    def xai_dispatch(
        self, call: Call, batch_id: str | None, body: bytes, bend: str | None
    ) -> dict[str, Any]:
        state = self.server.emulator.state
        endpoint, query = call.endpoint, call.query
        if endpoint == "upload_file":
            fields, filename, content = parse_multipart(self.headers.get("Content-Type", ""), body)
            expires_after = None
            if "expires_after" in fields:
                try:
                    expires_after = int(fields["expires_after"])
                except ValueError as exc:
                    raise ApiError(400, "expires_after must be an integer") from exc
            purpose = fields.get("purpose", "batch")
            return state.add_file(filename, purpose, content, expires_after)
        if endpoint == "create_batch":
            data = _json(body)
            file_id = data.get("input_file_id") or None
            if not isinstance(data.get("name", ""), str) or not isinstance(file_id, str | None):
                raise ApiError(400, "name and input_file_id must be strings")
            return state.create_batch(data.get("name", ""), file_id, self.server.emulator.key_id)
        if endpoint == "add_requests":
            return state.add_requests(str(batch_id), _json(body))
        if endpoint == "get_batch":
            return state.get_batch(str(batch_id))
        if endpoint == "cancel_batch":
            return state.cancel_batch(str(batch_id))
        limit, token = _limit(query), query.get("pagination_token")
        if endpoint == "list_batches":
            return state.list_batches(limit, token, bend)
        if endpoint == "list_requests":
            return state.list_requests(str(batch_id), limit, token, bend)
        return state.list_results(str(batch_id), limit, token, bend)

    def _send(
        self,
        status: int,
        payload: dict[str, Any],
        retry_after: float | None = None,
        close: bool = False,
        headers: dict[str, str] | None = None,
        nested_depth: int = 0,
    ) -> None:
        data = json.dumps(payload).encode()
        if nested_depth > 0 and data.endswith(b"}") and len(data) > 2:
            # Too deep for json.dumps (it recurses): spliced in as text.
            nested = b"[" * nested_depth + b"]" * nested_depth
            data = data[:-1] + b', "debug_trace": ' + nested + b"}"
        if self.call is not None:
            self.call.status = status
        self._record()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if retry_after is not None:
            self.send_header("Retry-After", f"{retry_after:g}")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def _send_raw(
        self, status: int, data: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        """Answer with exactly these bytes: what a provider's proxy or a broken server sends."""
        if self.call is not None:
            self.call.status = status
        self._record()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _truncate(self, status: int, answer: dict[str, Any] | RawAnswer) -> None:
        """Send the headers and half the body, then close: the answer ends mid-body. Recorded
        with status 0, as the client never gets a usable answer."""
        if isinstance(answer, RawAnswer):
            data, content_type = answer.data, answer.content_type
        else:
            data, content_type = json.dumps(answer).encode(), "application/json"
        self._record()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self._drop()

    def _drop(self) -> None:
        """Close the socket without a byte of answer: the client sees a connection error."""
        self._record()
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)


def _json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body or b"{}")
    except ValueError as exc:
        raise ApiError(400, f"Invalid JSON body: {exc}") from exc
    if not isinstance(data, dict):
        raise ApiError(400, "The JSON body must be an object")
    return data


def _limit(query: dict[str, str]) -> int | None:
    if "limit" not in query:
        return None
    try:
        return int(query["limit"])
    except ValueError as exc:
        raise ApiError(400, "limit must be an integer") from exc


class EmulatorServer:
    """xAI's emulator on a loopback port. ``port=0`` picks a free one; ``api_key=None`` (the
    default) accepts any non-empty key; ``profile`` names a config when none is given.

    The class attributes and the hooks below are what another provider's emulator changes.
    """

    provider = "xai"
    routes: Routes = ROUTES
    #: What ``base_url`` ends with: the part of the path a client's base URL includes.
    path_prefix = "/v1"

    def new_state(self, config: Any) -> Any:
        """The provider's state for ``config`` (a config object, or None for the default)."""
        return EmulatorState(config)

    def config_for(self, profile: str) -> Any:
        return EmulatorConfig.profile(profile)

    def error_body(
        self, status: int, message: str, error: ApiError | None = None
    ) -> dict[str, Any]:
        """The provider's error envelope."""
        return error_body(status, message)

    def max_body_bytes(self) -> int:
        return int(self.state.config.max_file_bytes) + MULTIPART_OVERHEAD

    def too_large(self) -> tuple[int, dict[str, Any]]:
        return 400, self.error_body(400, "Request body too large")

    def dispatch(
        self, handler: Any, call: Call, batch_id: str | None, body: bytes, bend: str | None
    ) -> dict[str, Any] | RawAnswer:
        """Serve one authorised call: a JSON object, or a :class:`RawAnswer`; an
        :class:`~raif_batches.emulator.state.ApiError` for an error answer."""
        return handler.xai_dispatch(call, batch_id, body, bend)  # type: ignore[no-any-return]

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        config: EmulatorConfig | None = None,
        state: EmulatorState | None = None,
        quiet: bool = True,
        profile: str | None = None,
    ) -> None:
        self.host, self.port, self.quiet = host, port, quiet
        self.any_key = not api_key
        self.api_key: str = api_key or DEFAULT_API_KEY
        if config is None and state is None and profile is not None:
            config = self.config_for(profile)
        self.state = state if state is not None else self.new_state(config)
        # What xAI shows as create_api_key_id: derived from the key, never the key itself.
        digest = hashlib.sha256((api_key or "any").encode()).hexdigest()
        self.key_id = str(uuid.uuid5(uuid.NAMESPACE_OID, digest))
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def config(self) -> Any:
        return self.state.config

    @property
    def endpoints(self) -> frozenset[str]:
        """The names of the endpoints this provider has (what a :class:`Fault` may target)."""
        return frozenset(name for _, _, name in self.routes)

    @property
    def origin(self) -> str:
        """``http://host:port``, without the path prefix."""
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.origin + self.path_prefix

    def key_matches(self, key: str) -> bool:
        """Whether a presented key is accepted: any non-empty one unless a key was named."""
        if not key:
            return False
        return self.any_key or hmac.compare_digest(key.encode(), self.api_key.encode())

    def authorize(self, headers: Any) -> None:
        """Refuse the call (``ApiError``) unless its headers carry an accepted key."""
        header = headers.get("Authorization") if headers is not None else None
        scheme, _, key = (header or "").partition(" ")
        if scheme.lower() != "bearer" or not self.key_matches(key.strip()):
            raise ApiError(400, BAD_KEY_MESSAGE)

    def add_fault(self, fault: Fault) -> Fault:
        return self.state.add_fault(fault)

    def start(self) -> EmulatorServer:
        self._httpd = _HTTPServer((self.host, self.port), self)
        self.port = self._httpd.server_address[1]
        # A short poll interval keeps stop() fast, which matters with one server per test.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            args=(0.05,),
            name=f"{self.provider}-emulator-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def serve_forever(self, ready: Callable[[str], None] | None = None) -> None:
        """Run in the foreground until interrupted; ``ready`` gets the base URL once bound."""
        self.start()
        if ready is not None:
            ready(self.base_url)
        try:
            while self._thread is not None and self._thread.is_alive():
                self._thread.join(timeout=0.5)
        finally:
            self.stop()

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


#: Provider key -> dotted path of its emulator's server class.
EMULATORS = {
    "xai": "raif_batches.emulator.server.EmulatorServer",
    "openai": "raif_batches.emulator.openai.OpenAIEmulatorServer",
    "anthropic": "raif_batches.emulator.anthropic.AnthropicEmulatorServer",
}


def emulator_class(provider: str) -> type[EmulatorServer]:
    """The emulator server class of a built-in provider."""
    import importlib

    if provider not in EMULATORS:
        raise ValueError(
            f"No emulator for provider {provider!r}; there is one for {', '.join(EMULATORS)}."
        )
    module, _, name = EMULATORS[provider].rpartition(".")
    return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


@contextlib.contextmanager
def run_emulator(
    api_key: str | None = None,
    config: Any = None,
    host: str = "127.0.0.1",
    port: int = 0,
    quiet: bool = True,
    profile: str | None = None,
    provider: str = "xai",
) -> Iterator[EmulatorServer]:
    """Start an emulator for the ``with`` block: ``with run_emulator() as emu: emu.base_url``.

    ``provider`` picks whose Batch API it plays (``"xai"``, ``"openai"``, ``"anthropic"``).
    ``profile="fast"`` (or ``config=EmulatorConfig.fast()``) for speed; the default config plays
    the provider as observed. Without ``api_key`` any key is accepted (``emu.api_key`` is one to
    send)."""
    server = emulator_class(provider)(
        host=host, port=port, api_key=api_key, config=config, quiet=quiet, profile=profile
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()
