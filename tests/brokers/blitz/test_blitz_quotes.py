"""Blitz market data: the REST quote of the official SDK (POST ``{md-api}/marketfeed/quote``), through the
adapter to its loopback simulator over real sockets, and the recorded request/reply of the docs.

Sources: GitHub Quantxpress-Technologies/blitz-api-py, branch ``master``,
``blitzsdk/marketdata/api_client.py`` (``get_quote``/``get_ltp``: ``{"InstrumentIds": [...]}``) and
``blitzsdk/common/config.py`` (``MD_API_URL`` = ``<host>/md-api``); the reply fields from
``docs/blitzsdk/market-quotes.md`` at commit aa61675 (fixtures/sdk_docs_quote_*.json, copied verbatim)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Hashable
from decimal import Decimal

import pytest
from helpers.blitz import (
    IDEA,
    MASTER,
    NIFTY_CE,
    SIM_OPTIONS,
    TCS,
    account,
    broker,
    fixture,
)

from runner.brokers.base import MarketData, Quote
from runner.brokers.blitz.client import create
from runner.brokers.blitz.marketdata import quote_body, quote_time, quotes_from_reply
from runner.brokers.blitz.sim import Running, start
from runner.brokers.faults import FaultPlan
from runner.brokers.instruments import InstrumentMaster
from runner.brokers.ratelimit import RateLimiter
from runner.clock import VirtualClock
from runner.errors import RateLimited
from runner.model import Instrument, OrderRequest, OrderStatus, OrderType, Side

NIFTY_INDEX = Instrument("NSE", "NIFTY")
RECEIVED = dt.datetime(2026, 3, 2, 4, 30, tzinfo=dt.UTC)


# -- recorded wire ----------------------------------------------------------------------------------------


def test_request_body_is_the_documented_one() -> None:
    # docs/blitzsdk/market-quotes.md "Market Quote" curl -d body; api_client.py get_quote payload.
    assert quote_body([110010002000001]) == fixture("sdk_docs_quote_request.json")


def test_documented_quote_reply_reads_exactly() -> None:
    reply = fixture("sdk_docs_quote_response.json")
    got = quotes_from_reply(reply["data"], {110010002000001: [NIFTY_INDEX]}, RECEIVED)
    q = got[NIFTY_INDEX.key]
    assert q == Quote(
        NIFTY_INDEX,
        Decimal("18532.45"),
        RECEIVED,  # as of receipt: the reply is the current snapshot
        bid=Decimal("18532.00"),
        ask=Decimal("18532.90"),
        traded_at=dt.datetime(2026, 2, 4, 8, 30, tzinfo=dt.UTC),  # ltt 1770193800000 ms = 14:00 IST
    )
    assert all(isinstance(v, Decimal) for v in (q.ltp, q.bid, q.ask))


def test_documented_ltp_reply_reads_too_and_falls_back_to_receipt_time() -> None:
    reply = fixture("sdk_docs_ltp_response.json")  # {instrumentId, ltp}: no time, no depth
    tcs = Instrument("NSE", "RELIANCE")
    got = quotes_from_reply(reply["data"], {110010000002885: [tcs]}, RECEIVED)
    assert got == {tcs.key: Quote(tcs, Decimal("3120.60"), RECEIVED)}


def test_liberal_reading_and_nothing_made_up() -> None:
    a, b, c, d = (Instrument("NSE", s) for s in "ABCD")
    rows = [
        {"instrumentId": "1", "ltp": "10.5", "timestamp": "2026-03-02 10:00:05"},  # IST text, list shape
        {"InstrumentID": 2, "ltp": 0, "bidLevel": [{"price": 9.95, "qty": 1}], "askLevel": []},
        {"instrumentId": 3, "ltp": None, "bidLevel": [], "askLevel": []},  # nothing to say: absent
        {"instrumentId": 9, "ltp": 1},  # not asked for
    ]
    got = quotes_from_reply(rows, {1: [a], 2: [b], 3: [c], 4: [d]}, RECEIVED)
    assert set(got) == {a.key, b.key}
    assert got[a.key].at == RECEIVED and got[a.key].traded_at is None  # a timestamp is not a trade time
    assert quote_time("2026-03-02 10:00:05") == dt.datetime(2026, 3, 2, 4, 30, 5, tzinfo=dt.UTC)  # IST text
    assert got[b.key].ltp is None and got[b.key].bid == Decimal("9.95") and got[b.key].ask is None
    assert quote_time("1770193800000") == dt.datetime(2026, 2, 4, 8, 30, tzinfo=dt.UTC)
    assert quote_time("2026-02-04T08:30:00Z") == dt.datetime(2026, 2, 4, 8, 30, tzinfo=dt.UTC)
    assert quote_time("garbage") is None and quote_time(0) is None


# -- adapter <-> simulator over loopback --------------------------------------------------------------------


async def test_quotes_through_the_simulator_in_the_documented_shape(
    sim: Running, clock: VirtualClock
) -> None:
    b = broker(sim)
    assert isinstance(b, MarketData)
    got = await b.quotes([TCS, IDEA, NIFTY_CE])
    assert {k: q.ltp for k, q in got.items()} == {
        TCS.key: Decimal("4100"),
        IDEA.key: Decimal("11"),
        NIFTY_CE.key: Decimal("120"),
    }
    # the simulator's last-trade time is its (virtual) now; ``at`` is our receipt, aware UTC
    assert all(q.traded_at == clock.now().astimezone(dt.UTC) and q.at.tzinfo is dt.UTC for q in got.values())
    assert got[TCS.key].bid == got[TCS.key].ask == Decimal("4100")  # no slippage: fills at the LTP
    method, path, body = sim.sim.requests[-1]
    assert (method, path) == ("POST", "/md-api/marketfeed/quote")
    assert set(body) == set(fixture("sdk_docs_quote_request.json"))
    assert sorted(body["InstrumentIds"]) == [110010000011536, 110010000014366, 262090000243210]
    # The simulator's row carries every field the docs list, nothing renamed.
    doc_row = next(iter(fixture("sdk_docs_quote_response.json")["data"].values()))
    sim_row = sim.sim.quote_rows({"instrumentids": [110010000011536]}, full=True)["110010000011536"]
    assert set(sim_row) == set(doc_row)
    ltp_row = sim.sim.quote_rows({"instrumentids": [110010000011536]}, full=False)["110010000011536"]
    assert set(ltp_row) == set(next(iter(fixture("sdk_docs_ltp_response.json")["data"].values())))
    assert await b.ltp(TCS) == Decimal("4100")
    await b.close()


async def test_quotes_agree_with_fills_on_a_moving_path(clock: VirtualClock) -> None:
    opts = {**SIM_OPTIONS, "volatility_ppm": 20_000, "slippage_ticks": 2}
    async with start(clock=clock, options=opts) as sim:
        b = broker(sim)
        clock.advance(37)
        q = (await b.quotes([TCS]))[TCS.key]
        assert q.ltp is not None and q.ask == q.ltp + Decimal("0.10") and q.bid == q.ltp - Decimal("0.10")
        await b.place(OrderRequest("rnqfill1", TCS, Side.BUY, 1, OrderType.MARKET))
        order = await b.get_order("rnqfill1")
        assert order is not None and order.status is OrderStatus.FILLED
        assert order.average_price == q.ask  # a market buy fills where the quote said it would
        await b.close()


async def test_batches_unknown_instruments_and_the_read_limiter(sim: Running) -> None:
    keys: list[Hashable] = []

    class Counting(RateLimiter):
        async def acquire(self, key: Hashable = None) -> float:
            keys.append(key)
            return await super().acquire(key)

    b = broker(sim, quote_batch=2)
    b.read_limiter = Counting(1000, 10)
    stranger = Instrument("NSE", "NOSUCH")  # not in the master: absent, nothing made up
    got = await b.quotes([TCS, IDEA, TCS, NIFTY_CE, stranger])
    assert set(got) == {TCS.key, IDEA.key, NIFTY_CE.key}
    posts = [body for m, p, body in sim.sim.requests if p.endswith("/marketfeed/quote")]
    assert [len(body["InstrumentIds"]) for body in posts] == [2, 1]
    assert keys == [("blitz1", "market-data")] * 2
    assert await b.quotes([stranger]) == {} and await b.ltp(stranger) is None
    await b.close()


async def test_429_on_a_quote_penalizes_reads_and_expiry_logs_in_again(clock: VirtualClock) -> None:
    # Retry-After long enough that a slow machine cannot outlive the penalty before the assertion.
    slow = {**SIM_OPTIONS, "retry_after": "60"}
    async with start(FaultPlan.parse("429=1,only=quote"), clock=clock, options=slow) as sim:
        b = broker(sim)
        with pytest.raises(RateLimited):
            await b.quotes([TCS])
        assert b.read_limiter.blocked_for(("blitz1", "market-data")) > 0
        await b.close()
    async with start(FaultPlan.parse("expire=300s"), clock=clock, options=SIM_OPTIONS) as sim:
        b = broker(sim)
        await b.quotes([TCS])
        clock.advance(301)
        assert (await b.quotes([TCS]))[TCS.key].ltp == Decimal("4100")  # 401, one login, same read again
        assert sim.sim.logins == 2
        await b.close()


async def test_without_md_api_the_quote_goes_to_the_trading_host(sim: Running) -> None:
    # An account written before market data (endpoints auth + api only) still quotes from its own host.
    acct = account(sim)
    acct = acct.model_copy(update={"endpoints": {k: v for k, v in acct.endpoints.items() if k != "md_api"}})
    b = create(acct, master=InstrumentMaster.load(MASTER, broker="blitz"))
    assert b.md_url == sim.md_api_url
    assert (await b.quotes([IDEA]))[IDEA.key].ltp == Decimal("11")
    await b.close()
