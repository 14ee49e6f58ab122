"""The local database shared by the journal and the paper broker (SQLAlchemy 2 Core).

SQLite by default: ``$RUNNER_DB`` or ``sqlite:///<cwd>/.runner/runner.db``. SQLite connections get
WAL, a busy timeout and foreign keys; every transaction starts with ``BEGIN IMMEDIATE`` so two processes
writing the same book serialize instead of failing half-way with "database is locked" on upgrade. A
connection may opt into a deferred (read-only friendly) begin with
``conn.execution_options(sqlite_begin="DEFERRED")``.

PostgreSQL (``postgresql://`` means psycopg 3, the ``pg`` extra): READ COMMITTED, pre-pinged pool. The
hot paths (journal, group commit, paper book) run on raw DBAPI connections in the driver's implicit
transaction and commit explicitly; uniqueness (claims, intents, orders) is enforced by constraints and
the paper book serializes on a ``SELECT .. FOR UPDATE`` of its account row, both of which need READ
COMMITTED (REPEATABLE READ would turn every contended write into a serialization failure).
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine, MetaData, create_engine, event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.pool import StaticPool

from runner.scrub import scrub

ENV_VAR = "RUNNER_DB"
BUSY_TIMEOUT_MS = 30_000
PG_CONNECT_TIMEOUT_S = 10
# Without a driver named, SQLAlchemy picks psycopg2, which we do not ship.
_PG_DRIVER = "postgresql+psycopg"


def default_db_url() -> str:
    """``$RUNNER_DB`` if set, else a SQLite file under ``./.runner/`` (the directory is created)."""
    if url := os.environ.get(ENV_VAR):
        return url
    directory = Path.cwd() / ".runner"
    directory.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{directory / 'runner.db'}"


def is_memory_url(url: str) -> bool:
    u = make_url(url)
    return u.get_backend_name() == "sqlite" and u.database in (None, "", ":memory:")


def normalize_url(url: str) -> str:
    """``postgresql://`` / ``postgres://`` (no driver named) -> psycopg 3; anything else unchanged."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgresql", "postgres"):
        return f"{_PG_DRIVER}://{rest}"
    return url


def make_engine(url: str | None = None, **kwargs: Any) -> Engine:
    """A new Engine for ``url`` (default :func:`default_db_url`), set up for its dialect."""
    url = normalize_url(url or default_db_url())
    u = make_url(url)
    if u.get_backend_name() == "postgresql":
        return _postgresql_engine(url, **kwargs)
    if u.get_backend_name() != "sqlite":
        return create_engine(url, **kwargs)
    memory = is_memory_url(url)
    if memory:
        # One shared connection, so every user of this engine sees the same in-memory database.
        kwargs.setdefault("poolclass", StaticPool)
        kwargs.setdefault("connect_args", {"check_same_thread": False})
    elif u.database:
        Path(u.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Driver-level autocommit: we emit BEGIN ourselves (pysqlite's implicit BEGIN is DEFERRED).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys = ON")
        if not memory:
            _switch_to_wal(cur)
            cur.execute("PRAGMA synchronous = NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def _switch_to_wal(cur: Any) -> None:
    """Put the file in WAL mode (persistent: the first connection to a new file does it for everyone).

    The switch needs an exclusive lock and SQLite does not wait for it under ``busy_timeout`` the way it
    does for writes: processes opening one new file together got "database is locked". So read the mode
    first (already WAL: no lock needed) and retry the switch while the file is busy, up to the busy
    timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    pause = 0.001
    while True:
        try:
            if str(cur.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
                return
            if str(cur.execute("PRAGMA journal_mode = WAL").fetchone()[0]).lower() == "wal":
                return
        except sqlite3.OperationalError as exc:
            busy = exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
            if not busy or time.monotonic() >= deadline:
                raise
        else:  # the switch answered with the old mode: another connection holds a lock
            if time.monotonic() >= deadline:
                raise sqlite3.OperationalError("could not switch the database to WAL mode: it stayed busy")
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


def _postgresql_engine(url: str, **kwargs: Any) -> Engine:
    kwargs.setdefault("isolation_level", "READ COMMITTED")  # explicit: a server default may differ
    # A daemon holds connections for days; a restarted or failed-over server must not surface as an
    # error on the next checkout. (The hot paths keep one raw connection each and reconnect on error.)
    kwargs.setdefault("pool_pre_ping", True)
    connect_args = kwargs.setdefault("connect_args", {})
    connect_args.setdefault("connect_timeout", PG_CONNECT_TIMEOUT_S)
    connect_args.setdefault("application_name", "runner")
    # Times are stored as naive UTC (TIMESTAMP WITHOUT TIME ZONE); a UTC session keeps now()/casts honest.
    connect_args.setdefault("options", "-c timezone=UTC")
    return create_engine(url, **kwargs)


# Any constant: the transaction-scoped advisory lock that serializes schema creation across processes.
SCHEMA_LOCK_KEY = 0x72756E6E  # "runn"


def create_all(engine: Engine, metadata: MetaData) -> None:
    """Make ``metadata``'s tables usable: the journal schema checked (once per Engine: one read of the
    version table) and created or upgraded by :func:`runner.journal.migrations.ensure`, which owns every
    registered MetaData. An unregistered one (a module not yet listed there) gets ``create_all``.

    PostgreSQL's CREATE TABLE is not idempotent under concurrency: two processes both see a table
    missing and the slower one fails on ``pg_type_typname_nsp_index``. An advisory lock held for the
    transaction makes them take turns; the second finds the tables there. SQLite's BEGIN IMMEDIATE
    already serializes."""
    from runner.journal import migrations

    migrations.ensure(engine)
    if migrations.is_registered(metadata):
        return
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK_KEY})")
        metadata.create_all(conn)


_shared: dict[str, Engine] = {}


def shared_engine(url: str | None = None) -> Engine:
    """One Engine per file URL per process (in-memory URLs always get a fresh, private database)."""
    url = normalize_url(url or default_db_url())
    if is_memory_url(url):
        return make_engine(url)
    engine = _shared.get(url)
    if engine is None:
        engine = _shared[url] = make_engine(url)
    return engine


class UTCDateTime(sa.types.TypeDecorator[dt.datetime]):
    """Aware datetimes stored as naive UTC (SQLite has no zones), read back as aware UTC, on every
    dialect. A naive datetime is refused rather than guessed at."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column: times must be timezone-aware")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        return None if value is None else value.replace(tzinfo=dt.UTC)


class ScrubbedText(sa.types.TypeDecorator[str]):
    """``Text`` whose bound values are scrubbed of registered secret values (:mod:`runner.scrub`): the
    journal's one choke point for free text (messages, call rows, fire outcomes), the compiled hot paths
    included, as they run SQLAlchemy's bind processors. Same DDL as ``Text``: no migration."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        return value if value is None else scrub(value)


class ConnectionSlot:
    """One DBAPI connection of an Engine, opened on first use, and the lock that guards it (callers hold
    ``lock`` from BEGIN to COMMIT, never across an await). See :func:`connection_slot`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = weakref.ref(engine)  # the engine owns its slots, not the other way round
        self.lock = threading.RLock()
        self.raw: Any = None

    def connection(self) -> Any:
        raw = self.raw
        if raw is None:
            engine = self._engine()
            if engine is None:
                raise RuntimeError("the database engine was garbage-collected")
            raw = self.raw = engine.raw_connection()
        return raw

    def invalidate(self) -> None:
        """The connection is unusable (a failed rollback): the next use opens a fresh one."""
        raw, self.raw = self.raw, None
        if raw is not None:
            raw.invalidate()

    def release(self) -> None:
        raw, self.raw = self.raw, None
        if raw is not None:
            raw.close()


_SLOTS: weakref.WeakKeyDictionary[Engine, dict[str, ConnectionSlot]] = weakref.WeakKeyDictionary()
_SLOTS_LOCK = threading.Lock()
_INHERITED: list[Any] = []  # connections opened before a fork: kept open (never closed) in the child


def connection_slot(engine: Engine, user: str) -> ConnectionSlot:
    """The connection ``user`` (e.g. "journal", "paper") runs its hot-path transactions on.

    SQLite: one slot per Engine for every user. Each connection has its own page cache, which a write
    through another connection invalidates; the journal and the paper book alternate writes on the same
    file, so separate connections re-read pages on every switch. Other processes keep their own
    connections, serialized by ``BEGIN IMMEDIATE`` as before. Other dialects: one slot per user."""
    key = "" if engine.dialect.name == "sqlite" else user
    with _SLOTS_LOCK:
        slots = _SLOTS.get(engine)
        if slots is None:
            slots = _SLOTS[engine] = {}
            # Engine.dispose() (tests deleting the file, a forking parent) drops our connections too.
            # (The listener holds the slots, which hold the engine only weakly: no cycle.)
            event.listen(engine, "engine_disposed", lambda _e, held=slots: _release_all(held))
        slot = slots.get(key)
        if slot is None:
            slot = slots[key] = ConnectionSlot(engine)
        return slot


def _release_all(slots: dict[str, ConnectionSlot]) -> None:
    for slot in slots.values():
        slot.release()


def invalidate_server_connections() -> None:
    """After a database server outage: every hot path's connection to a server is presumed dead (the
    pool pre-pings its own; these are held outside it), so each opens a fresh one on its next use instead
    of failing once first. SQLite slots are left alone (an in-memory database lives in its connection)."""
    with _SLOTS_LOCK:
        held = [(engine.dialect.name, list(slots.values())) for engine, slots in _SLOTS.items()]
    for dialect, slots in held:
        if dialect == "sqlite":
            continue
        for slot in slots:
            with slot.lock:
                slot.invalidate()


def _after_fork_in_child() -> None:
    # A DBAPI connection must not be used across fork; closing it could disturb the parent's locks.
    for slots in list(_SLOTS.values()):
        for slot in slots.values():
            if slot.raw is not None:
                _INHERITED.append(slot.raw)
                slot.raw = None
            slot.lock = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# --- errors: raw DBAPI (the hot paths) and SQLAlchemy-wrapped ones read the same ------------------------

# SQLite primary result codes (sqlite3.SQLITE_* names exist from Python 3.11 on; the values are SQLite's).
_SQLITE_WORDS = {
    13: "disk full",  # SQLITE_FULL (a full filesystem, or max_page_count reached)
    8: "read-only",  # SQLITE_READONLY: the file or its directory is not writable
    14: "cannot open the journal file (no such directory, or no permission)",  # SQLITE_CANTOPEN
    10: "I/O error",  # SQLITE_IOERR
    11: "not a usable database (corrupt)",  # SQLITE_CORRUPT
    26: "not a database file",  # SQLITE_NOTADB
}
_PG_WORDS = {"53100": "disk full", "25006": "read-only", "55P03": "locked"}
_PG_ENVIRONMENT = ("08", "53", "57", "58")  # connection, resources, operator intervention, system error


def database_problem(exc: BaseException) -> str | None:
    """What is wrong with the journal database, if ``exc`` is an environment problem (disk full, locked,
    read-only, unreachable, no such directory) rather than a bug, in words for one CLI line; else None.
    Raw DBAPI errors (the group commit, the journal's fast path and the paper book use raw connections)
    and SQLAlchemy's wrappers of them read the same. Integrity and programming errors stay bugs."""
    orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None else exc
    import sqlite3

    if isinstance(orig, sqlite3.OperationalError) or type(orig) is sqlite3.DatabaseError:
        code = getattr(orig, "sqlite_errorcode", None)
        word = _SQLITE_WORDS.get(code & 0xFF) if isinstance(code, int) else None
        return f"{word}: {orig}" if word else str(orig)
    psycopg = _psycopg()
    if psycopg is not None and isinstance(orig, psycopg.DatabaseError):
        state = str(getattr(orig, "sqlstate", "") or "")
        text = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
        if state in _PG_WORDS:
            return f"{_PG_WORDS[state]}: {text}"
        if isinstance(orig, psycopg.OperationalError) or state[:2] in _PG_ENVIRONMENT:
            return text
        return None
    if isinstance(exc, sa.exc.OperationalError):  # another driver's: still the environment
        return str(exc.orig or exc)
    return None


def _psycopg() -> Any:
    import sys

    return sys.modules.get("psycopg")  # never imported just to classify: then it cannot have raised
