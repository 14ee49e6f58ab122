"""Account leases: one account is never traded by two runs at cross purposes.

A run holds a lease on its account in the journal (``account_leases``) while a step that trades runs:
order-opening steps (place, spread, modify, cancel of one order) take it **shared**, account-wide steps
(``square_off``, a cancel of every open order) take it **exclusive**. So no place opens a position in the
middle of a square-off, and no two square-offs close the same position twice, across processes and HA
daemons sharing one journal (SQLite or PostgreSQL).

Granularity: per *step*, not per run. An entry run that waits an hour for its next ``at:`` (or a chase
that waits for a fill between steps) would otherwise block the 15:15 square-off for as long; held per
step, the square-off waits only for the step in progress. What the square-off must not miss in between,
another run's order whose outcome is still open, it waits for separately (:func:`inflight_elsewhere`).

Holder: a process (:class:`runner.liveness.ProcessIdentity` token) and a run id. A holder is dead when
its process is (same host: pid + start time; another host: its heartbeat judged on the database's
clock, see :mod:`runner.liveness`) or its run is finished. A dead holder's row is taken over by
compare-and-set (deleted only if it still is the row that was judged), inside a transaction that is
serialized per account (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: a transaction-scoped advisory lock), so
there are never two winners.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import enum
import functools
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from runner.journal.db import UTCDateTime, create_all
from runner.journal.offloop import off_loop as in_thread
from runner.liveness import BEAT_EVERY, ProcessIdentity, ProcessRegistry, describe

if TYPE_CHECKING:
    from runner.clock import Clock

DEFAULT_BUSY_WAIT = 60.0  # seconds a run waits for a busy account before its step is refused
POLL = 0.25  # seconds between attempts while waiting

metadata = sa.MetaData()

account_leases = sa.Table(
    "account_leases",
    metadata,
    sa.Column("account", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(200), primary_key=True),  # ProcessIdentity token
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("mode", sa.String(16), nullable=False),
    sa.Column("step_id", sa.String(64)),
    sa.Column("acquired_at", UTCDateTime(), nullable=False),  # database clock; the compare-and-set key
)


@functools.cache
def _fast_statements() -> tuple[Any, ...]:
    """Compiled once per dialect by the journal's fast path (runner.journal imports late: no cycle)."""
    from runner.journal.fastpath import Stmt, insert

    c = account_leases.c
    b_account: Any = sa.bindparam("b_account")
    mine = (c.account == b_account, c.holder == sa.bindparam("b_holder"), c.run_id == sa.bindparam("b_run"))
    excl = f"'{LeaseMode.EXCLUSIVE.value}'"  # a literal: the fast path binds only named parameters
    return (
        Stmt(sa.select(account_leases).where(c.account == b_account)),
        Stmt(sa.select(account_leases).where(c.account == b_account, c.mode == sa.literal_column(excl))),
        Stmt(account_leases.delete().where(*mine)),
        insert(account_leases, "account", "holder", "run_id", "mode", "step_id", "acquired_at"),
        Stmt(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext(sa.bindparam("key"))))),
    )


class LeaseMode(enum.StrEnum):
    SHARED = "shared"
    EXCLUSIVE = "exclusive"

    def conflicts(self, other: LeaseMode) -> bool:
        return self is LeaseMode.EXCLUSIVE or other is LeaseMode.EXCLUSIVE


def mode_for(step: Any) -> LeaseMode | None:
    """The lease a step needs: None for steps that never reach the broker (``wait``)."""
    kind = step.kind
    if kind == "square_off" or (kind == "cancel" and getattr(step, "all_open", None) is not None):
        return LeaseMode.EXCLUSIVE
    if kind in ("place", "spread", "modify", "cancel"):
        return LeaseMode.SHARED
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class LeaseRow:
    account: str
    holder: str
    run_id: str
    mode: LeaseMode
    step_id: str | None
    acquired_at: dt.datetime

    def __str__(self) -> str:
        step = f" step {self.step_id}" if self.step_id else ""
        return f"run {self.run_id}{step} ({describe(self.holder)}, {self.mode.value})"


class AccountBusy(Exception):
    """The account is leased by another live run in a conflicting mode."""

    def __init__(self, account: str, holders: Sequence[LeaseRow], waited: float) -> None:
        self.account = account
        self.holders = tuple(holders)
        who = "; ".join(str(h) for h in holders)
        after = f" after waiting {waited:g}s" if waited else ""
        super().__init__(f"account {account!r} is busy{after}: held by {who}")


@dataclasses.dataclass(frozen=True, slots=True)
class Lease:
    account: str
    holder: str
    run_id: str
    mode: LeaseMode
    step_id: str | None


class AccountLeases:
    """The ``account_leases`` table of one journal database."""

    def __init__(self, engine: Engine, registry: ProcessRegistry | None = None) -> None:
        self.engine = engine
        create_all(engine, metadata)
        self.registry = registry or ProcessRegistry(engine)

    # --- reading ----------------------------------------------------------------------------------

    def holders(
        self, account: str, conn: sa.Connection | None = None, *, against: LeaseMode | None = None
    ) -> list[LeaseRow]:
        """The account's lease rows; ``against``: only those that conflict with that mode (a shared
        acquirer reads exclusive rows only: a day of shared holders must not make each arming O(n))."""
        if conn is None:
            with self.engine.connect() as c:
                return self.holders(account, c, against=against)
        q = sa.select(account_leases).where(account_leases.c.account == account)
        if against is LeaseMode.SHARED:
            q = q.where(account_leases.c.mode == LeaseMode.EXCLUSIVE.value)
        rows = conn.execute(q)
        return [
            LeaseRow(r.account, r.holder, r.run_id, LeaseMode(r.mode), r.step_id, r.acquired_at) for r in rows
        ]

    def dead(self, rows: Iterable[LeaseRow]) -> list[LeaseRow]:
        """Rows whose process is dead or whose run is finished."""
        rows = list(rows)
        if not rows:
            return []
        alive = self.registry.alive(r.holder for r in rows)
        from runner.journal.tables import RunStatus, runs

        with self.engine.connect() as c:
            statuses = dict(
                c.execute(
                    sa.select(runs.c.run_id, runs.c.status).where(runs.c.run_id.in_({r.run_id for r in rows}))
                ).all()
            )
        # A run not journaled yet is being armed (its rows land with the group commit): alive if its
        # process is.
        return [
            r
            for r in rows
            if not alive[r.holder] or statuses.get(r.run_id, RunStatus.RUNNING.value) != RunStatus.RUNNING
        ]

    # --- acquiring --------------------------------------------------------------------------------

    def try_acquire(
        self, account: str, run_id: str, mode: LeaseMode, step_id: str | None, holder: str | None = None
    ) -> Lease | list[LeaseRow]:
        """The lease, or the live holders that conflict with it. Never waits."""
        holder = holder or ProcessIdentity.current().token
        me = (holder, run_id)
        if self._acquire_uncontended(account, run_id, mode, step_id, holder):
            return Lease(account, holder, run_id, mode, step_id)
        # Judge liveness outside the write transaction (it may read another connection); the takeover
        # below only deletes a row that is still exactly the one judged dead.
        seen = [
            r
            for r in self.holders(account, against=mode)
            if (r.holder, r.run_id) != me and mode.conflicts(r.mode)
        ]
        dead = {(r.holder, r.run_id): r.acquired_at for r in self.dead(seen)}
        c = account_leases.c
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":  # serialize acquirers of one account (SQLite: IMMEDIATE)
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(sa.func.hashtext("lease:" + account))))
            live: list[LeaseRow] = []
            for r in self.holders(account, conn, against=mode):
                if (r.holder, r.run_id) == me or not mode.conflicts(r.mode):
                    continue
                if dead.get((r.holder, r.run_id)) == r.acquired_at:
                    conn.execute(
                        account_leases.delete().where(
                            c.account == account,
                            c.holder == r.holder,
                            c.run_id == r.run_id,
                            c.acquired_at == r.acquired_at,
                        )
                    )
                else:
                    live.append(r)  # alive, or arrived after we judged: busy, judged again next time
            if live:
                return live
            now = self.registry.db_now(conn)
            values = {"mode": mode.value, "step_id": step_id, "acquired_at": now}
            mine = (c.account == account, c.holder == holder, c.run_id == run_id)
            if conn.execute(account_leases.update().where(*mine).values(**values)).rowcount == 0:
                conn.execute(
                    account_leases.insert().values(account=account, holder=holder, run_id=run_id, **values)
                )
        return Lease(account, holder, run_id, mode, step_id)

    def _acquire_uncontended(
        self, account: str, run_id: str, mode: LeaseMode, step_id: str | None, holder: str
    ) -> bool:
        """The common case in one short transaction on the journal's raw connection (compiled
        statements, ~0.1 ms: a thousand fires armed together each take one): no conflicting row, so
        write ours. False (nothing written) when any conflicting row exists, live or not: the general
        path judges and takes over."""
        from runner.journal.fastpath import fast_for

        sel_all, sel_exclusive, del_mine, insert, pg_lock = _fast_statements()
        fast = fast_for(self.engine)
        with fast.transaction() as t:  # SQLite: BEGIN IMMEDIATE, serialized like the general path
            if fast.dialect.name == "postgresql":
                t.execute(pg_lock, {"key": "lease:" + account})
            select = sel_exclusive if mode is LeaseMode.SHARED else sel_all
            found = t.rows(select, {"b_account": account})
            if any((r["holder"], r["run_id"]) != (holder, run_id) for r in found):
                return False
            key = {"b_account": account, "b_holder": holder, "b_run": run_id}
            t.execute(del_mine, key)
            # acquired_at is the takeover's compare-and-set key: unique per acquisition is what counts
            row = {"account": account, "holder": holder, "run_id": run_id, "mode": mode.value}
            t.execute(insert, {**row, "step_id": step_id, "acquired_at": dt.datetime.now(dt.UTC)})
        return True

    def try_acquire_shared(
        self, account: str, wanted: Sequence[tuple[str, str | None]]
    ) -> dict[str, Lease | list[LeaseRow]]:
        """Shared leases of one account for several runs ((run id, step id) each, this process the
        holder), taken in ONE transaction when nothing conflicts: shared leases never conflict with each
        other, so this is what taking them one after another would write. Otherwise each is taken on its
        own (:meth:`try_acquire`: liveness judged, dead holders taken over). Never waits."""
        from runner.journal.fastpath import fast_for

        holder = ProcessIdentity.current().token
        mode = LeaseMode.SHARED
        runs = {run_id for run_id, _ in wanted}
        _, sel_exclusive, del_mine, insert, pg_lock = _fast_statements()
        fast = fast_for(self.engine)
        with fast.transaction() as t:
            if fast.dialect.name == "postgresql":
                t.execute(pg_lock, {"key": "lease:" + account})
            found = t.rows(sel_exclusive, {"b_account": account})
            mine = len(runs) == len(wanted)  # a run twice: each on its own
            uncontended = mine and not any(r["holder"] != holder or r["run_id"] not in runs for r in found)
            if uncontended:
                keys = [{"b_account": account, "b_holder": holder, "b_run": run_id} for run_id, _ in wanted]
                t.executemany(del_mine, keys)
                now = dt.datetime.now(dt.UTC)  # the compare-and-set key: unique per acquisition
                rows = [
                    {"account": account, "holder": holder, "run_id": run_id, "mode": mode.value,
                     "step_id": step_id, "acquired_at": now + dt.timedelta(microseconds=i)}
                    for i, (run_id, step_id) in enumerate(wanted)
                ]  # fmt: skip
                t.executemany(insert, rows)
        if uncontended:
            return {run_id: Lease(account, holder, run_id, mode, step_id) for run_id, step_id in wanted}
        return {run: self.try_acquire(account, run, mode, step, holder) for run, step in wanted}

    async def acquire(
        self,
        account: str,
        run_id: str,
        mode: LeaseMode,
        step_id: str | None,
        *,
        clock: Clock,
        wait: float = DEFAULT_BUSY_WAIT,
        off_loop: bool = False,
    ) -> Lease:
        """The lease, waiting up to ``wait`` clock seconds for conflicting holders to finish or die;
        :class:`AccountBusy` naming them after that (0: refuse at once). ``off_loop``: each attempt in a
        worker thread (a run prepared at its instant: the loop is the other fires')."""
        deadline = clock.now() + dt.timedelta(seconds=wait)
        acquire = functools.partial(self.try_acquire, account, run_id, mode, step_id)
        first = off_loop and mode is LeaseMode.SHARED  # taken together with the account's others
        while True:
            if first:
                got = await _shared_batch(self).take(account, run_id, step_id)
                first = False
            else:
                got = await in_thread(acquire) if off_loop else acquire()  # sync like every journal write
            if isinstance(got, Lease):
                beating = _beating(self.registry)
                if off_loop and not beating.beating():  # its first hold registers the process: a write
                    with contextlib.suppress(sa.exc.SQLAlchemyError):
                        await in_thread(self.registry.ensure, ProcessIdentity.current(), "run")
                    beating.hold(ensured=True)
                else:
                    beating.hold()
                return got
            if clock.now() >= deadline:
                raise AccountBusy(account, got, wait)
            await clock.sleep(min(POLL, max(0.0, (deadline - clock.now()).total_seconds())))

    def release(self, lease: Lease) -> None:
        self._delete(lease)
        _beating(self.registry).drop()

    def release_later(self, lease: Lease) -> Callable[[], None]:
        """:meth:`release` in two halves: this process's beat for it stops now (on the event loop); the
        returned write deletes its row, queued with the run's bookkeeping (runner.journal.bookkeeping)."""
        _beating(self.registry).drop()
        return functools.partial(self._delete, lease)

    def _delete(self, lease: Lease) -> None:
        from runner.journal.fastpath import fast_for

        del_mine = _fast_statements()[2]
        with fast_for(self.engine).transaction() as t:
            t.execute(del_mine, {"b_account": lease.account, "b_holder": lease.holder, "b_run": lease.run_id})


class _SharedBatch:
    """Shared lease takes of runs prepared off the loop (fires taken over), queued per account within a
    loop tick and taken in one transaction per account (:meth:`AccountLeases.try_acquire_shared`) in a
    worker thread: 200 taken fires of 30 accounts cost 30 lease transactions, not 200 in a row on the
    journal's one fast-path connection."""

    def __init__(self, leases: AccountLeases) -> None:
        self.leases = leases
        self._queue: dict[str, list[tuple[str, str | None, asyncio.Future[Lease | list[LeaseRow]]]]] = {}
        self._handle: asyncio.Handle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def take(self, account: str, run_id: str, step_id: str | None) -> Lease | list[LeaseRow]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Lease | list[LeaseRow]] = loop.create_future()
        self._queue.setdefault(account, []).append((run_id, step_id, fut))
        if self._handle is None:
            self._handle = loop.call_soon(self._flush)
        return await fut

    def _flush(self) -> None:
        queued, self._queue, self._handle = self._queue, {}, None
        for account, entries in queued.items():
            task = asyncio.ensure_future(self._take(account, entries))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _take(
        self, account: str, entries: list[tuple[str, str | None, asyncio.Future[Lease | list[LeaseRow]]]]
    ) -> None:
        wanted = [(run_id, step_id) for run_id, step_id, _ in entries]
        try:
            got = await in_thread(self.leases.try_acquire_shared, account, wanted)
        except BaseException as exc:  # each run's acquire raises it, as its own take would have
            for _, _, fut in entries:
                if not fut.done():
                    fut.set_exception(exc)
            return
        for run_id, _, fut in entries:
            if not fut.done():
                fut.set_result(got[run_id])


_batches: weakref.WeakKeyDictionary[AccountLeases, _SharedBatch] = weakref.WeakKeyDictionary()


def _shared_batch(leases: AccountLeases) -> _SharedBatch:
    found = _batches.get(leases)
    if found is None:
        found = _batches[leases] = _SharedBatch(leases)
    return found


def inflight_elsewhere(engine: Engine, account: str, run_id: str) -> list[tuple[str, str]]:
    """(client id, run id) of the account's unsettled intents (PENDING_NEW / UNKNOWN) that belong to
    another RUNNING run: their owner settles them (Gateway.reconcile leaves them alone on purpose, since
    their request may be in flight), and until it has, a square-off cannot know the true position."""
    from runner.journal.tables import RunStatus, order_intents, runs
    from runner.model import OrderStatus

    c = order_intents.c
    q = (
        sa.select(c.client_order_id, c.run_id)
        .join(runs, runs.c.run_id == c.run_id)
        .where(
            c.account == account,
            c.run_id != run_id,
            c.status.in_([OrderStatus.PENDING_NEW.value, OrderStatus.UNKNOWN.value]),
            runs.c.status == RunStatus.RUNNING.value,
        )
        .order_by(c.created_at, c.client_order_id)
    )
    with engine.connect().execution_options(sqlite_begin="DEFERRED") as conn:
        return [(r.client_order_id, r.run_id) for r in conn.execute(q)]


class _Beating:
    """While this process holds any lease, its ``processes`` row is beaten, so a holder on another
    host can tell it is alive. Counted: runs of one daemon share the process. It never marks the
    process stopped (a command's own :class:`runner.liveness.Heartbeat` does that at exit)."""

    def __init__(self, registry: ProcessRegistry) -> None:
        self.registry = registry
        self.count = 0
        self.task: asyncio.Task[None] | None = None

    def beating(self) -> bool:
        return self.task is not None and not self.task.done()

    def hold(self, ensured: bool = False) -> None:
        """``ensured``: the caller registered the process already (off the loop)."""
        self.count += 1
        if self.task is None or self.task.done():
            ident = ProcessIdentity.current()
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                if not ensured:
                    self.registry.ensure(ident, "run")
            self.task = asyncio.get_running_loop().create_task(self._run(ident), name="runner-lease-beat")

    def drop(self) -> None:
        self.count = max(0, self.count - 1)
        if self.count == 0 and self.task is not None:
            self.task.cancel()
            self.task = None

    async def _run(self, ident: ProcessIdentity) -> None:
        while True:
            await asyncio.sleep(BEAT_EVERY)
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                await asyncio.to_thread(self.registry.beat, ident)


_beaters: weakref.WeakKeyDictionary[Engine, _Beating] = weakref.WeakKeyDictionary()


def _beating(registry: ProcessRegistry) -> _Beating:
    found = _beaters.get(registry.engine)
    if found is None:
        found = _beaters[registry.engine] = _Beating(registry)
    return found


_leases: weakref.WeakKeyDictionary[Engine, AccountLeases] = weakref.WeakKeyDictionary()


def leases_for(engine: Engine) -> AccountLeases:
    """One :class:`AccountLeases` per journal engine in a process (create_all inspects the schema:
    once per engine, not once per run)."""
    found = _leases.get(engine)
    if found is None:
        found = _leases[engine] = AccountLeases(engine)
        # dispose() (a test deleting the file, a forking parent) may mean a new database: look again
        sa.event.listen(engine, "engine_disposed", lambda e: _leases.pop(e, None), once=True)
    return found
