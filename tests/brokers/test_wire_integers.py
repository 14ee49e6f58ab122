"""Whole numbers on the wire, adapter by adapter: a missing, fractional or non-numeric quantity is
:class:`runner.errors.Malformed` naming the field (never "0 filled", never truncated); a position row
that cannot be read is reported in ``Positions.unreadable`` while the others are read, and a square-off
closes the readable ones and ends NOT FLAT naming the rest."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from helpers.engine import RELIANCE, make_env, playbook
from helpers.faulty_broker import Faulty

from runner.brokers.alphapoint import wire as ap
from runner.brokers.base import Positions, UnreadablePosition, read_positions, unreadable_positions
from runner.brokers.blitz import wire as blitz
from runner.brokers.kotak_neo import wire as kotak_neo
from runner.brokers.odin import wire as odin
from runner.errors import Malformed
from runner.model import OrderRequest, Position, Product, Side

KOTAK_ROW = {"trdSym": "IDEA-EQ", "prc": "9.39", "qty": 1, "ordSt": "open", "trnsTp": "B", "prcTp": "L",
             "exSeg": "nse_cm", "tok": "14366", "nOrdNo": "1", "avgPrc": "0.00", "trgPrc": "0.00",
             "prod": "NRML", "fldQty": 0, "GuiOrdId": "rnx"}
KOTAK_POS = {"exSeg": "nse_cm", "trdSym": "IDEA-EQ", "tok": "14366", "prod": "CNC", "cfBuyQty": "0",
             "cfSellQty": "0", "flBuyQty": "225", "flSellQty": "0", "buyAmt": "2250", "sellAmt": "0",
             "precision": "2"}
BAD = [None, "0.5", Decimal("0.5"), "NaN", "Infinity", "abc", True]


@pytest.mark.parametrize("field", ["qty", "fldQty"])
@pytest.mark.parametrize("value", BAD)
def test_kotak_order_quantities(field: str, value: Any) -> None:
    row = {k: v for k, v in KOTAK_ROW.items() if k != field}
    if value is not None:
        row[field] = value
    with pytest.raises(Malformed) as info:
        kotak_neo.parse_order(row)
    assert info.value.field == field and info.value.broker == "kotak_neo"


@pytest.mark.parametrize("field", ["cfBuyQty", "cfSellQty", "flBuyQty", "flSellQty"])
def test_kotak_position_quantities_are_required(field: str) -> None:
    assert kotak_neo.parse_position(KOTAK_POS).quantity == 225
    with pytest.raises(Malformed, match=field):
        kotak_neo.parse_position({k: v for k, v in KOTAK_POS.items() if k != field})
    with pytest.raises(Malformed, match=field):
        kotak_neo.parse_position({**KOTAK_POS, field: "12.5"})


def test_kotak_precision_is_optional_with_an_explicit_default() -> None:
    row = {k: v for k, v in KOTAK_POS.items() if k != "precision"}
    assert kotak_neo.parse_position(row).average_price == Decimal("10.00")


def test_kotak_trade_fill_quantity_is_required() -> None:
    with pytest.raises(Malformed, match="fldQty"):
        kotak_neo.parse_fill({"trnsTp": "B", "exSeg": "nse_cm", "trdSym": "IDEA-EQ", "avgPrc": "9"})


@pytest.mark.parametrize("value", BAD)
def test_blitz_filled_quantity(value: Any) -> None:
    row = {"blitzOrderId": 1, "orderType": "Limit", "orderSide": "Buy", "orderStatus": "New",
           "orderQuantity": 5, "orderPrice": "10", "cumulativeQuantity": value}
    with pytest.raises(Malformed, match="cumulativeQuantity"):
        blitz.order_from_row(row, RELIANCE)


def test_blitz_garbage_timestamp_is_no_time_not_a_failed_read() -> None:
    assert blitz.epoch_ms("2026-03-02T10:00:00") is None and blitz.epoch_ms(None) is None


@pytest.mark.parametrize("value", BAD)
def test_blitz_net_position(value: Any) -> None:
    row = {"instrumentId": 1, "netPosition": value, "longPosition": 0, "shortPosition": 0}
    with pytest.raises(Malformed, match="netPosition"):
        blitz.position_from_row(row, RELIANCE)


@pytest.mark.parametrize("value", BAD)
def test_odin_traded_quantity(value: Any) -> None:
    import datetime as dt

    row = {"exchange": "NSE_EQ", "total_quantity": 5, "traded_quantity": value, "status": "PENDING",
           "order_type": "RL", "transaction_type": "BUY", "order_id": "1"}
    with pytest.raises(Malformed, match="traded_quantity"):
        odin.order_from_row(row, client_order_id="rnx", master=None, tz=dt.UTC)


def test_odin_position_without_a_net_needs_buy_and_sell_but_not_carry_forward() -> None:
    with pytest.raises(Malformed, match="sell_quantity"):
        odin.position_from_row({"exchange": "NSE_EQ", "symbol": "IDEA", "buy_quantity": 5}, None)
    pos = odin.position_from_row({"exchange": "NSE_EQ", "symbol": "IDEA", "buy_quantity": 5,
                                  "sell_quantity": "2"}, None)
    assert pos.quantity == 3
    assert odin.position_from_row({"exchange": "NSE_EQ", "symbol": "IDEA", "net_quantity": "-4"},
                                  None).quantity == -4
    with pytest.raises(Malformed, match="net_quantity"):
        odin.position_from_row({"exchange": "NSE_EQ", "symbol": "IDEA", "net_quantity": "0.25"}, None)


def test_odin_leg_number_defaults_to_one_only_when_absent() -> None:
    assert odin.leg_number({}) == 1 and odin.leg_number({"leg_indicator": "2"}) == 2
    with pytest.raises(Malformed):
        odin.leg_number({"leg_indicator": "1.5"})


@pytest.mark.parametrize("field", ["QuantityExecuted", "Quantity", "OrigQuantity"])
def test_alphapoint_fractional_order_quantity_is_malformed(field: str) -> None:
    record = {"Side": "Buy", "OrderId": 1, "Price": Decimal(1), "Quantity": Decimal(2), "Instrument": 1,
              "OrderType": "Limit", "ClientOrderId": 0, "OrderState": "Working", "OrigQuantity": Decimal(3),
              "QuantityExecuted": Decimal(1), field: Decimal("0.5")}
    with pytest.raises(Malformed, match=field):
        ap.order_from_wire(record, instrument_of=lambda _i: RELIANCE, client_id_of=lambda _n: "rnx",
                           product_of=lambda _c: Product.MIS)


def test_alphapoint_trade_replay_sets_a_fractional_instrument_aside() -> None:
    trades = [{"InstrumentId": 1, "Side": "Buy", "Quantity": 2, "Price": 10, "TradeId": 1},
              {"InstrumentId": 2, "Side": "Buy", "Quantity": "0.5", "Price": 10, "TradeId": 2}]
    bad: dict[int, str] = {}
    replayed = ap.replay_trades(trades, bad)
    assert set(replayed) == {1} and "Quantity" in bad[2]
    with pytest.raises(Malformed):
        ap.replay_trades(trades)  # without a place to report it, nothing is silently dropped


def test_read_positions_keeps_the_good_rows_and_names_the_bad() -> None:
    rows = [KOTAK_POS, {**KOTAK_POS, "trdSym": "FRAC-EQ", "flBuyQty": "0.5"}]
    got = read_positions(rows, kotak_neo.parse_position, lambda r: str(r["trdSym"]))
    assert [p.quantity for p in got] == [225]
    (bad,) = unreadable_positions(got)
    assert bad.instrument == "FRAC-EQ" and "flBuyQty" in bad.reason
    assert unreadable_positions([]) == ()


class FractionalElsewhere(Faulty):
    """The paper broker, plus one instrument it reports but cannot read (a fractional balance)."""

    async def positions(self) -> Positions:
        good = await self.inner.positions()
        why = "Amount=Decimal('0.5'): not a whole number"
        return Positions(good, [UnreadablePosition("CRYPTO:BTCUSD", why)])


async def test_square_off_closes_the_readable_and_fails_naming_the_unreadable(tmp_path: Any) -> None:
    env = make_env(tmp_path)
    book = env.broker()
    await book.connect()
    await book.place(OrderRequest("seed", RELIANCE, Side.BUY, 10, product=Product.MIS))
    env.clock.advance(1)
    report = await env.run(playbook("steps:\n  - {kind: square_off, id: sq, filter: {}}\n"),
                           broker=FractionalElsewhere(env.broker()))
    assert env.steps(report) == {"sq": "failed"}
    message = report.steps[0].message
    assert "NOT FLAT" in message and "CRYPTO:BTCUSD" in message and "not a whole number" in message
    positions: list[Position] = list(await env.broker().positions())
    assert all(p.quantity == 0 for p in positions)  # the readable one was still closed
