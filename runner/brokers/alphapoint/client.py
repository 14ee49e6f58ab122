"""AlphaPoint APEX adapter: JSON-RPC over one WebSocket per account.

Pure translation lives in :mod:`runner.brokers.alphapoint.wire`; :class:`ApexSession`
(:mod:`runner.brokers.alphapoint.session`) does the socket I/O and :class:`AlphaPointBroker` implements
:class:`runner.brokers.base.Broker`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from runner.brokers import expiry
from runner.brokers.alphapoint.positions import positions_from_records
from runner.brokers.alphapoint.quotes import level1_quotes
from runner.brokers.alphapoint.session import ApexSession
from runner.brokers.alphapoint.wire import (
    BROKER,
    PEG_PRICE_TYPES,
    AccountRef,
    _key,
    authenticate_body,
    cancel_order_body,
    cancel_replace_body,
    check_reply,
    ci,
    instrument_id_of,
    latest_for_client,
    modify_order_body,
    order_from_wire,
    send_order_body,
)
from runner.brokers.base import Quote
from runner.brokers.descriptions import DESCRIPTIONS
from runner.brokers.instruments import InstrumentMaster, MasterRow
from runner.brokers.ratelimit import RateLimiter, segment_of
from runner.brokers.ratelimit import read_limiter as read_limiter_for
from runner.clock import Clock, SystemClock
from runner.errors import (
    AuthExpired,
    BrokerError,
    InstrumentUnknown,
    NotFound,
    NotModifiable,
    OutcomeUnknown,
    Rejected,
    Retryable,
    SessionExpired,
)
from runner.ids import numeric_id
from runner.model import (
    Instrument,
    Modification,
    Order,
    OrderRequest,
    OrderStatus,
    Position,
    Product,
)
from runner.scrub import secret

if TYPE_CHECKING:
    from runner.accounts import Account

log = logging.getLogger("runner.brokers.alphapoint")  # stable name, not __name__: people filter on it

# ---------------------------------------------------------------------------------------------------------
# The Broker

# Market-data reads (GetLevel1) take their own token bucket, apart from the order-entry one: APEX documents
# no public read limit per session, so stay modest by default (account ``rate_limit.reads_per_second``,
# ``reads_burst``); option ``quote_concurrency`` bounds the GetLevel1 calls in flight on the one socket.
DEFAULT_READS_PER_SECOND = 10.0
DEFAULT_READS_BURST = 10
DEFAULT_QUOTE_CONCURRENCY = 8


class AlphaPointBroker:
    name = BROKER
    capabilities = DESCRIPTIONS[BROKER].capabilities

    def __init__(
        self,
        account: Account,
        *,
        master: InstrumentMaster | None = None,
        limiter: RateLimiter | None = None,
        url: str | None = None,
        read_limiter: RateLimiter | None = None,
        clock: Clock | None = None,
        **context: Any,
    ) -> None:
        self.account = account
        self.clock: Clock = clock or SystemClock()
        url = (
            url
            or account.endpoints.get("ws")
            or account.endpoints.get("websocket")
            or account.endpoints.get("base_url")
        )
        if not url:
            raise ValueError(
                f"account {account.name!r}: alphapoint needs endpoints.ws (wss://<venue>/WSGateway/)"
            )
        if master is None:
            if not account.instruments:
                raise ValueError(
                    f"account {account.name!r}: alphapoint needs an instrument master (instruments:)"
                )
            master = InstrumentMaster.load(account.instruments, broker=BROKER)
        self.master = master
        self._by_instrument_id: dict[int, MasterRow] = {}
        for row in master:
            with contextlib.suppress(InstrumentUnknown, ValueError):
                self._by_instrument_id[instrument_id_of(row)] = row
        rl = account.rate_limit
        self.limiter = limiter or RateLimiter(rl.orders_per_second, rl.burst)
        opts = account.options
        self.read_limiter = read_limiter or read_limiter_for(
            rl, per_second=DEFAULT_READS_PER_SECOND, burst=DEFAULT_READS_BURST
        )
        self.quote_concurrency = max(1, int(opts.get("quote_concurrency", DEFAULT_QUOTE_CONCURRENCY)))
        peg = opts.get("peg_price_type", 1)
        self.peg_price_type = PEG_PRICE_TYPES[_key(peg)] if isinstance(peg, str) else int(peg)
        self.default_product = Product(opts.get("product", Product.MIS.value))
        self._acct: AccountRef | None = None
        if "account_id" in opts and "oms_id" in opts:
            self._acct = AccountRef(int(opts["oms_id"]), int(opts["account_id"]))
        self._client_ids: dict[int, str] = {}  # numeric ClientOrderId -> our client id
        self._products: dict[str, Product] = {}  # our client id -> product (APEX has no product field)
        self._instrument_products: dict[str, Product] = {}  # instrument key -> product last traded
        self._events: dict[int, Mapping[str, Any]] = {}  # latest OrderStateEvent per OrderId
        self._caller_instruments: dict[
            int, Instrument
        ] = {}  # InstrumentId -> instrument as the caller spelt it
        self.nonce: Callable[[], str] = lambda: str(time.time_ns() // 1000)
        self.session = ApexSession(
            url, timeout=account.timeout_seconds, on_open=self._authenticate, on_event=self._on_event
        )
        self.logins = 0

    # -- session ---------------------------------------------------------------------------------------

    def _credentials(self) -> dict[str, str]:
        creds = self.account.credentials
        keys: tuple[str, ...] = (
            ("api_key", "api_secret", "user_id") if "api_key" in creds else ("username", "password")
        )
        return {k: self.account.secret(k).reveal() for k in keys}

    async def _authenticate(self, session: ApexSession) -> None:
        nonce = self.nonce()
        frame = await session.call_raw(
            "AuthenticateUser", authenticate_body(self._credentials(), nonce), mutating=False
        )
        try:
            body = check_reply("AuthenticateUser", frame)
        except SessionExpired as exc:  # "Not Authorized" to a login is a refusal, not an expired session
            refused = f"AuthenticateUser refused: {exc.message}"
            raise BrokerError(refused, code="auth", broker=BROKER) from None
        reply = ci(body if isinstance(body, Mapping) else {})
        if reply.get("requires2fa") and not reply.get("authenticated"):
            raise BrokerError(
                "AuthenticateUser: the user requires 2FA; use API-key authentication", broker=BROKER
            )
        if not reply.get("authenticated"):
            # Never echo credentials: only the broker's own message.
            raise BrokerError(
                f"AuthenticateUser refused: {reply.get('errormsg') or 'not authenticated'}",
                code="auth",
                broker=BROKER,
            )
        self.logins += 1
        if reply.get("sessiontoken"):  # APEX's session token (not sent back by us): never printed either
            secret(str(reply["sessiontoken"]))
        user = ci(reply.get("user") or {})
        if self._acct is None:
            self._acct = AccountRef(int(user.get("omsid") or 1), int(user.get("accountid") or 0))
        sub = await session.call_raw(
            "SubscribeAccountEvents",
            {"AccountId": self._acct.account_id, "OMSId": self._acct.oms_id},
            mutating=False,
        )
        check_reply("SubscribeAccountEvents", sub)

    def _on_event(self, name: str, body: Any) -> None:
        if name == "OrderStateEvent" and isinstance(body, Mapping):
            oid = int(ci(body).get("orderid") or 0)
            self._events[oid] = body

    async def connect(self) -> None:
        try:
            await self.session.ensure_open()
        except AuthExpired:  # e.g. the session expired between login and subscribe: once more
            await self.session.close()
            await self.session.ensure_open()

    async def relogin(self) -> None:
        await self.session.reauthenticate()

    async def close(self) -> None:
        if self.session.is_open:
            with contextlib.suppress(BrokerError):
                await self.session.call_raw("LogOut", {}, mutating=False)
        await self.session.close()

    async def _call(self, name: str, payload: Any, *, mutating: bool) -> Any:
        """One call. On AuthExpired a read logs in again once and is repeated; an order request is not
        repeated here: the session is closed (the caller's ``connect()`` logs in) and AuthExpired
        surfaces. Nothing else is retried in the adapter: the engine's gateway owns the retry policy."""
        try:
            return await self.session.call(name, payload, mutating=mutating)
        except AuthExpired as exc:
            expiry.report(exc, self.account.name)
            await self.session.close()
            if mutating:
                raise
        return await self.session.call(name, payload, mutating=mutating)

    @property
    def acct(self) -> AccountRef:
        if self._acct is None:
            raise AuthExpired("not logged in", broker=BROKER)
        return self._acct

    # -- translation helpers -------------------------------------------------------------------------

    def _instrument(self, instrument_id: int) -> Instrument:
        if (known := self._caller_instruments.get(instrument_id)) is not None:
            return known
        row = self._by_instrument_id.get(instrument_id)
        if row is None:
            return Instrument(exchange="APEX", symbol=f"INSTRUMENT-{instrument_id}")
        return row.instrument

    def _client_id(self, numeric: int) -> str:
        return self._client_ids.get(numeric) or (str(numeric) if numeric else "")

    def _product(self, client_id: str) -> Product:
        return self._products.get(client_id, self.default_product)

    def _order(self, record: Mapping[str, Any]) -> Order:
        return order_from_wire(
            record, instrument_of=self._instrument, client_id_of=self._client_id, product_of=self._product
        )

    def _readable(self, record: Mapping[str, Any]) -> Order | None:
        """A book record as an Order, or None for a foreign one that cannot be read (an order of a side
        or type this adapter does not map, entered elsewhere on the account): skipped and logged, so one
        such record cannot break every read on the account. Our own orders (a ClientOrderId this process
        knows) are never skipped: an unreadable one raises BrokerError. Lookups by our id (get_order,
        GetOrderStatus) read only our record and are unaffected by foreign ones."""
        try:
            return self._order(record)
        except (BrokerError, ValueError, TypeError) as exc:
            why = exc.message if isinstance(exc, BrokerError) else str(exc)
            r = ci(record)
            try:
                client_numeric = int(r.get("clientorderid") or 0)
            except (TypeError, ValueError):
                client_numeric = 0
            if client_numeric in self._client_ids:
                raise BrokerError(
                    f"order {r.get('orderid')} ({self._client_ids[client_numeric]}) is unreadable: {why}",
                    broker=BROKER,
                ) from exc
            log.warning("alphapoint: skipping foreign order %s: %s", r.get("orderid"), why)
            return None

    def _readable_all(self, records: Any) -> list[Order]:
        rows = records if isinstance(records, list) else []
        return [o for o in (self._readable(r) for r in rows if isinstance(r, Mapping)) if o is not None]

    def adopt_client_ids(self, client_ids: Mapping[str, Product]) -> None:
        """:class:`runner.brokers.base.ClientIdRegistry`: the journal's client ids of the account, so that
        our orders of an earlier process map back from their numeric ClientOrderId after a restart."""
        for client_id, product in client_ids.items():
            self._remember(client_id, product)

    def _remember(self, client_id: str, product: Product | None = None) -> int:
        n = numeric_id(client_id)
        self._client_ids[n] = client_id
        if product is not None:
            self._products[client_id] = product
        return n

    # -- orders ----------------------------------------------------------------------------------------

    async def place(self, request: OrderRequest) -> Order:
        row = self.master.resolve(request.instrument)  # InstrumentUnknown before anything is sent
        instrument_id = instrument_id_of(row)
        self._caller_instruments[instrument_id] = request.instrument
        await self.connect()
        self._remember(request.client_order_id, request.product)
        self._instrument_products[row.instrument.key] = request.product
        body = send_order_body(request, instrument_id, self.acct, peg_price_type=self.peg_price_type)
        await self.limiter.acquire((self.account.name, segment_of(row.instrument.exchange)))
        try:
            reply = ci(await self._call("SendOrder", body, mutating=True) or {})
        except OutcomeUnknown as exc:
            # Resolve by lookup (a read, always safe); only the engine decides to send again.
            found = await self._quiet_lookup(request.client_order_id)
            if found is None:
                raise exc from None
            if found.status is OrderStatus.REJECTED:
                raise Rejected(
                    f"SendOrder rejected: {found.reject_reason or 'rejected'}", broker=BROKER
                ) from None
            return found
        status = _key(reply.get("status"))
        if status != "accepted":
            raise Rejected(
                f"SendOrder rejected: {reply.get('errormsg') or reply.get('status')}",
                code=str(reply.get("errorcode") or reply.get("errormsg") or "rejected"),
                broker=BROKER,
            )
        order_id = int(reply.get("orderid") or 0)
        seen = self._events.get(order_id)
        if seen is not None:  # an OrderStateEvent already told us more than the receipt
            return self._order(seen)
        # "Accepted" is the OMS's receipt, not an order state: not yet working at the venue.
        return Order.from_request(
            request, OrderStatus.PENDING_NEW, broker_order_id=str(order_id), raw_status="Accepted"
        )

    async def _quiet_lookup(self, client_order_id: str) -> Order | None:
        """One lookup while resolving an ambiguous order; None when even that fails."""
        try:
            return await self.get_order(client_order_id)
        except (Retryable, AuthExpired, OutcomeUnknown):
            return None

    async def _send_resolving(
        self, name: str, body: Mapping[str, Any], settled: Callable[[], Awaitable[Order | None]]
    ) -> Any:
        """Send a change aimed at one existing OrderId (cancel, modify, cancel-replace). On an ambiguous
        outcome look the order up once: if the change shows (or the order is done) return that Order; if
        the order still works unchanged send the same change once more, and no more. The repeat cannot
        create an order: it names the same OrderId, and APEX refuses to replace an order that is no longer
        working."""
        for attempt in range(2):
            try:
                return await self._call(name, body, mutating=True)
            except OutcomeUnknown as exc:
                try:
                    done = await settled()
                except (Retryable, AuthExpired, OutcomeUnknown):
                    raise exc from None
                if done is not None:
                    return done
                if attempt:
                    raise
        raise AssertionError("unreachable")

    async def _after_ack(self, read: Callable[[], Awaitable[Order]], fallback: Order) -> Order:
        """The order read back after an acknowledged change. If that read fails, the change was still
        sent: return ``fallback`` for the caller to verify, not an error that would make it send again."""
        try:
            return await read()
        except (Retryable, AuthExpired, OutcomeUnknown) as exc:
            log.warning("alphapoint: read-back after an acknowledged change failed: %s", exc)
            return fallback

    async def _status(self, order_id: int) -> Mapping[str, Any]:
        body = await self._call(
            "GetOrderStatus",
            {"OMSId": self.acct.oms_id, "AccountId": self.acct.account_id, "OrderId": order_id},
            mutating=False,
        )
        if not isinstance(body, Mapping) or not ci(body).get("orderid"):
            raise NotFound(f"order {order_id} not found", broker=BROKER)
        return body

    async def get_order_by_broker_id(self, broker_order_id: str) -> Order:
        """The order with this OrderId or, once CancelReplaceOrder has replaced it, its live
        replacement (same ClientOrderId, higher OrderId): callers keep the id they were first given."""
        await self.connect()
        record = await self._status(int(broker_order_id))
        return self._order(await self._follow_replacement(record))

    async def _follow_replacement(self, record: Mapping[str, Any]) -> Mapping[str, Any]:
        r = ci(record)
        client_numeric = int(r.get("clientorderid") or 0)
        if (
            _key(r.get("orderstate")) not in ("canceled", "cancelled")
            or not client_numeric
            or client_numeric not in self._client_ids
        ):
            return record
        body = await self._call(
            "GetOrdersHistory",
            {"OMSId": self.acct.oms_id, "AccountId": self.acct.account_id, "ClientOrderId": client_numeric},
            mutating=False,
        )
        latest = latest_for_client(body if isinstance(body, list) else [], client_numeric)
        if latest is None or int(ci(latest).get("orderid") or 0) <= int(r.get("orderid") or 0):
            return record
        return latest

    async def get_order(self, client_order_id: str) -> Order | None:
        await self.connect()
        n = self._remember(client_order_id)
        # GetOrdersHistory filters by ClientOrderId; filter again here in case a venue ignores it.
        body = await self._call(
            "GetOrdersHistory",
            {"OMSId": self.acct.oms_id, "AccountId": self.acct.account_id, "ClientOrderId": n},
            mutating=False,
        )
        record = latest_for_client(body if isinstance(body, list) else [], n)
        return None if record is None else self._order(record)

    async def _resolve_id(self, order: Order) -> int:
        if order.broker_order_id:
            return int(order.broker_order_id)
        found = await self.get_order(order.client_order_id)
        if found is None or not found.broker_order_id:
            raise NotFound(f"no order with client id {order.client_order_id}", broker=BROKER)
        return int(found.broker_order_id)

    async def cancel(self, order: Order) -> Order:
        """CancelOrder's reply only confirms receipt: report what GetOrderStatus says afterwards, and
        PENDING_CANCEL while the order is still working."""
        if order.status.is_terminal:  # terminal states never change: nothing to send
            raise NotModifiable(f"order {order.client_order_id} is {order.status.value}", broker=BROKER)
        await self.connect()
        self._remember(order.client_order_id, order.product)
        body = (
            cancel_order_body(self.acct, order_id=int(order.broker_order_id))
            if order.broker_order_id
            else cancel_order_body(self.acct, client_numeric=numeric_id(order.client_order_id))
        )
        await self.limiter.acquire((self.account.name, segment_of(order.instrument.exchange)))

        async def settled() -> Order | None:
            seen = await self._read_back(order)
            return None if seen.status.is_working else seen

        result = await self._send_resolving("CancelOrder", body, settled)
        current = (
            result
            if isinstance(result, Order)
            else await self._after_ack(
                lambda: self._read_back(order), order.evolve(status=OrderStatus.PENDING_CANCEL)
            )
        )
        if current.status.is_working:
            return current.evolve(status=OrderStatus.PENDING_CANCEL)
        if current.status in (OrderStatus.FILLED, OrderStatus.REJECTED, OrderStatus.EXPIRED):
            # The receipt was true but the OMS had nothing left to cancel (CancelOrderRejectEvent).
            raise NotModifiable(f"order {order.client_order_id} is {current.status.value}", broker=BROKER)
        return current

    async def _read_back(self, order: Order) -> Order:
        if order.broker_order_id:
            return self._order(await self._status(int(order.broker_order_id)))
        found = await self.get_order(order.client_order_id)
        if found is None:
            raise NotFound(f"no order with client id {order.client_order_id}", broker=BROKER)
        return found

    async def modify(self, order: Order, change: Modification) -> Order:
        """Quantity-only reductions use ModifyOrder (keeps priority); anything else CancelReplaceOrder."""
        if order.status.is_terminal:
            raise NotModifiable(f"order {order.client_order_id} is {order.status.value}", broker=BROKER)
        row = self.master.resolve(order.instrument)
        instrument_id = instrument_id_of(row)
        await self.connect()
        self._remember(order.client_order_id, order.product)
        order_id = await self._resolve_id(order)
        key = (self.account.name, segment_of(row.instrument.exchange))
        only_qty = (
            change.price is None
            and change.trigger_price is None
            and (change.order_type is None or change.order_type is order.order_type)
        )
        if only_qty and change.quantity is not None and change.quantity < order.quantity:
            remaining = change.quantity - order.filled_quantity
            if remaining <= 0:
                raise NotModifiable(
                    f"new quantity {change.quantity} is not above the filled {order.filled_quantity}",
                    broker=BROKER,
                )
            await self.limiter.acquire(key)

            async def reduced() -> Order | None:
                seen = self._order(await self._status(order_id))
                return seen if seen.quantity == change.quantity or not seen.status.is_working else None

            result = await self._send_resolving(
                "ModifyOrder", modify_order_body(self.acct, order_id, instrument_id, remaining), reduced
            )
            if isinstance(result, Order):
                return result
            return await self._after_ack(lambda: self._reread(order_id), order)
        current = order.evolve(broker_order_id=str(order_id))
        body = cancel_replace_body(
            current, change, instrument_id, self.acct, peg_price_type=self.peg_price_type
        )
        await self.limiter.acquire(key)

        async def replaced() -> Order | None:
            seen = await self.get_order(order.client_order_id)
            if seen is None:
                return None
            return seen if seen.broker_order_id != str(order_id) or not seen.status.is_working else None

        result = await self._send_resolving("CancelReplaceOrder", body, replaced)
        if isinstance(result, Order):
            return result
        reply = ci(result or {})
        new_id = int(reply.get("replacementorderid") or 0)
        if not new_id:
            raise Rejected(
                f"CancelReplaceOrder: {reply.get('errormsg') or 'no replacement order'}", broker=BROKER
            )
        return await self._after_ack(lambda: self._reread(new_id), order)

    async def _reread(self, order_id: int) -> Order:
        return self._order(await self._status(order_id))

    async def orders(self) -> Sequence[Order]:
        await self.connect()
        body = await self._call(
            "GetOrderHistory", {"OMSId": self.acct.oms_id, "AccountId": self.acct.account_id}, mutating=False
        )
        return self._readable_all(body)

    async def open_orders(self) -> Sequence[Order]:
        await self.connect()
        body = await self._call(
            "GetOpenOrders", {"OMSId": self.acct.oms_id, "AccountId": self.acct.account_id}, mutating=False
        )
        return [o for o in self._readable_all(body) if o.status.is_working]

    async def positions(self) -> Sequence[Position]:
        """GetAccountPositions gives balances per product (the truth for quantity); instrument products
        (matched through the master's ``product_symbol``, else trading symbol / symbol) become net
        positions, with average price and day quantities replayed from GetAccountTrades."""
        await self.connect()
        acct = self.acct
        body = await self._call(
            "GetAccountPositions", {"AccountId": acct.account_id, "OMSId": acct.oms_id}, mutating=False
        )
        trades: list[Mapping[str, Any]] = []
        while True:  # Count is capped at 200 per page
            page = await self._call(
                "GetAccountTrades",
                {"OMSId": acct.oms_id, "AccountId": acct.account_id, "StartIndex": len(trades), "Count": 200},
                mutating=False,
            )
            page = page if isinstance(page, list) else []
            trades.extend(page)
            if len(page) < 200:
                break
        return positions_from_records(
            body, trades, self.master, caller_instruments=self._caller_instruments,
            instrument_products=self._instrument_products, default_product=self.default_product,
        )

    # -- market data (runner.brokers.base.MarketData) ------------------------------------------------

    async def quotes(self, instruments: Sequence[Instrument]) -> Mapping[str, Quote]:
        """One GetLevel1 per instrument (APEX has no batch snapshot call), at most ``quote_concurrency``
        in flight on the session, each taking a read token. Instruments the master does not know, that
        the OMS does not find, or that it prices at nothing are absent from the result. Any other error
        fails the whole read as its typed BrokerError (after every call in flight has finished)."""
        wanted: dict[str, tuple[Instrument, int]] = {}
        for instrument in instruments:
            if instrument.key in wanted:
                continue
            try:
                wanted[instrument.key] = (instrument, instrument_id_of(self.master.resolve(instrument)))
            except InstrumentUnknown:
                continue
        if not wanted:
            return {}
        await self.connect()
        return await level1_quotes(
            self.session, wanted, oms_id=self.acct.oms_id, reconnect=self.connect,
            read_limiter=self.read_limiter, limit_key=(self.account.name, "market-data"),
            concurrency=self.quote_concurrency, clock=self.clock, account=self.account.name,
        )

    async def instrument_master(self) -> InstrumentMaster:
        """:class:`runner.brokers.base.InstrumentSource`: the master this adapter resolves orders against
        (rolling instruments resolve through it)."""
        return self.master

    async def ltp(self, instrument: Instrument) -> Decimal | None:
        """The QuoteSource the gateway uses: the last traded price from :meth:`quotes` (None if none)."""
        quote = (await self.quotes([instrument])).get(instrument.key)
        return None if quote is None else quote.ltp


def master(account: Account, **context: Any) -> InstrumentMaster:
    """The master the factory resolves against (runner.brokers.registry.MASTERS)."""
    from runner.instruments.load import master_for

    given: InstrumentMaster | None = context.get("master")
    return given if given is not None else master_for(account, db_url=context.get("db_url"))


def create(account: Account, **context: Any) -> AlphaPointBroker:
    context["master"] = master(account, **context)
    return AlphaPointBroker(account, **context)
