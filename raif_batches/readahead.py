"""Reading in helper threads while the caller stores: the next page of a batch, and the
answers of many batches (:class:`Readers`).

Harvesting 50,000 results is a chain of 50 page reads, each waiting for the provider, and 50
page writes, each waiting for the database. Reading page *n + 1* in one helper thread while the
calling thread writes page *n* overlaps the two waits. The helper thread does HTTP and parsing
only, never database work; pages still arrive, and are applied, one at a time and in order, and
no transaction waits on the network: the caller waits for a page only between two writes.

Memory: never more than one page is read ahead. The helper starts reading page *n + 1* only when
the caller takes page *n*, so at most two pages are alive (the one being stored and the one
being read), each bounded in bytes by ``MAX_RESPONSE_BYTES``. The first two pages are read in
the caller's thread (see :func:`read_ahead`).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ALL_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")
_END = object()


def read_ahead(items: Iterator[T], *, name: str = "raif-read-ahead") -> Iterator[T]:
    """Yield ``items`` in order, computing each next item in a helper thread meanwhile.

    The first two items are computed in the caller's thread, and the helper starts reading
    the third as the second is taken: most listings end within a page or two (1,000 small
    batches harvested in one poll have one page each), and a thread started and handed each
    page would cost more than the overlap gains. From then on, page *n + 1* is read while the
    caller stores page *n*.

    An exception raised by ``items`` is raised here, in the caller's thread, where the item
    would have been. When the caller stops early, the helper finishes the read it is doing in
    the background (it is bounded by the HTTP timeouts) and nothing more is read.
    """
    item = next(items, _END)
    if item is _END:
        return
    yield item  # type: ignore[misc]
    item = next(items, _END)
    if item is _END:
        return
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
    try:
        while True:
            pending: Future[object] = pool.submit(next, items, _END)
            yield item  # type: ignore[misc]
            item = pending.result()
            if item is _END:
                return
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


class Readers(Generic[T, R]):
    """``workers`` threads that run ``read`` on the items queued, each answer in a future.

    Why not a ``ThreadPoolExecutor`` with a ``submit`` per item: with 64 readers busy parsing
    answers, every ``submit`` (which wakes a reader) and every wait on one future (which wakes
    the caller) hands the interpreter lock over, and the caller waits behind the readers each
    time: 1,000 of each cost a poll seconds. Here items go on a queue the readers drain, and
    the caller waits once for as many futures as it needs (:func:`wait_all`).

    HTTP and parsing only, never database work. :meth:`close` cancels what has not started;
    a read in progress finishes in the background (bounded by the HTTP timeouts).
    """

    def __init__(self, read: Callable[[T], R], workers: int, *, name: str) -> None:
        self._read = read
        self._queue: queue.SimpleQueue[tuple[T, Future[R]] | None] = queue.SimpleQueue()
        self._pending: list[Future[R]] = []
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-{number}", daemon=True)
            for number in range(max(1, workers))
        ]
        self._started = False

    def put(self, item: T) -> Future[R]:
        future: Future[R] = Future()
        self._pending.append(future)
        self._queue.put((item, future))
        if not self._started:
            self._started = True
            for thread in self._threads:
                thread.start()
        return future

    def _run(self) -> None:
        while (work := self._queue.get()) is not None:
            item, future = work
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(self._read(item))
            except BaseException as error:  # raised where the caller takes the result
                future.set_exception(error)

    def close(self) -> None:
        for future in self._pending:
            future.cancel()
        self._pending = []
        for _ in self._threads:
            self._queue.put(None)

    def __enter__(self) -> Readers[T, R]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_all(futures: Iterable[Future[Any]]) -> None:
    """Wait until every future is done, woken once rather than once per future."""
    wait(list(futures), return_when=ALL_COMPLETED)
