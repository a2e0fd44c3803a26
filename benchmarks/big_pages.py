"""Peak memory of a harvest whose answers are big: ``python -m benchmarks.big_pages``.

A stand-in provider (in a child process, so that its memory is not counted) serves the results
of one batch: ``--answers`` lines of ``--answer-mb`` MB of text each, honouring ``limit`` and
the cursor token, with a ``Content-Length`` on every page. This process then harvests them, and
prints its resident high-water mark before and after:

* ``--mode wire``: the pages are read and parsed (:meth:`XAIStrategy.iter_result_pages`) and
  dropped: the HTTP client's and the read-ahead's share;
* ``--mode harvest`` (default): the whole harvest into a fresh SQLite database
  (``fetch_results``: read, parse, store, total).

Why a stand-in rather than the emulator: the emulator's answers are a line long, and its ``raw``
fault serves the same bytes whatever ``limit`` is asked, so it cannot play big pages that shrink
when a smaller page is asked for.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

MB = 1_000_000
BATCH_ID = "batch_big_pages"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def serve(port_queue: Any, answers: int, answer_bytes: int) -> None:
    ids = [f"req-{i:05d}" for i in range(answers)]
    text = "a" * answer_bytes

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = dict(parse_qsl(parts.query))
            if parts.path.endswith("/results"):
                limit = int(query.get("limit", 100))
                after = query.get("pagination_token") or ""
                rest = [rid for rid in ids if rid > after]
                page, more = rest[:limit], len(rest) > limit
                body = {
                    "results": [
                        {
                            "batch_request_id": rid,
                            "batch_result": {
                                "response": {
                                    "chat_get_completion": {
                                        "choices": [
                                            {
                                                "message": {"role": "assistant", "content": text},
                                                "finish_reason": "stop",
                                            }
                                        ],
                                        "usage": {
                                            "prompt_tokens": 10,
                                            "completion_tokens": answer_bytes // 4,
                                            "cost_in_usd_ticks": 1000,
                                        },
                                    }
                                }
                            },
                        }
                        for rid in page
                    ],
                    "pagination_token": page[-1] if more else None,
                }
            else:
                body = {"batch_id": BATCH_ID}
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass  # a client that refuses an oversized page closes the connection mid-answer

    server = Server(("127.0.0.1", 0), Handler)
    port_queue.put(server.server_address[1])
    server.serve_forever()


def setup_django(database: str, base_url: str) -> None:
    import django
    from django.conf import settings

    settings.configure(
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "raif_batches"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": database}},
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        USE_TZ=True,
        RAIF_BATCHES={"XAI_BASE_URL": base_url, "XAI_API_KEY": "bench-key"},
    )
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=200)
    parser.add_argument("--answer-mb", type=float, default=1.0)
    parser.add_argument("--mode", choices=("wire", "harvest"), default="harvest")
    args = parser.parse_args()

    ports: Any = multiprocessing.Queue()
    provider = multiprocessing.Process(
        target=serve, args=(ports, args.answers, int(args.answer_mb * MB)), daemon=True
    )
    provider.start()
    base_url = f"http://127.0.0.1:{ports.get(timeout=30)}/v1"
    with tempfile.TemporaryDirectory() as tmp:
        setup_django(os.path.join(tmp, "bench.sqlite3"), base_url)
        from raif_batches import create_batch
        from raif_batches.lifecycle import results
        from raif_batches.models import ModelCompletionBatch
        from raif_batches.providers import get_strategy

        batch = create_batch(
            provider="xai",
            model="grok-4.3",
            requests=[
                {"custom_id": f"req-{i:05d}", "messages": [{"role": "user", "content": "hi"}]}
                for i in range(args.answers)
            ],
        )
        ModelCompletionBatch.objects.filter(pk=batch.pk).update(
            provider_batch_id=BATCH_ID, status="ended"
        )
        batch.refresh_from_db()
        strategy = get_strategy("xai")
        before = peak_rss_mb()
        started = time.monotonic()
        pages = entries = 0
        if args.mode == "wire":
            for page in strategy.iter_result_pages(BATCH_ID):
                pages += 1
                entries += len(page)
        else:
            entries = results.fetch_results(strategy, batch)
        elapsed = time.monotonic() - started
        after = peak_rss_mb()
    provider.terminate()
    print(
        f"{args.mode}: {entries} answers of {args.answer_mb:g} MB"
        + (f" in {pages} pages" if pages else "")
        + f", {elapsed:.1f}s; peak RSS {after:.0f} MB (before the harvest {before:.0f} MB)"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
