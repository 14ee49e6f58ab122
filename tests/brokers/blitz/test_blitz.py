"""Blitz adapter against its simulator over real loopback sockets: auth flow, order lifecycle, error mapping,
rate limiting, and fault injection (no order ever duplicated, every ambiguous outcome resolved by lookup)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from decimal import Decimal
from typing import Any, TypeVar

import httpx
import pytest
from helpers.blitz import (
    APP_KEY,
    IDEA,
    NIFTY_CE,
    SEEDEXAMPLE,
    SIM_OPTIONS,
    TCS,
    account,
    broker,
)

from runner.brokers.blitz.client import BlitzBroker, create
from runner.brokers.blitz.sim import Running, start
from runner.brokers.faults import FaultPlan
from runner.brokers.instruments import InstrumentMaster
from runner.brokers.ratelimit import RateLimiter
from runner.clock import VirtualClock
from runner.errors import (
    AuthExpired,
    NotFound,
    NotModifiable,
    OutcomeUnknown,
    RateLimited,
    Rejected,
    Retryable,
)
from runner.model import Modification, Order, OrderRequest, OrderStatus, OrderType, Side

T = TypeVar("T")


def _limit(
    cid: str, price: str = "10.50", qty: int = 10, inst: Any = IDEA, side: Side = Side.BUY
) -> OrderRequest:
    return OrderRequest(cid, inst, side, qty, OrderType.LIMIT, price=Decimal(price))


# -- auth -------------------------------------------------------------------------------------------------


async def test_session_expiry_logs_in_again_once(clock: VirtualClock) -> None:
    async with start(FaultPlan.parse("expire=300s"), clock=clock, options=SIM_OPTIONS) as sim:
        b = broker(sim)
        await b.place(_limit("rnexp1"))
        assert sim.sim.logins == 1
        clock.advance(301)
        assert [o.client_order_id for o in await b.orders()] == ["rnexp1"]  # 401, login, same read again
        assert sim.sim.logins == 2
        # Concurrent requests that all meet the expired token share one re-login.
        clock.advance(301)
        results = await asyncio.gather(*(b.open_orders() for _ in range(8)))
        assert all(len(r) == 1 for r in results) and sim.sim.logins == 3
        await b.close()


async def test_token_exception_403_also_means_log_in_again(clock: VirtualClock) -> None:
    async with start(
        FaultPlan.parse("expire=60s"), clock=clock, options={**SIM_OPTIONS, "expiry_status": 403}
    ) as sim:
        b = broker(sim)
        await b.connect()
        clock.advance(61)
        with pytest.raises(AuthExpired):  # refused with TokenException: the adapter never re-sends an order
            await b.place(_limit("rn403"))
        assert sim.sim.orders_with_correlation("rn403") == []
        placed = await b.place(_limit("rn403"))  # the caller's retry: the dropped token means a new login
        assert sim.sim.logins == 2 and len(sim.sim.orders_with_correlation("rn403")) == 1
        assert placed.status is OrderStatus.PENDING_NEW
        await b.close()


async def test_only_one_relogin_then_the_error_surfaces(clock: VirtualClock) -> None:
    async with start(FaultPlan.parse("expire=0s"), clock=clock, options=SIM_OPTIONS) as sim:
        b = broker(sim)
        with pytest.raises(AuthExpired):
            await b.orders()
        assert sim.sim.logins == 2  # connect + exactly one re-login
        await b.close()


async def test_refused_login_never_reveals_the_app_key(
    clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    async with start(clock=clock, options={**SIM_OPTIONS, "users": {"Algo123": "the-real-key"}}) as sim:
        b = broker(sim)
        with caplog.at_level(logging.DEBUG), pytest.raises(AuthExpired) as info:
            await b.connect()
        assert APP_KEY not in str(info.value) and APP_KEY not in repr(info.value.args)
        assert APP_KEY not in caplog.text
        await b.close()


# -- lifecycle --------------------------------------------------------------------------------------------


async def test_place_is_an_ack_then_reads_tell_the_truth(sim: Running) -> None:
    b = broker(sim)
    placed = await b.place(_limit("rnlife1", "10.50"))
    # An acknowledgement is not an open order: PENDING_NEW until a read shows the exchange has it.
    assert placed.status is OrderStatus.PENDING_NEW and placed.broker_order_id and placed.filled_quantity == 0
    resting = await b.get_order("rnlife1")
    assert resting is not None and resting.status is OrderStatus.OPEN and resting.raw_status == "New"
    assert [o.client_order_id for o in await b.open_orders()] == ["rnlife1"]
    assert await b.get_order("rnnever") is None
    modified = await b.modify(resting, Modification(quantity=12, price=Decimal("10.60")))
    assert (modified.quantity, modified.price, modified.status) == (12, Decimal("10.60"), OrderStatus.OPEN)
    cancelled = await b.cancel(modified)
    assert cancelled.status is OrderStatus.CANCELLED
    with pytest.raises(NotModifiable):
        await b.cancel(cancelled)
    with pytest.raises(NotModifiable):
        await b.modify(cancelled, Modification(price=Decimal("10.70")))
    assert await b.open_orders() == []
    await b.close()


async def test_market_order_fills_and_shows_in_positions_and_trades(sim: Running) -> None:
    b = broker(sim)
    await b.place(OrderRequest("rnmkt1", NIFTY_CE, Side.BUY, 150))
    await b.place(OrderRequest("rnmkt2", NIFTY_CE, Side.SELL, 75))
    filled = await b.get_order("rnmkt1")
    assert filled is not None and filled.status is OrderStatus.FILLED and filled.filled_quantity == 150
    assert filled.average_price == Decimal(120)
    (pos,) = await b.positions()
    assert pos.instrument.key == NIFTY_CE.key and pos.quantity == 75
    assert (pos.day_buy_quantity, pos.day_sell_quantity) == (150, 75)
    fills = await b.trades()
    assert sorted((f.client_order_id, f.quantity) for f in fills) == [("rnmkt1", 150), ("rnmkt2", 75)]
    await b.close()


async def test_cancel_ack_is_not_a_cancel(clock: VirtualClock) -> None:
    async with start(clock=clock, options={**SIM_OPTIONS, "cancel_delay": 5}) as sim:
        b = broker(sim)
        placed = await b.place(_limit("rncx1", "10.50"))
        pending = await b.cancel(placed)
        assert pending.status is OrderStatus.PENDING_CANCEL and pending.raw_status == "PendingCancel"
        clock.advance(6)
        done = await b.get_order("rncx1")
        assert done is not None and done.status is OrderStatus.CANCELLED
        await b.close()


async def test_partial_fills(clock: VirtualClock) -> None:
    async with start(clock=clock, options={**SIM_OPTIONS, "partial_fill_slice": 75}) as sim:
        b = broker(sim)
        await b.place(OrderRequest("rnpf1", NIFTY_CE, Side.BUY, 225))
        first = await b.get_order("rnpf1")
        assert (
            first is not None and first.status is OrderStatus.PARTIALLY_FILLED and first.filled_quantity == 75
        )
        clock.advance(2)
        done = await b.get_order("rnpf1")
        assert done is not None and done.status is OrderStatus.FILLED and done.filled_quantity == 225
        assert [f.quantity for f in await b.trades()] == [75, 75, 75]
        await b.close()


async def test_stop_order_waits_for_its_trigger(sim: Running) -> None:
    b = broker(sim)
    req = OrderRequest("rnsl1", TCS, Side.BUY, 5, OrderType.SL_M, trigger_price=Decimal(4200))
    await b.place(req)
    waiting = await b.get_order("rnsl1")
    assert (
        waiting is not None and waiting.raw_status == "TriggerPending" and waiting.status is OrderStatus.OPEN
    )
    assert waiting.trigger_price == Decimal(4200)
    await b.close()


async def test_seed_dialect_lifecycle(sim: Running) -> None:
    b = broker(sim, user="PRASHANT", dialect="seed")
    await b.place(OrderRequest("rnseedm", SEEDEXAMPLE, Side.BUY, 3))
    got = await b.get_order("rnseedm")
    assert got is not None and got.status is OrderStatus.FILLED
    by_id = await b.get_order_by_broker_id(got.broker_order_id or "")
    assert by_id.status is OrderStatus.FILLED  # latest of the history rows (newest first on the wire)
    placed = await b.place(_limit("rnseedl", "45.00", 2, SEEDEXAMPLE))
    assert [o.client_order_id for o in await b.open_orders()] == ["rnseedl"]  # filtered from the day's book
    assert (await b.cancel(placed)).status is OrderStatus.CANCELLED
    paths = {path.split("?")[0] for _, path, _ in sim.sim.requests}
    assert {"/api/order/placeOrder", "/api/order/", "/api/order/cancelOrder"} <= paths
    await b.close()


# -- errors -----------------------------------------------------------------------------------------------


async def test_broker_rejections_are_rejected(sim: Running) -> None:
    b = broker(sim)
    with pytest.raises(Rejected, match="lot size") as info:
        await b.place(OrderRequest("rnlot", NIFTY_CE, Side.BUY, 10))
    assert info.value.code == "OrderException"
    rejected = await b.get_order("rnlot")  # the OMS keeps the rejected order in the day's book
    assert rejected is not None and rejected.status is OrderStatus.REJECTED and rejected.reject_reason
    with pytest.raises(Rejected, match="outside"):
        await b.place(_limit("rnband", "20.00"))
    with pytest.raises(NotFound):
        await b.get_order_by_broker_id("226010000099999999")
    await b.close()


async def test_simulator_refuses_to_cancel_a_filled_order_with_403(sim: Running) -> None:
    b = broker(sim)
    await b.place(OrderRequest("rnf403", IDEA, Side.BUY, 1))
    filled = await b.get_order("rnf403")
    assert filled is not None and filled.status is OrderStatus.FILLED
    async with httpx.AsyncClient() as raw:
        login = await raw.post(sim.auth_url + "/api/app_login", json={"appKey": "k", "userId": "Algo123"})
        token = login.json()["data"]["accessToken"]
        r = await raw.delete(
            sim.api_url + "/orders/cancelOrder",
            headers={"Authorization": f"Bearer {token}"},
            params={"instrumentId": "110010000014366", "blitzOrderId": filled.broker_order_id},
        )
    assert (
        r.status_code == 403 and r.json()["status"] == "error" and r.json()["error_type"] == "OrderException"
    )
    await b.close()


async def test_server_error_on_place_is_outcome_unknown_and_resolved_by_lookup(clock: VirtualClock) -> None:
    async with start(FaultPlan.parse("drop=1,only=place"), clock=clock, options=SIM_OPTIONS) as sim:
        b = broker(sim)
        with pytest.raises(OutcomeUnknown):
            await b.place(_limit("rndrop"))
        found = await b.get_order("rndrop")
        assert found is not None and found.status is OrderStatus.OPEN  # it was placed; never send it again
        await b.close()
    async with start(FaultPlan.parse("reset=1,only=place"), clock=clock, options=SIM_OPTIONS) as sim:
        b = broker(sim)
        with pytest.raises(OutcomeUnknown):
            await b.place(_limit("rnreset"))
        assert await b.get_order("rnreset") is None  # certainly absent: the engine may send it again
        await b.close()


class RecordingLimiter(RateLimiter):
    """Records keys; runs on its own frozen clock, so only the broker's Retry-After can drain it."""

    def __init__(self, rate: float, burst: int) -> None:
        self.now = 0.0
        super().__init__(rate, burst, monotonic=lambda: self.now, sleep=self._advance)
        self.keys: list[Hashable] = []

    async def _advance(self, seconds: float) -> None:
        self.now += seconds

    async def acquire(self, key: Hashable = None) -> float:
        self.keys.append(key)
        return await super().acquire(key)


async def test_rate_limiter_keys_per_account_and_segment_and_honours_429(clock: VirtualClock) -> None:
    async with start(FaultPlan.parse("429=1,only=modify"), clock=clock, options=SIM_OPTIONS) as sim:
        limiter = RecordingLimiter(1000, 10)
        b = create(account(sim), master=InstrumentMaster.load(sim_master(), broker="blitz"), limiter=limiter)
        placed = await b.place(_limit("rnrl1"))
        await b.place(OrderRequest("rnrl2", NIFTY_CE, Side.BUY, 75))
        await b.orders()  # reads are not throttled
        with pytest.raises(RateLimited) as info:
            await b.modify(placed, Modification(price=Decimal("10.55")))
        assert info.value.retry_after == pytest.approx(0.01)
        assert limiter.keys == [("blitz1", "NSE"), ("blitz1", "NFO"), ("blitz1", "NSE")]
        assert await limiter.acquire(("blitz1", "NSE")) > 0  # Retry-After drained the bucket
        await b.close()


def sim_master() -> str:
    from helpers.blitz import MASTER

    return str(MASTER)


# -- faults on --------------------------------------------------------------------------------------------


async def _patiently(read: Callable[[], Awaitable[T]]) -> T:
    """A read retried on transient errors, as the engine's gateway does (the adapter itself does not)."""
    for _ in range(20):
        try:
            return await read()
        except (Retryable, AuthExpired):
            continue
    raise AssertionError("read kept failing")


async def _place_resolved(b: BlitzBroker, req: OrderRequest, stats: dict[str, int]) -> Order:
    """The engine's discipline: on an ambiguous outcome look the order up; send again only if certainly
    absent."""
    for _ in range(20):
        try:
            return await b.place(req)
        except OutcomeUnknown:
            stats["unknown"] += 1
            found = await _patiently(lambda: b.get_order(req.client_order_id))
            if found is not None:
                stats["resolved"] += 1
                return found
            stats["absent"] += 1
        except RateLimited:
            stats["throttled"] += 1
        except (Retryable, AuthExpired):
            stats["transient"] += 1
    raise AssertionError(f"{req.client_order_id} never placed")


async def _cancel_resolved(b: BlitzBroker, order: Order, stats: dict[str, int]) -> Order:
    for _ in range(20):
        try:
            return await b.cancel(order)
        except OutcomeUnknown:
            stats["cancel_unknown"] += 1
            now = await _patiently(lambda: b.get_order(order.client_order_id))
            assert now is not None
            if now.status.is_terminal or now.status is OrderStatus.PENDING_CANCEL:
                return now
        except NotModifiable:
            now = await _patiently(lambda: b.get_order(order.client_order_id))
            assert now is not None
            return now
        except RateLimited:
            stats["throttled"] += 1
        except (Retryable, AuthExpired):
            stats["transient"] += 1
    raise AssertionError("cancel never resolved")


@pytest.mark.parametrize("transport", ["httpx", "aiohttp"])
async def test_faults_never_duplicate_an_order(clock: VirtualClock, transport: str) -> None:
    plan = FaultPlan.parse("5xx=0.1,reset=0.1,drop=0.15,429=0.05,latency=1ms,seed=11")
    stats = dict.fromkeys(("unknown", "resolved", "absent", "throttled", "transient", "cancel_unknown"), 0)
    async with start(plan, clock=clock, options=SIM_OPTIONS) as sim:
        b = create(
            account(sim, http_transport=transport), master=InstrumentMaster.load(sim_master(), broker="blitz")
        )
        reqs = [_limit(f"rnf{i:03d}", "10.50") for i in range(40)]
        placed = await asyncio.gather(*(_place_resolved(b, r, stats) for r in reqs))
        for r in reqs:
            assert len(sim.sim.orders_with_correlation(r.client_order_id)) == 1, r.client_order_id
        assert stats["unknown"] > 0 and stats["resolved"] > 0 and stats["absent"] > 0
        done = await asyncio.gather(*(_cancel_resolved(b, o, stats) for o in placed))
        assert all(o.status in (OrderStatus.CANCELLED, OrderStatus.PENDING_CANCEL) for o in done)
        assert await _patiently(b.open_orders) == []
        assert len(sim.sim.orders) == 40
        await b.close()


# -- a burst at one instant (runner.brokers.warm) ---------------------------------------------------------


async def test_connections_warmed_while_preparing_carry_the_burst(sim: Running) -> None:
    b = broker(sim)
    await b.connect()
    await b.warm_connections(3)

    def pooled() -> set[Any]:
        conns = b._http()._transport.client.connector._conns  # type: ignore[attr-defined]
        return {proto for q in conns.values() for proto, _ in q}

    warmed = pooled()
    assert len(warmed) == 3
    await asyncio.gather(*(b.place(_limit(f"rnwarm{i}")) for i in range(3)))
    assert pooled() <= warmed  # the three orders went out on warmed connections: none opened at the instant
    await b.close()
