"""Bad input and a bad environment end in a clear error and a documented exit code, never exit 70 (issue 11
§6): huge numbers and durations, files that are not UTF-8, a full / locked / read-only journal database."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest

from runner.cli import EXIT_BROKER, EXIT_INVALID, EXIT_USAGE, _classify, main

PLAYBOOK = """\
version: 1
name: safety
timezone: Asia/Kolkata
instruments:
  rel: {exchange: NSE, symbol: RELIANCE, tick_size: 0.05}
schedule: {daily: "09:20", late: LATE}
steps:
  - {kind: place, id: bid, instrument: rel, side: BUY, quantity: 1, type: LIMIT, price: PRICE}
  - {kind: cancel, id: tidy, all_open: {}, after: AFTER}
"""


def playbook(price: str = "1300", late: str = "skip", after: str = "1s") -> str:
    return PLAYBOOK.replace("PRICE", price).replace("LATE", late).replace("AFTER", after)


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for var in ("RUNNER_ACCOUNTS", "RUNNER_RISK", "RUNNER_DB", "RUNNER_DEBUG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "price.yaml").write_text(playbook(price="1e309"))
    (tmp_path / "late.yaml").write_text(playbook(late="run-within 99999999999999999999m"))
    (tmp_path / "after.yaml").write_text(playbook(after="100000h"))
    (tmp_path / "typo.yaml").write_text(playbook().replace("side: BUY", "side: BYU"))
    (tmp_path / "ok.yaml").write_text(playbook())
    (tmp_path / "latin1.yaml").write_bytes(playbook().replace("safety", "caf\u00e9").encode("latin-1"))
    (tmp_path / "accounts_latin1.yaml").write_bytes(
        b"version: 1\naccounts:\n  desk: {broker: paper}\n# caf\xe9\n"
    )
    return tmp_path


# --- huge numbers and durations --------------------------------------------------------------------


def test_huge_price_and_duration_are_positioned_errors_and_every_file_is_reported(
    ws: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = ["price.yaml", "late.yaml", "after.yaml", "typo.yaml", "ok.yaml"]
    assert main(["validate", *files]) == EXIT_INVALID
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if ": error: " in line]
    assert any(line.startswith("price.yaml:8:") and "1e309" in line for line in lines), out
    assert any(line.startswith("late.yaml:6:") and "run-within" in line for line in lines), out
    assert any(line.startswith("after.yaml:9:") and "100000h" in line for line in lines), out
    assert any(line.startswith("typo.yaml:8:") for line in lines), out
    assert "hint: " in out and "24h" in out
    assert out.splitlines()[-1].startswith("4 of 5 files invalid")


@pytest.mark.parametrize("name", ["price.yaml", "late.yaml", "after.yaml"])
def test_run_reports_huge_values_as_invalid_input(
    ws: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--now", name, "--db", f"sqlite:///{ws / 'j.db'}"]) == EXIT_INVALID
    err = capsys.readouterr().err
    assert err.startswith(f"{name}:") and "internal error" not in err


def test_one_duration_parser_bounded_by_a_trading_day() -> None:
    from runner.playbook import durations
    from runner.playbook import models as playbook
    from runner.playbook.checks import doc

    assert playbook.parse_duration is durations.parse_duration
    assert doc.parse_duration is durations.parse_duration
    assert durations.parse_duration("1h30m") == dt.timedelta(minutes=90)
    assert durations.parse_duration("24h") == durations.MAX_DURATION == dt.timedelta(hours=24)
    for bad in ("24h1ms", "99999999999999999999m", "9" * 5000 + "s", "", "1x", "m"):
        with pytest.raises(durations.DurationError):
            durations.parse_duration(bad)


# --- encodings ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["validate", "run", "plan"])
def test_non_utf8_playbook_is_exit_1_everywhere(
    ws: Path, command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = ["--now"] if command == "run" else []
    db = ["--db", f"sqlite:///{ws / 'j.db'}"] if command != "validate" else []
    assert main([command, *extra, "latin1.yaml", *db]) == EXIT_INVALID
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "latin1.yaml:2:10: error: not UTF-8 text" in text, text
    assert "internal error" not in text


@pytest.mark.parametrize("command", ["validate", "run"])
def test_non_utf8_accounts_file_is_exit_1(ws: Path, command: str, capsys: pytest.CaptureFixture[str]) -> None:
    db = ["--db", f"sqlite:///{ws / 'j.db'}"] if command == "run" else []
    args = ["validate", "ok.yaml"] if command == "validate" else ["run", "--now", "ok.yaml"]
    assert main([*args, "--accounts", "accounts_latin1.yaml", *db]) == EXIT_INVALID
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "accounts_latin1.yaml:4:6: error: not UTF-8 text" in text, text


def test_non_utf8_risk_file_is_exit_1(ws: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (ws / "risk.yaml").write_bytes(b"max_notional: 100000 # \xff\n")
    assert main(["run", "--now", "ok.yaml", "--risk", "risk.yaml", "--db", f"sqlite:///{ws / 'j.db'}"]) == 1
    assert "risk.yaml:1:24: error: not UTF-8 text" in capsys.readouterr().err


def test_accounts_directory_is_no_such_accounts_file(ws: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (ws / "dir").mkdir()
    assert main(["validate", "ok.yaml", "--accounts", "dir"]) == EXIT_USAGE
    assert "dir: no such accounts file" in capsys.readouterr().err
    assert main(["run", "--now", "ok.yaml", "--accounts", "dir"]) == EXIT_USAGE
    assert "dir: no such accounts file" in capsys.readouterr().err


# --- the journal database: raw DBAPI errors map like SQLAlchemy's ----------------------------------


def _full_db(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE t (x BLOB)")
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages + 1}")  # SQLite itself answers SQLITE_FULL
    return conn


def test_raw_sqlite_errors_are_environment_errors(tmp_path: Path) -> None:
    conn = _full_db(tmp_path / "full.db")
    with pytest.raises(sqlite3.OperationalError) as full:
        conn.execute("INSERT INTO t VALUES (zeroblob(1000000))")
    code, lines = _classify(full.value)
    assert code == EXIT_BROKER and "disk full" in lines[0], lines

    holder = sqlite3.connect(tmp_path / "full.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    other = sqlite3.connect(tmp_path / "full.db", timeout=0)
    with pytest.raises(sqlite3.OperationalError) as locked:
        other.execute("SELECT * FROM t")
    holder.execute("ROLLBACK")
    code, lines = _classify(locked.value)
    assert code == EXIT_BROKER and "locked" in lines[0], lines

    ro = sqlite3.connect(f"file:{tmp_path / 'full.db'}?mode=ro", uri=True)
    with pytest.raises(sqlite3.OperationalError) as readonly:
        ro.execute("INSERT INTO t VALUES (1)")
    code, lines = _classify(readonly.value)
    assert code == EXIT_BROKER and "read-only" in lines[0], lines

    with pytest.raises(sqlite3.OperationalError) as nodir:
        sqlite3.connect(tmp_path / "no" / "such" / "dir.db")
    code, lines = _classify(nodir.value)
    assert code == EXIT_BROKER and "no such directory" in lines[0], lines


def test_raw_psycopg_errors_are_environment_errors() -> None:
    errors = pytest.importorskip("psycopg.errors")
    code, lines = _classify(errors.DiskFull("could not extend file: No space left on device"))
    assert code == EXIT_BROKER and "disk full" in lines[0]
    code, lines = _classify(errors.OperationalError("connection refused"))
    assert code == EXIT_BROKER and "connection refused" in lines[0]
    code, lines = _classify(errors.ReadOnlySqlTransaction("cannot execute INSERT"))
    assert code == EXIT_BROKER and "read-only" in lines[0]


def test_full_disk_under_a_run_is_exit_5_disk_full(
    ws: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The journal's schema fits; the first rows of the run do not: SQLite itself says SQLITE_FULL (the
    same error a full filesystem gives), on the journal's raw DBAPI fast path."""
    import sqlalchemy as sa

    import runner.journal.db

    url = f"sqlite:///{ws / 'full.db'}"
    (ws / "warm.yaml").write_text(playbook().replace("name: safety", "name: warm-up"))
    assert main(["run", "--now", "warm.yaml", "--db", url]) == 0  # every table exists, on its own engine
    runner.journal.db._shared.clear()
    capsys.readouterr()
    make = runner.journal.db.make_engine

    def tiny(url: str | None = None, **kw: object) -> sa.Engine:
        engine = make(url, **kw)

        @sa.event.listens_for(engine, "connect")
        def _cap(dbapi_conn: sqlite3.Connection, _record: object) -> None:
            pages = dbapi_conn.execute("PRAGMA page_count").fetchone()[0]
            dbapi_conn.execute(f"PRAGMA max_page_count = {pages}")

        return engine

    monkeypatch.setattr(runner.journal.db, "make_engine", tiny)
    monkeypatch.setenv("RUNNER_DEBUG", "1")  # the traceback shows which path met the full disk
    try:
        code = main(["run", "--now", "ok.yaml", "--db", url])
    finally:
        runner.journal.db._shared.clear()
    err = capsys.readouterr().err
    assert code == EXIT_BROKER, err
    assert err.splitlines()[-1] == "runner run: journal database: disk full: database or disk is full"
    assert "\nsqlite3.OperationalError: database or disk is full" in err  # raw DBAPI, not SQLAlchemy's


def test_group_commit_on_a_full_disk_raises_what_the_cli_maps(tmp_path: Path) -> None:
    """The group-commit path writes on a raw DBAPI connection: its SQLITE_FULL reaches the CLI unwrapped."""
    import asyncio

    import sqlalchemy as sa

    from runner.journal.db import create_all, make_engine
    from runner.journal.groupcommit import GroupCommit
    from runner.journal.records import Intent
    from runner.journal.tables import Purpose, metadata
    from runner.model import Instrument, OrderRequest, Side

    engine = make_engine(f"sqlite:///{tmp_path / 'gc.db'}")
    create_all(engine, metadata)

    @sa.event.listens_for(engine, "connect")
    def _cap(dbapi_conn: sqlite3.Connection, _record: object) -> None:
        pages = dbapi_conn.execute("PRAGMA page_count").fetchone()[0]
        dbapi_conn.execute(f"PRAGMA max_page_count = {pages}")

    engine.dispose()
    gc = GroupCommit(engine)
    now = dt.datetime(2026, 12, 1, 9, 15, tzinfo=dt.UTC)
    big = "x" * 100_000  # more than the free space of any page: SQLite needs a new one
    run = {"run_id": big, "playbook": "p", "account": "paper", "mode": "live", "scheduled_for": now,
           "starts": 1, "status": "running", "owner": None, "timezone": "UTC"}  # fmt: skip
    step = {"run_id": big, "step_id": "s", "position": 0, "kind": "place", "outcome": "running"}
    request = OrderRequest("cid-1", Instrument("NSE", "RELIANCE"), Side.BUY, 1)
    intent = Intent("cid-1", big, "paper", "s", "s", 0, 0, Purpose.ENTRY, request, now)
    staged = gc.stage(run, step, intent)
    with pytest.raises(sqlite3.OperationalError) as full:
        asyncio.run(gc.commit(staged, now))
    code, lines = _classify(full.value)
    assert code == EXIT_BROKER and lines == ["journal database: disk full: database or disk is full"]


def test_non_utf8_calendar_override_is_exit_1(
    ws: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from runner.trading_calendars import clear_cache

    (ws / "cal").mkdir()
    (ws / "cal" / "NSE.yaml").write_bytes(b"holidays:\n  2026-12-01: Caf\xe9 day\n")
    (ws / "cal.yaml").write_text(playbook().replace("timezone:", "calendar: NSE\ntimezone:"))
    (ws / "accounts.yaml").write_text("version: 1\naccounts:\n  desk: {broker: paper}\n")  # enforces it
    monkeypatch.setenv("RUNNER_CALENDARS", str(ws / "cal"))
    clear_cache()
    try:
        code = main(["run", "--now", "cal.yaml", "--account", "desk", "--db", f"sqlite:///{ws / 'j.db'}"])
    finally:
        clear_cache()
    err = capsys.readouterr().err
    assert code == EXIT_INVALID, err
    assert f"{ws / 'cal' / 'NSE.yaml'}:2:18: not UTF-8 text (byte 0xe9)" in err
