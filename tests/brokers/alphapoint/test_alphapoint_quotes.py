"""AlphaPoint market data: GetLevel1 over real WebSockets to the loopback simulator, which answers from the
paper price path its fills use; the request/reply shape recorded off the socket against the official docs
(fixtures/getlevel1.json names its source)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from runner.accounts import Account, RateLimit
from runner.brokers.alphapoint.client import AlphaPointBroker, create
from runner.brokers.alphapoint.sim import MASTER_FILE, AlphaPointSim, default_master, start
from runner.brokers.alphapoint.wire import quote_from_level1
from runner.brokers.base import MarketData, Quote
from runner.brokers.instruments import InstrumentMaster
from runner.brokers.paper.price_paths import StepPath
from runner.brokers.ratelimit import RateLimiter
from runner.clock import VirtualClock
from runner.errors import Malformed, Retryable
from runner.model import Instrument, OrderRequest, OrderStatus, OrderType, Side

FIXTURES = Path(__file__).parent / "fixtures"
START = dt.datetime(2026, 3, 2, 4, 0, tzinfo=dt.UTC)  # 09:30 IST, a Monday
RELIANCE = Instrument("NSE", "RELIANCE")
INFY = Instrument("NSE", "INFY")
NIFTY_FUT = Instrument("NFO", "NIFTY", expiry=dt.date(2026, 12, 29))
RECEIVED = dt.datetime(2026, 3, 2, 4, 0, 5, tzinfo=dt.UTC)


def fixture(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text(), parse_float=Decimal)
    return data


def ms(value: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(value / 1000, dt.UTC)


# -- pure translation ---------------------------------------------------------------------------------


def test_docs_reply_translates_exactly() -> None:
    doc = fixture("getlevel1.json")["reply"]
    q = quote_from_level1(doc, RELIANCE, 1, received_at=RECEIVED)
    assert q == Quote(
        RELIANCE, Decimal(29000), RECEIVED, bid=Decimal(28700), ask=Decimal(29000),
        traded_at=ms(1679466290437),
    )
    assert q.at.tzinfo is not None and q.at.utcoffset() == dt.timedelta(0)


def test_liberal_reading_and_nothing_made_up() -> None:
    # Key case does not matter (one docs table spells LastTradedPX); TimeStamp as a string of ms.
    q = quote_from_level1(
        {"instrumentid": 9, "LastTradedPX": "1000.05", "BestBid": 0, "BestOffer": 0, "TimeStamp": "1000"},
        RELIANCE,
        9,
        received_at=RECEIVED,
    )
    assert q == Quote(RELIANCE, Decimal("1000.05"), RECEIVED)  # a TimeStamp is the snapshot's, not a trade's
    # No trade yet but a book: no last price, bid/ask at the snapshot's time.
    q = quote_from_level1(
        {"InstrumentId": 9, "LastTradedPx": 0, "BestBid": 999, "BestOffer": 1001, "TimeStamp": 5000},
        RELIANCE,
        9,
        received_at=RECEIVED,
    )
    assert q == Quote(RELIANCE, None, RECEIVED, bid=Decimal(999), ask=Decimal(1001))
    # Nothing priced: absent, never a 0 price; no time given: receipt time.
    assert (
        quote_from_level1({"InstrumentId": 9, "LastTradedPx": 0}, RELIANCE, 9, received_at=RECEIVED) is None
    )
    assert quote_from_level1(None, RELIANCE, 9, received_at=RECEIVED) is None
    q = quote_from_level1({"LastTradedPx": 7}, RELIANCE, 9, received_at=RECEIVED)
    assert q is not None and q.at == RECEIVED
    with pytest.raises(Malformed):  # another instrument's book must never price this one
        quote_from_level1({"InstrumentId": 11, "LastTradedPx": 7}, RELIANCE, 9, received_at=RECEIVED)
    with pytest.raises(Malformed):
        quote_from_level1([1, 2], RELIANCE, 9, received_at=RECEIVED)


# -- against the simulator ----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def creds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AP_USER", "trader")
    monkeypatch.setenv("AP_PASS", "trader-pass")


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(START)


@pytest.fixture
def prices() -> StepPath:
    p = StepPath()
    p.set(RELIANCE, Decimal(1000), 0)
    p.set(INFY, Decimal("1500.35"), 0)
    p.set(NIFTY_FUT, Decimal(24500), 0)
    return p


def account(url: str, **options: Any) -> Account:
    return Account(
        name="ap",
        broker="alphapoint",
        endpoints={"ws": url},
        credentials={"username": {"env": "AP_USER"}, "password": {"env": "AP_PASS"}},
        instruments=str(MASTER_FILE),
        timeout_seconds=2.0,
        options=options,
        rate_limit=RateLimit(orders_per_second=1000, burst=1000),
    )


@pytest.fixture
async def wired(
    clock: VirtualClock, prices: StepPath
) -> AsyncIterator[tuple[AlphaPointSim, AlphaPointBroker]]:
    async with start(clock=clock.now, prices=prices) as sim:
        broker = create(account(sim.url), clock=clock)
        yield sim, broker
        await broker.close()


def recorded(sim: AlphaPointSim, name: str) -> list[dict[str, Any]]:
    return [p for n, p in sim.received if n == name]


async def test_recorded_getlevel1_request_and_reply_shape(
    wired: tuple[AlphaPointSim, AlphaPointBroker],
) -> None:
    sim, broker = wired
    assert isinstance(broker, MarketData)
    await broker.quotes([RELIANCE])
    doc = fixture("getlevel1.json")
    [body] = recorded(sim, "GetLevel1")
    assert sorted(body) == sorted(doc["request"]), doc["source"]
    assert body == {"OMSId": 1, "InstrumentId": 9}  # RELIANCE is InstrumentId 9 in the shipped master
    # The simulator's reply carries exactly the documented fields, spelt as documented.
    reply = sim.exchange.level1(1, {"instrumentid": 9})
    assert sorted(reply) == sorted(doc["reply"])
    assert isinstance(reply["TimeStamp"], str) and isinstance(reply["LastTradeTime"], int)
    assert all(type(v) is not float for v in reply.values())


async def test_quotes_agree_with_fills_and_follow_the_path(
    wired: tuple[AlphaPointSim, AlphaPointBroker], clock: VirtualClock, prices: StepPath
) -> None:
    sim, broker = wired
    quotes = await broker.quotes([RELIANCE, INFY, NIFTY_FUT, RELIANCE])
    assert set(quotes) == {RELIANCE.key, INFY.key, NIFTY_FUT.key}
    assert len(recorded(sim, "GetLevel1")) == 3  # one call per distinct instrument
    r = quotes[RELIANCE.key]
    assert (r.instrument, r.ltp, r.bid, r.ask, r.at) == (
        RELIANCE,
        Decimal(1000),
        Decimal(1000),
        Decimal(1000),
        START,
    )
    assert quotes[INFY.key].ltp == Decimal("1500.35")
    await broker.place(OrderRequest("rn-q-buy", RELIANCE, Side.BUY, 2))
    clock.advance(1)
    bought = await broker.get_order("rn-q-buy")
    assert bought is not None and bought.status is OrderStatus.FILLED
    assert bought.average_price == r.ltp  # the quote is the price the simulator fills at
    later = START + dt.timedelta(seconds=30)
    prices.set(RELIANCE, Decimal("1012.5"), later)
    clock.advance(30)
    assert await broker.ltp(RELIANCE) == Decimal("1012.5")
    q = (await broker.quotes([RELIANCE]))[RELIANCE.key]
    assert q.traded_at == later + dt.timedelta(seconds=1)  # the path's 1 s bucket: the last trade's own time
    # A buy limit at the quoted offer is marketable; a sell at it too (the path has no spread).
    placed = await broker.place(
        OrderRequest("rn-q-lim", RELIANCE, Side.SELL, 2, OrderType.LIMIT, price=q.ask)
    )
    clock.advance(1)
    sold = await broker.get_order("rn-q-lim")
    assert placed.broker_order_id and sold is not None and sold.status is OrderStatus.FILLED


async def test_unknown_instruments_are_absent(clock: VirtualClock, prices: StepPath) -> None:
    # The client's master knows INFY (InstrumentId 11); the OMS does not: "Resource Not Found" -> absent.
    oms_master = InstrumentMaster(
        (row for row in default_master() if row.instrument.key != INFY.key), broker="alphapoint"
    )
    async with start(clock=clock.now, prices=prices, master=oms_master) as sim:
        broker = create(account(sim.url), clock=clock)
        try:
            got = await broker.quotes([RELIANCE, INFY, Instrument("NSE", "NOTLISTED")])
            assert set(got) == {RELIANCE.key}
            assert await broker.ltp(INFY) is None
            assert await broker.quotes([Instrument("NSE", "NOTLISTED")]) == {}
            assert [b["InstrumentId"] for b in recorded(sim, "GetLevel1")] == [9, 11, 11]
        finally:
            await broker.close()


async def test_reads_take_the_read_limiter_and_bounded_concurrency(
    clock: VirtualClock, prices: StepPath
) -> None:
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)
        clock.advance(seconds)
        await asyncio.sleep(0)

    limiter = RateLimiter(2, 1, monotonic=lambda: clock.now().timestamp(), sleep=fake_sleep)
    async with start(clock=clock.now, prices=prices) as sim:
        broker = create(account(sim.url, quote_concurrency=2), clock=clock, read_limiter=limiter)
        try:
            got = await broker.quotes([RELIANCE, INFY, NIFTY_FUT])
            assert len(got) == 3 and broker.quote_concurrency == 2
            assert waits == [0.5, 0.5]  # 3 reads at 2/s, burst 1: two waits of half a second
        finally:
            await broker.close()


async def test_a_failing_read_is_a_typed_error(clock: VirtualClock, prices: StepPath) -> None:
    async with start(faults="5xx=1.0,only=quotes", clock=clock.now, prices=prices) as sim:
        broker = create(account(sim.url), clock=clock)
        try:
            with pytest.raises(Retryable):
                await broker.quotes([RELIANCE, INFY])
            assert sim.fault_log and all(name == "GetLevel1" for name, _ in sim.fault_log)
        finally:
            await broker.close()


async def test_an_expired_session_logs_in_once_for_the_whole_batch(
    clock: VirtualClock, prices: StepPath
) -> None:
    async with start(faults="expire=60s", clock=clock.now, prices=prices, public_level1=False) as sim:
        broker = create(account(sim.url), clock=clock)
        try:
            assert len(await broker.quotes([RELIANCE, INFY, NIFTY_FUT])) == 3
            clock.advance(120)
            got = await broker.quotes([RELIANCE, INFY, NIFTY_FUT])
            assert set(got) == {RELIANCE.key, INFY.key, NIFTY_FUT.key}
            assert sim.logins == 2 and broker.session.connects == 2
            assert len(recorded(sim, "GetLevel1")) == 9  # 3, then 3 refused, then those 3 again
        finally:
            await broker.close()


async def test_an_expired_session_met_by_quotes_is_reported_as_the_order_paths_report_it(
    clock: VirtualClock, prices: StepPath, caplog: pytest.LogCaptureFixture
) -> None:
    """The quote reads log in again on their own (not through ``_call``): the expiry they meet is still
    said (warning) and alerted (``session_expired``), once for the batch."""
    from helpers.alerts_capture import Capture

    from runner.alerts.config import parse_config
    from runner.alerts.delivery import Dispatcher
    from runner.alerts.publish import install

    capture = Capture()
    dispatcher = Dispatcher(parse_config({"version": 1, "targets": {"ops": capture.url}})).start()
    previous = install(dispatcher)
    try:
        async with start(faults="expire=60s", clock=clock.now, prices=prices, public_level1=False) as sim:
            broker = create(account(sim.url), clock=clock)
            try:
                await broker.quotes([RELIANCE, INFY])
                clock.advance(120)
                caplog.clear()
                assert len(await broker.quotes([RELIANCE, INFY, NIFTY_FUT])) == 3 and sim.logins == 2
            finally:
                await broker.close()
        assert dispatcher.flush()
        alerts = [p["message"] for p in capture.posts if "session_expired" in p["title"]]
        assert len(alerts) == 1 and broker.account.name in alerts[0] and "expired" in alerts[0]
        said = [r for r in caplog.records if "session of" in r.getMessage() and "expired" in r.getMessage()]
        assert len(said) == 1
    finally:
        install(previous)
        dispatcher.close()
        capture.close()
