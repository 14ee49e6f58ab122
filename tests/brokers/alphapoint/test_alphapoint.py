"""AlphaPoint adapter against the loopback APEX simulator over real WebSockets (no mocks)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import pytest

from runner.accounts import Account, RateLimit
from runner.brokers.alphapoint.client import AlphaPointBroker, create
from runner.brokers.alphapoint.sim import MASTER_FILE, AlphaPointSim, start
from runner.brokers.alphapoint.sim_exchange import SimUser
from runner.brokers.faults import Fault, FaultPlan
from runner.brokers.paper.matching import MatchingConfig
from runner.brokers.paper.price_paths import StepPath
from runner.brokers.ratelimit import RateLimiter
from runner.clock import VirtualClock
from runner.errors import (
    AuthExpired,
    BrokerError,
    InstrumentUnknown,
    NotFound,
    OutcomeUnknown,
    RateLimited,
    Rejected,
    Unavailable,
)
from runner.ids import numeric_id
from runner.model import Instrument, Modification, OptionType, OrderRequest, OrderStatus, OrderType, Side

MASTER = str(MASTER_FILE)
START = dt.datetime(2026, 3, 2, 4, 0, tzinfo=dt.UTC)  # 09:30 IST, a Monday
RELIANCE = Instrument("NSE", "RELIANCE")
NIFTY_FUT = Instrument("NFO", "NIFTY", expiry=dt.date(2026, 12, 29))
NIFTY_CE = Instrument("NFO", "NIFTY", dt.date(2026, 12, 29), Decimal(24500), OptionType.CE)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(START)


@pytest.fixture
def prices() -> StepPath:
    p = StepPath()
    p.set(RELIANCE, Decimal(1000), 0)
    p.set(NIFTY_FUT, Decimal(24500), 0)
    p.set(NIFTY_CE, Decimal(100), 0)
    return p


@pytest.fixture(autouse=True)
def creds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AP_USER", "trader")
    monkeypatch.setenv("AP_PASS", "trader-pass")
    monkeypatch.setenv("AP_KEY", "28c68ac3fcfafc3d4e8d653fe57e5baf")
    monkeypatch.setenv("AP_SECRET", "apex-secret")
    monkeypatch.setenv("AP_UID", "96")


def account(url: str, *, api_key: bool = False, timeout: float = 2.0, **options: Any) -> Account:
    credentials = (
        {"api_key": {"env": "AP_KEY"}, "api_secret": {"env": "AP_SECRET"}, "user_id": {"env": "AP_UID"}}
        if api_key
        else {"username": {"env": "AP_USER"}, "password": {"env": "AP_PASS"}}
    )
    return Account(
        name="ap",
        broker="alphapoint",
        endpoints={"ws": url},
        credentials=credentials,
        instruments=MASTER,
        timeout_seconds=timeout,
        options=options,
        rate_limit=RateLimit(orders_per_second=1000, burst=1000),
    )


SimFactory = Callable[..., Any]


@pytest.fixture
async def sim_factory(clock: VirtualClock, prices: StepPath) -> AsyncIterator[SimFactory]:
    stack: list[Any] = []

    async def make(faults: str | None = None, **kwargs: Any) -> AlphaPointSim:
        kwargs.setdefault("clock", clock.now)
        kwargs.setdefault("prices", prices)
        cm = start(faults=faults, **kwargs)
        sim = await cm.__aenter__()
        stack.append(cm)
        return sim

    yield make
    for cm in reversed(stack):
        await cm.__aexit__(None, None, None)


@pytest.fixture
async def sim(sim_factory: SimFactory) -> AlphaPointSim:
    s: AlphaPointSim = await sim_factory()
    return s


@pytest.fixture
async def broker(sim: AlphaPointSim) -> AsyncIterator[AlphaPointBroker]:
    b = create(account(sim.url))
    yield b
    await b.close()


def limit(
    cid: str, qty: int = 5, price: str = "990", side: Side = Side.BUY, inst: Instrument = RELIANCE
) -> OrderRequest:
    return OrderRequest(cid, inst, side, qty, OrderType.LIMIT, price=Decimal(price))


def sent(sim: AlphaPointSim, name: str) -> list[dict[str, Any]]:
    return [p for n, p in sim.received if n == name]


async def test_place_lookup_cancel_lifecycle(sim: AlphaPointSim, broker: AlphaPointBroker) -> None:
    placed = await broker.place(limit("rn-life"))
    assert placed.status is OrderStatus.OPEN and placed.broker_order_id
    found = await broker.get_order("rn-life")
    assert found is not None and found.broker_order_id == placed.broker_order_id
    assert (found.quantity, found.price, found.instrument) == (5, Decimal(990), RELIANCE)
    assert [o.client_order_id for o in await broker.open_orders()] == ["rn-life"]
    assert (await broker.get_order_by_broker_id(placed.broker_order_id)).status is OrderStatus.OPEN
    cancelled = await broker.cancel(found)
    assert cancelled.status is OrderStatus.CANCELLED
    assert await broker.open_orders() == []
    assert [o.status for o in await broker.orders()] == [OrderStatus.CANCELLED]
    assert await broker.get_order("rn-never-sent") is None
    with pytest.raises(NotFound):
        await broker.get_order_by_broker_id("42")


async def test_market_fill_and_positions_from_balances_and_trades(
    sim: AlphaPointSim, broker: AlphaPointBroker, clock: VirtualClock
) -> None:
    await broker.place(OrderRequest("rn-buy", RELIANCE, Side.BUY, 3))
    clock.advance(1)
    bought = await broker.get_order("rn-buy")
    assert bought is not None and bought.status is OrderStatus.FILLED
    assert (bought.filled_quantity, bought.average_price) == (3, Decimal(1000))
    [pos] = await broker.positions()
    assert (pos.instrument, pos.quantity, pos.average_price, pos.day_buy_quantity) == (
        RELIANCE,
        3,
        Decimal(1000),
        3,
    )
    await broker.place(OrderRequest("rn-sell", RELIANCE, Side.SELL, 3))
    clock.advance(1)
    [pos] = await broker.positions()
    assert (pos.quantity, pos.day_sell_quantity) == (0, 3)


async def test_cancel_receipt_is_not_a_cancel(sim_factory: SimFactory, clock: VirtualClock) -> None:
    sim = await sim_factory(config=MatchingConfig(cancel_delay=5))
    broker = create(account(sim.url))
    try:
        placed = await broker.place(limit("rn-slow"))
        acked = await broker.cancel(placed)
        # CancelOrder said result:true, but the order is still Working at the OMS.
        assert acked.status is OrderStatus.PENDING_CANCEL
        still = await broker.get_order("rn-slow")
        assert still is not None and still.status is OrderStatus.OPEN and still.raw_status == "Working"
        clock.advance(5)
        done = await broker.get_order("rn-slow")
        assert done is not None and done.status is OrderStatus.CANCELLED
    finally:
        await broker.close()


async def test_modify_quantity_keeps_order_id_price_change_replaces(
    sim: AlphaPointSim, broker: AlphaPointBroker
) -> None:
    placed = await broker.place(limit("rn-mod", qty=10))
    smaller = await broker.modify(placed, Modification(quantity=6))
    assert sent(sim, "ModifyOrder") and smaller.broker_order_id == placed.broker_order_id
    assert (smaller.quantity, smaller.status) == (6, OrderStatus.OPEN)
    repriced = await broker.modify(smaller, Modification(price=Decimal("995")))
    [replace] = sent(sim, "CancelReplaceOrder")
    assert replace["OrderIdToReplace"] == int(placed.broker_order_id or 0)
    assert replace["ClientOrdId"] == numeric_id("rn-mod")
    assert repriced.broker_order_id != placed.broker_order_id
    assert (repriced.price, repriced.quantity, repriced.client_order_id) == (Decimal(995), 6, "rn-mod")
    latest = await broker.get_order("rn-mod")  # the live incarnation wins the lookup
    assert latest is not None and latest.broker_order_id == repriced.broker_order_id
    by_id = {o.broker_order_id: o.status for o in await broker.orders()}
    assert by_id == {
        placed.broker_order_id: OrderStatus.CANCELLED,
        repriced.broker_order_id: OrderStatus.OPEN,
    }


async def test_cancel_by_account_and_client_order_id(sim: AlphaPointSim, broker: AlphaPointBroker) -> None:
    placed = await broker.place(limit("rn-cid"))
    result = await broker.cancel(placed.evolve(broker_order_id=None))
    [body] = sent(sim, "CancelOrder")
    assert body == {"OMSId": 1, "AccountId": 9, "ClientOrderId": numeric_id("rn-cid")}
    assert result.status is OrderStatus.CANCELLED


async def test_seed_002_spelling_cloderid_is_accepted(sim: AlphaPointSim, broker: AlphaPointBroker) -> None:
    await broker.place(limit("rn-cl"))
    await broker.session.call(
        "CancelOrder", {"OMSId": 1, "AccountId": 9, "ClOrderId": numeric_id("rn-cl")}, mutating=True
    )
    found = await broker.get_order("rn-cl")
    assert found is not None and found.status is OrderStatus.CANCELLED


async def test_unknown_instrument_fails_before_anything_is_sent(
    sim: AlphaPointSim, broker: AlphaPointBroker
) -> None:
    with pytest.raises(InstrumentUnknown):
        await broker.place(OrderRequest("rn-x", Instrument("NSE", "NOSUCH"), Side.BUY, 1))
    assert sim.received == []  # not even a login


async def test_broker_rejections_map_to_rejected(sim: AlphaPointSim, broker: AlphaPointBroker) -> None:
    with pytest.raises(Rejected) as lot:
        await broker.place(OrderRequest("rn-lot", NIFTY_FUT, Side.BUY, 10))
    assert "lot size" in str(lot.value)
    rejected = await broker.get_order("rn-lot")  # the OMS keeps the rejected order
    assert rejected is not None and rejected.status is OrderStatus.REJECTED and rejected.reject_reason
    await broker.place(limit("rn-dup"))
    with pytest.raises(Rejected) as dup:  # APEX >= 4.2: ClientOrderId of a working order is refused
        await broker.place(limit("rn-dup"))
    assert dup.value.code == "101" and "Invalid_ClientOrderId" in str(dup.value)
    with pytest.raises(NotFound):
        await broker.cancel((await broker.place(limit("rn-c2"))).evolve(broker_order_id="77"))


async def test_receipt_without_an_order_event_is_pending_new(sim_factory: SimFactory) -> None:
    # SendOrder's "Accepted" is the OMS's receipt: unless an OrderStateEvent came first, the order is not
    # yet known to be working at the venue.
    sim = await sim_factory(events_after_reply=True)
    broker = create(account(sim.url))
    try:
        placed = await broker.place(limit("rn-rcpt"))
        assert placed.status is OrderStatus.PENDING_NEW and placed.raw_status == "Accepted"
        assert placed.broker_order_id and placed.client_order_id == "rn-rcpt"
        assert (placed.quantity, placed.price, placed.instrument) == (5, Decimal(990), RELIANCE)
        back = await broker.get_order_by_broker_id(placed.broker_order_id)
        assert back.status is OrderStatus.OPEN
        cancelled = await broker.cancel(placed)  # PENDING_NEW -> PENDING_CANCEL/CANCELLED is legal
        assert cancelled.status in (OrderStatus.PENDING_CANCEL, OrderStatus.CANCELLED)
    finally:
        await broker.close()


async def test_api_key_authentication(sim: AlphaPointSim) -> None:
    broker = create(account(sim.url, api_key=True))
    broker.nonce = lambda: "2247733562"
    try:
        await broker.connect()
        [auth] = sent(sim, "AuthenticateUser")
        assert set(auth) == {"APIKey", "Signature", "UserId", "Nonce"} and auth["Nonce"] == "2247733562"
        assert "apex-secret" not in json.dumps(sim.raw_frames)
        assert (await broker.place(limit("rn-key"))).status is OrderStatus.OPEN
    finally:
        await broker.close()


async def test_bad_password_is_refused_without_leaking_it(
    sim: AlphaPointSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AP_PASS", "wrong-horse-battery")
    broker = create(account(sim.url))
    with pytest.raises(BrokerError) as exc:
        await broker.connect()
    assert "wrong-horse-battery" not in str(exc.value) and "Invalid username or password" in str(exc.value)
    assert not broker.session.is_open
    await broker.close()


async def test_session_expiry_logs_in_again_once(sim_factory: SimFactory, clock: VirtualClock) -> None:
    sim = await sim_factory("expire=60s")
    broker = create(account(sim.url))
    try:
        await broker.place(limit("rn-a"))
        clock.advance(61)
        with pytest.raises(AuthExpired):  # Not Authorized: the adapter never re-sends an order itself
            await broker.place(limit("rn-b"))
        assert broker.logins == 1 and not broker.session.is_open
        placed = await broker.place(limit("rn-b"))  # the caller's retry logs in first
        assert placed.status is OrderStatus.OPEN
        # Three frames: the one refused with Not Authorized was never acted on.
        assert broker.logins == 2 and len(sent(sim, "SendOrder")) == 3
        assert sorted(o.client_order_id for o in await broker.orders()) == ["rn-a", "rn-b"]
    finally:
        await broker.close()


async def test_persistent_auth_failure_raises_after_one_relogin(
    sim_factory: SimFactory, clock: VirtualClock
) -> None:
    sim = await sim_factory("expire=0s")  # every session is expired at once
    broker = create(account(sim.url))
    try:
        with pytest.raises(AuthExpired):
            await broker.get_order("rn-any")
        assert broker.logins == 2
    finally:
        await broker.close()


async def test_reconnect_reauthenticates_and_resubscribes(
    sim: AlphaPointSim, broker: AlphaPointBroker
) -> None:
    await broker.place(limit("rn-r"))
    await sim.drop_connections()
    found = await broker.get_order("rn-r")
    assert found is not None and found.status is OrderStatus.OPEN
    assert broker.session.connects == 2 and broker.logins == 2
    assert len(sent(sim, "SubscribeAccountEvents")) == 2


async def test_reply_dropped_after_accept_resolves_by_lookup(sim_factory: SimFactory) -> None:
    sim = await sim_factory("drop=1,only=place")
    broker = create(account(sim.url))
    try:
        # The OMS accepted the order and the socket died before the reply: the adapter looks it up
        # (a read) and reports the order it found instead of an error; nothing is sent twice.
        placed = await broker.place(limit("rn-drop"))
        assert placed.status is OrderStatus.OPEN and placed.client_order_id == "rn-drop"
        assert len(sent(sim, "SendOrder")) == 1 and len(sent(sim, "GetOrdersHistory")) == 1
        assert broker.session.connects == 2
    finally:
        await broker.close()


async def test_silent_drop_times_out_and_resolves_by_lookup(sim_factory: SimFactory) -> None:
    sim = await sim_factory("drop=1,only=place", silent_drop=True)
    broker = create(account(sim.url, timeout=0.2))
    try:
        placed = await broker.place(limit("rn-silent"))
        assert placed.status is OrderStatus.OPEN and len(sent(sim, "SendOrder")) == 1
    finally:
        await broker.close()


async def test_disconnect_mid_request_before_acting(sim_factory: SimFactory) -> None:
    sim = await sim_factory("disconnect=1,only=place")
    broker = create(account(sim.url))
    try:
        with pytest.raises(OutcomeUnknown):  # the client cannot tell it was before acting
            await broker.place(limit("rn-dc"))
        assert await broker.get_order("rn-dc") is None  # lookup proves it is safe to place again
    finally:
        await broker.close()


async def test_error_frames_map_onto_the_taxonomy(sim_factory: SimFactory) -> None:
    sim = await sim_factory("5xx=1,only=place+get")
    broker = create(account(sim.url))
    try:
        with pytest.raises(OutcomeUnknown) as exc:  # and its own lookups failed too: the engine resolves
            await broker.place(limit("rn-5"))
        assert exc.value.code == "102" and len(sent(sim, "SendOrder")) == 1
        before = len(sent(sim, "GetOrdersHistory"))
        with pytest.raises(Unavailable):
            await broker.get_order("rn-5")
        assert len(sent(sim, "GetOrdersHistory")) - before == 1  # retrying is the gateway's job, not ours
    finally:
        await broker.close()
    sim = await sim_factory("429=1,only=place")
    broker = create(account(sim.url))
    try:
        with pytest.raises(RateLimited):
            await broker.place(limit("rn-429"))
    finally:
        await broker.close()


async def test_unknown_function_is_an_error_frame(broker: AlphaPointBroker) -> None:
    with pytest.raises(Rejected) as exc:
        await broker.session.call("NoSuchCall", {}, mutating=False)
    assert exc.value.code == "106"


async def test_concurrent_requests_are_matched_by_sequence_number(sim_factory: SimFactory) -> None:
    sim = await sim_factory("latency=1ms..20ms,seed=3,only=get+place")
    broker = create(account(sim.url))
    try:
        ids = [f"rn-c{i}" for i in range(20)]
        placed = await asyncio.gather(*(broker.place(limit(cid, qty=i + 1)) for i, cid in enumerate(ids)))
        found = await asyncio.gather(*(broker.get_order(cid) for cid in ids))
        assert [o.client_order_id for o in placed] == ids
        assert [(o.client_order_id, o.quantity) for o in found if o] == [
            (c, i + 1) for i, c in enumerate(ids)
        ]
        seqs = [f["i"] for f in sim.raw_frames]
        assert seqs[0] == 0 and all(i % 2 == 0 for i in seqs) and len(set(seqs)) == len(seqs)
        assert all(isinstance(f["o"], str) for f in sim.raw_frames)
    finally:
        await broker.close()


async def test_order_events_are_received(
    sim: AlphaPointSim, broker: AlphaPointBroker, clock: VirtualClock
) -> None:
    placed = await broker.place(OrderRequest("rn-ev", RELIANCE, Side.BUY, 2))
    clock.advance(1)
    await sim.tick()
    await broker.get_order("rn-ev")  # a round trip: events sent before it have arrived
    event = broker._events[int(placed.broker_order_id or 0)]
    assert event["OrderState"] == "FullyExecuted"


async def test_rate_limiter_is_keyed_by_account_and_segment(sim: AlphaPointSim) -> None:
    limiter = RateLimiter(1000, 1000)
    broker = create(account(sim.url), limiter=limiter)
    try:
        await broker.place(limit("rn-rl"))
        await broker.place(OrderRequest("rn-rl2", NIFTY_CE, Side.BUY, 75))
        assert set(limiter._buckets) == {("ap", "NSE"), ("ap", "NFO")}
    finally:
        await broker.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_faults_on_never_duplicate_and_every_ambiguity_resolves(
    sim_factory: SimFactory, clock: VirtualClock, seed: int
) -> None:
    sim = await sim_factory(f"drop=0.15,disconnect=0.1,5xx=0.1,429=0.05,reset=0.05,seed={seed}")
    broker = create(account(sim.url))
    resolved_by_lookup = 0
    try:
        for n in range(25):
            cid = f"rn-f{seed}-{n}"
            for _attempt in range(10):
                try:
                    await broker.place(limit(cid, qty=1 + n % 3))
                    break
                except OutcomeUnknown:
                    found = await _lookup(broker, cid)
                    if found is not None:
                        resolved_by_lookup += 1
                        break  # it exists: never send it again
                except (Unavailable, RateLimited):
                    continue
            else:
                pytest.fail(f"{cid} never placed")
        clock.advance(1)
        mine = [o for o in await _orders(broker)]
        counts: dict[str, int] = {}
        for o in mine:
            counts[o.client_order_id] = counts.get(o.client_order_id, 0) + 1
        assert counts == {f"rn-f{seed}-{n}": 1 for n in range(25)}
        # Replies dropped after the OMS accepted the order happened, yet nothing was placed twice: the
        # adapter (or, when its own lookup failed, this loop) resolved each by lookup.
        assert any(name == "SendOrder" and f is Fault.DROP_REPLY for name, f in sim.fault_log)
        assert resolved_by_lookup <= len(sim.fault_log)
    finally:
        await broker.close()


async def _lookup(broker: AlphaPointBroker, cid: str) -> Any:
    for _ in range(10):
        try:
            return await broker.get_order(cid)
        except (Unavailable, RateLimited):
            continue
    raise AssertionError("lookup never succeeded")


async def _orders(broker: AlphaPointBroker) -> Any:
    for _ in range(10):
        try:
            return await broker.orders()
        except (Unavailable, RateLimited):
            continue
    raise AssertionError("orders never succeeded")


async def test_many_accounts_share_one_simulator(
    sim_factory: SimFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    users = [SimUser(f"u{i}", f"p{i}", user_id=100 + i, account_id=200 + i) for i in range(3)]
    sim = await sim_factory(users=users)
    brokers = []
    for i in range(3):
        monkeypatch.setenv(f"AP_U{i}", f"u{i}")
        monkeypatch.setenv(f"AP_P{i}", f"p{i}")
        acc = Account(
            name=f"ap{i}",
            broker="alphapoint",
            endpoints={"ws": sim.url},
            instruments=MASTER,
            credentials={"username": {"env": f"AP_U{i}"}, "password": {"env": f"AP_P{i}"}},
        )
        brokers.append(create(acc))
    try:
        for i, b in enumerate(brokers):
            await b.place(limit(f"rn-acct{i}"))
        for i, b in enumerate(brokers):
            assert [o.client_order_id for o in await b.orders()] == [f"rn-acct{i}"]
            assert b.acct.account_id == 200 + i
    finally:
        for b in brokers:
            await b.close()


def test_fault_plan_parses_for_the_sim() -> None:
    plan = FaultPlan.parse("drop=0.5,only=place")
    assert plan.active
