"""Group commit for the paper book on a database server (PostgreSQL).

Every paper call is a transaction that locks the account's row (``SELECT .. FOR UPDATE``), so on a server
each call costs a few round trips and a commit (~2-3 ms). Run one after another on the event loop, 1,000
fires due at one instant queued behind each other for seconds. Here the calls made in one loop tick are
applied in order, each at the clock reading taken when it was made (so matching sees exactly what serial
calls would), in ONE transaction run in a worker thread; every caller is answered only after that commit
(orders durable before acknowledged), and the loop stays free while the database works. One batch is in
flight per book at a time: calls made meanwhile form the next one.

SQLite keeps the synchronous path: its commits are in-process and cheap, and its connection is shared
with the journal on the loop's thread.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from runner.journal.db import database_problem

Op = Callable[[dt.datetime], Any]
Outcome = tuple[bool, Any]  # (True, result) or (False, exception)


class BatchRunner(Protocol):
    def run_batch(self, entries: Sequence[tuple[Op, dt.datetime]]) -> list[Outcome]: ...

    def run_one(self, op: Op, now: dt.datetime) -> Any: ...


class PaperBatcher:
    """Coalesces one book's calls into transactions run off the event loop (see the module note)."""

    def __init__(self, runner: BatchRunner) -> None:
        self.runner = runner
        self._queue: list[tuple[Op, dt.datetime, asyncio.Future[Any]]] = []
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.batches: list[int] = []  # sizes of the transactions written (benchmarks and tests)

    async def submit(self, op: Op, now: dt.datetime) -> Any:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new loop (asyncio.run per test): nothing of the old one survives
            self._loop, self._queue, self._task = loop, [], None
        fut: asyncio.Future[Any] = loop.create_future()
        self._queue.append((op, now, fut))
        if self._task is None or self._task.done():
            # A task starts on the next loop pass: every call made in this tick joins the batch.
            self._task = loop.create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        while self._queue:
            # A caller cancelled while waiting (shutdown) is not applied at all.
            batch = [entry for entry in self._queue if not entry[2].done()]
            self._queue = []
            if not batch:
                continue
            self.batches.append(len(batch))
            try:
                outcomes = await asyncio.to_thread(self._apply, [(op, now) for op, now, _ in batch])
            except BaseException as exc:  # cancelled (loop shutting down): nobody is told it was booked
                for _, _, fut in batch:
                    _settle(fut, (False, exc if isinstance(exc, Exception) else RuntimeError(str(exc))))
                raise
            for (_, _, fut), outcome in zip(batch, outcomes, strict=True):
                _settle(fut, outcome)

    def _apply(self, entries: list[tuple[Op, dt.datetime]]) -> list[Outcome]:
        try:
            return self.runner.run_batch(entries)
        except Exception as exc:
            # Rolled back: nothing of the batch is booked. The database failing fails every call in it;
            # anything else (one call's bug) is isolated by applying the calls one by one.
            if len(entries) == 1 or database_problem(exc) is not None:
                return [(False, exc)] * len(entries)
        out: list[Outcome] = []
        for op, now in entries:
            try:
                out.append((True, self.runner.run_one(op, now)))
            except Exception as exc:
                out.append((False, exc))
        return out


def _settle(fut: asyncio.Future[Any], outcome: Outcome) -> None:
    if fut.done():
        return
    ok, value = outcome
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


__all__ = ["PaperBatcher"]
