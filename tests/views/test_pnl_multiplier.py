"""P&L of a contract whose price is quoted per unit of a larger lot (commodity, currency): a price
difference times quantity is money only after the instrument's price multiplier (Kotak's lMultiplier x
dGenNum/dGenDen x dPriceNum/dPriceDen), read from the instrument master; 1 when the master has none."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from helpers.engine import at, make_env, playbook
from helpers.positions import Unreported, sim_venue

from runner.brokers.base import Broker
from runner.brokers.paper.broker import PaperBroker
from runner.brokers.paper.matching import MatchingConfig, MatchingEngine
from runner.brokers.paper.price_paths import StepPath
from runner.cli import main
from runner.clock import VirtualClock
from runner.ids import client_order_id
from runner.journal.db import make_engine
from runner.model import (
    Instrument,
    OrderRequest,
    OrderStatus,
    Side,
    instrument_from_dict,
    instrument_to_dict,
)
from runner.views.positions import read_positions

IST = ZoneInfo("Asia/Kolkata")
DAY = dt.date(2026, 3, 2)
# MCX crude: quoted per barrel, one unit of quantity is 100 barrels
CRUDE = Instrument("MCX", "CRUDEOIL", dt.date(2026, 3, 19), None, None, 1, Decimal(1), None, Decimal(100))
MASTER_CSV = (
    "exchange,symbol,expiry,strike,option_type,lot_size,tick_size,freeze_quantity,token,trading_symbol,"
    "price_multiplier\n"
    "MCX,CRUDEOIL,2026-03-19,,,1,1,,445001,CRUDEOIL26MARFUT,100\n"
    "NFO,NIFTY,2026-03-30,,,75,0.05,1800,35001,NIFTY26MARFUT,\n"
)
OPEN, NOON = Decimal("6000"), Decimal("6050")


def _path() -> StepPath:
    path = StepPath()
    path.set(CRUDE, OPEN, dt.datetime.combine(DAY, dt.time(9, 0), tzinfo=IST))
    path.set(CRUDE, NOON, dt.datetime.combine(DAY, dt.time(12, 0), tzinfo=IST))
    return path


@contextlib.asynccontextmanager
async def _venue(kind: str, clock: VirtualClock, mp: pytest.MonkeyPatch, tmp: Path) -> AsyncIterator[Broker]:
    master_path = tmp / "instruments.csv"
    master_path.write_text(MASTER_CSV)
    engine = MatchingEngine(_path(), MatchingConfig())
    if kind == "paper":  # the paper book itself: its generated master lists no MCX contracts
        yield PaperBroker(
            "p", engine=make_engine(f"sqlite:///{tmp / 'book.db'}"), clock=clock, prices=_path()
        )
        return
    async with sim_venue(kind, f"pnl-{kind}", master_path, engine, clock, mp) as broker:
        yield broker



@pytest.mark.parametrize("kind", ["paper", "kotak_neo", "odin"])
async def test_positions_pnl_of_a_commodity_future_uses_its_multiplier(
    kind: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    clock = VirtualClock(dt.datetime.combine(DAY, dt.time(9, 10), tzinfo=IST))
    async with _venue(kind, clock, monkeypatch, tmp_path) as broker:
        try:
            await broker.connect()
            for n, (side, qty, when) in enumerate(
                [(Side.BUY, 2, dt.time(9, 15)), (Side.SELL, 1, dt.time(12, 1))]
            ):
                await clock.sleep_until(dt.datetime.combine(DAY, when, tzinfo=IST))
                cid = client_order_id("20260302-091500+0530-pnlmult", "s", n, 0)
                order = await broker.place(OrderRequest(cid, CRUDE, side, qty))
                for _ in range(50):
                    if order.status is OrderStatus.FILLED:
                        break
                    await clock.sleep(0.2)
                    order = await broker.get_order(cid) or order
                assert order.status is OrderStatus.FILLED, order
            for b in (broker, Unreported(broker)):
                (line,), problems = await read_positions(b, kind)
                assert problems == []
                assert (line.quantity, line.average_price, line.ltp) == (1, OPEN, NOON)
                assert line.realised == (NOON - OPEN) * 1 * 100  # 5000 rupees, not 50
                assert line.unrealised == (NOON - OPEN) * 1 * 100
        finally:
            await broker.close()


def test_the_multiplier_round_trips_through_the_journals_json() -> None:
    assert instrument_from_dict(json.loads(json.dumps(instrument_to_dict(CRUDE)))) == CRUDE
    plain = dataclasses.replace(CRUDE, price_multiplier=None)
    assert "price_multiplier" not in instrument_to_dict(plain)  # existing rows and hashes unchanged
    assert plain.multiplier == 1 and CRUDE.multiplier == 100


async def test_run_pnl_of_a_commodity_future_uses_its_multiplier(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env = make_env(tmp_path)
    env.prices.set(CRUDE, Decimal("6000"), at(9, 0))
    env.prices.set(CRUDE, Decimal("6012"), at(9, 15, 30))
    report = await env.run(
        playbook("""
steps:
  - {kind: place, id: buy, side: BUY, quantity: 2,
     instrument: {exchange: MCX, symbol: CRUDEOIL, expiry: 2026-03-19, tick_size: 1, price_multiplier: 100}}
  - {kind: wait, id: w, until: "09:16"}
  - {kind: place, id: sell, side: SELL, quantity: 1,
     instrument: {exchange: MCX, symbol: CRUDEOIL, expiry: 2026-03-19, tick_size: 1, price_multiplier: 100}}
""")
    )
    assert main(["show", report.run_id, "--db", env.db_url, "--json"]) == 0
    pnl = json.loads(capsys.readouterr().out)["pnl"]
    assert pnl["realised"] == str(Decimal("12") * 1 * 100)
