"""The xAI emulator in a process of its own, so the provider's CPU and memory are not ours.

Run by :mod:`benchmarks.run`: prints one JSON line (``base_url`` and the ids of any seeded
batches) once it is listening, then serves until its stdin is closed. ``--in-flight N`` creates N
inline batches whose single line never finishes, so every status read finds them in progress.
"""

from __future__ import annotations

import argparse
import json
import sys

from raif_batches.emulator import EmulatorConfig, run_emulator

API_KEY = "bench-key"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--in-flight", type=int, default=0)
    parser.add_argument("--padding-kb", type=int, default=0, help="each answer padded to this")
    args = parser.parse_args()
    config = EmulatorConfig.fast(
        latency=args.latency, max_page_size=1000, result_padding_kb=args.padding_kb
    )
    if args.in_flight:
        config.requests_per_read = 0  # a read adds no progress: lines stay pending
    with run_emulator(api_key=API_KEY, config=config) as emulator:
        state = emulator.state
        ids = []
        for number in range(args.in_flight):
            view = state.create_batch(f"bench_in_flight_{number}", None, emulator.key_id)
            body = {"model": "grok-4.3", "messages": [{"role": "user", "content": "hi"}]}
            state.add_requests(
                view["batch_id"],
                {
                    "batch_requests": [
                        {"batch_request_id": "r-0", "batch_request": {"chat_get_completion": body}}
                    ]
                },
            )
            ids.append(view["batch_id"])
        print(json.dumps({"base_url": emulator.base_url, "batch_ids": ids}), flush=True)
        sys.stdin.read()  # serve until the parent closes our stdin


if __name__ == "__main__":
    main()
