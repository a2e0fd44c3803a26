"""The xAI emulator over real HTTP: every provider behaviour a client can meet, quirks included.

Plain ``requests`` against ``run_emulator()``; no database, no Django settings needed.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from raif_batches.emulator import EmulatorConfig, EmulatorServer, Fault, run_emulator

pytest_plugins = ["raif_batches.emulator.pytest_plugin"]

KEY = "test-key"


@pytest.fixture(autouse=True)
def _fast_raif_settings() -> None:
    """Shadows the package conftest's autouse fixture: these tests need no Django settings, and
    must also run with ``-p no:django``."""


@pytest.fixture
def emu() -> Iterator[EmulatorServer]:
    with run_emulator(api_key=KEY, profile="fast") as server:
        yield server


class Client:
    """The few calls a batch client makes, kept thin so tests read like the wire."""

    def __init__(self, emu: EmulatorServer) -> None:
        self.url = emu.base_url
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Bearer {KEY}"

    def upload(self, lines: list[Any], **form: str) -> requests.Response:
        text = "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n"
        files = [(k, (None, v)) for k, v in form.items()] + [("file", ("batch.jsonl", text))]
        return self.http.post(f"{self.url}/files", files=files)

    def create(self, lines: list[Any], name: str = "b") -> dict[str, Any]:
        file_id = self.upload(lines).json()["id"]
        body = {"name": name, "input_file_id": file_id}
        answer = self.http.post(f"{self.url}/batches", json=body)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def get(self, batch_id: str) -> dict[str, Any]:
        answer = self.http.get(f"{self.url}/batches/{batch_id}")
        assert answer.status_code == 200, answer.text
        return answer.json()

    def counts(self, batch_id: str) -> dict[str, int]:
        return self.get(batch_id)["state"]

    def page(self, batch_id: str, kind: str = "results", **params: Any) -> dict[str, Any]:
        answer = self.http.get(f"{self.url}/batches/{batch_id}/{kind}", params=params)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def results(self, batch_id: str, limit: int = 100) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        token = None
        while True:
            page = self.page(batch_id, limit=limit, pagination_token=token)
            found.update({entry["batch_request_id"]: entry for entry in page["results"]})
            token = page["pagination_token"]
            if not token:
                return found

    def cancel(self, batch_id: str) -> dict[str, Any]:
        return self.http.post(f"{self.url}/batches/{batch_id}:cancel").json()


def line(
    custom_id: str,
    text: str = "What is 2+2?",
    model: str = "grok-4.3",
    system: str | None = None,
    **body: Any,
) -> dict[str, Any]:
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": text})
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": messages, **body},
    }


def completion(entry: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = entry["batch_result"]["response"]["chat_get_completion"]
    return result


def counts(
    n: int = 0, pending: int = 0, ok: int = 0, err: int = 0, cancelled: int = 0
) -> dict[str, int]:
    return {
        "num_requests": n,
        "num_pending": pending,
        "num_success": ok,
        "num_error": err,
        "num_cancelled": cancelled,
    }


# -- the happy path -------------------------------------------------------------------------------
def test_upload_create_validate_and_finish(emu: EmulatorServer) -> None:
    emu.config.validation_reads = 1
    client = Client(emu)
    uploaded = client.upload([line("t-3"), line("t-1"), line("t-2")], purpose="batch")
    assert uploaded.status_code == 200
    file = uploaded.json()
    assert file["id"].startswith("file_") and file["object"] == "file"
    assert file["bytes"] > 0 and file["filename"] == "batch.jsonl" and file["expires_at"] is None

    created = client.http.post(
        f"{client.url}/batches", json={"name": "first", "input_file_id": file["id"]}
    ).json()
    assert created["batch_id"].startswith("batch_") and created["name"] == "first"
    assert created["state"] == counts()  # validation is asynchronous
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", created["create_time"])
    assert created["cancel_time"] is None and created["cancel_by_xai_message"] is None
    assert client.counts(created["batch_id"]) == counts()  # the one validation read
    done = client.get(created["batch_id"])
    assert done["state"] == counts(3, ok=3)

    results = client.page(created["batch_id"])
    ids = [entry["batch_request_id"] for entry in results["results"]]
    assert ids == ["t-1", "t-2", "t-3"] and results["pagination_token"] is None
    ticks = sum(completion(e)["usage"]["cost_in_usd_ticks"] for e in results["results"])
    assert ticks > 0 and done["cost_breakdown"]["total_cost_usd_ticks"] == ticks
    first = completion(results["results"][0])
    assert first["object"] == "chat.completion" and first["model"] == "grok-4.3"
    assert first["choices"][0]["message"]["content"] == "Emulated answer to: What is 2+2?"
    assert emu.state.count_calls("create_batch") == 1
    assert emu.state.batches[created["batch_id"]].name == "first"


def test_progress_per_read_serves_partial_results() -> None:
    with run_emulator(
        api_key=KEY, config=EmulatorConfig.fast(requests_per_read=2, validation_reads=1)
    ) as emu:
        client = Client(emu)
        batch_id = client.create([line(f"r-{i}") for i in range(5)])["batch_id"]
        assert client.counts(batch_id) == counts()
        assert client.counts(batch_id) == counts(5, pending=3, ok=2)
        assert len(client.results(batch_id)) == 2  # readable while the batch still runs
        assert client.counts(batch_id) == counts(5, pending=1, ok=4)
        assert client.counts(batch_id) == counts(5, ok=5)


def test_progress_by_clock() -> None:
    config = EmulatorConfig.fast(seconds_per_request=10, validation_reads=0)
    with run_emulator(api_key=KEY, config=config) as emu:
        client = Client(emu)
        batch_id = client.create([line(f"r-{i}") for i in range(4)])["batch_id"]
        assert client.counts(batch_id)["num_pending"] == 4
        emu.state.advance(25)
        assert client.counts(batch_id) == counts(4, pending=2, ok=2)
        emu.state.advance(1000)
        assert client.counts(batch_id) == counts(4, ok=4)


@pytest.mark.parametrize("end", [None, ""])
def test_results_sorted_and_paginated(end: str | None) -> None:
    with run_emulator(
        api_key=KEY, config=EmulatorConfig.fast(pagination_end=end, validation_reads=0)
    ) as emu:
        client = Client(emu)
        order = ["g", "c", "a", "f", "b", "e", "d"]
        batch_id = client.create([line(x) for x in order])["batch_id"]
        pages, token = [], None
        while True:
            page = client.page(batch_id, limit=3, pagination_token=token)
            pages.append([e["batch_request_id"] for e in page["results"]])
            token = page["pagination_token"]
            if not token:
                break
        assert pages == [["a", "b", "c"], ["d", "e", "f"], ["g"]]
        assert token == end and "pagination_token" in page
        assert (
            client.http.get(
                f"{client.url}/batches/{batch_id}/results", params={"limit": 0}
            ).status_code
            == 400
        )
        assert (
            client.http.get(
                f"{client.url}/batches/{batch_id}/results", params={"pagination_token": "!!"}
            ).status_code
            == 400
        )
        big = client.page(batch_id, limit=5000)  # clamped to 1000, not refused
        assert len(big["results"]) == 7
        requests_page = client.page(batch_id, "requests", limit=10)
        meta = requests_page["batch_request_metadata"]
        assert [m["state"] for m in meta] == ["succeeded"] * 7
        assert meta[0]["endpoint"] == "xai_api.Chat/GetCompletion" and meta[0]["model"]


@pytest.mark.parametrize("shape", ["string", "object", "error_message"])
def test_per_line_errors_in_each_shape(shape: str) -> None:
    config = EmulatorConfig.fast(error_shape=shape, validation_reads=0)
    with run_emulator(api_key=KEY, config=config) as emu:
        client = Client(emu)
        batch_id = client.create(
            [
                line("a-ok"),
                line("b-neg", max_tokens=-5),
                line("c-marked", "[[emulator:error boom]]"),
            ]
        )["batch_id"]
        assert client.counts(batch_id) == counts(3, ok=1, err=2)
        results = client.results(batch_id)
        expected = "Maximum number of tokens max_tokens must be positive but max_tokens = -5"
        for rid, message in (("b-neg", expected), ("c-marked", "boom")):
            entry = results[rid]
            if shape == "string":
                assert entry["batch_result"] == {"error": message}
            elif shape == "object":
                assert entry["batch_result"] == {"error": {"code": 3, "message": message}}
            else:
                assert entry["error_message"] == message and "batch_result" not in entry
            assert "usage" not in json.dumps(entry)
        assert completion(results["a-ok"])["usage"]["prompt_tokens"] > 0


# -- errors ---------------------------------------------------------------------------------------
def test_bad_or_missing_key_is_400_and_never_echoed(emu: EmulatorServer) -> None:
    for headers in ({"Authorization": "Bearer sk-very-secret"}, {}):
        answer = requests.get(f"{emu.base_url}/batches", headers=headers)
        assert answer.status_code == 400
        body = answer.json()
        assert body["code"] == "Client specified an invalid argument"
        assert body["error"].startswith("Incorrect API key provided.")
        assert "sk-very-secret" not in answer.text
    assert "sk-very-secret" not in repr(emu.state.calls)
    assert [c.status for c in emu.state.calls] == [400, 400]


def test_unknown_entities_are_404(emu: EmulatorServer) -> None:
    client = Client(emu)
    for answer in (
        client.http.get(f"{client.url}/batches/batch_nope"),
        client.http.get(f"{client.url}/batches/batch_nope/results"),
        client.http.post(f"{client.url}/batches", json={"name": "x", "input_file_id": "file_no"}),
    ):
        assert answer.status_code == 404
        assert answer.json()["code"] == "Some requested entity was not found"
        assert set(answer.json()) == {"code", "error"}


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            [line("a"), '{"custom_id": "b", oops', line("c")],
            "JSONL file validation failed: line 2: invalid JSON: ",
        ),
        (
            [line("a"), line("b", model="grok-4.6")],
            "JSONL file validation failed: Model grok-4.6 is not supported for batch processing.",
        ),
        ([line("a"), line("a")], "JSONL file validation failed: line 2: duplicate custom_id 'a'"),
        (
            [{"custom_id": "a", "url": "/v1/chat/completions", "body": {}}],
            "JSONL file validation failed: line 1: missing required field 'method'",
        ),
    ],
)
def test_validation_failure_cancels_the_whole_batch(
    emu: EmulatorServer, lines: list[Any], message: str
) -> None:
    emu.config.validation_reads = 1
    client = Client(emu)
    batch_id = client.create(lines)["batch_id"]
    assert client.counts(batch_id) == counts()
    batch = client.get(batch_id)
    assert batch["cancel_by_xai_message"].startswith(message)
    assert batch["cancel_time"] is not None
    assert batch["state"] == counts()  # xAI keeps every counter of a refused file at 0
    emu.config.rejected_counts = "cancelled"
    assert client.counts(batch_id) == counts(len(lines), cancelled=len(lines))
    assert client.results(batch_id) == {}


def test_upload_expires_after_must_be_in_range_and_first(emu: EmulatorServer) -> None:
    client = Client(emu)
    good = client.upload([line("a")], expires_after="3600")
    assert good.status_code == 200 and good.json()["expires_at"] == good.json()["created_at"] + 3600
    assert client.upload([line("a")], expires_after="60").status_code == 400
    late = client.http.post(
        f"{client.url}/files",
        files=[("file", ("batch.jsonl", json.dumps(line("a")))), ("expires_after", (None, "3600"))],
    )
    assert late.status_code == 400 and "before file" in late.json()["error"]


# -- cancel, revert, expiry -----------------------------------------------------------------------
def test_cancel_then_revert_makes_counters_non_monotonic() -> None:
    config = EmulatorConfig.fast(
        requests_per_read=1, cancel_revert_count=2, cancel_revert_after=10, validation_reads=1
    )
    with run_emulator(api_key=KEY, config=config) as emu:
        client = Client(emu)
        batch_id = client.create([line(f"r-{i}") for i in range(4)])["batch_id"]
        client.get(batch_id)
        assert client.counts(batch_id) == counts(4, pending=3, ok=1)
        cancelled = client.cancel(batch_id)
        assert cancelled["cancel_time"] is not None
        assert cancelled["state"] == counts(4, ok=1, cancelled=3)
        assert client.results(batch_id)["r-3"]["batch_result"] == {"error": "Batch cancelled"}
        emu.state.advance(5)
        assert client.counts(batch_id) == counts(4, ok=1, cancelled=3)
        emu.state.advance(6)
        assert client.counts(batch_id) == counts(4, ok=3, cancelled=1)
        results = client.results(batch_id)
        assert completion(results["r-1"])["choices"][0]["message"]["content"]
        assert completion(results["r-2"])["usage"]["cost_in_usd_ticks"] > 0
        assert results["r-3"]["batch_result"] == {"error": "Batch cancelled"}


def test_cancel_of_finished_batch_only_stamps_cancel_time(emu: EmulatorServer) -> None:
    emu.config.validation_reads = 0
    client = Client(emu)
    batch_id = client.create([line("a"), line("b")])["batch_id"]
    assert client.counts(batch_id) == counts(2, ok=2)
    cancelled = client.cancel(batch_id)
    assert cancelled["cancel_time"] is not None and cancelled["state"] == counts(2, ok=2)
    assert client.http.post(f"{client.url}/batches/batch_x:cancel").status_code == 404


def test_expiry_cancels_pending_and_keeps_finished_results() -> None:
    config = EmulatorConfig.fast(
        seconds_per_request=10, validation_reads=0, expire_after_seconds=100, time_format="rfc3339"
    )
    with run_emulator(api_key=KEY, config=config) as emu:
        client = Client(emu)
        batch = client.create([line(f"r-{i:02d}") for i in range(20)])
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", batch["expire_time"])
        emu.state.advance(55)
        assert client.counts(batch["batch_id"]) == counts(20, pending=15, ok=5)
        emu.state.advance(1000)
        assert client.counts(batch["batch_id"]) == counts(20, ok=10, cancelled=10)
        results = client.results(batch["batch_id"])
        assert len(results) == 20 and "response" in results["r-09"]["batch_result"]
        assert results["r-10"]["batch_result"] == {"error": "Batch cancelled"}


def test_omit_state_reads(emu: EmulatorServer) -> None:
    client = Client(emu)
    batch_id = client.create([line("a")])["batch_id"]
    emu.config.omit_state_reads = 1
    assert "state" not in client.get(batch_id)
    assert "state" in client.get(batch_id)


def test_list_batches_pages_team_wide(emu: EmulatorServer) -> None:
    client = Client(emu)
    for i in range(5):
        client.create([line("a")], name=f"batch-{i}")
    names, token = [], None
    while True:
        page = client.http.get(
            f"{client.url}/batches", params={"limit": 2, "pagination_token": token}
        ).json()
        names += [b["name"] for b in page["batches"]]
        token = page["pagination_token"]
        if token is None:
            break
    assert names == [f"batch-{i}" for i in range(5)]


# -- inline mode ----------------------------------------------------------------------------------
def test_inline_mode_and_its_refusals(emu: EmulatorServer) -> None:
    client = Client(emu)
    inline = client.http.post(f"{client.url}/batches", json={"name": "inline"}).json()
    url = f"{client.url}/batches/{inline['batch_id']}/requests"

    def add(rid: str, text: str = "hi", model: str = "grok-4.3") -> requests.Response:
        body = {"model": model, "messages": [{"role": "user", "content": text}]}
        return client.http.post(
            url,
            json={
                "batch_requests": [
                    {"batch_request_id": rid, "batch_request": {"chat_get_completion": body}}
                ]
            },
        )

    assert add("x").status_code == 200
    assert add("x").status_code == 200  # same content: idempotent
    assert add("x", "other").status_code == 412
    refused = add("y", model="grok-3-mini")
    assert refused.status_code == 400
    assert refused.json()["error"] == "Model grok-3-mini is not supported for batch processing."
    assert client.counts(inline["batch_id"]) == counts(1, ok=1)

    file_batch = client.create([line("a")])["batch_id"]
    sealed = client.http.post(
        f"{client.url}/batches/{file_batch}/requests", json={"batch_requests": []}
    )
    assert sealed.status_code == 412
    assert sealed.json()["error"] == "Cannot add inline requests to a file-based batch"
    client.cancel(inline["batch_id"])
    assert add("z").status_code == 403


# -- completions ----------------------------------------------------------------------------------
def test_reasoning_tokens_are_outside_completion_tokens(emu: EmulatorServer) -> None:
    emu.config.validation_reads = 0
    client = Client(emu)
    batch_id = client.create(
        [
            line("a", model="grok-4.3"),
            line("b", model="grok-4.20-0309-non-reasoning"),
        ]
    )["batch_id"]
    results = client.results(batch_id)
    reasoning = completion(results["a"])
    usage = reasoning["usage"]
    reasoning_tokens = usage["completion_tokens_details"]["reasoning_tokens"]
    assert reasoning_tokens > usage["completion_tokens"] > 0
    assert usage["total_tokens"] == (
        usage["prompt_tokens"] + usage["completion_tokens"] + reasoning_tokens
    )
    assert reasoning["choices"][0]["message"]["reasoning_content"]
    # Reasoning is billed as output: $1.25 in, $2.50 out per million, 20% batch discount.
    expected = usage["prompt_tokens"] * 1.25 + (usage["completion_tokens"] + reasoning_tokens) * 2.5
    assert usage["cost_in_usd_ticks"] == round(expected * 10_000 * 0.8)
    plain = completion(results["b"])
    assert plain["usage"]["completion_tokens_details"]["reasoning_tokens"] == 0
    assert "reasoning_content" not in plain["choices"][0]["message"]


def test_json_tool_calls_and_cache(emu: EmulatorServer) -> None:
    emu.config.validation_reads = 0
    client = Client(emu)
    tool = {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
    batch_id = client.create(
        [
            line("json", response_format={"type": "json_object"}, system="Be brief"),
            line(
                "broken",
                "[[emulator:invalid-json]] hi",
                response_format={"type": "json_object"},
                system="Be brief",
            ),
            line("tool", "[[emulator:tool-call]] weather?", tools=[tool]),
        ]
    )["batch_id"]
    results = client.results(batch_id)
    answer = json.loads(completion(results["json"])["choices"][0]["message"]["content"])
    assert set(answer) == {"answer", "label"}
    broken = completion(results["broken"])
    with pytest.raises(ValueError):
        json.loads(broken["choices"][0]["message"]["content"])
    assert completion(results["json"])["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert broken["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
    choice = completion(results["tool"])["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["function"]["name"] == "lookup"
    assert "city" in json.loads(call["function"]["arguments"])


def test_missing_and_extra_result_ids(emu: EmulatorServer) -> None:
    emu.config.validation_reads = 0
    emu.config.missing_result_ids = {"b"}
    emu.config.extra_result_ids = {"ghost"}
    client = Client(emu)
    batch_id = client.create([line("a"), line("b")])["batch_id"]
    assert set(client.results(batch_id)) == {"a", "ghost"}


def test_fifty_thousand_lines() -> None:
    config = EmulatorConfig.fast(validation_reads=0)
    with run_emulator(api_key=KEY, config=config) as emu:
        client = Client(emu)
        padding = "x" * 200
        batch_id = client.create([line(f"r-{i:05d}", f"Q{i} {padding}") for i in range(50_000)])
        assert client.counts(batch_id["batch_id"])["num_success"] == 50_000
        page = client.page(batch_id["batch_id"], limit=1000)
        assert len(page["results"]) == 1000 and page["pagination_token"]


# -- faults ---------------------------------------------------------------------------------------
def test_status_fault_then_recovery_and_retry_after(emu: EmulatorServer) -> None:
    client = Client(emu)
    emu.state.add_fault(Fault(endpoint="list_batches", kind="status", status=500))
    emu.state.add_fault(Fault(endpoint="get_batch", kind="status", status=429, retry_after=2))
    failed = client.http.get(f"{client.url}/batches")
    assert failed.status_code == 500 and set(failed.json()) == {"code", "error"}
    assert client.http.get(f"{client.url}/batches").status_code == 200
    limited = client.http.get(f"{client.url}/batches/batch_x")
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "2"
    assert [c.status for c in emu.state.calls] == [500, 200, 429]


def test_drop_and_accept_then_drop(emu: EmulatorServer) -> None:
    client = Client(emu)
    file_id = client.upload([line("a")]).json()["id"]
    body = {"name": "lost", "input_file_id": file_id}
    emu.state.add_fault(Fault(endpoint="create_batch", kind="drop"))
    with pytest.raises(requests.ConnectionError):
        client.http.post(f"{client.url}/batches", json=body)
    assert emu.state.batches == {}
    emu.state.add_fault(Fault(endpoint="create_batch", kind="accept_then_drop"))
    with pytest.raises(requests.ConnectionError):
        client.http.post(f"{client.url}/batches", json=body)
    assert [b.name for b in emu.state.batches.values()] == ["lost"]  # created, answer lost
    assert [c.status for c in emu.state.calls if c.endpoint == "create_batch"] == [0, 0]
    assert client.http.get(f"{client.url}/batches").status_code == 200


def test_latency_fault(emu: EmulatorServer) -> None:
    emu.state.add_fault(Fault(endpoint=None, kind="latency", delay=0.3))
    started = time.monotonic()
    assert Client(emu).http.get(f"{emu.base_url}/batches").status_code == 200
    assert time.monotonic() - started >= 0.3


@pytest.mark.parametrize("kind", ["repeat_page", "overlap_page"])
def test_page_faults(emu: EmulatorServer, kind: str) -> None:
    emu.config.validation_reads = 0
    client = Client(emu)
    batch_id = client.create([line(f"r-{i}") for i in range(9)])["batch_id"]
    emu.state.add_fault(Fault(endpoint="list_results", kind=kind))
    first = client.page(batch_id, limit=4)
    second = client.page(batch_id, limit=4, pagination_token=first["pagination_token"])
    ids = [[e["batch_request_id"] for e in p["results"]] for p in (first, second)]
    if kind == "repeat_page":
        assert ids == [["r-0", "r-1", "r-2", "r-3"]] * 2
    else:
        assert ids == [["r-0", "r-1", "r-2", "r-3"], ["r-2", "r-3", "r-4", "r-5"]]
    assert set(client.results(batch_id)) == {f"r-{i}" for i in range(9)}


def test_transient_failure_rate_alternates_503_and_drop() -> None:
    with run_emulator(api_key=KEY, config=EmulatorConfig.fast(transient_failure_rate=1.0)) as emu:
        client = Client(emu)
        assert client.http.get(f"{client.url}/batches").status_code == 503
        with pytest.raises(requests.ConnectionError):
            client.http.get(f"{client.url}/batches")
        emu.config.transient_failure_rate = 0.0
        assert client.http.get(f"{client.url}/batches").status_code == 200
        assert [c.status for c in emu.state.calls] == [503, 0, 200]


def test_probability_faults_replay_with_the_seed() -> None:
    outcomes = []
    for _ in range(2):
        with run_emulator(api_key=KEY, config=EmulatorConfig.fast(seed=7)) as emu:
            emu.state.add_fault(Fault(None, "status", status=503, times=None, probability=0.5))
            client = Client(emu)
            outcomes.append(
                [client.http.get(f"{client.url}/batches").status_code for _ in range(12)]
            )
    assert outcomes[0] == outcomes[1] and {200, 503} == set(outcomes[0])


# -- the pytest fixtures --------------------------------------------------------------------------
def test_function_fixture(xai_emulator: EmulatorServer) -> None:
    assert xai_emulator.base_url.startswith("http://127.0.0.1:")
    assert requests.get(
        f"{xai_emulator.base_url}/batches",
        headers={"Authorization": f"Bearer {xai_emulator.api_key}"},
    ).ok


def test_session_fixture_resets(xai_emulator_server: EmulatorServer) -> None:
    xai_emulator_server.config.validation_reads = 5
    Client(xai_emulator_server).create([line("a")])
    xai_emulator_server.state.reset()
    assert xai_emulator_server.state.batches == {} and xai_emulator_server.state.calls == []
    assert xai_emulator_server.config.validation_reads == 2  # the realistic default
