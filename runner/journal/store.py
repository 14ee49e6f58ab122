"""The journal: runs, steps, order intents, every broker call, status transitions, fills and events.

SQLAlchemy Core only (no dialect-specific SQL in queries) so PostgreSQL can replace SQLite. Two rules
carry the weight of "never send an order twice":

* an intent row is committed before the request leaves (:meth:`Journal.add_intent`);
* an order's status only moves along :data:`runner.model.TRANSITIONS`; an illegal move is recorded as an
  error row and the stored status is left alone (:meth:`Journal.record_order` raises after recording).

SQLite runs in WAL mode with ``synchronous=NORMAL``: a committed row survives a killed process (the
crash test kills with SIGKILL); only an OS crash / power loss can drop the last commits.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import json
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.types import TypeDecorator

from runner.journal.db import ConnectionSlot, ScrubbedText, UTCDateTime, connection_slot, create_all
from runner.model import (
    IllegalTransition,
    Instrument,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
    Product,
    Side,
    Validity,
    check_transition,
    instrument_from_dict,
    instrument_to_dict,
)


class DecimalText(TypeDecorator[Decimal]):
    """Money as exact decimal text: no float anywhere, same on every dialect."""

    impl = sa.String(40)
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, Decimal):
            raise TypeError(f"money must be Decimal, got {type(value).__name__}")
        return format(value, "f")

    def process_result_value(self, value: str | None, dialect: Any) -> Decimal | None:
        return None if value is None else Decimal(value)


class RunStatus(enum.StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # some step failed
    REFUSED = "refused"  # a step was refused by pre-trade limits
    STOPPED = "stopped"  # a wait asked the run to stop; nothing failed
    INTERRUPTED = "interrupted"  # its process was stopped (a signal) or died; its message says by whom


class StepOutcome(enum.StrEnum):
    RUNNING = "running"  # started, not finished: a crash leaves it so and a resume re-enters it
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"  # condition not met, late, or an earlier step failed
    REFUSED = "refused"  # pre-trade risk check said no; nothing was sent
    STOPPED = "stopped"  # wait timed out with on_timeout: stop
    TIMED_OUT = "timed_out"  # wait timed out with on_timeout: continue

    @property
    def is_final(self) -> bool:
        return self is not StepOutcome.RUNNING


class Resolution(enum.StrEnum):
    """What we know about whether an intent reached the broker."""

    PENDING = "pending"  # journaled; the request may be in flight or may never have left (set again,
    # with ``sent_at``, before every send: a death between a re-send and its reply leaves it PENDING)
    CONFIRMED = "confirmed"  # the broker has it (ack or lookup)
    ABSENT = "absent"  # the broker never got it: refused on our side, or not found by a lookup made well
    # after the last send (see runner.engine.gateway.Gateway.reconcile); may be sent again, as PENDING first


class Purpose(enum.StrEnum):
    ENTRY = "entry"
    REPLACE = "replace"  # cancel + new order on brokers without in-place modify
    UNWIND = "unwind"
    SQUARE_OFF = "square_off"

    @property
    def reduces_risk(self) -> bool:
        return self in (Purpose.UNWIND, Purpose.SQUARE_OFF)


metadata = sa.MetaData()

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("run_id", sa.String(64), primary_key=True),
    sa.Column("playbook", sa.String(64), nullable=False, index=True),
    sa.Column("account", sa.String(64), nullable=False),
    sa.Column("mode", sa.String(16), nullable=False),
    sa.Column("scheduled_for", UTCDateTime(), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("finished_at", UTCDateTime()),
    sa.Column("starts", sa.Integer, nullable=False, default=1),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("message", ScrubbedText()),
    # the runner.liveness.ProcessIdentity token of the process executing (or that last executed) it;
    # NULL on runs journaled before runs had owners
    sa.Column("owner", sa.String(200)),
    sa.Column("timezone", sa.String(64)),  # the playbook's IANA zone, for showing its times; NULL: UTC
)

steps = sa.Table(
    "steps",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.run_id"), nullable=False),
    sa.Column("step_id", sa.String(64), nullable=False),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("message", ScrubbedText()),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("finished_at", UTCDateTime()),
    sa.UniqueConstraint("run_id", "step_id", name="uq_steps_run_step"),
)

order_intents = sa.Table(
    "order_intents",
    metadata,
    sa.Column("client_order_id", sa.String(64), primary_key=True),
    # No index of its own: uq_intents_slot (run_id, ...) serves run_id lookups, one b-tree less per insert.
    sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.run_id"), nullable=False),
    sa.Column("account", sa.String(64), nullable=False, index=True),
    sa.Column("step_id", sa.String(64), nullable=False),
    sa.Column("slot", sa.String(200), nullable=False),  # step id, or step:instrument for square-offs
    sa.Column("leg", sa.Integer, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("purpose", sa.String(16), nullable=False),
    sa.Column("group_id", sa.String(64)),  # native multileg: the group's client id
    sa.Column("instrument", sa.Text, nullable=False),  # JSON
    sa.Column("instrument_key", sa.String(120), nullable=False),
    sa.Column("side", sa.String(4), nullable=False),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("order_type", sa.String(8), nullable=False),
    sa.Column("product", sa.String(8), nullable=False),
    sa.Column("validity", sa.String(8), nullable=False),
    sa.Column("price", DecimalText()),
    sa.Column("trigger_price", DecimalText()),
    sa.Column("disclosed_quantity", sa.Integer, nullable=False, default=0),
    sa.Column("tag", sa.String(40)),
    sa.Column("resolution", sa.String(16), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("broker_order_id", sa.String(64), index=True),
    sa.Column("filled_quantity", sa.Integer, nullable=False, default=0),
    sa.Column("average_price", DecimalText()),
    sa.Column("current_price", DecimalText()),  # after modifies
    sa.Column("current_type", sa.String(8)),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    # The last send, committed before the request leaves (first send, re-send, multileg, armed instant):
    # absence is measured from it, as updated_at moves with every write. NULL (older rows): created_at.
    sa.Column("sent_at", UTCDateTime()),
    sa.UniqueConstraint("run_id", "slot", "leg", "attempt", name="uq_intents_slot"),
)

broker_calls = sa.Table(
    "broker_calls",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), index=True),
    sa.Column("step_id", sa.String(64)),
    sa.Column("client_order_id", sa.String(64), index=True),
    sa.Column("method", sa.String(32), nullable=False),
    sa.Column("request", ScrubbedText()),  # JSON, secrets redacted
    sa.Column("response", ScrubbedText()),  # JSON, secrets redacted
    sa.Column("error", sa.String(40)),  # error class name
    sa.Column("error_message", ScrubbedText()),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("duration_us", sa.Integer),
)

status_transitions = sa.Table(
    "status_transitions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("client_order_id", sa.String(64), nullable=False, index=True),
    sa.Column("old_status", sa.String(20), nullable=False),
    sa.Column("new_status", sa.String(20), nullable=False),
    sa.Column("legal", sa.Boolean, nullable=False),
    sa.Column("raw_status", sa.String(64)),
    sa.Column("at", UTCDateTime(), nullable=False),
)

fills = sa.Table(
    "fills",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("client_order_id", sa.String(64), nullable=False, index=True),
    sa.Column("run_id", sa.String(64), nullable=False, index=True),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("price", DecimalText()),
    sa.Column("cumulative_quantity", sa.Integer, nullable=False),
    sa.Column("at", UTCDateTime(), nullable=False),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), index=True),
    sa.Column("step_id", sa.String(64)),
    sa.Column("client_order_id", sa.String(64)),
    sa.Column("level", sa.String(8), nullable=False),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("message", ScrubbedText(), nullable=False),
    sa.Column("at", UTCDateTime(), nullable=False),
)


# --- hot path: statements compiled once per dialect, run on one DBAPI connection per Engine ----------
#
# Going through SQLAlchemy's Connection costs ~0.1 ms per statement (events, compiled cache lookup, result
# proxies); an order needs ~6 statements. The statements below are still Core (portable), compiled once
# for the engine's dialect with SQLAlchemy's own bind processors (UTCDateTime, DecimalText, Boolean), so
# the bytes stored are the ones the Core path writes and reads back.


@dataclass(frozen=True, slots=True, eq=False)
class _Stmt:
    stmt: Any  # a Core statement
    columns: tuple[str, ...] | None = None  # INSERT: exactly these columns (no implicit defaults)


def _insert(table: sa.Table, *columns: str) -> _Stmt:
    return _Stmt(table.insert().inline(), columns)


_CALL_COLUMNS = (
    "run_id", "step_id", "client_order_id", "method", "request", "response", "error", "error_message",
    "at", "duration_us",
)  # fmt: skip
_INTENT_COLUMNS = tuple(c.name for c in order_intents.c)
_INS_CALL = _insert(broker_calls, *_CALL_COLUMNS)
_INS_INTENT = _insert(order_intents, *_INTENT_COLUMNS)
_INS_TRANSITION = _insert(
    status_transitions, "client_order_id", "old_status", "new_status", "legal", "raw_status", "at"
)
_INS_FILL = _insert(fills, "client_order_id", "run_id", "quantity", "price", "cumulative_quantity", "at")
_INS_EVENT = _insert(events, "run_id", "step_id", "client_order_id", "level", "kind", "message", "at")
_B_CID: Any = sa.bindparam("b_cid")
_SEL_STATE = _Stmt(
    sa.select(
        order_intents.c.status,
        order_intents.c.broker_order_id,
        order_intents.c.filled_quantity,
        order_intents.c.average_price,
        order_intents.c.run_id,
        order_intents.c.step_id,
    ).where(order_intents.c.client_order_id == _B_CID)
)
_B_RUN: Any = sa.bindparam("b_run")
_B_STEP: Any = sa.bindparam("b_step")
_SEL_INTENT = _Stmt(sa.select(order_intents).where(order_intents.c.client_order_id == _B_CID))
_SEL_RUN = _Stmt(sa.select(runs).where(runs.c.run_id == _B_RUN))
_INS_RUN = _insert(
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
)
_OWNER_SEEN = sa.func.coalesce(runs.c.owner, sa.literal_column("''")) == sa.bindparam("b_seen")
# Reopening is a compare-and-set on the owner seen (``b_seen``, "" for none; tokens are never empty):
# of two processes reopening one run, the second updates no row.
_UPD_RUN_RESTART = _Stmt(
    runs.update()
    .where(runs.c.run_id == _B_RUN, _OWNER_SEEN)
    .values(
        starts=runs.c.starts + sa.literal_column("1"),
        updated_at=sa.bindparam("updated_at"),
        owner=sa.bindparam("owner"),
    )
)
_UPD_RUN_TOUCH = _Stmt(
    runs.update().where(runs.c.run_id == _B_RUN).values(updated_at=sa.bindparam("updated_at"))
)
_UPD_RUN_FINISH = _Stmt(
    runs.update()
    .where(runs.c.run_id == _B_RUN)
    .values(
        status=sa.bindparam("status"),
        finished_at=sa.bindparam("finished_at"),
        updated_at=sa.bindparam("updated_at"),
        message=sa.bindparam("message"),
    )
)
# the same finish, only while the run is still RUNNING (``b_running``): Journal.close_interrupted_run
_UPD_RUN_INTERRUPTED = _Stmt(_UPD_RUN_FINISH.stmt.where(runs.c.status == sa.bindparam("b_running")))
# the same, only while still RUNNING under the owner seen (``b_seen``): Journal.close_dead_runs
_UPD_RUN_DEAD = _Stmt(
    _UPD_RUN_INTERRUPTED.stmt.where(_OWNER_SEEN)
)
_UPD_RUN_REOPEN = _Stmt(
    runs.update()
    .where(runs.c.run_id == _B_RUN)
    .values(
        status=sa.bindparam("status"),
        finished_at=sa.bindparam("finished_at"),
        updated_at=sa.bindparam("updated_at"),
    )
)
_SEL_RUNNING_OF_ACCOUNT = _Stmt(
    sa.select(runs).where(
        runs.c.account == sa.bindparam("b_account"), runs.c.status == sa.literal_column("'running'")
    )
)
_SEL_STEPS = _Stmt(sa.select(steps).where(steps.c.run_id == _B_RUN).order_by(steps.c.position))
_SEL_STEP_ID = _Stmt(sa.select(steps.c.id).where(steps.c.run_id == _B_RUN, steps.c.step_id == _B_STEP))
_INS_STEP = _insert(steps, "run_id", "step_id", "position", "kind", "outcome", "started_at")
_UPD_STEP_FINISH = _Stmt(
    steps.update()
    .where(steps.c.run_id == _B_RUN, steps.c.step_id == _B_STEP)
    .values(
        outcome=sa.bindparam("outcome"),
        message=sa.bindparam("message"),
        finished_at=sa.bindparam("finished_at"),
    )
)
_INTENT_FILTERS = ("run_id", "step_id", "slot", "account")
# Journal.discard_armed: a run written ahead of its instant, never sent. The intent goes only while it
# is provably untouched: ``b_status`` PENDING_NEW, never acknowledged, no broker call journaled for it.
_DEL_ARMED_INTENT = _Stmt(
    order_intents.delete().where(
        order_intents.c.client_order_id == _B_CID,
        order_intents.c.run_id == _B_RUN,
        order_intents.c.status == sa.bindparam("b_status"),
        order_intents.c.broker_order_id.is_(None),
        ~sa.exists().where(broker_calls.c.client_order_id == _B_CID),
    )
)
_DEL_RUN_STEPS = _Stmt(steps.delete().where(steps.c.run_id == _B_RUN))
_DEL_RUN = _Stmt(runs.delete().where(runs.c.run_id == _B_RUN))
_SEL_RUN_INTENTS = _Stmt(sa.select(order_intents.c.client_order_id).where(order_intents.c.run_id == _B_RUN))


@functools.lru_cache(maxsize=256)
def _intents_stmt(filters: tuple[str, ...], resolutions: int, statuses: int) -> _Stmt:
    """SELECT intents by equality ``filters`` and IN lists of the given lengths (-1: no IN)."""
    c = order_intents.c
    q = sa.select(order_intents).order_by(c.created_at, c.client_order_id)
    for name in filters:
        q = q.where(c[name] == sa.bindparam(f"b_{name}"))
    if resolutions >= 0:
        q = q.where(c.resolution.in_([sa.bindparam(f"b_res{i}") for i in range(resolutions)]))
    if statuses >= 0:
        q = q.where(c.status.in_([sa.bindparam(f"b_st{i}") for i in range(statuses)]))
    return _Stmt(q)


_SEL_EXISTS = _Stmt(sa.select(order_intents.c.run_id).where(order_intents.c.client_order_id == _B_CID))
_UPD_STATE = _Stmt(
    order_intents.update()
    .where(order_intents.c.client_order_id == _B_CID)
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
_UPD_RESOLUTION = _Stmt(
    order_intents.update()
    .where(order_intents.c.client_order_id == _B_CID)
    .values(resolution=sa.bindparam("resolution"), updated_at=sa.bindparam("updated_at"))
)
_UPD_SENDING = _Stmt(
    order_intents.update()
    .where(order_intents.c.client_order_id == _B_CID)
    .values(
        resolution=sa.bindparam("resolution"),
        sent_at=sa.bindparam("sent_at"),
        updated_at=sa.bindparam("updated_at"),
    )
)
_UPD_STATUS = _Stmt(
    order_intents.update()
    .where(order_intents.c.client_order_id == _B_CID)
    .values(status=sa.bindparam("status"), updated_at=sa.bindparam("updated_at"))
)
_COUNT_BY_PURPOSE = _Stmt(
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

    __slots__ = ("cur", "fast")

    def __init__(self, fast: _Fast) -> None:
        self.fast = fast
        self.cur: Any = None

    def __enter__(self) -> _Txn:
        self.fast.lock.acquire()
        try:
            self.cur = self.fast.begin()
        except BaseException:
            self.fast.lock.release()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        fast = self.fast
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

    def execute(self, s: _Stmt, params: Mapping[str, Any]) -> Any:
        c = self.fast.compiled(s)
        self.cur.execute(c.sql, c.params(params))
        return self.cur  # (some drivers' execute() returns None)

    def executemany(self, s: _Stmt, rows: Sequence[Mapping[str, Any]]) -> None:
        c = self.fast.compiled(s)
        self.cur.executemany(c.sql, [c.params(r) for r in rows])

    def rows(self, s: _Stmt, params: Mapping[str, Any]) -> list[dict[str, Any]]:
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

    def __init__(self, engine: Engine) -> None:
        # Weak: the engine owns us (through its event listener), not the other way round.
        self._engine = weakref.ref(engine)
        self.dialect = engine.dialect
        self.sqlite = engine.dialect.name == "sqlite"
        self.integrity_error: type[Exception] = engine.dialect.loaded_dbapi.IntegrityError
        self.slot: ConnectionSlot = connection_slot(engine, "journal")
        self._compiled: dict[_Stmt, _Compiled] = {}

    @property
    def lock(self) -> threading.RLock:
        return self.slot.lock  # read each time: a forked child gets a fresh one

    @property
    def _raw(self) -> Any:
        return self.slot.raw

    def compiled(self, s: _Stmt) -> _Compiled:
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

    def read(self, s: _Stmt, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """One SELECT. SQLite: no BEGIN (a single statement reads one snapshot, takes no write lock)."""
        c = self.compiled(s)
        with self.lock:
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


# By id(engine), weakly: each _Fast lives exactly as long as its engine, which holds it through the
# dispose listener below (a registry holding it strongly would keep the engine and its file open forever).
_FAST: weakref.WeakValueDictionary[int, _Fast] = weakref.WeakValueDictionary()
_FAST_LOCK = threading.Lock()


def _fast_for(engine: Engine) -> _Fast:
    with _FAST_LOCK:
        fast = _FAST.get(id(engine))
        if fast is None or fast._engine() is not engine:
            fast = _FAST[id(engine)] = _Fast(engine)
            # Engine.dispose() (tests deleting the file, a forking parent) drops our connection too.
            sa.event.listen(engine, "engine_disposed", lambda _engine: fast.release())
        return fast


# After a fork the child drops the inherited connection and lock: runner.journal.db does it for every slot.


class DuplicateIntent(Exception):
    """An intent with this client id (or slot) is already journaled."""


class JournalError(Exception):
    pass


class RunBusy(JournalError):
    """The run is RUNNING under another process that is alive: it is never executed twice at once."""

    def __init__(self, run_id: str, holder: str | None) -> None:
        from runner.liveness import describe

        who = describe(holder) if holder else "another process"
        super().__init__(f"run {run_id} is running in {who}: refused, nothing was sent")
        self.run_id = run_id
        self.holder = holder


# A RUNNING run without an owner was journaled by a release before runs had owners; its process cannot
# be asked. It counts as dead once nothing of it was written for this long: far beyond liveness's
# STALE_AFTER, since such a process may sit in a long wait step without writing anything.
OWNERLESS_STALE_AFTER = dt.timedelta(minutes=10)


@dataclass(frozen=True, slots=True)
class RunRecord:
    run_id: str
    playbook: str
    account: str
    mode: str
    scheduled_for: dt.datetime
    started_at: dt.datetime
    updated_at: dt.datetime
    finished_at: dt.datetime | None
    starts: int
    status: RunStatus
    message: str | None
    resumed: bool = False
    owner: str | None = None  # runner.liveness token of the process that executes (executed) it
    timezone: str | None = None  # the playbook's zone (None: not journaled, older runs)


@dataclass(frozen=True, slots=True)
class StepRecord:
    run_id: str
    step_id: str
    position: int
    kind: str
    outcome: StepOutcome
    message: str | None
    started_at: dt.datetime
    finished_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class Intent:
    """One order we mean to send (or sent), with everything needed to send it again under the same id."""

    client_order_id: str
    run_id: str
    account: str
    step_id: str
    slot: str
    leg: int
    attempt: int
    purpose: Purpose
    request: OrderRequest
    created_at: dt.datetime
    resolution: Resolution = Resolution.PENDING
    status: OrderStatus = OrderStatus.PENDING_NEW
    broker_order_id: str | None = None
    filled_quantity: int = 0
    average_price: Decimal | None = None
    group_id: str | None = None
    updated_at: dt.datetime | None = None
    sent_at: dt.datetime | None = None  # the last send (see order_intents.sent_at); None: created_at

    @property
    def last_sent(self) -> dt.datetime:
        """When the request last may have left: absence is measured from here."""
        return self.sent_at or self.created_at


@functools.lru_cache(maxsize=4096)  # instruments are frozen; a run places many orders on few of them
def instrument_to_json(ins: Instrument) -> str:
    return json.dumps(instrument_to_dict(ins), sort_keys=True)


def instrument_from_json(text: str) -> Instrument:
    return instrument_from_dict(json.loads(text))


def _intent_from_row(row: Any) -> Intent:
    request = OrderRequest(
        client_order_id=row["client_order_id"],
        instrument=instrument_from_json(row["instrument"]),
        side=Side(row["side"]),
        quantity=row["quantity"],
        order_type=OrderType(row["order_type"]),
        product=Product(row["product"]),
        validity=Validity(row["validity"]),
        price=row["price"],
        trigger_price=row["trigger_price"],
        disclosed_quantity=row["disclosed_quantity"],
        tag=row["tag"],
    )
    return Intent(
        client_order_id=row["client_order_id"],
        run_id=row["run_id"],
        account=row["account"],
        step_id=row["step_id"],
        slot=row["slot"],
        leg=row["leg"],
        attempt=row["attempt"],
        purpose=Purpose(row["purpose"]),
        request=request,
        created_at=row["created_at"],
        resolution=Resolution(row["resolution"]),
        status=OrderStatus(row["status"]),
        broker_order_id=row["broker_order_id"],
        filled_quantity=row["filled_quantity"],
        average_price=row["average_price"],
        group_id=row["group_id"],
        updated_at=row["updated_at"],
        sent_at=row["sent_at"],
    )


def _run_from_row(row: Any, resumed: bool = False) -> RunRecord:
    return RunRecord(
        run_id=row["run_id"],
        playbook=row["playbook"],
        account=row["account"],
        mode=row["mode"],
        scheduled_for=row["scheduled_for"],
        started_at=row["started_at"],
        updated_at=row["updated_at"],
        finished_at=row["finished_at"],
        starts=row["starts"],
        status=RunStatus(row["status"]),
        message=row["message"],
        resumed=resumed,
        owner=row.get("owner"),
        timezone=row["timezone"],
    )


def dead_holder(run: RunRecord) -> str:
    """Why a RUNNING run counts as dead, as a person reads it."""
    from runner.liveness import describe

    if run.owner is None:
        minutes = OWNERLESS_STALE_AFTER.total_seconds() / 60
        return f"no owner recorded and nothing written for {minutes:.0f} min"
    return f"its process ({describe(run.owner)}) is gone"


def _step_from_row(row: Any) -> StepRecord:
    return StepRecord(
        run_id=row["run_id"],
        step_id=row["step_id"],
        position=row["position"],
        kind=row["kind"],
        outcome=StepOutcome(row["outcome"]),
        message=row["message"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


class Journal:
    """Synchronous, short transactions; every write method commits before it returns."""

    def __init__(self, url: str | None = None, *, engine: Engine | None = None) -> None:
        if engine is None:
            from runner.journal.db import shared_engine

            engine = shared_engine(url)
        self.engine = engine
        create_all(engine, metadata)
        self._fast = _fast_for(engine)
        from runner.liveness import ProcessRegistry

        self.processes = ProcessRegistry(engine)  # run owners' liveness (creates ``processes``)

    def close(self) -> None:
        """Engines are shared per URL in a process (runner.journal.db); nothing to release per journal."""

    def _read(self) -> Connection:
        return self.engine.connect().execution_options(sqlite_begin="DEFERRED")

    # --- runs -------------------------------------------------------------------------------------

    def start_run(
        self,
        run_id: str,
        *,
        playbook: str,
        account: str,
        scheduled_for: dt.datetime,
        mode: str,
        now: dt.datetime,
        owner: str | None = None,
        timezone: str | None = None,
    ) -> RunRecord:
        """Create the run, or reopen it (``resumed=True``) when this run id was started before, owned by
        ``owner`` (a runner.liveness token). Raises :class:`RunBusy` when the run is RUNNING under
        another live process, or another process created or reopened it between our read and our
        write (a compare-and-set on the owner seen: never two processes in one run)."""
        key = {"b_run": run_id}
        seen = self.get_run(run_id)
        if seen is not None:
            if seen.account != account:
                raise JournalError(f"run {run_id} belongs to account {seen.account!r}, not {account!r}")
            if seen.status is RunStatus.RUNNING and seen.owner != owner and self.holder_alive(seen):
                raise RunBusy(run_id, seen.owner)
        with self._fast.transaction() as t:
            if seen is None:
                try:
                    t.execute(
                        _INS_RUN,
                        {
                            "run_id": run_id,
                            "playbook": playbook,
                            "account": account,
                            "mode": mode,
                            "scheduled_for": scheduled_for,
                            "started_at": now,
                            "updated_at": now,
                            "starts": 1,
                            "status": RunStatus.RUNNING.value,
                            "owner": owner,
                            "timezone": timezone,
                        },
                    )
                except self._fast.integrity_error:
                    won = False
                else:
                    return _run_from_row(t.rows(_SEL_RUN, key)[0])
            else:
                params = {"b_run": run_id, "b_seen": seen.owner or "", "updated_at": now}
                won = t.execute(_UPD_RUN_RESTART, {**params, "owner": owner or seen.owner}).rowcount == 1
                if won:
                    return _run_from_row(t.rows(_SEL_RUN, key)[0], resumed=True)
        holder = self.get_run(run_id)
        raise RunBusy(run_id, holder.owner if holder is not None else None)

    def holder_alive(self, run: RunRecord) -> bool:
        """Is the process executing this run alive? By its owner token (runner.liveness); a run with no
        owner (journaled before owners existed) while anything of it was written in the last
        :data:`OWNERLESS_STALE_AFTER` (database clock)."""
        if run.owner is not None:
            return self.processes.is_alive(run.owner)
        last = self.last_activity(run.run_id)
        return last is not None and self.processes.db_now() - last < OWNERLESS_STALE_AFTER

    def close_dead_runs(self, account: str, now: dt.datetime, *, closer: str) -> list[RunRecord]:
        """Close (INTERRUPTED, saying whose process is gone and who closed it) every RUNNING run of
        ``account`` whose process is gone, so that its unsettled intents are reconciled like any
        finished run's. Conditional on the owner seen: a run reopened meanwhile stays open."""
        rows = self._fast.read(_SEL_RUNNING_OF_ACCOUNT, {"b_account": account})  # every prepare: fast path
        running = [_run_from_row(r) for r in rows]
        closed: list[RunRecord] = []
        for run in running:
            if self.holder_alive(run):
                continue
            message = f"interrupted: {dead_holder(run)}; closed by {closer}"
            values = {"status": RunStatus.INTERRUPTED.value, "finished_at": now, "updated_at": now}
            params = {"b_run": run.run_id, "b_running": RunStatus.RUNNING.value, "b_seen": run.owner or ""}
            with self._fast.transaction() as t:
                if t.execute(_UPD_RUN_DEAD, {**params, **values, "message": message}).rowcount == 1:
                    closed.append(run)
        return closed

    def dead_runs(self, account: str | None = None) -> list[RunRecord]:
        """RUNNING runs whose process is gone (read-only: ``runner status``)."""
        q = sa.select(runs).where(runs.c.status == RunStatus.RUNNING.value)
        if account is not None:
            q = q.where(runs.c.account == account)
        with self._read() as c:
            running = [_run_from_row(r) for r in c.execute(q).mappings()]
        return [r for r in running if not self.holder_alive(r)]

    def finish_run(
        self, run_id: str, status: RunStatus, now: dt.datetime, message: str | None = None
    ) -> None:
        values = {"status": status.value, "finished_at": now, "updated_at": now, "message": message}
        self._write(_UPD_RUN_FINISH, {"b_run": run_id, **values})

    def close_interrupted_run(
        self, run_id: str, now: dt.datetime, message: str, status: RunStatus = RunStatus.INTERRUPTED
    ) -> None:
        """``status`` (INTERRUPTED: its daemon died mid-run) with ``message``, only if the run is still
        RUNNING."""
        values = {"status": status.value, "finished_at": now, "updated_at": now, "message": message}
        self._write(_UPD_RUN_INTERRUPTED, {"b_run": run_id, "b_running": RunStatus.RUNNING.value, **values})

    def reopen_run(self, run_id: str, now: dt.datetime) -> None:
        values = {"status": RunStatus.RUNNING.value, "finished_at": None, "updated_at": now}
        self._write(_UPD_RUN_REOPEN, {"b_run": run_id, **values})

    def get_run(self, run_id: str) -> RunRecord | None:
        found = self._fast.read(_SEL_RUN, {"b_run": run_id})
        return _run_from_row(found[0]) if found else None

    def find_runs(self, prefix: str) -> list[RunRecord]:
        with self._read() as c:
            rows = c.execute(sa.select(runs).where(runs.c.run_id.startswith(prefix, autoescape=True)))
            return [_run_from_row(r) for r in rows.mappings()]

    def list_runs(self, limit: int = 50, playbook: str | None = None) -> list[RunRecord]:
        q = sa.select(runs).order_by(runs.c.started_at.desc(), runs.c.run_id).limit(limit)
        if playbook:
            q = q.where(runs.c.playbook == playbook)
        with self._read() as c:
            return [_run_from_row(r) for r in c.execute(q).mappings()]

    def last_activity(self, run_id: str) -> dt.datetime | None:
        """The latest time anything of this run was journaled (rehearse resumes its clock from here)."""
        with self._read() as c:
            candidates = [
                c.execute(sa.select(sa.func.max(runs.c.updated_at)).where(runs.c.run_id == run_id)).scalar(),
                c.execute(
                    sa.select(sa.func.max(steps.c.started_at)).where(steps.c.run_id == run_id)
                ).scalar(),
                c.execute(
                    sa.select(sa.func.max(steps.c.finished_at)).where(steps.c.run_id == run_id)
                ).scalar(),
                c.execute(
                    sa.select(sa.func.max(order_intents.c.updated_at)).where(order_intents.c.run_id == run_id)
                ).scalar(),
                c.execute(
                    sa.select(sa.func.max(broker_calls.c.at)).where(broker_calls.c.run_id == run_id)
                ).scalar(),
            ]
        # func.max bypasses the type decorator on some dialects: normalise here.
        found: list[dt.datetime] = []
        for v in candidates:
            if isinstance(v, str):  # SQLite hands back text for an aggregate over a DateTime column
                v = dt.datetime.fromisoformat(v)
            if isinstance(v, dt.datetime):
                found.append(v if v.tzinfo else v.replace(tzinfo=dt.UTC))
        return max(found) if found else None

    # --- steps ------------------------------------------------------------------------------------

    def steps_of(self, run_id: str) -> dict[str, StepRecord]:
        return {r["step_id"]: _step_from_row(r) for r in self._fast.read(_SEL_STEPS, {"b_run": run_id})}

    def start_step(self, run_id: str, step_id: str, *, position: int, kind: str, now: dt.datetime) -> None:
        with self._fast.transaction() as t:
            if not t.rows(_SEL_STEP_ID, {"b_run": run_id, "b_step": step_id}):
                t.execute(
                    _INS_STEP,
                    {
                        "run_id": run_id,
                        "step_id": step_id,
                        "position": position,
                        "kind": kind,
                        "outcome": StepOutcome.RUNNING.value,
                        "started_at": now,
                    },
                )
            t.execute(_UPD_RUN_TOUCH, {"b_run": run_id, "updated_at": now})

    def finish_step(
        self, run_id: str, step_id: str, outcome: StepOutcome, now: dt.datetime, message: str | None = None
    ) -> None:
        self._write(
            _UPD_STEP_FINISH,
            {
                "b_run": run_id,
                "b_step": step_id,
                "outcome": outcome.value,
                "message": message,
                "finished_at": now,
            },
        )

    def discard_armed(self, run_id: str, client_order_id: str) -> None:
        """Remove a run written ahead of its instant (run, first step, intent: see
        :meth:`runner.engine.core.Engine.prepare`) whose request this process knows it never sent: halted or
        shut down before the instant, or released too late. Refuses (JournalError, nothing removed)
        unless the intent is untouched: PENDING_NEW, never acknowledged, no broker call journaled."""
        with self._fast.transaction() as t:
            key = {"b_cid": client_order_id, "b_run": run_id, "b_status": OrderStatus.PENDING_NEW.value}
            gone = t.execute(_DEL_ARMED_INTENT, key).rowcount
            if gone != 1:
                raise JournalError(f"{client_order_id} of run {run_id} is not an untouched armed intent")
            if t.rows(_SEL_RUN_INTENTS, {"b_run": run_id}):
                raise JournalError(f"run {run_id} has other intents; not discarding it")
            t.execute(_DEL_RUN_STEPS, {"b_run": run_id})
            t.execute(_DEL_RUN, {"b_run": run_id})

    # --- intents ----------------------------------------------------------------------------------

    def add_intent(self, intent: Intent) -> None:
        """Commit the intent. Raises :class:`DuplicateIntent` if its id or slot is already journaled."""
        self.add_intents([intent])

    def add_intents(self, intents: Sequence[Intent]) -> None:
        """Commit several intents atomically (the legs of a native spread: all or none)."""
        rows = [_intent_values(i) for i in intents]
        try:
            with self._fast.transaction() as t:
                t.executemany(_INS_INTENT, rows)
        except self._fast.integrity_error:
            raise DuplicateIntent(", ".join(i.client_order_id for i in intents)) from None

    def get_intent(self, client_order_id: str) -> Intent | None:
        found = self._fast.read(_SEL_INTENT, {"b_cid": client_order_id})
        return _intent_from_row(found[0]) if found else None

    def has_intent(self, client_order_id: str) -> bool:
        """Whether this client id is journaled (ours); cheaper than :meth:`get_intent`."""
        return bool(self._fast.read(_SEL_EXISTS, {"b_cid": client_order_id}))

    def intents(
        self,
        *,
        run_id: str | None = None,
        step_id: str | None = None,
        slot: str | None = None,
        account: str | None = None,
        resolution: Iterable[Resolution] | None = None,
        statuses: Iterable[OrderStatus] | None = None,
    ) -> list[Intent]:
        given = {"run_id": run_id, "step_id": step_id, "slot": slot, "account": account}
        filters = tuple(name for name in _INTENT_FILTERS if given[name] is not None)
        params: dict[str, Any] = {f"b_{name}": given[name] for name in filters}
        res = [r.value for r in resolution] if resolution is not None else None
        sts = [s.value for s in statuses] if statuses is not None else None
        for prefix, values in (("b_res", res), ("b_st", sts)):
            for i, v in enumerate(values or ()):
                params[f"{prefix}{i}"] = v
        stmt = _intents_stmt(filters, -1 if res is None else len(res), -1 if sts is None else len(sts))
        return [_intent_from_row(r) for r in self._fast.read(stmt, params)]

    def client_ids_of_playbook(self, playbook: str) -> set[str]:
        q = (
            sa.select(order_intents.c.client_order_id)
            .join(runs, runs.c.run_id == order_intents.c.run_id)
            .where(runs.c.playbook == playbook)
        )
        with self._read() as c:
            return {r[0] for r in c.execute(q)}

    def client_ids_of_account(self, account: str, *, since: dt.datetime) -> dict[str, Product]:
        """Client id -> product of the account's intents created since ``since`` (for
        :class:`runner.brokers.base.ClientIdRegistry`)."""
        c = order_intents.c
        q = sa.select(c.client_order_id, c.product).where(c.account == account, c.created_at >= since)
        with self._read() as conn:
            return {cid: Product(product) for cid, product in conn.execute(q)}

    def scope_intents(
        self, account: str, since: dt.datetime, *, playbook: str | None = None, tag: str | None = None
    ) -> list[Intent]:
        """The account's intents journaled since ``since`` that belong to runs of ``playbook`` and / or
        carry ``tag``: what a scoped square-off owns (runner.engine.steps.square_off.scope_net)."""
        c = order_intents.c
        q = sa.select(order_intents).where(c.account == account, c.created_at >= since)
        if playbook is not None:
            q = q.join(runs, runs.c.run_id == c.run_id).where(runs.c.playbook == playbook)
        if tag is not None:
            q = q.where(c.tag == tag)
        with self._read() as conn:
            return [_intent_from_row(r) for r in conn.execute(q.order_by(c.created_at)).mappings()]

    def count_intents(self, run_id: str, *, exclude: Sequence[Purpose] = ()) -> int:
        skip = {p.value for p in exclude}
        counts = self._fast.read(_COUNT_BY_PURPOSE, {"b_run": run_id})
        return sum(int(r["count"]) for r in counts if r["purpose"] not in skip)

    def set_resolution(self, client_order_id: str, resolution: Resolution, now: dt.datetime) -> None:
        self.set_resolutions((client_order_id,), resolution, now)

    def set_resolutions(
        self, client_order_ids: Iterable[str], resolution: Resolution, now: dt.datetime
    ) -> None:
        """Several intents (the legs of a native spread) in one commit."""
        rows = [{"b_cid": c, "resolution": resolution.value, "updated_at": now} for c in client_order_ids]
        with self._fast.transaction() as t:
            t.executemany(_UPD_RESOLUTION, rows)

    def mark_sending(self, client_order_ids: Iterable[str], now: dt.datetime) -> None:
        """PENDING again with ``sent_at`` = ``now``, in one commit, before a re-send of these intents (one,
        or the legs of a native spread): a death between the send and its reply leaves them PENDING and
        their absence is measured from this send."""
        rows = [
            {"b_cid": c, "resolution": Resolution.PENDING.value, "sent_at": now, "updated_at": now}
            for c in client_order_ids
        ]
        with self._fast.transaction() as t:
            t.executemany(_UPD_SENDING, rows)

    def reconcilable_intents(
        self, account: str, run_id: str, *, since: dt.datetime | None = None
    ) -> list[Intent]:
        """Non-terminal intents (unsettled PENDING_NEW / UNKNOWN whatever their resolution, and open ones,
        whose fills or cancels may not be journaled) of ``account`` that belong to ``run_id`` or to a
        run no longer RUNNING. A RUNNING run other than ``run_id`` is live
        elsewhere (another playbook of the daemon on this account) or crashed, and then its own restart
        reconciles it: looking its orders up from here could call one absent while its request is in
        flight."""
        c = order_intents.c
        q = (
            sa.select(order_intents)
            .join(runs, runs.c.run_id == c.run_id)
            .where(
                c.account == account,
                c.status.in_(sorted(s.value for s in OrderStatus if not s.is_terminal)),
                sa.or_(c.run_id == run_id, runs.c.status != RunStatus.RUNNING.value),
                sa.or_(c.run_id == run_id, sa.true() if since is None else c.created_at >= since),
            )
            .order_by(c.created_at, c.client_order_id)
        )
        with self._read() as conn:
            return [_intent_from_row(r) for r in conn.execute(q).mappings()]

    def _write(self, stmt: _Stmt, params: Mapping[str, Any]) -> None:
        """One statement in its own committed transaction."""
        with self._fast.transaction() as t:
            t.execute(stmt, params)

    def record_order(
        self,
        order: Order,
        now: dt.datetime,
        *,
        call: Mapping[str, Any] | None = None,
        resolution: Resolution = Resolution.CONFIRMED,
    ) -> OrderStatus:
        """Apply the broker's view of one of our orders: status (checked), broker id, fills.

        ``call`` (a broker_calls row) is written in the same transaction: one commit per broker answer.
        ``resolution``: CONFIRMED (the broker has it), or ABSENT for a refusal made on our side that the
        broker never saw (e.g. the kill switch).
        Returns the stored status. Raises :class:`IllegalTransition` after recording an illegal move
        (status left unchanged).
        """
        with self._fast.transaction() as t:
            if call is not None:
                t.execute(_INS_CALL, call)
            illegal = self._apply_order(t, order, now, resolution)
        if illegal is not None:
            raise illegal
        return order.status

    def record_orders(self, orders: Sequence[Order], now: dt.datetime) -> int:
        """Apply many broker reports (e.g. one day-book read) in ONE commit. Reports of orders that are
        not ours are ignored; an illegal transition is recorded (row + error event), not raised.
        Returns how many illegal transitions were recorded."""
        bad = 0
        with self._fast.transaction() as t:
            for order in orders:
                bad += self._apply_order(t, order, now, Resolution.CONFIRMED) is not None
        return bad

    @staticmethod
    def _apply_order(
        t: Any, order: Order, now: dt.datetime, resolution: Resolution
    ) -> IllegalTransition | None:
        """Apply one broker report inside transaction ``t``; returns the illegal transition, if any."""
        cid = order.client_order_id
        illegal: IllegalTransition | None = None
        row = t.execute(_SEL_STATE, {"b_cid": cid}).fetchone()
        if row is None:  # not ours: only the call row
            return None
        stored, stored_boid, old_filled, old_avg_text, run_id, step_id = row
        old = OrderStatus(stored)
        new = order.status
        status = old
        if old is not new:
            try:
                check_transition(old, new)
                status = new
            except IllegalTransition as exc:
                illegal = exc
            t.execute(
                _INS_TRANSITION,
                {
                    "client_order_id": cid,
                    "old_status": old.value,
                    "new_status": new.value,
                    "legal": illegal is None,
                    "raw_status": order.raw_status,
                    "at": now,
                },
            )
            if illegal is not None:
                t.execute(
                    _INS_EVENT,
                    {
                        "run_id": run_id,
                        "step_id": step_id,
                        "client_order_id": cid,
                        "level": "error",
                        "kind": "illegal_transition",
                        "message": str(illegal),
                        "at": now,
                    },
                )
        filled = old_filled
        avg = None if old_avg_text is None else Decimal(old_avg_text)
        if illegal is None and order.filled_quantity > old_filled:
            t.execute(
                _INS_FILL,
                {
                    "client_order_id": cid,
                    "run_id": run_id,
                    "quantity": order.filled_quantity - old_filled,
                    "price": _fill_price(old_filled, avg, order.filled_quantity, order.average_price),
                    "cumulative_quantity": order.filled_quantity,
                    "at": order.updated_at or now,
                },
            )
            filled, avg = order.filled_quantity, order.average_price
        t.execute(
            _UPD_STATE,
            {
                "b_cid": cid,
                "resolution": resolution.value,
                "status": status.value,
                "broker_order_id": stored_boid or order.broker_order_id or stored_boid,
                "filled_quantity": filled,
                "average_price": avg,
                "current_price": order.price,
                "current_type": order.order_type.value,
                "updated_at": now,
            },
        )
        return illegal

    def mark_unknown(self, client_order_id: str, now: dt.datetime) -> None:
        """The request may have reached the broker: status UNKNOWN until a lookup says otherwise."""
        with self._fast.transaction() as t:
            row = t.execute(_SEL_STATE, {"b_cid": client_order_id}).fetchone()
            old = None if row is None else OrderStatus(row[0])
            if old is None or old.is_terminal:
                return
            if old is not OrderStatus.UNKNOWN:
                t.execute(
                    _INS_TRANSITION,
                    {
                        "client_order_id": client_order_id,
                        "old_status": old.value,
                        "new_status": OrderStatus.UNKNOWN.value,
                        "legal": True,
                        "raw_status": None,
                        "at": now,
                    },
                )
            t.execute(
                _UPD_STATUS,
                {"b_cid": client_order_id, "status": OrderStatus.UNKNOWN.value, "updated_at": now},
            )

    # --- calls, events, reads for history/show ------------------------------------------------------

    def record_call(self, call: Mapping[str, Any]) -> None:
        self._write(_INS_CALL, call)

    def record_event(
        self,
        run_id: str | None,
        kind: str,
        message: str,
        now: dt.datetime,
        *,
        level: str = "info",
        step_id: str | None = None,
        client_order_id: str | None = None,
    ) -> None:
        self._write(
            _INS_EVENT,
            {
                "run_id": run_id,
                "step_id": step_id,
                "client_order_id": client_order_id,
                "level": level,
                "kind": kind,
                "message": message,
                "at": now,
            },
        )

    def rows(self, table: sa.Table, run_id: str) -> list[dict[str, Any]]:
        q = sa.select(table).where(table.c.run_id == run_id)
        if "id" in table.c:
            q = q.order_by(table.c.id)
        with self._read() as c:
            return [dict(r) for r in c.execute(q).mappings()]

    def transitions(self, client_order_id: str) -> list[dict[str, Any]]:
        q = (
            sa.select(status_transitions)
            .where(status_transitions.c.client_order_id == client_order_id)
            .order_by(status_transitions.c.id)
        )
        with self._read() as c:
            return [dict(r) for r in c.execute(q).mappings()]

    def calls(self, *, run_id: str | None = None, client_order_id: str | None = None) -> list[dict[str, Any]]:
        q = sa.select(broker_calls).order_by(broker_calls.c.id)
        if run_id is not None:
            q = q.where(broker_calls.c.run_id == run_id)
        if client_order_id is not None:
            q = q.where(broker_calls.c.client_order_id == client_order_id)
        with self._read() as c:
            return [dict(r) for r in c.execute(q).mappings()]


def _intent_values(intent: Intent) -> dict[str, Any]:
    r = intent.request
    return {  # every column: the compiled INSERT names them all
        "client_order_id": intent.client_order_id,
        "run_id": intent.run_id,
        "account": intent.account,
        "step_id": intent.step_id,
        "slot": intent.slot,
        "leg": intent.leg,
        "attempt": intent.attempt,
        "purpose": intent.purpose.value,
        "group_id": intent.group_id,
        "instrument": instrument_to_json(r.instrument),
        "instrument_key": r.instrument.key,
        "side": r.side.value,
        "quantity": r.quantity,
        "order_type": r.order_type.value,
        "product": r.product.value,
        "validity": r.validity.value,
        "price": r.price,
        "trigger_price": r.trigger_price,
        "disclosed_quantity": r.disclosed_quantity,
        "tag": r.tag,
        "resolution": intent.resolution.value,
        "status": intent.status.value,
        "broker_order_id": intent.broker_order_id,
        "filled_quantity": intent.filled_quantity,
        "average_price": intent.average_price,
        "created_at": intent.created_at,
        "updated_at": intent.created_at,
        "sent_at": intent.sent_at or intent.created_at,  # this insert is the commit before the first send
        "current_price": r.price,
        "current_type": r.order_type.value,
    }


def _fill_price(
    old_qty: int, old_avg: Decimal | None, new_qty: int, new_avg: Decimal | None
) -> Decimal | None:
    """Price of the increment between two cumulative (qty, average) reports."""
    if new_avg is None:
        return None
    if old_qty == 0 or old_avg is None:
        return new_avg
    return (new_avg * new_qty - old_avg * old_qty) / (new_qty - old_qty)
