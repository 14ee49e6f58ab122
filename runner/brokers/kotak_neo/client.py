"""Kotak Neo Trade API adapter: :class:`KotakNeo` does the I/O; the wire format (canonical model <->
jData / order-book rows, status and error tables, TOTP) is pure translation in
:mod:`runner.brokers.kotak_neo.wire`.

Login is two steps on the login host (``tradeApiLogin`` with a TOTP, then ``tradeApiValidate`` with the
MPIN); the second reply names the session's ``baseUrl``, used for every trading call that day. Write
calls are ``application/x-www-form-urlencoded`` with one field ``jData=<JSON>``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import weakref
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import httpx

from runner.accounts import Account
from runner.brokers import expiry
from runner.brokers.base import Quote, read_positions
from runner.brokers.burst import after_send
from runner.brokers.descriptions import DESCRIPTIONS
from runner.brokers.http import make_client, send
from runner.brokers.instruments import InstrumentMaster
from runner.brokers.kotak_neo.quotes_wire import (
    batches,
    neo_symbol,
    parse_quote,
    quote_rows_of,
    quotes_path,
)
from runner.brokers.kotak_neo.wire import (
    ACCEPT_JSON,
    AMO_STATUS,
    BROKER,
    CODE_NOT_FOUND,
    LOGIN_HOST,
    NEO_FIN_KEY,
    PATH_HISTORY,
    PATH_MODIFY,
    PATH_ORDERS,
    PATH_PLACE,
    PATH_POSITIONS,
    PATH_TOTP_LOGIN,
    PATH_TOTP_VALIDATE,
    PATH_TRADES,
    SEGMENT_OF_EXCHANGE,
    _json,
    _text,
    _timestamp,
    cancel_jdata,
    cancel_path,
    default_lookup,
    error_for,
    latest_row,
    modify_jdata,
    parse_fill,
    parse_login,
    parse_order,
    parse_position,
    place_jdata,
    rows_of,
    segment_for,
    terminal_row,
    totp,
    trading_symbol_for,
)
from runner.brokers.primed import PrimedBook, PrimedRequest
from runner.brokers.ratelimit import RateLimiter, segment_of
from runner.brokers.ratelimit import read_limiter as read_limiter_for
from runner.brokers.read_back import defer_read_back
from runner.brokers.shared_read import SharedRead
from runner.brokers.warm import warm_pool
from runner.clock import Clock, SystemClock
from runner.errors import (
    AuthExpired,
    BrokerError,
    NotFound,
    NotModifiable,
    OutcomeUnknown,
    RateLimited,
    Rejected,
    Unavailable,
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
from runner.wirejson import loads

log = logging.getLogger("runner.brokers.kotak_neo")  # stable name, not __name__: people filter on it


# --- the adapter -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Session:
    token: str
    sid: str
    base_url: str
    at: dt.datetime


@dataclass(slots=True)
class _Wire:
    """What cancel/modify need that the canonical Order does not carry."""

    prod: str
    ts: str
    amo: bool


_Index = dict[tuple[str, str], Instrument]
# A master's (segment, token) and (segment, symbol) indexes, built once per master (and size): a daemon
# building 100 accounts' brokers over one shared master indexed its 13,000 rows 100 times on its loop
# while preparing (~2 s), and fires' claim leases lapsed meanwhile. Read-only once built.
_INDEXES: weakref.WeakKeyDictionary[InstrumentMaster, tuple[int, _Index, _Index]] = (
    weakref.WeakKeyDictionary()
)


def _indexes(master: InstrumentMaster) -> tuple[_Index, _Index]:
    cached = _INDEXES.get(master)
    if cached is not None and cached[0] == len(master):
        return cached[1], cached[2]
    by_token: _Index = {}
    by_symbol: _Index = {}
    for row in master:
        try:
            seg = segment_for(row)
        except Rejected:
            continue
        if row.token:
            by_token[(seg, row.token)] = row.instrument
        by_symbol[(seg, trading_symbol_for(row).upper())] = row.instrument
    _INDEXES[master] = (len(master), by_token, by_symbol)
    return by_token, by_symbol


class KotakNeo:
    name = BROKER
    capabilities = DESCRIPTIONS[BROKER].capabilities

    def __init__(
        self,
        account: Account,
        *,
        master: InstrumentMaster | None = None,
        clock: Clock | None = None,
        limiter: RateLimiter | None = None,
        transport: str | None = None,
        read_limiter: RateLimiter | None = None,
    ) -> None:
        self.account = account
        self.clock: Clock = clock or SystemClock()
        if master is None:
            if not account.instruments:
                raise ValueError(f"account {account.name!r}: kotak_neo needs an instruments master file")
            master = InstrumentMaster.load(account.instruments, broker=BROKER)
        self.master = master
        self._by_token, self._by_symbol = _indexes(master)
        rl = account.rate_limit
        self.limiter = limiter or RateLimiter(rl.orders_per_second, rl.burst)
        # Reads of market data take a bucket of their own: Kotak allows about 25 API calls/s in all
        # (OpenAlgo #1666) and orders already take up to `orders_per_second` (8): 15 reads/s by default.
        self.read_limiter = read_limiter or read_limiter_for(rl, per_second=15.0)
        self._book = SharedRead(self._order_book)  # every verify is a whole-book read: shared when concurrent
        self._quote_type = str(account.options.get("quote_type", "all"))  # ltp+depth+lstup_time in one
        self._transport = transport or account.options.get("http_transport")
        self._login_url = account.endpoints.get("login", LOGIN_HOST)
        self._trade_override = account.endpoints.get("trade")  # else the session's baseUrl
        self._positions_path = account.endpoints.get("positions_path", PATH_POSITIONS)
        self._amo = bool(account.options.get("amo", False))
        self._status_policy = str(account.options.get("unknown_status", "open"))
        self._verify_place = bool(account.options.get("verify_place", True))
        self._session: _Session | None = None
        self._client: httpx.AsyncClient | None = None
        self._login_lock = asyncio.Lock()
        self._warm_lock = asyncio.Lock()
        self._wire: dict[str, _Wire] = {}
        # Client ids this process sent: acknowledged (-> order number), in flight, outcome unknown.
        self._placed: dict[str, str] = {}
        self._in_flight: set[str] = set()
        self._unresolved: set[str] = set()
        self._requests: dict[str, OrderRequest] = {}  # what this process sent, by client id
        # armed first orders, built with their connection ahead of the instant (runner.brokers.primed)
        self._primed = PrimedBook()  # extra: the order's segment (its rate-limit key)
        self.logins = 0  # observable for tests and the bench

    # -- auth -------------------------------------------------------------------------------------
    def _credential(self, *keys: str) -> str:
        for key in keys:
            if key in self.account.credentials:
                return self.account.secret(key).reveal()
        for key in keys:  # identifiers (ucc, mobile) are not secret and may sit in options
            if key in self.account.options:
                return str(self.account.options[key])
        raise LookupError(f"account {self.account.name!r} has no credential {keys[0]!r}")

    def _current_totp(self) -> str:
        if "totp_secret" in self.account.credentials:
            return totp(self.account.secret("totp_secret").reveal(), self.clock.now())
        return self._credential("totp")  # a code provided from outside (one use only)

    async def connect(self) -> None:
        if self._session is None or self._stale():
            await self._login(None)

    async def relogin(self) -> None:
        await self._login(self._session)  # `failed` = the current session: log in even if it looks valid

    def _stale(self) -> bool:
        """Sessions are logged out daily: log in again once past `relogin_at` local time."""
        if self._session is None:
            return True
        if not self.account.relogin_at:
            return False
        zone = ZoneInfo(self.account.timezone)
        now = self.clock.now().astimezone(zone)
        hh, mm = (int(p) for p in self.account.relogin_at.split(":"))
        cutoff = now.replace(hour=hh, minute=mm, second=0, microsecond=0)
        if now < cutoff:
            cutoff -= dt.timedelta(days=1)
        return self._session.at.astimezone(zone) < cutoff

    async def _login(self, failed: _Session | None) -> _Session:
        async with self._login_lock:
            if self._session is not None and self._session is not failed and not self._stale():
                return self._session  # someone else logged in while we waited
            access = self._credential("access_token", "consumer_key")
            base = {"Authorization": access, "neo-fin-key": NEO_FIN_KEY}
            async with make_client(self._login_url, timeout=self.account.timeout_seconds,
                                   transport=self._transport, headers=ACCEPT_JSON) as login:
                r1 = await send(login, "POST", PATH_TOTP_LOGIN, broker=BROKER, mutating=False,
                                headers={**base, "Content-Type": "application/json"},
                                content=json.dumps({"mobileNumber": self._credential("mobile_number"),
                                                    "ucc": self._credential("ucc"),
                                                    "totp": self._current_totp()}))
                view = parse_login(_json(r1), r1.status_code)
                r2 = await send(login, "POST", PATH_TOTP_VALIDATE, broker=BROKER, mutating=False,
                                # session values are scrubbed from every log line and journal row
                                headers={**base, "sid": secret(view.sid), "Auth": secret(view.token),
                                         "Content-Type": "application/json"},
                                content=json.dumps({"mpin": self._credential("mpin")}))
                trade = parse_login(_json(r2), r2.status_code)
            base_url = self._trade_override or trade.base_url
            if not base_url:
                raise Rejected("login reply has no baseUrl", broker=BROKER)
            if self._client is None or str(self._client.base_url).rstrip("/") != base_url.rstrip("/"):
                if self._client is not None:
                    await self._client.aclose()
                self._client = make_client(base_url, timeout=self.account.timeout_seconds,
                                           transport=self._transport, headers=ACCEPT_JSON)
            self._session = _Session(secret(trade.token), secret(trade.sid), base_url, self.clock.now())
            self.logins += 1
            return self._session

    async def warm_connections(self, sends: int) -> None:
        """Connections for ``sends`` orders sent at once, opened ahead of their instant
        (:mod:`runner.brokers.warm`): the sends then write at once instead of connecting first."""
        async with self._warm_lock:
            if self._client is not None:
                await warm_pool(self._client, sends, self.account.timeout_seconds)

    async def prime(self, request: OrderRequest) -> None:
        """``request``'s place call as bytes on a connection of its own (:mod:`runner.brokers.primed`):
        at the instant :meth:`place` only writes it. Best effort: on any trouble it is sent the ordinary
        way."""
        session = self._session
        cid = request.client_order_id
        if session is None or self._stale() or cid in self._primed:
            return
        try:
            row = self.master.resolve(request.instrument)
            jdata = place_jdata(request, row, amo=self._amo)
            headers = {**ACCEPT_JSON, **self._headers(session, form=True, mutating=True)}
            body = urlencode({"jData": json.dumps(jdata)}).encode()
            primed = await PrimedRequest.open(
                session.base_url, "POST", PATH_PLACE, headers, body, self.account.timeout_seconds
            )
        except Exception as exc:  # the place at the instant builds and connects as it always did
            log.debug("priming %s failed: %s: %s", cid, type(exc).__name__, exc)
            return
        if cid in self._placed or cid in self._in_flight or cid in self._unresolved:
            primed.close()  # its place already went the ordinary way
            return
        self._primed.add(request, session, primed, jdata["es"])

    def unprime(self, client_order_id: str) -> None:
        self._primed.unprime(client_order_id)

    def _primed_for(self, request: OrderRequest) -> PrimedRequest | None:
        return self._primed.usable(request, None if self._stale() else self._session)

    def write_primed(self, request: OrderRequest) -> bool:
        cid = request.client_order_id
        primed = self._primed_for(request)
        if primed is None or cid in self._placed or cid in self._in_flight or cid in self._unresolved:
            return False
        if not self.limiter.try_acquire(self._limit_key(self._primed[cid][3])):
            return False  # the ordinary path waits for its token
        primed.write()
        return True

    def _take_primed(self, request: OrderRequest) -> PrimedRequest | None:
        """The primed call of exactly this request on the current session: written already
        (:meth:`write_primed`), or still sendable."""
        return self._primed.take(request, None if self._stale() else self._session)

    async def close(self) -> None:
        self._primed.close_all()
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        self._session = None

    # -- transport --------------------------------------------------------------------------------
    def _headers(self, session: _Session, *, form: bool, mutating: bool) -> dict[str, str]:
        # SDK: Sid + Auth everywhere, plus Authorization (the access token) on place/modify/cancel;
        # the seed adds neo-fin-key. We send the union.
        headers = {"Sid": session.sid, "Auth": session.token, "neo-fin-key": NEO_FIN_KEY}
        if mutating:
            headers["Authorization"] = self._credential("access_token", "consumer_key")
        if form:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        return headers

    async def _request(self, method: str, path: str, *, mutating: bool,
                       jdata: Mapping[str, str] | None = None) -> dict[str, Any]:
        """One call. A read refused for an expired session is sent once more after one re-login; a write
        never is: the session is dropped and AuthExpired raised, so the engine's gateway logs in through
        connect() and retries it, journaled. Backoff on other errors is the gateway's too."""
        for attempt in (0, 1):
            if self._session is None or self._stale():
                await self._login(self._session)
            session = self._session
            assert session is not None and self._client is not None
            headers = self._headers(session, form=jdata is not None, mutating=mutating)
            kwargs: dict[str, Any] = {"headers": headers}
            if jdata is not None:
                kwargs["data"] = {"jData": json.dumps(jdata)}
            try:
                response = await send(self._client, method, path, broker=BROKER, mutating=mutating, **kwargs)
                return _payload(response, mutating=mutating)
            except AuthExpired as exc:
                expiry.report(exc, self.account.name)
                if attempt or mutating:
                    if self._session is session:
                        self._session = None  # connect() logs in again
                    raise
                await self._login(session)
        raise AssertionError("unreachable")

    async def _read(self, method: str, path: str, jdata: Mapping[str, str] | None = None) -> dict[str, Any]:
        return await self._request(method, path, mutating=False, jdata=jdata)

    def _limit_key(self, segment: str) -> tuple[str, ...]:
        return (self.account.name, segment_of(segment)) if self.account.rate_limit.per_segment else (
            self.account.name,)

    async def _write(self, path: str, jdata: Mapping[str, str], segment: str,
                     primed: PrimedRequest | None = None) -> dict[str, Any]:
        key = self._limit_key(segment)
        written = primed is not None and primed.written  # its token was taken when it was written
        if not written:
            await self.limiter.acquire(key)
        try:
            if primed is not None and (written or primed.usable()):
                session = self._session
                try:
                    if not written:
                        primed.write()
                    response = await primed.reply(broker=BROKER, timeout=self.account.timeout_seconds)
                    return _payload(response, mutating=True)
                except AuthExpired as exc:  # as _request does for a write: never re-sent, log in again first
                    expiry.report(exc, self.account.name)
                    if self._session is session:
                        self._session = None
                    raise
            return await self._request("POST", path, mutating=True, jdata=jdata)
        except RateLimited as exc:
            self.limiter.penalize(key, exc.retry_after or 1.0)
            raise

    # -- lookups ------------------------------------------------------------------------------------
    def _lookup(self, segment: str, token: str | None, trading_symbol: str | None) -> Instrument:
        seg = segment.lower()
        if token and (seg, token) in self._by_token:
            return self._by_token[(seg, token)]
        if trading_symbol and (seg, trading_symbol.upper()) in self._by_symbol:
            return self._by_symbol[(seg, trading_symbol.upper())]
        return default_lookup(segment, token, trading_symbol)

    def _remember(self, row: Mapping[str, Any]) -> None:
        no = _text(row, "nOrdNo")
        if no:
            raw = str(row.get("ordSt", "")).lower()
            known = self._wire.get(no)
            self._wire[no] = _Wire(str(row.get("prod", "")), str(row.get("trdSym", "")),
                                   raw == AMO_STATUS or (known.amo if known else False))

    def _order(self, row: Mapping[str, Any]) -> Order:
        self._remember(row)
        return parse_order(row, self._lookup, policy=self._status_policy)

    def _readable(self, row: Mapping[str, Any], *, ours: bool = False) -> Order | None:
        """A book row as an Order, or None for a foreign row that cannot be read (a manual order of a
        type this adapter does not map, placed from Kotak's own terminal): it is skipped, logged, so one
        such row cannot break every read on the account. Our own orders are never skipped: one this
        process sent comes back from its request with status UNKNOWN (resolved by a later read); one it
        cannot rebuild raises BrokerError."""
        try:
            return self._order(row)
        except (BrokerError, ValueError) as exc:
            why = exc.message if isinstance(exc, BrokerError) else str(exc)
            cid = str(row.get("GuiOrdId") or "")
            number = _text(row, "nOrdNo")
            request = self._requests.get(cid)
            if request is not None:
                log.error("kotak_neo: our order %s (%s) is unreadable: %s", number, cid, why)
                return Order.from_request(request, OrderStatus.UNKNOWN, broker_order_id=number,
                                          raw_status=_text(row, "ordSt", "stat"), updated_at=_timestamp(row))
            if ours or is_client_order_id(cid) or cid in self._placed or cid in self._unresolved:
                raise BrokerError(f"order {number} ({cid}) is unreadable: {why}",
                                  broker=BROKER) from exc
            log.warning("kotak_neo: skipping foreign order %s: %s", number, why)
            return None

    def _readable_rows(self, rows: Sequence[Mapping[str, Any]]) -> list[Order]:
        return [o for o in (self._readable(r) for r in rows) if o is not None]

    async def _order_book(self) -> dict[str, Any]:
        return await self._read("GET", PATH_ORDERS)

    async def orders(self) -> Sequence[Order]:
        payload = await self._book()
        return self._readable_rows(rows_of(payload))

    async def open_orders(self) -> Sequence[Order]:
        # rows already final are not parsed: most of a day's book by the close
        rows = [r for r in rows_of(await self._book()) if not terminal_row(r)]
        return [o for o in self._readable_rows(rows) if not o.status.is_terminal]

    async def orders_of(self, client_order_ids: Collection[str]) -> Sequence[Order]:
        """:class:`runner.brokers.selected_orders.SelectedOrders`: one book read, only these ids' rows
        parsed (as :meth:`orders` would read them)."""
        wanted = set(client_order_ids)
        rows = rows_of(await self._book())
        return self._readable_rows([r for r in rows if str(r.get("GuiOrdId") or "") in wanted])

    async def get_order(self, client_order_id: str) -> Order | None:
        """Kotak has no lookup by tag: scan the day's order book for GuiOrdId (our `ig`). Only the
        matching rows are read, so a foreign row elsewhere in the book does not matter."""
        rows = rows_of(await self._book())  # one book read for the callers asking at once
        matching = [r for r in rows if str(r.get("GuiOrdId") or "") == client_order_id]
        found = [self._readable(r, ours=True) for r in matching]
        mine = [o for o in found if o is not None]
        if not mine:
            return None
        if len(mine) > 1:
            log.error("kotak_neo: %d orders carry client id %s", len(mine), client_order_id)
        return max(mine, key=lambda o: o.updated_at or dt.datetime.min.replace(tzinfo=dt.UTC))

    async def get_order_by_broker_id(self, broker_order_id: str) -> Order:
        payload = await self._read("POST", PATH_HISTORY, {"nOrdNo": broker_order_id})
        rows = rows_of(payload)
        if not rows:
            raise NotFound(f"order {broker_order_id} not found", code=str(CODE_NOT_FOUND), broker=BROKER)
        order = self._readable(latest_row(rows), ours=True)
        assert order is not None  # ours=True: unreadable raises
        return order

    async def positions(self) -> Sequence[Position]:
        payload = await self._read("GET", self._positions_path)
        return read_positions(rows_of(payload), lambda r: parse_position(r, self._lookup),
                              lambda r: f"{r.get('exSeg', '')}:{r.get('trdSym', '')}")

    async def trades(self) -> Sequence[Fill]:
        payload = await self._read("GET", PATH_TRADES)
        return [parse_fill(r, self._lookup) for r in rows_of(payload)]

    # -- market data ----------------------------------------------------------------------------------
    async def quotes(self, instruments: Sequence[Instrument]) -> Mapping[str, Quote]:
        """Quotes through Kotak's quotes endpoint, 50 instruments per call, each call through the read
        bucket. Instruments not in the master, and any Kotak does not quote, are absent from the result."""
        wanted: dict[tuple[str, str], Instrument] = {}
        for instrument in instruments:
            try:
                row = self.master.resolve(instrument)
                seg = segment_for(row)
            except BrokerError:
                continue
            if row.token:
                wanted.setdefault((seg.lower(), row.token), instrument)
        out: dict[str, Quote] = {}
        for batch in batches(list(wanted)):
            symbols = [neo_symbol(seg, token) for seg, token in batch]
            payload = await self._quote_call(quotes_path(symbols, self._quote_type))
            received = self.clock.now().astimezone(dt.UTC)
            for raw in quote_rows_of(payload):
                parsed = parse_quote(raw)
                if parsed is None:
                    continue
                quoted = wanted.get((parsed.segment, parsed.token))
                if quoted is None or (parsed.ltp is None and parsed.bid is None and parsed.ask is None):
                    continue
                out[quoted.key] = Quote(quoted, parsed.ltp, received, parsed.bid, parsed.ask,
                                        traded_at=parsed.at)
        return out

    async def instrument_master(self) -> InstrumentMaster:
        """:class:`runner.brokers.base.InstrumentSource`: the master this adapter resolves orders against
        (rolling instruments resolve through it)."""
        return self.master

    async def ltp(self, instrument: Instrument) -> Decimal | None:
        quote = (await self.quotes([instrument])).get(instrument.key)
        return quote.ltp if quote is not None else None

    async def _quote_call(self, path: str) -> Any:
        """One quotes GET on the session's baseUrl with the access token as ``Authorization`` (no Sid/Auth:
        the docs say the quotes API needs no session)."""
        if self._session is None or self._stale():
            await self._login(self._session)
        assert self._client is not None
        key = (self.account.name, "quotes")
        await self.read_limiter.acquire(key)
        headers = {"Authorization": self._credential("access_token", "consumer_key")}
        try:
            response = await send(self._client, "GET", path, broker=BROKER, mutating=False, headers=headers)
        except RateLimited as exc:
            self.read_limiter.penalize(key, exc.retry_after or 1.0)
            raise
        try:
            payload = loads(response.content)
        except ValueError:
            raise Unavailable(f"HTTP {response.status_code}: quotes reply is not JSON",
                              broker=BROKER) from None
        if isinstance(payload, Mapping):
            error = error_for(payload, response.status_code)
            if error is not None and "data" not in payload and "exchange_token" not in payload:
                raise error
        elif response.status_code >= 400:
            raise Unavailable(f"HTTP {response.status_code} on quotes", code=str(response.status_code),
                              broker=BROKER)
        return payload

    # -- order entry --------------------------------------------------------------------------------
    async def _already_sent(self, cid: str) -> Order | None:
        """Kotak accepts a repeated ``ig`` as a new order, so this adapter never sends an id twice:
        acknowledged -> that order; in flight -> refused; outcome unknown -> looked up in the order book
        (found -> that order; absent -> None, and the caller may send it: the broker has none)."""
        number = self._placed.get(cid)
        if number is not None:
            return (await self.get_order_by_broker_id(number)).evolve(client_order_id=cid)
        if cid in self._in_flight:
            raise Rejected(f"client id {cid} is being sent already", code="duplicate", broker=BROKER)
        if cid in self._unresolved:
            found = await self.get_order(cid)
            if found is not None:
                self._unresolved.discard(cid)
                if found.broker_order_id:
                    self._placed[cid] = found.broker_order_id
                return found
            self._unresolved.discard(cid)
        return None

    async def place(self, request: OrderRequest) -> Order:
        row = self.master.resolve(request.instrument)  # InstrumentUnknown before anything is sent
        jdata = place_jdata(request, row, amo=self._amo)
        cid = request.client_order_id
        existing = await self._already_sent(cid)
        if existing is not None:
            return existing
        primed = self._take_primed(request)
        self._in_flight.add(cid)
        self._requests[cid] = request
        try:
            payload = await self._write(PATH_PLACE, jdata, jdata["es"], primed)
            number = payload.get("nOrdNo")
            if not number:
                # "Ok" without an order number: the order may exist; resolve by lookup, never re-send.
                raise OutcomeUnknown("place acknowledged without nOrdNo", broker=BROKER)
        except OutcomeUnknown:
            self._unresolved.add(cid)
            raise
        finally:
            self._in_flight.discard(cid)
        # Other errors (refused, rate limited, not connected, session expired) mean no order exists.
        self._placed[cid] = str(number)
        self._wire[str(number)] = _Wire(jdata["pc"], jdata["ts"], self._amo)
        await after_send()  # a burst's other orders go out before this one's verify read
        # An ack is not an open order, let alone a fill.
        ack = Order.from_request(request, OrderStatus.PENDING_NEW, broker_order_id=str(number),
                                 updated_at=self.clock.now()).evolve(instrument=row.instrument, tag=cid)
        if not self._verify_place or defer_read_back():  # the caller reads its batch back in one go
            return ack
        # Kotak acks first and rejects asynchronously (RMS / exchange): one read tells the caller at once
        # when the order was refused. If the read fails the ack stands; the engine reads back anyway.
        try:
            current = await self.get_order_by_broker_id(str(number))
        except BrokerError:
            return ack
        if current.status is OrderStatus.REJECTED:
            raise Rejected(current.reject_reason or "order rejected", code="rejected", broker=BROKER)
        return current

    async def _wire_of(self, order: Order) -> _Wire:
        assert order.broker_order_id is not None
        wire = self._wire.get(order.broker_order_id)
        if wire is None:
            await self.get_order_by_broker_id(order.broker_order_id)  # fills the cache
            wire = self._wire[order.broker_order_id]
        return wire

    def _segment(self, order: Order) -> str:
        try:
            return segment_for(self.master.resolve(order.instrument))
        except BrokerError:
            return SEGMENT_OF_EXCHANGE.get(order.instrument.exchange.upper(), order.instrument.exchange)

    async def modify(self, order: Order, change: Modification) -> Order:
        if order.broker_order_id is None:
            raise NotFound("order has no broker order number", broker=BROKER)
        wire = await self._wire_of(order)
        jdata = modify_jdata(order, change, amo=wire.amo or order.raw_status == AMO_STATUS)
        await self._write(PATH_MODIFY, jdata, self._segment(order))
        order_type = change.order_type or order.order_type
        return order.evolve(
            quantity=int(jdata["qt"]),
            order_type=order_type,
            price=change.price if change.price is not None else order.price,
            trigger_price=change.trigger_price if change.trigger_price is not None else order.trigger_price,
            updated_at=self.clock.now(),
        )

    async def cancel(self, order: Order) -> Order:
        """Regular cancel, or BO/CO exit by product. 1006 says "already cancelled or not found": read
        back to tell NotModifiable (it exists, in a final state) from NotFound."""
        if order.broker_order_id is None:
            raise NotFound("order has no broker order number", broker=BROKER)
        wire = await self._wire_of(order)
        amo = wire.amo or order.raw_status == AMO_STATUS
        jdata = cancel_jdata(order.broker_order_id, amo=amo, trading_symbol=wire.ts or None)
        try:
            await self._write(cancel_path(wire.prod), jdata, self._segment(order))
        except NotFound:
            current = await self.get_order_by_broker_id(order.broker_order_id)  # NotFound if truly absent
            raise NotModifiable(f"order {order.broker_order_id} is {current.raw_status}",
                                code=str(CODE_NOT_FOUND), broker=BROKER) from None
        if order.status.is_terminal:
            return order
        return order.evolve(status=OrderStatus.PENDING_CANCEL, updated_at=self.clock.now())


def _payload(response: httpx.Response, *, mutating: bool) -> dict[str, Any]:
    """A reply's JSON, or the error its envelope names."""
    payload = _json(response, mutating=mutating)
    error = error_for(payload, response.status_code)
    if error is not None:
        raise error
    return payload


def master(account: Account, **context: Any) -> InstrumentMaster:
    """The master the factory resolves against (runner.brokers.registry.MASTERS)."""
    from runner.instruments.load import master_for

    given: InstrumentMaster | None = context.get("master")
    return given if given is not None else master_for(account, db_url=context.get("db_url"))


def create(account: Account, **context: Any) -> KotakNeo:
    return KotakNeo(
        account,
        master=master(account, **context),
        clock=context.get("clock"),
        limiter=context.get("limiter"),
        transport=context.get("transport"),
        read_limiter=context.get("read_limiter"),
    )
