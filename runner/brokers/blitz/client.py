"""QuantXpress Blitz OMS adapter (REST/JSON, ``app_login`` -> JWT bearer).

Sources: seed 000 (the vendor's OMS order docs) and the official SDK Quantxpress-Technologies/blitz-api-py
at commit aa61675 (``blitzsdk/common/{auth,config}.py``, ``blitzsdk/interactive/{api_client,models}.py``,
``docs/blitzsdk/*.md``, ``Postman-collection/``). Where they disagree the SDK's spelling is what we send
by default (``dialect: sdk``); ``dialect: seed`` sends the seed's spelling and paths. Whatever we read, we
accept both spellings (``orderStatus``/``status``, ``OrderType``/``orderType``, list/map payloads...).

Pure translation (canonical model <-> Blitz JSON, status and error tables) comes first; the
:class:`BlitzBroker` class at the bottom does the I/O.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import enum
import functools
import gzip
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from runner.brokers.base import Capability, read_positions
from runner.brokers.http import make_client, send
from runner.brokers.instruments import InstrumentMaster, MasterRow
from runner.brokers.ratelimit import RateLimiter, segment_of
from runner.errors import (
    AuthExpired,
    BrokerError,
    Malformed,
    NotFound,
    NotModifiable,
    OutcomeUnknown,
    RateLimited,
    Rejected,
    Retryable,
    Unavailable,
)
from runner.ids import is_client_order_id
from runner.model import (
    Fill,
    Instrument,
    Modification,
    OptionType,
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

BROKER = "blitz"
log = logging.getLogger("runner.brokers.blitz")
_int = functools.partial(to_int, broker=BROKER)  # whole numbers exactly, or Malformed naming the field

# SDK defaults (blitzsdk/common/config.py); every one is overridable in the account's ``endpoints``.
DEFAULT_BASE = "http://uat.bull8.ai:7443"
AUTH_SUFFIX = "/api_gateway/v1"
API_SUFFIX = "/api_interactive/api/v1"


class Dialect(enum.StrEnum):
    SDK = "sdk"  # blitz-api-py at aa61675: camelCase keys, BUY/LIMIT values, blitzOrderId for modify/cancel
    SEED = "seed"  # seed 000: OrderType/OrderSide keys, Buy/Limit values, exchangeOrderId for modify/cancel


@dataclass(frozen=True, slots=True)
class Paths:
    """Request paths relative to the trading base URL (login: relative to the auth base URL)."""

    login: str
    place: str
    modify: str
    cancel: str
    orders: str
    open_orders: str | None  # None: filter the day's orders ourselves
    order: str  # ``{id}`` is the blitzOrderId
    positions: str
    trades: str


SDK_PATHS = Paths(
    login="api/app_login",
    place="orders/placeOrder",
    modify="orders/modifyOrder",
    cancel="orders/cancelOrder",
    orders="orders",
    open_orders="orders/openOrders",
    order="orders/{id}",
    positions="positions",
    trades="trades",
)
# The seed's curls use the base ``http://uat.quantxpress.com/api/order`` (its table also shows ``orders/...``
# and ``order/cancelOrder``; the simulator accepts all of them). Positions/trades are SDK-only paths.
SEED_PATHS = Paths(
    login="api/app_login",
    place="placeOrder",
    modify="modifyOrder",
    cancel="cancelOrder",
    orders="",
    open_orders=None,
    order="orderHistory/blitzOrderId/{id}",
    positions="positions",
    trades="trades",
)

# ---------------------------------------------------------------------------------------------------------
# Instruments
# ---------------------------------------------------------------------------------------------------------

# Canonical exchange -> Blitz exchange segment (docs/blitzsdk/instruments.md "Symbol format").
SEGMENT_OF_EXCHANGE: dict[str, str] = {
    "NSE": "NSECM",
    "NFO": "NSEFO",
    "BSE": "BSECM",
    "BFO": "BSEFO",
    "CDS": "NSECD",
    "MCX": "MCXFO",
}
EXCHANGE_OF_SEGMENT: dict[str, str] = {v: k for k, v in SEGMENT_OF_EXCHANGE.items()}


def exchange_segment(row: MasterRow) -> str:
    seg = row.extra.get("exchange_segment")
    if seg:
        return seg.upper()
    return SEGMENT_OF_EXCHANGE.get(row.instrument.exchange, row.instrument.exchange)


def instrument_id(row: MasterRow) -> int:
    """Blitz ``instrumentId`` from the master: column ``instrument_id``, else ``token``."""
    raw = row.extra.get("instrument_id") or row.token
    if raw is None or not raw.strip().isdigit():
        from runner.errors import InstrumentUnknown

        raise InstrumentUnknown(
            f"no Blitz instrumentId for {row.instrument.key!r} in the master", broker=BROKER
        )
    return int(raw)


def wire_symbol(row: MasterRow) -> str:
    """``SEGMENT|NAME`` as the SDK's ``symbol`` field spells it, e.g. ``NSECM|TCS``."""
    return f"{exchange_segment(row)}|{row.trading_symbol or row.instrument.symbol}"


_UNDERLYING_RE = re.compile(r"^(?P<u>[A-Z0-9&_-]+?)\d{2}[A-Z]{3}\d{2}")


def master_rows_from_blitz_json(records: Iterable[Mapping[str, Any]]) -> list[MasterRow]:
    """Rows of Blitz's own instrument dump (``/v1/api/instruments/gz/download``; see
    docs/blitzsdk/instruments.md)."""
    rows = []
    for rec in records:
        seg = str(rec.get("exchangeSegment", "")).upper()
        name = str(rec.get("instrumentName", "")).upper()
        expiry = rec.get("expiry")
        underlying = str(rec.get("symbol") or rec.get("underlying") or "").upper()
        if not underlying:
            m = _UNDERLYING_RE.match(name) if expiry else None
            underlying = m["u"] if m else name
        opt = rec.get("optionType")
        strike = rec.get("strike")
        lot, tick = rec.get("lotSize"), rec.get("tickSize")
        inst = Instrument(
            exchange=EXCHANGE_OF_SEGMENT.get(seg, seg),
            symbol=underlying,
            expiry=dt.date.fromisoformat(str(expiry)[:10]) if expiry else None,
            strike=to_decimal(strike) if opt else None,
            option_type=OptionType(str(opt).upper()) if opt else None,
            lot_size=_int(lot, "lotSize", default=0) or None,  # absent: no lot (cash)
            tick_size=to_decimal(tick) or None,
        )
        rows.append(
            MasterRow(
                inst,
                token=str(rec["instrumentId"]),
                trading_symbol=name,
                extra={"exchange_segment": seg, "instrument_id": str(rec["instrumentId"])},
            )
        )
    return rows


def load_master(path: str | Path) -> InstrumentMaster:
    """The account's master: Blitz's own JSON dump (``.json`` / ``.json.gz``) or the generic CSV."""
    p = Path(path)
    if p.name.endswith((".json", ".json.gz")):
        raw = gzip.decompress(p.read_bytes()) if p.name.endswith(".gz") else p.read_bytes()
        records = loads(raw)
        return InstrumentMaster(master_rows_from_blitz_json(records), broker=BROKER)
    return InstrumentMaster.load(p, broker=BROKER)


# ---------------------------------------------------------------------------------------------------------
# Request bodies
# ---------------------------------------------------------------------------------------------------------


_ORDER_TYPE_SDK = {
    OrderType.LIMIT: "LIMIT",
    OrderType.MARKET: "MARKET",
    OrderType.SL: "SL",
    OrderType.SL_M: "SL-M",
}
# Seed's modify table: "Market, Limit, SL, SL-M"; its place example sends "Limit".
_ORDER_TYPE_SEED = {
    OrderType.LIMIT: "Limit",
    OrderType.MARKET: "Market",
    OrderType.SL: "SL",
    OrderType.SL_M: "SL-M",
}
_SIDE_SDK = {Side.BUY: "BUY", Side.SELL: "SELL"}
_SIDE_SEED = {Side.BUY: "Buy", Side.SELL: "Sell"}
_TIF = {Validity.DAY: "GFD", Validity.IOC: "IOC"}


def _price(order_type: OrderType, price: Decimal | None) -> Decimal:
    # SDK docs: "price: Limit price (0 for MARKET)".
    return price if order_type in (OrderType.LIMIT, OrderType.SL) and price is not None else Decimal(0)


def _stop(order_type: OrderType, trigger: Decimal | None) -> Decimal:
    return trigger if order_type in (OrderType.SL, OrderType.SL_M) and trigger is not None else Decimal(0)


def place_body(
    req: OrderRequest, row: MasterRow, client_id: str, dialect: Dialect = Dialect.SDK
) -> dict[str, Any]:
    """POST placeOrder body. Our deterministic id travels as ``correlationOrderId`` (the SDK's
    "unique client-generated order identifier"); ``clientId`` is the trading client code."""
    common = {
        "quantity": req.quantity,
        "product": req.product.value,
        "tif": _TIF[req.validity],
        "price": _price(req.order_type, req.price),
        "instrumentId": instrument_id(row),
    }
    if dialect is Dialect.SEED:
        # Key order and spelling as in seed 000's request example, plus the skeleton's correlationOrderId.
        return {
            **common,
            "OrderType": _ORDER_TYPE_SEED[req.order_type],
            "OrderSide": _SIDE_SEED[req.side],
            "disclosedQuantity": req.disclosed_quantity,
            "stopPrice": _stop(req.order_type, req.trigger_price),
            "clientId": client_id,
            "tiF_GTD_Date": "",
            "correlationOrderId": req.client_order_id,
        }
    return {
        "correlationOrderId": req.client_order_id,
        **common,
        "orderType": _ORDER_TYPE_SDK[req.order_type],
        "symbol": wire_symbol(row),
        "orderSide": _SIDE_SDK[req.side],
        "disclosedQuantity": req.disclosed_quantity,
        "stopPrice": _stop(req.order_type, req.trigger_price),
        "clientId": client_id,
        "tiF_GTD_Date": "",  # SDK hard-codes a date; GFD/IOC orders need none (seed and Postman send "")
    }


@dataclass(frozen=True, slots=True)
class OrderRef:
    """Broker-side identity of a working order, as modify/cancel need it."""

    blitz_order_id: int
    instrument_id: int
    exchange_order_id: str = ""
    strategy_instance_id: str = ""


def modify_body(
    order: Order, change: Modification, row: MasterRow, ref: OrderRef, dialect: Dialect = Dialect.SDK
) -> dict[str, Any]:
    """PUT modifyOrder body: the order's full new state (unchanged fields repeated)."""
    order_type = change.order_type or order.order_type
    price = change.price if change.price is not None else order.price
    trigger = change.trigger_price if change.trigger_price is not None else order.trigger_price
    quantity = change.quantity if change.quantity is not None else order.quantity
    if dialect is Dialect.SEED:
        # Seed example: identifies the order by exchangeOrderId + instrumentId + strategyInstanceId and
        # sends both the new (modifiedOrderQuantity) and the original (quantity) quantity.
        return {
            "disclosedQuantity": 0,
            "exchangeOrderId": ref.exchange_order_id,
            "instrumentId": ref.instrument_id,
            "modifiedOrderQuantity": quantity,
            "orderType": _ORDER_TYPE_SEED[order_type],
            "price": _price(order_type, price),
            "quantity": order.quantity,
            "stopPrice": _stop(order_type, trigger),
            "strategyInstanceId": ref.strategy_instance_id,
            "tiF_GTD_Date": "",
            "tif": _TIF[order.validity],
        }
    # SDK (tests/test_interactive_api.py and Postman 2.5): blitzOrderId + modifiedOrderQuantity.
    return {
        "blitzOrderId": ref.blitz_order_id,
        "modifiedOrderQuantity": quantity,
        "price": _price(order_type, price),
        "orderType": _ORDER_TYPE_SDK[order_type],
        "instrumentId": ref.instrument_id,
        "symbol": wire_symbol(row),
        "disclosedQuantity": 0,
        "stopPrice": _stop(order_type, trigger),
        "tif": _TIF[order.validity],
    }


def cancel_params(ref: OrderRef, dialect: Dialect = Dialect.SDK) -> dict[str, str]:
    if dialect is Dialect.SEED:
        return {
            "InstrumentId": str(ref.instrument_id),
            "ExchangeOrderId": ref.exchange_order_id,
            "StrategyInstanceId": ref.strategy_instance_id,
        }
    return {"instrumentId": str(ref.instrument_id), "blitzOrderId": str(ref.blitz_order_id)}


# ---------------------------------------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------------------------------------


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


# Blitz order status -> canonical (docs/blitzsdk/orders.md "Order statuses"; seed field table). Keys are
# normalised (lower case, no punctuation) so "PendingNew", "PENDING_NEW" and "pending new" all match.
STATUS_TABLE: dict[str, OrderStatus] = {
    "pendingnew": OrderStatus.PENDING_NEW,
    "new": OrderStatus.OPEN,
    "open": OrderStatus.OPEN,
    "triggerpending": OrderStatus.OPEN,  # SL/SL-M resting until triggered
    "pendingreplace": OrderStatus.OPEN,  # unverified: a modify in flight, the order still works
    "replaced": OrderStatus.OPEN,
    "partiallyfilled": OrderStatus.PARTIALLY_FILLED,
    "filled": OrderStatus.FILLED,
    "pendingcancel": OrderStatus.PENDING_CANCEL,
    "cancelled": OrderStatus.CANCELLED,
    "canceled": OrderStatus.CANCELLED,
    "rejected": OrderStatus.REJECTED,
    "expired": OrderStatus.EXPIRED,
}


def status_from(raw: str | None, filled: int = 0) -> OrderStatus:
    """Map a Blitz status; an unknown string becomes UNKNOWN (resolved by a later read), never a guess."""
    status = STATUS_TABLE.get(_key(raw or ""))
    if status is None:
        log.warning("blitz: unknown order status %r: treating as unknown", raw)
        return OrderStatus.UNKNOWN
    if status is OrderStatus.OPEN and filled > 0:
        return OrderStatus.PARTIALLY_FILLED
    return status


_SIDE_IN = {"buy": Side.BUY, "sell": Side.SELL, "b": Side.BUY, "s": Side.SELL}
_TYPE_IN = {
    "limit": OrderType.LIMIT,
    "market": OrderType.MARKET,
    "sl": OrderType.SL,
    "slm": OrderType.SL_M,
    "stoplimit": OrderType.SL,
    "stopmarket": OrderType.SL_M,
    "stoploss": OrderType.SL,
}


def get(row: Mapping[str, Any], *names: str, default: Any = None) -> Any:
    """First present field among ``names``, matched case-insensitively (ASP.NET binds that way)."""
    for n in names:
        if n in row and row[n] is not None:
            return row[n]
    lowered = {k.lower(): v for k, v in row.items()}
    for n in names:
        v = lowered.get(n.lower())
        if v is not None:
            return v
    return default


def epoch_ms(value: Any) -> dt.datetime | None:
    try:  # a timestamp only informs: absent or unreadable is "no time", never a failed read
        ms = _int(value, "timestamp", default=0)
    except Malformed:
        return None
    if ms <= 0:
        return None
    return dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(milliseconds=ms)


def latest_row(rows: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The current state among history rows (seed: newest first; ordering by sequenceNumber is safer)."""
    if not rows:
        raise NotFound("empty order history", broker=BROKER)
    def order(ir: tuple[int, Mapping[str, Any]]) -> tuple[int, int]:
        return _int(get(ir[1], "sequenceNumber"), "sequenceNumber", default=0), -ir[0]

    return max(enumerate(rows), key=order)[1]


InstrumentLookup = Callable[[Mapping[str, Any]], Instrument]


def order_from_row(
    row: Mapping[str, Any], instrument: Instrument, *, fallback: OrderRequest | None = None
) -> Order:
    filled = _int(get(row, "cumulativeQuantity"), "cumulativeQuantity")  # in every order row (SDK)
    raw_status = get(row, "orderStatus", "status")
    status = status_from(raw_status, filled)
    otype = _TYPE_IN.get(_key(str(get(row, "orderType", default=""))))
    side = _SIDE_IN.get(_key(str(get(row, "orderSide", default=""))))
    if otype is None or side is None:
        if fallback is None:
            raise BrokerError(
                f"unreadable order row (orderType/orderSide) for {get(row, 'blitzOrderId')}", broker=BROKER
            )
        otype, side = otype or fallback.order_type, side or fallback.side
    product_raw = get(row, "productType", "product")
    try:
        product = Product(str(product_raw).upper())
    except ValueError:  # SDK order rows carry no product: keep what we asked for
        product = fallback.product if fallback else Product.MIS
    price = to_decimal(get(row, "orderPrice", "price"))
    trigger = to_decimal(get(row, "orderStopPrice", "stopPrice")) or to_decimal(get(row, "orderTriggerPrice"))
    avg = to_decimal(get(row, "averageTradedPrice"))
    reject = get(row, "rejectTypeReason") or None
    if reject is None and status is OrderStatus.REJECTED:
        rt = get(row, "rejectType")
        reject = None if rt in (None, "", "None") else str(rt)
    tif = _key(str(get(row, "tif", default="")))
    correlation = get(row, "correlationOrderId")
    return Order(
        client_order_id=str(correlation)
        if correlation is not None
        else (fallback.client_order_id if fallback else ""),
        broker_order_id=str(get(row, "blitzOrderId")),
        instrument=instrument,
        side=side,
        quantity=_int(get(row, "orderQuantity", "quantity"), "orderQuantity"),
        order_type=otype,
        product=product,
        status=status,
        filled_quantity=filled,
        average_price=avg if avg else None,
        price=price if price and otype in (OrderType.LIMIT, OrderType.SL) else None,
        trigger_price=trigger if trigger and otype in (OrderType.SL, OrderType.SL_M) else None,
        validity=Validity.IOC if tif == "ioc" else Validity.DAY,
        tag=fallback.tag if fallback else None,
        reject_reason=str(reject) if reject else None,
        updated_at=epoch_ms(
            get(row, "lastRequestDateTime", "exchangeTransactTime", "orderGeneratedDateTime")
        ),
        raw_status=str(raw_status) if raw_status is not None else None,
    )


def ref_from_row(row: Mapping[str, Any]) -> OrderRef:
    return OrderRef(
        blitz_order_id=_int(get(row, "blitzOrderId"), "blitzOrderId"),
        instrument_id=_int(get(row, "instrumentId"), "instrumentId"),
        exchange_order_id=str(get(row, "exchangeOrderId", default="") or ""),
        strategy_instance_id=str(get(row, "strategyInstanceId", default="") or ""),
    )


def rows_of(data: Any) -> list[Mapping[str, Any]]:
    """Order/trade/position payloads arrive as a list, a single object, or a map keyed by clientId."""
    if data is None:
        return []
    if isinstance(data, list):
        return [r for r in data if isinstance(r, Mapping)]
    if isinstance(data, Mapping):
        if any(k in data for k in ("blitzOrderId", "instrumentId", "BlitzOrderId")):
            return [data]
        out: list[Mapping[str, Any]] = []
        for v in data.values():  # positions: {"Algo123": [...]}
            out.extend(rows_of(v) if isinstance(v, list | Mapping) else [])
        return out
    return []


def position_from_row(row: Mapping[str, Any], instrument: Instrument) -> Position:
    net = _int(get(row, "netPosition"), "netPosition")
    avg = to_decimal(get(row, "avgBuy")) if net > 0 else to_decimal(get(row, "avgSell")) if net < 0 else None
    product_raw = get(row, "productType", "product")
    try:
        product = Product(str(product_raw).upper())
    except ValueError:
        product = Product.MIS
    return Position(
        instrument=instrument,
        product=product,
        quantity=net,
        average_price=avg or to_decimal(get(row, "avgNet")) or Decimal(0),
        realized_pnl=to_decimal(get(row, "realized")) or Decimal(0),
        day_buy_quantity=_int(get(row, "longPosition"), "longPosition"),
        day_sell_quantity=_int(get(row, "shortPosition"), "shortPosition"),
    )


def fill_from_row(row: Mapping[str, Any], instrument: Instrument) -> Fill:
    side = _SIDE_IN.get(_key(str(get(row, "orderSide", default=""))), Side.BUY)
    at = epoch_ms(get(row, "exchangeTransactTime", "lastRequestDateTime")) or dt.datetime(
        1970, 1, 1, tzinfo=dt.UTC
    )
    return Fill(
        client_order_id=str(get(row, "correlationOrderId", default="")),
        broker_order_id=str(get(row, "blitzOrderId")),
        instrument=instrument,
        side=side,
        quantity=_int(get(row, "lastTradedQuantity"), "lastTradedQuantity"),
        price=to_decimal(get(row, "lastTradedPrice")) or Decimal(0),
        at=at,
        trade_id=str(get(row, "executionId", default="")) or None,
    )


# Error envelope: {"status":"error","message":...,"error_type":...} (docs/blitzsdk/exceptions.md).
_AUTH_ERROR_TYPES = {"tokenexception", "authenticationerror"}


def error_from(status_code: int, body: Any, *, operation: str) -> BrokerError:
    env = body if isinstance(body, Mapping) else {}
    etype = str(get(env, "error_type", "errorType", default="") or "")
    message = str(get(env, "message", default="") or f"HTTP {status_code}")
    code = etype or str(status_code)
    text = f"{operation}: {message}"
    if _key(etype) in _AUTH_ERROR_TYPES or status_code == 401:
        return AuthExpired(text, code=code, broker=BROKER)
    if status_code == 403:
        # Seed: 403 = "order cannot be modified/cancelled (already executed or cancelled)";
        # SDK docs: 403 TokenException = session invalidated. error_type tells them apart.
        return NotModifiable(text, code=code, broker=BROKER)
    if status_code == 404:
        return NotFound(text, code=code, broker=BROKER)
    if status_code == 429:
        return RateLimited(text, code=code, broker=BROKER)
    if status_code >= 500:
        return Unavailable(text, code=code, broker=BROKER)
    return Rejected(text, code=code, broker=BROKER)


def parse_json(response: httpx.Response) -> Any:
    try:
        return loads(response.content) if response.content else None
    except ValueError:
        return None


def unwrap(response: httpx.Response, *, operation: str) -> Any:
    """``data`` of a success envelope, or the mapped error."""
    body = parse_json(response)
    ok_status = isinstance(body, Mapping) and str(get(body, "status", default="success")).lower() == "success"
    if response.status_code in (200, 201) and (ok_status or not isinstance(body, Mapping)):
        if isinstance(body, Mapping) and "data" in body:
            return body["data"]
        return body
    return error_from(response.status_code if response.status_code != 200 else 400, body, operation=operation)


# ---------------------------------------------------------------------------------------------------------
# The adapter
# ---------------------------------------------------------------------------------------------------------


def _join(base: str, suffix: str) -> str:
    return base.rstrip("/") + suffix


class BlitzBroker:
    name = BROKER
    capabilities = frozenset({Capability.MODIFY, Capability.MARKET_ORDERS, Capability.STOP_ORDERS})

    def __init__(
        self,
        account: Account,
        *,
        master: InstrumentMaster,
        limiter: RateLimiter | None = None,
        transport: str | None = None,
    ) -> None:
        self.account = account
        self.master = master
        opts = account.options
        self.dialect = Dialect(str(opts.get("dialect", "sdk")).lower())
        ep = account.endpoints
        base = ep.get("base", DEFAULT_BASE)
        self.auth_url = ep.get("auth", _join(base, AUTH_SUFFIX))
        self.api_url = ep.get("api", _join(base, API_SUFFIX))
        preset = SEED_PATHS if self.dialect is Dialect.SEED else SDK_PATHS
        overrides = {k: v for k, v in ep.items() if k in Paths.__slots__}
        self.paths = replace(preset, **overrides)
        rl = account.rate_limit
        self.limiter = limiter or RateLimiter(rl.orders_per_second, rl.burst)
        self._transport = transport or opts.get("http_transport")
        self._client: httpx.AsyncClient | None = None
        self._token: str | None = None
        self._generation = 0  # bumps on every login, so concurrent 401s trigger one re-login
        self._login_lock = asyncio.Lock()
        self._requests: dict[str, OrderRequest] = {}  # what we placed, by client id (fills row gaps)
        self._acked: dict[str, str] = {}  # client id -> blitzOrderId, once the broker is known to have it
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

    async def close(self) -> None:
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
            except AuthExpired:
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
        key = await self._throttle(request.instrument)
        self._requests[request.client_order_id] = request
        data = await self._mutate(key, "POST", self.paths.place, operation="placeOrder", body=body)
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


def create(account: Account, **context: Any) -> BlitzBroker:
    master = context.get("master")
    if master is None:
        if not account.instruments:
            raise LookupError(f"account {account.name!r} (blitz) needs an instruments master file")
        master = load_master(account.instruments)
    return BlitzBroker(
        account,
        master=master,
        limiter=context.get("limiter"),
        transport=context.get("transport"),
    )
