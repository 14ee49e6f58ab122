"""Versioned journal schema: Alembic revisions in ``versions/``, applied at start or by ``runner db``.

Every process checks the schema once per database (:func:`ensure`, called by
:func:`runner.journal.db.create_all`)
with one read of ``alembic_version``; Alembic is imported only when an upgrade is due.

* at :data:`HEAD`: nothing to do (the common case, ~0.1 ms).
* empty database: every registered MetaData is created and stamped :data:`HEAD` (no Alembic import, no
  replay of history; ``tests/journal/test_migrations.py`` proves HEAD's migrated schema equals the MetaData).
* an older revision, or a journal of release 0.1.0 (tables, no version table): upgraded in one
  transaction, logged once as ``journal schema upgraded from X to Y``.
* a revision this release does not know (a newer release upgraded it): used as is when the schema's
  compatibility floor (``schema_compat.compatible_from``) is a revision this release knows, refused with
  :class:`SchemaTooNew` (exit 5) otherwise. Revisions are additive (README, "Journal migrations"), so
  the floor only moves when a revision is not.

Processes starting together take turns: SQLite's ``BEGIN IMMEDIATE``, PostgreSQL's transaction-scoped
advisory lock (:data:`runner.journal.db.SCHEMA_LOCK_KEY`); the second finds the work done.
"""

from __future__ import annotations

import enum
import logging
import sys
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

log = logging.getLogger("runner.db")

HERE = Path(__file__).resolve().parent
# Every revision of versions/, oldest first, with its compatibility floor: the oldest revision whose code
# still runs correctly on that schema (an additive revision keeps its predecessor's floor). A test keeps
# this in step with Alembic's view of versions/; read here so the check at start never imports Alembic.
CHAIN: dict[str, str] = {
    "0001": "0001",  # release 0.1.0 (commit 7dd22df)
    "0002": "0001",  # issue 11: processes, schema_compat (additive)
    "0003": "0001",  # issue 13: master_snapshots, runs.master_sha (additive)
    "0005": "0001",  # issue 14: alert_outbox (additive)
    "0009": "0001",  # issue 16: fires.lease_expires/taken_from, daemons.beat_db_at (additive)
    "0010": "0001",  # issue 15 follow-up: steps.parallel_group (additive)
    "0011": "0001",  # issue 13 §3: resolved_instruments (additive)
    "0012": "0001",  # issue 14/15: order_changes, each order's price history (additive)
    "0013": "0001",  # issue 14: indexes for the status page and /metrics (additive)
    "0014": "0001",  # leftovers: control.alerted_by, one alert per kill switch change (additive)
    "0015": "0001",  # issue 16 leftovers: halt_passes.halt_since, the halt pass shared out (additive)
}
HEAD = next(reversed(CHAIN))
VERSION_TABLE = "alembic_version"  # Alembic's default name and shape, written here without Alembic
UNVERSIONED = "unversioned (release 0.1.0, before migrations)"

# Modules whose ``metadata`` together make the schema at HEAD (runner.journal.db.create_all leaves their
# tables to this module). A new MetaData goes here, and its tables into a revision.
METADATA_MODULES = (
    "runner.journal.tables",
    "runner.journal.fires",
    "runner.engine.killswitch",
    "runner.brokers.paper.broker",
    "runner.liveness",
    "runner.engine.leases",
    "runner.journal.migrations",
    "runner.instruments.index",
    "runner.alerts.outbox",
    "runner.journal.resolved",
    "runner.journal.order_changes",
)

metadata = sa.MetaData()
schema_compat = sa.Table(
    "schema_compat",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),  # always 1
    sa.Column("compatible_from", sa.String(32), nullable=False),
    sa.Column("written_by", sa.String(64), nullable=False),  # "runner 0.1.0 (schema 0002)"
)
_version_md = sa.MetaData()
_version_table = sa.Table(
    VERSION_TABLE,
    _version_md,
    sa.Column("version_num", sa.String(32), nullable=False),
    sa.PrimaryKeyConstraint("version_num", name=f"{VERSION_TABLE}_pkc"),
)


class SchemaTooNew(Exception):
    """The journal was upgraded by a newer release to a schema this release cannot use."""

    def __init__(self, found: str, floor: str | None, written_by: str | None) -> None:
        self.found, self.floor, self.written_by = found, floor, written_by
        by = f" by {written_by}" if written_by else ""
        need = f" and needs at least schema {floor}" if floor else " and is not marked compatible"
        super().__init__(
            f"journal schema {found} (written{by}) is newer than this release knows "
            f"(runner {release()}, schema {HEAD}){need}: upgrade runner to use this journal"
        )


class SchemaState(enum.StrEnum):
    CURRENT = "current"
    EMPTY = "empty"  # no runner table yet: created at HEAD on first use
    UNVERSIONED = "unversioned"  # a journal of release 0.1.0: upgraded on first use
    BEHIND = "behind"  # an older revision: upgraded on first use
    NEWER_COMPATIBLE = "newer-compatible"  # a newer release's additive schema: used as is
    TOO_NEW = "too-new"  # refused


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    state: SchemaState
    current: str | None  # the revision in the database; None before migrations or when empty
    head: str  # this release's newest revision
    compatible_from: str | None = None
    written_by: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "current": self.current,
            "head": self.head,
            "compatible_from": self.compatible_from,
            "written_by": self.written_by,
        }


def release() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("runner")
    except PackageNotFoundError:  # running from a source tree
        return "unknown"


def registered_metadata() -> list[sa.MetaData]:
    import importlib

    return [importlib.import_module(name).metadata for name in METADATA_MODULES]


def is_registered(md: sa.MetaData) -> bool:
    """Whether ``md`` is one of :data:`METADATA_MODULES` (already imported: its caller holds it)."""
    return any(getattr(sys.modules.get(name), "metadata", None) is md for name in METADATA_MODULES)


# --- reading the state ------------------------------------------------------------------------------


def _probe_version(conn: Connection) -> str | None:
    """The check at start: one SELECT; None when there is no version (or no table). Not for use inside
    ``engine.begin()``: a failure rolls ``conn`` back."""
    try:
        value = conn.execute(sa.select(_version_table.c.version_num)).scalar()
    except sa.exc.DBAPIError:
        conn.rollback()  # PostgreSQL: the failed statement aborted the transaction
        return None
    return None if value is None else str(value)


def _read_version(conn: Connection) -> str | None:
    if not sa.inspect(conn).has_table(VERSION_TABLE):
        return None
    value = conn.execute(sa.select(_version_table.c.version_num)).scalar()
    return None if value is None else str(value)


def _status(conn: Connection) -> SchemaStatus:
    current = _read_version(conn)
    if current is None:
        tables = set(sa.inspect(conn).get_table_names()) - {VERSION_TABLE}
        known = {t for md in registered_metadata() for t in md.tables}
        state = SchemaState.UNVERSIONED if tables & known else SchemaState.EMPTY
        return SchemaStatus(state, None, HEAD)
    row = None
    if sa.inspect(conn).has_table(schema_compat.name):
        row = conn.execute(
            sa.select(schema_compat.c.compatible_from, schema_compat.c.written_by).where(
                schema_compat.c.id == 1
            )
        ).first()
    floor, by = (row.compatible_from, row.written_by) if row is not None else (CHAIN.get(current), None)
    if current == HEAD:
        state = SchemaState.CURRENT
    elif current in CHAIN:
        state = SchemaState.BEHIND
    else:  # a newer release's: usable when its floor is a revision we know
        ok = row is not None and floor in CHAIN
        state = SchemaState.NEWER_COMPATIBLE if ok else SchemaState.TOO_NEW
    return SchemaStatus(state, current, HEAD, floor, by)


def _reader(engine: Engine) -> Connection:
    # A deferred BEGIN on SQLite: the check at start never takes the write lock.
    return engine.connect().execution_options(sqlite_begin="DEFERRED")


def status(engine: Engine) -> SchemaStatus:
    """The database's schema as this release sees it (read-only)."""
    with _reader(engine) as conn:
        return _status(conn)


# --- upgrading --------------------------------------------------------------------------------------

_ready: weakref.WeakKeyDictionary[Engine, SchemaStatus] = weakref.WeakKeyDictionary()
_ready_lock = threading.Lock()


def ensure(engine: Engine) -> SchemaStatus:
    """Make the schema usable by this release, once per Engine: one read when it already is."""
    done = _ready.get(engine)
    if done is not None:
        return done
    with _ready_lock:
        done = _ready.get(engine)
        if done is None:
            done = _ready[engine] = _ensure(engine)
            # Tests drop a database file and dispose its engine: check again on the next use.
            sa.event.listen(engine, "engine_disposed", lambda e: _ready.pop(e, None))
    return done


def _ensure(engine: Engine) -> SchemaStatus:
    with _reader(engine) as conn:
        current = _probe_version(conn)
        if current == HEAD:
            return SchemaStatus(SchemaState.CURRENT, current, HEAD, CHAIN[HEAD])
        newer = _status(conn) if current is not None and current not in CHAIN else None
    if newer is None:
        return upgrade(engine)[1]
    if newer.state is SchemaState.TOO_NEW:
        raise SchemaTooNew(newer.current or "?", newer.compatible_from, newer.written_by)
    log.warning(
        "journal schema %s (written by %s) is newer than this release's %s and compatible from %s: "
        "using it as is",
        newer.current,
        newer.written_by,
        HEAD,
        newer.compatible_from,
    )
    return newer


def upgrade(engine: Engine) -> tuple[SchemaStatus, SchemaStatus]:
    """Bring the schema to :data:`HEAD` (no-op when it is there): (before, after). Raises
    :class:`SchemaTooNew` for a newer, incompatible schema; a newer compatible one is left alone."""
    from runner.journal.db import SCHEMA_LOCK_KEY

    with engine.begin() as conn:  # SQLite: BEGIN IMMEDIATE, the write lock until COMMIT
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK_KEY})")
        before = _status(conn)  # again under the lock: a process starting with us may have done it
        if before.state is SchemaState.TOO_NEW:
            raise SchemaTooNew(before.current or "?", before.compatible_from, before.written_by)
        if before.state in (SchemaState.CURRENT, SchemaState.NEWER_COMPATIBLE):
            return before, before
        if before.state is SchemaState.EMPTY:
            # Fast and exact: HEAD's tables straight from the MetaData (the drift test proves them equal
            # to the migrated schema); replaying every revision would import Alembic on each new journal.
            for md in registered_metadata():
                md.create_all(conn)
            _version_md.create_all(conn)
            conn.execute(_version_table.insert().values(version_num=HEAD))
        else:
            _run_alembic(conn, HEAD)
        _write_compat(conn)
    if before.state is not SchemaState.EMPTY:
        log.warning("journal schema upgraded from %s to %s", before.current or UNVERSIONED, HEAD)
    return before, SchemaStatus(SchemaState.CURRENT, HEAD, HEAD, CHAIN[HEAD])


def _write_compat(conn: Connection) -> None:
    values = {"compatible_from": CHAIN[HEAD], "written_by": f"runner {release()} (schema {HEAD})"[:64]}
    if not conn.execute(schema_compat.update().where(schema_compat.c.id == 1).values(**values)).rowcount:
        conn.execute(schema_compat.insert().values(id=1, **values))


def alembic_config() -> Any:
    """Alembic's Config for ``versions/``, built in code: no alembic.ini is needed (or shipped)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    return cfg


def _run_alembic(conn: Connection, target: str) -> None:
    """Run the revisions up to ``target`` on ``conn``, inside its (our) transaction."""
    from alembic.runtime.environment import EnvironmentContext
    from alembic.script import ScriptDirectory

    cfg = alembic_config()
    script = ScriptDirectory.from_config(cfg)

    def steps(rev: Any, _context: Any) -> Any:
        return script._upgrade_revs(target, rev)

    with EnvironmentContext(cfg, script, fn=steps, destination_rev=target) as env:
        env.configure(connection=conn, version_table=VERSION_TABLE)
        with env.begin_transaction():  # a no-op inside our transaction: one commit for all revisions
            env.run_migrations()
