"""Loopback AlphaPoint APEX simulator: a real WebSocket server speaking the ``{m,i,n,o}`` frames.

Behaviour follows the APEX docs (alphapoint/slate): AuthenticateUser (password or API-key signature),
SendOrder / CancelOrder / CancelReplaceOrder / ModifyOrder, GetOrderStatus / GetOpenOrders /
GetOrderHistory / GetOrdersHistory, GetAccountPositions / GetAccountTrades, GetLevel1 (from the paper
price path, the one the fills use), SubscribeAccountEvents
(OrderStateEvent, OrderTradeEvent, AccountPositionEvent, NewOrderRejectEvent, CancelOrderRejectEvent).
Request keys are read case-insensitively, as the docs say APEX does. Execution goes through the paper
matching engine (see :class:`runner.brokers.alphapoint.sim_exchange.SimExchange`). Faults come from
:class:`runner.brokers.faults.FaultPlan`.

Usage in tests: ``async with start(faults=..., clock=...) as sim: sim.url``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from runner.brokers.alphapoint.master import apex_symbol
from runner.brokers.alphapoint.sim_exchange import OK, ApiError, SimExchange, SimUser, _err, _int
from runner.brokers.alphapoint.sim_instruments import CALLS as INSTRUMENT_CALLS
from runner.brokers.alphapoint.sim_instruments import reply as instruments_reply
from runner.brokers.alphapoint.wire import (
    ERR_NOT_AUTHORIZED,
    ERR_NOT_FOUND,
    ERR_NOT_SUPPORTED,
    ERR_OPERATION_FAILED,
    ERR_SERVER_ERROR,
    MessageType,
    api_key_signature,
    ci,
)
from runner.brokers.faults import Fault, FaultPlan
from runner.brokers.instruments import InstrumentMaster, MasterRow
from runner.brokers.paper.matching import MatchingConfig, MatchingEngine
from runner.brokers.paper.price_paths import PricePath
from runner.brokers.sim_front import BACKLOG
from runner.brokers.sim_loop import Turnstile, settle_heap
from runner.brokers.sim_ws_arrival import StampedConnection
from runner.wirejson import dumps, loads

log = logging.getLogger("runner.sims.alphapoint")  # the name before the move: people filter on it
# Data the simulator needs ships inside the package (package-data), never read from tests/.
MASTER_FILE = Path(__file__).resolve().parent / "instruments.csv"

OPERATIONS = {
    "SendOrder": "place",
    "CancelOrder": "cancel",
    "CancelReplaceOrder": "modify",
    "ModifyOrder": "modify",
    "CancelAllOrders": "cancel",
    "GetOrderStatus": "get",
    "GetOrdersHistory": "get",
    "GetOrderHistory": "orders",
    "GetOpenOrders": "orders",
    "GetAccountPositions": "positions",
    "GetAccountTrades": "positions",
    "GetLevel1": "quotes",
}
# Callable without a session: GetLevel1's permissions are "Trading, Public" (APEX GetLevel1 docs).
PUBLIC = frozenset({"GetLevel1", *INSTRUMENT_CALLS})  # GetInstruments/GetInstrument: Public too


@dataclass
class Session:
    user: SimUser | None = None
    authenticated_at: dt.datetime | None = None
    subscribed: set[int] = field(default_factory=set)


class AlphaPointSim:
    """The WebSocket front of :class:`SimExchange`: auth, frames, faults, subscriptions."""

    def __init__(
        self,
        faults: FaultPlan | None = None,
        *,
        clock: Callable[[], dt.datetime] | None = None,
        master: InstrumentMaster | None = None,
        users: list[SimUser] | None = None,
        seed: int = 0,
        prices: PricePath | None = None,
        config: MatchingConfig | None = None,
        engine: MatchingEngine | None = None,
        silent_drop: bool = False,
        events_after_reply: bool = False,
        public_level1: bool = True,
    ) -> None:
        self.faults = faults or FaultPlan()
        self.clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self.master = master or default_master()
        self.exchange = SimExchange(
            self.master, clock=self.clock, engine=engine, prices=prices, seed=seed, config=config
        )
        self.users: dict[str, SimUser] = {}
        for u in users or [
            SimUser(
                "trader",
                "trader-pass",
                user_id=96,
                account_id=9,
                api_key="28c68ac3fcfafc3d4e8d653fe57e5baf",
                api_secret="apex-secret",
            )
        ]:
            self.add_user(u)
        self.silent_drop = silent_drop  # drop = swallow the reply (client times out) vs. close the socket
        # APEX does not promise an order's events before the reply: True sends them one request later.
        self.events_after_reply = events_after_reply
        # GetLevel1 is "Trading, Public" in the docs; False makes it need a live session (venues differ).
        self.public = PUBLIC if public_level1 else INSTRUMENT_CALLS
        self.received: list[tuple[str, dict[str, Any]]] = []  # (function, raw payload) as the client sent it
        self.raw_frames: list[dict[str, Any]] = []
        self.counts: dict[str, int] = {}
        self.fault_log: list[tuple[str, Fault]] = []
        self.logins = 0  # successful AuthenticateUser calls
        # ClientOrderId -> wall time its first SendOrder frame was read off the socket (sim_ws_arrival),
        # for benches: when a request reached the broker, not when its handler's turn came
        self.arrivals: dict[str, float] = {}
        # one frame handled per turn of the loop: a connection's task handles every frame it has queued
        # in one step, so during a burst the loop read the other sockets only after all of them (measured:
        # 150 SendOrders over 10 connections, arrival p99 18-156 ms without, 10-42 ms with)
        self._turns = Turnstile()
        self._sessions: dict[ServerConnection, Session] = {}
        self._server: Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/WSGateway/"

    def inject_foreign_row(self, account_id: int, record: Mapping[str, Any]) -> None:
        """Show ``record`` verbatim in the account's order history (and open orders while its OrderState
        is Working): an order entered outside the runner."""
        self.exchange.foreign.setdefault(account_id, []).append(dict(record))

    def add_user(self, user: SimUser) -> SimUser:
        self.users[user.user_name] = user
        return user

    def user_for_account(self, account_id: int) -> SimUser | None:
        return next((u for u in self.users.values() if u.account_id == account_id), None)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        # each connection stamps its frames at the read; a deep accept queue, as the HTTP simulators'
        self._server = await serve(self._handle, host, port, compression=None, max_size=2**24,
                                   create_connection=StampedConnection, backlog=BACKLOG)
        self.port = next(iter(self._server.sockets)).getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def tick(self) -> None:
        """Advance matching to the clock's now and push the resulting events."""
        self.exchange.engine.process(self.clock())
        await self._publish()

    async def drop_connections(self) -> None:
        """Close every client socket (a venue restart / network blip)."""
        for ws in list(self._sessions):
            await ws.close()

    # -- connection ----------------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        session = self._sessions[ws] = Session()
        try:
            async for raw in ws:
                read_at = ws.read_at() if isinstance(ws, StampedConnection) else time.time()
                try:
                    outer = json.loads(raw)
                    m, seq, name = int(outer.get("m", 0)), int(outer.get("i", 0)), str(outer.get("n", ""))
                    o = outer.get("o")
                    payload = loads(o) if isinstance(o, str) and o.strip() else (o or {})
                except (ValueError, TypeError):
                    continue  # APEX ignores garbage frames
                self.raw_frames.append(outer)
                if m not in (MessageType.REQUEST, MessageType.SUBSCRIBE, MessageType.UNSUBSCRIBE):
                    continue
                if name == "SendOrder" and isinstance(payload, dict):
                    self.arrivals.setdefault(str(ci(payload).get("clientorderid")), read_at)
                await self._turns.turn()
                if not await self._dispatch(
                    ws, session, seq, name, payload if isinstance(payload, dict) else {}
                ):
                    return
        except ConnectionClosed:
            pass
        finally:
            self._sessions.pop(ws, None)

    async def _send(self, ws: ServerConnection, m: int, seq: int, name: str, body: Any) -> None:
        with contextlib.suppress(ConnectionClosed):
            await ws.send(json.dumps({"m": m, "i": seq, "n": name, "o": dumps(body)}))

    async def _publish(self) -> None:
        self.exchange.collect_events()
        events, self.exchange.events = self.exchange.events, []
        for account, name, body in events:
            for ws, sess in list(self._sessions.items()):
                if account in sess.subscribed:
                    await self._send(ws, MessageType.EVENT, 0, name, body)

    def _expired(self, session: Session) -> bool:
        limit = self.faults.expire_after
        if limit is None or session.authenticated_at is None:
            return False
        return (self.clock() - session.authenticated_at).total_seconds() >= limit

    async def _dispatch(
        self, ws: ServerConnection, session: Session, seq: int, name: str, payload: dict[str, Any]
    ) -> bool:
        """Handle one request; False closes the connection."""
        self.received.append((name, payload))
        self.counts[name] = self.counts.get(name, 0) + 1
        body = ci(payload)
        if name in ("AuthenticateUser", "WebAuthenticateUser"):
            await self._send(ws, MessageType.REPLY, seq, name, self._authenticate(session, body))
            return True
        if name == "Ping":
            await self._send(ws, MessageType.REPLY, seq, name, {"msg": "PONG"})
            return True
        if name not in self.public and (session.user is None or self._expired(session)):
            session.user = None
            await self._send(ws, MessageType.ERROR, seq, name, _err(ERR_NOT_AUTHORIZED, "Not Authorized"))
            return True
        op = OPERATIONS.get(name, name)
        fault = self.faults.draw(op)
        if fault is not Fault.NONE:
            self.fault_log.append((name, fault))
        delay = self.faults.delay()
        if delay:
            await asyncio.sleep(delay)
        if fault in (Fault.RESET, Fault.DISCONNECT):
            await ws.close()  # before acting: the request was never processed
            return False
        if fault is Fault.ERROR_5XX:
            await self._send(ws, MessageType.ERROR, seq, name, _err(ERR_SERVER_ERROR, "Server Error"))
            return True
        if fault is Fault.RATE_LIMIT:
            await self._send(
                ws,
                MessageType.ERROR,
                seq,
                name,
                _err(ERR_OPERATION_FAILED, "Operation Failed", "Rate limit exceeded, retry after 1s"),
            )
            return True
        if self.events_after_reply:
            await self._publish()  # the previous requests' events: this one's wait for the next request
        try:
            reply = self._call(session, name, body)
            m = MessageType.REPLY
        except ApiError as exc:
            reply, m = exc.body, (MessageType.ERROR if exc.frame else MessageType.REPLY)
        if not self.events_after_reply:
            await self._publish()
        if fault is Fault.DROP_REPLY:
            if self.silent_drop:
                return True  # acted, never answered: the client times out
            await ws.close()  # acted, then the connection died before the reply
            return False
        await self._send(ws, m, seq, name, reply)
        return True

    def _authenticate(self, session: Session, b: Mapping[str, Any]) -> dict[str, Any]:
        user: SimUser | None = None
        if "apikey" in b:
            user = next((u for u in self.users.values() if u.api_key == b.get("apikey")), None)
            nonce, user_id = str(b.get("nonce") or ""), str(b.get("userid") or "")
            if (
                user is None
                or user.api_secret is None
                or str(user.user_id) != user_id
                or not hmac.compare_digest(
                    api_key_signature(user.api_secret, nonce, user_id, user.api_key or ""),
                    str(b.get("signature") or ""),
                )
            ):
                user = None
        else:
            cand = self.users.get(str(b.get("username") or ""))
            if cand is not None and hmac.compare_digest(cand.password, str(b.get("password") or "")):
                user = cand
        if user is None:
            session.user = None
            return {"Authenticated": False, "Locked": False, "errormsg": "Invalid username or password"}
        session.user = user
        session.authenticated_at = self.clock()
        self.logins += 1
        return {
            "Authenticated": True,
            "User": {
                "UserId": user.user_id,
                "UserName": user.user_name,
                "Email": "",
                "EmailVerified": True,
                "AccountId": user.account_id,
                "OMSId": user.oms_id,
                "Use2FA": False,
            },
            "Locked": False,
            "Requires2FA": False,
            "TwoFAType": None,
            "TwoFAToken": None,
            "errormsg": None,
        }

    def _account(self, session: Session, b: Mapping[str, Any]) -> tuple[int, int, SimUser]:
        user = session.user
        assert user is not None
        account = _int(b, "AccountId", default=user.account_id)
        if account != user.account_id:
            raise ApiError(ERR_NOT_AUTHORIZED, "Not Authorized")
        oms = _int(b, "OMSId", default=user.oms_id) or user.oms_id
        return account or user.account_id, oms, user

    def _call(self, session: Session, name: str, b: Mapping[str, Any]) -> Any:
        ex = self.exchange
        if name == "GetLevel1":
            oms = _int(b, "OMSId", default=1) or (session.user.oms_id if session.user else 1)
            return ex.level1(oms, b)
        if name in INSTRUMENT_CALLS:
            found = instruments_reply(name, self.master, b, self.clock())
            if found is None:
                raise ApiError(ERR_NOT_FOUND, "Resource Not Found", "Instrument not found")
            return found
        account, oms, user = self._account(session, b)
        if name == "SendOrder":
            return ex.send_order(account, oms, user, b)
        if name == "CancelOrder":
            ex.cancel(account, ex.find(account, b))
            return OK  # receipt only: the cancel completes (or is refused) later
        if name == "CancelAllOrders":
            for order in ex.open_orders(account):
                ex.cancel(account, order)
            return OK
        if name == "ModifyOrder":
            return ex.modify(account, ex.find(account, b), b)
        if name == "CancelReplaceOrder":
            return ex.cancel_replace(account, oms, user, b)
        if name == "GetOrderStatus":
            oid = _int(b, "OrderId")
            raw = [r for r in ex.foreign.get(account, []) if oid and r.get("OrderId") == oid]
            return raw[0] if raw else ex.record(account, ex.find(account, b))
        foreign = ex.foreign.get(account, [])
        if name == "GetOpenOrders":
            working = [r for r in foreign if r.get("OrderState") == "Working"]
            return [ex.record(account, o) for o in ex.open_orders(account)] + working
        if name in ("GetOrderHistory", "GetOrdersHistory"):
            recs = [ex.record(account, o) for o in ex.history(account)] + foreign
            if name == "GetOrdersHistory":
                if cid := _int(b, "ClientOrderId"):
                    recs = [r for r in recs if r.get("ClientOrderId") == cid]
                if oid := _int(b, "OrderId"):
                    recs = [r for r in recs if r.get("OrderId") == oid]
            return recs
        if name == "GetOrderHistoryByOrderId":
            return [ex.record(account, ex.find(account, b))]
        if name == "GetAccountPositions":
            return ex.positions(account, oms)
        if name == "GetAccountTrades":
            start = _int(b, "StartIndex", default=0) or 0
            count = min(_int(b, "Count", default=200) or 200, 200)
            return list(reversed(ex.trades(account)))[start : start + count]
        if name == "SubscribeAccountEvents":
            session.subscribed.add(account)
            return {"Subscribe": True}
        if name == "LogOut":
            session.user = None
            return {"result": True, "errormsg": None}
        raise ApiError(ERR_NOT_SUPPORTED, "Operation Not Supported", f"unknown function {name}", frame=True)


def default_master() -> InstrumentMaster:
    """The instrument master shipped in this package (NSE/NFO rows with ``instrument_id``)."""
    path = MASTER_FILE
    from runner.brokers.paper.master import venue_master  # plus every generated contract (paper master)

    if path.is_file():
        shipped = InstrumentMaster.load(path, broker="alphapoint")
        return venue_master("alphapoint", shipped, venue_row=apex_row, first_id=1_000)
    from runner.brokers.instruments import row_from_mapping

    rows = [
        row_from_mapping(
            {
                "exchange": "NSE",
                "symbol": "RELIANCE",
                "instrument_id": "9",
                "lot_size": "1",
                "tick_size": "0.05",
            }
        )
    ]
    return venue_master("alphapoint", rows, venue_row=apex_row, first_id=1_000)


def apex_row(row: MasterRow) -> MasterRow:
    """A generated row as this venue lists it: its product (``product1Symbol``, what positions are reported
    in) is its APEX symbol, unique in the OMS, where a trading symbol is not (NSE and BSE ``RELIANCE``)."""
    return dataclasses.replace(row, extra={**row.extra, "product_symbol": apex_symbol(row.instrument)})


@contextlib.asynccontextmanager
async def start(
    port: int = 0, faults: FaultPlan | str | None = None, **kwargs: Any
) -> AsyncIterator[AlphaPointSim]:
    plan = FaultPlan.parse(faults) if isinstance(faults, str) or faults is None else faults
    sim = AlphaPointSim(plan, **kwargs)
    await sim.start(port=port)
    try:
        yield sim
    finally:
        await sim.stop()


@contextlib.asynccontextmanager
async def bench_setup(
    accounts: int, faults: FaultPlan | str | None = None, **kwargs: Any
) -> AsyncIterator[tuple[AlphaPointSim, list[Any]]]:
    """For bench/adapters.py: one in-process simulator with ``accounts`` users and a connected adapter
    per user. Simulator credentials are throwaway values passed through the environment, as real
    ones would be."""
    import os

    from runner.accounts import Account, RateLimit
    from runner.brokers.alphapoint.client import create

    users = [
        SimUser(f"bench{i}", f"bench-pass-{i}", user_id=1000 + i, account_id=5000 + i)
        for i in range(accounts)
    ]
    master = MASTER_FILE
    async with start(faults=faults, users=users, **kwargs) as sim:
        brokers = []
        for i, u in enumerate(users):
            os.environ[f"RUNNER_AP_BENCH_USER_{i}"] = u.user_name
            os.environ[f"RUNNER_AP_BENCH_PASS_{i}"] = u.password
            account = Account(
                name=f"apbench{i}",
                broker="alphapoint",
                endpoints={"ws": sim.url},
                instruments=str(master),
                credentials={
                    "username": {"env": f"RUNNER_AP_BENCH_USER_{i}"},
                    "password": {"env": f"RUNNER_AP_BENCH_PASS_{i}"},
                },
                rate_limit=RateLimit(orders_per_second=1000, burst=1000),
            )
            broker = create(account)
            await broker.connect()
            brokers.append(broker)
        try:
            yield sim, brokers
        finally:
            for b in brokers:
                await b.close()


async def serve_forever(host: str, port: int, faults: FaultPlan, options: Mapping[str, Any]) -> None:
    master = None
    if options.get("instruments"):
        master = InstrumentMaster.load(options["instruments"], broker="alphapoint")
    sim = AlphaPointSim(
        faults, master=master, seed=int(options.get("seed", 0)), config=MatchingConfig.from_options(options)
    )
    await sim.start(host, port)
    # One machine-readable line (scripts read the port from it); the gateway path is /WSGateway/.
    url = f"ws://{host}:{sim.port}/WSGateway/"
    from runner.commands.sim import first_line

    user = next(iter(sim.users.values()))  # default user: trader / trader-pass
    account = {
        "endpoints": {"ws": url},
        "credentials": {"username": {"env": "RUNNER_AP_SIM_USERNAME"},
                        "password": {"env": "RUNNER_AP_SIM_PASSWORD"}},
    }
    env = {"RUNNER_AP_SIM_USERNAME": user.user_name, "RUNNER_AP_SIM_PASSWORD": user.password}
    settle_heap()  # the master and price paths are loaded: out of the collector's way (sim_loop)
    print(first_line("alphapoint", url, sim.port, account, env, sim.master, options), flush=True)
    try:
        await asyncio.Future()
    finally:
        await sim.stop()


__all__ = ["AlphaPointSim", "bench_setup", "serve_forever", "start"]
