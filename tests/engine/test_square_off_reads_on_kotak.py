"""A square-off through the Kotak Neo adapter against its loopback simulator, counted on the wire: what a
square-off reads beyond its writes (issue 13's fleet square-off: the runner's cost over bare calls)."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

from runner.brokers.instruments import InstrumentMaster, MasterRow
from runner.brokers.kotak_neo.client import create
from runner.brokers.kotak_neo.sim import account_for, start
from runner.brokers.kotak_neo.wire import PATH_CANCEL, PATH_HISTORY, PATH_ORDERS, PATH_PLACE
from runner.clock import VirtualClock
from runner.engine.core import RunOptions, execute
from runner.journal.db import make_engine
from runner.journal.fastpath import _Fast
from runner.journal.store import Journal
from runner.model import Instrument, OrderRequest, OrderStatus, OrderType, Product, Side
from runner.playbook.models import Playbook
from runner.playbook.yamlload import load_yaml

IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
START = dt.datetime(2026, 3, 2, 10, 0, tzinfo=IST)
TICK = Decimal("0.05")
SQUARE_OFF = """version: 1
name: eod
timezone: Asia/Kolkata
steps:
  - {kind: square_off, id: sq, cancel_open_orders: true, filter: {product: [MIS]}, verify_timeout: 60s}
"""


def _master(n: int) -> InstrumentMaster:
    rows = [MasterRow(Instrument("NSE", f"SQ{i:02d}", lot_size=1, tick_size=TICK), str(60000 + i),
                      f"SQ{i:02d}-EQ") for i in range(n)]
    return InstrumentMaster(rows, broker="kotak_neo")


async def _square_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, positions: int
                      ) -> tuple[Counter[str], int]:
    """``positions`` MIS positions and 2 resting orders squared off: the requests the simulator saw
    (trading paths) and the journal commits made while the run executed."""
    clock = VirtualClock(START)
    master = _master(positions)
    commits = [0]
    original = _Fast.commit

    def counting(self: _Fast, cur: object) -> None:
        commits[0] += 1
        original(self, cur)

    async with start(clock=clock, master=master) as sim:
        account, env = account_for(sim, "desk", orders_per_second=1000, burst=1000)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        broker = create(account, master=master, clock=clock)
        await broker.connect()
        try:
            for k, row in enumerate(master):
                await broker.place(OrderRequest(f"pos{k}", row.instrument, Side.BUY, 5, product=Product.MIS))
            for k in range(2):
                ins = master.resolve(Instrument("NSE", f"SQ{k:02d}")).instrument
                price = (await broker.ltp(ins) * Decimal("0.9") / TICK).to_integral_value() * TICK
                await broker.place(OrderRequest(f"rest{k}", ins, Side.BUY, 1, OrderType.LIMIT, price=price,
                                                product=Product.MIS))
            journal = Journal(engine=make_engine(f"sqlite:///{tmp_path}/j{positions}.db"))
            pb = Playbook.model_validate(load_yaml(SQUARE_OFF).value)
            sim.seen.clear()
            with monkeypatch.context() as m:
                m.setattr(_Fast, "commit", counting)
                report = await execute(pb, broker, journal, clock, account="desk",
                                       options=RunOptions(scheduled_for=START, run_key="sq"))
            assert report.status.value == "succeeded", report.steps
            assert all(p.quantity == 0 for p in await broker.positions())
            # the journal ends with the broker's truth: every exit filled, read from the one book read
            intents = journal.intents(run_id=report.run_id)
            assert len(intents) == positions and {i.status for i in intents} == {OrderStatus.FILLED}
        finally:
            await broker.close()
    return Counter(path for _, path, _ in sim.seen if path.startswith("/quick/")), commits[0]


async def test_square_off_reads_each_exit_back_in_one_book_read(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """4 positions and 2 resting orders: 2 cancels each read back once, 4 exits acknowledged without a
    verify read each, then one day-book read settles them all (filled: no second book read at the end)."""
    wire, _ = await _square_off(tmp_path, monkeypatch, 4)
    assert wire == {PATH_PLACE: 4, PATH_CANCEL: 2, PATH_HISTORY: 2, PATH_ORDERS: 2}, wire


async def test_square_off_commits_once_per_exit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The intent is committed before each exit's request; the exit's ack joins the next commit (the next
    intent's, or the batch read's): 4 more positions cost 4 more commits, not 8."""
    _, four = await _square_off(tmp_path, monkeypatch, 4)
    _, eight = await _square_off(tmp_path, monkeypatch, 8)
    assert eight - four == 4, (four, eight)
