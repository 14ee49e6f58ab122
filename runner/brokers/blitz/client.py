"""QuantXpress Blitz OMS adapter (REST/JSON, ``app_login`` -> JWT bearer).

The pure translation (canonical model <-> Blitz JSON, status and error tables, and the sources they follow)
is :mod:`runner.brokers.blitz.wire`; the :class:`BlitzBroker` class here does the I/O.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from runner.brokers import expiry
from runner.brokers.base import Quote, read_positions
from runner.brokers.blitz.marketdata import MD_SUFFIX, QUOTE_BATCH, QUOTE_PATH, quote_body, quotes_from_reply
from runner.brokers.blitz.wire import (
    BROKER,
    EXCHANGE_OF_SEGMENT,
    SDK_PATHS,
    SEED_PATHS,
    STATUS_TABLE,
    Dialect,
    OrderRef,
    Paths,
    _int,
    _key,
    cancel_params,
    fill_from_row,
    get,
    instrument_id,
    latest_row,
    master_rows_from_blitz_json,
    modify_body,
    order_from_row,
    place_body,
    position_from_row,
    ref_from_row,
    rows_of,
    unwrap,
)
from runner.brokers.descriptions import DESCRIPTIONS
from runner.brokers.http import make_client, send
from runner.brokers.instruments import InstrumentMaster, MasterRow
from runner.brokers.primed import PrimedBook, PrimedRequest
from runner.brokers.ratelimit import RateLimiter, segment_of
from runner.brokers.ratelimit import read_limiter as read_limiter_for
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
from runner.ids import is_client_order_id
from runner.model import (
    Fill,
    Instrument,
    Modification,
    Order,
    OrderRequest,
    OrderStatus,
    Position,
)
from runner.scrub import secret
from runner.wirejson import dumps, loads

if TYPE_CHECKING:
    from runner.accounts import Account

log = logging.getLogger("runner.brokers.blitz")

# SDK defaults (blitzsdk/common/config.py); every one is overridable in the account's ``endpoints``.
DEFAULT_BASE = "http://uat.bull8.ai:7443"
AUTH_SUFFIX = "/api_gateway/v1"
API_SUFFIX = "/api_interactive/api/v1"
# Blitz publishes no read limit (429 exists): our own default, account ``rate_limit.reads_per_second``.
DEFAULT_READS_PER_SECOND = 10.0


def load_master(path: str | Path) -> InstrumentMaster:
    """The account's master: Blitz's own JSON dump (``.json`` / ``.json.gz``) or the generic CSV."""
    p = Path(path)
    if p.name.endswith((".json", ".json.gz")):
        raw = gzip.decompress(p.read_bytes()) if p.name.endswith(".gz") else p.read_bytes()
        records = loads(raw)
        return InstrumentMaster(master_rows_from_blitz_json(records), broker=BROKER)
    return InstrumentMaster.load(p, broker=BROKER)


# ---------------------------------------------------------------------------------------------------------
# The adapter
# ---------------------------------------------------------------------------------------------------------


def _join(base: str, suffix: str) -> str:
    return base.rstrip("/") + suffix


def _origin(url: str) -> str:
    parsed = httpx.URL(url)
    port = f":{parsed.port}" if parsed.port is not None else ""
    return f"{parsed.scheme}://{parsed.host}{port}"


class BlitzBroker:
    name = BROKER
    capabilities = DESCRIPTIONS[BROKER].capabilities

    def __init__(
        self,
        account: Account,
        *,
        master: InstrumentMaster,
        limiter: RateLimiter | None = None,
        transport: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.account = account
        self.master = master
        self.clock: Clock = clock or SystemClock()  # quotes' receipt time, on the run's (virtual) clock
        opts = account.options
        self.dialect = Dialect(str(opts.get("dialect", "sdk")).lower())
        ep = account.endpoints
        base = ep.get("base", DEFAULT_BASE)
        self.auth_url = ep.get("auth", _join(base, AUTH_SUFFIX))
        self.api_url = ep.get("api", _join(base, API_SUFFIX))
        # Market data lives on its own base (SDK config.py MD_API_URL, ``BLITZ_MD_API_URL``), on the same
        # host as the trading API there: without ``md_api`` or ``base`` we take the ``api`` URL's origin,
        # so an account pointed at one host never sends its quote reads to another.
        md_base = ep.get("base") or _origin(ep.get("api") or ep.get("auth") or DEFAULT_BASE)
        self.md_url = ep.get("md_api", _join(md_base, MD_SUFFIX))
        self.quote_path = ep.get("quote", QUOTE_PATH)
        self.quote_batch = max(1, int(opts.get("quote_batch", QUOTE_BATCH)))
        preset = SEED_PATHS if self.dialect is Dialect.SEED else SDK_PATHS
        overrides = {k: v for k, v in ep.items() if k in Paths.__slots__}
        self.paths = replace(preset, **overrides)
        rl = account.rate_limit
        self.limiter = limiter or RateLimiter(rl.orders_per_second, rl.burst)
        self.read_limiter = read_limiter_for(rl, per_second=DEFAULT_READS_PER_SECOND)
        self._transport = transport or opts.get("http_transport")
        self._client: httpx.AsyncClient | None = None
        self._token: str | None = None
        self._generation = 0  # bumps on every login, so concurrent 401s trigger one re-login
        self._login_lock = asyncio.Lock()
        self._warm_lock = asyncio.Lock()
        self._requests: dict[str, OrderRequest] = {}  # what we placed, by client id (fills row gaps)
        self._acked: dict[str, str] = {}  # client id -> blitzOrderId, once the broker is known to have it
        self._sending: set[str] = set()  # client ids whose place is on its way (primed or ordinary)
        # armed first orders, built with their connection ahead of the instant (runner.brokers.primed);
        # extra: the rate-limit key. Each is bound to the login it was built with (``_session``).
        self._primed = PrimedBook()
        self._session: object | None = None  # a new object per login: what a primed request was built on
        self._by_instrument_id: dict[int, MasterRow] = {}
        for row in master:
            raw = row.extra.get("instrument_id") or row.token
            if raw and raw.isdigit():
                self._by_instrument_id[int(raw)] = row

    # -- session ---------------------------------------------------------------------------------------

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = make_client(
                self.api_url,
                timeout=self.account.timeout_seconds,
                transport=self._transport,
                headers={"Accept": "*/*"},
            )
        return self._client

    def _credential(self, *keys: str) -> str:
        for k in keys:
            if k in self.account.credentials:
                return self.account.secret(k).reveal()
        for k in keys:
            if k in self.account.options:
                return str(self.account.options[k])
        raise LookupError(f"account {self.account.name!r} has no credential {keys[0]!r}")

    @property
    def client_id(self) -> str:
        """Trading client code sent as ``clientId``: option ``client_id``, else the login user id."""
        return str(self.account.options.get("client_id") or self._credential("user_id", "userId"))

    async def connect(self) -> None:
        if self._token is None:
            await self._login(self._generation)

    async def relogin(self) -> None:
        # The current generation: _login skips only when someone else logged in meanwhile, which is
        # as good. Requests in flight keep the old bearer; a 401 on it finds the new one.
        await self._login(self._generation)

    async def _login(self, seen_generation: int) -> None:
        async with self._login_lock:
            if self._generation != seen_generation and self._token is not None:
                return  # someone else logged in while we waited
            body = {
                "appKey": self._credential("app_key", "appKey"),
                "userId": self._credential("user_id", "userId"),
            }
            url = _join(self.auth_url, "/" + self.paths.login.lstrip("/"))
            try:
                response = await send(
                    self._http(),
                    "POST",
                    url,
                    broker=BROKER,
                    mutating=False,
                    content=dumps(body),
                    headers={"Content-Type": "application/json"},
                )
            except AuthExpired as exc:
                raise AuthExpired(
                    "login refused (HTTP 401): check app_key/user_id", code="401", broker=BROKER
                ) from exc
            data = unwrap(response, operation="app_login")
            if isinstance(data, BrokerError):
                raise AuthExpired(f"login refused: {data.message}", code=data.code, broker=BROKER)
            token = get(data, "accessToken", "access_token", "token") if isinstance(data, Mapping) else None
            if not token:
                raise AuthExpired("login reply carries no accessToken", broker=BROKER)
            self._token = secret(str(token))  # scrubbed from every log line and journal row
            self._generation += 1
            self._session = object()

    async def warm_connections(self, sends: int) -> None:
        """Connections for ``sends`` orders sent at once, opened ahead of their instant
        (:mod:`runner.brokers.warm`): the sends then write at once instead of connecting first."""
        async with self._warm_lock:
            await warm_pool(self._http(), sends, self.account.timeout_seconds)

    async def prime(self, request: OrderRequest) -> None:
        """``request``'s place call as bytes on a connection of its own (:mod:`runner.brokers.primed`):
        at the instant :meth:`place` only writes it. Best effort: on any trouble (or no login yet) it is
        sent the ordinary way."""
        session, token, cid = self._session, self._token, request.client_order_id
        if session is None or token is None or cid in self._primed:
            return
        try:
            row = self.master.resolve(request.instrument)
            body = dumps(place_body(request, row, self.client_id, self.dialect)).encode()
            headers = {"Accept": "*/*", "Authorization": f"Bearer {token}"}
            headers["Content-Type"] = "application/json"
            path = "/" + self.paths.place.lstrip("/")  # relative to the API base, as httpx joins it
            primed = await PrimedRequest.open(
                self.api_url, "POST", path, headers, body, self.account.timeout_seconds
            )
        except Exception as exc:  # the place at the instant builds and connects as it always did
            log.debug("priming %s failed: %s: %s", cid, type(exc).__name__, exc)
            return
        if cid in self._acked or cid in self._sending:
            primed.close()  # its place already went the ordinary way
            return
        key = (self.account.name, segment_of(request.instrument.exchange))
        self._primed.add(request, session, primed, key)

    def unprime(self, client_order_id: str) -> None:
        self._primed.unprime(client_order_id)

    def write_primed(self, request: OrderRequest) -> bool:
        """Write ``request``'s primed call now if it can leave now (primed for exactly it, on the current
        login, a rate-limit token free, never sent); its :meth:`place` then reads the reply."""
        cid = request.client_order_id
        primed = self._primed.usable(request, self._session)
        if primed is None or cid in self._acked or cid in self._sending:
            return False
        if not self.limiter.try_acquire(self._primed[cid][3]):
            return False  # the ordinary path waits for its token
        primed.write()
        return True

    async def _send_primed(self, primed: PrimedRequest, key: tuple[str, str]) -> Any:
        """The place through its primed call (written now unless :meth:`write_primed` did). Once written,
        a lost reply is OutcomeUnknown (settled by lookup), never a re-send; an expired token is handled
        as :meth:`_call` handles it for an order request."""
        generation = self._generation
        try:
            if not primed.written:
                primed.write()
            response = await primed.reply(broker=BROKER, timeout=self.account.timeout_seconds)
            result = unwrap(response, operation="placeOrder")
            if isinstance(result, BrokerError):
                raise result
            return result
        except AuthExpired as exc:
            expiry.report(exc, self.account.name)
            if self._generation == generation:
                self._token = None  # the next connect() logs in again
            raise
        except RateLimited as exc:
            self.limiter.penalize(key, exc.retry_after or 1.0)
            raise

    async def close(self) -> None:
        self._primed.close_all()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _call(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        mutating: bool,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        """One request with the bearer. On 401/TokenException a read logs in again once and is repeated;
        an order request is not repeated here: the token is dropped (so the caller's ``connect()`` logs
        in) and AuthExpired surfaces, leaving the one retry policy to the engine's gateway. Nothing else
        is retried in the adapter."""
        await self.connect()
        for attempt in range(2):
            generation = self._generation
            headers = {"Authorization": f"Bearer {self._token}"}
            kwargs: dict[str, Any] = {"headers": headers}
            if body is not None:
                kwargs["content"] = dumps(body)
                headers["Content-Type"] = "application/json"
            if params is not None:
                kwargs["params"] = dict(params)
            try:
                response = await send(self._http(), method, path, broker=BROKER, mutating=mutating, **kwargs)
                result = unwrap(response, operation=operation)
                if isinstance(result, BrokerError):
                    raise result
                return result
            except AuthExpired as exc:
                expiry.report(exc, self.account.name)
                if mutating:
                    if self._generation == generation:
                        self._token = None  # the next connect() logs in again
                    raise
                if attempt:
                    raise
                await self._login(generation)
        raise AssertionError("unreachable")

    async def _read(self, path: str, *, operation: str, params: Mapping[str, str] | None = None) -> Any:
        return await self._call("GET", path, operation=operation, mutating=False, params=params)

    async def _throttle(self, instrument: Instrument) -> tuple[str, str]:
        key = (self.account.name, segment_of(instrument.exchange))
        await self.limiter.acquire(key)
        return key

    async def _mutate(
        self,
        key: tuple[str, str],
        method: str,
        path: str,
        *,
        operation: str,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        try:
            return await self._call(
                method, path, operation=operation, mutating=True, body=body, params=params
            )
        except RateLimited as exc:
            self.limiter.penalize(key, exc.retry_after or 1.0)
            raise

    # -- translation helpers needing state -------------------------------------------------------------

    def _instrument(self, row: Mapping[str, Any]) -> Instrument:
        iid = _int(get(row, "instrumentId"), "instrumentId")
        master_row = self._by_instrument_id.get(iid)
        if master_row is not None:
            return master_row.instrument
        req = self._requests.get(str(get(row, "correlationOrderId", default="")))
        if req is not None:
            return req.instrument
        seg = str(get(row, "exchangeSegment", default="")).upper()
        return Instrument(EXCHANGE_OF_SEGMENT.get(seg, seg), str(get(row, "instrumentName", default=iid)))

    def _order(self, row: Mapping[str, Any]) -> Order:
        correlation = str(get(row, "correlationOrderId", default=""))
        fallback = self._requests.get(correlation)
        if fallback is not None:
            self._acked.setdefault(correlation, str(get(row, "blitzOrderId")))
        return order_from_row(row, self._instrument(row), fallback=fallback)

    def _readable(self, row: Mapping[str, Any], *, ours: bool = False) -> Order | None:
        """A book row as an Order, or None for a foreign row that cannot be read (a manual order of a
        type or side this adapter does not map): skipped and logged, so one such row cannot break every
        read on the account. Our own orders are never skipped: one this process sent is completed from
        its request (see order_from_row); one it cannot rebuild raises BrokerError."""
        try:
            return self._order(row)
        except (BrokerError, ValueError) as exc:
            why = exc.message if isinstance(exc, BrokerError) else str(exc)
            cid = str(get(row, "correlationOrderId", default="") or "")
            boid = get(row, "blitzOrderId")
            if ours or is_client_order_id(cid) or cid in self._requests:
                raise BrokerError(f"order {boid} ({cid}) is unreadable: {why}", broker=BROKER) from exc
            log.warning("blitz: skipping foreign order %s: %s", boid, why)
            return None

    def _readable_rows(self, rows: Iterable[Mapping[str, Any]]) -> list[Order]:
        return [o for o in (self._readable(r) for r in rows) if o is not None]

    def _path(self, template: str, **values: object) -> str:
        return template.format(**values)

    # -- Broker protocol -------------------------------------------------------------------------------

    async def place(self, request: OrderRequest) -> Order:
        row = self.master.resolve(request.instrument)  # InstrumentUnknown before anything is sent
        known = self._acked.get(request.client_order_id)
        if known is not None:
            # Blitz does not refuse a repeated correlationOrderId (none of its docs say so): we do.
            raise Rejected(
                f"client order id {request.client_order_id} already placed as {known}",
                code="duplicate",
                broker=BROKER,
            )
        body = place_body(request, row, self.client_id, self.dialect)
        cid = request.client_order_id
        if cid in self._sending:
            raise Rejected(f"client order id {cid} is being sent already", code="duplicate", broker=BROKER)
        primed = self._primed.take(request, self._session)
        self._sending.add(cid)
        try:
            self._requests[cid] = request
            if primed is not None and primed.written:  # its token was taken when it was written
                key = (self.account.name, segment_of(request.instrument.exchange))
            else:
                key = await self._throttle(request.instrument)
            if primed is not None and (primed.written or primed.usable()):
                data = await self._send_primed(primed, key)
            else:
                if primed is not None:
                    primed.close()  # its connection closed while the token was awaited
                data = await self._mutate(key, "POST", self.paths.place, operation="placeOrder", body=body)
        finally:
            self._sending.discard(cid)
        # SDK docs: data.blitzOrderId; the Postman script reads a top-level blitzOrderId: accept both.
        boid = get(data, "blitzOrderId") if isinstance(data, Mapping) else None
        if boid is None:
            raise OutcomeUnknown("placeOrder reply carries no blitzOrderId", broker=BROKER)
        self._acked[request.client_order_id] = str(boid)
        # An acknowledgement is not an open order: the OMS has it under a blitzOrderId, the exchange may
        # not yet. PENDING_NEW unless the reply itself states a status.
        raw = get(data, "orderStatus", "status")
        stated = STATUS_TABLE.get(_key(str(raw))) if raw is not None else None
        return Order.from_request(
            request,
            stated or OrderStatus.PENDING_NEW,
            broker_order_id=str(boid),
            raw_status=str(raw) if stated is not None else "accepted",
        )

    async def _row_by_broker_id(self, broker_order_id: str) -> Mapping[str, Any]:
        data = await self._read(self._path(self.paths.order, id=broker_order_id), operation="order")
        rows = rows_of(data)
        if not rows:
            raise NotFound(f"no order {broker_order_id}", broker=BROKER)
        return latest_row(rows)

    async def _ref(self, order: Order) -> tuple[OrderRef, Mapping[str, Any]]:
        if order.broker_order_id is None:
            found = await self._find_row(order.client_order_id)
            if found is None:
                raise NotFound(f"no order with client id {order.client_order_id}", broker=BROKER)
            return ref_from_row(found), found
        row = await self._row_by_broker_id(order.broker_order_id)
        return ref_from_row(row), row

    async def modify(self, order: Order, change: Modification) -> Order:
        master_row = self.master.resolve(order.instrument)
        ref, current = await self._ref(order)
        now = self._order(current)
        if now.status.is_terminal:
            raise NotModifiable(f"order {order.broker_order_id} is {now.status.value}", broker=BROKER)
        body = modify_body(now, change, master_row, ref, self.dialect)
        key = await self._throttle(order.instrument)
        await self._mutate(key, "PUT", self.paths.modify, operation="modifyOrder", body=body)
        return await self._read_after_ack(ref, now)  # the ack is only a string

    async def cancel(self, order: Order) -> Order:
        ref, current = await self._ref(order)
        now = self._order(current)
        if now.status.is_terminal:
            raise NotModifiable(
                f"order {order.broker_order_id} is already {get(current, 'orderStatus', 'status')}",
                broker=BROKER,
            )
        key = await self._throttle(order.instrument)
        await self._mutate(
            key, "DELETE", self.paths.cancel, operation="cancelOrder", params=cancel_params(ref, self.dialect)
        )
        # A cancel ack is not a cancel: report what the order book says now.
        return await self._read_after_ack(ref, now.evolve(status=OrderStatus.PENDING_CANCEL))

    async def _read_after_ack(self, ref: OrderRef, fallback: Order) -> Order:
        """The order as the book shows it after an acknowledged change. If that read fails, the change was
        still sent: return ``fallback`` (for the caller to verify later) rather than an error that would
        make it send the change again."""
        try:
            return self._order(await self._row_by_broker_id(str(ref.blitz_order_id)))
        except (Retryable, AuthExpired) as exc:
            log.warning("blitz: read-back of %s after an acknowledged change: %s", ref.blitz_order_id, exc)
            return fallback

    async def _day_rows(self) -> list[Mapping[str, Any]]:
        rows = rows_of(await self._read(self.paths.orders, operation="orders"))
        latest: dict[str, list[Mapping[str, Any]]] = {}
        for r in rows:  # a history-style book may list one order several times
            latest.setdefault(str(get(r, "blitzOrderId")), []).append(r)
        return [latest_row(rs) for rs in latest.values()]

    async def _find_row(self, client_order_id: str) -> Mapping[str, Any] | None:
        matches = [
            r
            for r in await self._day_rows()
            if str(get(r, "correlationOrderId", default="")) == client_order_id
        ]
        if len(matches) > 1:
            log.error("blitz: %d orders share correlationOrderId %s", len(matches), client_order_id)
        return matches[0] if matches else None

    async def get_order(self, client_order_id: str) -> Order | None:
        # Blitz has no lookup by correlationOrderId: scan the day's book (only matching rows are read).
        row = await self._find_row(client_order_id)
        return self._own(row) if row is not None else None

    def _own(self, row: Mapping[str, Any]) -> Order:
        order = self._readable(row, ours=True)
        assert order is not None  # ours=True: unreadable raises
        return order

    async def get_order_by_broker_id(self, broker_order_id: str) -> Order:
        return self._own(await self._row_by_broker_id(broker_order_id))

    async def orders(self) -> Sequence[Order]:
        return self._readable_rows(await self._day_rows())

    async def open_orders(self) -> Sequence[Order]:
        if self.paths.open_orders is None:
            return [o for o in await self.orders() if not o.status.is_terminal]
        rows = rows_of(await self._read(self.paths.open_orders, operation="openOrders"))
        return [o for o in self._readable_rows(rows) if not o.status.is_terminal]

    async def positions(self) -> Sequence[Position]:
        rows = rows_of(await self._read(self.paths.positions, operation="positions"))
        return read_positions(rows, lambda r: position_from_row(r, self._instrument(r)),
                              lambda r: str(get(r, "instrumentName", "instrumentId", default="?")))

    async def trades(self) -> Sequence[Fill]:
        rows = rows_of(await self._read(self.paths.trades, operation="trades"))
        return [fill_from_row(r, self._instrument(r)) for r in rows]

    # -- market data (MarketData protocol) -------------------------------------------------------------

    async def quotes(self, instruments: Sequence[Instrument]) -> Mapping[str, Quote]:
        """LTP and best bid/ask by ``Instrument.key`` through Blitz's REST quote (POST ``marketfeed/quote``
        on the market-data base, as blitzsdk/marketdata/api_client.py ``get_quote``), in batches of
        ``quote_batch`` ids, each taking a token of the account's read limiter. An instrument the master
        does not know, or the reply does not price, is absent."""
        wanted: dict[int, list[Instrument]] = {}
        for inst in instruments:
            try:
                iid = instrument_id(self.master.resolve(inst))
            except InstrumentUnknown:
                log.debug("blitz: no instrumentId for %s: not quoted", inst.key)
                continue
            bucket = wanted.setdefault(iid, [])
            if inst not in bucket:
                bucket.append(inst)
        ids = list(wanted)
        out: dict[str, Quote] = {}
        url = _join(self.md_url, "/" + self.quote_path.lstrip("/"))
        key = (self.account.name, "market-data")
        for start in range(0, len(ids), self.quote_batch):
            batch = ids[start : start + self.quote_batch]
            await self.read_limiter.acquire(key)
            try:
                data = await self._call(
                    "POST", url, operation="marketfeed/quote", mutating=False, body=quote_body(batch)
                )
            except RateLimited as exc:
                self.read_limiter.penalize(key, exc.retry_after or 1.0)
                raise
            received = self.clock.now().astimezone(dt.UTC)
            out.update(quotes_from_reply(data, {i: wanted[i] for i in batch}, received))
        return out

    async def instrument_master(self) -> InstrumentMaster:
        """:class:`runner.brokers.base.InstrumentSource`: the master this adapter resolves orders against
        (rolling instruments resolve through it)."""
        return self.master

    async def ltp(self, instrument: Instrument) -> Decimal | None:
        """The QuoteSource the gateway uses: the quote's LTP, None when Blitz has none."""
        quote = (await self.quotes([instrument])).get(instrument.key)
        return quote.ltp if quote is not None else None


def create(account: Account, **context: Any) -> BlitzBroker:
    return BlitzBroker(
        account,
        master=master(account, **context),
        limiter=context.get("limiter"),
        transport=context.get("transport"),
        clock=context.get("clock"),
    )


def master(account: Account, **context: Any) -> InstrumentMaster:
    """The master the factory resolves against (runner.brokers.registry.MASTERS)."""
    from runner.instruments.load import master_for

    given: InstrumentMaster | None = context.get("master")
    if given is not None:
        return given
    return master_for(account, db_url=context.get("db_url"), load_file=load_master)
