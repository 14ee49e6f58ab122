"""Kotak Neo market data: the quotes endpoint through the adapter to its loopback simulator over real
sockets (batching, the read bucket, absent instruments, quotes agreeing with fills), and the request /
reply shape recorded from Kotak's official Trade API docs.

Source of the recorded shapes: Kotak Securities Trade API documentation, "Quotes" (GET
``<Base URL>/script-details/1.0/quotes/neosymbol/<query>[,<query>][/<filter_name>]``, header
``Authorization: <plain token>``, reply example with ``exchange_token``/``lstup_time``/``ltp``/``depth``),
and the official SDK github.com/Kotak-Neo/Kotak-neo-api-v2 ``neo_api_client/api/quotes_neo_symbol_api.py``
(neosymbols joined by ``,`` as ``{exchange_segment}|{instrument_token}``) and ``neo_api_client/settings.py``
(``quotes_neo_symbol_napi``: ``.../quotes/1.0/quotes/neosymbol/{neo_symbols}/{quote_type}``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from runner import errors
from runner.brokers.base import MarketData, Quote
from runner.brokers.faults import FaultPlan
from runner.brokers.instruments import InstrumentMaster, MasterRow
from runner.brokers.kotak_neo.client import KotakNeo, create
from runner.brokers.kotak_neo.quotes_wire import PATH_QUOTES, parse_quote, quote_rows_of, quotes_path
from runner.brokers.kotak_neo.sim import KotakNeoSim, account_for, start
from runner.brokers.paper.matching import MatchingConfig, MatchingEngine
from runner.brokers.paper.price_paths import StepPath
from runner.brokers.ratelimit import RateLimiter
from runner.clock import VirtualClock
from runner.model import Instrument, OrderRequest, OrderStatus, OrderType, Product, Side
from runner.wirejson import loads

FIX = Path(__file__).parent / "fixtures"
CSV = str(FIX / "instruments.csv")
IST = dt.timezone(dt.timedelta(hours=5, minutes=30))
START = dt.datetime(2026, 3, 2, 10, 0, tzinfo=IST)


def _master(n_extra: int = 0) -> InstrumentMaster:
    base = InstrumentMaster.load(CSV, broker="kotak_neo")
    rows = list(base)
    for i in range(n_extra):
        inst = Instrument("NSE", f"STK{i}", lot_size=1, tick_size=Decimal("0.05"))
        rows.append(MasterRow(inst, str(90000 + i), f"STK{i}-EQ"))
    return InstrumentMaster(rows, broker="kotak_neo")


MASTER = _master(120)
IDEA = MASTER.resolve(Instrument("NSE", "IDEA")).instrument
RELIANCE = MASTER.resolve(Instrument("NSE", "RELIANCE")).instrument
CE = next(r.instrument for r in MASTER if r.trading_symbol == "NIFTY26DEC24500CE")


class CountingLimiter(RateLimiter):
    def __init__(self) -> None:
        super().__init__(1000.0, 1000)
        self.keys: list[Any] = []

    async def acquire(self, key: Any = None) -> float:
        self.keys.append(key)
        return await super().acquire(key)


Connect = Callable[..., Awaitable[tuple[KotakNeoSim, KotakNeo]]]


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(START)


@pytest.fixture
def prices(clock: VirtualClock) -> StepPath:
    p = StepPath()
    for i, row in enumerate(MASTER):
        p.set(row.instrument, Decimal(100) + i, clock.now() - dt.timedelta(days=3))
    return p


@pytest.fixture
async def connect(clock: VirtualClock, prices: StepPath,
                  monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Connect]:
    stack: list[Any] = []
    brokers: list[KotakNeo] = []

    async def make(*, sim_master: InstrumentMaster = MASTER, slippage: int = 0,
                   read_limiter: RateLimiter | None = None) -> tuple[KotakNeoSim, KotakNeo]:
        cm = start(clock=clock, master=sim_master, retry_after="0.001",
                   engine=MatchingEngine(prices, MatchingConfig(slippage_ticks=slippage)))
        sim = await cm.__aenter__()
        stack.append(cm)
        acct, env = account_for(sim, "desk", orders_per_second=1000, burst=50)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        broker = create(acct, clock=clock, master=MASTER, read_limiter=read_limiter)
        brokers.append(broker)
        await broker.connect()
        return sim, broker

    yield make
    for b in brokers:
        await b.close()
    for cm in reversed(stack):
        await cm.__aexit__(None, None, None)


# --- recorded wire (pure) ------------------------------------------------------------------------------

# The docs' example reply, verbatim apart from the depth levels the docs elide with "...".
DOCS_REPLY = """[
    {
        "exchange_token": "SENSEX",
        "display_symbol": "SENSEX-IN",
        "exchange": "bse_cm",
        "lstup_time": "1757915078",
        "ltp": "81809.3400",
        "last_traded_quantity": "0",
        "total_buy": "0",
        "total_sell": "0",
        "last_volume": "0",
        "change": "-95.3600",
        "per_change": "-0.1200",
        "year_high": "0",
        "year_low": "0",
        "ohlc": {"open": "81925.5100", "high": "81998.5100", "low": "81779.8200", "close": "81904.7000"},
        "depth": {
            "buy": [{"price": "0", "quantity": "0", "orders": "0"}],
            "sell": [{"price": "0", "quantity": "0", "orders": "0"}]
        }
    }
]"""


def test_recorded_reply_shape_parses_exactly() -> None:
    rows = quote_rows_of(loads(DOCS_REPLY))
    quote = parse_quote(rows[0])
    assert quote is not None
    assert (quote.segment, quote.token) == ("bse_cm", "SENSEX")
    assert quote.ltp == Decimal("81809.3400") and isinstance(quote.ltp, Decimal)
    assert quote.at == dt.datetime(2025, 9, 15, 5, 44, 38, tzinfo=dt.UTC)  # lstup_time, unix seconds
    assert quote.bid is None and quote.ask is None  # "0" levels: no touch, never a price of 0


def test_recorded_request_path() -> None:
    # docs: nse_cm|Nifty 50,nse_cm|Nifty Bank/all -- segment|pSymbol, comma-joined, filter last
    assert quotes_path(["nse_cm|2885", "nse_fo|61304"], "all") == (
        "/script-details/1.0/quotes/neosymbol/nse_cm|2885,nse_fo|61304/all")
    with pytest.raises(ValueError):
        quotes_path([f"nse_cm|{i}" for i in range(51)])


def test_error_envelope_and_fault_raise_typed() -> None:
    with pytest.raises(errors.Rejected):
        quote_rows_of({"stat": "Not_Ok", "emsg": "Invalid instrument/code", "stCode": 1009})
    with pytest.raises(errors.BrokerError):
        quote_rows_of({"fault": {"code": 900901, "message": "Invalid Credentials"}})
    # liberal: a bare object and a data-wrapped array are read too
    assert len(quote_rows_of({"data": loads(DOCS_REPLY)})) == 1
    assert len(quote_rows_of(loads(DOCS_REPLY)[0])) == 1


# --- over the wire to the simulator ----------------------------------------------------------------------


async def test_quote_request_on_the_wire(connect: Connect) -> None:
    sim, broker = await connect()
    assert isinstance(broker, MarketData)
    got = await broker.quotes([IDEA, CE])
    method, path, headers = sim.seen[-1]
    assert method == "GET"
    assert path == f"{PATH_QUOTES}/nse_cm|14366,nse_fo|61304/all"  # `|` and `,` literal
    assert headers["authorization"] == broker.account.secret("access_token").reveal()
    assert "sid" not in headers and "auth" not in headers  # no session headers: the token alone
    assert set(got) == {IDEA.key, CE.key}


async def test_quotes_agree_with_the_price_path_and_fills(connect: Connect, clock: VirtualClock,
                                                          prices: StepPath) -> None:
    sim, broker = await connect(slippage=2)
    prices.set(IDEA, Decimal("9.37"), clock.now())
    quote = (await broker.quotes([IDEA]))[IDEA.key]
    assert isinstance(quote, Quote)
    assert quote.ltp == Decimal("9.37") == await broker.ltp(IDEA)
    assert quote.bid == Decimal("9.35") and quote.ask == Decimal("9.39")  # ± 2 ticks of 0.01: the fills
    assert quote.at == clock.now().astimezone(dt.UTC).replace(microsecond=0)
    assert quote.at.tzinfo is dt.UTC
    order = await broker.place(OrderRequest("q-buy-1", IDEA, Side.BUY, 1, OrderType.MARKET,
                                            product=Product.MIS))
    fills = sim.engine.fills(sim.users[broker.account.options["ucc"]].ucc, clock.now())
    assert order.status in (OrderStatus.FILLED, OrderStatus.OPEN, OrderStatus.PENDING_NEW)
    assert [f.price for f in fills] == [quote.ask]


async def test_batches_of_fifty_through_the_read_bucket(connect: Connect) -> None:
    limiter = CountingLimiter()
    sim, broker = await connect(read_limiter=limiter)
    every = [r.instrument for r in MASTER]
    got = await broker.quotes(every)
    assert len(got) == len(every)
    assert [len(c) for c in sim.quote_calls] == [50, 50, len(every) - 100]
    assert limiter.keys == [(broker.account.name, "quotes")] * 3
    assert all(isinstance(q.ltp, Decimal) for q in got.values())


async def test_absent_instruments_are_missing_not_made_up(connect: Connect) -> None:
    sim_master = InstrumentMaster([r for r in MASTER if r.instrument.key != RELIANCE.key], broker="kotak_neo")
    sim, broker = await connect(sim_master=sim_master)
    unknown = Instrument("NSE", "NOSUCH")
    got = await broker.quotes([IDEA, RELIANCE, unknown])
    assert set(got) == {IDEA.key}  # RELIANCE: not quoted by the venue; NOSUCH: not in our master
    assert await broker.ltp(unknown) is None
    assert sim.quote_calls[-1] == ["nse_cm|14366", "nse_cm|2885"]
    with pytest.raises(errors.Rejected):  # the venue quotes none of them: its 1009 error, typed
        await broker.quotes([RELIANCE])


async def test_rate_limited_quotes_raise_typed(connect: Connect) -> None:
    sim, broker = await connect()
    sim.faults = FaultPlan.parse("429=1.0,only=quotes")
    with pytest.raises(errors.RateLimited):
        await broker.quotes([IDEA])
