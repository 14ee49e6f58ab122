"""The Broker contract: one suite every broker (paper, and each adapter against its simulator) passes.

Use it by subclassing :class:`BrokerContract` in a ``tests/test_<broker>*.py`` module and providing a
``broker_factory`` fixture: a callable ``broker_factory(config: MatchingConfig) -> async context manager``
yielding a :class:`Harness` whose broker is connected and whose market (a VirtualClock and a StepPath
price path) drives the matching engine behind it::

    from helpers.contract.broker_contract import BrokerContract, Harness, Market

    class TestBlitzContract(BrokerContract):
        @pytest.fixture
        def broker_factory(self, unused_tcp_port):
            @contextlib.asynccontextmanager
            async def factory(config):
                market = Market.new()
                async with start_sim(MatchingEngine(market.prices, config), market.clock) as url:
                    broker = create(account_for(url), clock=market.clock)
                    await broker.connect()
                    yield Harness(broker, market)
                    await broker.close()
            return factory

The suite never sleeps: it moves the market's clock and reads orders back. Transient errors
(Retryable, AuthExpired) are retried and OutcomeUnknown is resolved by looking the order up (a modify or
cancel that did not land is issued once more), as the engine does, so the suite also runs with simulator
faults switched on.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

import pytest

from runner.brokers.base import Broker, Capability, MultilegBroker
from runner.brokers.paper.matching import MatchingConfig
from runner.brokers.paper.price_paths import RandomWalk, StepPath
from runner.clock import VirtualClock
from runner.engine.changes import applied
from runner.engine.gateway import is_live
from runner.errors import AuthExpired, NotFound, NotModifiable, OutcomeUnknown, Rejected, Retryable
from runner.model import (
    Instrument,
    Modification,
    MultilegRequest,
    OptionType,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
    Position,
    Product,
    Side,
    check_transition,
)

S = OrderStatus
T = TypeVar("T")

# A Monday 10:00 IST: inside the session, far from the 15:30 expiry of DAY orders.
START = dt.datetime(2026, 3, 2, 4, 30, tzinfo=dt.UTC)
EQUITY = Instrument("NSE", "RELIANCE", tick_size=Decimal("0.05"))
FUTURE = Instrument("NFO", "NIFTY", dt.date(2026, 3, 26), lot_size=75, tick_size=Decimal("0.05"))
CALL = Instrument("NFO", "NIFTY", dt.date(2026, 3, 26), Decimal(24500), OptionType.CE, lot_size=75,
                  tick_size=Decimal("0.05"))
PUT = Instrument("NFO", "NIFTY", dt.date(2026, 3, 26), Decimal(24500), OptionType.PE, lot_size=75,
                 tick_size=Decimal("0.05"))
MAX_STEPS = 30  # market seconds a test waits for an outcome before failing


@dataclass
class Market:
    """What a test controls: virtual time and the traded price of each instrument."""

    clock: VirtualClock
    prices: StepPath

    @classmethod
    def new(cls, start: dt.datetime = START, seed: str = "contract") -> Market:
        return cls(VirtualClock(start), StepPath(RandomWalk(seed)))

    def set_price(self, instrument: Instrument, price: Decimal) -> None:
        self.prices.set(instrument, price, self.clock.now())

    def advance(self, seconds: float = 1.0) -> None:
        self.clock.advance(seconds)


@dataclass
class Harness:
    broker: Broker
    market: Market
    equity: Instrument = EQUITY  # lot size 1
    future: Instrument = FUTURE  # has a lot size > 1
    ce: Instrument = CALL  # multileg legs
    pe: Instrument = PUT
    history: dict[str, list[OrderStatus]] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def client_id(self, label: str) -> str:
        # Unique per harness and per test run on persistent brokers: time + counter.
        return f"ct{label[:6]}{self.market.clock.now():%H%M%S}{next(self._ids):04d}"

    def observe(self, order: Order | None) -> Order | None:
        if order is not None:
            seen = self.history.setdefault(order.client_order_id, [])
            if not seen or seen[-1] is not order.status:
                seen.append(order.status)
        return order

    def assert_legal_history(self) -> None:
        for cid, statuses in self.history.items():
            for old, new in itertools.pairwise(statuses):
                try:
                    check_transition(old, new)
                except ValueError as exc:
                    raise AssertionError(f"order {cid}: {' -> '.join(statuses)}: {exc}") from None

    # calls with the engine's discipline: retry what is safe, resolve ambiguity by lookup -----------

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        for _ in range(25):
            try:
                return await fn(*args)
            except Retryable:
                await asyncio.sleep(0)
            except AuthExpired:
                await self.broker.connect()
        raise AssertionError(f"{getattr(fn, '__name__', fn)} kept failing transiently")

    async def read(self, client_order_id: str) -> Order | None:
        return self.observe(await self.call(self.broker.get_order, client_order_id))

    async def read_by_id(self, broker_order_id: str) -> Order:
        order = self.observe(await self.call(self.broker.get_order_by_broker_id, broker_order_id))
        assert order is not None
        return order

    async def place(self, request: OrderRequest) -> Order:
        try:
            order = await self.call(self.broker.place, request)
        except OutcomeUnknown:
            found = await self.read(request.client_order_id)
            if found is None:  # certainly not there: sending again cannot duplicate
                return await self.place(request)
            if found.status is S.REJECTED:  # it arrived and was refused: the same outcome as a reply
                raise Rejected(
                    f"order {request.client_order_id} was rejected: {found.reject_reason or 'no reason'}",
                    broker=self.broker.name,
                ) from None
            return found
        self.observe(order)
        return order

    # After an OutcomeUnknown on modify/cancel, read back; if the change did not land and the order still
    # works, issue the same change to the same order once more (it names an existing order, so it cannot
    # create one), as runner.engine.gateway does.

    async def modify(self, order: Order, change: Modification) -> Order:
        try:
            return await self.call(self.broker.modify, order, change)
        except OutcomeUnknown:
            back = await self.read_by_id(order.broker_order_id or "")
            if applied(back, change) or not is_live(back):
                return back
        try:
            return await self.call(self.broker.modify, order, change)
        except (OutcomeUnknown, NotModifiable):  # unknown again, or it stopped working meanwhile
            return await self.read_by_id(order.broker_order_id or "")

    async def cancel(self, order: Order) -> Order:
        try:
            result = await self.call(self.broker.cancel, order)
        except OutcomeUnknown:
            back = await self.read_by_id(order.broker_order_id or "")
            if back.status is S.PENDING_CANCEL or not is_live(back):
                return back
            try:
                result = await self.call(self.broker.cancel, order)
            except (OutcomeUnknown, NotModifiable):
                return await self.read_by_id(order.broker_order_id or "")
        self.observe(result)
        return result

    async def positions(self) -> Sequence[Position]:
        return await self.call(self.broker.positions)

    async def open_orders(self) -> Sequence[Order]:
        return await self.call(self.broker.open_orders)

    async def orders(self) -> Sequence[Order]:
        return await self.call(self.broker.orders)

    async def wait_for(self, order: Order, done: Callable[[Order], bool], what: str) -> Order:
        """Move the market a second at a time until ``done(order)`` holds when read back."""
        assert order.broker_order_id, "an acknowledged order carries the broker's id"
        current = await self.read_by_id(order.broker_order_id)
        for _ in range(MAX_STEPS):
            if done(current):
                return current
            self.market.advance(1)
            current = await self.read_by_id(order.broker_order_id)
        raise AssertionError(f"order {order.client_order_id} never became {what}: {current}")

    async def position(self, instrument: Instrument, product: Product = Product.MIS) -> Position | None:
        for p in await self.positions():
            if p.instrument.key == instrument.key and p.product is product:
                return p
        return None


BrokerFactory = Callable[..., contextlib.AbstractAsyncContextManager[Harness]]


def limit(h: Harness, label: str, side: Side, qty: int, price: str, inst: Instrument | None = None,
          **kw: Any) -> OrderRequest:
    return OrderRequest(h.client_id(label), inst or h.equity, side, qty, OrderType.LIMIT,
                        price=Decimal(price), **kw)


def market(h: Harness, label: str, side: Side, qty: int, inst: Instrument | None = None,
           **kw: Any) -> OrderRequest:
    return OrderRequest(h.client_id(label), inst or h.equity, side, qty, OrderType.MARKET, **kw)


def filled(o: Order) -> bool:
    return o.status is S.FILLED


class BrokerContract:
    """Subclass with a ``broker_factory`` fixture (see the module docstring)."""

    @contextlib.asynccontextmanager
    async def harness(self, factory: BrokerFactory, **config: Any) -> AsyncIterator[Harness]:
        async with factory(MatchingConfig(**config)) as h:
            h.market.set_price(h.equity, Decimal(1000))
            h.market.set_price(h.future, Decimal(24500))
            h.market.set_price(h.ce, Decimal(200))
            h.market.set_price(h.pe, Decimal(180))
            yield h
            h.assert_legal_history()

    async def test_protocol_shape(self, broker_factory: BrokerFactory) -> None:
        async with self.harness(broker_factory) as h:
            assert isinstance(h.broker, Broker)
            assert h.broker.name
            assert all(isinstance(c, Capability) for c in h.broker.capabilities)
            if Capability.NATIVE_MULTILEG in h.broker.capabilities:
                assert isinstance(h.broker, MultilegBroker)

    async def test_place_limit_is_open_and_found_by_both_ids(self, broker_factory: BrokerFactory) -> None:
        async with self.harness(broker_factory) as h:
            req = limit(h, "open", Side.BUY, 3, "990", product=Product.CNC)
            ack = await h.place(req)
            assert ack.status in (S.PENDING_NEW, S.OPEN)
            assert ack.client_order_id == req.client_order_id
            by_client = await h.read(req.client_order_id)
            assert by_client is not None and by_client.status is S.OPEN
            assert by_client.broker_order_id
            by_broker = await h.read_by_id(by_client.broker_order_id)
            for o in (by_client, by_broker):
                assert o.client_order_id == req.client_order_id
                assert o.broker_order_id == by_client.broker_order_id
                assert (o.side, o.quantity, o.order_type) == (Side.BUY, 3, OrderType.LIMIT)
                assert o.price == Decimal(990)
                assert o.product is Product.CNC
                assert o.instrument.key == h.equity.key
                assert o.filled_quantity == 0
            assert req.client_order_id in {o.client_order_id for o in await h.open_orders()}
            assert req.client_order_id in {o.client_order_id for o in await h.orders()}

    async def test_duplicate_client_id_never_creates_a_second_order(
        self, broker_factory: BrokerFactory
    ) -> None:
        async with self.harness(broker_factory) as h:
            req = limit(h, "dup", Side.BUY, 1, "980")
            first = await h.place(req)
            try:
                again = await h.call(h.broker.place, req)
            except Rejected:
                pass
            else:  # a broker may answer with the existing order, never with a new one
                assert again.broker_order_id == first.broker_order_id
            same = [o for o in await h.orders() if o.client_order_id == req.client_order_id]
            assert len(same) == 1

    async def test_modify_price(self, broker_factory: BrokerFactory) -> None:
        async with self.harness(broker_factory) as h:
            if Capability.MODIFY not in h.broker.capabilities:
                pytest.skip("broker modifies by cancel + new order")
            order = await h.place(limit(h, "mod", Side.BUY, 2, "990"))
            order = await h.wait_for(order, lambda o: o.status is S.OPEN, "open")
            await h.modify(order, Modification(price=Decimal("985.5")))
            back = await h.wait_for(order, lambda o: o.price == Decimal("985.5"), "repriced")
            assert back.status is S.OPEN and back.quantity == 2
            await h.modify(back, Modification(quantity=4))
            back = await h.wait_for(order, lambda o: o.quantity == 4, "resized")
            assert back.status is S.OPEN and back.price == Decimal("985.5")

    async def test_cancel_is_verified_by_reading_back(self, broker_factory: BrokerFactory) -> None:
        async with self.harness(broker_factory, cancel_delay=2) as h:
            order = await h.place(limit(h, "cxl", Side.SELL, 1, "1010"))
            ack = await h.cancel(order)
            assert ack.status in (S.PENDING_CANCEL, S.CANCELLED, S.OPEN)  # an ack is not a cancel
            done = await h.wait_for(order, lambda o: o.status is S.CANCELLED, "cancelled")
            assert done.filled_quantity == 0
            assert order.client_order_id not in {o.client_order_id for o in await h.open_orders()}
            listed = {o.client_order_id: o for o in await h.orders()}
            assert listed[order.client_order_id].status is S.CANCELLED
            with pytest.raises(NotModifiable):
                await h.call(h.broker.cancel, done)

    async def test_market_fills_update_positions_and_average_price(
        self, broker_factory: BrokerFactory
    ) -> None:
        async with self.harness(broker_factory) as h:
            before = await h.position(h.equity)
            assert before is None or before.quantity == 0
            first = await h.wait_for(await h.place(market(h, "mkt1", Side.BUY, 2)), filled, "filled")
            assert first.filled_quantity == 2 and first.average_price == Decimal(1000)
            h.market.set_price(h.equity, Decimal(1010))
            await h.wait_for(await h.place(market(h, "mkt2", Side.BUY, 2)), filled, "filled")
            pos = await h.position(h.equity)
            assert pos is not None and pos.quantity == 4
            assert pos.average_price == Decimal(1005)
            h.market.set_price(h.equity, Decimal(1020))
            sold = await h.wait_for(await h.place(market(h, "mkt3", Side.SELL, 4)), filled, "filled")
            assert sold.average_price == Decimal(1020)
            pos = await h.position(h.equity)
            assert pos is not None and pos.quantity == 0

    async def test_limit_fills_only_when_the_market_crosses(self, broker_factory: BrokerFactory) -> None:
        async with self.harness(broker_factory) as h:
            order = await h.place(limit(h, "cross", Side.BUY, 5, "995"))
            h.market.advance(3)
            assert (await h.read_by_id(order.broker_order_id or "")).status is S.OPEN
            h.market.set_price(h.equity, Decimal(994))
            done = await h.wait_for(order, filled, "filled")
            assert done.filled_quantity == 5
            assert done.average_price is not None and done.average_price <= Decimal(995)
            assert order.client_order_id not in {o.client_order_id for o in await h.open_orders()}

    async def test_partial_fills(self, broker_factory: BrokerFactory) -> None:
        async with self.harness(broker_factory, fill_slice=2) as h:
            order = await h.place(market(h, "part", Side.BUY, 6))
            partial = await h.wait_for(order, lambda o: o.filled_quantity > 0, "partly filled")
            assert partial.status is S.PARTIALLY_FILLED and 0 < partial.filled_quantity < 6
            assert partial.pending_quantity == 6 - partial.filled_quantity
            seen = [partial.filled_quantity]
            for _ in range(MAX_STEPS):
                h.market.advance(1)
                current = await h.read_by_id(order.broker_order_id or "")
                seen.append(current.filled_quantity)
                if filled(current):
                    break
            assert seen[-1] == 6 and seen == sorted(seen), seen
            assert len(set(seen)) >= 3, "6 in slices of 2 takes several fills"
            pos = await h.position(h.equity)
            assert pos is not None and pos.quantity >= 6

    async def test_rejections_raise_rejected(self, broker_factory: BrokerFactory) -> None:
        async with self.harness(broker_factory) as h:
            far = limit(h, "band", Side.BUY, 1, "500")  # 50% below the market
            with pytest.raises(Rejected) as info:
                await h.place(far)
            assert not isinstance(info.value, NotFound)
            looked = await h.read(far.client_order_id)
            assert looked is None or looked.status is S.REJECTED
            odd_lot = OrderRequest(h.client_id("lot"), h.future, Side.BUY, h.future.lot_size + 1 if
                                   h.future.lot_size else 1, OrderType.MARKET)
            with pytest.raises(Rejected):
                await h.place(odd_lot)
            assert far.client_order_id not in {o.client_order_id for o in await h.open_orders()}

    async def test_unknown_orders(self, broker_factory: BrokerFactory) -> None:
        async with self.harness(broker_factory) as h:
            assert await h.read("rnnosuchorder00000") is None
            with pytest.raises(NotFound):
                await h.call(h.broker.get_order_by_broker_id, "999999999")

    async def test_terminal_orders_cannot_change(self, broker_factory: BrokerFactory) -> None:
        async with self.harness(broker_factory) as h:
            done = await h.wait_for(await h.place(market(h, "term", Side.SELL, 1)), filled, "filled")
            with pytest.raises(NotModifiable):
                await h.call(h.broker.cancel, done)
            if Capability.MODIFY in h.broker.capabilities:
                with pytest.raises(NotModifiable):
                    await h.call(h.broker.modify, done, Modification(price=Decimal(1001)))

    async def test_open_orders_exclude_terminal(self, broker_factory: BrokerFactory) -> None:
        async with self.harness(broker_factory) as h:
            resting = await h.place(limit(h, "rest", Side.BUY, 1, "950"))
            gone = await h.wait_for(await h.place(market(h, "gone", Side.BUY, 1)), filled, "filled")
            cancelled = await h.place(limit(h, "kill", Side.BUY, 1, "951"))
            await h.cancel(cancelled)
            await h.wait_for(cancelled, lambda o: o.status is S.CANCELLED, "cancelled")
            open_ids = {o.client_order_id for o in await h.open_orders()}
            assert resting.client_order_id in open_ids
            assert gone.client_order_id not in open_ids
            assert cancelled.client_order_id not in open_ids
            assert all(not o.status.is_terminal for o in await h.open_orders())

    async def test_stop_market_triggers(self, broker_factory: BrokerFactory) -> None:
        async with self.harness(broker_factory) as h:
            if Capability.STOP_ORDERS not in h.broker.capabilities:
                pytest.skip("no stop orders")
            req = OrderRequest(h.client_id("stop"), h.equity, Side.SELL, 1, OrderType.SL_M,
                               trigger_price=Decimal(990))
            order = await h.place(req)
            h.market.advance(2)
            assert (await h.read_by_id(order.broker_order_id or "")).status is S.OPEN
            h.market.set_price(h.equity, Decimal(989))
            done = await h.wait_for(order, filled, "filled")
            assert done.average_price is not None and done.average_price <= Decimal(990)

    async def test_native_multileg(self, broker_factory: BrokerFactory) -> None:
        async with self.harness(broker_factory) as h:
            if Capability.NATIVE_MULTILEG not in h.broker.capabilities:
                pytest.skip("no native multileg")
            broker = h.broker
            assert isinstance(broker, MultilegBroker)
            lot = h.ce.lot_size or 1
            legs = (
                limit(h, "leg1", Side.BUY, lot, "160", h.pe, product=Product.NRML),  # hedge first
                limit(h, "leg2", Side.SELL, lot, "230", h.ce, product=Product.NRML),
            )
            placed = await h.call(broker.place_multileg, MultilegRequest(h.client_id("spread"), legs))
            assert [o.client_order_id for o in placed] == [leg.client_order_id for leg in legs]
            for leg in legs:
                back = await h.read(leg.client_order_id)
                assert back is not None and back.status is S.OPEN
            await h.call(broker.cancel_multileg, placed)
            for o in placed:
                await h.wait_for(o, lambda x: x.status is S.CANCELLED, "cancelled")
            bad = (
                limit(h, "bad1", Side.BUY, lot, "160", h.pe),
                limit(h, "bad2", Side.SELL, lot + 1, "230", h.ce),  # not a lot multiple
            )
            with pytest.raises(Rejected):
                await h.call(broker.place_multileg, MultilegRequest(h.client_id("bad"), bad))
            open_ids = {o.client_order_id for o in await h.open_orders()}
            assert not open_ids & {leg.client_order_id for leg in bad}  # all or none
