"""A provider's emulator in a process of its own, so the provider's CPU and memory are not ours.

Run by :mod:`benchmarks.run`: prints one JSON line (``base_url``, and ``batch_ids``: the ids of
any seeded batches, oldest first) once it is listening, then serves until its stdin is closed.

* ``--provider``: whose emulator (``xai``, ``openai``, ``anthropic``), in its fast profile.
* ``--in-flight N``: N batches of one line that never finishes, so that every status read
  finds them in progress.
* ``--ending N --lines K``: N batches of K lines each that have not been read yet; the first
  read of one (its GET, or a list that holds it) finds every line done, so one poll sees them
  all end and harvests them. Their custom ids are ``r-0`` … ``r-{K-1}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from raif_batches.emulator import run_emulator

API_KEY = "bench-key"
#: The model each seeded batch names (one the emulator serves and our price table knows).
MODELS = {"xai": "grok-4.3", "openai": "gpt-5-mini", "anthropic": "claude-haiku-4-5"}


def configure(config: Any, provider: str, args: argparse.Namespace) -> None:
    """The fast profile, with the benchmark's latency (and, for xAI, its padded answers)."""
    config.latency = args.latency
    if provider == "xai":
        config.max_page_size = 1000
        config.result_padding_kb = args.padding_kb
    if args.in_flight:
        config.requests_per_read = 0  # a read adds no progress: lines stay pending


def _body(provider: str, number: int, line: int) -> dict[str, Any]:
    content = f"Review {number}.{line}: the kettle works well and boils quickly."
    body: dict[str, Any] = {"model": MODELS[provider], "messages": []}
    if provider == "anthropic":
        body["max_tokens"] = 64
    body["messages"] = [{"role": "user", "content": content}]
    return body


def seed(emulator: Any, provider: str, number: int, lines: int) -> str:
    """One provider batch of ``lines`` requests, created as a client would have; its id."""
    state = emulator.state
    name = f"bench_{number}"
    if provider == "xai":
        view = state.create_batch(name, None, emulator.key_id)
        requests = [
            {"batch_request_id": f"r-{i}", "batch_request": {"chat_get_completion": body}}
            for i, body in ((i, _body(provider, number, i)) for i in range(lines))
        ]
        state.add_requests(view["batch_id"], {"batch_requests": requests})
        return str(view["batch_id"])
    if provider == "openai":
        content = b"".join(
            json.dumps(
                {
                    "custom_id": f"r-{i}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": _body(provider, number, i),
                }
            ).encode()
            + b"\n"
            for i in range(lines)
        )
        file = state.add_file(f"{name}.jsonl", "batch", content)
        view = state.create_batch(
            {
                "input_file_id": file["id"],
                "endpoint": "/v1/chat/completions",
                "completion_window": "24h",
                "metadata": {"raif_batch_name": name},
            }
        )
        return str(view["id"])
    requests = [{"custom_id": f"r-{i}", "params": _body(provider, number, i)} for i in range(lines)]
    return str(state.create_batch({"requests": requests})["id"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--provider", default="xai", choices=sorted(MODELS))
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--in-flight", type=int, default=0)
    parser.add_argument("--ending", type=int, default=0, help="batches that end at first read")
    parser.add_argument("--lines", type=int, default=2, help="lines of each ending batch")
    parser.add_argument("--padding-kb", type=int, default=0, help="each answer padded to this")
    args = parser.parse_args()
    provider = args.provider
    with run_emulator(api_key=API_KEY, profile="fast", provider=provider) as emulator:
        configure(emulator.config, provider, args)
        ids = [seed(emulator, provider, number, 1) for number in range(args.in_flight)]
        ids += [seed(emulator, provider, number, args.lines) for number in range(args.ending)]
        print(json.dumps({"base_url": emulator.base_url, "batch_ids": ids}), flush=True)
        sys.stdin.read()  # serve until the parent closes our stdin


if __name__ == "__main__":
    main()
