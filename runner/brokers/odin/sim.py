"""Loopback simulator of the ODIN Cloud REST Pro API, backed by :mod:`runner.brokers.paper.matching`.

Speaks the wire format of :mod:`runner.brokers.odin.wire` (paths, ``x-api-key`` + bearer auth, ``s-101``
envelope,
ODIN status strings and ids such as ``SIMUC000003<`` that need URI-encoding). Like the real gateway, a place
is acknowledged with "Order Entry Sent to OMS" even when the OMS then rejects it: the rejection shows in
the order book (``OMS_REJECT`` + ``error_reason``). ``order_identifier`` is stored, never de-duplicated.

Use from tests::

    async with start(faults=FaultPlan.parse("drop=0.1,seed=3"), clock=clock, master=master) as sim:
        account = sim.account("acc1")          # an Account pointing at sim.url, secrets in env vars
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import os
import secrets
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

from aiohttp import web

from runner.accounts import Account
from runner.brokers.faults import Fault, FaultPlan
from runner.brokers.instruments import InstrumentMaster, MasterRow
from runner.brokers.odin import wire
from runner.brokers.odin.sim_book import (
    FOREIGN_DONE,
    IST,
    POSITION_TYPES,
    SEGMENT_ID,
    STATUS_OUT,
    SimAccount,
    SimError,
    SimOrder,
    SimUser,
    _dec,
    _money,
    book_row,
    check_multileg_type,
    default_master,
    envelope,
    order_request,
    parse_legs,
    parse_order_type,
    parse_product,
    parse_quantity,
    parse_side,
    parse_validity,
    scrip_fields,
    scrip_row,
    second_auth_ok,
    stamp,
)
from runner.brokers.odin.sim_feed import SimFeed
from runner.brokers.odin.sim_master import add_master_routes
from runner.brokers.paper.matching import MatchingEngine
from runner.brokers.sim_front import SimFront
from runner.brokers.sim_loop import settle_heap
from runner.brokers.sim_prices import sim_matching, sim_price_path
from runner.clock import Clock, SystemClock
from runner.errors import BrokerError, InstrumentUnknown, NotModifiable
from runner.model import (
    Modification,
    MultilegRequest,
    Order,
    OrderStatus,
    OrderType,
    Product,
)
from runner.wirejson import dumps, loads


def _err_body(e: SimError) -> dict[str, Any]:
    return {"status": "error", "code": e.code, "message": e.message,
            "errors": e.errors if e.errors is not None else []}


def _json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(text=dumps(body), status=status, content_type="application/json",
                        headers=headers)


class OdinSim(SimFeed):
    def __init__(
        self,
        *,
        master: InstrumentMaster | None = None,
        engine: MatchingEngine | None = None,
        faults: FaultPlan | None = None,
        clock: Clock | None = None,
        x_api_key: str = "sim-x-api-key",
        users: list[SimUser] | None = None,
        retry_after: str = "0",
        multileg_product: str = "INTRADAY",
        feed_interval: float = 0.5,
    ) -> None:
        self.master = master or default_master()
        self.engine = engine or MatchingEngine(sim_price_path(), sim_matching())
        self.faults = faults or FaultPlan()
        self.clock: Clock = clock or SystemClock()
        self.x_api_key = x_api_key
        self.retry_after = retry_after
        self.multileg_product = multileg_product
        self.accounts: dict[str, SimAccount] = {}
        for u in users or [SimUser("SIM1", "sim-pass", "sim-api-key", totp_secret="JBSWY3DPEHPK3PXP")]:
            self.add_user(u)
        self.sessions: dict[str, tuple[str, dt.datetime]] = {}  # token -> (user_id, issued at)
        self._seq = itertools.count(1)
        self.requests: list[tuple[str, str, Any]] = []  # (method, decoded path, body) as received
        self._bodies: dict[int, Any] = {}
        self.duplicate_tags: list[str] = []  # order_identifiers placed twice (a real gateway allows it)
        self.raw_paths: list[str] = []  # the same requests' paths as sent (still URI-encoded)
        self.acted: dict[str, int] = {}  # operation -> times the sim acted on it (drops included)
        self.logins = 0  # sessions issued
        self.foreign_rows: dict[str, list[dict[str, Any]]] = {}  # user id -> raw rows entered elsewhere
        self.url = ""
        self.port = 0
        self.feed_interval = feed_interval  # seconds between pushes of every subscribed touchline
        self.feed_requests: list[str] = []  # feed requests as received (inflated text)
        self.feed_sockets: list[web.WebSocketResponse] = []  # open feed connections
        self._feed_rows: dict[str, MasterRow] | None = None
        # stamps each request at its read, one handler per loop turn; arrivals: order_identifier -> when
        # its first place request was read (GET /_sim/arrivals, for benches)
        self.front = SimFront()
        self.arrivals: dict[str, float] = self.front.arrivals
        self.app = web.Application(middlewares=[self.front.middleware])
        self.front.add_route(self.app)
        self._routes()

    def inject_foreign_row(self, user_id: str, row: Mapping[str, Any]) -> None:
        """Show ``row`` verbatim in ``user_id``'s regular order book (an order entered outside the runner,
        e.g. from the broker's own terminal). It counts as open unless its status says otherwise."""
        self.foreign_rows.setdefault(user_id, []).append(dict(row))

    def add_user(self, user: SimUser) -> SimUser:
        self.accounts[user.user_id] = SimAccount(user)
        return user

    # -- plumbing ---------------------------------------------------------------------------------------

    def _routes(self) -> None:
        r = self.app.router
        r.add_post(wire.SESSION_PATH, self._login)
        r.add_put(wire.SESSION_PATH, self._validate)
        r.add_delete(wire.SESSION_PATH, self._logout)
        r.add_post(wire.REGULAR_PATH, self._place)
        r.add_put(wire.REGULAR_PATH + "/{exchange}/{order_id}", self._modify)
        r.add_delete(wire.REGULAR_PATH + "/{exchange}/{order_id}", self._cancel)
        r.add_post(wire.MULTILEG_PATH, self._place_multileg)
        r.add_put(wire.MULTILEG_PATH + "/{order_flag}/{gateway_order_no}", self._multileg_action)
        r.add_get(wire.ORDERS_PATH, self._order_book)
        r.add_get(wire.ORDERS_PATH + "/{order_id}", self._order_history)
        r.add_get(wire.TRADES_PATH, self._trades)
        r.add_get(wire.POSITIONS_PATH + "/{type}", self._positions)
        # The market feed: a WebSocket at the root, as the official client connects (``ws://host:port``);
        # the real feed is a separate host, so the adapter takes its URL from ``endpoints.feed``.
        r.add_get("/", self._feed)
        add_master_routes(self)  # /scripfiles/v2/{EXCHANGE}.json (sim_master.py)

    def now(self) -> dt.datetime:
        return self.clock.now()

    async def _body(self, request: web.Request) -> Any:
        return self._bodies.get(id(request))

    def _auth(self, request: web.Request) -> SimAccount:
        if request.headers.get("x-api-key") != self.x_api_key:
            raise SimError(403, "Invalid x-api-key")
        header = request.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else ""
        session = self.sessions.get(token)
        if session is None:
            raise SimError(401, "Invalid or expired session token")
        user_id, issued = session
        ttl = self.faults.expire_after
        if ttl is not None and (self.now() - issued).total_seconds() >= ttl:
            del self.sessions[token]
            raise SimError(401, "Session token expired")
        return self.accounts[user_id]

    async def _faulted(self, request: web.Request, operation: str) -> Fault:
        """Latency, then a drawn fault. Faults that act before the broker does are applied here."""
        delay = self.faults.delay()
        if delay:
            await asyncio.sleep(delay)
        fault = self.faults.draw(operation)
        if fault is Fault.ERROR_5XX:
            raise SimError(500, "Internal server error")
        if fault is Fault.RATE_LIMIT:
            raise SimError(429, "Too many requests")
        if fault in (Fault.RESET, Fault.DISCONNECT):
            self._kill(request)
        return fault

    @staticmethod
    def _kill(request: web.Request) -> None:
        transport = request.transport
        if transport is not None:
            transport.abort()
        raise asyncio.CancelledError  # stop handling: nothing is written back

    async def _run(self, request: web.Request, operation: str, handler: Any) -> web.StreamResponse:
        text = await request.text()
        try:
            body = loads(text) if text else None
        except ValueError:
            body = text
        self._bodies[id(request)] = body
        self.requests.append((request.method, request.path, body))
        self.raw_paths.append(request.rel_url.raw_path)
        try:
            if isinstance(body, str):
                raise SimError(400, "Request body is not valid JSON")
            fault = await self._faulted(request, operation)
            body, status = await handler(request)
            self.acted[operation] = self.acted.get(operation, 0) + 1
            if fault is Fault.DROP_REPLY:
                self._kill(request)  # acted on, reply lost: the ambiguous case
            return _json(body, status)
        except SimError as e:
            headers = {"Retry-After": self.retry_after} if e.status == 429 else None
            return _json(_err_body(e), e.status, headers)
        except BrokerError as e:
            status = 400
            return _json(_err_body(SimError(status, e.message)), status)
        finally:
            self._bodies.pop(id(request), None)

    # -- session ----------------------------------------------------------------------------------------

    async def _login(self, request: web.Request) -> web.StreamResponse:
        async def handle(req: web.Request) -> tuple[Any, int]:
            if req.headers.get("x-api-key") != self.x_api_key:
                raise SimError(403, "Invalid x-api-key")
            body = await self._body(req) or {}
            acct = self.accounts.get(str(body.get("user_id")))
            if acct is None or body.get("password") != acct.user.password:
                raise SimError(400, "Invalid user id or password", "e-12")
            if body.get("api_key") != acct.user.api_key:
                raise SimError(400, "Gateway license error. Kindly contact administrator", "e-14")
            if body.get("source") != "WEBAPI":
                raise SimError(400, "Invalid source")
            if not second_auth_ok(acct.user, body):
                raise SimError(400, "Incorrect TOTP.", "e-17")
            token = secrets.token_urlsafe(24)
            self.sessions[token] = (acct.user.user_id, self.now())
            self.logins += 1
            data = {"access_token": token, "user_id": acct.user.user_id, "user_status": 1,
                    "login_time": self.now().astimezone(IST).strftime("%Y-%b-%d %H:%M:%S"),
                    "exchanges": sorted(SEGMENT_ID), "product_types": ["INTRADAY", "DELIVERY"],
                    "others": {"userCode": acct.user.user_code}}
            return envelope(data, "User logged in Successfully."), 200

        return await self._run(request, "login", handle)

    async def _validate(self, request: web.Request) -> web.StreamResponse:
        async def handle(req: web.Request) -> tuple[Any, int]:
            acct = self._auth(req)
            return envelope({"user_id": acct.user.user_id}, "Session is valid"), 200

        return await self._run(request, "session", handle)

    async def _logout(self, request: web.Request) -> web.StreamResponse:
        async def handle(req: web.Request) -> tuple[Any, int]:
            self._auth(req)
            token = req.headers.get("Authorization", "")[7:]
            self.sessions.pop(token, None)
            return envelope(None, "User logged out successfully"), 200

        return await self._run(request, "logout", handle)

    # -- ids --------------------------------------------------------------------------------------------

    def _next_id(self, acct: SimAccount) -> str:
        n = next(self._seq)
        # Real ids end in odd characters (``NXHCO000012<``, ``NWSYF00005>3``): make clients URI-encode.
        return f"{acct.user.user_code}{n:06d}{'<' if n % 2 else '>'}"

    # -- regular orders ---------------------------------------------------------------------------------

    async def _place(self, request: web.Request) -> web.StreamResponse:
        async def handle(req: web.Request) -> tuple[Any, int]:
            acct = self._auth(req)
            body = await self._body(req)
            if not isinstance(body, Mapping):
                raise SimError(400, "Invalid request body")
            row = scrip_row(self.master, body.get("scrip_info"))
            exchange = wire.odin_exchange(row.instrument, row)
            tag = str(body.get("order_identifier") or "")
            if len(tag) > 10:
                raise SimError(400, "order_identifier must not exceed 10 characters")
            if tag:
                self.front.note(tag, req)
            if tag and tag in acct.tags:
                self.duplicate_tags.append(tag)  # ODIN accepts it; tests assert the adapter never does this
            odin_id = self._next_id(acct)
            req_ = order_request(
                odin_id, row, parse_side(body.get("transaction_type")), parse_quantity(body.get("quantity")),
                parse_order_type(body.get("order_type")), parse_product(body.get("product_type"), exchange),
                parse_validity(body.get("validity")), _dec(body.get("price"), "price"),
                _dec(body.get("trigger_price"), "trigger_price"), tag,
            )
            now = self.now()
            placed = self.engine.place(acct.user.user_id, req_, now)
            acct.add(SimOrder(odin_id, placed.broker_order_id or "", exchange, row,
                              str(body.get("product_type")).upper(), tag, now, now))
            return envelope({"orderId": odin_id}, "Order Entry Sent to OMS"), 200

        return await self._run(request, "place", handle)

    def _find(self, acct: SimAccount, odin_id: str, exchange: str | None = None) -> SimOrder:
        so = acct.orders.get(odin_id)
        if so is None or so.gateway_order_no is not None or (exchange and so.exchange != exchange.upper()):
            raise SimError(400, f"Order not found {odin_id}")
        return so

    def _engine_order(self, acct: SimAccount, so: SimOrder) -> Order:
        return self.engine.get(acct.user.user_id, so.engine_id, self.now())

    async def _modify(self, request: web.Request) -> web.StreamResponse:
        async def handle(req: web.Request) -> tuple[Any, int]:
            acct = self._auth(req)
            body = await self._body(req)
            so = self._find(acct, req.match_info["order_id"], req.match_info["exchange"])
            if not isinstance(body, Mapping):
                raise SimError(400, "Invalid request body")
            missing = [k for k in ("order_type", "quantity", "traded_quantity", "price", "trigger_price",
                                   "validity") if k not in body]
            if missing:
                raise SimError(400, f"Missing fields: {', '.join(missing)}")
            current = self._engine_order(acct, so)
            if current.status not in (OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED):
                raise SimError(400, f"Order cannot be modified in status {STATUS_OUT[current.status]}")
            if int(body["traded_quantity"]) != current.filled_quantity:
                raise SimError(400, "Traded quantity mismatch: refresh the order book and retry")
            otype = parse_order_type(body["order_type"])
            change = Modification(
                quantity=parse_quantity(body["quantity"]),
                price=_dec(body["price"], "price") if otype in (OrderType.LIMIT, OrderType.SL) else None,
                trigger_price=(_dec(body["trigger_price"], "trigger_price")
                               if otype in (OrderType.SL, OrderType.SL_M) else None),
                order_type=otype,
            )
            try:
                self.engine.modify(acct.user.user_id, so.engine_id, change, self.now())
            except NotModifiable:
                raise SimError(400, "Order cannot be modified in current status") from None
            so.modified_at = self.now()
            return envelope({"orderId": so.odin_id}, "Order Modification Sent to OMS"), 200

        return await self._run(request, "modify", handle)

    async def _cancel(self, request: web.Request) -> web.StreamResponse:
        async def handle(req: web.Request) -> tuple[Any, int]:
            acct = self._auth(req)
            so = self._find(acct, req.match_info["order_id"], req.match_info["exchange"])
            try:
                self.engine.cancel(acct.user.user_id, so.engine_id, self.now())
            except NotModifiable:
                raise SimError(400, "Order cannot be cancelled in current status") from None
            so.modified_at = self.now()
            return envelope({"orderId": so.odin_id}, "Order Cancellation Sent to OMS"), 200

        return await self._run(request, "cancel", handle)

    # -- multileg ---------------------------------------------------------------------------------------

    async def _place_multileg(self, request: web.Request) -> web.StreamResponse:
        async def handle(req: web.Request) -> tuple[Any, int]:
            acct = self._auth(req)
            body = await self._body(req)
            if not isinstance(body, Mapping):
                raise SimError(400, "Invalid request body")
            legs = parse_legs(self.master, body)
            otype = check_multileg_type(body, len(legs))
            tag = str(body.get("order_identifier") or "")
            if len(tag) > 10:
                raise SimError(400, "order_identifier must not exceed 10 characters")
            if tag and tag in acct.multileg_tags:
                self.duplicate_tags.append(tag)  # accepted, as by ODIN; tests assert the adapter never does
            validity = parse_validity(body.get("validity"), "IOC")
            n = next(self._seq)
            gw = f"AAAEE{n:05d}"
            order_id = self._next_id(acct)
            reqs, sims = [], []
            now = self.now()
            for leg_no, row, side, qty, price in legs:
                exchange = wire.odin_exchange(row.instrument, row)
                cid = f"{gw}#L{leg_no}"
                reqs.append(order_request(cid, row, side, qty, otype,
                                          parse_product(self.multileg_product, exchange), validity, price,
                                          Decimal(0), tag))
                sims.append(SimOrder(cid, "", exchange, row, self.multileg_product, tag, now, now,
                                     gateway_order_no=gw, leg_no=leg_no, multileg_order_id=order_id))
            placed = self.engine.place_multileg(acct.user.user_id, MultilegRequest(gw, tuple(reqs)), now)
            for so, o in zip(sims, placed, strict=True):
                so.engine_id = o.broker_order_id or ""
                acct.add(so)
            acct.add_multileg(gw, sims)
            return envelope({"orderId": order_id, "gateway_order_no": gw},
                            "Multileg order placed successfully"), 200

        return await self._run(request, "place_multileg", handle)

    async def _multileg_action(self, request: web.Request) -> web.StreamResponse:
        flag = request.match_info["order_flag"]
        operation = {"modify": "modify_multileg", "cancel": "cancel_multileg"}.get(flag, "multileg")

        async def handle(req: web.Request) -> tuple[Any, int]:
            acct = self._auth(req)
            body = await self._body(req)
            if flag not in ("modify", "cancel"):
                raise SimError(400, f"Invalid order_flag {flag!r}")
            gw = req.match_info["gateway_order_no"]
            group = acct.multilegs.get(gw)
            if group is None:
                raise SimError(400, f"Order not found {gw}")
            if not isinstance(body, Mapping):
                raise SimError(400, "Invalid request body")
            legs = parse_legs(self.master, body)
            otype = check_multileg_type(body, len(legs))
            now = self.now()
            current = [self.engine.get(acct.user.user_id, so.engine_id, now) for so in group]
            if any(o.status not in (OrderStatus.OPEN, OrderStatus.PARTIALLY_FILLED) for o in current):
                raise SimError(400, "Only pending multileg orders can be modified or cancelled")
            if flag == "modify":
                if len(legs) != len(group):
                    raise SimError(400, "All legs must be provided during modification")
                for (_, row, _side, qty, price), so in zip(legs, group, strict=True):
                    if row.instrument.key != so.row.instrument.key:
                        raise SimError(400, "leg_details do not match the order's legs")
                    change = Modification(quantity=qty, price=price if otype is OrderType.LIMIT else None,
                                          order_type=otype)
                    self.engine.modify(acct.user.user_id, so.engine_id, change, now)
            else:
                for so in group:
                    self.engine.cancel(acct.user.user_id, so.engine_id, now)
            for so in group:
                so.modified_at = now
            return envelope({"orderId": group[0].multileg_order_id, "gateway_order_no": gw},
                            "Order modified/cancelled successfully"), 200

        return await self._run(request, operation, handle)

    # -- books ------------------------------------------------------------------------------------------

    def _rows(
        self, acct: SimAccount, *, multileg: bool, order_id: str | None = None
    ) -> list[tuple[dict[str, Any], Order]]:
        """Book rows, newest first; with ``order_id``, only that regular order's, found by its id: a read
        of one order must not build the whole book (a burst's read-backs made that quadratic)."""
        now = self.now()
        out = []
        if order_id is not None and not multileg:
            one = acct.orders.get(order_id)
            chosen: Iterable[SimOrder] = () if one is None else (one,)
        else:
            chosen = reversed(list(acct.orders.values()))  # newest first, as the real book
        for so in chosen:
            if (so.gateway_order_no is not None) != multileg:
                continue
            o = self.engine.get(acct.user.user_id, so.engine_id, now)
            out.append((book_row(acct, so, o), o))
        return out

    async def _order_book(self, request: web.Request) -> web.StreamResponse:
        async def handle(req: web.Request) -> tuple[Any, int]:
            acct = self._auth(req)
            q = req.query
            multileg = q.get("orderType", "").lower() in ("multileg", "spread")
            rows = [(r, o.status.is_terminal)
                    for r, o in self._rows(acct, multileg=multileg, order_id=q.get("order_id") or None)]
            if not multileg:
                rows += [(r, str(r.get("status", "")).upper() in FOREIGN_DONE)
                         for r in self.foreign_rows.get(acct.user.user_id, [])]
            if q.get("order_id"):
                rows = [(r, done) for r, done in rows if str(r.get("order_id")) == q["order_id"]]
            status = q.get("orderStatus", "-1")
            if status == "1":
                rows = [(r, done) for r, done in rows if not done]
            elif status == "2":
                rows = [(r, done) for r, done in rows if done]
            try:
                offset, limit = max(1, int(q.get("offset", "1"))), max(1, int(q.get("limit", "20")))
            except ValueError:
                raise SimError(400, "Invalid offset/limit") from None
            page = [r for r, _ in rows[(offset - 1) * limit: offset * limit]]
            done = sum(1 for _, d in rows if d)
            meta = {"total_records": len(rows), "all_records": len(rows), "completed_records": done,
                    "open_records": len(rows) - done}
            return envelope(page, "Orders fetched successfully", metadata=meta), 200

        return await self._run(request, "orders", handle)

    async def _order_history(self, request: web.Request) -> web.StreamResponse:
        async def handle(req: web.Request) -> tuple[Any, int]:
            acct = self._auth(req)
            odin_id = req.match_info["order_id"]
            rows = [r for r, _ in self._rows(acct, multileg=False, order_id=odin_id)]
            if not rows:
                raise SimError(400, f"Order not found {odin_id}")
            return envelope(rows, "Order history fetched successfully"), 200

        return await self._run(request, "order_history", handle)

    async def _trades(self, request: web.Request) -> web.StreamResponse:
        async def handle(req: web.Request) -> tuple[Any, int]:
            acct = self._auth(req)
            by_engine = {so.engine_id: so for so in acct.orders.values()}
            rows = []
            for f in self.engine.fills(acct.user.user_id, self.now()):
                so = by_engine.get(f.broker_order_id or "")
                if so is None:
                    continue
                rows.append({"order_id": so.multileg_order_id or so.odin_id, "trade_id": f.trade_id,
                             "exchange": so.exchange, **scrip_fields(so.row),
                             "transaction_type": f.side.value, "product_type": so.product_type,
                             "traded_quantity": f.quantity, "traded_price": _money(f.price),
                             "trade_timestamp": stamp(f.at), "order_identifier": so.tag})
            return envelope(rows, "Trades fetched successfully"), 200

        return await self._run(request, "trades", handle)

    async def _positions(self, request: web.Request) -> web.StreamResponse:
        async def handle(req: web.Request) -> tuple[Any, int]:
            acct = self._auth(req)
            kind = req.match_info["type"].upper()
            if kind not in POSITION_TYPES:
                raise SimError(400, f"Invalid position type {req.match_info['type']!r}")
            rows = []
            for p in self.engine.positions(acct.user.user_id, self.now()):
                try:
                    mrow = self.master.resolve(p.instrument)
                except InstrumentUnknown:
                    continue
                exchange = wire.odin_exchange(mrow.instrument, mrow)
                product = "INTRADAY" if p.product is Product.MIS else "DELIVERY"
                # Position fields are not in the published docs: these names are what the adapter reads.
                rows.append({"exchange": exchange, **scrip_fields(mrow), "product_type": product,
                             "buy_quantity": p.day_buy_quantity, "sell_quantity": p.day_sell_quantity,
                             "cf_buy_quantity": 0, "cf_sell_quantity": 0, "net_quantity": p.quantity,
                             "net_average_price": _money(p.average_price),
                             "realized_pnl": _money(p.realized_pnl)})
            return envelope(rows, "Positions fetched successfully"), 200

        return await self._run(request, "positions", handle)

    # -- helpers for tests and the bench ----------------------------------------------------------------

    def account(self, name: str, user: SimUser | None = None, *, env_prefix: str | None = None,
                **fields: Any) -> Account:
        """An Account for ``user`` pointing at this sim, its secrets set in this process's environment."""
        account, env = self.account_env(name, user, env_prefix=env_prefix, **fields)
        os.environ.update(env)
        return account

    def account_env(self, name: str, user: SimUser | None = None, *, env_prefix: str | None = None,
                    **fields: Any) -> tuple[Account, dict[str, str]]:
        """An Account for ``user`` pointing at this sim and the environment its secret refs read."""

        user = user or next(iter(self.accounts.values())).user
        if user.user_id not in self.accounts:
            self.add_user(user)
        prefix = env_prefix or f"RUNNER_ODIN_SIM_{self.port}_{user.user_id}".upper().replace("-", "_")
        values = {"user_id": user.user_id, "password": user.password, "api_key": user.api_key,
                  "x_api_key": self.x_api_key}
        if user.totp_secret:
            values["totp_secret"] = user.totp_secret
        elif user.second_auth:
            values["second_auth"] = user.second_auth
        env = {f"{prefix}_{key.upper()}": value for key, value in values.items()}
        creds = {key: {"env": f"{prefix}_{key.upper()}"} for key in values}
        endpoints = {"base_url": self.url, "feed": self.url.replace("http://", "ws://", 1) + "/",
                     "scrip_master": f"{self.url}/scripfiles"}
        body: dict[str, Any] = {"name": name, "broker": "odin", "endpoints": endpoints,
                                "credentials": creds, **fields}
        return Account.model_validate(body), env

    def acted_count(self) -> int:
        return sum(v for k, v in self.acted.items() if k in ("place", "place_multileg"))


@asynccontextmanager
async def start(
    *, host: str = "127.0.0.1", port: int = 0, faults: FaultPlan | None = None, clock: Clock | None = None,
    master: InstrumentMaster | None = None, engine: MatchingEngine | None = None,
    users: list[SimUser] | None = None, **options: Any,
) -> AsyncIterator[OdinSim]:
    sim = OdinSim(master=master, engine=engine, faults=faults, clock=clock, users=users, **options)
    runner = web.AppRunner(sim.app, access_log=None, handle_signals=False)
    sim.port = await sim.front.start(runner, host, port)
    sim.url = f"http://{host}:{sim.port}"
    try:
        yield sim
    finally:
        await sim.front.stop()


async def serve_forever(host: str, port: int, faults: FaultPlan, options: Mapping[str, Any]) -> None:
    """``runner sim odin``: default user SIM1 / sim-pass / api key sim-api-key / x-api-key sim-x-api-key.
    The market feed is the WebSocket at the root of the same port (``endpoints.feed: ws://host:port/``)."""
    master = (InstrumentMaster.load(options["instruments"], broker="odin") if options.get("instruments")
              else default_master())
    engine = MatchingEngine(sim_price_path(options), sim_matching(options))
    async with start(host=host, port=port, faults=faults, master=master, engine=engine) as sim:
        # One machine-readable line, so scripts can read the port (``--port 0``) from stdout.
        from runner.commands.sim import first_line

        account, env = sim.account_env("sim", env_prefix="RUNNER_ODIN_SIM")  # default user SIM1
        settle_heap()  # the master and price paths are loaded: out of the collector's way (sim_loop)
        print(first_line("odin", sim.url, sim.port, account, env, sim.master, options), flush=True)
        await asyncio.Event().wait()


__all__ = ["OdinSim", "serve_forever", "start"]

