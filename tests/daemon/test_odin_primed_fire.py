"""A daemon fire on an ODIN account goes out through a primed request (runner.brokers.primed): the
executor primes the armed order while preparing (ODIN is Primable now, as Kotak and Blitz), and at the
instant its request is one socket write; the ODIN simulator over real sockets sees it exactly once, under
the order_identifier of the ordinary path."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import pytest

from runner.brokers.instruments import InstrumentMaster
from runner.brokers.odin.client import create
from runner.brokers.odin.sim import start
from runner.brokers.odin.wire import REGULAR_PATH, order_identifier
from runner.brokers.paper.matching import MatchingConfig, MatchingEngine
from runner.brokers.paper.price_paths import RandomWalk
from runner.brokers.primed import PrimedRequest
from runner.clock import VirtualClock
from runner.daemon.scheduler import Daemon, DaemonOptions, EngineExecutor
from runner.engine.killswitch import ControlStore, GuardedBroker
from runner.journal.db import make_engine
from runner.journal.fires import FireState, FireStore
from runner.journal.store import Journal

MASTER = InstrumentMaster.load(
    Path(__file__).parents[1] / "brokers" / "odin" / "fixtures" / "master.csv", broker="odin"
)
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
INSTANT = dt.datetime(2026, 3, 2, 10, 0, tzinfo=IST).astimezone(dt.UTC)  # a Monday, market open
PLAYBOOK = """\
version: 1
name: entry
timezone: Asia/Kolkata
account: odin1
schedule: {daily: "10:00"}
steps:
  - {kind: place, id: bid, instrument: {exchange: NSE, symbol: IDEA}, side: BUY, quantity: 10,
     type: MARKET}
"""


class LeadClock(VirtualClock):
    """Virtual time, but the instant comes only after the executor's primes finished (its lead: real
    connections to the simulator take real time)."""

    executor: EngineExecutor

    async def sleep_until(self, when: dt.datetime) -> None:
        await asyncio.gather(*self.executor._warming)
        await super().sleep_until(when)


class OnePool(dict[str, object]):
    def get_broker(self, account: str) -> object:
        return self[account]


async def test_a_fire_on_odin_is_sent_through_its_primed_request_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    written: list[str] = []
    original = PrimedRequest.write

    def write(self: PrimedRequest) -> None:
        written.append(self.url)
        original(self)

    monkeypatch.setattr(PrimedRequest, "write", write)
    clock = LeadClock(INSTANT - dt.timedelta(seconds=1))
    pbdir = tmp_path / "pb"
    pbdir.mkdir()
    (pbdir / "entry.yaml").write_text(PLAYBOOK)
    db = make_engine(f"sqlite:///{tmp_path / 'journal.db'}")
    journal = Journal(engine=db)
    engine = MatchingEngine(RandomWalk(seed=7), MatchingConfig(session_close=None))
    async with start(clock=clock, master=MASTER, engine=engine) as sim:
        adapter = create(sim.account("odin1"), master=MASTER)
        pool = OnePool()
        clock.executor = EngineExecutor(pool, journal, clock)
        daemon = Daemon(
            pbdir,
            fires=FireStore(db, "d1"),
            control=ControlStore(db),
            executor=clock.executor,
            clock=clock,
            options=DaemonOptions(lead=1.0),
        )
        pool["odin1"] = GuardedBroker(adapter, daemon.watcher)
        try:
            await daemon.prepare()
            await daemon.fire(daemon.entries["entry"], INSTANT)
            row = daemon.store.slot("entry", INSTANT)
            assert row is not None and row.state is FireState.SUCCEEDED, row
            [intent] = journal.intents(run_id=row.run_id)
            assert intent.broker_order_id is not None
            assert len(written) == 1 and written[0].endswith(REGULAR_PATH)
            places = [body for m, p, body in sim.requests if m == "POST" and p == REGULAR_PATH]
            assert [body["order_identifier"] for body in places] == [order_identifier(intent.client_order_id)]
            assert adapter._primed == {}
        finally:
            await adapter.close()
