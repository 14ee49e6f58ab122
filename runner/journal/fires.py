"""Exactly-once fire claims in the journal database.

A fire is one scheduled execution of one playbook. Before it runs, the daemon INSERTs a row whose
``fire_id`` (:func:`runner.ids.fire_id`) and ``(playbook, scheduled_for)`` are unique: a second daemon on
the same database loses the insert and does not run it. Claims made in the same event-loop tick are
written in one transaction (``INSERT .. ON CONFLICT DO NOTHING``), so 1,000 playbooks due in the same
second cost one commit, not 1,000. SQLAlchemy Core only, portable to PostgreSQL.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from runner.ids import fire_id as make_fire_id
from runner.journal.db import ScrubbedText, UTCDateTime, create_all
from runner.liveness import db_clock


class FireState(enum.StrEnum):
    CLAIMED = "claimed"  # row inserted, waiting for the instant
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"  # closed day, calendar not covering the day (fail closed), halted
    MISSED = "missed"  # due while the daemon was down or late beyond the playbook's ``late`` policy
    UNKNOWN = "unknown"  # interrupted (shutdown, crash) after it started: resolve via the run journal


def enum_type(cls: type[enum.StrEnum]) -> sa.Enum:
    """A portable column type storing a StrEnum by value."""
    return sa.Enum(cls, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e])


metadata = sa.MetaData()

fires = sa.Table(
    "fires",
    metadata,
    sa.Column("fire_id", sa.String(40), primary_key=True),
    sa.Column("playbook", sa.String(64), nullable=False),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("scheduled_for", UTCDateTime(), nullable=False),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("claimed_by", sa.String(64), nullable=False),
    sa.Column("claimed_at", UTCDateTime(), nullable=False),
    sa.Column("state", enum_type(FireState), nullable=False),
    sa.Column("outcome", ScrubbedText(), nullable=True),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    # The claim's lease (database clock; NULL: no lease, a single SQLite daemon): see runner/daemon/leasing.py
    sa.Column("lease_expires", UTCDateTime(), nullable=True),
    sa.Column("taken_from", sa.String(64), nullable=True),  # the holder a survivor took it over from
    # A re-versioned playbook must not fire the same slot again.
    sa.UniqueConstraint("playbook", "scheduled_for", name="uq_fires_slot"),
    sa.Index("ix_fires_playbook_time", "playbook", "scheduled_for"),
    sa.Index("ix_fires_state_lease", "state", "lease_expires"),
    sa.Index("ix_fires_scheduled_for", "scheduled_for"),  # the status page: the last 24 hours' fires
)

# One row per daemon process: heartbeat every second, status payload for ``runner status``.
daemons = sa.Table(
    "daemons",
    metadata,
    sa.Column("daemon_id", sa.String(64), primary_key=True),
    sa.Column("host", sa.String(128), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("playbook_dir", sa.Text, nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("heartbeat_at", UTCDateTime(), nullable=False),
    sa.Column("stopped_at", UTCDateTime(), nullable=True),
    sa.Column("status", ScrubbedText(), nullable=False, default="{}"),
    sa.Column("beat_db_at", UTCDateTime(), nullable=True),  # the heartbeat on the database's clock
)


def open_engine(url: str | None = None) -> Engine:
    """The journal database engine (:mod:`runner.journal.db`: WAL, busy_timeout)."""
    from runner.journal import db

    return db.make_engine(url or db.default_db_url())


def read(engine: Engine) -> sa.Connection:
    """A connection for reads: on SQLite a deferred BEGIN, so polling never takes the write lock."""
    return engine.connect().execution_options(sqlite_begin="DEFERRED")


@dataclass(frozen=True, slots=True)
class Claim:
    playbook: str
    version: str
    scheduled_for: dt.datetime
    run_id: str
    state: FireState = FireState.CLAIMED
    outcome: str | None = None

    @property
    def fire_id(self) -> str:
        return make_fire_id(self.playbook, self.version, self.scheduled_for)


@dataclass(frozen=True, slots=True)
class FireRow:
    fire_id: str
    playbook: str
    version: str
    scheduled_for: dt.datetime
    run_id: str
    claimed_by: str
    claimed_at: dt.datetime
    state: FireState
    outcome: str | None
    updated_at: dt.datetime
    lease_expires: dt.datetime | None = None
    taken_from: str | None = None


class FireStore:
    """Sync store (call it from a worker thread); :class:`ClaimBatcher` is the async front."""

    def __init__(self, engine: Engine, owner: str) -> None:
        self.engine = engine
        self.owner = owner
        # Seconds a claim's lease lasts (database clock), or None: claims without leases (SQLite).
        self.lease_seconds: float | None = None
        create_all(engine, metadata)

    def _insert(self) -> Any:
        name = self.engine.dialect.name
        if name == "sqlite":
            from sqlalchemy.dialects.sqlite import insert as sqlite_insert

            return sqlite_insert(fires).on_conflict_do_nothing()
        if name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            return pg_insert(fires).on_conflict_do_nothing()
        return None

    def claim_many(self, claims: Sequence[Claim], now: dt.datetime) -> set[str]:
        """Insert every claim that nobody holds yet; return the fire ids this owner now holds."""
        if not claims:
            return set()
        rows = [
            {
                "fire_id": c.fire_id,
                "playbook": c.playbook,
                "version": c.version,
                "scheduled_for": c.scheduled_for,
                "run_id": c.run_id,
                "claimed_by": self.owner,
                "claimed_at": now,
                "state": c.state,
                "outcome": c.outcome,
                "updated_at": now,
            }
            # one lock order for every daemon: batched inserts in different orders could deadlock on PG
            for c in sorted(claims, key=lambda c: c.fire_id)
        ]
        stmt = self._insert()
        with self.engine.begin() as conn:
            if self.lease_seconds is not None:
                expires = db_clock(conn) + dt.timedelta(seconds=self.lease_seconds)
                for row in rows:
                    row["lease_expires"] = expires if row["state"] is FireState.CLAIMED else None
            if stmt is not None:
                conn.execute(stmt, rows)
            else:  # other dialects: one savepoint per row, a unique violation means "taken"
                for row in rows:
                    try:
                        with conn.begin_nested():
                            conn.execute(fires.insert(), row)
                    except sa.exc.IntegrityError:
                        pass
            ids = [c.fire_id for c in claims]
            won: set[str] = set()
            for chunk in _chunks(ids, 500):
                q = sa.select(fires.c.fire_id).where(
                    fires.c.fire_id.in_(chunk), fires.c.claimed_by == self.owner, fires.c.claimed_at == now
                )
                won.update(conn.scalars(q))
        return won

    def set_state(self, fire_id: str, state: FireState, outcome: str | None, now: dt.datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                fires.update()
                .where(fires.c.fire_id == fire_id)
                .values(state=state, outcome=outcome, updated_at=now)
            )

    def mark_interrupted(
        self,
        fire_id: str,
        claimed_by: str,
        outcome: str,
        now: dt.datetime,
        state: FireState = FireState.UNKNOWN,
    ) -> bool:
        """``state`` (UNKNOWN, or MISSED when provably nothing was sent), only if still unfinished and
        still ``claimed_by``'s; True if this call changed it."""
        with self.engine.begin() as conn:
            done = conn.execute(
                fires.update()
                .where(
                    fires.c.fire_id == fire_id,
                    fires.c.claimed_by == claimed_by,
                    fires.c.state.in_([FireState.CLAIMED, FireState.RUNNING]),
                )
                .values(state=state, outcome=outcome, updated_at=now)
            )
        return bool(done.rowcount)

    def release(self, fire_id: str, claimed_by: str | None = None) -> bool:
        """Give back a claim that never started: this daemon's (shutdown before its instant), or a dead
        ``claimed_by``'s. True if this call removed it."""
        with self.engine.begin() as conn:
            done = conn.execute(
                fires.delete().where(
                    fires.c.fire_id == fire_id,
                    fires.c.claimed_by == (claimed_by or self.owner),
                    fires.c.state == FireState.CLAIMED,
                )
            )
        return bool(done.rowcount)

    def get(self, fire_id: str) -> FireRow | None:
        with read(self.engine) as conn:
            row = conn.execute(sa.select(fires).where(fires.c.fire_id == fire_id)).first()
        return None if row is None else FireRow(**row._asdict())

    def slot(self, playbook: str, scheduled_for: dt.datetime) -> FireRow | None:
        with read(self.engine) as conn:
            row = conn.execute(
                sa.select(fires).where(fires.c.playbook == playbook, fires.c.scheduled_for == scheduled_for)
            ).first()
        return None if row is None else FireRow(**row._asdict())

    def history(self, playbook: str | None = None, limit: int = 100) -> list[FireRow]:
        q = sa.select(fires).order_by(fires.c.scheduled_for.desc()).limit(limit)
        if playbook is not None:
            q = q.where(fires.c.playbook == playbook)
        with read(self.engine) as conn:
            return [FireRow(**r._asdict()) for r in conn.execute(q)]

    def not_run(self, playbook: str | None = None, limit: int = 100) -> list[FireRow]:
        """Fires that never started a run (skipped: closed day, halted; missed), newest first."""
        q = (
            sa.select(fires)
            .where(fires.c.state.in_([FireState.SKIPPED, FireState.MISSED]))
            .order_by(fires.c.scheduled_for.desc())
            .limit(limit)
        )
        if playbook is not None:
            q = q.where(fires.c.playbook == playbook)
        with read(self.engine) as conn:
            return [FireRow(**r._asdict()) for r in conn.execute(q)]

    def last_fire_times(self) -> dict[str, dt.datetime]:
        """Latest scheduled instant journaled per playbook (any version, any state)."""
        q = sa.select(fires.c.playbook, sa.func.max(fires.c.scheduled_for)).group_by(fires.c.playbook)
        with read(self.engine) as conn:
            # func.max loses the TypeDecorator on some dialects: coerce back to aware UTC.
            return {name: _aware(when) for name, when in conn.execute(q)}

    def last_outcomes(self) -> dict[str, FireRow]:
        latest = (
            sa.select(fires.c.playbook, sa.func.max(fires.c.scheduled_for).label("t"))
            .group_by(fires.c.playbook)
            .subquery()
        )
        q = sa.select(fires).join(
            latest, sa.and_(fires.c.playbook == latest.c.playbook, fires.c.scheduled_for == latest.c.t)
        )
        with read(self.engine) as conn:
            return {r.playbook: FireRow(**r._asdict()) for r in conn.execute(q)}

    def unfinished(self) -> list[FireRow]:
        q = sa.select(fires).where(fires.c.state.in_([FireState.CLAIMED, FireState.RUNNING]))
        with read(self.engine) as conn:
            return [FireRow(**r._asdict()) for r in conn.execute(q)]

    # --- daemon heartbeat / status -----------------------------------------------------------------

    def register_daemon(self, host: str, pid: int, playbook_dir: str, now: dt.datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                daemons.insert().values(
                    daemon_id=self.owner,
                    host=host,
                    pid=pid,
                    playbook_dir=playbook_dir,
                    started_at=now,
                    heartbeat_at=now,
                    status="{}",
                    beat_db_at=db_clock(conn),
                )
            )

    def heartbeat(
        self, now: dt.datetime, status: dict[str, Any] | None = None, stopped: bool = False
    ) -> None:
        values: dict[str, Any] = {"heartbeat_at": now}
        if status is not None:
            values["status"] = json.dumps(status, default=str)
        if stopped:
            values["stopped_at"] = now
        with self.engine.begin() as conn:
            values["beat_db_at"] = db_clock(conn)
            conn.execute(daemons.update().where(daemons.c.daemon_id == self.owner).values(**values))

    def last_heartbeat(self, playbook_dir: str | None = None) -> dt.datetime | None:
        q = sa.select(sa.func.max(daemons.c.heartbeat_at))
        if playbook_dir is not None:
            q = q.where(daemons.c.playbook_dir == playbook_dir)
        with read(self.engine) as conn:
            value = conn.scalar(q)
        return None if value is None else _aware(value)


def read_daemon_beats(engine: Engine) -> list[dict[str, Any]]:
    """Each daemon's id, heartbeat and stop, without its status payload (parsing every daemon's list of
    3,000 playbooks on every peer sweep was a daemon's fixed cost, issue 16)."""
    create_all(engine, metadata)
    q = sa.select(daemons.c.daemon_id, daemons.c.heartbeat_at, daemons.c.stopped_at)
    with read(engine) as conn:
        return [r._asdict() for r in conn.execute(q)]


def read_daemons(engine: Engine) -> list[dict[str, Any]]:
    create_all(engine, metadata)
    with read(engine) as conn:
        rows = conn.execute(sa.select(daemons).order_by(daemons.c.heartbeat_at.desc())).all()
    out = []
    for r in rows:
        d = r._asdict()
        d["status"] = json.loads(d["status"] or "{}")
        out.append(d)
    return out


def _aware(value: Any) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    assert isinstance(value, dt.datetime)
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _chunks(items: Sequence[str], size: int) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class ClaimBatcher:
    """Async claims and state changes, coalesced: everything requested in the same loop tick shares one
    transaction, run in a worker thread so the event loop never blocks on the database. Flushes run one
    at a time, so a fire's RUNNING is always written before its final state. (With 1,000 fires due at
    once this keeps the daemon's own writes to a handful of transactions instead of thousands, each a
    chance to collide with the engine's journal writes on SQLite's single write lock.)"""

    STATE_DELAY = 0.1  # seconds

    def __init__(self, store: FireStore) -> None:
        self.store = store
        self._claims: list[tuple[Claim, asyncio.Future[bool]]] = []
        self._states: list[tuple[dict[str, Any], asyncio.Future[bool]]] = []
        self._handle: asyncio.Handle | None = None
        self._handle_urgent = False
        self._claim_now: dt.datetime | None = None  # the clock time of the latest claim queued
        self._lock = asyncio.Lock()

    def _enqueue(self, urgent: bool) -> asyncio.AbstractEventLoop:
        """Claims flush on the next tick; state changes wait ``STATE_DELAY`` so their write does not
        compete (GIL, write lock) with the fires being released at that very instant."""
        loop = asyncio.get_running_loop()
        if self._handle is not None and (not urgent or self._handle_urgent):
            return loop
        if self._handle is not None:
            self._handle.cancel()
        self._handle_urgent = urgent
        run = lambda: loop.create_task(self._flush())  # noqa: E731
        self._handle = loop.call_soon(run) if urgent else loop.call_later(self.STATE_DELAY, run)
        return loop

    async def claim(self, claim: Claim, now: dt.datetime) -> bool:
        fut: asyncio.Future[bool] = self._enqueue(True).create_future()
        self._claims.append((claim, fut))
        self._claim_now = now
        return await fut

    def set_state_soon(
        self, fire_id: str, state: FireState, outcome: str | None, now: dt.datetime
    ) -> asyncio.Future[bool]:
        """Queue a state change without awaiting it (no task created: cheap on the firing path)."""
        fut: asyncio.Future[bool] = self._enqueue(False).create_future()
        self._states.append(({"fid": fire_id, "state": state, "outcome": outcome, "now": now}, fut))
        return fut

    async def set_state(self, fire_id: str, state: FireState, outcome: str | None, now: dt.datetime) -> None:
        await self.set_state_soon(fire_id, state, outcome, now)

    async def drain(self) -> None:
        """Write everything queued now (shutdown)."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        await self._flush()
        async with self._lock:  # a flush already in a worker thread finishes first
            pass

    async def _flush(self) -> None:
        async with self._lock:
            claims, self._claims = self._claims, []
            states, self._states = self._states, []
            self._handle = None
            if not claims and not states:
                return
            now = self._claim_now or dt.datetime.now(dt.UTC)
            try:
                won, failed = await asyncio.to_thread(
                    self._write, [c for c, _ in claims], now, [s for s, _ in states]
                )
            except Exception as exc:
                for _, fut in (*claims, *states):
                    if not fut.done():
                        fut.set_exception(exc)
                return
            for c, fut in claims:
                if not fut.done():
                    fut.set_result(c.fire_id in won)
            for _, fut in states:
                if fut.done():
                    continue
                if failed is None:
                    fut.set_result(True)
                else:
                    fut.set_exception(failed)

    def _write(
        self, claims: list[Claim], now: dt.datetime, states: list[dict[str, Any]]
    ) -> tuple[set[str], Exception | None]:
        """The claims' result and the state writes' failure apart: the claims' transaction has committed
        by then, so a failed state write (the journal going away) must not report them failed too (a
        claim reported failed is claimed again later, loses to itself and stays CLAIMED for good)."""
        won = self.store.claim_many(claims, now) if claims else set()
        if not states:
            return won, None
        try:
            self._write_states(states)
        except Exception as exc:
            return won, exc
        return won, None

    def _write_states(self, states: list[dict[str, Any]]) -> None:
        if states:
            stmt = (
                fires.update()
                .where(fires.c.fire_id == sa.bindparam("fid"))
                .values(
                    state=sa.bindparam("state"),
                    outcome=sa.bindparam("outcome"),
                    updated_at=sa.bindparam("now"),
                )
            )
            # one lock order (fire id) for every multi-row write to fires, as claim_many and the lease
            # renewals take theirs: two orders over one set of rows deadlock on PostgreSQL. The sort is
            # stable, so a fire's RUNNING still precedes its final state in one batch.
            ordered = sorted(states, key=lambda s: s["fid"])
            with self.store.engine.begin() as conn:
                conn.execute(stmt, ordered)
