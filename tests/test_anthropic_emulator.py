"""The Anthropic emulator over real HTTP: each quirk of the fact sheet, and its switches."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests

from raif_batches.emulator import Fault, run_emulator
from raif_batches.emulator.anthropic import AnthropicEmulatorConfig, AnthropicEmulatorServer
from raif_batches.management.commands.xai_emulator import parse_settings

KEY = "test-key"
ROOT = Path(__file__).resolve().parent.parent


class Client:
    """Raw HTTP with Anthropic's headers, to see exactly what the emulator answers."""

    def __init__(self, emu: AnthropicEmulatorServer, key: str = KEY) -> None:
        self.emu = emu
        self.headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return requests.request(
            method, f"{self.emu.base_url}{path}", headers=headers, timeout=10, **kwargs
        )

    def create(self, requests_: list[dict[str, Any]]) -> requests.Response:
        return self.call("POST", "/v1/messages/batches", json={"requests": requests_})

    def batch(self, batch_id: str) -> dict[str, Any]:
        answer = self.call("GET", f"/v1/messages/batches/{batch_id}")
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def until_ended(self, batch_id: str) -> dict[str, Any]:
        for _ in range(50):
            batch = self.batch(batch_id)
            if batch["processing_status"] == "ended":
                return batch
        raise AssertionError("never ended")

    def results(self, batch_id: str) -> requests.Response:
        return self.call("GET", f"/v1/messages/batches/{batch_id}/results")


def req(custom_id: str, text: str = "Hello", **params: Any) -> dict[str, Any]:
    body = {
        "model": "claude-haiku-4-5",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": text}],
        **params,
    }
    return {"custom_id": custom_id, "params": body}


@pytest.fixture
def emu() -> Iterator[AnthropicEmulatorServer]:
    with run_emulator(api_key=KEY, provider="anthropic") as server:
        assert isinstance(server, AnthropicEmulatorServer)
        yield server


@pytest.fixture
def fast() -> Iterator[AnthropicEmulatorServer]:
    with run_emulator(api_key=KEY, provider="anthropic", profile="fast") as server:
        assert isinstance(server, AnthropicEmulatorServer)
        yield server


def created(client: Client, requests_: list[dict[str, Any]]) -> dict[str, Any]:
    answer = client.create(requests_)
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def lines(answer: requests.Response) -> list[dict[str, Any]]:
    return [json.loads(line) for line in answer.content.splitlines() if line.strip()]


# --- auth and envelope ------------------------------------------------------------------------


def test_the_key_and_the_version_are_required(emu: AnthropicEmulatorServer) -> None:
    assert emu.base_url == emu.origin  # the client's paths start with /v1/
    wrong = Client(emu, key="nope").call("GET", "/v1/messages/batches")
    assert wrong.status_code == 401
    assert wrong.json()["type"] == "error"
    assert wrong.json()["error"] == {"type": "authentication_error", "message": "invalid x-api-key"}
    missing = requests.get(f"{emu.base_url}/v1/messages/batches", timeout=5)
    assert missing.status_code == 401
    no_version = requests.get(
        f"{emu.base_url}/v1/messages/batches", headers={"x-api-key": KEY}, timeout=5
    )
    assert no_version.status_code == 400
    assert no_version.json()["error"]["type"] == "invalid_request_error"
    assert Client(emu).call("GET", "/v1/messages/batches").status_code == 200
    # The key is never recorded.
    assert all("test-key" not in repr(call) for call in emu.state.calls)


def test_an_injected_overload_uses_the_envelope(emu: AnthropicEmulatorServer) -> None:
    emu.add_fault(Fault("list_batches", "status", status=529, retry_after=3))
    answer = Client(emu).call("GET", "/v1/messages/batches")
    assert answer.status_code == 529 and answer.headers["Retry-After"] == "3"
    assert answer.json()["error"]["type"] == "overloaded_error"


# --- create ----------------------------------------------------------------------------------


def test_create_answers_in_progress_with_reference_times(emu: AnthropicEmulatorServer) -> None:
    batch = created(Client(emu), [req("a"), req("b")])
    assert re.fullmatch(r"msgbatch_[0-9a-f]{24}", batch["id"])
    assert batch["type"] == "message_batch" and batch["processing_status"] == "in_progress"
    assert batch["request_counts"] == {
        "processing": 2,
        "succeeded": 0,
        "errored": 0,
        "canceled": 0,
        "expired": 0,
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", batch["created_at"])
    created_at = datetime.fromisoformat(batch["created_at"].replace("Z", "+00:00"))
    expires_at = datetime.fromisoformat(batch["expires_at"].replace("Z", "+00:00"))
    assert expires_at - created_at == timedelta(hours=24)
    assert batch["results_url"] is None and batch["ended_at"] is None
    assert batch["archived_at"] is None and batch["cancel_initiated_at"] is None


@pytest.mark.parametrize(
    ("requests_", "message"),
    [
        ([], "requests: List should have at least 1 item after validation, not 0"),
        (
            [req("ok"), req("x" * 65)],
            "requests.1.custom_id: String should have at most 64 characters",
        ),
        (
            [req("has.dot")],
            "requests.0.custom_id: String should match pattern '^[a-zA-Z0-9_-]{1,64}$'",
        ),
        (
            [req("dup"), req("dup")],
            "requests: custom_id's must be unique within a batch. Duplicate custom_id found: dup",
        ),
    ],
)
def test_synchronous_400s_with_the_exact_messages(
    emu: AnthropicEmulatorServer, requests_: list[dict[str, Any]], message: str
) -> None:
    answer = Client(emu).create(requests_)
    assert answer.status_code == 400
    assert answer.json()["error"] == {"type": "invalid_request_error", "message": message}
    assert emu.state.batches == {}


def test_too_many_requests_and_too_large_a_body(emu: AnthropicEmulatorServer) -> None:
    emu.config.max_requests = 2
    answer = Client(emu).create([req("a"), req("b"), req("c")])
    assert answer.status_code == 400 and "at most 2 items" in answer.json()["error"]["message"]
    emu.config.max_body_bytes = 200
    answer = Client(emu).create([req("a", "x" * 300)])
    assert answer.status_code == 413
    assert answer.json()["error"]["type"] == "request_too_large"
    assert emu.state.batches == {}


def test_params_are_validated_late_as_errored_lines(fast: AnthropicEmulatorServer) -> None:
    client = Client(fast)
    no_messages = req("no-messages")
    del no_messages["params"]["messages"]
    batch = created(
        client,
        [
            req("fine"),
            no_messages,
            req("bad-model", model="claude-does-not-exist-9"),
            req("zero", max_tokens=0),
            req("stream", stream=True),
            req("marker", "[[emulator:error Policy says no]]"),
        ],
    )
    ended = client.until_ended(batch["id"])
    assert ended["request_counts"] == {
        "processing": 0,
        "succeeded": 1,
        "errored": 5,
        "canceled": 0,
        "expired": 0,
    }
    by_id = {line["custom_id"]: line["result"] for line in lines(client.results(batch["id"]))}
    assert by_id["fine"]["type"] == "succeeded"
    errors = {rid: r["error"]["error"] for rid, r in by_id.items() if r["type"] == "errored"}
    assert errors["bad-model"]["type"] == "not_found_error"
    assert errors["bad-model"]["message"] == "model: claude-does-not-exist-9"
    assert errors["no-messages"]["message"] == "messages: Field required"
    assert errors["zero"]["message"] == "max_tokens: Input should be greater than or equal to 1"
    assert errors["stream"]["message"] == (
        '"stream=True" is not supported in the Message Batches API'
    )
    assert errors["marker"] == {
        "details": {"error_visibility": "user_facing"},
        "type": "invalid_request_error",
        "message": "Policy says no",
    }
    assert by_id["bad-model"]["error"]["type"] == "error"
    assert by_id["bad-model"]["error"]["request_id"] is None


# --- progress, counts, results ------------------------------------------------------------


def test_counts_stay_zero_until_the_end_by_default(emu: AnthropicEmulatorServer) -> None:
    client = Client(emu)
    batch = created(client, [req(f"r{i}") for i in range(8)])
    seen = []
    while True:
        view = client.batch(batch["id"])
        seen.append(view["request_counts"])
        if view["processing_status"] == "ended":
            break
    assert len(seen) >= 4  # a quarter of the lines per read
    assert all(c == {**c, "processing": 8, "succeeded": 0} for c in seen[:-1])
    assert seen[-1]["succeeded"] == 8 and seen[-1]["processing"] == 0


def test_live_counts_fill_as_lines_finish(emu: AnthropicEmulatorServer) -> None:
    emu.config.live_counts = True
    client = Client(emu)
    batch = created(client, [req(f"r{i}") for i in range(8)])
    first = client.batch(batch["id"])["request_counts"]
    assert first["processing"] == 6 and first["succeeded"] == 2
    assert sum(first.values()) == 8


def test_in_progress_polls_carry_retry_after(emu: AnthropicEmulatorServer) -> None:
    client = Client(emu)
    batch = created(client, [req(f"r{i}") for i in range(8)])
    answer = client.call("GET", f"/v1/messages/batches/{batch['id']}")
    assert answer.headers["retry-after"] == "10"
    assert answer.headers["request-id"].startswith("req_")
    client.until_ended(batch["id"])
    ended = client.call("GET", f"/v1/messages/batches/{batch['id']}")
    assert "retry-after" not in ended.headers


def test_results_404_until_ended_then_any_order_and_mixed_line_ends(
    emu: AnthropicEmulatorServer,
) -> None:
    client = Client(emu)
    ids = [f"r{i}" for i in range(12)]
    batch = created(client, [req(rid) for rid in ids])
    early = client.results(batch["id"])
    assert early.status_code == 404
    assert early.json()["error"] == {
        "type": "not_found_error",
        "message": f"Message Batch {batch['id']} has no available results.",
    }
    ended = client.until_ended(batch["id"])
    assert ended["results_url"] == f"{emu.origin}/v1/messages/batches/{batch['id']}/results"
    answer = client.results(batch["id"])
    assert answer.status_code == 200
    assert answer.headers["Content-Type"] == "application/x-jsonl"
    data = answer.content
    assert b"\r\n" in data and re.search(rb"[^\r]\n", data)
    assert not data.endswith(b"\n")
    got = [line["custom_id"] for line in lines(answer)]
    assert sorted(got) == sorted(ids) and got != ids
    # Fetched through the absolute URL too, with the same headers.
    again = requests.get(ended["results_url"], headers=client.headers, timeout=5)
    assert again.content == data


def test_fast_profile_serves_results_plainly(fast: AnthropicEmulatorServer) -> None:
    client = Client(fast)
    ids = [f"r{i}" for i in range(5)]
    batch = created(client, [req(rid) for rid in ids])
    assert client.batch(batch["id"])["processing_status"] == "ended"  # first read: done
    data = client.results(batch["id"]).content
    assert data.endswith(b"\n") and b"\r\n" not in data
    assert [json.loads(line)["custom_id"] for line in data.splitlines()] == ids


def test_a_succeeded_line_is_a_messages_response(fast: AnthropicEmulatorServer) -> None:
    client = Client(fast)
    tools = [{"name": "lookup", "input_schema": {"type": "object", "properties": {}}}]
    batch = created(
        client,
        [
            req("plain", "Say hi"),
            req("tool", "Go [[emulator:tool-call]]", tools=tools),
            req("think", "Ponder", thinking={"type": "enabled", "budget_tokens": 1024}),
        ],
    )
    client.until_ended(batch["id"])
    by_id = {line["custom_id"]: line["result"] for line in lines(client.results(batch["id"]))}
    plain = by_id["plain"]["message"]
    assert plain["type"] == "message" and plain["role"] == "assistant"
    assert plain["content"] == [{"type": "text", "text": "Emulated answer to: Say hi"}]
    assert plain["stop_reason"] == "end_turn" and plain["model"] == "claude-haiku-4-5"
    assert set(plain["usage"]) >= {
        "input_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
        "cache_creation",
        "output_tokens",
        "service_tier",
    }
    tool = by_id["tool"]["message"]
    assert tool["stop_reason"] == "tool_use"
    assert tool["content"][0]["type"] == "tool_use" and tool["content"][0]["name"] == "lookup"
    think = by_id["think"]["message"]
    assert think["content"][0]["type"] == "thinking"
    details = think["usage"]["output_tokens_details"]
    assert 0 < details["thinking_tokens"] <= think["usage"]["output_tokens"]


def test_cache_control_writes_then_reads(fast: AnthropicEmulatorServer) -> None:
    client = Client(fast)
    system = [{"type": "text", "text": "S" * 400, "cache_control": {"type": "ephemeral"}}]
    hour = [
        {"type": "text", "text": "H" * 400, "cache_control": {"type": "ephemeral", "ttl": "1h"}}
    ]
    batch = created(
        client, [req("w", system=system), req("r", system=system), req("h", system=hour)]
    )
    client.until_ended(batch["id"])
    usage = {
        line["custom_id"]: line["result"]["message"]["usage"]
        for line in lines(client.results(batch["id"]))
    }
    assert usage["w"]["cache_creation_input_tokens"] == 100
    assert usage["w"]["cache_creation"] == {
        "ephemeral_5m_input_tokens": 100,
        "ephemeral_1h_input_tokens": 0,
    }
    assert usage["r"]["cache_read_input_tokens"] == 100
    assert usage["r"]["cache_creation_input_tokens"] == 0
    assert usage["h"]["cache_creation"]["ephemeral_1h_input_tokens"] == 100


# --- cancel, delete, expiry, retention ------------------------------------------------------


def test_cancel_goes_through_canceling_and_keeps_the_in_flight_line(
    emu: AnthropicEmulatorServer,
) -> None:
    client = Client(emu)
    batch = created(client, [req(f"r{i}") for i in range(8)])
    client.batch(batch["id"])  # two lines done
    answer = client.call("POST", f"/v1/messages/batches/{batch['id']}/cancel")
    cancelling = answer.json()
    assert cancelling["processing_status"] == "canceling"
    assert cancelling["cancel_initiated_at"] is not None
    assert client.batch(batch["id"])["processing_status"] == "canceling"
    ended = client.batch(batch["id"])
    assert ended["processing_status"] == "ended"
    assert ended["request_counts"] == {
        "processing": 0,
        "succeeded": 3,
        "errored": 0,
        "canceled": 5,
        "expired": 0,
    }
    results = {line["custom_id"]: line["result"] for line in lines(client.results(batch["id"]))}
    assert [results[f"r{i}"]["type"] for i in range(8)] == ["succeeded"] * 3 + ["canceled"] * 5
    assert results["r5"] == {"type": "canceled"}
    # A cancel of an ended batch answers it unchanged.
    again = client.call("POST", f"/v1/messages/batches/{batch['id']}/cancel")
    assert again.status_code == 200 and again.json()["processing_status"] == "ended"


def test_delete_only_once_ended(emu: AnthropicEmulatorServer) -> None:
    client = Client(emu)
    batch = created(client, [req("a"), req("b"), req("c"), req("d"), req("e")])
    early = client.call("DELETE", f"/v1/messages/batches/{batch['id']}")
    assert early.status_code == 400
    assert early.json()["error"]["message"] == (
        "In progress batches cannot be deleted. Consider canceling the batch instead."
    )
    client.until_ended(batch["id"])
    gone = client.call("DELETE", f"/v1/messages/batches/{batch['id']}")
    assert gone.json() == {"id": batch["id"], "type": "message_batch_deleted"}
    missing = client.call("GET", f"/v1/messages/batches/{batch['id']}")
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == f"Message Batch {batch['id']} not found."
    assert emu.state.count_calls("delete_batch") == 2


def test_expiry_keeps_finished_lines(emu: AnthropicEmulatorServer) -> None:
    emu.config.share_per_read = 0
    emu.config.requests_per_read = 1
    client = Client(emu)
    batch = created(client, [req("a"), req("b"), req("c")])
    client.batch(batch["id"])
    emu.state.advance(24 * 3600)
    ended = client.batch(batch["id"])
    assert ended["processing_status"] == "ended" and ended["ended_at"] == ended["expires_at"]
    assert ended["request_counts"]["succeeded"] == 1 and ended["request_counts"]["expired"] == 2
    kinds = {
        line["custom_id"]: line["result"]["type"] for line in lines(client.results(batch["id"]))
    }
    assert kinds == {"a": "succeeded", "b": "expired", "c": "expired"}


def test_results_are_archived_29_days_after_creation(fast: AnthropicEmulatorServer) -> None:
    client = Client(fast)
    batch = created(client, [req("a")])
    client.until_ended(batch["id"])
    fast.state.advance(29 * 86400)
    view = client.batch(batch["id"])
    assert view["archived_at"] is not None
    assert client.results(batch["id"]).status_code == 404


# --- list -------------------------------------------------------------------------------------


def test_list_is_newest_first_with_cursors(fast: AnthropicEmulatorServer) -> None:
    client = Client(fast)
    ids = [created(client, [req("a")])["id"] for _ in range(5)]
    page = client.call("GET", "/v1/messages/batches", params={"limit": 2}).json()
    assert [b["id"] for b in page["data"]] == ids[::-1][:2]
    assert page["has_more"] is True
    assert (page["first_id"], page["last_id"]) == (ids[4], ids[3])
    rest = client.call(
        "GET", "/v1/messages/batches", params={"limit": 10, "after_id": page["last_id"]}
    ).json()
    assert [b["id"] for b in rest["data"]] == ids[::-1][2:] and rest["has_more"] is False
    back = client.call(
        "GET", "/v1/messages/batches", params={"limit": 1, "before_id": ids[2]}
    ).json()
    assert [b["id"] for b in back["data"]] == [ids[3]]
    default = client.call("GET", "/v1/messages/batches").json()
    assert len(default["data"]) == 5  # default page size 20
    fast.config.max_page_size = 2
    clamped = client.call("GET", "/v1/messages/batches", params={"limit": 1000}).json()
    assert len(clamped["data"]) == 2 and clamped["has_more"] is True
    for limit in (0, 1001):
        bad = client.call("GET", "/v1/messages/batches", params={"limit": limit})
        assert bad.status_code == 400


# --- hostile switches ------------------------------------------------------------------------


def test_hostile_switches(fast: AnthropicEmulatorServer) -> None:
    client = Client(fast)
    batch = created(client, [req("a"), req("b", "[[emulator:error Nope]]")])
    client.until_ended(batch["id"])
    fast.config.flat_errors = True
    fast.config.garbage_result_lines = 2
    fast.config.blank_result_lines = True
    fast.config.missing_result_ids = {"a"}
    data = client.results(batch["id"]).content
    assert b"\n\n" in data and b"<html>" in data
    parsed = [json.loads(line) for line in data.splitlines() if line.strip().startswith(b"{")]
    assert [p.get("custom_id") for p in parsed] == [None, "b"]
    assert parsed[1]["result"]["error"] == {"type": "invalid_request_error", "message": "Nope"}
    fast.config.results_gone_status = 410
    assert client.results(batch["id"]).status_code == 410
    fast.config.page_overflow = 3
    created(client, [req("c")])
    created(client, [req("d")])
    assert len(client.call("GET", "/v1/messages/batches", params={"limit": 1}).json()["data"]) == 3
    fast.config.page_overflow = 0
    fast.config.endless_pagination = ("list_batches",)
    page = client.call("GET", "/v1/messages/batches", params={"limit": 5}).json()
    assert page["has_more"] is True
    wrapped = client.call(
        "GET", "/v1/messages/batches", params={"limit": 5, "after_id": page["last_id"]}
    ).json()
    assert wrapped["has_more"] is True and wrapped["data"]


def test_transient_failures_and_reset(emu: AnthropicEmulatorServer) -> None:
    emu.config.transient_failure_rate = 1.0
    with pytest.raises(requests.ConnectionError):
        for _ in range(2):  # a 503, then a dropped connection
            answer = Client(emu).call("GET", "/v1/messages/batches")
            assert answer.status_code == 503
            assert answer.json()["error"]["type"] == "api_error"
    emu.state.reset()
    assert emu.config.transient_failure_rate == 0.0
    assert emu.state.calls == [] and emu.state.batches == {}
    created(Client(emu), [req("a")])
    assert emu.state.count_calls("create_batch") == 1
    (batch,) = emu.state.batches.values()
    assert [(line.custom_id, line.state) for line in batch.lines] == [("a", "pending")]


def test_config_profiles_and_settings() -> None:
    assert AnthropicEmulatorConfig.fast().share_per_read == 0.0
    assert AnthropicEmulatorConfig.profile("realistic").shuffle_results is True
    with pytest.raises(ValueError):
        AnthropicEmulatorConfig.profile("weird")
    values = parse_settings(
        ["live_counts=true", 'endless_pagination=["list_batches"]', 'missing_result_ids=["a"]'],
        AnthropicEmulatorConfig,
    )
    assert values == {
        "live_counts": True,
        "endless_pagination": ("list_batches",),
        "missing_result_ids": {"a"},
    }


def test_the_management_command_serves_until_sigterm() -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "example_project.settings"}
    process = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "anthropic_emulator",
            "--port",
            "0",
            "--profile",
            "fast",
            "--api-key",
            KEY,
            "--set",
            "live_counts=true",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        url = re.search(r"listening on (\S+),", first)
        assert url, first
        answer = requests.get(
            f"{url.group(1)}/v1/messages/batches",
            headers={"x-api-key": KEY, "anthropic-version": "2023-06-01"},
            timeout=5,
        )
        assert answer.json() == {"data": [], "has_more": False, "first_id": None, "last_id": None}
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
