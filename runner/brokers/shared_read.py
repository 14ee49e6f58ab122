"""One broker read shared by the callers that ask for it at the same time, never an older one.

Kotak Neo has no order lookup by client id: every verify read-back is a read of the account's whole
order book. At an instant with ten fires on one account, ten book reads were sent right behind the ten
orders, doubling what the broker (and its read rate limits) had to take at the busiest moment. Here a
caller arriving while a read is in flight waits for the *next* read, which starts when that one ends: so
every caller gets a read that began after it asked (an order it just placed is in it), and a burst of
callers costs at most two reads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class SharedRead(Generic[T]):
    """``await shared()``: the result of a call of ``read`` that started no earlier than this call."""

    def __init__(self, read: Callable[[], Awaitable[T]]) -> None:
        self._read = read
        self._loop: asyncio.AbstractEventLoop | None = None
        self._current: asyncio.Future[T] | None = None  # the read in flight
        self._queued: asyncio.Future[T] | None = None  # the next one, for callers that came meanwhile

    async def __call__(self) -> T:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a new event loop (a CLI command's): nothing of the old one is shared
            self._loop, self._current, self._queued = loop, None, None
        if self._current is None:
            fut = self._current = loop.create_future()
            self._start(fut)
        else:
            if self._queued is None:
                self._queued = loop.create_future()
            fut = self._queued
        return await asyncio.shield(fut)  # one caller cancelled: the read goes on for the others

    def _start(self, fut: asyncio.Future[T]) -> None:
        fut.add_done_callback(_retrieve)
        task = asyncio.ensure_future(self._read())
        task.add_done_callback(lambda t: self._done(t, fut))

    def _done(self, task: asyncio.Future[T], fut: asyncio.Future[T]) -> None:
        if task.cancelled():
            fut.cancel()
        elif (exc := task.exception()) is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(task.result())
        self._current, queued, self._queued = None, self._queued, None
        if queued is not None:
            self._current = queued
            self._start(queued)


def _retrieve(fut: asyncio.Future[Any]) -> None:
    # every caller may have been cancelled: the exception is still each remaining caller's to handle,
    # but asyncio must not log it as never retrieved
    if not fut.cancelled():
        fut.exception()


__all__ = ["SharedRead"]
