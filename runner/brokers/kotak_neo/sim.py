"""Loopback Kotak Neo Trade API simulator (aiohttp): the SDK's paths, headers, jData form bodies, login
flow, ``stat``/``stCode`` envelopes and ``ordSt`` strings, executing through
:mod:`runner.brokers.paper.matching`.

One server plays both hosts: the login host (``/login/1.0/tradeApiLogin`` + ``tradeApiValidate``) and the
session ``baseUrl`` it hands out (itself). Also serves the SDK v3 single-order read
(``GET /quick/user/orders/<no>``) and both position paths (``portfolio/v2/positions``, legacy
``quick/user/positions``). Assumptions where Kotak publishes nothing are marked "sim:".

Usage in tests: ``async with start(faults=..., clock=..., master=...) as sim: sim.url``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import itertools
import os
import secrets
from collections.abc import AsyncIterator, Mapping
from decimal import Decimal
from typing import Any

from aiohttp import web

from runner.accounts import Account, RateLimit, SecretRef
from runner.brokers.faults import Fault, FaultPlan
from runner.brokers.instruments import InstrumentMaster, MasterRow
from runner.brokers.kotak_neo.quotes_wire import PATH_QUOTES
from runner.brokers.kotak_neo.sim_book import (
    IST,
    PRODUCT_OF_WIRE,
    SimBook,
    SimSession,
    SimUser,
    WireError,
    WireOrder,
    _apply,
    _login_error,
    _segment_of,
    _totp_ok,
    envelope,
)
from runner.brokers.kotak_neo.sim_master import add_master_routes
from runner.brokers.kotak_neo.sim_quotes import SimQuotes
from runner.brokers.kotak_neo.wire import (
    CODE_ALREADY_COMPLETE,
    CODE_INVALID_SESSION,
    CODE_IP_NOT_WHITELISTED,
    CODE_NOT_FOUND,
    CODE_SESSION_IP_MISMATCH,
    ORDER_TYPE_CODE,
    ORDER_TYPE_OF_CODE,
    PATH_BO_EXIT,
    PATH_CANCEL,
    PATH_CO_EXIT,
    PATH_HISTORY,
    PATH_MODIFY,
    PATH_ORDERS,
    PATH_PLACE,
    PATH_POSITIONS,
    PATH_POSITIONS_LEGACY,
    PATH_TOTP_LOGIN,
    PATH_TOTP_VALIDATE,
    PATH_TRADES,
    SIDE_OF_CODE,
    segment_for,
    trading_symbol_for,
)
from runner.brokers.paper.matching import MatchingEngine
from runner.brokers.paper.price_paths import PricePath
from runner.brokers.sim_front import SimFront
from runner.brokers.sim_loop import settle_heap
from runner.brokers.sim_prices import sim_matching, sim_price_path
from runner.clock import Clock, SystemClock
from runner.errors import NotFound, NotModifiable, Rejected
from runner.model import (
    Instrument,
    Modification,
    OrderRequest,
    OrderStatus,
    OrderType,
    Product,
    Validity,
)
from runner.wirejson import dumps, loads, plain, to_decimal


class KotakNeoSim(SimBook, SimQuotes):
    def __init__(
        self,
        *,
        engine: MatchingEngine | None = None,
        faults: FaultPlan | None = None,
        clock: Clock | None = None,
        master: InstrumentMaster | None = None,
        users: Mapping[str, SimUser] | None = None,
        session_error: str = "200",
        retry_after: str = "1",
        allowed_ips: frozenset[str] | None = None,
        prices: PricePath | None = None,
    ) -> None:
        self.engine = engine or MatchingEngine(prices or sim_price_path(), sim_matching())
        self.faults = faults or FaultPlan()
        self.clock: Clock = clock or SystemClock()
        self.master = master
        self.users = dict(users or {})
        self.session_error = session_error  # "200": stCode 100022 envelope; "403": HTTP 403
        self.allowed_ips = allowed_ips
        self.retry_after = retry_after  # Retry-After on an injected 429 (tests shorten it)
        self.sessions: dict[str, SimSession] = {}
        self.orders: dict[str, dict[str, WireOrder]] = {}  # ucc -> number -> order
        self._client_ids: dict[str, set[str]] = {}
        self._waiting_amos: dict[str, list[WireOrder]] = {}
        self.requests: list[tuple[str, str, dict[str, Any] | None]] = []  # (path, ucc, jData) log
        self.acted: list[tuple[str, str]] = []  # (operation, client id or order no) that took effect
        self.duplicate_places: list[str] = []  # place requests whose ig already has an order
        # client id -> wall time (epoch s) its first place request was read off the socket (see
        # runner.brokers.sim_front): benches measure when a request reached the broker, not only when
        # the runner saw the reply (GET /_sim/arrivals)
        self._front = SimFront()
        self.arrivals: dict[str, float] = self._front.arrivals
        self.logins = 0  # completed two-step logins (trade sessions issued)
        self.foreign_rows: dict[str, list[dict[str, Any]]] = {}  # ucc -> raw rows entered elsewhere
        self._seq = itertools.count(1)
        self._ns = itertools.count(1)
        self._by_segment_symbol: dict[tuple[str, str], MasterRow] = {}
        self._by_segment_token: dict[tuple[str, str], MasterRow] = {}
        for row in master or ():
            with contextlib.suppress(Rejected):
                self._by_segment_symbol[(segment_for(row), trading_symbol_for(row).upper())] = row
                if row.token:
                    self._by_segment_token[(segment_for(row).lower(), row.token)] = row
        self.quote_calls: list[list[str]] = []  # the neosymbols of each quotes call, for tests
        # (method, path, headers) for wire tests: the request's own read-only, case-insensitive headers
        # (not a copy: a burst pays for no dict per request)
        self.seen: list[tuple[str, str, Mapping[str, str]]] = []
        self.app = web.Application(middlewares=[self._capture])
        r = self.app.router
        r.add_post(PATH_TOTP_LOGIN, self._totp_login)
        r.add_post(PATH_TOTP_VALIDATE, self._totp_validate)
        r.add_post(PATH_PLACE, self._place)
        r.add_post(PATH_MODIFY, self._modify)
        r.add_post(PATH_CANCEL, self._cancel)
        r.add_post(PATH_BO_EXIT, self._bo_exit)
        r.add_post(PATH_CO_EXIT, self._co_exit)
        r.add_post(PATH_HISTORY, self._history)
        r.add_get(PATH_ORDERS, self._order_book)
        r.add_get(PATH_ORDERS + "/{number}", self._order_by_id)
        r.add_get(PATH_TRADES, self._trades)
        r.add_get(PATH_POSITIONS, self._positions)
        r.add_get(PATH_POSITIONS_LEGACY, self._positions)
        r.add_get(PATH_QUOTES + "/{symbols}/{quote_type}", self._quotes)
        r.add_get(PATH_QUOTES + "/{symbols}", self._quotes)  # docs: the filter is optional (all)
        self._front.add_route(self.app)
        add_master_routes(self)  # the scrip master: file-paths + per-segment CSVs (sim_master.py)
        self.port = 0

    @web.middleware
    async def _capture(self, request: web.Request, handler: Any) -> web.StreamResponse:
        await self._front.admit(request)  # stamped at the read; one handler per turn of the loop
        self.seen.append((request.method, request.path, request.headers))
        response: web.StreamResponse = await handler(request)
        return response

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        # a deep accept queue: daemons open a connection per fire due at an instant (runner.brokers.warm)
        self.port = await self._front.start(web.AppRunner(self.app, access_log=None), host, port)
        return self.port

    async def stop(self) -> None:
        await self._front.stop()

    def inject_foreign_row(self, ucc: str, row: Mapping[str, Any]) -> None:
        """Show ``row`` verbatim in ``ucc``'s order book and history (an order entered outside the runner,
        e.g. from Kotak's own terminal)."""
        self.foreign_rows.setdefault(ucc, []).append(dict(row))

    def expire_sessions(self) -> None:
        """Kotak logs every API session out daily; tests call this to play that."""
        self.sessions.clear()

    # -- plumbing ---------------------------------------------------------------------------------
    async def _fault(self, request: web.Request, operation: str) -> Fault:
        delay = self.faults.delay()
        if delay:
            await asyncio.sleep(delay)
        fault = self.faults.draw(operation)
        if fault in (Fault.RESET, Fault.DISCONNECT):
            _kill(request)
            raise _Dropped
        if fault is Fault.ERROR_5XX:
            raise WireError(500, "Unexpected error", http_status=500)
        if fault is Fault.RATE_LIMIT:
            raise _RateLimited
        return fault

    def _session(self, request: web.Request, *, trade: bool = True) -> SimSession:
        token = request.headers.get("Auth")
        sid = request.headers.get("Sid") or request.headers.get("sid")
        session = self.sessions.get(token or "")
        now = self.clock.now()
        expired = (session is not None and self.faults.expire_after is not None
                   and (now - session.created).total_seconds() >= self.faults.expire_after)
        if session is None or session.sid != sid or expired or (trade and session.kind != "Trade"):
            if expired and token:
                self.sessions.pop(token, None)
            status = 403 if self.session_error == "403" else 200
            raise WireError(CODE_INVALID_SESSION, "invalid session token", http_status=status)
        if session.ip is not None and request.remote != session.ip:
            raise WireError(CODE_SESSION_IP_MISMATCH, "session was created from another IP")
        return session

    async def _jdata(self, request: web.Request) -> dict[str, Any]:
        if not request.content_type.startswith("application/x-www-form-urlencoded"):
            raise WireError(400, "Content-Type must be application/x-www-form-urlencoded", http_status=400)
        form = await request.post()
        raw = form.get("jData")
        if not isinstance(raw, str):
            raise WireError(400, "Missing jData", http_status=400)
        try:
            body = loads(raw)
        except ValueError:
            raise WireError(400, "jData is not JSON", http_status=400) from None
        if not isinstance(body, dict):
            raise WireError(400, "jData is not an object", http_status=400)
        return body

    def _check_ip(self, request: web.Request) -> None:
        if self.allowed_ips is not None and request.remote not in self.allowed_ips:
            raise WireError(CODE_IP_NOT_WHITELISTED, "order entry allowed only from a whitelisted static IP")

    async def _handle(self, request: web.Request, operation: str, fn: Any) -> web.StreamResponse:
        try:
            fault = await self._fault(request, operation)
            body = await fn(request)
        except _Dropped:
            return web.Response(status=499)  # the connection is gone; nothing is written
        except _RateLimited:
            return web.json_response(envelope(429, "Too many requests to the API"), status=429,
                                     headers={"Retry-After": self.retry_after}, dumps=dumps)
        except WireError as exc:
            return web.json_response(exc.body, status=exc.http_status, dumps=dumps)
        if fault is Fault.DROP_REPLY:
            _kill(request)
            return web.Response(status=499)
        return web.json_response(body, dumps=dumps)  # exact Decimals, should a field carry one

    # -- login ------------------------------------------------------------------------------------
    async def _totp_login(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "login", self._do_totp_login)

    async def _do_totp_login(self, request: web.Request) -> dict[str, Any]:
        if not request.headers.get("Authorization") or request.headers.get("neo-fin-key") is None:
            raise WireError(401, "Invalid Credentials", http_status=401)
        body = loads(await request.read())
        missing = [name for key, name in (("mobileNumber", "MobileNumber"), ("ucc", "Ucc"), ("totp", "Totp"))
                   if not body.get(key)]
        if missing:
            raise _login_error(f"Missing required field '{missing[0]}'")
        ucc = str(body["ucc"])
        user = self.users.get(ucc)
        if self.users and user is None:
            raise _login_error("Invalid UCC")
        if user is not None:
            if user.access_token and request.headers["Authorization"] != user.access_token:
                raise WireError(401, "Invalid Credentials", http_status=401)
            if user.mobile_number and body["mobileNumber"] != user.mobile_number:
                raise _login_error("Invalid mobile number")
            if user.totp_secret and not _totp_ok(user.totp_secret, str(body["totp"]), self.clock.now()):
                raise _login_error("Invalid TOTP")
        session = self._new_session(ucc, "View", request)
        return {"data": {"token": session.token, "sid": session.sid, "rid": secrets.token_hex(8),
                         "ucc": ucc, "kType": "View", "status": "success", "dataCenter": "SIM"}}

    async def _totp_validate(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "login", self._do_totp_validate)

    async def _do_totp_validate(self, request: web.Request) -> dict[str, Any]:
        view = self.sessions.get(request.headers.get("Auth", ""))
        if view is None or view.kind != "View" or view.sid != request.headers.get("sid"):
            raise _login_error("Invalid view token or sid")
        body = loads(await request.read())
        mpin = body.get("mpin")
        if not mpin:
            raise _login_error("Missing required field 'Mpin'")
        user = self.users.get(view.ucc)
        if user is not None and user.mpin and mpin != user.mpin:
            raise _login_error("Invalid MPIN")
        self.sessions.pop(view.token, None)
        session = self._new_session(view.ucc, "Trade", request)
        self.logins += 1
        return {"data": {"token": session.token, "sid": session.sid, "rid": secrets.token_hex(8),
                         "baseUrl": self.url, "ucc": view.ucc, "kType": "Trade", "status": "success",
                         "dataCenter": "SIM"}}

    def _new_session(self, ucc: str, kind: str, request: web.Request) -> SimSession:
        s = SimSession(ucc, secrets.token_urlsafe(24), secrets.token_hex(16), kind, self.clock.now(),
                       request.remote if self.allowed_ips is not None else None)
        self.sessions[s.token] = s
        return s

    # -- order entry --------------------------------------------------------------------------------
    async def _place(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "place", self._do_place)

    async def _do_place(self, request: web.Request) -> dict[str, Any]:
        session = self._session(request)
        body = await self._jdata(request)
        self.requests.append((PATH_PLACE, session.ucc, body))
        self._check_ip(request)
        for key in ("am", "es", "pc", "pr", "pt", "qt", "rt", "tp", "ts", "tt"):
            if body.get(key) in (None, ""):
                raise WireError(400, f"Missing required field '{key}'", http_status=400)
        es, ts, prod = str(body["es"]).lower(), str(body["ts"]), str(body["pc"]).upper()
        instrument, token = self._instrument(es, ts)
        order_type = ORDER_TYPE_OF_CODE.get(str(body["pt"]).upper())
        side = SIDE_OF_CODE.get(str(body["tt"]).upper())
        product = PRODUCT_OF_WIRE.get(prod)
        validity = str(body["rt"]).upper()
        if order_type is None or side is None or product is None or validity not in ("DAY", "IOC"):
            raise WireError(400, "Invalid order parameters", http_status=400)
        if es == "mcx_fo" and validity != "DAY":
            raise WireError(400, "mcx_fo supports DAY validity only", http_status=400)
        price, trigger = to_decimal(body["pr"]), to_decimal(body["tp"])
        priced = order_type in (OrderType.LIMIT, OrderType.SL)
        stop = order_type in (OrderType.SL, OrderType.SL_M)
        if priced and not price:
            raise WireError(400, "price must be greater than zero for L/SL orders", http_status=400)
        # Our ids are the ``ig`` tag; the broker allocates its own order number. Kotak does not dedupe
        # tags: a repeated one is a second order here too (the matching engine, which refuses ids it has
        # seen, gets a unique one), and is recorded so tests can prove the adapter never re-sent an order.
        number = self._number()
        client_id = str(body.get("ig") or f"kotak-{number}")
        engine_id = client_id
        if self._has_client_id(session.ucc, client_id):
            self.duplicate_places.append(client_id)
            engine_id = f"{client_id}~{number}"
        try:
            req = OrderRequest(client_order_id=engine_id, instrument=instrument, side=side,
                               quantity=int(str(body["qt"])), order_type=order_type, product=product,
                               validity=Validity(validity), price=price if priced else None,
                               trigger_price=trigger if stop else None,
                               disclosed_quantity=int(str(body.get("dq") or 0)), tag=client_id)
        except (ValueError, TypeError) as exc:
            raise WireError(400, str(exc), http_status=400) from None
        self._front.note(client_id, request)
        amo = str(body["am"]).upper() == "YES"
        order = WireOrder(number, client_id, es, ts, token, prod, amo, None, req, self.clock.now())
        if not amo:
            self._submit(session.ucc, order)
        self._add(session.ucc, order)
        self._record(session.ucc, order, ["put order req received", "validation pending"])
        self.acted.append(("place", client_id))
        return {"stat": "Ok", "nOrdNo": number, "stCode": 200}

    async def _modify(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "modify", self._do_modify)

    async def _do_modify(self, request: web.Request) -> dict[str, Any]:
        session = self._session(request)
        body = await self._jdata(request)
        self.requests.append((PATH_MODIFY, session.ucc, body))
        self._check_ip(request)
        order = self._find(session.ucc, body.get("no"))
        # SDK v3 sends `vd` for validity; legacy clients (Kotak-neo-api-v2) may also send es/ts/tt/pc/tk.
        order_type = ORDER_TYPE_OF_CODE.get(str(body.get("pt", "")).upper())
        if order_type is None or body.get("qt") in (None, "") or body.get("vd") in (None, ""):
            raise WireError(400, "Missing required field 'pt', 'qt' or 'vd'", http_status=400)
        priced = order_type in (OrderType.LIMIT, OrderType.SL)
        stop = order_type in (OrderType.SL, OrderType.SL_M)
        change = Modification(quantity=int(str(body["qt"])), order_type=order_type,
                              price=to_decimal(body.get("pr")) if priced else None,
                              trigger_price=to_decimal(body.get("tp")) if stop else None)
        if order.engine_id is None:  # AMO still waiting: change the request itself
            if str(body.get("am", "NO")).upper() != "YES":
                raise WireError(400, "am must be YES to modify an after market order")
            order.request = _apply(order.request, change)
        else:
            try:
                self.engine.modify(session.ucc, order.engine_id, change, self.clock.now())
            except NotModifiable:
                raise WireError(CODE_ALREADY_COMPLETE, "order is completed") from None
            except Rejected as exc:
                raise WireError(400, f"modification rejected: {exc.message}") from None
        self._record(session.ucc, order, ["modify pending"])
        self.acted.append(("modify", order.number))
        return {"stat": "Ok", "nOrdNo": order.number, "stCode": 200}

    async def _cancel(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "cancel", lambda r: self._do_cancel(r, None))

    async def _bo_exit(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "cancel", lambda r: self._do_cancel(r, "BO"))

    async def _co_exit(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "cancel", lambda r: self._do_cancel(r, "CO"))

    async def _do_cancel(self, request: web.Request, kind: str | None) -> dict[str, Any]:
        session = self._session(request)
        body = await self._jdata(request)
        self.requests.append((request.path, session.ucc, body))
        self._check_ip(request)
        order = self._find(session.ucc, body.get("on"))
        # sim: BO/CO orders leave only through their exit endpoints, and those take nothing else.
        if (kind or "") != (order.prod if order.prod in ("BO", "CO") else ""):
            raise WireError(400, f"order {order.number} is {order.prod}: use the matching cancel endpoint")
        if order.amo and order.engine_id is None:
            if str(body.get("am", "NO")).upper() != "YES" or not body.get("ts"):
                raise WireError(400, "am=YES and ts are mandatory to cancel an after market order")
            if order.cancelled_amo:
                raise WireError(CODE_NOT_FOUND, "Order already cancelled or not found.")
            order.cancelled_amo = True
        else:
            assert order.engine_id is not None
            now = self.clock.now()
            current = self.engine.get(session.ucc, order.engine_id, now)
            if current.status in (OrderStatus.CANCELLED, OrderStatus.EXPIRED, OrderStatus.REJECTED):
                raise WireError(CODE_NOT_FOUND, "Order already cancelled or not found.")
            if current.status is OrderStatus.FILLED:
                if kind is None:
                    raise WireError(CODE_ALREADY_COMPLETE, "order is completed")
                self._exit_position(session.ucc, order, current)  # exiting a filled BO/CO squares off
            else:
                with contextlib.suppress(NotFound, NotModifiable):
                    self.engine.cancel(session.ucc, order.engine_id, now)
        self._record(session.ucc, order, [])
        self.acted.append(("cancel", order.number))
        return {"stat": "Ok", "nOrdNo": order.number, "stCode": 200}

    # -- reports ------------------------------------------------------------------------------------
    async def _order_book(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "orders", self._do_order_book)

    async def _do_order_book(self, request: web.Request) -> dict[str, Any]:
        session = self._session(request)
        self._release_amos(session.ucc)
        rows = [self._current(session.ucc, o) for o in self._book(session.ucc).values()]
        return {"stat": "Ok", "stCode": 200, "data": rows + self.foreign_rows.get(session.ucc, [])}

    async def _order_by_id(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "orders", self._do_order_by_id)

    async def _do_order_by_id(self, request: web.Request) -> dict[str, Any]:
        session = self._session(request)
        order = self._find(session.ucc, request.match_info["number"])
        return {"stat": "Ok", "stCode": 200, "data": [self._current(session.ucc, order)]}

    async def _history(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "orders", self._do_history)

    async def _do_history(self, request: web.Request) -> dict[str, Any]:
        session = self._session(request)
        body = await self._jdata(request)
        raw = [r for r in self.foreign_rows.get(session.ucc, []) if r.get("nOrdNo") == body.get("nOrdNo")]
        if raw:
            return {"stat": "Ok", "stCode": 200, "data": raw}
        order = self._find(session.ucc, body.get("nOrdNo"))
        self._current(session.ucc, order)
        return {"stat": "Ok", "stCode": 200, "data": list(reversed(order.history))}  # newest first

    async def _trades(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "orders", self._do_trades)

    async def _do_trades(self, request: web.Request) -> dict[str, Any]:
        session = self._session(request)
        by_engine = {o.engine_id: o for o in self._book(session.ucc).values() if o.engine_id is not None}
        rows = []
        for fill in self.engine.fills(session.ucc, self.clock.now()):
            order = by_engine.get(fill.broker_order_id or "")
            if order is None:
                continue
            local = fill.at.astimezone(IST)
            side = "B" if fill.side.value == "BUY" else "S"
            rows.append({"nOrdNo": order.number, "GuiOrdId": order.client_id, "trdSym": order.ts,
                         "tok": order.token, "exSeg": order.es, "trnsTp": side,
                         "prod": order.prod, "prcTp": ORDER_TYPE_CODE[order.request.order_type],
                         "fldQty": fill.quantity, "avgPrc": plain(fill.price), "flId": fill.trade_id,
                         "flDt": f"{local:%d-%b-%Y}", "flTm": f"{local:%H:%M:%S}", "rptTp": "fill"})
        return {"stat": "ok", "stCode": 200, "data": rows}

    async def _positions(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "positions", self._do_positions)

    async def _do_positions(self, request: web.Request) -> dict[str, Any]:
        session = self._session(request)
        now = self.clock.now()
        today = now.astimezone(IST).date()
        wire = {(o.request.instrument.key, o.request.product): o for o in self._book(session.ucc).values()}
        amounts: dict[tuple[str, Product], list[Decimal]] = {}
        by_engine = {o.engine_id: o for o in self._book(session.ucc).values() if o.engine_id is not None}
        for fill in self.engine.fills(session.ucc, now):
            order = by_engine.get(fill.broker_order_id or "")
            if order is None or fill.at.astimezone(IST).date() != today:
                continue
            acc = amounts.setdefault((fill.instrument.key, order.request.product), [Decimal(0), Decimal(0)])
            # amounts are money: price x quantity x the contract's multiplier (parse divides it back out)
            nf = order.request.instrument.multiplier
            acc[0 if fill.side.value == "BUY" else 1] += fill.price * fill.quantity * nf
        rows = []
        for pos in self.engine.positions(session.ucc, now):
            key = (pos.instrument.key, pos.product)
            order = wire.get(key)
            es = order.es if order else _segment_of(pos.instrument)
            ts = order.ts if order else pos.instrument.symbol
            carried = pos.quantity - (pos.day_buy_quantity - pos.day_sell_quantity)
            buy_amt, sell_amt = amounts.get(key, [Decimal(0), Decimal(0)])
            nf = pos.instrument.multiplier
            cf_amt = pos.average_price * abs(carried) * nf  # sim: carried leg valued at the average price
            rows.append({
                "exSeg": es, "trdSym": ts, "tok": order.token if order else "", "prod": pos.product.value,
                "flBuyQty": str(pos.day_buy_quantity), "flSellQty": str(pos.day_sell_quantity),
                "cfBuyQty": str(max(carried, 0)), "cfSellQty": str(max(-carried, 0)),
                "buyAmt": f"{buy_amt:.2f}", "sellAmt": f"{sell_amt:.2f}",
                "cfBuyAmt": f"{cf_amt if carried > 0 else Decimal(0):.2f}",
                "cfSellAmt": f"{cf_amt if carried < 0 else Decimal(0):.2f}",
                "lotSz": str(pos.instrument.lot_size or 1), "multiplier": plain(nf),
                "genNum": "1", "genDen": "1", "prcNum": "1", "prcDen": "1", "precision": "2",
                "sqrFlg": "Y", "posFlg": "true",
                "ltp": plain(self.engine.last_price(pos.instrument, now)),
            })
        return {"stat": "ok", "stCode": 200, "data": rows}


    # -- market data --------------------------------------------------------------------------------
    async def _quotes(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, "quotes", self._do_quotes)


class _Dropped(Exception):
    pass


class _RateLimited(Exception):
    pass


def _kill(request: web.Request) -> None:
    transport = request.transport
    if transport is not None:
        transport.abort()


def default_master() -> InstrumentMaster:
    """A few liquid instruments (tokens and trading symbols in Kotak's spelling) for ``runner sim`` and
    the bench when no instruments file is given."""
    rows = [
        MasterRow(Instrument("NSE", "RELIANCE", lot_size=1, tick_size=Decimal("0.05")), "2885",
                  "RELIANCE-EQ"),
        MasterRow(Instrument("NSE", "INFY", lot_size=1, tick_size=Decimal("0.05")), "1594", "INFY-EQ"),
        MasterRow(Instrument("NSE", "IDEA", lot_size=1, tick_size=Decimal("0.01")), "14366", "IDEA-EQ"),
        MasterRow(Instrument("NFO", "NIFTY", dt.date(2026, 12, 29), lot_size=75, tick_size=Decimal("0.05"),
                             freeze_quantity=1800), "35001", "NIFTY26DECFUT"),
    ]
    from runner.brokers.paper.master import venue_master  # plus every generated contract (paper master)

    return venue_master("kotak_neo", rows)


async def bench_brokers(
    sim: KotakNeoSim,
    n_accounts: int,
    *,
    clock: Clock | None = None,
    transport: str | None = None,
    orders_per_second: float = 1000.0,
    burst: int = 1000,
) -> list[Any]:
    """Bench hook: N connected adapters, one account each, against ``sim`` (its master is reused).
    Credentials go into this process's environment, as the accounts file would reference them."""
    from runner.brokers.kotak_neo.client import create

    master = sim.master or default_master()
    brokers = []
    for i in range(n_accounts):
        account, env = account_for(sim, f"bench{i}", orders_per_second=orders_per_second, burst=burst)
        os.environ.update(env)
        broker = create(account, master=master, clock=clock or sim.clock, transport=transport)
        await broker.connect()
        brokers.append(broker)
    return brokers


def account_for(
    sim: KotakNeoSim,
    name: str,
    *,
    instruments: str | None = None,
    relogin_at: str | None = None,
    options: Mapping[str, Any] | None = None,
    orders_per_second: float = 8.0,
    burst: int = 1,
) -> tuple[Account, dict[str, str]]:
    """Register a user with the simulator and build the account config an adapter needs for it.
    Credentials are env references; the caller puts the returned ``env`` into the environment (tests:
    monkeypatch.setenv, the bench: os.environ). Also the bench hook for N accounts."""
    ucc = "U" + hashlib.blake2b(name.encode(), digest_size=4).hexdigest().upper()
    secret = base64.b32encode(hashlib.blake2b(name.encode(), digest_size=10).digest()).decode()
    user = SimUser(ucc=ucc, mobile_number="+919800000001", mpin="2468",
                   totp_secret=secret, access_token=f"access-{ucc}")
    sim.users[ucc] = user
    prefix = "KOTAK_SIM_" + "".join(c if c.isalnum() else "_" for c in name.upper()) + "_"
    values = {"access_token": user.access_token or "", "mpin": user.mpin or "",
              "totp_secret": secret, "mobile_number": user.mobile_number or ""}
    env = {prefix + key.upper(): value for key, value in values.items()}
    account = Account(
        name=name, broker="kotak_neo", endpoints={"login": sim.url},
        credentials={key: SecretRef(env=prefix + key.upper()) for key in values},
        options={"ucc": ucc, **(options or {})}, instruments=instruments, relogin_at=relogin_at,
        rate_limit=RateLimit(orders_per_second=orders_per_second, burst=burst),
    )
    return account, env


@contextlib.asynccontextmanager
async def start(
    port: int = 0, faults: FaultPlan | str | None = None, host: str = "127.0.0.1", **kwargs: Any
) -> AsyncIterator[KotakNeoSim]:
    plan = FaultPlan.parse(faults) if isinstance(faults, str) or faults is None else faults
    sim = KotakNeoSim(faults=plan, **kwargs)
    await sim.start(host, port)
    try:
        yield sim
    finally:
        await sim.stop()


async def serve_forever(host: str, port: int, faults: FaultPlan, options: Mapping[str, Any]) -> None:
    path = options.get("instruments")
    master = InstrumentMaster.load(path, broker="kotak_neo") if path else default_master()
    sim = KotakNeoSim(faults=faults, master=master, prices=sim_price_path(options))
    bound = await sim.start(host, port)
    # One machine-readable line (the url is both the login host and the session baseUrl; any
    # UCC/TOTP/MPIN is accepted until users are configured).
    from runner.commands.sim import first_line

    account, env = account_for(sim, "sim")  # default user: see `runner sim --help`
    settle_heap()  # the master and price paths are loaded: out of the collector's way (sim_loop)
    print(first_line("kotak_neo", f"http://{host}:{bound}", bound, account, env, master, options), flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await sim.stop()
