"""Group commit, off the event loop, of the bookkeeping an armed run writes after its first request left.

An armed run (:meth:`runner.engine.core.Engine.prepare`) has nothing left to write before its request:
the intent was committed ahead of the instant. After it, one fire wrote the order's ack (with its
broker call row), its step's end, the read-back and the run's end: four synchronous commits on the event
loop each (~1-4 ms on PostgreSQL), 1,000 fires of an instant one after the other. Here the run's journal
(:class:`DeferredJournal`) queues those writes instead, and :meth:`DeferredJournal.flush` hands them to
the engine's :class:`Bookkeeping`, which writes the queues of every run flushing together in ONE
transaction, in a worker thread.

Nothing about safety changes: only writes made *after* a request left are queued (the intent, and any
``mark_sending`` before a re-send, are written at once: any call other than a queued write first writes
the queue, synchronously and in order, then runs as before). A crash before the flush leaves the intent
PENDING (or its run RUNNING), which the next start resolves by lookup, as a crash a moment before the
ack's commit always did.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Engine

from runner.journal.fastpath import _Fast, fast_for
from runner.model import IllegalTransition

Write = Callable[[], Any]

# The journal's writes made after a run's request left that may wait for the run's next flush.
QUEUED = frozenset({"record_order", "record_orders", "record_call", "finish_step", "finish_run"})


def apply_writes(writes: list[Write], log: Any) -> None:
    for write in writes:
        try:
            write()
        except IllegalTransition as exc:  # recorded by the write itself; the broker's report stands
            if log is not None:
                log.error("illegal_transition", error=str(exc))


class Bookkeeping:
    """One per database engine (:func:`bookkeeping_for`): the queued writes of the runs flushing in one
    turn of the event loop, in one transaction in a worker thread; one batch at a time."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._queue: list[tuple[list[Write], Any, asyncio.Future[None]]] = []
        self._handle: asyncio.Handle | None = None
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self.batches: list[int] = []  # runs per transaction written (benchmarks and tests)

    @property
    def fast(self) -> _Fast:
        """The calling thread's hot-path connection: the group and the journal's writes inside it share
        it (:func:`runner.journal.fastpath.own_connection`)."""
        return fast_for(self.engine)

    async def commit(self, writes: list[Write], log: Any = None) -> None:
        """Return once ``writes`` are committed (with whatever else is queued now)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._queue.append((writes, log, fut))
        if self._handle is None:
            self._handle = loop.call_soon(lambda: asyncio.ensure_future(self._flush()))
        await asyncio.shield(fut)  # a run cancelled meanwhile: its writes still land

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:  # a lock is bound to one event loop
            self._lock, self._lock_loop = asyncio.Lock(), loop
        async with self._lock:  # the batch before first (its worker thread holds the connection)
            batch, self._queue, self._handle = self._queue, [], None
            if not batch:
                return
            try:
                outcomes = await asyncio.to_thread(self._write, [(w, log) for w, log, _ in batch])
            except BaseException as exc:
                outcomes = [exc] * len(batch)
            for (_, _, fut), outcome in zip(batch, outcomes, strict=True):
                if fut.done():
                    continue
                if outcome is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(outcome)

    def _write(self, batch: list[tuple[list[Write], Any]]) -> list[BaseException | None]:
        try:
            with self.fast.group():
                for writes, log in batch:
                    apply_writes(writes, log)
        except Exception:
            # one run's rows failing must not fail the others': each run in a transaction of its own
            outcomes: list[BaseException | None] = []
            for writes, log in batch:
                try:
                    self.write_now(writes, log)
                except Exception as exc:
                    outcomes.append(exc)
                else:
                    outcomes.append(None)
            return outcomes
        self.batches.append(len(batch))
        return [None] * len(batch)

    def write_now(self, writes: list[Write], log: Any = None) -> None:
        """``writes`` in one transaction on the calling thread."""
        with self.fast.group():
            apply_writes(writes, log)


_shared: dict[int, Bookkeeping] = {}


def bookkeeping_for(engine: Engine) -> Bookkeeping:
    found = _shared.get(id(engine))
    if found is None or found.engine is not engine:
        found = _shared[id(engine)] = Bookkeeping(engine)
    return found


class DeferredJournal:
    """A run's journal whose :data:`QUEUED` writes wait for :meth:`flush`; any other call (a read, an
    intent, ``mark_sending``...) first writes what is queued, in order, then runs."""

    def __init__(self, inner: Any, log: Any = None) -> None:
        self.inner = inner
        self.log = log
        self.committer = bookkeeping_for(inner.engine)
        self._queued: list[Write] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr
        if name in QUEUED:

            def queue(*args: Any, **kw: Any) -> None:
                self._queued.append(functools.partial(attr, *args, **kw))

            return queue

        def in_order(*args: Any, **kw: Any) -> Any:
            self.write_queued()
            return attr(*args, **kw)

        return in_order

    def defer(self, write: Write) -> None:
        """Queue a write of the caller's own (an account lease's release) with the run's bookkeeping."""
        self._queued.append(write)

    def has_queued(self) -> bool:
        return bool(self._queued)

    def write_queued(self) -> None:
        """What is queued, now, on this thread (a call that must see it, or must come after it)."""
        queued, self._queued = self._queued, []
        if queued:
            self.committer.write_now(queued, self.log)

    async def flush(self) -> None:
        """What is queued, committed with the other runs flushing now, off the event loop."""
        queued, self._queued = self._queued, []
        if queued:
            await self.committer.commit(queued, self.log)
