"""The local database shared by the journal and the paper broker (SQLAlchemy 2 Core).

SQLite by default: ``$RUNNER_DB`` or ``sqlite:///<cwd>/.runner/runner.db``. SQLite connections get WAL,
a busy timeout and foreign keys; every transaction starts with ``BEGIN IMMEDIATE`` so two processes
writing the same book serialize instead of failing half-way with "database is locked" on upgrade. A
connection may opt into a deferred (read-only friendly) begin with
``conn.execution_options(sqlite_begin="DEFERRED")``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.pool import StaticPool

ENV_VAR = "RUNNER_DB"
BUSY_TIMEOUT_MS = 30_000


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


def make_engine(url: str | None = None, **kwargs: Any) -> Engine:
    """A new Engine for ``url`` (default :func:`default_db_url`), with the SQLite pragmas applied."""
    url = url or default_db_url()
    u = make_url(url)
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
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


_shared: dict[str, Engine] = {}


def shared_engine(url: str | None = None) -> Engine:
    """One Engine per file URL per process (in-memory URLs always get a fresh, private database)."""
    url = url or default_db_url()
    if is_memory_url(url):
        return make_engine(url)
    engine = _shared.get(url)
    if engine is None:
        engine = _shared[url] = make_engine(url)
    return engine
