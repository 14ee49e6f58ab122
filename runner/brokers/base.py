"""The one protocol every broker adapter implements, and the capabilities it can declare.

Adapters keep pure wire translation (canonical model <-> broker JSON/form bodies) in plain functions
and do I/O in a thin class implementing :class:`Broker`. Errors are raised as :mod:`runner.errors`.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Protocol, TypeVar, cast, runtime_checkable

from runner.errors import Malformed
from runner.model import Instrument, Modification, MultilegRequest, Order, OrderRequest, Position, Product

if TYPE_CHECKING:
    from runner.brokers.instruments import InstrumentMaster

Row = TypeVar("Row")


class Capability(enum.Enum):
    NATIVE_MULTILEG = "native_multileg"  # place_multileg / cancel_multileg
    MODIFY = "modify"  # in-place modify; without it a modify is cancel + new order
    LOOKUP_BY_CLIENT_ID = "lookup_by_client_id"  # broker indexes our id natively (else: scan day orders)
    MARKET_ORDERS = "market_orders"
    STOP_ORDERS = "stop_orders"
    BRACKET_COVER = "bracket_cover"
    STREAMING = "streaming"  # pushes order events
    # The broker itself refuses a second order with the same client id (any state, all day): only then
    # may an order whose outcome is unknown and that lookups did not find be sent again at once.
    IDEMPOTENT_CLIENT_ID = "idempotent_client_id"
    MARKET_DATA = "market_data"  # quotes / LTP through the broker's own API (runner.brokers.descriptions)


@dataclass(frozen=True, slots=True)
class UnreadablePosition:
    """A position row the adapter could not read exactly (e.g. a fractional quantity on a venue that
    trades them): ``instrument`` is the broker's own name for it, ``reason`` the Malformed message."""

    instrument: str
    reason: str


class Positions(list[Position]):
    """A position read: the positions read exactly, and in :attr:`unreadable` the rows that could not be.
    One bad instrument must not fail the whole read (a square-off of the rest would be blocked): the
    adapter reports it here and the square-off step names it and ends NOT FLAT. A plain list is a
    read with nothing unreadable."""

    def __init__(self, items: Iterable[Position] = (), unreadable: Iterable[UnreadablePosition] = ()) -> None:
        super().__init__(items)
        self.unreadable = tuple(unreadable)


def unreadable_positions(positions: Sequence[Position]) -> tuple[UnreadablePosition, ...]:
    return positions.unreadable if isinstance(positions, Positions) else ()


def read_positions(
    rows: Iterable[Row], parse: Callable[[Row], Position | None], name_of: Callable[[Row], str]
) -> Positions:
    """Parse each row (None: not a position of ours); a row with a Malformed field goes to
    :attr:`Positions.unreadable` instead of failing the read."""
    out = Positions()
    bad: list[UnreadablePosition] = []
    for row in rows:
        try:
            position = parse(row)
        except Malformed as exc:
            bad.append(UnreadablePosition(name_of(row), str(exc)))
            continue
        if position is not None:
            out.append(position)
    out.unreadable = tuple(bad)
    return out


@runtime_checkable
class Broker(Protocol):
    """Async broker contract. Every method either returns the broker's truth or raises a BrokerError.

    * ``place`` returns the order as acknowledged (usually OPEN or PENDING_NEW); an ack is not a fill.
    * ``cancel`` and ``modify`` return what the broker says right after; the engine verifies by reading
      the order back. A cancel ack may leave the order PENDING_CANCEL.
    * ``get_order`` looks an order up by our deterministic client id and returns ``None`` only when
      the broker certainly has no such order today; this is how ambiguous outcomes are resolved.
    """

    name: str
    capabilities: frozenset[Capability]

    async def connect(self) -> None:
        """Log in (idempotent). Called before first use and again after AuthExpired."""

    async def close(self) -> None: ...

    async def place(self, request: OrderRequest) -> Order: ...

    async def modify(self, order: Order, change: Modification) -> Order: ...

    async def cancel(self, order: Order) -> Order: ...

    async def get_order(self, client_order_id: str) -> Order | None: ...

    async def get_order_by_broker_id(self, broker_order_id: str) -> Order: ...

    async def orders(self) -> Sequence[Order]:
        """Every order of the trading day, in any state."""

    async def open_orders(self) -> Sequence[Order]: ...

    async def positions(self) -> Sequence[Position]: ...


@runtime_checkable
class SupportsRelogin(Protocol):
    """Brokers whose sessions end daily implement this too (every adapter does; wrappers forward it).

    Kept apart from :class:`Broker` so wrappers and doubles that predate it still type-check as brokers;
    :mod:`runner.daemon.relogin` falls back to ``connect`` for an object without it."""

    async def relogin(self) -> None:
        """Drop the current session and log in again now, even if it still looks valid (``connect``
        returns at once while a token or socket exists). The daily re-login at an account's
        ``relogin_at`` calls this before the trading session, so that a broker's overnight logout
        costs a login then, not in the middle of an order."""


@runtime_checkable
class ClientIdRegistry(Protocol):
    """A broker that cannot carry our client id as is and keeps the way back only in memory (AlphaPoint:
    a numeric one-way hash). At start the gateway tells it the journal's recent client ids of the
    account (:meth:`runner.engine.gateway.Gateway.adopt_client_ids`), so orders placed by an earlier process
    read back under our ids again (else they look foreign and ``this_run_only`` filters skip them)."""

    def adopt_client_ids(self, client_ids: Mapping[str, Product]) -> None:
        """Learn these client ids of ours (with the product each was placed as); no I/O."""


@runtime_checkable
class MultilegBroker(Broker, Protocol):
    """Brokers with Capability.NATIVE_MULTILEG also implement these."""

    async def place_multileg(self, request: MultilegRequest) -> Sequence[Order]: ...

    async def cancel_multileg(self, legs: Sequence[Order]) -> Sequence[Order]: ...


@dataclass(frozen=True, slots=True)
class Quote:
    """A price from the broker's own market-data API for one instrument: the last traded price and,
    where the broker offers them, the best bid and ask. ``at`` is when these values were known to be
    the broker's current ones: the reply's receipt for a request/reply API, now for a live subscribed
    stream (it pushes every change), the last tick's receipt once the stream is down. Consumers judge
    staleness from ``at`` (runner.engine refuses prices older than its limit). ``traded_at`` is the
    last trade's time where the broker states it: an illiquid option's LTP may be an hour old and
    still be its current LTP, so it is information, not a staleness test. Aware UTC."""

    instrument: Instrument
    ltp: Decimal | None
    at: dt.datetime
    bid: Decimal | None = None
    ask: Decimal | None = None
    traded_at: dt.datetime | None = None


@runtime_checkable
class MarketData(Protocol):
    """Optional adapter capability: quotes through the broker's market-data API. ``quotes`` batches as
    the broker allows (Kotak: 50 per call), takes the account's read rate limit, and returns a Quote per
    instrument key (``Instrument.key``) the broker quoted; instruments it does not quote are absent (never
    a made-up price). Stream-only brokers subscribe for the run's instruments and answer from the last
    tick. Errors map into runner.errors like any call."""

    async def quotes(self, instruments: Sequence[Instrument]) -> Mapping[str, Quote]: ...


@runtime_checkable
class InstrumentSource(Protocol):
    """Optional adapter capability: the instrument master the adapter resolves against (the broker's own,
    as synced by ``runner instruments sync``; the paper broker's generated one). Rolling instruments
    (nearest expiry, ATM-relative strikes) and pre-open checks resolve through it."""

    async def instrument_master(self) -> InstrumentMaster: ...


class ForwardingBroker:
    """A Broker that passes every call to ``inner``. Guards (the kill switch, a plan's allow-list)
    subclass it and override only the calls they police, so reads can never be forgotten."""

    def __init__(self, inner: Broker) -> None:
        self.inner = inner
        self.name = inner.name
        self.capabilities: frozenset[Capability] = inner.capabilities

    async def connect(self) -> None:
        await self.inner.connect()

    async def close(self) -> None:
        await self.inner.close()

    async def place(self, request: OrderRequest) -> Order:
        return await self.inner.place(request)

    async def modify(self, order: Order, change: Modification) -> Order:
        return await self.inner.modify(order, change)

    async def cancel(self, order: Order) -> Order:
        return await self.inner.cancel(order)

    async def place_multileg(self, request: MultilegRequest) -> Sequence[Order]:
        return await cast(MultilegBroker, self.inner).place_multileg(request)

    async def cancel_multileg(self, legs: Sequence[Order]) -> Sequence[Order]:
        return await cast(MultilegBroker, self.inner).cancel_multileg(legs)

    async def get_order(self, client_order_id: str) -> Order | None:
        return await self.inner.get_order(client_order_id)

    async def get_order_by_broker_id(self, broker_order_id: str) -> Order:
        return await self.inner.get_order_by_broker_id(broker_order_id)

    async def orders(self) -> Sequence[Order]:
        return await self.inner.orders()

    async def open_orders(self) -> Sequence[Order]:
        return await self.inner.open_orders()

    async def positions(self) -> Sequence[Position]:
        return await self.inner.positions()

    def adopt_client_ids(self, client_ids: Mapping[str, Product]) -> None:
        if isinstance(self.inner, ClientIdRegistry):
            self.inner.adopt_client_ids(client_ids)

    async def instrument_master(self) -> InstrumentMaster | None:
        """The inner adapter's master, or None where it has none (see :class:`InstrumentSource`)."""
        if isinstance(self.inner, InstrumentSource):
            return await self.inner.instrument_master()
        return None

    async def ltp(self, instrument: Instrument) -> Decimal | None:
        """A read: risk checks and LTP-relative prices need it (None if the broker quotes nothing)."""
        quote = getattr(self.inner, "ltp", None)
        return await quote(instrument) if quote is not None else None

    async def quotes(self, instruments: Sequence[Instrument]) -> Mapping[str, Quote]:
        """A read, passed through (empty when the inner broker has no market data)."""
        if isinstance(self.inner, MarketData):
            return await self.inner.quotes(instruments)
        return {}
