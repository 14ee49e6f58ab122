"""AlphaPoint APEX adapter: JSON-RPC over one WebSocket per account.

Wire format (alphapoint/slate docs, npm ``alphapoint-apex-api`` ``src/APEX.js``): every message is
``{"m": type, "i": seq, "n": "FunctionName", "o": "<payload JSON as a string>"}``; ``m`` 0 request,
1 reply, 2 subscribe, 3 event, 4 unsubscribe, 5 error. Replies echo ``i``. The official client starts
``i`` at 0 and adds 2 (the team note says "start at 2"; both are even, we follow the client).

Pure translation lives in the functions below; :class:`ApexSession` does the socket I/O and
:class:`AlphaPointBroker` implements :class:`runner.brokers.base.Broker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from runner.brokers.base import Capability, Positions, UnreadablePosition
from runner.brokers.instruments import InstrumentMaster, MasterRow
from runner.brokers.ratelimit import RateLimiter, segment_of
from runner.errors import (
    AuthExpired,
    BrokerError,
    InstrumentUnknown,
    Malformed,
    NotFound,
    NotModifiable,
    OutcomeUnknown,
    RateLimited,
    Rejected,
    Retryable,
    Unavailable,
)
from runner.ids import numeric_id
from runner.model import (
    Instrument,
    Modification,
    Order,
    OrderRequest,
    OrderStatus,
    OrderType,
    Position,
    Product,
    Side,
    Validity,
)
from runner.scrub import secret
from runner.wirejson import dumps, loads, to_decimal, to_int

if TYPE_CHECKING:
    from runner.accounts import Account

log = logging.getLogger("runner.brokers.alphapoint")  # stable name, not __name__: people filter on it
BROKER = "alphapoint"
_int = functools.partial(to_int, broker=BROKER)  # whole numbers exactly, or Malformed naming the field

# ---------------------------------------------------------------------------------------------------------
# Frames (payloads through runner.wirejson: money never passes through float)


class MessageType:
    REQUEST = 0
    REPLY = 1
    SUBSCRIBE = 2
    EVENT = 3
    UNSUBSCRIBE = 4
    ERROR = 5


def encode_frame(m: int, i: int, n: str, payload: Any) -> str:
    # ``o`` is itself a JSON *string*, as APEX.js sends it (JSON.stringify(paramObject)).
    return json.dumps({"m": m, "i": i, "n": n, "o": dumps(payload)})


@dataclass(frozen=True, slots=True)
class Frame:
    m: int
    i: int
    n: str
    o: Any  # parsed payload

    @classmethod
    def parse(cls, raw: str | bytes) -> Frame:
        outer = json.loads(raw)
        body = outer.get("o")
        if isinstance(body, str):
            body = loads(body) if body.strip() else None
        return cls(int(outer.get("m", 0)), int(outer.get("i", 0)), str(outer.get("n", "")), body)


def ci(record: Mapping[str, Any]) -> dict[str, Any]:
    """Case-insensitive view: the docs say key case "is generally not important", and replies mix
    ``OrderId`` (order objects) with ``omsId``/``productSymbol`` (positions, auth)."""
    return {str(k).lower(): v for k, v in record.items()}


# ---------------------------------------------------------------------------------------------------------
# Enumerations (ints in requests; replies spell them as strings; accept both when reading)

SIDE_TO_WIRE = {Side.BUY: 0, Side.SELL: 1}
SIDE_FROM_WIRE: dict[str, Side] = {
    "buy": Side.BUY,
    "0": Side.BUY,
    "sell": Side.SELL,
    "1": Side.SELL,
    "short": Side.SELL,
    "2": Side.SELL,
}

ORDER_TYPE_TO_WIRE = {OrderType.MARKET: 1, OrderType.LIMIT: 2, OrderType.SL_M: 3, OrderType.SL: 4}
ORDER_TYPE_FROM_WIRE: dict[str, OrderType] = {
    "market": OrderType.MARKET,
    "1": OrderType.MARKET,
    "limit": OrderType.LIMIT,
    "2": OrderType.LIMIT,
    "stopmarket": OrderType.SL_M,
    "3": OrderType.SL_M,
    "stoplimit": OrderType.SL,
    "4": OrderType.SL,
}

# APEX has no DAY validity: GTC orders are expired by the venue at session end; IOC is native.
TIF_TO_WIRE = {Validity.DAY: 1, Validity.IOC: 3}
TIF_FROM_WIRE: dict[str, Validity] = {
    "gtc": Validity.DAY,
    "1": Validity.DAY,
    "ioc": Validity.IOC,
    "3": Validity.IOC,
    "fok": Validity.IOC,
    "4": Validity.IOC,
}

PEG_PRICE_TYPES = {"last": 1, "bid": 2, "ask": 3, "midpoint": 4}

# OrderState -> canonical status. "Working" with QuantityExecuted > 0 is a partial fill (APEX has no
# partial state). Numeric spellings are the enum values the docs list next to the names.
ORDER_STATE: dict[str, OrderStatus] = {
    "working": OrderStatus.OPEN,
    "1": OrderStatus.OPEN,
    "rejected": OrderStatus.REJECTED,
    "2": OrderStatus.REJECTED,
    "canceled": OrderStatus.CANCELLED,
    "cancelled": OrderStatus.CANCELLED,
    "3": OrderStatus.CANCELLED,
    "expired": OrderStatus.EXPIRED,
    "4": OrderStatus.EXPIRED,
    "fullyexecuted": OrderStatus.FILLED,
    "5": OrderStatus.FILLED,
    "unknown": OrderStatus.UNKNOWN,
    "0": OrderStatus.UNKNOWN,
}

# Generic error codes (CancelOrder/ModifyOrder replies and m=5 frames).
ERR_NOT_AUTHORIZED = 20
ERR_INVALID_REQUEST = 100
ERR_OPERATION_FAILED = 101
ERR_SERVER_ERROR = 102
ERR_NOT_FOUND = 104
ERR_NOT_SUPPORTED = 106

MUTATING_CALLS = frozenset(
    {"SendOrder", "CancelOrder", "CancelReplaceOrder", "ModifyOrder", "CancelAllOrders"}
)


def _key(value: Any) -> str:
    return str(value).replace(" ", "").replace("_", "").lower()


def status_from_wire(state: Any, executed: int) -> OrderStatus:
    status = ORDER_STATE.get(_key(state))
    if status is None:
        log.warning("alphapoint: unknown OrderState %r, treating as unknown", state)
        return OrderStatus.UNKNOWN
    if status is OrderStatus.OPEN and executed > 0:
        return OrderStatus.PARTIALLY_FILLED
    return status


def _money(value: Decimal) -> Decimal:
    """Four decimals at most, no exponent notation (``1E+3`` -> ``1000``)."""
    q = value.quantize(Decimal("0.0001"))
    return q.quantize(Decimal(1)) if q == q.to_integral_value() else q.normalize()


def error_from_payload(payload: Mapping[str, Any], *, call: str, frame_error: bool = False) -> BrokerError:
    """Map ``{result:false, errormsg, errorcode, detail}`` (or an m=5 body) onto runner.errors."""
    body = ci(payload)
    code = body.get("errorcode")
    try:
        code_int = int(code) if code is not None else None
    except (TypeError, ValueError):
        code_int = None
    msg = str(body.get("errormsg") or body.get("detail") or "error")
    detail = str(body.get("detail") or "")
    text = f"{call}: {msg}" + (f" ({detail})" if detail and detail != msg else "")
    code_s = str(code_int) if code_int is not None else None
    low = f"{msg} {detail}".lower()
    mutating = call in MUTATING_CALLS
    # No rate-limit reply is published for APEX; venues answer with a "throttled"/"rate limit" message.
    if "rate limit" in low or "throttl" in low or "too many" in low:
        return RateLimited(text, code=code_s, broker=BROKER)
    if code_int == ERR_NOT_AUTHORIZED or "not authorized" in low or "not logged in" in low:
        return AuthExpired(text, code=code_s, broker=BROKER)
    if code_int == ERR_NOT_FOUND:
        return NotFound(text, code=code_s, broker=BROKER)
    if code_int == ERR_SERVER_ERROR or (frame_error and code_int is None):
        # A server error says nothing about whether an order request was acted on.
        return (
            OutcomeUnknown(text, code=code_s, broker=BROKER)
            if mutating
            else Unavailable(text, code=code_s, broker=BROKER)
        )
    if (
        "not modifiable" in low
        or "not working" in low
        or ("already" in low and ("cancel" in low or "filled" in low))
    ):
        return NotModifiable(text, code=code_s, broker=BROKER)
    return Rejected(text, code=code_s, broker=BROKER)


# ---------------------------------------------------------------------------------------------------------
# Canonical -> wire


@dataclass(frozen=True, slots=True)
class AccountRef:
    oms_id: int
    account_id: int


def instrument_id_of(row: MasterRow) -> int:
    raw = row.extra.get("instrument_id") or row.extra.get("InstrumentId") or row.token
    if raw is None:
        raise InstrumentUnknown(
            f"instrument {row.instrument.key!r} has no AlphaPoint InstrumentId in the master", broker=BROKER
        )
    return int(raw)


def send_order_body(
    request: OrderRequest, instrument_id: int, acct: AccountRef, *, peg_price_type: int = 1
) -> dict[str, Any]:
    """SendOrder payload, key order and spelling as in the docs' SendOrder example."""
    body: dict[str, Any] = {
        "InstrumentId": instrument_id,
        "OMSId": acct.oms_id,
        "AccountId": acct.account_id,
        "TimeInForce": TIF_TO_WIRE[request.validity],
        "ClientOrderId": numeric_id(request.client_order_id),
        "OrderIdOCO": 0,
        "UseDisplayQuantity": request.disclosed_quantity > 0,
        "Side": SIDE_TO_WIRE[request.side],
        "Quantity": request.quantity,
        "OrderType": ORDER_TYPE_TO_WIRE[request.order_type],
        "PegPriceType": peg_price_type,
    }
    if request.price is not None and request.order_type in (OrderType.LIMIT, OrderType.SL):
        body["LimitPrice"] = request.price
    if request.trigger_price is not None and request.order_type in (OrderType.SL, OrderType.SL_M):
        body["StopPrice"] = request.trigger_price
    if request.disclosed_quantity > 0:
        body["DisplayQuantity"] = request.disclosed_quantity
    return body


def cancel_order_body(
    acct: AccountRef, *, order_id: int | None = None, client_numeric: int | None = None
) -> dict[str, Any]:
    """By OrderId when we know it; else AccountId + ClientOrderId (OMSId alone cannot identify it)."""
    if order_id is not None:
        return {"OMSId": acct.oms_id, "AccountId": acct.account_id, "OrderId": order_id}
    if client_numeric is None:
        raise ValueError("cancel needs an OrderId or a ClientOrderId")
    return {"OMSId": acct.oms_id, "AccountId": acct.account_id, "ClientOrderId": client_numeric}


def modify_order_body(acct: AccountRef, order_id: int, instrument_id: int, quantity: int) -> dict[str, Any]:
    """ModifyOrder: reduce quantity only, keeps book priority. ``Quantity`` is the new *remaining*
    quantity, as the order object's ``Quantity`` is the remaining one."""
    return {
        "OMSId": acct.oms_id,
        "OrderId": order_id,
        "InstrumentId": instrument_id,
        "Quantity": quantity,
        "AccountId": acct.account_id,
    }


def cancel_replace_body(
    order: Order, change: Modification, instrument_id: int, acct: AccountRef, *, peg_price_type: int = 1
) -> dict[str, Any]:
    """CancelReplaceOrder: a new order (new OrderId, loses priority) with our same ClientOrderId."""
    if order.broker_order_id is None:
        raise NotFound("cannot replace an order without a broker order id", broker=BROKER)
    order_type = change.order_type or order.order_type
    total = change.quantity if change.quantity is not None else order.quantity
    price = change.price if change.price is not None else order.price
    trigger = change.trigger_price if change.trigger_price is not None else order.trigger_price
    remaining = total - order.filled_quantity
    if remaining <= 0:
        raise NotModifiable(
            f"new quantity {total} is not above the filled {order.filled_quantity}", broker=BROKER
        )
    cl = numeric_id(order.client_order_id)
    return {
        "OMSId": acct.oms_id,
        "OrderIdToReplace": int(order.broker_order_id),
        "ClientOrdId": cl,
        "OrderType": ORDER_TYPE_TO_WIRE[order_type],
        "Side": SIDE_TO_WIRE[order.side],
        "AccountId": acct.account_id,
        "InstrumentId": instrument_id,
        "UseDisplayQuantity": False,
        "DisplayQuantity": 0,
        "LimitPrice": price
        if order_type in (OrderType.LIMIT, OrderType.SL) and price is not None
        else Decimal(0),
        "StopPrice": trigger
        if order_type in (OrderType.SL, OrderType.SL_M) and trigger is not None
        else Decimal(0),
        "ReferencePrice": Decimal(0),
        "PegPriceType": peg_price_type,
        "TimeInForce": TIF_TO_WIRE[order.validity],
        "OrderIdOCO": 0,
        "Quantity": remaining,
    }


# ---------------------------------------------------------------------------------------------------------
# Wire -> canonical


def _ms_to_dt(value: Any) -> dt.datetime | None:
    try:
        ms = int(value)
    except (TypeError, ValueError):
        return None
    if ms <= 0:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def order_from_wire(
    record: Mapping[str, Any],
    *,
    instrument_of: Callable[[int], Instrument],
    client_id_of: Callable[[int], str],
    product_of: Callable[[str], Product],
) -> Order:
    r = ci(record)
    # In every order record (GetOrderStatus / GetOpenOrders docs). A venue with a QuantityIncrement
    # below 1 can report fractions: Malformed naming the field, never truncated.
    executed = _int(r.get("quantityexecuted"), "QuantityExecuted")
    remaining = _int(r.get("quantity"), "Quantity")
    orig = _int(r.get("origquantity"), "OrigQuantity")
    status = status_from_wire(r.get("orderstate"), executed)
    # Working: total = remaining + executed (ModifyOrder reduces the remaining); done: what was asked.
    if status.is_working:
        quantity = remaining + executed
    elif status is OrderStatus.FILLED:
        quantity = executed or orig
    else:
        quantity = orig or remaining + executed
    side = SIDE_FROM_WIRE.get(_key(r.get("side")))
    if side is None:
        raise BrokerError(f"unknown Side {r.get('side')!r} in order {r.get('orderid')}", broker=BROKER)
    otype = ORDER_TYPE_FROM_WIRE.get(_key(r.get("ordertype")))
    if otype is None:
        raise BrokerError(f"unsupported OrderType {r.get('ordertype')!r}", broker=BROKER)
    client_numeric = int(r.get("clientorderid") or 0)
    client_id = client_id_of(client_numeric)
    reason = r.get("rejectreason") if status is OrderStatus.REJECTED else None
    avg = to_decimal(r.get("avgprice"))
    return Order(
        client_order_id=client_id,
        broker_order_id=str(r.get("orderid")),
        instrument=instrument_of(int(r.get("instrument") or r.get("instrumentid") or 0)),
        side=side,
        quantity=quantity,
        order_type=otype,
        product=product_of(client_id),
        status=status,
        filled_quantity=executed,
        average_price=avg if executed > 0 else None,
        price=(to_decimal(r.get("price")) or None) if otype in (OrderType.LIMIT, OrderType.SL) else None,
        trigger_price=(to_decimal(r.get("stopprice")) or None)
        if otype in (OrderType.SL, OrderType.SL_M)
        else None,
        validity=TIF_FROM_WIRE.get(_key(r.get("timeinforce") or "gtc"), Validity.DAY),
        reject_reason=str(reason) if reason else None,
        updated_at=_ms_to_dt(r.get("lastupdatedtime") or r.get("receivetime")),
        raw_status=str(r.get("orderstate")),
    )


def latest_for_client(records: Sequence[Mapping[str, Any]], client_numeric: int) -> Mapping[str, Any] | None:
    """The live incarnation of our order: a CancelReplace leaves the original Canceled and a new
    OrderId with the same ClientOrderId, so the highest OrderId wins."""
    mine = [r for r in records if int(ci(r).get("clientorderid") or 0) == client_numeric]
    if not mine:
        return None
    return max(mine, key=lambda r: int(ci(r).get("orderid") or 0))


# ---------------------------------------------------------------------------------------------------------
# Auth


def api_key_signature(secret: str, nonce: str, user_id: str, api_key: str) -> str:
    """HMAC-SHA256 hex of nonce + userId + apiKey keyed with the API secret (AlphaPoint API-key login)."""
    return hmac.new(secret.encode(), f"{nonce}{user_id}{api_key}".encode(), hashlib.sha256).hexdigest()


def authenticate_body(credentials: Mapping[str, str], nonce: str) -> dict[str, str]:
    """``{UserName, Password}`` or ``{APIKey, Signature, UserId, Nonce}`` (slate AuthenticateUser)."""
    if "api_key" in credentials:
        user_id = credentials["user_id"]
        sig = api_key_signature(credentials["api_secret"], nonce, user_id, credentials["api_key"])
        return {"APIKey": credentials["api_key"], "Signature": sig, "UserId": user_id, "Nonce": nonce}
    return {"UserName": credentials["username"], "Password": credentials["password"]}


# ---------------------------------------------------------------------------------------------------------
# Session: one WebSocket, request/reply matching by ``i``, events fanned out


class _ConnectionLost(Exception):
    pass


EventHandler = Callable[[str, Any], None]


class ApexSession:
    """A WebSocket with JSON-RPC request/reply matching. Reconnects (and re-authenticates through
    ``on_open``) lazily on the next call after the socket dropped."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        on_open: Callable[[ApexSession], Awaitable[None]],
        on_event: EventHandler,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self._on_open = on_open
        self._on_event = on_event
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[Frame]] = {}
        self._seq = 0  # APEX.js: starts at 0, += 2 (even numbers)
        self._lock = asyncio.Lock()
        self.connects = 0  # how many sockets we opened (tests, journal)

    @property
    def is_open(self) -> bool:
        return self._ws is not None and self._reader is not None and not self._reader.done()

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq += 2
        return seq

    async def ensure_open(self) -> None:
        if self.is_open:
            return
        async with self._lock:
            if self.is_open:
                return
            await self._drop()
            try:
                ws = await asyncio.wait_for(
                    connect(self.url, open_timeout=self.timeout, max_size=2**24, compression=None),
                    self.timeout,
                )
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
                raise Unavailable(
                    f"cannot connect to {self.url}: {type(exc).__name__}", broker=BROKER
                ) from exc
            self._ws = ws
            self._reader = asyncio.create_task(self._read(ws))
            self.connects += 1
            try:
                await self._on_open(self)
            except BaseException:
                await self._drop()
                raise

    async def reauthenticate(self) -> None:
        """Log in afresh: on the open socket (calls in flight on it go on undisturbed), else on a new
        one. A failed re-login drops the socket, so the next call reconnects and logs in."""
        if not self.is_open:
            await self.ensure_open()
            return
        async with self._lock:
            try:
                await self._on_open(self)
            except BaseException:
                await self._drop()
                raise

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                try:
                    frame = Frame.parse(raw)
                except (ValueError, TypeError):
                    log.warning("alphapoint: unparseable frame dropped")
                    continue
                if frame.m in (MessageType.REPLY, MessageType.ERROR):
                    fut = self._pending.pop(frame.i, None)
                    if fut is not None and not fut.done():
                        fut.set_result(frame)
                    # A subscribe call's reply is m=1 too; anything unmatched is a late reply: ignore.
                elif frame.m == MessageType.EVENT:
                    try:
                        self._on_event(frame.n, frame.o)
                    except Exception:  # an event handler bug must not kill the reader
                        log.exception("alphapoint: event handler failed for %s", frame.n)
        except ConnectionClosed:
            pass
        finally:
            pending, self._pending = self._pending, {}
            for fut in pending.values():
                if not fut.done():
                    fut.set_exception(_ConnectionLost())

    async def _drop(self) -> None:
        ws, reader = self._ws, self._reader
        self._ws = self._reader = None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader

    async def close(self) -> None:
        await self._drop()

    async def call_raw(
        self, name: str, payload: Any, *, mutating: bool, m: int = MessageType.REQUEST
    ) -> Frame:
        """Send one frame on the current socket and wait for its reply (no reconnect here)."""
        ws = self._ws
        if ws is None or not self.is_open:
            raise Unavailable(f"{name}: not connected", broker=BROKER)
        seq = self._next_seq()
        fut: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._pending[seq] = fut
        try:
            await ws.send(encode_frame(m, seq, name, payload))
        except ConnectionClosed as exc:
            # websockets refuses to write on a closed connection: the frame never left.
            self._pending.pop(seq, None)
            raise Unavailable(f"{name}: connection closed before sending", broker=BROKER) from exc
        try:
            return await asyncio.wait_for(fut, self.timeout)
        except (TimeoutError, _ConnectionLost) as exc:
            self._pending.pop(seq, None)
            what = "no reply" if isinstance(exc, TimeoutError) else "connection lost"
            if isinstance(exc, TimeoutError):
                await self._drop()  # a silent socket is not trusted again; reconnect next time
            message = f"{name}: {what} after sending"
            if mutating:
                raise OutcomeUnknown(message, broker=BROKER) from None
            raise Unavailable(message, broker=BROKER) from None

    async def call(self, name: str, payload: Any, *, mutating: bool) -> Any:
        await self.ensure_open()
        frame = await self.call_raw(name, payload, mutating=mutating)
        return check_reply(name, frame)


def check_reply(name: str, frame: Frame) -> Any:
    if frame.m == MessageType.ERROR:
        body = frame.o if isinstance(frame.o, Mapping) else {"errormsg": str(frame.o)}
        raise error_from_payload(body, call=name, frame_error=True)
    body = frame.o
    if isinstance(body, Mapping):
        low = ci(body)
        if low.get("result") is False:
            raise error_from_payload(body, call=name)
    return body


# ---------------------------------------------------------------------------------------------------------
# The Broker


class AlphaPointBroker:
    name = BROKER
    capabilities = frozenset(
        {
            Capability.MODIFY,
            Capability.LOOKUP_BY_CLIENT_ID,
            Capability.MARKET_ORDERS,
            Capability.STOP_ORDERS,
            Capability.STREAMING,
        }
    )

    def __init__(
        self,
        account: Account,
        *,
        master: InstrumentMaster | None = None,
        limiter: RateLimiter | None = None,
        url: str | None = None,
        **context: Any,
    ) -> None:
        self.account = account
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
        body = check_reply("AuthenticateUser", frame)
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
        except AuthExpired:
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
        by_symbol: dict[str, MasterRow] = {}
        for row in self.master:
            sym = row.extra.get("product_symbol") or row.trading_symbol or row.instrument.symbol
            by_symbol[sym.upper()] = row
        bad: dict[int, str] = {}  # InstrumentId -> why its trades cannot be replayed exactly
        replayed = replay_trades(trades, bad)
        out = Positions()
        unreadable: list[UnreadablePosition] = []
        for rec in body if isinstance(body, list) else []:
            r = ci(rec)
            held = by_symbol.get(str(r.get("productsymbol") or "").upper())
            if held is None:
                continue  # cash / products we do not trade
            row = held
            iid = instrument_id_of(row)
            # A fractional balance (QuantityIncrement < 1) fails this instrument only: the read goes on
            # and reports it (Positions.unreadable), so a square-off still closes the others.
            try:
                qty = _int(r.get("amount"), "Amount")
            except Malformed as exc:
                unreadable.append(UnreadablePosition(row.instrument.key, str(exc)))
                continue
            if iid in bad:
                unreadable.append(UnreadablePosition(row.instrument.key, bad[iid]))
                continue
            avg, realized, bought, sold = replayed.get(iid, (Decimal(0), Decimal(0), 0, 0))
            instrument = self._caller_instruments.get(iid, row.instrument)
            product = self._instrument_products.get(row.instrument.key, self.default_product)
            out.append(
                Position(
                    instrument=instrument,
                    product=product,
                    quantity=qty,
                    average_price=avg if qty else Decimal(0),
                    realized_pnl=realized,
                    day_buy_quantity=bought,
                    day_sell_quantity=sold,
                )
            )
        out.unreadable = tuple(unreadable)
        return out


def _sort_key(t: Mapping[str, Any]) -> tuple[int, int]:
    try:  # ordering only: an absent or unreadable stamp sorts first rather than failing the read
        return (_int(t.get("tradetimems"), "TradeTimeMS", default=0),
                _int(t.get("tradeid"), "TradeId", default=0))
    except Malformed:
        return 0, 0


def replay_trades(
    trades: Sequence[Mapping[str, Any]], bad: dict[int, str] | None = None
) -> dict[int, tuple[Decimal, Decimal, int, int]]:
    """Per InstrumentId: (average open price, realized P&L, bought, sold) from account trades, oldest
    first (APEX lists the newest first). A trade whose quantity is not a whole number (a fractional
    venue) makes its instrument unreplayable: recorded in ``bad`` (else raised), the others go on."""
    state: dict[int, list[Any]] = {}  # qty, open value, realized, bought, sold
    for t in sorted((ci(t) for t in trades), key=_sort_key):
        iid = int(t.get("instrumentid") or 0)
        side = SIDE_FROM_WIRE.get(_key(t.get("side")), Side.BUY)
        try:
            qty = _int(t.get("quantity"), "Quantity")
        except Malformed as exc:
            if bad is None:
                raise
            bad.setdefault(iid, f"trade {t.get('tradeid')}: {exc}")
            continue
        price = to_decimal(t.get("price")) or Decimal(0)
        st = state.setdefault(iid, [0, Decimal(0), Decimal(0), 0, 0])
        st[3 if side is Side.BUY else 4] += qty
        held, sign = st[0], side.sign
        if held == 0 or (held > 0) == (sign > 0):
            st[0] += sign * qty
            st[1] += price * qty
            continue
        closing = min(qty, abs(held))
        avg = st[1] / abs(held)
        st[2] += (price - avg) * closing * (1 if held > 0 else -1)
        st[1] = Decimal(0) if closing == abs(held) else st[1] - avg * closing
        st[0] += sign * closing
        if rest := qty - closing:
            st[0] += sign * rest
            st[1] = price * rest
    out: dict[int, tuple[Decimal, Decimal, int, int]] = {}
    for iid, (q, value, realized, bought, sold) in state.items():
        avg = _money(value / abs(q)) if q else Decimal(0)
        out[iid] = (avg, _money(realized), bought, sold)
    return out


def create(account: Account, **context: Any) -> AlphaPointBroker:
    return AlphaPointBroker(account, **context)
