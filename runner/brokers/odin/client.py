"""ODIN Cloud REST Pro API (63 moons / Synapsewave) adapter: :class:`OdinBroker` does the I/O.

The wire format (routes, bodies, status and field maps, reply parsing; its sources and wire facts) is
pure translation in :mod:`runner.brokers.odin.wire`; the REST session (login, token, one request) is
:class:`runner.brokers.odin.session.OdinSession`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from runner.brokers.base import Quote, read_positions
from runner.brokers.descriptions import DESCRIPTIONS
from runner.brokers.odin import feed_wire
from runner.brokers.odin.feed import OdinFeed
from runner.brokers.odin.session import OdinSession
from runner.brokers.odin.wire import (
    BROKER,
    MULTILEG_PATH,
    ORDERS_PATH,
    POSITIONS_PATH,
    REGULAR_PATH,
    LegSpec,
    WireOptions,
    first,
    leg_number,
    modify_body,
    multileg_body,
    multileg_leg_id,
    multileg_path,
    odin_exchange,
    order_from_row,
    order_identifier,
    order_path,
    place_body,
    position_from_row,
    scrip_token,
    split_leg_id,
)
from runner.brokers.primed import PrimedBook, PrimedRequest
from runner.brokers.warm import warm_pool
from runner.clock import Clock, SystemClock
from runner.errors import (
    AuthExpired,
    BrokerError,
    InstrumentUnknown,
    NotFound,
    NotModifiable,
    OutcomeUnknown,
    RateLimited,
    Rejected,
    Retryable,
)
from runner.ids import split_leg_client_id
from runner.model import (
    Instrument,
    Modification,
    MultilegRequest,
    Order,
    OrderRequest,
    OrderStatus,
    Position,
    Product,
)
from runner.wirejson import dumps

if TYPE_CHECKING:

    from runner.accounts import Account
    from runner.brokers.instruments import InstrumentMaster, MasterRow

log = logging.getLogger("runner.brokers.odin")  # stable name, not __name__: people filter on it

# ---------------------------------------------------------------------------------------------------------
# I/O: the Broker implementation
# ---------------------------------------------------------------------------------------------------------

_IST = dt.timezone(dt.timedelta(hours=5, minutes=30), "IST")
# Shape of order_identifier(client_order_id) for our (long) ids: how a restarted process knows its rows.
_OUR_TAG = re.compile(r"r[a-z2-7]{9}")


class OdinBroker:
    """:class:`runner.brokers.base.MultilegBroker` over the ODIN Cloud REST Pro API."""

    name = BROKER
    capabilities = DESCRIPTIONS[BROKER].capabilities

    def __init__(
        self,
        account: Account,
        *,
        master: InstrumentMaster,
        transport: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        from runner.brokers.ratelimit import RateLimiter

        base = account.endpoints.get("base_url") or account.endpoints.get("rest")
        if not base:
            raise ValueError(f"account {account.name!r}: endpoints.base_url is required for ODIN")
        self.account = account
        self.base_url = base.rstrip("/")
        self.master = master
        self.transport = transport or account.options.get("http_transport")
        opts = account.options
        self.wire = WireOptions(
            strike_in_paise=bool(opts.get("strike_in_paise", True)),
            client_id=opts.get("client_id"),
        )
        self.positions_type = str(opts.get("positions_type", "NET"))
        self.confirm_place = bool(opts.get("confirm_place", True))
        self.page_size = int(opts.get("page_size", 200))
        self.clock: Clock = clock or SystemClock()
        rl = account.rate_limit
        self.limiter = RateLimiter(rl.orders_per_second, rl.burst)
        self.session = OdinSession(account, self.base_url, transport=self.transport)
        self._tz: dt.tzinfo = _IST
        # Our full client ids by their 10-char order_identifier, and multileg legs by client id, for
        # orders this process placed or looked up. Only a cache: get_order recomputes the identifier
        # from the client id (a leg's from its group id), so a restarted process finds its orders.
        self._by_tag: dict[str, str] = {}
        # leg client id -> (multileg tag, leg_no, product as requested if this process sent it)
        self._legs: dict[str, tuple[str, int, Product | None]] = {}
        self._requests: dict[str, OrderRequest] = {}  # regular orders this process sent, by client id
        # Market feed: a separate WebSocket host (``endpoints.feed``, e.g. ``wss://host:port``); its
        # touchline subscriptions take their own read-rate bucket.
        self.feed_url = account.endpoints.get("feed") or account.endpoints.get("market_feed")
        self.first_tick_seconds = float(opts.get("feed_first_tick_seconds", 2.0))
        self._feed: OdinFeed | None = None
        self._warm_lock = asyncio.Lock()  # one warming at a time: concurrent ones would open twice as many
        # armed first orders, built with their connection ahead of the instant (runner.brokers.primed);
        # extra: the rate-limit key. Each is bound to the login it was built under (session.current).
        self._primed = PrimedBook()

    # -- session ----------------------------------------------------------------------------------------

    async def connect(self) -> None:
        await self.session.connect()

    async def relogin(self) -> None:
        await self.session.relogin()

    async def warm_connections(self, sends: int) -> None:
        """Connections for ``sends`` orders sent at once, opened ahead of their instant
        (:mod:`runner.brokers.warm`): the sends then write at once instead of connecting first."""
        async with self._warm_lock:
            client = self.session.client
            if client is not None:
                await warm_pool(client, sends, self.account.timeout_seconds)

    async def prime(self, request: OrderRequest) -> None:
        """``request``'s place call as bytes on a connection of its own (:mod:`runner.brokers.primed`):
        at the instant :meth:`place` only writes it. Best effort: on any trouble (or no login yet) it is
        sent the ordinary way."""
        login, cid = self.session.current, request.client_order_id
        if login is None or cid in self._primed:
            return
        try:
            body = place_body(request, self._resolve(request.instrument), self.wire)
            primed = await PrimedRequest.open(self.base_url, "POST", REGULAR_PATH, self.session.headers(),
                                              dumps(body).encode(), self.account.timeout_seconds)
        except Exception as exc:  # the place at the instant builds and connects as it always did
            log.debug("priming %s failed: %s: %s", cid, type(exc).__name__, exc)
            return
        if body["order_identifier"] in self._by_tag:
            primed.close()  # its place already went the ordinary way
            return
        self._primed.add(request, login, primed, self._rate_key(body["scrip_info"]["exchange"]))

    def unprime(self, client_order_id: str) -> None:
        self._primed.unprime(client_order_id)

    def write_primed(self, request: OrderRequest) -> bool:
        """Write ``request``'s primed call now if it can leave now (primed for exactly it, under the
        current login, a rate-limit token free, never sent); its :meth:`place` then reads the reply."""
        cid = request.client_order_id
        primed = self._primed.usable(request, self.session.current)
        tag = order_identifier(cid)
        if primed is None or tag in self._by_tag:
            return False
        if not self.limiter.try_acquire(self._primed[cid][3]):
            return False  # the ordinary path waits for its token
        primed.write()
        self._by_tag[tag] = cid  # sent: never again without looking first
        self._requests[cid] = request
        return True

    async def close(self) -> None:
        self._primed.close_all()
        if self._feed is not None:
            feed, self._feed = self._feed, None
            await feed.close()
        await self.session.close()

    # -- transport --------------------------------------------------------------------------------------

    async def _read(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return await self.session.call("GET", path, params=params, mutating=False)

    def _rate_key(self, exchange: str) -> tuple[str, str | None]:
        from runner.brokers.ratelimit import segment_of

        return (self.account.name, segment_of(exchange) if self.account.rate_limit.per_segment else None)

    async def _write(
        self, method: str, path: str, *, exchange: str, body: Any = None, primed: PrimedRequest | None = None
    ) -> Any:
        """One write under the rate limit; through ``primed`` (a place's primed request) if it was written
        ahead (its token taken then) or can still be (else it is closed and the write built afresh)."""
        key = self._rate_key(exchange)
        if primed is None or not primed.written:
            await self.limiter.acquire(key)
        try:
            if primed is not None and (primed.written or primed.usable()):
                return await self.session.send_primed(primed)
            if primed is not None:
                primed.close()  # its connection closed while the token was awaited
            return await self.session.call(method, path, body=body, mutating=True)
        except RateLimited as exc:
            self.limiter.penalize(key, exc.retry_after if exc.retry_after is not None else 1.0)
            raise

    # -- orders -----------------------------------------------------------------------------------------

    def _resolve(self, instrument: Instrument) -> MasterRow:
        row = self.master.resolve(instrument)
        scrip_token(row)  # fail before sending if the master row lacks the token
        return row

    async def place(self, request: OrderRequest) -> Order:
        row = self._resolve(request.instrument)
        body = place_body(request, row, self.wire)
        tag = body["order_identifier"]
        primed = self._primed.take(request, self.session.current)
        if tag in self._by_tag and (primed is None or not primed.written):
            # ODIN does not de-duplicate order_identifier: never send an id twice without looking first.
            existing = await self.get_order(request.client_order_id)
            if existing is not None:
                if primed is not None:
                    primed.close()
                return existing
        self._by_tag[tag] = request.client_order_id
        self._requests[request.client_order_id] = request
        try:
            data = await self._write("POST", REGULAR_PATH, exchange=body["scrip_info"]["exchange"], body=body,
                                     primed=primed)
        except OutcomeUnknown:
            # Resolve by reading (never by re-sending): found -> confirm it; else the engine decides.
            found = await self._lookup_after_unknown(request.client_order_id)
            if found is None:
                raise
            return (await self._confirm([found]))[0]
        order_id = str(first(data or {}, "orderId", "order_id") or "")
        if not order_id:
            # Accepted without an id: the order may exist. Resolve by lookup, never by re-sending.
            raise OutcomeUnknown("place acknowledged without an orderId", broker=BROKER)
        ack = Order.from_request(request, OrderStatus.PENDING_NEW, broker_order_id=order_id,
                                 updated_at=self.clock.now()).evolve(instrument=row.instrument, tag=tag)
        # "Order Entry Sent to OMS" is not a confirmation: the OMS rejects afterwards, in the book.
        return (await self._confirm([ack]))[0]

    async def _lookup_after_unknown(self, client_order_id: str) -> Order | None:
        try:
            return await self.get_order(client_order_id)
        except (Retryable, AuthExpired):
            return None

    async def _confirm(self, acks: Sequence[Order]) -> Sequence[Order]:
        """Read acknowledged orders back once; raise Rejected if the OMS rejected them."""
        if not self.confirm_place:
            return acks
        try:
            back = [(await self.get_order_by_broker_id(a.broker_order_id or "")).evolve(
                client_order_id=a.client_order_id) for a in acks]
        except (Retryable, AuthExpired, NotFound):
            return acks  # the ack stands; the engine reads the order back later anyway
        rejected = next((o for o in back if o.status is OrderStatus.REJECTED), None)
        if rejected is not None:
            raise Rejected(rejected.reject_reason or "rejected by the OMS", code=rejected.raw_status,
                           broker=BROKER)
        return back

    async def modify(self, order: Order, change: Modification) -> Order:
        if order.broker_order_id is None:
            raise NotFound("order has no broker id", broker=BROKER)
        if split_leg_id(order.broker_order_id):
            raise NotModifiable("a multileg leg is modified with modify_multileg (all legs)", broker=BROKER)
        current = await self.get_order_by_broker_id(order.broker_order_id)
        if current.status.is_terminal:
            raise NotModifiable(f"order is {current.raw_status}", broker=BROKER)
        exchange = odin_exchange(current.instrument, self.master.resolve(current.instrument))
        body = modify_body(current, change, exchange=exchange, traded_quantity=current.filled_quantity)
        await self._write("PUT", order_path(exchange, order.broker_order_id), exchange=exchange, body=body)
        try:
            back = await self.get_order_by_broker_id(order.broker_order_id)
        except (Retryable, AuthExpired):
            # The modify was accepted; a failed read-back must not make the caller send it again.
            trigger = change.trigger_price if change.trigger_price is not None else current.trigger_price
            return current.evolve(
                quantity=body["quantity"], order_type=change.order_type or current.order_type,
                price=change.price if change.price is not None else current.price, trigger_price=trigger,
                client_order_id=order.client_order_id)
        return back.evolve(client_order_id=order.client_order_id)

    async def cancel(self, order: Order) -> Order:
        if order.broker_order_id is None:
            raise NotFound("order has no broker id", broker=BROKER)
        if split_leg_id(order.broker_order_id):
            return (await self.cancel_multileg([order]))[0]
        exchange = odin_exchange(order.instrument, self.master.resolve(order.instrument))
        await self._write("DELETE", order_path(exchange, order.broker_order_id), exchange=exchange)
        # A cancel ack is not a cancel: report PENDING_CANCEL unless the book already shows the outcome.
        try:
            current = await self.get_order_by_broker_id(order.broker_order_id)
        except (Retryable, AuthExpired):
            # Accepted; a failed read-back must not make the caller cancel again (and see NotModifiable).
            return order.evolve(status=OrderStatus.PENDING_CANCEL)
        current = current.evolve(client_order_id=order.client_order_id)
        if current.status.is_working:
            return current.evolve(status=OrderStatus.PENDING_CANCEL)
        return current

    # -- reads ------------------------------------------------------------------------------------------

    async def _book(self, extra: Mapping[str, Any] | None = None) -> list[Mapping[str, Any]]:
        """Every row of the order book, page by page (``offset`` is 1-based; de-duplicated either way)."""
        rows: list[Mapping[str, Any]] = []
        seen: set[tuple[Any, ...]] = set()
        page = 1
        while True:
            params: dict[str, Any] = {"offset": page, "limit": self.page_size, "orderStatus": -1}
            params.update(extra or {})
            data = await self._read(ORDERS_PATH, params)
            batch = [r for r in (data or []) if isinstance(r, Mapping)]
            fresh = 0
            for r in batch:
                key = (r.get("order_id"), r.get("gateway_order_no"), r.get("leg_indicator"))
                if key not in seen:
                    seen.add(key)
                    rows.append(r)
                    fresh += 1
            if len(batch) < self.page_size or fresh == 0:
                return rows
            page += 1

    def _readable(
        self, row: Mapping[str, Any], read: Callable[[], Order], *, ours: bool = False
    ) -> Order | None:
        """``read()`` of a book row, or None for a foreign row that cannot be read (a manual order of a
        type this adapter does not map, placed from the broker's own terminal): skipped and logged, so one
        such row cannot break every read on the account. Our own orders are never skipped: one this
        process sent comes back from its request with status UNKNOWN (resolved by a later read); one it
        cannot rebuild raises BrokerError."""
        try:
            return read()
        except (BrokerError, ValueError) as exc:
            why = exc.message if isinstance(exc, BrokerError) else str(exc)
            tag = str(first(row, "order_identifier") or "").strip()
            oid = str(first(row, "order_id") or "")
            cid = self._by_tag.get(tag)
            request = self._requests.get(cid) if cid and first(row, "gateway_order_no") is None else None
            if request is not None:
                log.error("odin: our order %s (%s) is unreadable: %s", oid, cid, why)
                return Order.from_request(request, OrderStatus.UNKNOWN, broker_order_id=oid or None,
                                          raw_status=str(first(row, "status", "order_status") or "") or None,
                                          tag=tag)
            legs = {leg_tag for leg_tag, _no, _prod in self._legs.values()}
            if ours or cid is not None or tag in legs or _OUR_TAG.fullmatch(tag):
                raise BrokerError(f"order {oid} ({tag}) is unreadable: {why}", broker=BROKER) from exc
            log.warning("odin: skipping foreign order %s: %s", oid, why)
            return None

    def _cid_for(self, row: Mapping[str, Any]) -> str:
        tag = str(first(row, "order_identifier") or "")
        return self._by_tag.get(tag) or tag or str(first(row, "order_id") or "")

    def _row_to_order(self, row: Mapping[str, Any], cid: str | None = None) -> Order:
        return order_from_row(row, client_order_id=cid or self._cid_for(row), master=self.master, tz=self._tz)

    def _leg_to_order(self, row: Mapping[str, Any], cid: str | None = None) -> Order:
        gw = str(first(row, "gateway_order_no") or "")
        leg_no = leg_number(row)
        tag = str(first(row, "order_identifier") or "")
        product = None
        if cid is None:
            for leg_cid, (leg_tag, no, prod) in self._legs.items():
                if leg_tag == tag and no == leg_no:
                    cid, product = leg_cid, prod
                    break
        else:
            product = self._legs.get(cid, ("", 0, None))[2]
        return order_from_row(row, client_order_id=cid or f"{tag}#L{leg_no}", master=self.master, tz=self._tz,
                              broker_order_id=multileg_leg_id(gw, leg_no), product=product)

    async def _multileg_rows(self, tag: str) -> dict[int, Mapping[str, Any]]:
        """Rows of the multileg book carrying our identifier, by leg number."""
        return {leg_number(r): r for r in await self._book({"orderType": "multileg"})
                if str(first(r, "order_identifier") or "").strip() == tag}

    def _leg_ref(self, client_order_id: str) -> tuple[str, int] | None:
        """(multileg tag, leg number) of a leg client id: remembered, or derived from the group id (see
        runner.ids.leg_client_id) so that it survives a restart."""
        known = self._legs.get(client_order_id)
        if known is not None:
            return known[0], known[1]
        derived = split_leg_client_id(client_order_id)
        if derived is None:
            return None
        group, leg_no = derived
        return order_identifier(group), leg_no

    async def get_order(self, client_order_id: str) -> Order | None:
        """Look an order up by our id: ODIN indexes neither it nor our tag, so scan the day's books."""
        leg = self._leg_ref(client_order_id)
        if leg is not None:
            tag, leg_no = leg
            row = (await self._multileg_rows(tag)).get(leg_no)
            if row is None:
                return None
            self._legs.setdefault(client_order_id, (tag, leg_no, None))
            return self._own(row, partial(self._leg_to_order, row, client_order_id))
        tag = order_identifier(client_order_id)
        for row in await self._book():
            if str(first(row, "order_identifier") or "").strip() == tag:
                self._by_tag[tag] = client_order_id
                return self._own(row, partial(self._row_to_order, row, client_order_id))
        return None

    def _own(self, row: Mapping[str, Any], read: Callable[[], Order]) -> Order:
        order = self._readable(row, read, ours=True)
        assert order is not None  # ours=True: unreadable raises
        return order

    async def get_order_by_broker_id(self, broker_order_id: str) -> Order:
        leg = split_leg_id(broker_order_id)
        if leg is not None:
            gw, leg_no = leg
            for row in await self._book({"orderType": "multileg"}):
                if str(first(row, "gateway_order_no")) == gw and leg_number(row) == leg_no:
                    return self._own(row, partial(self._leg_to_order, row))
            raise NotFound(f"no multileg leg {broker_order_id}", broker=BROKER)
        data = await self._read(ORDERS_PATH, {"offset": 1, "limit": self.page_size, "orderStatus": -1,
                                              "order_id": broker_order_id})
        for row in data or []:
            if isinstance(row, Mapping) and str(first(row, "order_id")) == broker_order_id:
                return self._own(row, partial(self._row_to_order, row))
        raise NotFound(f"no order {broker_order_id}", broker=BROKER)

    async def orders(self) -> Sequence[Order]:
        regular = [self._readable(r, partial(self._row_to_order, r)) for r in await self._book()]
        legs = [self._readable(r, partial(self._leg_to_order, r))
                for r in await self._book({"orderType": "multileg"})]
        return [o for o in regular + legs if o is not None]

    async def open_orders(self) -> Sequence[Order]:
        return [o for o in await self.orders() if o.status.is_working or o.status is OrderStatus.PENDING_NEW]

    async def positions(self) -> Sequence[Position]:
        data = await self._read(f"{POSITIONS_PATH}/{quote(self.positions_type, safe='')}")
        rows = [r for r in (data or []) if isinstance(r, Mapping)]
        return read_positions(rows, lambda r: position_from_row(r, self.master),
                              lambda r: f"{first(r, 'exchange') or ''}:{first(r, 'symbol') or ''}")

    # -- market data ------------------------------------------------------------------------------------

    def _feed_api_key(self) -> str:
        # The feed client's ``api_key`` (sent as ``68=<key>|401=2``); which ODIN key it is, is unverified:
        # ``feed_api_key`` if the account names one, else the API key of the REST login.
        name = "feed_api_key" if "feed_api_key" in self.account.credentials else "api_key"
        return self.account.secret(name).reveal()

    async def quotes(self, instruments: Sequence[Instrument]) -> Mapping[str, Quote]:
        """Touchline quotes from the market feed (stream only: no REST quote exists). Instruments are
        subscribed on first request and answered from their last tick, waiting up to
        ``feed_first_tick_seconds`` for a first tick of newly subscribed ones; instruments the master or
        the feed does not know are absent."""
        if not self.feed_url:
            log.warning("odin: no market feed configured (endpoints.feed): no quotes")
            return {}
        tokens: dict[str, list[Instrument]] = {}
        for i in instruments:
            try:
                tokens.setdefault(feed_wire.feed_token(self.master.resolve(i)), []).append(i)
            except InstrumentUnknown as exc:
                log.warning("odin: no quote for %s: %s", i.key, exc.message)
        if not tokens:
            return {}
        if self._feed is None:
            self._feed = OdinFeed(
                self.feed_url, user_id=lambda: self.account.secret("user_id").reveal(),
                api_key=self._feed_api_key, clock=self.clock, limiter=self.limiter,
                limit_key=(self.account.name, "feed"), first_tick_seconds=self.first_tick_seconds,
                timeout=self.account.timeout_seconds)
        await self._feed.subscribe(list(tokens))
        await self._feed.wait_first(list(tokens))
        out: dict[str, Quote] = {}
        now = self.clock.now().astimezone(dt.UTC)
        live = self._feed.connected  # a live touchline pushes every change: what it holds is current
        for token, insts in tokens.items():
            held = self._feed.ticks.get(token)
            if held is None:
                continue
            tick, received = held
            if tick.ltp is None and tick.bid is None and tick.ask is None:
                continue
            for i in insts:
                out[i.key] = Quote(i, tick.ltp, now if live else received, bid=tick.bid, ask=tick.ask,
                                   traded_at=tick.at)
        return out

    async def instrument_master(self) -> InstrumentMaster:
        """:class:`runner.brokers.base.InstrumentSource`: the master this adapter resolves orders against
        (rolling instruments resolve through it)."""
        return self.master

    async def ltp(self, instrument: Instrument) -> Decimal | None:
        quote = (await self.quotes([instrument])).get(instrument.key)
        return quote.ltp if quote is not None else None

    # -- multileg ---------------------------------------------------------------------------------------

    async def _existing_multileg(self, request: MultilegRequest, tag: str) -> list[Order] | None:
        """The legs of a multileg already in the book under ``tag``; None when there is none. A partial
        match cannot be a multileg we sent (legs are accepted all or none): ambiguous, say so."""
        rows = await self._multileg_rows(tag)
        if not rows:
            return None
        if set(rows) != set(range(1, len(request.legs) + 1)):
            raise OutcomeUnknown(f"multileg {tag} in the book has legs {sorted(rows)}", broker=BROKER)
        return [self._leg_to_order(rows[n], leg.client_order_id)
                for n, leg in enumerate(request.legs, start=1)]

    async def place_multileg(self, request: MultilegRequest) -> Sequence[Order]:
        rows = [self._resolve(leg.instrument) for leg in request.legs]
        specs = [LegSpec(r, leg.side, leg.quantity, leg.order_type, leg.price)
                 for r, leg in zip(rows, request.legs, strict=True)]
        # The identifier comes from the group id, so a lookup by any leg's derived client id (after a
        # restart, too) finds the multileg again; see get_order.
        tag = order_identifier(request.client_order_id)
        body = multileg_body(specs, identifier=tag, validity=request.legs[0].validity, opts=self.wire)
        for i, leg in enumerate(request.legs, start=1):
            self._legs[leg.client_order_id] = (tag, i, leg.product)
        # ODIN does not de-duplicate order_identifier and this process may be a restarted one: look
        # first (one read of the multileg book), send only when the group is certainly absent.
        existing = await self._existing_multileg(request, tag)
        if existing is not None:
            return existing
        exchange = body["leg_details"][0]["scrip_info"]["exchange"]
        try:
            data = await self._write("POST", MULTILEG_PATH, exchange=exchange, body=body)
        except OutcomeUnknown:
            try:
                found = await self._existing_multileg(request, tag)
            except (Retryable, AuthExpired):
                found = None
            if found is None:
                raise
            return await self._confirm(found)
        gw = str(first(data or {}, "gateway_order_no", "gatewayOrderNo") or "")
        if not gw:
            raise OutcomeUnknown("multileg place acknowledged without a gateway_order_no", broker=BROKER)
        now = self.clock.now()
        acks = [
            Order.from_request(leg, OrderStatus.PENDING_NEW, broker_order_id=multileg_leg_id(gw, i),
                               updated_at=now).evolve(instrument=row.instrument, tag=tag)
            for i, (leg, row) in enumerate(zip(request.legs, rows, strict=True), start=1)
        ]
        return await self._confirm(acks)

    async def _multileg_action(
        self, order_flag: str, legs: Sequence[Order], changes: Sequence[Modification | None]
    ) -> Sequence[Order]:
        ids = [split_leg_id(o.broker_order_id or "") for o in legs]
        gws = {i[0] for i in ids if i is not None}
        if len(gws) != 1 or None in ids:
            raise NotFound("legs must all belong to one ODIN multileg order", broker=BROKER)
        gw = gws.pop()
        # The body must carry every leg (seed 004): read the whole multileg back, then apply changes.
        book = [r for r in await self._book({"orderType": "multileg"})
                if str(first(r, "gateway_order_no")) == gw]
        if not book:
            raise NotFound(f"no multileg order {gw}", broker=BROKER)
        current = sorted((self._leg_to_order(r) for r in book),
                         key=lambda o: split_leg_id(o.broker_order_id or "") or ("", 0))
        if all(o.status.is_terminal for o in current):
            raise NotModifiable("multileg order is no longer pending", broker=BROKER)
        by_no = {ids[k][1]: changes[k] for k in range(len(legs)) if ids[k] is not None}  # type: ignore[index]
        specs = []
        for o in current:
            no = (split_leg_id(o.broker_order_id or "") or ("", 0))[1]
            ch = by_no.get(no)
            specs.append(LegSpec(
                self.master.resolve(o.instrument), o.side,
                ch.quantity if ch and ch.quantity is not None else o.quantity,
                (ch.order_type if ch and ch.order_type else o.order_type),
                ch.price if ch and ch.price is not None else o.price,
            ))
        tag = current[0].tag or ""
        body = multileg_body(specs, identifier=tag, validity=current[0].validity, opts=self.wire)
        exchange = body["leg_details"][0]["scrip_info"]["exchange"]
        await self._write("PUT", multileg_path(order_flag, gw), exchange=exchange, body=body)
        after = {o.broker_order_id: o for o in
                 (self._leg_to_order(r) for r in await self._book({"orderType": "multileg"})
                  if str(first(r, "gateway_order_no")) == gw)}
        out = []
        for leg in legs:
            now = after.get(leg.broker_order_id, leg).evolve(client_order_id=leg.client_order_id)
            if order_flag == "cancel" and now.status.is_working:
                now = now.evolve(status=OrderStatus.PENDING_CANCEL)
            out.append(now)
        return out

    async def cancel_multileg(self, legs: Sequence[Order]) -> Sequence[Order]:
        return await self._multileg_action("cancel", legs, [None] * len(legs))

    async def modify_multileg(
        self, legs: Sequence[Order], changes: Sequence[Modification]
    ) -> Sequence[Order]:
        """Modify a pending multileg order; ODIN wants every leg in the body, changed or not."""
        if len(changes) != len(legs):
            raise ValueError("one Modification per leg")
        return await self._multileg_action("modify", legs, list(changes))


def create(account: Account, **context: Any) -> OdinBroker:
    """Factory used by the broker registry. ``context`` may carry ``master`` (an InstrumentMaster)."""
    return OdinBroker(
        account,
        master=master(account, **context),
        transport=context.get("transport"),
        clock=context.get("clock"),
    )


def master(account: Account, **context: Any) -> InstrumentMaster:
    """The master the factory resolves against (runner.brokers.registry.MASTERS)."""
    from runner.instruments.load import master_for

    given: InstrumentMaster | None = context.get("master")
    return given if given is not None else master_for(account, db_url=context.get("db_url"))
