"""Loopback simulator of the QuantXpress Blitz OMS REST API (seed 000 + blitz-api-py at aa61675).

Speaks the broker's wire format: ``POST {auth}/api/app_login`` -> JWT, ``Authorization: Bearer``, the
``{"status","message","data"}`` envelope, ``{"status":"error","message","error_type"}`` errors, Blitz
status strings and history rows. It accepts both the SDK's and the seed's paths and spellings (keys are
bound case-insensitively, as the ASP.NET server does), so it can stand in for either documentation.

Orders are matched by the shared paper engine (:mod:`runner.brokers.paper.matching`) against a price path.
Fault injection comes from :class:`runner.brokers.faults.FaultPlan`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import csv
import dataclasses
import hashlib
import hmac
import io
import itertools
import json
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from runner.brokers.blitz.sim_master import INSTRUMENTS_PATH, instruments_dump, is_instruments_path
from runner.brokers.blitz.sim_oms import ApiError, Session, SimOms, SimOrder
from runner.brokers.blitz.wire import (
    EXCHANGE_OF_SEGMENT,
    SEGMENT_OF_EXCHANGE,
    exchange_segment,
    instrument_id,
)
from runner.brokers.faults import Fault, FaultPlan
from runner.brokers.instruments import InstrumentMaster, MasterRow, row_from_mapping
from runner.brokers.paper.matching import MatchingEngine
from runner.brokers.sim_front import SimFront
from runner.brokers.sim_loop import settle_heap
from runner.brokers.sim_prices import sim_matching, sim_price_path
from runner.clock import Clock, SystemClock
from runner.model import (
    Instrument,
)
from runner.wirejson import dumps, loads

AUTH_PREFIX = "/api_gateway/v1"
API_PREFIX = "/api_interactive/api/v1"
SEED_PREFIX = "/api/order"
MD_PREFIX = "/md-api"  # blitzsdk/common/config.py MD_API_URL

# Instruments named in the docs (seed 000, docs/blitzsdk/*.md, Postman collection, SDK test config), used
# when no master is given. SEEDEXAMPLE stands for the seed's unnamed instrument 110010000012018.
DEFAULT_MASTER_CSV = """\
exchange,symbol,expiry,strike,option_type,lot_size,tick_size,freeze_quantity,token,trading_symbol
NSE,IDEA,,,,1,0.01,,110010000014366,IDEA
NSE,TCS,,,,1,0.05,,110010000011536,TCS
NSE,RELIANCE,,,,1,0.05,,110010000002885,RELIANCE
NSE,SEEDEXAMPLE,,,,1,0.05,,110010000012018,SEEDEXAMPLE
NFO,TCS,2026-07-28,2060,CE,225,0.05,,262090000149108,TCS28JUL262060CE
NFO,NIFTY,2026-12-29,24500,CE,75,0.05,1800,262090000243210,NIFTY29DEC2624500CE
NFO,NIFTY,2026-12-29,24600,CE,75,0.05,1800,262090000243220,NIFTY29DEC2624600CE
"""


# Prices near the docs' examples for the default instruments (the paper walk would start at 1000).
DEFAULT_PRICES = {
    "NSE IDEA": "11",
    "NSE TCS": "4100",
    "NSE RELIANCE": "1400",
    "NSE SEEDEXAMPLE": "45.90",
    "NFO TCS 2026-07-28 2060 CE": "95",
    "NFO NIFTY 2026-12-29 24500 CE": "120",
    "NFO NIFTY 2026-12-29 24600 CE": "80",
}


def default_master() -> InstrumentMaster:
    rows = csv.DictReader(io.StringIO(DEFAULT_MASTER_CSV))
    from runner.brokers.paper.master import venue_master  # plus every generated contract (paper master)

    return venue_master("blitz", (row_from_mapping(dict(r)) for r in rows), venue_row=blitz_row)


def blitz_row(row: MasterRow) -> MasterRow:
    """A generated row as Blitz names it: a cash instrument's ``instrumentName`` is the bare symbol
    (``NSECM|TCS`` in the SDK's docs), not NSE's ``TCS-EQ`` series spelling."""
    if row.instrument.expiry is None and row.trading_symbol != row.instrument.symbol:
        return dataclasses.replace(row, trading_symbol=row.instrument.symbol)
    return row



def envelope(data: Any, message: str = "request processed successfully") -> web.Response:
    return web.Response(
        text=dumps({"status": "success", "message": message, "data": data}), content_type="application/json"
    )


def error_response(
    status: int, message: str, error_type: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        text=dumps({"status": "error", "message": message, "error_type": error_type}),
        content_type="application/json",
        headers=headers,
    )


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _lower_keys(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k).lower(): v for k, v in obj.items()}


class BlitzSim(SimOms):
    """State + aiohttp handlers. Use :func:`start` to run it on a loopback port."""

    def __init__(
        self,
        faults: FaultPlan | None = None,
        *,
        clock: Clock | None = None,
        master: InstrumentMaster | None = None,
        engine: MatchingEngine | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.faults = faults or FaultPlan()
        self.clock: Clock = clock or SystemClock()
        self.master = master or default_master()
        self.options = dict(options or {})
        self.users: dict[str, str] = dict(self.options.get("users") or {})  # userId -> appKey; empty: any
        self.expiry_status = int(self.options.get("expiry_status", 401))  # SDK docs also allow 403
        self.retry_after = str(self.options.get("retry_after", "1"))
        if master is None and "prices" not in self.options:
            self.options["prices"] = DEFAULT_PRICES
        self.engine = engine or MatchingEngine(
            sim_price_path(self.options), sim_matching(self.options)
        )
        self._secret = hashlib.sha256(str(self.options.get("seed", 0)).encode() + b"blitz-sim").digest()
        self._sessions: dict[str, Session] = {}
        self._ids = itertools.count(1)
        self._seq = itertools.count(1)
        self.orders: dict[int, SimOrder] = {}
        self._by_engine_id: dict[tuple[str, str], SimOrder] = {}
        self._by_exchange_id: dict[str, SimOrder] = {}
        self.trades: list[dict[str, Any]] = []
        self.requests: list[tuple[str, str, Any]] = []  # (method, path?query, parsed body): for wire tests
        self.logins = 0
        # stamps each request at its read, one handler per loop turn; arrivals: correlation id -> when
        # its first place request was read (GET /_sim/arrivals, for benches)
        self.front = SimFront()
        self.arrivals: dict[str, float] = self.front.arrivals
        # Raw order rows placed outside the runner (e.g. from Blitz's own terminal), by user id.
        self.foreign_rows: dict[str, list[dict[str, Any]]] = {}
        self._by_iid: dict[int, MasterRow] = {}
        self._by_symbol: dict[str, MasterRow] = {}
        for r in self.master:
            iid = instrument_id(r)
            self._by_iid[iid] = r
            name = (r.trading_symbol or r.instrument.symbol).upper()
            self._by_symbol[f"{exchange_segment(r)}|{name}"] = r
            self._by_symbol.setdefault(name, r)

    # -- introspection for tests -----------------------------------------------------------------------

    def orders_with_correlation(self, correlation_order_id: str) -> list[SimOrder]:
        return [o for o in self.orders.values() if o.correlation_order_id == correlation_order_id]

    def inject_foreign_row(self, user_id: str, row: Mapping[str, Any]) -> None:
        """Show ``row`` verbatim in ``user_id``'s order book (an order entered outside the runner)."""
        self.foreign_rows.setdefault(user_id, []).append(dict(row))

    def expire_sessions(self) -> None:
        """Invalidate every token (a broker-side logout / daily session end)."""
        self._sessions.clear()

    # -- auth ------------------------------------------------------------------------------------------

    def _issue(self, user_id: str) -> str:
        now = self.clock.now()
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        claims = {"sub": user_id, "iat": int(now.timestamp()), "jti": uuid.uuid4().hex}
        if self.faults.expire_after is not None:
            claims["exp"] = int(now.timestamp() + self.faults.expire_after)
        payload = _b64(json.dumps(claims).encode())
        sig = _b64(hmac.new(self._secret, f"{header}.{payload}".encode(), hashlib.sha256).digest())
        token = f"{header}.{payload}.{sig}"
        self._sessions[token] = Session(user_id, now)
        return token

    def _authorize(self, request: web.Request) -> Session:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        session = self._sessions.get(token) if scheme.lower() == "bearer" else None
        if session is None:
            raise ApiError(401, "Unauthorized: missing or invalid JWT token", "AuthenticationError")
        expire = self.faults.expire_after
        if expire is not None and (self.clock.now() - session.issued_at).total_seconds() >= expire:
            del self._sessions[token]
            if self.expiry_status == 403:
                raise ApiError(403, "Session expired or invalidated. Must re-login", "TokenException")
            raise ApiError(401, "Unauthorized: token expired", "AuthenticationError")
        return session

    async def login(self, request: web.Request) -> web.Response:
        try:
            body = _lower_keys(await request.json())
        except (ValueError, AttributeError):
            raise ApiError(400, "request body must be JSON", "InputException") from None
        app_key, user_id = str(body.get("appkey") or ""), str(body.get("userid") or "")
        if not app_key or not user_id:
            raise ApiError(400, "appKey and userId are required", "InputException")
        if self.users and self.users.get(user_id) != app_key:
            raise ApiError(401, "Login failed: invalid credentials", "AuthenticationError")
        self.logins += 1
        return envelope({"accessToken": self._issue(user_id)})

    # -- HTTP dispatch ---------------------------------------------------------------------------------

    @staticmethod
    def route(method: str, path: str) -> tuple[str, str | None]:
        """(operation, blitzOrderId) for any of the SDK's or the seed's paths."""
        p = path.rstrip("/")
        low = p.lower()
        if low.endswith("/api/app_login"):
            return "login", None
        if method == "GET" and is_instruments_path(low):
            return "instruments", None  # the SDK's InstrumentManager; public (it sends no token)
        for prefix in (API_PREFIX, MD_PREFIX, "/v1/api", "/api", ""):
            if low.startswith(prefix.lower() + "/") or (prefix and low == prefix.lower()):
                rest = p[len(prefix) :]
                break
        parts = [s for s in rest.split("/") if s]
        low_parts = [s.lower() for s in parts]
        if method == "POST" and low_parts in (["marketfeed", "quote"], ["marketfeed", "ltp"]):
            return low_parts[1], None
        if parts and parts[0].lower() in ("order", "orders"):
            tail = [s.lower() for s in parts[1:]]
            if method == "GET" and not tail:
                return "orders", None
            if method == "GET" and tail == ["openorders"]:
                return "open_orders", None
            if method == "POST" and tail == ["placeorder"]:
                return "place", None
            if method == "PUT" and tail == ["modifyorder"]:
                return "modify", None
            if method == "DELETE" and tail == ["cancelorder"]:
                return "cancel", None
            if method == "GET" and len(tail) == 3 and tail[:2] == ["orderhistory", "blitzorderid"]:
                return "order_history", parts[3]
            if method == "GET" and len(tail) == 2 and tail[0] == "blitzorderid":
                return "order_history", parts[2]
            if method == "GET" and len(tail) == 1 and tail[0].isdigit():
                return "order", parts[1]
        if method == "GET" and parts and parts[0].lower() == "positions" and len(parts) == 1:
            return "positions", None
        if method == "GET" and parts and parts[0].lower() == "trades" and len(parts) <= 2:
            return "trades", parts[1] if len(parts) == 2 else None
        return "unknown", None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        op, ident = self.route(request.method, request.path)
        body: Any = None
        if request.can_read_body:
            raw = await request.read()
            try:
                body = loads(raw) if raw else None
            except ValueError:
                return error_response(400, "request body is not valid JSON", "InputException")
        self.requests.append((request.method, request.path_qs, body))
        delay = self.faults.delay()
        if delay > 0:
            await asyncio.sleep(delay)
        fault = self.faults.draw(op)
        if fault is Fault.ERROR_5XX:
            return error_response(500, "Internal server error", "GeneralException")
        if fault is Fault.RATE_LIMIT:
            return error_response(
                429, "Too many requests", "GeneralException", {"Retry-After": self.retry_after}
            )
        if fault in (Fault.RESET, Fault.DISCONNECT):
            return self._abort(request)
        try:
            if op == "unknown":
                raise ApiError(404, f"no route {request.method} {request.path}", "GeneralException")
            if op == "login":
                return await self.login(request)
            if op == "instruments":
                return web.Response(body=instruments_dump(self.master), content_type="application/gzip")
            self._authorize(request)
            response = self._dispatch(op, ident, body, request)
        except ApiError as exc:
            return error_response(exc.status, exc.message, exc.error_type)
        if fault is Fault.DROP_REPLY:
            return self._abort(request)  # acted on it, the client never hears
        return response

    @staticmethod
    def _abort(request: web.Request) -> web.StreamResponse:
        if request.transport is not None:
            request.transport.close()
        return web.Response(status=500)  # never reaches the client

    def _dispatch(self, op: str, ident: str | None, body: Any, request: web.Request) -> web.Response:
        session = self._authorize(request)
        self._process()
        mapping = _lower_keys(body) if isinstance(body, Mapping) else {}
        if op == "place":
            placed = self.place(session, mapping)
            self.front.note(str(placed["correlationOrderId"]), request)
            return envelope(placed)
        if op == "modify":
            return envelope(self.modify(mapping))
        if op == "cancel":
            return envelope(self.cancel(_lower_keys(dict(request.query))))
        if op in ("quote", "ltp"):
            return envelope(self.quote_rows(mapping, full=op == "quote"))
        mine = [o for o in self.orders.values() if session.user_id in (o.user_id, o.client_id)]
        foreign = self.foreign_rows.get(session.user_id, [])
        if op == "orders":
            return envelope([o.history[-1] for o in mine] + foreign)
        if op == "open_orders":
            rows = [o.history[-1] for o in mine] + foreign
            return envelope([r for r in rows if not r.get("isOrderCompleted")])
        if op in ("order", "order_history"):
            assert ident is not None
            found = self.orders.get(int(ident)) if ident.isdigit() else None
            if found is None and (raw := [r for r in foreign if str(r.get("blitzOrderId")) == ident]):
                return envelope(raw)
            if found is None:
                raise ApiError(404, f"Order {ident} not found", "OrderException")
            if op == "order":
                return envelope([found.history[-1]])
            return envelope(list(reversed(found.history)))  # seed: every state, newest first
        if op == "positions":
            accounts = {o.client_id for o in mine} | {session.user_id}
            return envelope({k: v for k, v in self.positions(accounts).items()})
        if op == "trades":
            ids = {o.blitz_order_id for o in mine}
            rows = [
                t
                for t in self.trades
                if t["blitzOrderId"] in ids and (ident is None or str(t["blitzOrderId"]) == ident)
            ]
            return envelope(rows)
        raise ApiError(404, "not found", "GeneralException")

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1 << 20, middlewares=[self.front.middleware])
        self.front.add_route(app)  # ahead of the catch-all
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app


@dataclass
class Running:
    sim: BlitzSim
    url: str  # http://127.0.0.1:PORT

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def auth_url(self) -> str:
        return self.url + AUTH_PREFIX

    @property
    def api_url(self) -> str:
        return self.url + API_PREFIX

    @property
    def seed_api_url(self) -> str:
        return self.url + SEED_PREFIX

    @property
    def md_api_url(self) -> str:
        return self.url + MD_PREFIX

    def endpoints(self, dialect: str = "sdk") -> dict[str, str]:
        """Account ``endpoints`` pointing an adapter at this simulator."""
        if dialect == "seed":
            # The seed documents no positions/trades: those stay on the SDK's interactive base.
            return {
                "auth": self.auth_url,
                "api": self.seed_api_url,
                "positions": self.api_url + "/positions",
                "trades": self.api_url + "/trades",
                "md_api": self.md_api_url,
                "instruments": self.url + INSTRUMENTS_PATH,
            }
        return {"auth": self.auth_url, "api": self.api_url, "md_api": self.md_api_url,
                "instruments": self.url + INSTRUMENTS_PATH}


@contextlib.asynccontextmanager
async def start(
    faults: FaultPlan | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    clock: Clock | None = None,
    master: InstrumentMaster | None = None,
    engine: MatchingEngine | None = None,
    options: Mapping[str, Any] | None = None,
) -> AsyncIterator[Running]:
    sim = BlitzSim(faults, clock=clock, master=master, engine=engine, options=options)
    bound = await sim.front.start(web.AppRunner(sim.app(), access_log=None, handle_signals=False), host, port)
    try:
        yield Running(sim, f"http://{host}:{bound}")
    finally:
        await sim.front.stop()


async def serve_forever(host: str, port: int, faults: FaultPlan, options: Mapping[str, Any]) -> None:
    master = None
    if options.get("instruments"):
        from runner.brokers.blitz.client import load_master

        master = load_master(str(options["instruments"]))
    async with start(faults, host=host, port=port, master=master, options=options) as running:
        # One machine-readable line (scripts read the port from it); the API lives under API_PREFIX.
        from runner.commands.sim import first_line

        # Default user (the simulator accepts any user id / app key unless `users` is configured).
        account = {
            "endpoints": running.endpoints(),
            "credentials": {"app_key": {"env": SIM_APP_KEY_ENV}, "user_id": {"env": SIM_USER_ID_ENV}},
        }
        env = {SIM_APP_KEY_ENV: "sim-app-key", SIM_USER_ID_ENV: "SIM1"}
        settle_heap()  # the master and price paths are loaded: out of the collector's way (sim_loop)
        line = first_line("blitz", running.url, running.port, account, env, running.sim.master, options)
        print(line, flush=True)
        await asyncio.Event().wait()


__all__ = [
    "EXCHANGE_OF_SEGMENT",
    "SEGMENT_OF_EXCHANGE",
    "BlitzSim",
    "Instrument",
    "Running",
    "bench",
    "serve_forever",
    "start",
]


SIM_APP_KEY_ENV = "RUNNER_BLITZ_SIM_APP_KEY"
SIM_USER_ID_ENV = "RUNNER_BLITZ_SIM_USER_ID"


@contextlib.asynccontextmanager
async def bench(
    accounts: int,
    *,
    faults: FaultPlan | None = None,
    transport: str | None = None,
    clock: Clock | None = None,
    options: Mapping[str, Any] | None = None,
) -> AsyncIterator[tuple[Running, list[Any]]]:
    """Bench hook: a simulator in-process and ``accounts`` connected adapters (one Blitz user each).

    The simulator accepts any app key; the adapters read it from ``$RUNNER_BLITZ_SIM_APP_KEY`` like a real
    credential (set to a dummy value when unset). Instruments: :data:`DEFAULT_MASTER_CSV`."""
    import os

    from runner.accounts import Account
    from runner.brokers.blitz.client import BlitzBroker

    os.environ.setdefault(SIM_APP_KEY_ENV, "sim-app-key")
    opts = {"volatility_ppm": 0, **(options or {})}
    async with start(faults, clock=clock, options=opts) as running:
        brokers: list[Any] = []
        for i in range(accounts):
            acct = Account(
                name=f"blitz-bench-{i}",
                broker="blitz",
                endpoints=running.endpoints(),
                credentials={"app_key": {"env": SIM_APP_KEY_ENV}},
                rate_limit={"orders_per_second": 1000, "burst": 1000},
                options={"user_id": f"BENCH{i:04d}"},
            )
            b = BlitzBroker(acct, master=running.sim.master, transport=transport)
            await b.connect()
            brokers.append(b)
        try:
            yield running, brokers
        finally:
            for b in brokers:
                await b.close()
