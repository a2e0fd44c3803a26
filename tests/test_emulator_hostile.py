"""Every hostile case of issue 9 as the emulator serves it, over real HTTP.

Each switch (an ``EmulatorConfig`` field or a ``Fault``) is turned on against the fast profile, so
the only oddity in each answer is the one under test; the assertions are on the bytes served.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from raif_batches.emulator import Fault, run_emulator, unreadable
from raif_batches.emulator.faults import UNREADABLE_BODIES

from .test_emulator import KEY, Client, completion, counts, line


@pytest.fixture
def emu() -> Iterator[Any]:
    with run_emulator(api_key=KEY, profile="fast") as server:
        yield server


def finished(client: Client, lines: list[Any]) -> str:
    batch_id = client.create(lines)["batch_id"]
    client.get(batch_id)
    assert client.get(batch_id)["state"]["num_pending"] == 0
    return batch_id


def raw_page(client: Client, batch_id: str, **params: Any) -> requests.Response:
    return client.http.get(f"{client.url}/batches/{batch_id}/results", params=params)


# -- answers that cannot be read ------------------------------------------------------------------
@pytest.mark.parametrize("what", sorted(UNREADABLE_BODIES))
def test_unreadable_answers(emu: Any, what: str) -> None:
    client = Client(emu)
    batch_id = client.create([line("a")])["batch_id"]
    emu.add_fault(unreadable("get_batch", what))
    answer = client.http.get(f"{client.url}/batches/{batch_id}")
    assert answer.status_code == 200
    assert answer.content == UNREADABLE_BODIES[what][0]
    if what in ("html", "cut", "not_json", "empty"):
        with pytest.raises(ValueError):
            answer.json()
    else:
        assert not isinstance(answer.json(), dict) or "batch_id" not in answer.json()
    assert client.get(batch_id)["batch_id"] == batch_id  # spent: the next read is normal


def test_create_answered_unreadably_after_the_batch_was_made(emu: Any) -> None:
    client = Client(emu)
    file_id = client.upload([line("a")]).json()["id"]
    emu.add_fault(unreadable("create_batch", "html", after_work=True))
    answer = client.http.post(f"{client.url}/batches", json={"name": "n", "input_file_id": file_id})
    assert answer.status_code == 200 and answer.text.startswith("<html>")
    assert [b.name for b in emu.state.batches.values()] == ["n"]  # the paid batch exists


# -- results behind the counters, results gone ----------------------------------------------------
def test_results_lag_reads_partial_pages(emu: Any) -> None:
    emu.config.results_lag_reads = 2
    client = Client(emu)
    batch_id = finished(client, [line(f"r-{i}") for i in range(4)])
    served = [sorted(client.results(batch_id)) for _ in range(3)]
    assert served == [["r-0", "r-2"], ["r-0", "r-2"], ["r-0", "r-1", "r-2", "r-3"]]


@pytest.mark.parametrize(("shape", "body"), [("empty", "results"), ("object", None)])
def test_results_lag_reads_empty_page_or_bare_object(emu: Any, shape: str, body: Any) -> None:
    emu.config.results_lag_reads = 1
    emu.config.results_lag_shape = shape
    client = Client(emu)
    batch_id = finished(client, [line("a"), line("b")])
    lagging = raw_page(client, batch_id).json()
    assert client.counts(batch_id) == counts(2, ok=2)  # the counters say done
    if body is None:
        assert lagging == {}
    else:
        assert lagging == {"results": [], "pagination_token": None}
    assert set(client.results(batch_id)) == {"a", "b"}


def test_results_lag_seconds(emu: Any) -> None:
    emu.config.results_lag_seconds = 30
    emu.config.results_lag_shape = "empty"
    client = Client(emu)
    batch_id = finished(client, [line("a")])
    assert client.results(batch_id) == {}
    emu.state.advance(31)
    assert set(client.results(batch_id)) == {"a"}


@pytest.mark.parametrize("status", [404, 410])
def test_results_gone_for_good_once_the_batch_ended(emu: Any, status: int) -> None:
    emu.config.results_gone_status = status
    emu.config.requests_per_read = 1
    client = Client(emu)
    batch_id = client.create([line("a"), line("b")])["batch_id"]
    client.get(batch_id)
    client.get(batch_id)
    assert set(client.results(batch_id)) == {"a"}  # still running: readable
    client.get(batch_id)
    for _ in range(3):
        gone = raw_page(client, batch_id)
        assert gone.status_code == status and set(gone.json()) == {"code", "error"}


def test_rejection_while_lines_are_pending(emu: Any) -> None:
    emu.config.reject_pending_message = "Batch was cancelled by xAI: quota exceeded"
    emu.config.requests_per_read = 1
    client = Client(emu)
    batch_id = client.create([line(f"r-{i}") for i in range(3)])["batch_id"]
    client.get(batch_id)
    rejected = client.get(batch_id)
    assert rejected["cancel_by_xai_message"] == "Batch was cancelled by xAI: quota exceeded"
    assert rejected["state"] == counts(3, pending=2, ok=1)
    assert set(client.results(batch_id)) == {"r-0"}
    settled = client.get(batch_id)
    assert settled["state"] == counts(3, ok=1, cancelled=2)
    assert settled["cancel_by_xai_message"].startswith("Batch was cancelled by xAI")


# -- result entries -------------------------------------------------------------------------------
@pytest.mark.parametrize("error_first", [True, False])
def test_the_same_custom_id_twice_across_pages(emu: Any, error_first: bool) -> None:
    emu.config.duplicate_result_ids = {"r-3"}
    emu.config.duplicate_error_first = error_first
    client = Client(emu)
    batch_id = finished(client, [line(f"r-{i}") for i in range(4)])
    pages, token = [], None
    while True:
        page = client.page(batch_id, limit=2, pagination_token=token)
        pages.append(page["results"])
        token = page["pagination_token"]
        if not token:
            break
    where = [
        (n, "error" if "error" in e["batch_result"] else "ok")
        for n, p in enumerate(pages)
        for e in p
        if e["batch_request_id"] == "r-3"
    ]
    assert where == ([(0, "error"), (1, "ok")] if error_first else [(1, "ok"), (1, "error")])


@pytest.mark.parametrize(
    ("shape", "expected"),
    [
        ("string", {"batch_result": {"error": "boom"}}),
        ("object", {"batch_result": {"error": {"code": 3, "message": "boom"}}}),
        ("error_message", {"error_message": "boom"}),
        ("error_message_object", {"error_message": {"code": 3, "message": "boom"}}),
        ("top_level", {"error": "boom"}),
        ("top_level_object", {"error": {"code": 3, "message": "boom"}}),
    ],
)
def test_every_error_envelope(emu: Any, shape: str, expected: dict[str, Any]) -> None:
    emu.config.error_shape = shape
    client = Client(emu)
    batch_id = finished(client, [line("a", "[[emulator:error boom]]")])
    assert client.results(batch_id)["a"] == {"batch_request_id": "a", **expected}


def test_top_level_response_envelope(emu: Any) -> None:
    emu.config.success_shape = "response"
    client = Client(emu)
    batch_id = finished(client, [line("a")])
    entry = client.results(batch_id)["a"]
    assert set(entry) == {"batch_request_id", "response"}
    assert entry["response"]["chat_get_completion"]["object"] == "chat.completion"


@pytest.mark.parametrize(("quirk", "kind"), [("response_string", str), ("response_list", list)])
def test_a_response_that_is_not_an_object(emu: Any, quirk: str, kind: type) -> None:
    emu.config.line_quirks = {"a": quirk}
    client = Client(emu)
    batch_id = finished(client, [line("a"), line("b")])
    assert client.counts(batch_id) == counts(2, ok=2)  # the provider counts it a success
    results = client.results(batch_id)
    assert isinstance(results["a"]["batch_result"]["response"], kind)
    assert completion(results["b"])["object"] == "chat.completion"


@pytest.mark.parametrize("how", ["config", "marker"])
def test_nul_and_lone_surrogate_in_text_and_finish_reason(emu: Any, how: str) -> None:
    client = Client(emu)
    if how == "config":
        emu.config.line_quirks = {"n": "nul", "s": "surrogate"}
        lines = [line("n"), line("s")]
    else:
        lines = [
            line("n", "hi [[emulator:quirk nul]]"),
            line("s", "hi [[emulator:quirk surrogate]]"),
        ]
    batch_id = finished(client, lines)
    text = raw_page(client, batch_id).text
    assert "\\u0000" in text and "\\ud800" in text
    results = client.results(batch_id)
    nul, lone = (completion(results[x])["choices"][0] for x in ("n", "s"))
    assert "\x00" in nul["message"]["content"] and nul["finish_reason"] == "stop\x00"
    assert "\ud800" in lone["message"]["content"] and lone["finish_reason"] == "stop\ud800"


def test_negative_and_over_range_tokens_and_a_cost_of_ten_to_the_21(emu: Any) -> None:
    emu.config.line_quirks = {"neg": "negative_tokens", "big": "huge_tokens", "dear": "huge_cost"}
    client = Client(emu)
    batch_id = finished(client, [line("neg"), line("big"), line("dear"), line("ok")])
    results = client.results(batch_id)
    neg, big, dear, ok = (completion(results[x])["usage"] for x in ("neg", "big", "dear", "ok"))
    assert neg["prompt_tokens"] < 0 and neg["completion_tokens"] < 0
    assert big["prompt_tokens"] > 2**63 - 1
    assert big["completion_tokens_details"]["reasoning_tokens"] == 10**30
    assert dear["cost_in_usd_ticks"] == 10**21
    total = client.get(batch_id)["cost_breakdown"]["total_cost_usd_ticks"]
    assert (
        total
        == 10**21 + neg["cost_in_usd_ticks"] + big["cost_in_usd_ticks"] + ok["cost_in_usd_ticks"]
    )


# -- odd values in the batch object ---------------------------------------------------------------
@pytest.mark.parametrize("value", ["9999-12-31", 1e300])
def test_odd_expire_time(emu: Any, value: Any) -> None:
    emu.config.expire_time_value = value
    client = Client(emu)
    batch_id = client.create([line("a")])["batch_id"]
    assert client.get(batch_id)["expire_time"] == value
    assert (
        f'"expire_time": {json.dumps(value)}'
        in client.http.get(f"{client.url}/batches/{batch_id}").text
    )


def test_json_nested_thousands_deep(emu: Any) -> None:
    emu.config.nested_depth = 5000
    client = Client(emu)
    batch_id = client.create([line("a")])["batch_id"]
    answer = client.http.get(f"{client.url}/batches/{batch_id}")
    # What a parser makes of it differs by Python version (3.13's json reads 5,000 levels that
    # 3.11's refuses); the client's own bound is tested in test_hostile_wire.py.
    assert answer.status_code == 200 and "[" * 5000 + "]" * 5000 in answer.text


def test_bad_content_encoding(emu: Any) -> None:
    client = Client(emu)
    batch_id = client.create([line("a")])["batch_id"]
    emu.add_fault(Fault("get_batch", "headers", headers={"Content-Encoding": "gzip"}))
    with pytest.raises(requests.exceptions.ContentDecodingError):
        client.http.get(f"{client.url}/batches/{batch_id}")
    assert client.get(batch_id)["batch_id"] == batch_id


def test_redirect_loop(emu: Any) -> None:
    client = Client(emu)
    emu.add_fault(Fault("list_batches", "redirect_loop", times=None))
    with pytest.raises(requests.TooManyRedirects):
        client.http.get(f"{client.url}/batches")
    assert {c.status for c in emu.state.calls} == {302}
    assert len(emu.state.calls) == client.http.max_redirects + 1


# -- big and endless pages ------------------------------------------------------------------------
def test_big_entries_and_more_entries_than_the_limit(emu: Any) -> None:
    emu.config.result_padding_kb = 140
    emu.config.page_overflow = 3
    client = Client(emu)
    batch_id = finished(client, [line(f"r-{i}") for i in range(6)])
    page = client.page(batch_id, limit=2)
    assert len(page["results"]) == 5 and page["pagination_token"]
    entry = page["results"][0]
    assert len(json.dumps(entry)) > 140 * 1024
    assert len(completion(entry)["choices"][-1]["message"]["reasoning_content"]) == 140 * 1024


@pytest.mark.parametrize("endpoint", ["list_results", "list_batches"])
def test_a_pagination_token_that_changes_and_never_ends(emu: Any, endpoint: str) -> None:
    emu.config.endless_pagination = (endpoint,)
    client = Client(emu)
    batch_id = finished(client, [line("a"), line("b")])
    url = f"{client.url}/batches" + (f"/{batch_id}/results" if endpoint == "list_results" else "")
    tokens, token, entries = [], None, 0
    for _ in range(6):
        page = client.http.get(url, params={"limit": 1, "pagination_token": token}).json()
        entries += len(page["results" if endpoint == "list_results" else "batches"])
        token = page["pagination_token"]
        assert token
        tokens.append(token)
    assert len(set(tokens)) == 6
    assert entries == (2 if endpoint == "list_results" else 1)  # nothing served twice


def test_slow_answers(emu: Any) -> None:
    client = Client(emu)
    emu.config.latency = 0.5
    with pytest.raises(requests.exceptions.ReadTimeout):
        client.http.get(f"{client.url}/batches", timeout=(2, 0.05))
    emu.config.latency = 0
    emu.add_fault(Fault("list_batches", "latency", delay=0.5))
    with pytest.raises(requests.exceptions.ReadTimeout):
        client.http.get(f"{client.url}/batches", timeout=(2, 0.05))
