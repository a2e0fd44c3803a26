"""Fetch the next page while the caller stores this one.

Harvesting 50,000 results is a chain of 50 page reads, each waiting for the provider, and 50
page writes, each waiting for the database. Reading page *n + 1* in one helper thread while the
calling thread writes page *n* overlaps the two waits. The helper thread does HTTP and parsing
only, never database work; pages still arrive, and are applied, one at a time and in order, and
no transaction waits on the network: the caller waits for a page only between two writes.

Memory: never more than one page is read ahead. The helper starts reading page *n + 1* only when
the caller takes page *n*, so at most two pages are alive (the one being stored and the one
being read), each bounded in bytes by ``MAX_RESPONSE_BYTES``.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
_END = object()


def read_ahead(items: Iterator[T], *, name: str = "raif-read-ahead") -> Iterator[T]:
    """Yield ``items`` in order, computing each next item in a helper thread meanwhile.

    An exception raised by ``items`` is raised here, in the caller's thread, where the item
    would have been. When the caller stops early, the helper finishes the read it is doing in
    the background (it is bounded by the HTTP timeouts) and nothing more is read.
    """
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
    try:
        pending: Future[object] = pool.submit(next, items, _END)
        while True:
            item = pending.result()
            if item is _END:
                return
            pending = pool.submit(next, items, _END)
            yield item  # type: ignore[misc]
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
