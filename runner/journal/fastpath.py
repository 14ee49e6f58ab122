"""The journal's hot path (see the note below): its Core statements, compiled once per dialect, and the
one DBAPI connection per Engine they run on. :class:`runner.journal.store.Journal` and
:mod:`runner.engine.leases` run their writes and hot reads here."""

from __future__ import annotations

import contextlib
import functools
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from runner.journal.db import ConnectionSlot, connection_slot
from runner.journal.errors import JournalError
from runner.journal.tables import (
    DecimalText,
    broker_calls,
    events,
    fills,
    order_intents,
    runs,
    status_transitions,
    steps,
)

# --- hot path: statements compiled once per dialect, run on one DBAPI connection per Engine ----------
#
# Going through SQLAlchemy's Connection costs ~0.1 ms per statement (events, compiled cache lookup, result
# proxies); an order needs ~6 statements. The statements below are still Core (portable), compiled once
# for the engine's dialect with SQLAlchemy's own bind processors (UTCDateTime, DecimalText, Boolean), so
# the bytes stored are the ones the Core path writes and reads back.


@dataclass(frozen=True, slots=True, eq=False)
class Stmt:
    stmt: Any  # a Core statement
    columns: tuple[str, ...] | None = None  # INSERT: exactly these columns (no implicit defaults)


def insert(table: sa.Table, *columns: str) -> Stmt:
    return Stmt(table.insert().inline(), columns)


CALL_COLUMNS = (
    "run_id", "step_id", "client_order_id", "method", "request", "response", "error", "error_message",
    "at", "duration_us",
)  # fmt: skip
INTENT_COLUMNS = tuple(c.name for c in order_intents.c)
INS_CALL = insert(broker_calls, *CALL_COLUMNS)
INS_INTENT = insert(order_intents, *INTENT_COLUMNS)
INS_TRANSITION = insert(
    status_transitions, "client_order_id", "old_status", "new_status", "legal", "raw_status", "at"
)
INS_FILL = insert(fills, "client_order_id", "run_id", "quantity", "price", "cumulative_quantity", "at")
INS_EVENT = insert(events, "run_id", "step_id", "client_order_id", "level", "kind", "message", "at")
B_CID: Any = sa.bindparam("b_cid")
SEL_STATE = Stmt(
    sa.select(
        order_intents.c.status,
        order_intents.c.broker_order_id,
        order_intents.c.filled_quantity,
        order_intents.c.average_price,
        order_intents.c.run_id,
        order_intents.c.step_id,
    ).where(order_intents.c.client_order_id == B_CID)
)
B_RUN: Any = sa.bindparam("b_run")
B_STEP: Any = sa.bindparam("b_step")
SEL_INTENT = Stmt(sa.select(order_intents).where(order_intents.c.client_order_id == B_CID))
SEL_RUN = Stmt(sa.select(runs).where(runs.c.run_id == B_RUN))
INS_RUN = insert(
    runs,
    "run_id",
    "playbook",
    "account",
    "mode",
    "scheduled_for",
    "started_at",
    "updated_at",
    "starts",
    "status",
    "owner",
    "timezone",
    "master_sha",
)
OWNER_SEEN = sa.func.coalesce(runs.c.owner, sa.literal_column("''")) == sa.bindparam("b_seen")
# Reopening is a compare-and-set on the owner seen (``b_seen``, "" for none; tokens are never empty):
# of two processes reopening one run, the second updates no row.
UPD_RUN_RESTART = Stmt(
    runs.update()
    .where(runs.c.run_id == B_RUN, OWNER_SEEN)
    .values(
        starts=runs.c.starts + sa.literal_column("1"),
        updated_at=sa.bindparam("updated_at"),
        owner=sa.bindparam("owner"),
    )
)
UPD_RUN_TOUCH = Stmt(
    runs.update().where(runs.c.run_id == B_RUN).values(updated_at=sa.bindparam("updated_at"))
)
UPD_RUN_FINISH = Stmt(
    runs.update()
    .where(runs.c.run_id == B_RUN)
    .values(
        status=sa.bindparam("status"),
        finished_at=sa.bindparam("finished_at"),
        updated_at=sa.bindparam("updated_at"),
        message=sa.bindparam("message"),
    )
)
# the same finish, only while the run is still RUNNING (``b_running``): Journal.close_interrupted_run
UPD_RUN_INTERRUPTED = Stmt(UPD_RUN_FINISH.stmt.where(runs.c.status == sa.bindparam("b_running")))
# the same, only while still RUNNING under the owner seen (``b_seen``): Journal.close_dead_runs
UPD_RUN_DEAD = Stmt(UPD_RUN_INTERRUPTED.stmt.where(OWNER_SEEN))
UPD_RUN_REOPEN = Stmt(
    runs.update()
    .where(runs.c.run_id == B_RUN)
    .values(
        status=sa.bindparam("status"),
        finished_at=sa.bindparam("finished_at"),
        updated_at=sa.bindparam("updated_at"),
    )
)
SEL_RUNNING_OF_ACCOUNT = Stmt(
    sa.select(runs).where(
        runs.c.account == sa.bindparam("b_account"), runs.c.status == sa.literal_column("'running'")
    )
)
SEL_STEPS = Stmt(sa.select(steps).where(steps.c.run_id == B_RUN).order_by(steps.c.position))
SEL_STEP_ID = Stmt(sa.select(steps.c.id).where(steps.c.run_id == B_RUN, steps.c.step_id == B_STEP))
INS_STEP = insert(steps, "run_id", "step_id", "position", "kind", "outcome", "started_at", "parallel_group")
UPD_STEP_FINISH = Stmt(
    steps.update()
    .where(steps.c.run_id == B_RUN, steps.c.step_id == B_STEP)
    .values(
        outcome=sa.bindparam("outcome"),
        message=sa.bindparam("message"),
        finished_at=sa.bindparam("finished_at"),
    )
)
INTENT_FILTERS = ("run_id", "step_id", "slot", "account")
# Journal.discard_armed: a run written ahead of its instant, never sent. The intent goes only while it
# is provably untouched: ``b_status`` PENDING_NEW, never acknowledged, no broker call journaled for it.
DEL_ARMED_INTENT = Stmt(
    order_intents.delete().where(
        order_intents.c.client_order_id == B_CID,
        order_intents.c.run_id == B_RUN,
        order_intents.c.status == sa.bindparam("b_status"),
        order_intents.c.broker_order_id.is_(None),
        ~sa.exists().where(broker_calls.c.client_order_id == B_CID),
    )
)
DEL_RUN_STEPS = Stmt(steps.delete().where(steps.c.run_id == B_RUN))
DEL_RUN = Stmt(runs.delete().where(runs.c.run_id == B_RUN))
SEL_RUN_INTENTS = Stmt(sa.select(order_intents.c.client_order_id).where(order_intents.c.run_id == B_RUN))


@functools.lru_cache(maxsize=256)
def intents_stmt(filters: tuple[str, ...], resolutions: int, statuses: int) -> Stmt:
    """SELECT intents by equality ``filters`` and IN lists of the given lengths (-1: no IN)."""
    c = order_intents.c
    q = sa.select(order_intents).order_by(c.created_at, c.client_order_id)
    for name in filters:
        q = q.where(c[name] == sa.bindparam(f"b_{name}"))
    if resolutions >= 0:
        q = q.where(c.resolution.in_([sa.bindparam(f"b_res{i}") for i in range(resolutions)]))
    if statuses >= 0:
        q = q.where(c.status.in_([sa.bindparam(f"b_st{i}") for i in range(statuses)]))
    return Stmt(q)


SEL_EXISTS = Stmt(sa.select(order_intents.c.run_id).where(order_intents.c.client_order_id == B_CID))
UPD_STATE = Stmt(
    order_intents.update()
    .where(order_intents.c.client_order_id == B_CID)
    .values(
        resolution=sa.bindparam("resolution"),
        status=sa.bindparam("status"),
        broker_order_id=sa.bindparam("broker_order_id"),
        filled_quantity=sa.bindparam("filled_quantity"),
        average_price=sa.bindparam("average_price"),
        # None keeps the stored value: a report without a price does not erase the modified one.
        current_price=sa.func.coalesce(
            sa.bindparam("current_price", type_=DecimalText()), order_intents.c.current_price
        ),
        current_type=sa.bindparam("current_type"),
        updated_at=sa.bindparam("updated_at"),
    )
)
UPD_RESOLUTION = Stmt(
    order_intents.update()
    .where(order_intents.c.client_order_id == B_CID)
    .values(resolution=sa.bindparam("resolution"), updated_at=sa.bindparam("updated_at"))
)
UPD_SENDING = Stmt(
    order_intents.update()
    .where(order_intents.c.client_order_id == B_CID)
    .values(
        resolution=sa.bindparam("resolution"),
        sent_at=sa.bindparam("sent_at"),
        updated_at=sa.bindparam("updated_at"),
    )
)
UPD_STATUS = Stmt(
    order_intents.update()
    .where(order_intents.c.client_order_id == B_CID)
    .values(status=sa.bindparam("status"), updated_at=sa.bindparam("updated_at"))
)
COUNT_BY_PURPOSE = Stmt(
    sa.select(order_intents.c.purpose, sa.func.count().label("count"))
    .where(order_intents.c.run_id == sa.bindparam("b_run"))
    .group_by(order_intents.c.purpose)
)


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    keys: tuple[str, ...] | None  # positional paramstyle: the parameter order; None: named
    procs: dict[str, Callable[[Any], Any]]  # bind processors by parameter name
    names: tuple[str, ...]  # SELECT: result column names
    results: tuple[Callable[[Any], Any] | None, ...]  # SELECT: result processors

    def params(self, params: Mapping[str, Any]) -> Any:
        procs = self.procs
        if self.keys is not None:
            return [procs[k](params[k]) if k in procs else params[k] for k in self.keys]
        return {k: procs[k](v) if k in procs else v for k, v in params.items()}

    def row(self, raw: Sequence[Any]) -> dict[str, Any]:
        return {
            name: v if proc is None or v is None else proc(v)
            for name, proc, v in zip(self.names, self.results, raw, strict=True)
        }


class _Txn:
    """``with fast.transaction() as t:`` one committed transaction (rolled back on any exception)."""

    __slots__ = ("cur", "fast", "joined")

    def __init__(self, fast: _Fast) -> None:
        self.fast = fast
        self.cur: Any = None
        self.joined = False

    def __enter__(self) -> _Txn:
        fast = self.fast
        fast.lock.acquire()
        if fast.group_owner == threading.get_ident():  # inside :meth:`_Fast.group` on this thread: join it
            self.cur, self.joined = fast.group_cur, True
            return self
        try:
            self.cur = fast.begin()
        except BaseException:
            fast.lock.release()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        fast = self.fast
        if self.joined:  # the group commits (or rolls back, as the exception passes through it)
            fast.lock.release()
            return
        try:
            if exc_type is None:
                fast.commit(self.cur)
            else:
                fast.rollback()
        except BaseException:
            fast.rollback()
            raise
        finally:
            fast.lock.release()

    def execute(self, s: Stmt, params: Mapping[str, Any]) -> Any:
        c = self.fast.compiled(s)
        self.cur.execute(c.sql, c.params(params))
        return self.cur  # (some drivers' execute() returns None)

    def executemany(self, s: Stmt, rows: Sequence[Mapping[str, Any]]) -> None:
        c = self.fast.compiled(s)
        self.cur.executemany(c.sql, [c.params(r) for r in rows])

    def rows(self, s: Stmt, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        c = self.fast.compiled(s)
        self.cur.execute(c.sql, c.params(params))
        return [c.row(r) for r in self.cur.fetchall()]


class _Fast:
    """One DBAPI connection per Engine (shared by every Journal of the process, and on SQLite with the
    paper book: :func:`runner.journal.db.connection_slot`) for the hot path.

    Transactions are short and synchronous (no await inside), guarded by the slot's lock for threads.
    SQLite: ``BEGIN IMMEDIATE`` / ``COMMIT`` like runner.journal.db; other dialects: the driver's implicit
    transaction.
    """

    def __init__(self, engine: Engine, user: str = "journal") -> None:
        # Weak: the engine owns us (through its event listener), not the other way round.
        self._engine = weakref.ref(engine)
        self.dialect = engine.dialect
        self.sqlite = engine.dialect.name == "sqlite"
        self.integrity_error: type[Exception] = engine.dialect.loaded_dbapi.IntegrityError
        self.slot: ConnectionSlot = connection_slot(engine, user)
        self._compiled: dict[Stmt, _Compiled] = {}
        self.group_owner: int | None = None  # the thread inside :meth:`group`, if any
        self.group_cur: Any = None

    @contextlib.contextmanager
    def group(self) -> Iterator[None]:
        """Every transaction this thread opens inside joins one, committed at the end (all or nothing):
        many runs' bookkeeping in one commit (:mod:`runner.journal.bookkeeping`)."""
        with self.transaction() as t:
            if t.joined:  # already inside a group: it commits
                yield
                return
            self.group_owner, self.group_cur = threading.get_ident(), t.cur
            try:
                yield
            finally:
                self.group_owner = self.group_cur = None

    @property
    def lock(self) -> threading.RLock:
        return self.slot.lock  # read each time: a forked child gets a fresh one

    @property
    def _raw(self) -> Any:
        return self.slot.raw

    def compiled(self, s: Stmt) -> _Compiled:
        got = self._compiled.get(s)
        if got is None:
            d = self.dialect
            keys = list(s.columns) if s.columns is not None else None
            c: Any = s.stmt.compile(dialect=d, column_keys=keys)
            names: tuple[str, ...] = ()
            results: tuple[Callable[[Any], Any] | None, ...] = ()
            if isinstance(s.stmt, sa.Select):
                cols = list(s.stmt.selected_columns)
                names = tuple(str(col.key) for col in cols)
                results = tuple(col.type.dialect_impl(d).result_processor(d, None) for col in cols)
            got = self._compiled[s] = _Compiled(
                str(c),
                tuple(c.positiontup) if d.positional else None,
                # SQLAlchemy's own processors for these binds (private attribute, stable across 2.x).
                dict(c._bind_processors),
                names,
                results,
            )
        return got

    def transaction(self) -> _Txn:
        return _Txn(self)

    def read(self, s: Stmt, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """One SELECT. SQLite: no BEGIN (a single statement reads one snapshot, takes no write lock)."""
        c = self.compiled(s)
        with self.lock:
            if self.group_owner == threading.get_ident():  # read inside the group's transaction, no commit
                self.group_cur.execute(c.sql, c.params(params))
                return [c.row(r) for r in self.group_cur.fetchall()]
            cur = self._connection().cursor()
            try:
                cur.execute(c.sql, c.params(params))
                rows = cur.fetchall()
                if not self.sqlite:
                    self._raw.commit()  # end the driver's implicit transaction
            except BaseException:
                self.rollback()
                raise
            finally:
                cur.close()
        return [c.row(r) for r in rows]

    def _connection(self) -> Any:
        if self.slot.raw is None and self._engine() is None:
            raise JournalError("the journal's database engine was garbage-collected")
        return self.slot.connection()

    def begin(self) -> Any:
        cur = self._connection().cursor()
        if self.sqlite:
            cur.execute("BEGIN IMMEDIATE")
        return cur

    def commit(self, cur: Any) -> None:
        if self.sqlite:
            cur.execute("COMMIT")
        else:
            self._raw.commit()
        cur.close()

    def rollback(self) -> None:
        raw = self._raw
        if raw is None:
            return
        try:
            if self.sqlite:
                if raw.dbapi_connection.in_transaction:
                    raw.cursor().execute("ROLLBACK")
            else:
                raw.rollback()
        except Exception:
            self.slot.invalidate()  # unusable: a fresh connection next time

    def release(self) -> None:
        self.slot.release()


# By (id(engine), connection user), weakly: each _Fast lives exactly as long as its engine, which holds it
# through the dispose listener below (a registry holding it strongly would keep the engine and its file
# open forever).
_FAST: weakref.WeakValueDictionary[tuple[int, str], _Fast] = weakref.WeakValueDictionary()
_FAST_LOCK = threading.Lock()
_THREAD = threading.local()  # .user: this thread's own hot-path connection (see own_connection)


def own_connection(user: str) -> None:
    """From now on this thread's hot-path transactions run on connection ``user`` of each engine, not on
    the process's shared one (SQLite keeps its one connection: runner.journal.db.connection_slot). For
    the worker threads preparing fires at their instant (runner.journal.offloop): on the shared
    connection they queued behind the instant's group commit, which holds it for its whole batch."""
    _THREAD.user = user


def fast_for(engine: Engine) -> _Fast:
    user: str = getattr(_THREAD, "user", "journal")
    with _FAST_LOCK:
        fast = _FAST.get((id(engine), user))
        if fast is None or fast._engine() is not engine:
            fast = _FAST[(id(engine), user)] = _Fast(engine, user)
            # Engine.dispose() (tests deleting the file, a forking parent) drops our connection too.
            sa.event.listen(engine, "engine_disposed", lambda _engine: fast.release())
        return fast


# After a fork the child drops the inherited connection and lock: runner.journal.db does it for every slot.
