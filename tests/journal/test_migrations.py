"""Versioned journal migrations (runner/journal/migrations): a journal of release 0.1.0 opened and upgraded
by this release, no drift between the migrated schema and the MetaData, concurrent starts, newer schemas.

The fixture ``tests/journal/fixtures/journal_0_1_0`` was written by release 0.1.0's own code (commit 7dd22df,
see its make.py): two finished paper runs (entry with a stop, then the square-off) with steps, intents,
calls, fills and transitions, a fire, a stopped daemon, the kill switch's row and the paper book.
"""

from __future__ import annotations

import datetime as dt
import importlib
import logging
import pkgutil
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

import runner
from runner.cli import main
from runner.engine.killswitch import ControlStore, Mode
from runner.journal import migrations
from runner.journal.db import make_engine
from runner.journal.fires import FireState, FireStore, read_daemons
from runner.journal.store import Journal
from runner.model import OrderStatus

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "journal_0_1_0"
REPO = Path(__file__).resolve().parents[2]
RUN_ENTRY = "20261206-053340-mq5tkb6g"  # nifty-fut-entry-with-sl: entry filled, stop resting
RUN_SQUARE_OFF = "20261206-053342-vjwe37hc"  # intraday-square-off: stop cancelled, position closed
UPGRADED = "journal schema upgraded from unversioned (release 0.1.0, before migrations) to " + migrations.HEAD


def _legacy_sqlite(path: Path) -> str:
    conn = sqlite3.connect(path)
    conn.executescript((FIXTURE / "sqlite.sql").read_text())
    conn.close()
    return f"sqlite:///{path}"


def _counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        names = sa.inspect(conn).get_table_names()
        return {t: conn.execute(sa.text(f'SELECT count(*) FROM "{t}"')).scalar_one() for t in names}


def _head_metadata() -> sa.MetaData:
    md = sa.MetaData()
    for registered in migrations.registered_metadata():
        for table in registered.tables.values():
            table.to_metadata(md)
    return md


def _drift(engine: sa.Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn), _head_metadata()))


@pytest.fixture
def legacy(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = make_engine(_legacy_sqlite(tmp_path / "runner.db"))
    yield engine
    engine.dispose()


def _assert_readable(engine: sa.Engine) -> None:
    """The 0.1.0 rows, read through this release's APIs."""
    journal = Journal(engine=engine)
    assert [r.run_id for r in journal.list_runs()] == [RUN_SQUARE_OFF, RUN_ENTRY]
    entry = journal.get_run(RUN_ENTRY)
    assert entry is not None and entry.status.value == "succeeded" and entry.finished_at is not None
    assert entry.finished_at.tzinfo is dt.UTC
    steps = journal.steps_of(RUN_ENTRY)
    assert list(steps) == ["entry", "quick_fill", "chase_entry", "entry_filled", "stop_loss"]
    intents = journal.intents(run_id=RUN_ENTRY)
    assert {i.request.side.value: i.status for i in intents} == {
        "BUY": OrderStatus.FILLED,
        "SELL": OrderStatus.CANCELLED,
    }
    buy = next(i for i in intents if i.request.side.value == "BUY")
    assert buy.request.quantity == 75 and str(buy.average_price) == "24490.2"  # Decimal, exact
    assert journal.calls(run_id=RUN_ENTRY)
    assert journal.transitions(buy.client_order_id)
    fires = FireStore(engine, "test").history()
    assert [(f.playbook, f.state, f.run_id) for f in fires] == [
        ("intraday-square-off", FireState.SUCCEEDED, RUN_SQUARE_OFF)
    ]
    (daemon,) = read_daemons(engine)
    assert daemon["daemon_id"] == "daemon-desk3-4242" and daemon["stopped_at"] is not None
    assert ControlStore(engine).get().mode is Mode.NORMAL


# --- the chain itself ------------------------------------------------------------------------------


def test_chain_matches_alembic_revisions() -> None:
    """CHAIN (read at start without Alembic) lists exactly versions/, oldest first, one head."""
    script = ScriptDirectory.from_config(migrations.alembic_config())
    walked = [r.revision for r in script.walk_revisions()][::-1]
    assert walked == list(migrations.CHAIN)
    assert script.get_heads() == [migrations.HEAD]
    for rev, floor in migrations.CHAIN.items():
        assert floor in migrations.CHAIN and list(migrations.CHAIN).index(floor) <= list(
            migrations.CHAIN
        ).index(rev)


def test_every_metadata_is_registered() -> None:
    """A module with its own MetaData must be in METADATA_MODULES, or its tables escape the migrations."""
    found = set()
    for info in pkgutil.walk_packages(runner.__path__, "runner."):
        if ".migrations.versions" in info.name or info.name == "runner.__main__":
            continue
        module = importlib.import_module(info.name)
        if isinstance(getattr(module, "metadata", None), sa.MetaData) and module.metadata.tables:
            found.add(info.name)
    assert found == set(migrations.METADATA_MODULES)


# --- a journal of release 0.1.0 --------------------------------------------------------------------


def test_release_0_1_0_journal_is_upgraded_at_start(
    legacy: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    before = _counts(legacy)
    assert migrations.status(legacy).state is migrations.SchemaState.UNVERSIONED
    with caplog.at_level(logging.INFO, logger="runner.db"):
        _assert_readable(legacy)  # the first store opened upgrades it
    assert [r.getMessage() for r in caplog.records if r.name == "runner.db"] == [UPGRADED]
    after = _counts(legacy)
    assert {t: after[t] for t in before} == before  # every row kept
    new_tables = {
        "alembic_version", "processes", "schema_compat", "account_leases", "master_snapshots", "alert_outbox",
        "resolved_instruments",
    }
    new_tables |= {"order_changes"}
    assert set(after) - set(before) == new_tables
    status = migrations.status(legacy)
    assert (status.state, status.current, status.compatible_from) == ("current", migrations.HEAD, "0001")
    assert status.written_by is not None and status.written_by.startswith("runner ")


def test_migrated_schema_has_no_drift_from_the_metadata(legacy: sa.Engine) -> None:
    """Fails when a column or table is added to a MetaData without a migration (or the reverse)."""
    migrations.upgrade(legacy)
    assert _drift(legacy) == []


def test_replaying_every_revision_from_nothing_equals_the_metadata(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'replayed.db'}")
    with engine.begin() as conn:
        migrations._run_alembic(conn, migrations.HEAD)
    assert _drift(engine) == []


def test_revision_0001_is_exactly_release_0_1_0(tmp_path: Path) -> None:
    """0001 applied to an empty database creates the schema 0.1.0's own create_all made (the fixture)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'r0001.db'}")
    with engine.begin() as conn:
        migrations._run_alembic(conn, "0001")
    old = sa.MetaData()
    old.reflect(make_engine(_legacy_sqlite(tmp_path / "old.db")))
    with engine.connect() as conn:
        assert list(compare_metadata(MigrationContext.configure(conn), old)) == []


def test_an_empty_database_is_created_at_head_without_alembic(tmp_path: Path) -> None:
    """A new journal: create_all and stamp, and opening it again is one read; Alembic never imported."""
    code = f"""
import sys
from runner.journal.store import Journal
from runner.journal.db import make_engine
from runner.journal import migrations
url = "sqlite:///{tmp_path / "new.db"}"
Journal(engine=make_engine(url))
assert migrations.status(make_engine(url)).current == migrations.HEAD
Journal(engine=make_engine(url))
print(sorted(m for m in sys.modules if m.split(".")[0] == "alembic"))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"
    assert _drift(make_engine(f"sqlite:///{tmp_path / 'new.db'}")) == []


def test_processes_starting_together_upgrade_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url = _legacy_sqlite(tmp_path / "runner.db")
    _concurrent_starts(url, caplog)


def _concurrent_starts(url: str, caplog: pytest.LogCaptureFixture, n: int = 4) -> None:
    barrier = threading.Barrier(n)
    errors: list[BaseException] = []
    engines = [make_engine(url) for _ in range(n)]  # each its own pool: separate connections

    def start(engine: sa.Engine) -> None:
        barrier.wait()
        try:
            migrations.ensure(engine)
        except BaseException as exc:
            errors.append(exc)

    with caplog.at_level(logging.INFO, logger="runner.db"):
        threads = [threading.Thread(target=start, args=(e,)) for e in engines]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert errors == []
    assert [r.getMessage() for r in caplog.records if r.name == "runner.db"] == [UPGRADED]
    assert migrations.status(engines[0]).current == migrations.HEAD
    for e in engines:
        e.dispose()


# --- a schema newer than this release --------------------------------------------------------------


def _pretend_newer(url: str, floor: str) -> None:
    engine = make_engine(url)
    migrations.upgrade(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '0099'"))
        conn.execute(
            sa.text(
                "UPDATE schema_compat SET compatible_from = :f, written_by = 'runner 9.0.0 (schema 0099)'"
            ),
            {"f": floor},
        )
    engine.dispose()


def test_a_newer_additive_schema_is_used_as_is(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Rolling upgrade: a newer release upgraded the journal additively (floor 0001): we keep working."""
    url = _legacy_sqlite(tmp_path / "runner.db")
    _pretend_newer(url, floor="0001")
    caplog.clear()
    engine = make_engine(url)
    with caplog.at_level(logging.INFO, logger="runner.db"):
        _assert_readable(engine)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "runner.db"]
    assert "0099" in line and "using it as is" in line
    assert migrations.status(engine).current == "0099"  # not touched


def test_a_newer_incompatible_schema_is_refused_with_exit_5(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = _legacy_sqlite(tmp_path / "runner.db")
    _pretend_newer(url, floor="0099")
    with pytest.raises(migrations.SchemaTooNew):
        Journal(engine=make_engine(url))
    assert main(["history", "--db", url]) == 5
    err = capsys.readouterr().err
    assert "journal schema 0099" in err and "runner 9.0.0" in err and f"schema {migrations.HEAD}" in err
    assert main(["db", "status", "--db", url]) == 5


# --- runner db ---------------------------------------------------------------------------------------


def test_runner_db_status_and_upgrade(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = _legacy_sqlite(tmp_path / "runner.db")
    assert main(["db", "status", "--db", url]) == 0
    out = capsys.readouterr().out
    assert "unversioned" in out and "runner db upgrade" in out
    assert main(["db", "upgrade", "--db", url]) == 0
    assert f"upgraded from unversioned (release 0.1.0, before migrations) to {migrations.HEAD}" in (
        capsys.readouterr().out
    )
    assert main(["db", "upgrade", "--db", url]) == 0
    assert f"already at {migrations.HEAD}" in capsys.readouterr().out
    assert main(["db", "status", "--db", url, "--json"]) == 0
    assert f'"current": "{migrations.HEAD}"' in capsys.readouterr().out


# --- PostgreSQL --------------------------------------------------------------------------------------


def _legacy_pg(pg_db_url: str, tmp_path: Path) -> str:
    """Release 0.1.0's PostgreSQL schema (its DDL, compiled by its code) holding the fixture's rows."""
    engine = make_engine(pg_db_url)
    source = make_engine(_legacy_sqlite(tmp_path / "old.db"))
    old = sa.MetaData()
    old.reflect(source)
    with engine.begin() as conn:
        for ddl in (FIXTURE / "postgresql.sql").read_text().split(";\n"):
            if ddl.strip():
                conn.exec_driver_sql(ddl)
        with source.connect() as src:
            for table in old.sorted_tables:
                rows = [dict(r._mapping) for r in src.execute(sa.select(table))]
                if rows:
                    conn.execute(table.insert(), rows)
    engine.dispose()
    source.dispose()
    return pg_db_url


def test_pg_release_0_1_0_journal_is_upgraded_without_drift(
    pg_db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = make_engine(_legacy_pg(pg_db_url, tmp_path))
    with caplog.at_level(logging.INFO, logger="runner.db"):
        _assert_readable(engine)
    assert [r.getMessage() for r in caplog.records if r.name == "runner.db"] == [UPGRADED]
    assert _drift(engine) == []
    engine.dispose()


def test_pg_processes_starting_together_upgrade_once(
    pg_db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _concurrent_starts(_legacy_pg(pg_db_url, tmp_path), caplog)


def test_pg_empty_database_created_at_head_without_drift(pg_db_url: str) -> None:
    engine = make_engine(pg_db_url)
    Journal(engine=engine)
    assert migrations.status(engine).current == migrations.HEAD
    assert _drift(engine) == []
    engine.dispose()
