"""ODIN market data over real sockets: the adapter's feed client against the simulator's WebSocket feed,
which quotes from the paper price path (so quotes agree with fills), plus the recorded feed wire format."""

from __future__ import annotations

import asyncio
import datetime as dt
import struct
import zlib
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from helpers.odin import IDEA, MASTER, T0

from runner.brokers.base import MarketData
from runner.brokers.instruments import InstrumentMaster, MasterRow
from runner.brokers.odin import feed_wire
from runner.brokers.odin.client import OdinBroker, create
from runner.brokers.odin.sim import OdinSim, start
from runner.brokers.paper.matching import MatchingConfig, MatchingEngine
from runner.brokers.paper.price_paths import RandomWalk, StepPath
from runner.clock import VirtualClock
from runner.errors import Unavailable
from runner.model import Instrument, OrderRequest, OrderStatus, OrderType, Side
from tests.brokers.odin.test_odin import FUT_NEAR

GHOST = Instrument("NSE", "GHOST")  # in the adapter's master, unknown to the feed
NOWHERE = Instrument("NSE", "NOWHERE")  # in no master at all


def broker_master() -> InstrumentMaster:
    m = InstrumentMaster(list(MASTER), broker="odin")
    m.add(MasterRow(GHOST, token="99999"))
    return m


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(T0)


@pytest.fixture
def path() -> StepPath:
    return StepPath(RandomWalk(seed=7))


@pytest.fixture
async def sim(clock: VirtualClock, path: StepPath) -> AsyncIterator[OdinSim]:
    engine = MatchingEngine(path, MatchingConfig(session_close=None))
    async with start(clock=clock, master=MASTER, engine=engine, feed_interval=0.01) as s:
        yield s


@pytest.fixture
async def broker(sim: OdinSim, clock: VirtualClock) -> AsyncIterator[OdinBroker]:
    b = create(sim.account("odin1", options={"feed_first_tick_seconds": 0.3}), master=broker_master(),
               clock=clock)
    await b.connect()
    yield b
    await b.close()


def sim_price(sim: OdinSim, inst: Instrument, clock: VirtualClock) -> Decimal:
    return sim.engine.last_price(MASTER.resolve(inst).instrument, clock.now())


async def test_quotes_come_from_the_feed_and_agree_with_the_price_path(
    sim: OdinSim, broker: OdinBroker, clock: VirtualClock
) -> None:
    assert isinstance(broker, MarketData)
    got = await broker.quotes([IDEA, FUT_NEAR, GHOST, NOWHERE])
    assert set(got) == {IDEA.key, FUT_NEAR.key}  # never a made-up price for GHOST / NOWHERE
    for inst in (IDEA, FUT_NEAR):
        q = got[inst.key]
        assert q.ltp == sim_price(sim, inst, clock)
        assert q.bid == q.ask == q.ltp  # one paper price: marketable on both sides at it
        assert q.at == clock.now().astimezone(dt.UTC)  # the feed's own last-trade time, aware UTC
        assert q.at.tzinfo is not None
    login, sub = sim.feed_requests[:2]
    assert login.startswith("63=FT3.0|64=101|65=74|") and login.endswith("|67=SIM1|68=sim-api-key|401=2")
    assert sub.startswith("63=FT3.0|64=206|65=84|") and "|49=1|200=0|" in sub and sub.endswith("|230=1")
    assert "1=1$7=14366|" in sub and "1=1$7=99999|" in sub
    # One subscription per instrument: a second read answers from the held ticks.
    assert await broker.ltp(IDEA) == sim_price(sim, IDEA, clock)
    assert len([r for r in sim.feed_requests if "|64=206|" in r]) == 1
    assert await broker.ltp(NOWHERE) is None


async def test_a_new_price_streams_in_and_fills_at_it(
    sim: OdinSim, broker: OdinBroker, clock: VirtualClock, path: StepPath
) -> None:
    row = MASTER.resolve(IDEA)
    path.set(row.instrument, Decimal("10.50"), clock.now())
    assert await broker.ltp(IDEA) == Decimal("10.50")
    clock.advance(5)
    path.set(row.instrument, Decimal("11.20"), clock.now())
    for _ in range(200):  # pushed every 10 ms by the sim
        if await broker.ltp(IDEA) == Decimal("11.20"):
            break
        await asyncio.sleep(0.01)
    q = (await broker.quotes([IDEA]))[IDEA.key]
    assert q.ltp == Decimal("11.20") and q.at == clock.now().astimezone(dt.UTC)
    assert q.ask is not None
    order = await broker.place(OrderRequest(client_order_id="qfill1", instrument=IDEA, side=Side.BUY,
                                            quantity=1, order_type=OrderType.LIMIT, price=q.ask))
    sim.engine.process(clock.now())
    back = await broker.get_order_by_broker_id(order.broker_order_id or "")
    assert back.status is OrderStatus.FILLED and back.average_price == q.ltp


async def test_a_dropped_feed_is_reopened_and_resubscribed(
    sim: OdinSim, broker: OdinBroker, clock: VirtualClock
) -> None:
    assert IDEA.key in await broker.quotes([IDEA])
    await sim.drop_feeds()
    for _ in range(100):
        if broker._feed is not None and not broker._feed.connected:
            break
        await asyncio.sleep(0.01)
    got = await broker.quotes([FUT_NEAR])
    assert FUT_NEAR.key in got
    assert broker._feed is not None and broker._feed.connects == 2
    resub = [r for r in sim.feed_requests if "|64=206|" in r][-1]
    assert "1=1$7=14366|" in resub  # the instruments already held are subscribed again
    assert (await broker.quotes([IDEA]))[IDEA.key].ltp == sim_price(sim, IDEA, clock)


async def test_no_feed_configured_means_no_quotes(sim: OdinSim, clock: VirtualClock) -> None:
    account = sim.account("odin2")
    account = account.model_copy(update={"endpoints": {"base_url": sim.url}})
    b = create(account, master=MASTER, clock=clock)
    try:
        assert await b.quotes([IDEA]) == {}
        assert await b.ltp(IDEA) is None
    finally:
        await b.close()


# -- recorded wire ----------------------------------------------------------------------------------------
# Source: github.com/SIPL-Dev/python-odinmarketfeedclient, odin_market_feed/MarketFeedClient.py:
# FragmentationHandler.fragment_data (send), _defragment_data/_defragment_inner_data/_get_message_length
# (receive), subscribe_touchline (request text), _response_received (native touchline offsets after "|50=").

AT = dt.datetime(2026, 3, 2, 14, 59, 22, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30)))


def test_request_frames_are_the_clients() -> None:
    text = feed_wire.touchline_request(["1_22", "1_2885"], AT)
    # subscribe_touchline(["1_22", "1_2885"], "1", False)
    assert text == "63=FT3.0|64=206|65=84|66=14:59:22|49=1|200=0|1=1$7=22|1=1$7=2885|230=1"
    assert feed_wire.touchline_request(["1_22"], AT, native=False, subscribe=False) == (
        "63=FT3.0|64=206|65=84|66=14:59:22|200=0|1=1$7=22|230=2")
    assert feed_wire.feed_login("PRAJYOT", "", AT) == "63=FT3.0|64=101|65=74|66=14:59:22|67=PRAJYOT|68="
    assert feed_wire.feed_login("U1", "k", AT) == "63=FT3.0|64=101|65=74|66=14:59:22|67=U1|68=k|401=2"
    frame = feed_wire.encode_request(text)
    compressed = zlib.compress(text.encode("ascii"), zlib.Z_DEFAULT_COMPRESSION)
    assert frame == bytes([5]) + str(len(compressed)).zfill(5).encode() + compressed
    assert feed_wire.FeedDecoder(inner=False).feed(frame) == [text.encode()]
    assert feed_wire.parse_request(text)[1] == ["1_22", "1_2885"]


def test_a_recorded_native_touchline_decodes() -> None:
    # Built field by field at the client's offsets (not with the codec under test).
    epoch = dt.datetime(1980, 1, 1)
    lut = int((dt.datetime(2026, 3, 2, 14, 59, 21) - epoch).total_seconds())
    ltt = int((dt.datetime(2026, 3, 2, 14, 59, 20) - epoch).total_seconds())
    fields = [1, 2885, lut, ltt, 250010, 40, 250000, 25, 250020, 249000, 251000, 248500, 0, 100, 249500, 0]
    msg = b"63=FT3.0|64=209|65=84|66=14:59:22|50=" + b"".join(
        struct.pack("<i" if i in (2, 3) else "<I", v) for i, v in enumerate(fields))
    hello = b"63=FT3.0|64=101|65=74|66=14:59:22|67=U1|"
    inner = b"".join(bytes([5]) + str(len(m)).zfill(5).encode() + m for m in (hello, msg))
    packet = zlib.compress(inner)
    data = b"\x00junk" + bytes([5]) + str(len(packet)).zfill(5).encode() + packet
    dec = feed_wire.FeedDecoder()
    assert dec.feed(data[:9]) == []  # a packet split across WebSocket messages
    messages = dec.feed(data[9:])
    assert messages == [hello, msg]
    assert feed_wire.parse_tick(hello) is None
    tick = feed_wire.parse_tick(msg)
    assert tick == feed_wire.Tick("1_2885", Decimal("2500.10"), Decimal("2500.00"), Decimal("2500.20"),
                             dt.datetime(2026, 3, 2, 9, 29, 20, tzinfo=dt.UTC))  # LTT, IST -> UTC


def test_a_plain_text_touchline_is_read_too() -> None:
    # The client's rendering of a touchline (tags 1, 7, 74, 73, 8, 2, 3, 5, 6, 399), and a zero = no price.
    text = b"63=FT3.0|64=209|1=2|7=35001|74=2026-03-02 145921|73=2026-03-02 145920|8=2450050|2=75|3=0|5=0|" \
           b"6=2450100|399=100|"
    tick = feed_wire.parse_tick(text)
    assert tick is not None and tick.token == "2_35001"
    assert (tick.ltp, tick.bid, tick.ask) == (Decimal("24500.50"), None, Decimal("24501.00"))
    assert tick.at == dt.datetime(2026, 3, 2, 9, 29, 20, tzinfo=dt.UTC)


async def test_a_refused_feed_login_gives_no_quotes_without_waiting_out_the_bound(
    sim: OdinSim, clock: VirtualClock
) -> None:
    account = sim.account("odin3", options={"feed_first_tick_seconds": 5.0})
    b = create(account, master=MASTER, clock=clock)
    b._feed_api_key = lambda: "wrong-key"  # type: ignore[method-assign]
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        try:
            got = await b.quotes([IDEA])
        except Unavailable:
            got = {}  # the socket closed under the subscribe itself: a typed error, equally fine
        assert got == {}
        assert loop.time() - started < 2.0  # the closed socket wakes the wait
        assert b._feed is not None and not b._feed.connected
    finally:
        await b.close()
