"""SharedRead: callers asking at once share one read, and never get one that started before they asked."""

from __future__ import annotations

import asyncio

import pytest

from runner.brokers.shared_read import SharedRead


async def _ticks() -> None:
    for _ in range(3):  # the caller's task starts, then the read's task
        await asyncio.sleep(0)


class Book:
    """A read whose result is the number of the read; each waits until released."""

    def __init__(self) -> None:
        self.started = 0
        self.gate = asyncio.Event()

    async def read(self) -> int:
        self.started += 1
        n = self.started
        await self.gate.wait()
        return n


async def test_callers_during_a_read_share_the_next_one_which_starts_after_they_asked() -> None:
    book = Book()
    shared = SharedRead(book.read)
    first = asyncio.ensure_future(shared())
    await _ticks()
    assert book.started == 1
    later = [asyncio.ensure_future(shared()) for _ in range(9)]  # asked while read 1 was in flight
    await _ticks()
    assert book.started == 1  # queued, not ten reads
    book.gate.set()
    assert await first == 1
    assert await asyncio.gather(*later) == [2] * 9  # read 2 began after they asked: never read 1
    assert book.started == 2


async def test_a_failed_read_fails_its_callers_and_the_next_call_reads_again() -> None:
    calls = 0

    async def read() -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("book read failed")
        return calls

    shared = SharedRead(read)
    with pytest.raises(ConnectionError):
        await shared()
    assert await shared() == 2


async def test_a_cancelled_caller_leaves_the_read_to_the_others() -> None:
    book = Book()
    shared = SharedRead(book.read)
    a = asyncio.ensure_future(shared())
    await _ticks()
    b = asyncio.ensure_future(shared())
    c = asyncio.ensure_future(shared())
    await _ticks()
    b.cancel()
    book.gate.set()
    assert await a == 1 and await c == 2
    assert b.cancelled()
