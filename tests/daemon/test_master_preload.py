"""Instrument masters are parsed off the daemon's event loop, once per file (issue 16).

Three daemons each parsing 100 accounts' masters on their loops after a reload of 1,000 playbooks stalled
their loops, and the heartbeats the loops schedule, for ~30 s: peers dropped each other from the
membership, each then owned everything, and 964 of 1,000 fires were missed (bench/lateness.py --daemons 3).
"""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path

import pytest
from helpers.instruments import master_csv
from helpers.sched import RecordingExecutor, make_daemon

from runner.accounts import Account
from runner.brokers.instruments import InstrumentMaster
from runner.clock import VirtualClock
from runner.daemon.scheduler import BrokerPool
from runner.journal.db import make_engine

PLAYBOOK = """\
version: 1
name: {name}
timezone: Asia/Kolkata
account: {account}
schedule: {{daily: '09:15'}}
instruments:
  nifty: {{exchange: NSE, symbol: NIFTY}}
steps:
  - {{kind: place, id: bid, instrument: nifty, side: BUY, quantity: 75, type: LIMIT, price: 100}}
"""


async def test_a_reload_parses_new_accounts_masters_off_the_loop_once_per_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    master = tmp_path / "master.csv"
    master.write_bytes(master_csv())
    names = [f"kotak{k}" for k in range(4)]
    accounts = {
        a: Account(name=a, broker="kotak_neo", instruments=str(master), credentials={}) for a in names
    }
    parsed_on: list[str] = []
    load = InstrumentMaster.load.__func__  # type: ignore[attr-defined]

    def recording(cls: type[InstrumentMaster], path: str, **kw: object) -> InstrumentMaster:
        parsed_on.append(threading.current_thread().name)
        result: InstrumentMaster = load(cls, path, **kw)
        return result

    monkeypatch.setattr(InstrumentMaster, "load", classmethod(recording))
    engine = make_engine(f"sqlite:///{tmp_path / 'j.db'}")
    clock = VirtualClock(dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC))
    pbdir = tmp_path / "pb"
    pbdir.mkdir()
    pool = BrokerPool(accounts, None, clock=clock, engine=engine)
    daemon = make_daemon(pbdir, engine, clock, RecordingExecutor(clock), "d1", brokers=pool)
    pool.view = daemon.watcher
    await daemon.prepare()
    for i, account in enumerate(names * 2):
        (pbdir / f"pb{i}.yaml").write_text(PLAYBOOK.format(name=f"pb{i}", account=account))
    lines = await daemon.rescan()  # what the reload poller does
    assert set(pool) == set(names), lines
    # one parse for the four accounts naming one file, and not on the event loop's thread
    assert len(parsed_on) == 1 and parsed_on[0] != threading.main_thread().name, parsed_on
    assert len({id(pool[a].inner.master) for a in names}) == 1
