"""Sync against a loopback server: good, truncated, header-only and renamed files; same-day re-sync."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from helpers.instruments import HEADER, MasterServer, account, master_csv

from runner.instruments.checks import Reason
from runner.instruments.index import SnapshotIndex, SnapshotStatus
from runner.instruments.snapshots import CACHE_NAME, state_dir
from runner.instruments.sync import SyncError, SyncResult, load_snapshot, sync_account
from runner.journal.db import shared_engine
from runner.model import Instrument

IST = ZoneInfo("Asia/Kolkata")


def now(hour: int = 8, days: int = 0) -> dt.datetime:
    d = dt.date.today() + dt.timedelta(days=days)
    return dt.datetime(d.year, d.month, d.day, hour, 0, tzinfo=IST)


def sync(server: MasterServer, db_url: str, *, at: dt.datetime | None = None, **kw: object) -> SyncResult:
    acct = kw.pop("acct", None) or account(server)
    engine = shared_engine(db_url)
    coro = sync_account(acct, engine, state=state_dir(db_url), now=at or now(), **kw)  # type: ignore[arg-type]
    return asyncio.run(coro)


def test_good_download_is_snapshotted_content_addressed(server: MasterServer, db_url: str) -> None:
    res = sync(server, db_url)
    snap = res.snapshot
    assert (snap.status, res.created, res.anomalies) == (SnapshotStatus.GOOD, True, [])
    assert snap.row_count == 62 and snap.trading_day == dt.date.today() and len(snap.sha256) == 64
    d = Path(snap.path)
    assert d == state_dir(db_url) / "masters" / snap.sha256
    assert (d / "nse_fo.csv").read_bytes() == server.files["/nse_fo.csv"]  # the download as received
    master = load_snapshot(snap)
    assert len(master) == 62
    assert master.by_token("2885").instrument == Instrument(
        "NSE", "RELIANCE", lot_size=1, tick_size=snap_tick()
    )
    assert res.in_force == snap


def snap_tick() -> object:
    from decimal import Decimal

    return Decimal("0.05")


def test_same_content_same_day_adds_nothing(server: MasterServer, db_url: str) -> None:
    first = sync(server, db_url)
    again = sync(server, db_url, at=now(hour=14))
    assert again.created is False and again.snapshot == first.snapshot
    assert len(SnapshotIndex(shared_engine(db_url)).history("desk")) == 1


def test_new_content_same_day_supersedes_when_good(server: MasterServer, db_url: str) -> None:
    first = sync(server, db_url)
    server.files["/nse_fo.csv"] = master_csv(range(23000, 26100, 100))  # a strike listed intraday
    second = sync(server, db_url, at=now(hour=12))
    assert second.created and second.snapshot.sha256 != first.snapshot.sha256
    assert SnapshotIndex(shared_engine(db_url)).last_good("desk") == second.snapshot


def test_header_only_file_is_quarantined_and_last_good_stays(
    server: MasterServer, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    good = sync(server, db_url, at=now(days=-1))
    server.files["/nse_fo.csv"] = HEADER.encode()
    with caplog.at_level(logging.ERROR, logger="runner.instruments"):
        bad = sync(server, db_url)
    assert bad.snapshot.status is SnapshotStatus.QUARANTINED and bad.snapshot.row_count == 0
    assert [a.reason for a in bad.anomalies] == [Reason.NO_ROWS]
    assert bad.in_force == good.snapshot
    assert SnapshotIndex(shared_engine(db_url)).last_good("desk") == good.snapshot
    assert (Path(bad.snapshot.path) / "nse_fo.csv").read_bytes() == HEADER.encode()  # kept for inspection
    assert not (Path(bad.snapshot.path) / CACHE_NAME).exists()  # never loadable
    assert any("quarantined" in r.getMessage() for r in caplog.records)


def test_truncated_mid_row_is_a_parse_failure(server: MasterServer, db_url: str) -> None:
    sync(server, db_url, at=now(days=-1))
    body = master_csv()
    server.files["/nse_fo.csv"] = body[: len(body) // 2 - 7]  # cut inside a row
    bad = sync(server, db_url)
    assert [a.reason for a in bad.anomalies] == [Reason.PARSE_FAILED]
    assert "truncated" in bad.anomalies[0].message


def test_truncated_at_a_line_end_is_a_row_count_collapse(server: MasterServer, db_url: str) -> None:
    sync(server, db_url, at=now(days=-1))
    lines = master_csv().splitlines(keepends=True)
    server.files["/nse_fo.csv"] = b"".join(lines[:20])
    bad = sync(server, db_url)
    assert [a.reason for a in bad.anomalies] == [Reason.ROW_COUNT_COLLAPSE]
    assert "19 rows, down from 62" in bad.anomalies[0].message


def test_renamed_file_is_quarantined(server: MasterServer, db_url: str) -> None:
    sync(server, db_url, at=now(days=-1))
    server.files["/nse_fo-v1.csv"] = server.files.pop("/nse_fo.csv")
    bad = sync(server, db_url, acct=account(server, path="/nse_fo-v1.csv"))
    assert [a.reason for a in bad.anomalies] == [Reason.FILE_MISSING]
    assert (
        "nse_fo.csv of the last good snapshot is missing (renamed to nse_fo-v1.csv?)"
        in bad.anomalies[0].message
    )


def test_every_expiry_past_is_quarantined(server: MasterServer, db_url: str) -> None:
    bad = sync(server, db_url, at=now(days=90))  # the same file, read three months later
    assert [a.reason for a in bad.anomalies] == [Reason.EXPIRIES_PAST]


def test_lot_change_on_a_playbook_instrument_is_quarantined(server: MasterServer, db_url: str) -> None:
    from helpers.instruments import expiry

    sync(server, db_url, at=now(days=-1))
    server.files["/nse_fo.csv"] = master_csv(lot=65)
    from decimal import Decimal

    from runner.model import OptionType

    used = [Instrument("NFO", "NIFTY", expiry(), Decimal(24500), OptionType.CE, lot_size=75)]
    bad = sync(server, db_url, used=used)
    assert [a.reason for a in bad.anomalies] == [Reason.CONTRACT_CHANGED]
    assert "lot_size 75 -> 65" in bad.anomalies[0].message
    ok = sync(server, db_url, at=now(hour=9))  # without playbooks naming it: a new lot is no anomaly
    assert ok.created is False  # same content as the quarantined one today: its verdict stands


def test_unreachable_server_is_a_sync_error(server: MasterServer, db_url: str) -> None:
    with pytest.raises(SyncError, match="master download failed"):
        sync(server, db_url, acct=account(server, path="/gone.csv"))
