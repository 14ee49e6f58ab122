"""Who holds what, and whether the holder is still alive.

A run, an account lease (and whatever else a process holds in the journal) names its holder by a
:class:`ProcessIdentity` token. Whether that holder is alive is judged two ways:

* **same host** (same hostname *and* boot id): the pid exists *and* its start time matches the token's,
  since pids are reused. Exact and immediate: no waiting for a heartbeat to go stale.
* **another host**: the holder's row in ``processes`` is beaten every :data:`BEAT_EVERY` seconds with
  the *database's* clock, and judged by the database's clock too, so neither host's clock is trusted.
  No beat for :data:`STALE_AFTER` seconds (or no row at all) means dead.

Beats run in a worker thread (:class:`Heartbeat`): a journal locked by another process (SQLite's busy
timeout is 30 s) must not freeze the event loop, nor let our beats lapse while the loop is busy.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from runner.journal.db import UTCDateTime, create_all

BEAT_EVERY = 3.0  # seconds between heartbeats
STALE_AFTER = 15.0  # seconds without a beat (database clock) after which a holder on another host is dead

metadata = sa.MetaData()

processes = sa.Table(
    "processes",
    metadata,
    sa.Column("token", sa.String(200), primary_key=True),
    sa.Column("host", sa.String(120), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("command", sa.String(32), nullable=False),  # run, apply, serve, ...
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("heartbeat_at", UTCDateTime(), nullable=False),  # database clock
    sa.Column("stopped_at", UTCDateTime()),
)


@functools.cache
@functools.cache  # a process outlives no reboot
def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8]
    except OSError:
        return "-"


def _start_ticks(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), None if there is no such process.
    Elsewhere: "" when the pid exists (start time unknown, the pid alone decides)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return ""
    # Field 22; the command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = stat.rpartition(")")[2].split()
    if fields[0] in ("Z", "X"):  # killed, not yet reaped by its parent: dead all the same
        return None
    return fields[19]


def host_id() -> str:
    return f"{socket.gethostname()}/{_boot_id()}"


@dataclass(frozen=True, slots=True)
class ProcessIdentity:
    host: str  # hostname/boot id: a rebooted machine is another host (its pids start over)
    pid: int
    started: str  # start time in ticks since boot; "" where the platform cannot tell

    @property
    def token(self) -> str:
        return f"{self.host}:{self.pid}:{self.started}"

    @classmethod
    def from_token(cls, token: str) -> ProcessIdentity:
        host, pid, started = token.rsplit(":", 2)
        return cls(host, int(pid), started)

    @classmethod
    def current(cls) -> ProcessIdentity:
        return _current(os.getpid())  # keyed by pid: a forked child is another process

    def __str__(self) -> str:
        return f"pid {self.pid} on {self.host.partition('/')[0]}"


@functools.lru_cache(maxsize=4)
def _current(pid: int) -> ProcessIdentity:
    """One read of /proc per process: taking a lease asks for it per account step (a survivor taking over
    350 fires read /proc/self/stat 350 times on its event loop)."""
    return ProcessIdentity(host_id(), pid, _start_ticks(pid) or "")


def local_alive(ident: ProcessIdentity) -> bool | None:
    """Alive on this host? None when ``ident`` is on another host (ask :class:`ProcessRegistry`)."""
    if ident.host != host_id():
        return None
    started = _start_ticks(ident.pid)
    if started is None:
        return False
    return not (started and ident.started and started != ident.started)


def db_clock(conn: sa.Connection) -> dt.datetime:
    """The database's clock on ``conn``, aware UTC (both dialects store naive UTC)."""
    if conn.dialect.name == "sqlite":
        text = conn.exec_driver_sql("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')").scalar_one()
        return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)
    value = conn.exec_driver_sql("SELECT clock_timestamp() AT TIME ZONE 'UTC'").scalar_one()
    assert isinstance(value, dt.datetime)
    return value.replace(tzinfo=dt.UTC)


def describe(token: str) -> str:
    """A holder as a person reads it: "pid 4242 on desk-3"."""
    try:
        return str(ProcessIdentity.from_token(token))
    except ValueError:
        return token


class ProcessRegistry:
    """The ``processes`` table: register, beat, stop, and judge other holders."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        create_all(engine, metadata)

    def db_now(self, conn: sa.Connection | None = None) -> dt.datetime:
        """The database's clock, aware UTC (both dialects store naive UTC)."""
        if conn is None:
            with self.engine.connect() as c:
                return db_clock(c)
        return db_clock(conn)

    def register(self, ident: ProcessIdentity, command: str) -> None:
        with self.engine.begin() as conn:
            now = self.db_now(conn)
            values = {"heartbeat_at": now, "stopped_at": None, "command": command}
            done = conn.execute(processes.update().where(processes.c.token == ident.token).values(**values))
            if done.rowcount == 0:
                conn.execute(
                    processes.insert().values(
                        token=ident.token, host=ident.host, pid=ident.pid, started_at=now, **values
                    )
                )

    def beat(self, ident: ProcessIdentity) -> None:
        with self.engine.begin() as conn:
            now = self.db_now(conn)
            conn.execute(processes.update().where(processes.c.token == ident.token).values(heartbeat_at=now))

    def ensure(self, ident: ProcessIdentity, command: str) -> None:
        """Beat ``ident``'s row, registering it (as ``command``) if it has none or was stopped."""
        with self.engine.begin() as conn:
            now = self.db_now(conn)
            done = conn.execute(
                processes.update()
                .where(processes.c.token == ident.token, processes.c.stopped_at.is_(None))
                .values(heartbeat_at=now)
            )
        if done.rowcount == 0:
            self.register(ident, command)

    def stop(self, ident: ProcessIdentity) -> None:
        with self.engine.begin() as conn:
            now = self.db_now(conn)
            conn.execute(processes.update().where(processes.c.token == ident.token).values(stopped_at=now))

    def alive(self, tokens: Iterable[str]) -> dict[str, bool]:
        """For each holder token: is that process alive? Same host: by pid and start time; another host:
        by its heartbeat against the database's clock. A stopped or unknown process is dead."""
        out: dict[str, bool] = {}
        remote: list[str] = []
        for token in set(tokens):
            try:
                ident = ProcessIdentity.from_token(token)
            except ValueError:
                out[token] = False  # not a holder token this release writes
                continue
            local = local_alive(ident)
            if local is None:
                remote.append(token)
            else:
                out[token] = local
        if remote:
            with self.engine.connect() as conn:
                now = self.db_now(conn)
                rows = conn.execute(
                    sa.select(processes.c.token, processes.c.heartbeat_at, processes.c.stopped_at).where(
                        processes.c.token.in_(remote)
                    )
                ).all()
            beats = {r.token: (r.heartbeat_at, r.stopped_at) for r in rows}
            for token in remote:
                beat, stopped = beats.get(token, (None, None))
                out[token] = (
                    beat is not None
                    and stopped is None
                    and (now - beat).total_seconds() < STALE_AFTER
                )
        return out

    def is_alive(self, token: str) -> bool:
        return self.alive([token])[token]


class Heartbeat:
    """``async with Heartbeat(registry, ident, "run"):`` registered on entry, beaten every
    :data:`BEAT_EVERY` seconds in a worker thread, marked stopped on exit. A failed beat is retried at
    the next tick (the journal may be locked for a while); it never fails the holder."""

    def __init__(self, registry: ProcessRegistry, ident: ProcessIdentity, command: str) -> None:
        self.registry = registry
        self.ident = ident
        self.command = command
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Heartbeat:
        await asyncio.to_thread(self.registry.register, self.ident, self.command)
        self._task = asyncio.create_task(self._run(), name="runner-heartbeat")
        return self

    async def __aexit__(self, *_: Any) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(sa.exc.SQLAlchemyError):
            await asyncio.to_thread(self.registry.stop, self.ident)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(BEAT_EVERY)
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                await asyncio.to_thread(self.registry.beat, self.ident)
