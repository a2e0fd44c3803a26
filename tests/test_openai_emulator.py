"""The OpenAI emulator over real HTTP: each behaviour of the fact sheet, as a client sees it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from raif_batches.emulator import Fault, run_emulator
from raif_batches.emulator.openai import OpenAIEmulatorConfig, OpenAIEmulatorServer
from raif_batches.exceptions import ProviderAuthenticationError, ProviderNotFound
from raif_batches.providers.base import LostCreate
from raif_batches.providers.openai import OpenAIClient, OpenAIStrategy

KEY = "sk-emulated-secret-key"


@pytest.fixture
def emu() -> Iterator[OpenAIEmulatorServer]:
    with run_emulator(api_key=KEY, provider="openai") as server:
        assert isinstance(server, OpenAIEmulatorServer)
        yield server


class Api:
    """A bare client: the wire as any OpenAI client sends it."""

    def __init__(self, emu: OpenAIEmulatorServer, key: str = KEY) -> None:
        self.base = emu.base_url
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {key}"

    def get(self, path: str, **params: Any) -> requests.Response:
        return self.session.get(self.base + path, params=params, timeout=5)

    def post(self, path: str, body: Any = None) -> requests.Response:
        return self.session.post(self.base + path, json=body, timeout=5)

    def upload(self, content: bytes, filename: str = "in.jsonl", purpose: str = "batch") -> Any:
        return self.session.post(
            self.base + "/files",
            data={"purpose": purpose},
            files={"file": (filename, content)},
            timeout=5,
        )

    def batch(self, lines: list[dict[str, Any]], **metadata: str) -> dict[str, Any]:
        content = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
        uploaded = self.upload(content)
        assert uploaded.status_code == 200, uploaded.text
        answer = self.post(
            "/batches",
            {
                "input_file_id": uploaded.json()["id"],
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
                "metadata": metadata,
            },
        )
        assert answer.status_code == 200, answer.text
        return answer.json()  # type: ignore[no-any-return]

    def poll(self, batch_id: str, until: tuple[str, ...], reads: int = 50) -> list[dict[str, Any]]:
        seen = []
        for _ in range(reads):
            seen.append(self.get(f"/batches/{batch_id}").json())
            if seen[-1]["status"] in until:
                return seen
        raise AssertionError(f"never reached {until}: {[s['status'] for s in seen]}")

    def rows(self, file_id: str | None) -> list[dict[str, Any]]:
        if not file_id:
            return []
        answer = self.get(f"/files/{file_id}/content")
        assert answer.status_code == 200
        return [json.loads(line) for line in answer.content.splitlines() if line.strip()]


def line(custom_id: str, text: str = "Hello", model: str = "gpt-4.1-nano", **body: Any) -> Any:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": text}], **body},
    }


def test_upload_returns_a_file_object_and_refuses_other_formats(emu: Any) -> None:
    api = Api(emu)
    answer = api.upload(b"{not json at all\n")  # a malformed .jsonl uploads fine
    assert answer.status_code == 200
    uploaded = answer.json()
    assert uploaded["id"].startswith("file-") and uploaded["purpose"] == "batch"
    assert uploaded["bytes"] == 17 and uploaded["status"] == "processed"
    assert uploaded["expires_at"] == uploaded["created_at"] + 30 * 86400
    assert api.get(f"/files/{uploaded['id']}").json()["filename"] == "in.jsonl"
    wrong = api.upload(b"{}", filename="in.txt")
    assert wrong.status_code == 400
    assert wrong.json()["error"]["message"] == "Invalid file format for Batch API. Must be .jsonl"
    listed = api.get("/files", purpose="batch", order="desc").json()
    assert [f["id"] for f in listed["data"]] == [uploaded["id"]]


def test_a_batch_validates_runs_finalizes_and_completes(emu: Any) -> None:
    api = Api(emu)
    created = api.batch([line(f"r-{i}") for i in range(4)], raif_batch_name="n", raif_batch_id="1")
    assert created["status"] == "validating"
    assert created["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    assert created["expires_at"] == created["created_at"] + 86400
    assert created["metadata"] == {"raif_batch_name": "n", "raif_batch_id": "1"}
    seen = api.poll(created["id"], until=("completed",))
    statuses = [s["status"] for s in seen]
    assert statuses[:2] == ["validating", "validating"]  # validation_reads
    assert "in_progress" in statuses
    finalizing = [s for s in seen if s["status"] == "finalizing"]
    assert finalizing and finalizing[0]["request_counts"]["completed"] == 4  # 100%, not done
    done = seen[-1]
    assert done["request_counts"] == {"total": 4, "completed": 4, "failed": 0}
    assert done["error_file_id"] in (None, "")
    rows = api.rows(done["output_file_id"])
    assert sorted(r["custom_id"] for r in rows) == ["r-0", "r-1", "r-2", "r-3"]
    for row in rows:
        assert row["id"].startswith("batch_req_") and row["error"] is None
        assert row["response"]["status_code"] == 200
        body = row["response"]["body"]
        assert body["object"] == "chat.completion"
        assert "cost_in_usd_ticks" not in body["usage"]
        assert "reasoning_content" not in body["choices"][0]["message"]
        usage = body["usage"]
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    # The batch's usage sums the successful rows.
    usage = done["usage"]
    assert usage["input_tokens"] == sum(
        r["response"]["body"]["usage"]["prompt_tokens"] for r in rows
    )
    assert usage["output_tokens"] == sum(
        r["response"]["body"]["usage"]["completion_tokens"] for r in rows
    )


def test_reasoning_models_report_reasoning_inside_completion_tokens(emu: Any) -> None:
    emu.config.validation_reads = emu.config.finalizing_reads = 0
    api = Api(emu)
    created = api.batch([line("r", model="gpt-5-mini")])
    done = api.poll(created["id"], until=("completed",))[-1]
    (row,) = api.rows(done["output_file_id"])
    usage = row["response"]["body"]["usage"]
    reasoning = usage["completion_tokens_details"]["reasoning_tokens"]
    assert 0 < reasoning < usage["completion_tokens"]


@pytest.mark.parametrize(
    ("lines", "code", "number"),
    [
        (
            [
                line("a"),
                {
                    "custom_id": "b",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {"model": "gpt-4.1-nano"},
                },
            ],
            "missing_required_parameter",
            2,
        ),
        ([line("a"), line("a")], "duplicate_custom_id", 2),
        ([line("a"), line("b", model="gpt-4o-mini")], "mismatched_model", 2),
        ([{**line("a"), "url": "/v1/embeddings"}], "invalid_url", 1),
        ([line("a", stream=True)], "streaming_unsupported", 1),
        ([line("a", model="gpt-9-imaginary")], "model_not_found", 1),
    ],
)
def test_validation_stops_at_the_first_bad_line_and_fails_the_batch(
    emu: Any, lines: list[Any], code: str, number: int
) -> None:
    api = Api(emu)
    created = api.batch(lines)
    failed = api.poll(created["id"], until=("failed",))[-1]
    (error,) = failed["errors"]["data"]
    assert (error["code"], error["line"]) == (code, number)
    assert error["message"]
    assert failed["output_file_id"] is None and failed["error_file_id"] is None
    assert failed["request_counts"] == {"total": 0, "completed": 0, "failed": 0}
    assert failed["failed_at"] is not None


def test_missing_messages_is_reported_as_openai_words_it(emu: Any) -> None:
    api = Api(emu)
    bad = {
        "custom_id": "b",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "gpt-4.1-nano"},
    }
    failed = api.poll(api.batch([bad])["id"], until=("failed",))[-1]
    assert failed["errors"]["data"][0] == {
        "code": "missing_required_parameter",
        "line": 1,
        "message": "Missing required parameter: 'messages'.",
        "param": "body.messages",
    }


def test_invalid_json_line_fails_validation_though_the_upload_was_accepted(emu: Any) -> None:
    api = Api(emu)
    uploaded = api.upload(b'{"custom_id": "a"\n').json()
    created = api.post(
        "/batches",
        {
            "input_file_id": uploaded["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        },
    ).json()
    failed = api.poll(created["id"], until=("failed",))[-1]
    assert failed["errors"]["data"][0]["code"] == "invalid_json_line"


def test_a_nonexistent_input_file_is_accepted_then_fails(emu: Any) -> None:
    api = Api(emu)
    answer = api.post(
        "/batches",
        {
            "input_file_id": "file-nope",
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        },
    )
    assert answer.status_code == 200 and answer.json()["status"] == "validating"
    failed = api.poll(answer.json()["id"], until=("failed",))[-1]
    assert "file-nope" in failed["errors"]["data"][0]["message"]


def test_create_refuses_a_bad_body_synchronously(emu: Any) -> None:
    api = Api(emu)
    uploaded = api.upload(json.dumps(line("a")).encode()).json()
    window = api.post(
        "/batches",
        {
            "input_file_id": uploaded["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "1h",
        },
    )
    assert window.status_code == 400
    assert window.json()["error"]["param"] == "completion_window"
    too_much = api.post(
        "/batches",
        {
            "input_file_id": uploaded["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            "metadata": {f"k{i}": "v" for i in range(17)},
        },
    )
    assert too_much.status_code == 400
    assert len(emu.state.batches) == 0


def test_every_line_failed_completes_without_an_output_file(emu: Any) -> None:
    api = Api(emu)
    created = api.batch(
        [line(f"r-{i}", "[[emulator:error Invalid 'temperature': 3.]]") for i in range(3)]
    )
    done = api.poll(created["id"], until=("completed",))[-1]
    assert done["output_file_id"] is None
    assert done["request_counts"] == {"total": 3, "completed": 0, "failed": 3}
    rows = api.rows(done["error_file_id"])
    assert len(rows) == 3
    for row in rows:
        assert row["response"]["status_code"] == 400
        assert row["response"]["body"]["error"]["message"] == "Invalid 'temperature': 3."
        assert "usage" not in row["response"]["body"]


def test_an_absent_file_id_reads_empty_on_every_other_batch(emu: Any) -> None:
    api = Api(emu)
    ids = []
    for _ in range(2):
        created = api.batch([line("a")])
        ids.append(api.poll(created["id"], until=("completed",))[-1]["error_file_id"])
    assert ids == [None, ""]
    emu.config.empty_file_id = False
    assert api.get(f"/batches/{created['id']}").json()["error_file_id"] is None


def test_cancel_goes_through_cancelling_and_the_counters_lie(emu: Any) -> None:
    emu.config.validation_reads = 0
    emu.config.share_per_read = 0.0
    emu.config.requests_per_read = 1
    api = Api(emu)
    created = api.batch([line(f"r-{i}") for i in range(5)])
    for _ in range(2):
        api.get(f"/batches/{created['id']}")
    assert api.get(f"/batches/{created['id']}").json()["request_counts"]["completed"] == 3
    cancelling = api.post(f"/batches/{created['id']}/cancel").json()
    assert cancelling["status"] == "cancelling" and cancelling["cancelling_at"] is not None
    done = api.poll(created["id"], until=("cancelled",))
    assert [s["status"] for s in done] == ["cancelling", "cancelled"]  # cancel_reads
    cancelled = done[-1]
    assert cancelled["request_counts"] == {"total": 5, "completed": 0, "failed": 0}
    output = {r["custom_id"] for r in api.rows(cancelled["output_file_id"])}
    errors = {r["custom_id"]: r["error"]["code"] for r in api.rows(cancelled["error_file_id"])}
    assert output == {"r-0", "r-1"}  # r-2 finished, yet is in neither file
    assert errors == {"r-3": "batch_cancelled", "r-4": "batch_cancelled"}
    again = api.post(f"/batches/{created['id']}/cancel")
    assert again.status_code == 409
    assert again.json()["error"]["message"] == "Cannot cancel a batch with status 'cancelled'."


def test_cancel_may_leave_only_an_error_file(emu: Any) -> None:
    emu.config.validation_reads = emu.config.cancel_reads = 0
    emu.config.share_per_read, emu.config.requests_per_read = 0.0, 1
    emu.config.cancel_output_file = False
    api = Api(emu)
    created = api.batch([line(f"r-{i}") for i in range(3)])
    api.get(f"/batches/{created['id']}")
    api.post(f"/batches/{created['id']}/cancel")
    cancelled = api.poll(created["id"], until=("cancelled",))[-1]
    assert cancelled["output_file_id"] in (None, "")
    assert len(api.rows(cancelled["error_file_id"])) == 2


def test_cancel_of_a_finished_batch_is_409(emu: Any) -> None:
    api = Api(emu)
    created = api.batch([line("a")])
    api.poll(created["id"], until=("completed",))
    answer = api.post(f"/batches/{created['id']}/cancel")
    assert answer.status_code == 409
    assert answer.json()["error"]["message"] == "Cannot cancel a batch with status 'completed'."


def test_expiry_runs_nothing_more_and_expires_the_rest(emu: Any) -> None:
    emu.config.validation_reads = 0
    emu.config.share_per_read, emu.config.requests_per_read = 0.0, 1
    api = Api(emu)
    created = api.batch([line(f"r-{i}") for i in range(4)])
    api.get(f"/batches/{created['id']}")
    emu.state.advance(86_400)
    expired = api.get(f"/batches/{created['id']}").json()
    assert expired["status"] == "expired" and expired["expired_at"] is not None
    assert expired["request_counts"] == {"total": 4, "completed": 1, "failed": 0}
    assert [r["custom_id"] for r in api.rows(expired["output_file_id"])] == ["r-0"]
    errors = api.rows(expired["error_file_id"])
    assert {r["error"]["code"] for r in errors} == {"batch_expired"}
    assert len(errors) == 3


def test_enqueued_token_limit_creates_then_fails(emu: Any) -> None:
    emu.config.enqueued_token_limit = 5
    api = Api(emu)
    created = api.batch([line("a", "A long question " * 10)])
    assert created["status"] == "validating"
    failed = api.poll(created["id"], until=("failed",))[-1]
    error = failed["errors"]["data"][0]
    assert error["code"] == "token_limit_exceeded" and error["line"] is None
    assert "Enqueued token limit reached" in error["message"]


def test_list_is_newest_first_with_cursors(emu: Any) -> None:
    api = Api(emu)
    ids = [api.batch([line("a")], raif_batch_name=f"n{i}")["id"] for i in range(5)]
    first = api.get("/batches", limit=2).json()
    assert [b["id"] for b in first["data"]] == ids[::-1][:2]
    assert first["has_more"] is True
    assert (first["first_id"], first["last_id"]) == (ids[4], ids[3])
    rest = api.get("/batches", limit=10, after=first["last_id"]).json()
    assert [b["id"] for b in rest["data"]] == ids[::-1][2:]
    assert rest["has_more"] is False
    assert rest["data"][0]["metadata"] == {"raif_batch_name": "n2"}
    assert api.get("/batches", limit=101).status_code == 400
    assert len(api.get("/batches").json()["data"]) == 5  # default 20


def test_errors_use_openais_envelope_and_never_echo_the_key(emu: Any) -> None:
    wrong = Api(emu, key="sk-wrong-key-123456")
    answer = wrong.get("/batches")
    assert answer.status_code == 401
    error = answer.json()["error"]
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_api_key")
    assert "sk-wrong-key-123456" not in answer.text
    missing = Api(emu).get("/batches/batch_nope")
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "No batch found with id 'batch_nope'."


def test_results_gone_and_endless_list_are_switches(emu: Any) -> None:
    api = Api(emu)
    created = api.batch([line("a")])
    done = api.poll(created["id"], until=("completed",))[-1]
    emu.config.results_gone_status = 404
    assert api.get(f"/files/{done['output_file_id']}/content").status_code == 404
    emu.config.endless_pagination = ("list_batches",)
    listed = api.get("/batches", after=created["id"]).json()
    assert [b["id"] for b in listed["data"]] == [created["id"]]  # served again, for ever
    assert listed["has_more"] is True


def test_fast_profile_finishes_at_the_first_read() -> None:
    with run_emulator(provider="openai", profile="fast") as emu:
        api = Api(emu, key=emu.api_key)
        created = api.batch([line(f"r-{i}") for i in range(3)])
        done = api.get(f"/batches/{created['id']}").json()
        assert done["status"] == "completed"
        assert done["error_file_id"] is None
        assert [r["custom_id"] for r in api.rows(done["output_file_id"])] == ["r-0", "r-1", "r-2"]


def test_reset_restores_the_config_in_place(emu: Any) -> None:
    config = emu.config
    config.validation_reads = 9
    Api(emu).batch([line("a")])
    emu.state.reset()
    assert emu.config is config and config.validation_reads == 2
    assert emu.state.batches == {} and emu.state.calls == []
    assert OpenAIEmulatorConfig.profile("fast").validation_reads == 0


# --- the strategy against the emulator -------------------------------------------------------


@pytest.fixture
def strategy(emu: Any, settings: Any) -> OpenAIStrategy:
    settings.RAIF_BATCHES = {
        **settings.RAIF_BATCHES,
        "OPENAI_BASE_URL": emu.base_url,
        "OPENAI_API_KEY": KEY,
    }
    return OpenAIStrategy()


def test_lost_creates_found_by_metadata_and_the_read_stops_at_older_batches(
    emu: Any, strategy: OpenAIStrategy
) -> None:
    api = Api(emu)
    for i in range(3):
        api.batch([line("a")], raif_batch_name=f"raif_batch_{i}")
    twice = api.batch([line("a")], raif_batch_name="raif_batch_1")
    now = datetime.now(UTC)
    lost = [LostCreate(name="raif_batch_1", request_count=1, attempted_at=now)]
    listing = strategy.find_provider_batches(lost, created_after=now - timedelta(hours=1))
    assert listing.complete
    found = listing.found["raif_batch_1"]
    assert len(found) == 2 and found[0].provider_batch_id == twice["id"]  # both are ours
    # A name nobody created: the read stops at batches older than the attempt.
    emu.state.calls.clear()
    ghost = [LostCreate(name="raif_batch_ghost", request_count=1, attempted_at=now)]
    listing = strategy.find_provider_batches(ghost, created_after=now + timedelta(hours=1))
    assert listing.complete and listing.found == {}
    assert emu.state.count_calls("list_batches") == 1


def test_an_endless_list_is_read_within_bounds(
    emu: Any, strategy: OpenAIStrategy, settings: Any
) -> None:
    settings.RAIF_BATCHES = {**settings.RAIF_BATCHES, "RECONCILE_MAX_PAGES": 3}
    api = Api(emu)
    api.batch([line("a")], raif_batch_name="other")
    emu.config.endless_pagination = ("list_batches",)
    ghost = [LostCreate(name="ghost", request_count=1, attempted_at=datetime.now(UTC))]
    listing = strategy.find_provider_batches(ghost, created_after=None)
    assert not listing.complete and listing.stopped_because
    assert emu.state.count_calls("list_batches") <= 3


def test_bad_key_is_an_authentication_error_without_the_key(emu: Any) -> None:
    client = OpenAIClient(emu.base_url, "sk-not-the-key-987654")
    strategy = OpenAIStrategy(client=client)
    with pytest.raises(ProviderAuthenticationError) as caught:
        strategy.get_provider_batch("batch_x")
    assert "invalid_api_key" in str(caught.value)
    assert "sk-not-the-key-987654" not in str(caught.value)


def test_results_of_a_batch_gone_are_not_found(emu: Any, strategy: OpenAIStrategy) -> None:
    api = Api(emu)
    created = api.batch([line("a")])
    api.poll(created["id"], until=("completed",))
    emu.config.results_gone_status = 404
    with pytest.raises(ProviderNotFound):
        list(strategy.iter_result_pages(created["id"]))


def test_results_are_read_in_pages_from_both_files(
    emu: Any, strategy: OpenAIStrategy, settings: Any
) -> None:
    settings.RAIF_BATCHES = {**settings.RAIF_BATCHES, "RESULTS_PAGE_SIZE": 2}
    api = Api(emu)
    lines = [line(f"r-{i}") for i in range(4)] + [line("bad", "[[emulator:error Nope]]")]
    created = api.batch(lines)
    api.poll(created["id"], until=("completed",))
    pages = list(strategy.iter_result_pages(created["id"]))
    assert [len(page) for page in pages] == [2, 2, 1]
    entries = {entry.custom_id: entry for page in pages for entry in page}
    assert entries["bad"].error == "Nope (invalid_request_error)"
    assert all(entries[f"r-{i}"].completion is not None for i in range(4))


def test_a_fault_on_cancel_409_is_not_retried(emu: Any, strategy: OpenAIStrategy) -> None:
    api = Api(emu)
    created = api.batch([line("a")])
    api.poll(created["id"], until=("completed",))
    emu.add_fault(Fault("cancel_batch", "status", status=503))
    from raif_batches.exceptions import ProviderRejected

    with pytest.raises(ProviderRejected):
        strategy.cancel_provider_batch(created["id"])
    assert emu.state.count_calls("cancel_batch") == 2  # the 503 retried, the 409 not


def test_the_command_takes_any_config_field() -> None:
    from raif_batches.management.commands import openai_emulator
    from raif_batches.management.commands.xai_emulator import parse_settings

    parser = openai_emulator.Command().create_parser("manage.py", "openai_emulator")
    options = parser.parse_args(["--set", "validation_reads=0", "--profile", "fast"])
    assert options.port == 8766 and options.profile == "fast"
    values = parse_settings(['endless_pagination=["list_batches"]'], OpenAIEmulatorConfig)
    assert values == {"endless_pagination": ("list_batches",)}


def test_files_are_deleted_after_thirty_days(emu: Any, strategy: OpenAIStrategy) -> None:
    api = Api(emu)
    created = api.batch([line("a")])
    done = api.poll(created["id"], until=("completed",))[-1]
    assert len(list(strategy.iter_result_pages(created["id"]))) == 1
    emu.state.advance(30 * 86400 + 1)
    assert api.get(f"/files/{done['output_file_id']}").status_code == 404
    with pytest.raises(ProviderNotFound):
        list(strategy.iter_result_pages(created["id"]))


def test_a_list_whose_cursor_does_not_move_is_an_incomplete_read(
    emu: Any, strategy: OpenAIStrategy
) -> None:
    for i in range(101):  # two pages of 100
        emu.state.create_batch(
            {
                "input_file_id": "file-x",
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
                "metadata": {"raif_batch_name": f"n{i}"},
            }
        )
    emu.add_fault(Fault("list_batches", "repeat_page", times=None))
    ghost = [LostCreate(name="ghost", request_count=1, attempted_at=datetime.now(UTC))]
    listing = strategy.find_provider_batches(ghost, created_after=None)
    assert not listing.complete and "cursor" in listing.stopped_because
    # A name on the page is still found, once, though the page comes again.
    both = [*ghost, LostCreate(name="n100", request_count=1, attempted_at=datetime.now(UTC))]
    found = strategy.find_provider_batches(both, created_after=None)
    assert len(found.found["n100"]) == 1 and not found.complete
    assert emu.state.count_calls("list_batches") == 4
