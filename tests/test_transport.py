"""The HTTP transport as a deployment sees it: a proxy named by the environment, a bypass list,
and a session of the caller's own, each over real HTTP on loopback.

The client built for one host reads the environment once and then sends each call through its
session's adapter (:meth:`raif_batches.http.ApiClient._send`); these tests hold that shortcut
to what ``requests`` itself does with the same environment.
"""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from raif_batches import create_batch
from raif_batches.http import ApiClient
from raif_batches.models import ModelCompletionBatch

from .helpers import run_to_end, user


class _Proxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Forward)
        self.seen: list[tuple[str, str, bool]] = []  # method, target, carried a key
        self.lock = threading.Lock()


class _Forward(BaseHTTPRequestHandler):
    """A plain-HTTP forward proxy: the request line names the whole URL."""

    server: _Proxy
    protocol_version = "HTTP/1.1"

    def _forward(self) -> None:
        target = urlsplit(self.path)
        keyed = "Authorization" in self.headers or "x-api-key" in self.headers
        with self.server.lock:
            self.server.seen.append((self.command, self.path, keyed))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() != "proxy-connection"}
        upstream = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
        try:
            path = target.path + (f"?{target.query}" if target.query else "")
            upstream.request(self.command, path, body=body, headers=headers)
            answer = upstream.getresponse()
            content = answer.read()
        finally:
            upstream.close()
        self.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    do_GET = do_POST = do_DELETE = _forward

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def proxy() -> Iterator[_Proxy]:
    server = _Proxy()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def _proxy_environment(monkeypatch: Any, proxy: _Proxy | None, *, bypass: str = "") -> None:
    """The environment names ``proxy`` for plain HTTP (none: no proxy), and ``bypass`` as the
    hosts it does not serve; no other proxy variable is left set."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    if proxy is not None:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_port}")
    if bypass:
        monkeypatch.setenv("NO_PROXY", bypass)


def _batch(provider: str) -> ModelCompletionBatch:
    return create_batch(
        provider=provider,
        requests=[
            {"custom_id": f"p-{i}", "messages": user(f"Question {i}"), "max_tokens": 64}
            for i in range(3)
        ],
    )


@pytest.mark.django_db
def test_every_call_of_a_batch_goes_through_the_proxy_the_environment_names(
    any_emulator: Any, proxy: _Proxy, monkeypatch: Any
) -> None:
    _proxy_environment(monkeypatch, proxy)
    batch = run_to_end(_batch(any_emulator.provider))
    assert batch.results_stored_count == 3
    assert batch.completions.filter(status="completed").count() == 3
    host = urlsplit(any_emulator.base_url).netloc
    assert proxy.seen, "no call reached the proxy"
    assert {urlsplit(target).netloc for _, target, _ in proxy.seen} == {host}
    assert all(keyed for _, _, keyed in proxy.seen)  # the key went with each call
    assert "POST" in {method for method, _, _ in proxy.seen}  # the create, at least
    assert len(proxy.seen) >= 3  # a create, a status read, a results read


@pytest.mark.django_db
def test_a_host_the_bypass_list_names_is_called_directly(
    emulator: Any, proxy: _Proxy, monkeypatch: Any
) -> None:
    _proxy_environment(monkeypatch, proxy, bypass="127.0.0.1,localhost")
    batch = run_to_end(_batch("xai"))
    assert batch.results_stored_count == 3
    assert proxy.seen == []


def test_a_session_of_the_callers_own_reads_the_environment_at_each_call(
    emulator: Any, proxy: _Proxy, monkeypatch: Any
) -> None:
    """A session left to trust the environment is used as it is: it finds a proxy set after
    the client was built, as ``requests`` does."""
    _proxy_environment(monkeypatch, None)
    session = requests.Session()
    client = ApiClient(emulator.base_url, emulator.api_key, session=session, provider="xai")
    first = client.request("GET", "/batches", idempotent=True)
    assert proxy.seen == []
    _proxy_environment(monkeypatch, proxy)
    second = client.request("GET", "/batches", idempotent=True)
    assert first == second
    assert [(method, urlsplit(target).path) for method, target, _ in proxy.seen] == [
        ("GET", urlsplit(emulator.base_url).path + "/batches")
    ]
