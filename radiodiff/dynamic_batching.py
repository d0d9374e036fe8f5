"""Dynamic batching: requests that arrive while a batch runs share the next forward pass.

A server answers each request on its own thread. Sampling one map at a time leaves most of a
network call's cost unshared, so `DynamicBatcher.submit` queues a request's items and the
first waiting thread becomes the leader: it takes the queued requests (up to `max_items`
items), runs them as one batch, and hands every request its own slice of the results.
Nothing waits for a batch to fill: an idle server runs a lone request at once, and a busy
one batches exactly what queued up behind the running pass.

One batch runs at a time, so the batch function never runs concurrently with itself (the
served model writes its bank on misses). A batch that fails is re-run request by request,
so one request's failure is never another's.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass
class _Ticket(Generic[Item, Result]):
    """One submitted request: its items, and then its results or its error."""

    items: list[Item]
    results: list[Result] | None = None
    error: BaseException | None = None
    done: bool = field(default=False)


class DynamicBatcher(Generic[Item, Result]):
    """Runs `run_batch(items) -> results` (one result per item, in order) over the items of
    concurrently submitted requests, at most `max_items` items per call (a single request
    larger than that still runs, alone).

    Counters `batches` and `requests` say how well requests were shared (requests / batches).
    """

    def __init__(self, run_batch: Callable[[list[Item]], Sequence[Result]], max_items: int) -> None:
        if max_items < 1:
            raise ValueError(f"max_items must be >= 1, got {max_items}")
        self._run_batch = run_batch
        self.max_items = max_items
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[_Ticket] = deque()
        self._running = False
        self.batches = 0
        self.requests = 0

    def submit(self, items: Sequence[Item]) -> list[Result]:
        """The results of `items` (blocking until they are computed); re-raises the error of
        this request's own items."""
        if not items:
            return []
        ticket: _Ticket = _Ticket(list(items))
        with self._cond:
            self._queue.append(ticket)
            while not ticket.done:
                if self._running:
                    self._cond.wait()
                    continue
                self._running = True
                group = self._take()
                self._cond.release()  # compute without the lock, so that others can queue
                try:
                    self._execute(group)
                finally:
                    self._cond.acquire()
                    self._running = False
                    self._cond.notify_all()
        if ticket.error is not None:
            raise ticket.error
        return ticket.results  # type: ignore[return-value]

    def _take(self) -> list[_Ticket]:
        """The oldest queued requests whose items fit in one batch (at least one request)."""
        group = [self._queue.popleft()]
        size = len(group[0].items)
        while self._queue and size + len(self._queue[0].items) <= self.max_items:
            size += len(self._queue[0].items)
            group.append(self._queue.popleft())
        return group

    def _execute(self, group: list[_Ticket]) -> None:
        """Run the group as one batch; if that fails and it holds several requests, run each alone."""
        items = [item for ticket in group for item in ticket.items]
        try:
            results = list(self._run_batch(items))
            if len(results) != len(items):
                raise RuntimeError(f"the batch function returned {len(results)} results for {len(items)} items")
        except Exception as exc:  # noqa: BLE001 - handed to the request that owns it
            if len(group) > 1:
                for ticket in group:
                    self._execute([ticket])
                return
            group[0].error = exc
        else:
            self.batches += 1
            start = 0
            for ticket in group:
                ticket.results = results[start:start + len(ticket.items)]
                start += len(ticket.items)
        for ticket in group:
            ticket.done = True
            self.requests += 1
