"""master_for: the override file wins, else the last good snapshot, else a sync now; the adapters'
factories load through it and each run journals the sha it resolved against."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from helpers.engine import make_env, playbook
from helpers.instruments import HEADER, MasterServer, account, master_csv

from runner.instruments import load
from runner.instruments.index import SnapshotIndex
from runner.instruments.load import master_for, resolved_sha
from runner.instruments.snapshots import state_dir
from runner.instruments.sync import sync_account
from runner.journal.db import shared_engine
from runner.journal.tables import runs

IST = ZoneInfo("Asia/Kolkata")


def sync_on(server: MasterServer, db_url: str, day: dt.date) -> str:
    at = dt.datetime(day.year, day.month, day.day, 8, tzinfo=IST)
    res = asyncio.run(sync_account(account(server), shared_engine(db_url), state=state_dir(db_url), now=at))
    return res.snapshot.sha256


def test_override_file_wins(server: MasterServer, db_url: str, tmp_path: Path) -> None:
    sync_on(server, db_url, dt.date.today())
    override = tmp_path / "mine.csv"
    override.write_text(HEADER + "NSE,TCS,,,,1,0.05,,11536,TCS-EQ\n")
    master = master_for(account(server, instruments=str(override)), db_url=db_url)
    assert [r.instrument.symbol for r in master] == ["TCS"]
    assert resolved_sha("desk") == hashlib.sha256(override.read_bytes()).hexdigest()


def test_last_good_snapshot_is_loaded_without_a_download(server: MasterServer, db_url: str) -> None:
    sha = sync_on(server, db_url, dt.date.today())
    server.files.clear()  # a download now would fail
    master = master_for(account(server), db_url=db_url)
    assert len(master) == 62 and resolved_sha("desk") == sha


def test_never_synced_syncs_now(server: MasterServer, db_url: str) -> None:
    master = master_for(account(server), db_url=db_url)
    assert len(master) == 62
    snap = SnapshotIndex(shared_engine(db_url)).last_good("desk")
    assert snap is not None and resolved_sha("desk") == snap.sha256


def test_never_synced_and_quarantined_is_an_error(server: MasterServer, db_url: str) -> None:
    server.files["/nse_fo.csv"] = HEADER.encode()
    with pytest.raises(LookupError, match="quarantined"):
        master_for(account(server), db_url=db_url)


def test_a_day_old_snapshot_is_used_with_a_warning(
    server: MasterServer, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    sha = sync_on(server, db_url, dt.date.today() - dt.timedelta(days=1))
    server.files["/nse_fo.csv"] = master_csv(lot=65)  # not fetched: the snapshot is recent enough
    with caplog.at_level(logging.WARNING, logger="runner.instruments"):
        master_for(account(server), db_url=db_url)
    assert resolved_sha("desk") == sha
    assert any("older than today's trading day" in r.getMessage() for r in caplog.records)


def test_a_week_old_snapshot_is_refreshed(server: MasterServer, db_url: str) -> None:
    old = sync_on(server, db_url, dt.date.today() - dt.timedelta(days=load.MAX_SNAPSHOT_AGE_DAYS + 1))
    server.files["/nse_fo.csv"] = master_csv(range(23000, 26100, 100))
    master_for(account(server), db_url=db_url)
    assert resolved_sha("desk") not in (None, old)


@pytest.mark.parametrize("broker", ["kotak_neo", "odin", "blitz", "alphapoint"])
def test_adapter_factories_load_the_snapshot(server: MasterServer, db_url: str, broker: str) -> None:
    from runner.accounts import Account
    from runner.brokers.registry import create_broker

    sha = sync_on(server, db_url, dt.date.today())
    base = account(server).model_dump()
    base["endpoints"].update({"ws": "ws://127.0.0.1:9/WSGateway/", "base_url": "http://127.0.0.1:9"})
    acct = Account.model_validate({**base, "broker": broker})
    adapter = create_broker(acct, db_url=db_url)
    master = asyncio.run(adapter.instrument_master())  # type: ignore[attr-defined]
    assert len(master) == 62 and resolved_sha("desk") == sha


def test_each_run_journals_the_master_it_resolved_against(
    server: MasterServer, db_url: str, tmp_path: Path
) -> None:
    sha = sync_on(server, db_url, dt.date.today())
    master_for(account(server), db_url=db_url)  # what a broker factory does before the run
    env = make_env(tmp_path)
    env.account = "desk"
    pb = playbook(
        """
        account: desk
        steps:
          - {kind: place, id: buy, instrument: rel, side: BUY, quantity: 10, type: LIMIT, price: 2800}
        """
    )
    report = asyncio.run(env.run(pb))
    with env.engine.connect() as c:
        got = c.execute(sa.select(runs.c.master_sha).where(runs.c.run_id == report.run_id)).scalar_one()
    assert got == sha
