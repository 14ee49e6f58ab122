"""``runner positions`` figures (issue 14 §4) read through the adapters: paper, and the Kotak Neo and ODIN
simulators over loopback sockets. Where a broker does not report a figure it is computed from the day's
orders or shown n/a, never 0."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from helpers.positions import Unreported, sim_venue

from runner.brokers.base import Broker
from runner.brokers.instruments import InstrumentMaster
from runner.brokers.paper.matching import MatchingConfig, MatchingEngine
from runner.brokers.paper.price_paths import StepPath
from runner.brokers.registry import create_broker
from runner.clock import VirtualClock
from runner.ids import client_order_id
from runner.journal.db import make_engine
from runner.model import Instrument, OrderRequest, OrderStatus, Position, Product, Side
from runner.views.positions import day_figures, read_positions

MASTER = Path(__file__).parents[1] / "brokers" / "fixtures" / "cross" / "instruments.csv"
IST = ZoneInfo("Asia/Kolkata")
DAY = dt.date(2026, 3, 2)
FUT = Instrument("NFO", "NIFTY", dt.date(2026, 3, 30), None, None, 75)
OPEN, NOON = Decimal("24480"), Decimal("24520.5")


def _path() -> StepPath:
    path = StepPath()
    path.set(FUT, OPEN, dt.datetime.combine(DAY, dt.time(9, 0), tzinfo=IST))
    path.set(FUT, NOON, dt.datetime.combine(DAY, dt.time(12, 0), tzinfo=IST))
    return path


@contextlib.asynccontextmanager
async def _venue(kind: str, clock: VirtualClock, mp: pytest.MonkeyPatch, tmp: Path) -> AsyncIterator[Broker]:
    engine = MatchingEngine(_path(), MatchingConfig())
    if kind == "paper":
        from runner.accounts import Account

        account = Account.model_validate({"name": "p", "broker": "paper", "instruments": str(MASTER)})
        yield create_broker(
            account, engine=make_engine(f"sqlite:///{tmp / 'book.db'}"), clock=clock, prices=_path()
        )
        return
    async with sim_venue(kind, f"pos-{kind}", MASTER, engine, clock, mp) as broker:
        yield broker


async def _trade(broker: Broker, clock: VirtualClock) -> None:
    """BUY 150 at the open, SELL 75 at noon: 75 left long at 24480, 75 closed at 24520.5."""
    for n, (side, qty, when) in enumerate([(Side.BUY, 150, dt.time(9, 15)), (Side.SELL, 75, dt.time(12, 1))]):
        await clock.sleep_until(dt.datetime.combine(DAY, when, tzinfo=IST))
        cid = client_order_id("20260302-091500+0530-positions", "s", n, 0)
        order = await broker.place(OrderRequest(cid, FUT, side, qty))
        for _ in range(50):
            if order.status is OrderStatus.FILLED:
                break
            await clock.sleep(0.2)
            order = await broker.get_order(cid) or order
        assert order.status is OrderStatus.FILLED, order



@pytest.mark.parametrize("kind", ["paper", "kotak_neo", "odin"])
async def test_positions_and_pnl_through_the_adapter(
    kind: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    clock = VirtualClock(dt.datetime.combine(DAY, dt.time(9, 10), tzinfo=IST))
    async with _venue(kind, clock, monkeypatch, tmp_path) as broker:
        try:
            await broker.connect()
            await _trade(broker, clock)
            for b in (broker, Unreported(broker)):
                (line,), problems = await read_positions(b, kind)
                assert problems == []
                assert line.quantity == 75
                assert line.average_price == OPEN
                assert line.realised == (NOON - OPEN) * 75
                assert line.ltp == NOON
                assert line.unrealised == (NOON - OPEN) * 75
            assert line.computed == ("average_price", "realised")
        finally:
            await broker.close()


def test_unreported_figures_without_the_days_orders_are_na_never_0() -> None:
    from runner.views.positions import line_of

    p = Position(
        FUT,
        Product.NRML,
        75,
        average_price_reported=False,
        realized_pnl_reported=False,
    )
    line = line_of("a", p, None, NOON)
    assert (line.average_price, line.realised, line.unrealised) == (None, None, None)
    # a carried position (the day's orders explain only part of it): n/a, not a wrong average
    line = line_of("a", p, day_figures([]), NOON)
    assert line.average_price is None and line.realised is None


def test_odin_rows_without_average_or_realised_say_so() -> None:
    from runner.brokers.odin.wire import position_from_row

    master = InstrumentMaster.load(MASTER, broker="odin")
    row = {
        "exchange": "NSE_FO",
        "token": "35001",
        "symbol": "NIFTY26MARFUT",
        "product_type": "INTRADAY",
        "buy_quantity": 150,
        "sell_quantity": 75,
        "net_quantity": 75,
    }
    p = position_from_row(row, master)
    assert not p.average_price_reported and not p.realized_pnl_reported


def test_cli_positions_json_and_unknown_account(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from runner.cli import main

    accounts = tmp_path / "accounts.yaml"
    accounts.write_text("accounts:\n  paper1: {broker: paper}\n")
    db = f"sqlite:///{tmp_path / 'runner.db'}"
    assert main(["positions", "--accounts", str(accounts), "--db", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"positions": [], "errors": {}, "unreadable": {}}
    assert main(["positions", "--accounts", str(accounts), "--db", db]) == 0
    assert "no positions" in capsys.readouterr().out
    assert main(["positions", "--accounts", str(accounts), "--account", "nope", "--db", db]) == 2
