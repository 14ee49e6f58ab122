"""Matching-engine specifics beyond the Broker contract: order types, slices, races, expiry, P&L."""

from __future__ import annotations

import contextlib
import datetime as dt
from decimal import Decimal

import pytest

from runner.brokers.paper.book import RejectCode, money
from runner.brokers.paper.matching import MatchingConfig, MatchingEngine
from runner.brokers.paper.price_paths import RandomWalk, StepPath, second_of
from runner.errors import NotFound, NotModifiable, Rejected
from runner.model import (
    Instrument,
    Modification,
    MultilegRequest,
    OrderRequest,
    OrderStatus,
    OrderType,
    Product,
    Side,
    Validity,
    check_transition,
)

S = OrderStatus
T0 = dt.datetime(2026, 3, 2, 4, 30, tzinfo=dt.UTC)  # 10:00 IST
REL = Instrument("NSE", "RELIANCE")
FUT = Instrument("NFO", "NIFTY", dt.date(2026, 3, 26), lot_size=75, freeze_quantity=1800)
A = "ACC"


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def engine(**config: object) -> tuple[MatchingEngine, StepPath]:
    prices = StepPath(RandomWalk("t"))
    prices.set(REL, Decimal(1000), T0)
    prices.set(FUT, Decimal(24500), T0)
    return MatchingEngine(prices, MatchingConfig(**config)), prices  # type: ignore[arg-type]


def req(cid: str, side: Side = Side.BUY, qty: int = 1, otype: OrderType = OrderType.MARKET,
        price: str | None = None, trigger: str | None = None, inst: Instrument = REL,
        **kw: object) -> OrderRequest:
    return OrderRequest(cid, inst, side, qty, otype, price=Decimal(price) if price else None,
                        trigger_price=Decimal(trigger) if trigger else None, **kw)  # type: ignore[arg-type]


def test_market_order_acks_open_then_fills_on_the_next_pass() -> None:
    eng, _ = engine()
    ack = eng.place(A, req("c1", qty=3), T0)
    assert ack.status is S.OPEN and ack.broker_order_id == "100000000001"
    order = eng.find(A, "c1", T0)
    assert order is not None and order.status is S.FILLED and order.average_price == Decimal(1000)
    [fill] = eng.fills(A, T0)
    assert (fill.quantity, fill.price, fill.trade_id) == (3, Decimal(1000), "100000000001-1")


def test_slippage_moves_market_fills_against_the_taker() -> None:
    eng, _ = engine(slippage_ticks=2)
    eng.place(A, req("b"), T0)
    eng.place(A, req("s", Side.SELL), T0)
    prices = {f.client_order_id: f.price for f in eng.fills(A, T0)}
    assert prices == {"b": Decimal("1000.10"), "s": Decimal("999.90")}


def test_marketable_limit_fills_at_market_resting_limit_at_its_price() -> None:
    eng, prices = engine()
    eng.place(A, req("agg", otype=OrderType.LIMIT, price="1005"), T0)
    eng.place(A, req("rest", otype=OrderType.LIMIT, price="995"), T0)
    eng.process(T0)
    prices.set(REL, Decimal("990.5"), at(5))
    eng.process(at(5))
    fills = {f.client_order_id: f for f in eng.fills(A, at(5))}
    assert fills["agg"].price == Decimal(1000)
    assert fills["rest"].price == Decimal(995) and fills["rest"].at == at(5)


def test_catch_up_after_a_clock_jump_fills_at_the_dip() -> None:
    eng, prices = engine()
    eng.place(A, req("l", otype=OrderType.LIMIT, price="980"), T0)
    eng.process(T0)
    prices.set(REL, Decimal(975), at(3600))
    prices.set(REL, Decimal(1010), at(3720))  # two minutes below the limit, then away
    order = eng.find(A, "l", at(5 * 3600))
    assert order is not None and order.status is S.FILLED
    [fill] = eng.fills(A, at(5 * 3600))
    assert at(3600) <= fill.at < at(3720) and fill.price == Decimal(980)


def test_partial_fills_slice_per_second_in_lots() -> None:
    eng, _ = engine(fill_slice=100)  # rounds down to one lot of 75
    eng.place(A, req("f", qty=225, inst=FUT), T0)
    seen = []
    for s in range(4):
        o = eng.find(A, "f", at(s))
        assert o is not None
        seen.append((o.status, o.filled_quantity))
    assert seen == [(S.PARTIALLY_FILLED, 75), (S.PARTIALLY_FILLED, 150), (S.FILLED, 225), (S.FILLED, 225)]


def test_ioc_cancels_the_remainder() -> None:
    eng, _ = engine(fill_slice=2)
    eng.place(A, req("ioc", qty=5, validity=Validity.IOC), T0)
    eng.place(A, req("miss", otype=OrderType.LIMIT, price="990", validity=Validity.IOC), T0)
    ioc, miss = eng.find(A, "ioc", at(3)), eng.find(A, "miss", at(3))
    assert ioc is not None and (ioc.status, ioc.filled_quantity) == (S.CANCELLED, 2)
    assert miss is not None and (miss.status, miss.filled_quantity) == (S.CANCELLED, 0)


def test_stop_limit_triggers_then_rests_as_limit() -> None:
    eng, prices = engine()
    eng.place(A, req("sl", Side.BUY, otype=OrderType.SL, price="1012", trigger="1010"), T0)
    eng.process(at(1))
    prices.set(REL, Decimal(1015), at(2))  # triggers; 1015 > 1012 so the limit does not fill yet
    o = eng.find(A, "sl", at(2))
    assert o is not None and o.status is S.OPEN
    prices.set(REL, Decimal(1011), at(3))
    o = eng.find(A, "sl", at(3))
    assert o is not None and o.status is S.FILLED and o.average_price == Decimal(1012)


@pytest.mark.parametrize(
    ("request_", "code"),
    [
        (req("band", otype=OrderType.LIMIT, price="1300"), RejectCode.PRICE_BAND),
        (req("tick", otype=OrderType.LIMIT, price="1000.03"), RejectCode.TICK_SIZE),
        (req("lot", qty=70, inst=FUT), RejectCode.LOT_SIZE),
        (req("frz", qty=1875, inst=FUT), RejectCode.FREEZE_QUANTITY),
        (req("trg", Side.BUY, otype=OrderType.SL_M, trigger="990"), RejectCode.TRIGGER),
        (req("trs", Side.SELL, otype=OrderType.SL, price="995", trigger="990"), RejectCode.TRIGGER),
    ],
)
def test_rejections_are_recorded_with_a_reason(request_: OrderRequest, code: RejectCode) -> None:
    eng, _ = engine()
    order = eng.place(A, request_, T0)
    assert order.status is S.REJECTED and order.reject_reason
    assert eng.reject_code(A, request_.client_order_id) is code
    assert eng.open_orders(A, at(1)) == []


def test_band_can_be_switched_off() -> None:
    eng, _ = engine(band_pct=None)
    assert eng.place(A, req("far", otype=OrderType.LIMIT, price="1300"), T0).status is S.OPEN


def test_duplicate_client_id_raises_and_creates_nothing() -> None:
    eng, _ = engine()
    eng.place(A, req("d"), T0)
    with pytest.raises(Rejected) as info:
        eng.place(A, req("d", Side.SELL), T0)
    assert info.value.code == "duplicate"
    assert len(eng.orders(A, T0)) == 1 and eng.book(A).next_seq == 2


def test_modify_rules() -> None:
    eng, _ = engine(fill_slice=2)
    o = eng.place(A, req("m", qty=6, otype=OrderType.LIMIT, price="1002"), T0)
    assert o.broker_order_id
    assert eng.get(A, o.broker_order_id, T0).filled_quantity == 2  # one slice this second
    with pytest.raises(Rejected) as info:
        eng.modify(A, o.broker_order_id, Modification(quantity=2), T0)
    assert info.value.code == "quantity"
    with pytest.raises(Rejected):
        eng.modify(A, o.broker_order_id, Modification(price=Decimal("1500")), T0)
    unchanged = eng.get(A, o.broker_order_id, T0)
    assert (unchanged.price, unchanged.quantity) == (Decimal(1002), 6)
    m = eng.modify(A, o.broker_order_id, Modification(quantity=4, order_type=OrderType.MARKET), T0)
    assert (m.quantity, m.order_type, m.price) == (4, OrderType.MARKET, None)
    done = eng.get(A, o.broker_order_id, at(3))
    assert (done.status, done.filled_quantity) == (S.FILLED, 4)
    with pytest.raises(NotModifiable):
        eng.modify(A, o.broker_order_id, Modification(price=Decimal(1)), at(3))
    with pytest.raises(NotFound):
        eng.modify(A, "1", Modification(price=Decimal(1)), at(3))


def test_cancel_is_pending_until_the_delay_and_can_lose_to_a_fill() -> None:
    eng, prices = engine(cancel_delay=5)
    keep = eng.place(A, req("keep", otype=OrderType.LIMIT, price="990"), T0)
    lose = eng.place(A, req("lose", otype=OrderType.LIMIT, price="995"), T0)
    assert keep.broker_order_id and lose.broker_order_id
    assert eng.cancel(A, keep.broker_order_id, at(1)).status is S.PENDING_CANCEL
    assert eng.cancel(A, lose.broker_order_id, at(1)).status is S.PENDING_CANCEL
    assert eng.cancel(A, lose.broker_order_id, at(1)).status is S.PENDING_CANCEL  # idempotent
    with pytest.raises(NotModifiable):
        eng.modify(A, keep.broker_order_id, Modification(price=Decimal(991)), at(2))
    prices.set(REL, Decimal("992"), at(3))  # crosses 995 only
    assert eng.get(A, lose.broker_order_id, at(4)).status is S.FILLED
    assert eng.get(A, keep.broker_order_id, at(5)).status is S.PENDING_CANCEL
    assert eng.get(A, keep.broker_order_id, at(6)).status is S.CANCELLED


def test_day_orders_expire_at_the_session_close() -> None:
    eng, _ = engine()
    eng.place(A, req("day", otype=OrderType.LIMIT, price="950"), T0)
    close = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.UTC)  # 15:30 IST
    before = eng.find(A, "day", close - dt.timedelta(seconds=1))
    assert before is not None and before.status is S.OPEN
    after = eng.find(A, "day", close)
    assert after is not None and after.status is S.EXPIRED
    late = eng.place(A, req("late", otype=OrderType.LIMIT, price="950"), close + dt.timedelta(hours=1))
    assert late.status is S.OPEN  # placed after the close: lives until tomorrow's


def test_positions_average_price_flip_and_realized_pnl() -> None:
    eng, prices = engine()
    eng.place(A, req("b1", qty=10), T0)
    prices.set(REL, Decimal(1010), at(1))
    eng.place(A, req("b2", qty=10), at(1))
    eng.process(at(1))
    [pos] = eng.positions(A, at(1))
    assert (pos.quantity, pos.average_price) == (20, Decimal(1005))
    prices.set(REL, Decimal(1020), at(2))
    eng.place(A, req("s1", Side.SELL, qty=30), at(2))
    eng.process(at(2))
    [pos] = eng.positions(A, at(2))
    assert (pos.quantity, pos.average_price, pos.realized_pnl) == (-10, Decimal(1020), Decimal(300))
    prices.set(REL, Decimal(1000), at(3))
    eng.place(A, req("b3", qty=10), at(3))
    [pos] = eng.positions(A, at(4))
    assert (pos.quantity, pos.average_price, pos.realized_pnl) == (0, Decimal(0), Decimal(500))
    assert (pos.day_buy_quantity, pos.day_sell_quantity) == (30, 30)
    eng.place(A, req("nrml", qty=1, product=Product.NRML), at(4))
    assert {p.product for p in eng.positions(A, at(5))} == {Product.MIS, Product.NRML}


def test_multileg_is_all_or_none() -> None:
    eng, _ = engine()
    ok = MultilegRequest("sp", (req("l1", inst=FUT, qty=75), req("l2", Side.SELL, inst=FUT, qty=75)))
    legs = eng.place_multileg(A, ok, T0)
    assert [o.status for o in legs] == [S.OPEN, S.OPEN]
    assert [o.client_order_id for o in eng.group(A, "sp", at(1))] == ["l1", "l2"]
    bad = MultilegRequest("sp2", (req("l3", inst=FUT, qty=75), req("l4", inst=FUT, qty=80)))
    legs = eng.place_multileg(A, bad, at(1))
    assert [o.status for o in legs] == [S.REJECTED, S.REJECTED]
    assert eng.reject_code(A, "l3") is RejectCode.MULTILEG and eng.reject_code(A, "l4") is RejectCode.LOT_SIZE
    dup_leg = MultilegRequest("sp3", (req("n1", inst=FUT, qty=75), req("l1", inst=FUT, qty=75)))
    with pytest.raises(Rejected):  # a leg reuses an existing client id: nothing is created
        eng.place_multileg(A, dup_leg, at(2))
    assert eng.find(A, "n1", at(2)) is None
    twice = MultilegRequest("sp4", (req("n2", inst=FUT, qty=75), req("n2", inst=FUT, qty=75)))
    with pytest.raises(Rejected):
        eng.place_multileg(A, twice, at(2))
    assert eng.find(A, "n2", at(2)) is None


def test_every_status_change_is_a_legal_transition() -> None:
    eng, prices = engine(fill_slice=1, cancel_delay=2)
    ids = []
    for i in range(30):
        side = Side.BUY if i % 2 else Side.SELL
        price = str(1000 + (i % 7) - 3)
        ids.append(eng.place(A, req(f"o{i}", side, qty=1 + i % 4, otype=OrderType.LIMIT, price=price), at(i)))
        prices.set(REL, Decimal(1000 + (i * 7) % 9 - 4), at(i))
        if i % 5 == 0 and ids[i // 2].broker_order_id:
            with contextlib.suppress(NotModifiable):
                eng.cancel(A, ids[i // 2].broker_order_id or "", at(i))
    history: dict[str, list[OrderStatus]] = {}
    for s in range(60):
        for o in eng.orders(A, at(s)):
            seen = history.setdefault(o.client_order_id, [])
            if not seen or seen[-1] is not o.status:
                if seen:
                    check_transition(seen[-1], o.status)
                seen.append(o.status)
    assert any(S.PARTIALLY_FILLED in h for h in history.values())
    assert any(h[-1] is S.CANCELLED for h in history.values())


def test_money_formatting() -> None:
    assert str(money(Decimal("100.50000"))) == "100.5"
    assert str(money(Decimal("1E+2"))) == "100"
    assert str(money(Decimal("1") / Decimal("3"))) == "0.3333"


def test_last_price_is_the_path() -> None:
    eng, prices = engine()
    assert eng.last_price(REL, T0) == prices.price(REL, second_of(T0)) == Decimal(1000)
