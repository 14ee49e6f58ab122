"""Group commit for the rows that arm runs ahead of their instant.

A prepared run (:meth:`runner.engine.core.Engine.prepare`) journals its run row, its first step's row and its
first order's intent before the instant, stamped with it. Every run prepared in the same event-loop tick
queues them here; one transaction writes them all on the next tick. 1,000 playbooks due in the same
second therefore cost a few commits in the lead second, not 3,000 commits fighting over SQLite's write
lock, and at the instant no write stands between the clock and the requests. The rule "intent committed
before the request leaves" holds per run: a run is armed only once the transaction holding its intent
committed.

The write runs on the event loop thread on purpose: it is one short transaction, and a worker thread
would add a thread hop (and GIL hand-offs) to every run's preparation. Runs prepared at their instant
(fires taken over) use a committer of their own that writes in a worker thread instead (``off_loop``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from runner.journal.errors import DuplicateIntent
from runner.journal.offloop import off_loop
from runner.journal.records import Intent, intent_values
from runner.journal.tables import order_intents, runs, steps

# stamped with the instant armed for (the intent's sent_at too: no write at the instant)
_TIMES = frozenset({"started_at", "updated_at", "created_at", "sent_at"})


class _Insert:
    """An INSERT compiled once for the engine's dialect (still Core, so portable), run on a raw DBAPI
    cursor with SQLAlchemy's own bind processors (the Connection layer costs ~0.2 ms per row here).
    Rows are converted once; their timestamps are filled in by :meth:`GroupCommit.commit`."""

    def __init__(self, engine: Engine, table: sa.Table, columns: Sequence[str]) -> None:
        c: Any = table.insert().inline().compile(dialect=engine.dialect, column_keys=list(columns))
        self.sql = str(c)
        self.positional = bool(engine.dialect.positional)
        self.keys: tuple[str, ...] = tuple(c.positiontup) if self.positional else tuple(columns)
        procs = c._bind_processors  # SQLAlchemy's processors for these binds (UTCDateTime, DecimalText)
        self.procs: list[Callable[[Any], Any] | None] = [procs.get(k) for k in self.keys]
        self.times = [i for i, k in enumerate(self.keys) if k in _TIMES]
        self.time_proc = next((self.procs[i] for i in self.times), None)

    def convert(self, row: dict[str, Any]) -> list[Any]:
        return [
            None if i in self.times else row[k] if p is None else p(row[k])
            for i, (k, p) in enumerate(zip(self.keys, self.procs, strict=True))
        ]

    def stamp(self, values: list[Any], when: Any) -> Any:
        out = list(values)
        for i in self.times:
            out[i] = when
        return out if self.positional else dict(zip(self.keys, out, strict=True))


_RUN_COLUMNS = (
    "run_id", "playbook", "account", "mode", "scheduled_for", "started_at", "updated_at", "starts", "status",
    "owner",
    "timezone",
)  # fmt: skip
_STEP_COLUMNS = ("run_id", "step_id", "position", "kind", "outcome", "started_at")


@dataclass(frozen=True, slots=True)
class Staged:
    """One run's rows, converted for the commit: run row (fresh runs), first step, intent."""

    run: list[Any] | None
    step: list[Any]
    intent: list[Any]
    client_order_id: str


class GroupCommit:
    """Coalesces the rows staged by runs released in one loop tick into one transaction (one committer
    per database engine, see :func:`group_commit_for`)."""

    def __init__(self, engine: Engine, off_loop: bool = False) -> None:
        self.engine = engine
        # Each transaction in a worker thread, on a connection of its own (group_commit_for): for runs
        # prepared at their instant (fires taken over), whose loop time belongs to the instant's burst.
        self.off_loop = off_loop
        self._backlog: list[tuple[Staged, dt.datetime, asyncio.Future[None]]] = []  # off the loop: queued
        self._writer: asyncio.Future[None] | None = None  # ... and the task writing them, one at a time
        self._queue: list[tuple[Staged, dt.datetime, asyncio.Future[None]]] = []
        self._handle: asyncio.Handle | None = None
        self.batches: list[int] = []  # sizes of the transactions written (for benchmarks and tests)
        self.committed_at: list[float] = []  # wall time (time.time()) each of them committed
        self._sqlite = engine.dialect.name == "sqlite"
        self._integrity: type[Exception] = engine.dialect.loaded_dbapi.IntegrityError
        self._raw: Any = None
        self._run = _Insert(engine, runs, _RUN_COLUMNS)
        self._step = _Insert(engine, steps, _STEP_COLUMNS)
        self._intent = _Insert(engine, order_intents, [c.name for c in order_intents.c if c.name != "id"])
        sa.event.listen(engine, "engine_disposed", lambda _engine: self._release())

    def stage(self, run: dict[str, Any] | None, step: dict[str, Any], intent: Intent) -> Staged:
        """Convert one run's rows; their timestamps are set by :meth:`commit`."""
        if self._raw is None and not self.off_loop:  # off the loop: checked out by the first write
            self._raw = self.engine.raw_connection()
        return Staged(
            None if run is None else self._run.convert(run),
            self._step.convert(step),
            self._intent.convert(intent_values(intent)),
            intent.client_order_id,
        )

    async def commit(self, staged: Staged, now: dt.datetime) -> None:
        """Return once ``staged`` is committed with times ``now``. Raises :class:`DuplicateIntent` if its
        run, step or intent already exists (nothing of it is written then)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._queue.append((staged, now, fut))
        if self._handle is None:
            self._handle = loop.call_soon(self._flush)
        await fut

    def _flush(self) -> None:
        # A run cancelled while waiting (shutdown during its preparation) is not written at all.
        batch = [entry for entry in self._queue if not entry[2].done()]
        self._queue, self._handle = [], None
        if not batch:
            return
        if self.off_loop:  # one writer at a time; runs queued while it writes go in its next transaction
            self._backlog += batch
            if self._writer is None or self._writer.done():
                self._writer = asyncio.ensure_future(self._write_off_loop())
            return
        for fut, outcome in self._outcomes(batch):
            _settle(fut, outcome)

    async def _write_off_loop(self) -> None:
        while self._backlog:
            batch = [entry for entry in self._backlog if not entry[2].done()]
            self._backlog = []
            if not batch:
                continue
            try:
                outcomes = await off_loop(self._outcomes, batch)
            except BaseException as exc:  # never leave a run waiting for its commit
                outcomes = [(fut, exc) for _, _, fut in batch]
            for fut, outcome in outcomes:
                _settle(fut, outcome)

    def _outcomes(
        self, batch: list[tuple[Staged, dt.datetime, asyncio.Future[None]]]
    ) -> list[tuple[asyncio.Future[None], BaseException | None]]:
        """Writes the batch; what each run's commit returns or raises (futures are settled by the caller,
        on the loop)."""
        try:
            self._write([(s, now) for s, now, _ in batch])
        except self._integrity:
            # Someone already holds one of these rows (e.g. a run created meanwhile by another process):
            # write them one by one so only the colliding run falls back to the ordinary path.
            outcomes: list[tuple[asyncio.Future[None], BaseException | None]] = []
            for staged, now, fut in batch:
                try:
                    self._write([(staged, now)])
                except self._integrity:
                    outcomes.append((fut, DuplicateIntent(staged.client_order_id)))
                except Exception as exc:
                    outcomes.append((fut, exc))
                else:
                    outcomes.append((fut, None))
            return outcomes
        except Exception as exc:
            return [(fut, exc) for _, _, fut in batch]
        return [(fut, None) for _, _, fut in batch]

    def _write(self, batch: list[tuple[Staged, dt.datetime]]) -> None:
        self.batches.append(len(batch))
        proc = self._run.time_proc
        stamps: dict[dt.datetime, Any] = {}
        for _, now in batch:
            if now not in stamps:
                stamps[now] = now if proc is None else proc(now)
        raw = self._raw
        if raw is None:
            raw = self._raw = self.engine.raw_connection()
        cur = raw.cursor()
        try:
            if self._sqlite:
                cur.execute("BEGIN IMMEDIATE")
            run_rows = [self._run.stamp(s.run, stamps[now]) for s, now in batch if s.run is not None]
            if run_rows:
                cur.executemany(self._run.sql, run_rows)
            cur.executemany(self._step.sql, [self._step.stamp(s.step, stamps[now]) for s, now in batch])
            cur.executemany(self._intent.sql, [self._intent.stamp(s.intent, stamps[now]) for s, now in batch])
            if self._sqlite:
                cur.execute("COMMIT")
            else:
                raw.commit()
            self.committed_at.append(time.time())
        except BaseException:
            self._rollback()
            raise
        finally:
            cur.close()

    def _rollback(self) -> None:
        raw = self._raw
        try:
            if self._sqlite:
                if raw.dbapi_connection.in_transaction:
                    raw.cursor().execute("ROLLBACK")
            else:
                raw.rollback()
        except Exception:
            self._raw = None
            raw.invalidate()

    def _release(self) -> None:
        raw, self._raw = self._raw, None
        if raw is not None:
            raw.close()


def _settle(fut: asyncio.Future[None], outcome: BaseException | None) -> None:
    if fut.done():
        return
    if outcome is None:
        fut.set_result(None)
    else:
        fut.set_exception(outcome)


_shared: dict[tuple[int, bool], GroupCommit] = {}


def invalidate_server_connections() -> None:
    """After a database server outage: the committers' held connections open afresh (SQLite's kept)."""
    for committer in _shared.values():
        raw, committer._raw = committer._raw, None
        if raw is not None and not committer._sqlite:
            raw.invalidate()
        elif raw is not None:
            committer._raw = raw


def group_commit_for(engine: Engine, off_loop: bool = False) -> GroupCommit:
    """One committer per database engine in this process, so all runs on it share the transaction; and
    one more that writes in a worker thread (``off_loop``, see :class:`GroupCommit`)."""
    found = _shared.get((id(engine), off_loop))
    if found is None or found.engine is not engine:
        found = _shared[(id(engine), off_loop)] = GroupCommit(engine, off_loop)
    return found


__all__ = ["GroupCommit", "Staged", "group_commit_for"]
