"""The emulator's default profile plays xAI as observed (``xai-batch-api.md``), over real HTTP.

Validation phase, lines finishing over several reads (so a cancel cancels), ``null`` and ``""``
end tokens, ``state`` absent now and then, the cancel revert, a refused file with every counter
at 0, real prices, results by id, server-side tool answers; the fast profile; the keys; the
``xai_emulator`` command without a key; the fixtures.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from raif_batches.emulator import (
    DEFAULT_API_KEY,
    EmulatorConfig,
    EmulatorServer,
    run_emulator,
)
from raif_batches.emulator.completions import ModelPrice, cost_ticks

from .test_emulator import Client, completion, counts, line

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def emu() -> Iterator[EmulatorServer]:
    with run_emulator(api_key="test-key") as server:  # the default, realistic profile
        yield server


def test_validation_phase_then_lines_finish_over_reads_with_state_sometimes_absent(
    emu: EmulatorServer,
) -> None:
    client = Client(emu)
    created = client.create([line(f"r-{i}") for i in range(8)])
    assert created["state"] == counts()
    reads = [client.get(created["batch_id"]).get("state") for _ in range(7)]
    assert reads == [
        counts(),  # validating
        counts(),
        None,  # every third read leaves "state" out
        counts(8, pending=4, ok=4),
        counts(8, pending=2, ok=6),
        None,
        counts(8, ok=8),
    ]


def test_a_cancel_cancels_pending_lines_and_some_revert_seconds_later(
    emu: EmulatorServer,
) -> None:
    client = Client(emu)
    batch_id = client.create([line(f"r-{i}") for i in range(8)])["batch_id"]
    for _ in range(4):
        client.get(batch_id)
    cancelled = client.cancel(batch_id)
    assert cancelled["cancel_time"] is not None
    assert cancelled["state"] == counts(8, ok=4, cancelled=4)
    assert client.results(batch_id)["r-4"]["batch_result"] == {"error": "Batch cancelled"}
    emu.state.advance(11)  # xAI's observed flip came within twenty seconds
    assert client.counts(batch_id) == counts(8, ok=6, cancelled=2)
    results = client.results(batch_id)
    assert completion(results["r-4"])["choices"][0]["message"]["content"]
    assert completion(results["r-5"])["usage"]["cost_in_usd_ticks"] > 0
    assert results["r-6"]["batch_result"] == {"error": "Batch cancelled"}


def test_end_of_list_token_is_null_then_empty_string(emu: EmulatorServer) -> None:
    client = Client(emu)
    client.create([line("a")])
    ends = []
    for _ in range(4):
        answer = client.http.get(f"{client.url}/batches").json()
        assert "pagination_token" in answer
        ends.append(answer["pagination_token"])
    assert ends == [None, "", None, ""]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ('{"custom_id": "b", oops', "JSONL file validation failed: line 2: invalid JSON: "),
        (
            line("b", model="grok-4.6"),
            "JSONL file validation failed: Model grok-4.6 is not supported for batch processing.",
        ),
    ],
)
def test_a_refused_file_keeps_every_counter_at_zero(
    emu: EmulatorServer, bad: Any, message: str
) -> None:
    client = Client(emu)
    batch_id = client.create([line("a"), bad, line("c")])["batch_id"]
    seen = [client.get(batch_id) for _ in range(4)]
    refused = [b for b in seen if b["cancel_by_xai_message"]]
    assert refused and refused[0]["cancel_by_xai_message"].startswith(message)
    assert all(b.get("state", counts()) == counts() for b in seen)
    assert refused[0]["cancel_time"] is not None
    assert client.results(batch_id) == {}


def test_prices_are_xais_and_solve_the_published_capture(emu: EmulatorServer) -> None:
    capture = {
        "prompt_tokens": 198,
        "completion_tokens": 1,
        "prompt_tokens_details": {"cached_tokens": 192},
        "completion_tokens_details": {"reasoning_tokens": 118},
    }
    assert cost_ticks(capture, emu.config.prices["grok-4.3"]) == 2_747_200
    assert emu.config.prices["grok-4.20-0309*"] == ModelPrice(1.25, 0.20, 2.50, 0.20)
    emu.config.validation_reads = 0
    client = Client(emu)
    batch_id = client.create([line("a", system="Be brief"), line("b", system="Be brief")])[
        "batch_id"
    ]
    while client.get(batch_id).get("state", {}).get("num_pending", 1):
        pass
    results = client.results(batch_id)
    usage = completion(results["b"])["usage"]
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    output = usage["completion_tokens"] + usage["completion_tokens_details"]["reasoning_tokens"]
    millionths = (usage["prompt_tokens"] - cached) * 1.25 + cached * 0.20 + output * 2.50
    assert cached > 0 and usage["cost_in_usd_ticks"] == round(millionths * 10_000 * 0.8)
    batch = client.get(batch_id)
    total = sum(completion(e)["usage"]["cost_in_usd_ticks"] for e in results.values())
    assert batch["cost_breakdown"]["total_cost_usd_ticks"] == total


def test_results_come_by_id_not_in_submission_order(emu: EmulatorServer) -> None:
    emu.config.validation_reads = 0
    client = Client(emu)
    submitted = ["ticket-9", "ticket-10", "ticket-1"]
    batch_id = client.create([line(x) for x in submitted])["batch_id"]
    for _ in range(4):
        client.get(batch_id)
    page = client.page(batch_id)
    served = [e["batch_request_id"] for e in page["results"]]
    assert served == sorted(submitted) != submitted


@pytest.mark.parametrize("tool", ["web_search", "x_search"])
def test_server_side_tools_answer_with_turns_blank_finish_and_citations(
    emu: EmulatorServer, tool: str
) -> None:
    emu.config.validation_reads = 0
    client = Client(emu)
    batch_id = client.create([line("s", "Latest news on batching?", tools=[{"type": tool}])])[
        "batch_id"
    ]
    client.get(batch_id)
    answer = completion(client.results(batch_id)["s"])
    choices = answer["choices"]
    assert len(choices) >= 3 and [c["index"] for c in choices] == list(range(len(choices)))
    assert choices[0]["finish_reason"] == "" and choices[0]["message"]["content"] == ""
    assert choices[0]["message"]["tool_calls"][0]["function"]["name"] == tool
    assert all(c["finish_reason"] == "" for c in choices[:-1])
    assert choices[-1]["finish_reason"] == "stop"
    assert choices[-1]["message"]["content"].startswith("Emulated answer, with sources")
    assert len(answer["citations"]) == 3
    assert all(url.startswith("https://") for url in answer["citations"])
    assert answer["usage"]["num_sources_used"] == 3


# -- profiles -------------------------------------------------------------------------------------
def test_fast_profile_finishes_every_line_at_the_first_read_after_validation() -> None:
    with run_emulator(profile="fast") as emu:
        client = Client(emu)
        client.http.headers["Authorization"] = f"Bearer {emu.api_key}"
        batch_id = client.create([line(f"r-{i}") for i in range(8)])["batch_id"]
        assert [client.get(batch_id)["state"] for _ in range(4)] == [counts()] + [
            counts(8, ok=8)
        ] * 3
        ends = [client.http.get(f"{client.url}/batches").json()["pagination_token"]] * 2
        assert ends == [None, None]
        assert client.cancel(batch_id)["state"] == counts(8, ok=8)
        emu.state.advance(60)
        assert client.counts(batch_id) == counts(8, ok=8)


def test_profiles_by_name_and_overrides() -> None:
    assert EmulatorConfig.profile() == EmulatorConfig()
    assert EmulatorConfig.profile("fast") == EmulatorConfig.fast()
    fast = EmulatorConfig.fast(seed=3)
    assert (fast.share_per_read, fast.omit_state_every, fast.cancel_revert_count) == (0, 0, 0)
    assert fast.seed == 3 and not fast.pagination_end_alternate
    with pytest.raises(ValueError, match="unknown emulator profile"):
        EmulatorConfig.profile("slow")
    with pytest.raises(ValueError, match="error_shape"):
        EmulatorConfig(error_shape="xml")
    with pytest.raises(ValueError, match="line_quirks"):
        EmulatorConfig(line_quirks={"a": "bogus"})


# -- keys -----------------------------------------------------------------------------------------
def test_any_key_is_accepted_unless_one_is_named() -> None:
    with run_emulator() as emu:
        assert emu.api_key == DEFAULT_API_KEY == "emulator-key"
        for key in ("emulator-key", "anything-at-all"):
            answer = requests.get(
                f"{emu.base_url}/batches", headers={"Authorization": f"Bearer {key}"}
            )
            assert answer.status_code == 200
        assert requests.get(f"{emu.base_url}/batches").status_code == 400  # no key at all
    with run_emulator(api_key="only-this") as emu:
        assert emu.api_key == "only-this"
        wrong = requests.get(
            f"{emu.base_url}/batches", headers={"Authorization": "Bearer emulator-key"}
        )
        assert wrong.status_code == 400 and "Incorrect API key" in wrong.json()["error"]


def test_xai_emulator_command_starts_without_a_key_and_accepts_any() -> None:
    env = {k: v for k, v in os.environ.items() if k != "XAI_API_KEY"}
    env["DJANGO_SETTINGS_MODULE"] = "example_project.settings"
    command = [sys.executable, "manage.py", "xai_emulator", "--port", "0", "--profile", "fast"]
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert "fast profile" in first and "accepting any key" in first, process.stderr
        base_url = first.split("listening on ")[1].split(",")[0]
        answer = requests.get(
            f"{base_url}/batches", headers={"Authorization": "Bearer whatever"}, timeout=5
        )
        assert answer.status_code == 200 and answer.json()["batches"] == []
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)  # generous: the machine may be loaded
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.returncode == 0


def test_xai_emulator_command_bad_setting_is_one_line() -> None:
    env = {k: v for k, v in os.environ.items() if k != "XAI_API_KEY"}
    env["DJANGO_SETTINGS_MODULE"] = "example_project.settings"
    done = subprocess.run(
        [sys.executable, "manage.py", "xai_emulator", "--set", "nope=1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "--set expects FIELD=VALUE" in done.stderr


# -- the fixtures ---------------------------------------------------------------------------------
def test_our_emulator_fixture_is_fast(emulator: EmulatorServer, settings: Any) -> None:
    assert emulator.config == EmulatorConfig.fast()
    assert settings.RAIF_BATCHES["XAI_BASE_URL"] == emulator.base_url


def test_hostile_emulator_fixture_is_the_realistic_default(
    hostile_emulator: EmulatorServer, settings: Any
) -> None:
    assert hostile_emulator.config == EmulatorConfig()
    assert settings.RAIF_BATCHES["XAI_BASE_URL"] == hostile_emulator.base_url
    assert settings.RAIF_BATCHES["XAI_API_KEY"] == hostile_emulator.api_key == "test-key"


def test_the_plugin_fixture_is_realistic_for_users(tmp_path: Path) -> None:
    """Outside our suite (whose conftest asks for "fast"), ``xai_emulator`` is the realistic
    default, and overriding ``xai_emulator_profile`` switches it."""
    (tmp_path / "test_user.py").write_text(
        "import pytest\n"
        "from raif_batches.emulator import EmulatorConfig\n"
        "def test_default(xai_emulator):\n"
        "    assert xai_emulator.config == EmulatorConfig()\n"
        "    assert xai_emulator.api_key == 'test-key' and not xai_emulator.any_key\n"
        "class TestFast:\n"
        "    @pytest.fixture\n"
        "    def xai_emulator_profile(self):\n"
        "        return 'fast'\n"
        "    def test_fast(self, xai_emulator):\n"
        "        assert xai_emulator.config == EmulatorConfig.fast()\n"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:django",
            "-p",
            "raif_batches.emulator.pytest_plugin",
            str(tmp_path / "test_user.py"),
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "2 passed" in done.stdout, done.stdout + done.stderr
