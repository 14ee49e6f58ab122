"""Orders/s and p50/p99 latency per order through each adapter to its simulator (in this process, over
loopback sockets), at 1, 10 and 100 accounts placing orders concurrently, next to bare clients replaying
the very same place request in the same run.

    python bench/adapters.py [--orders 100] [--rounds 2] [--concurrency 1,10,100]
                             [--brokers blitz,kotak_neo,odin,alphapoint]

* REST brokers (blitz, kotak_neo, odin): the adapter on the httpx default transport and on the
  ``httpx-aiohttp`` transport (runner/brokers/http.py ``make_client(transport=...)``); baselines are a bare
  ``httpx.AsyncClient`` and a bare ``aiohttp.ClientSession`` replaying the adapter's own captured place
  request (method, URL, auth headers, body) with a fresh client id each time.
* AlphaPoint (WebSocket): the adapter against a bare ``websockets`` client replaying the captured
  AuthenticateUser and SendOrder frames.

Each account is one adapter (own session, own connection pool); an account places its orders one after
another, accounts run concurrently. Orders are MARKET buys of 1 RELIANCE (they fill, so the book does
not grow). The simulator's clock is virtual and frozen at 10:00 IST (market hours, same second).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import itertools
import json
import logging
import math
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import httpx

from runner.brokers.base import Broker
from runner.clock import VirtualClock
from runner.ids import numeric_id
from runner.model import Instrument, OrderRequest, OrderType, Product, Side

START = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30)))
RELIANCE = Instrument("NSE", "RELIANCE")
REST = ("blitz", "kotak_neo", "odin")
ALL = (*REST, "alphapoint")
CID_LEN = 10  # ODIN's order_identifier holds <= 10 chars verbatim; every id here has exactly 10
_ids = itertools.count(1)


ISSUED: defaultdict[str, list[str]] = defaultdict(list)  # tag -> client ids handed out


def new_cid(tag: str) -> str:
    cid = f"{tag}{next(_ids):0{CID_LEN - len(tag)}d}"
    ISSUED[tag].append(cid)
    return cid


def request(cid: str) -> OrderRequest:
    return OrderRequest(cid, RELIANCE, Side.BUY, 1, OrderType.MARKET, product=Product.MIS)


# --- measuring ------------------------------------------------------------------------------------------


@dataclass
class Stats:
    broker: str
    client: str
    accounts: int
    latencies: list[float] = field(default_factory=list)  # seconds per successful order
    errors: int = 0
    wall: float = 0.0

    @property
    def orders(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.orders / self.wall if self.wall else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies:
            return math.nan
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))] * 1000


PlaceFn = Callable[[str], Awaitable[bool]]  # place one order with this client id; False = refused


async def measure(stats: Stats, workers: Sequence[PlaceFn], per_account: int, tag: str) -> Stats:
    async def worker(place: PlaceFn) -> None:
        for _ in range(per_account):
            t0 = time.perf_counter()
            try:
                ok = await place(new_cid(tag))
            except Exception:  # a bench counts failures, it does not stop on them
                ok = False
            if ok:
                stats.latencies.append(time.perf_counter() - t0)
            else:
                stats.errors += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in workers))
    stats.wall = time.perf_counter() - t0
    return stats


def adapter_place(broker: Broker) -> PlaceFn:
    async def place(cid: str) -> bool:
        order = await broker.place(request(cid))
        return order.client_order_id == cid

    return place


# --- capturing the adapter's own place request ---------------------------------------------------------


@dataclass(frozen=True)
class Template:
    """One place request exactly as the adapter sent it; ``cid`` is replaced per replay."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    cid: str

    def body_for(self, cid: str) -> bytes:
        return self.body.replace(self.cid.encode(), cid.encode())


def http_client_of(broker: Broker) -> httpx.AsyncClient:
    for value in vars(broker).values():
        if isinstance(value, httpx.AsyncClient):
            return value
    raise LookupError(f"{broker.name}: no httpx.AsyncClient on the adapter (REST brokers hold one)")


async def capture_rest(broker: Broker) -> Template:
    """Place one order through the adapter (the warm-up) and keep the request that carried our id."""
    client = http_client_of(broker)
    seen: list[httpx.Request] = []

    async def hook(req: httpx.Request) -> None:
        await req.aread()
        seen.append(req)

    cid = new_cid("w")
    hooks = client.event_hooks
    client.event_hooks = {**hooks, "request": [*hooks.get("request", []), hook]}
    try:
        await broker.place(request(cid))
    finally:
        client.event_hooks = hooks
    sent = [r for r in seen if r.method != "GET" and cid.encode() in r.content]
    if not sent:
        raise LookupError(f"{broker.name}: the place request does not carry the client id verbatim")
    r = sent[-1]
    skip = {"host", "content-length", "transfer-encoding", "connection"}
    headers = {k: v for k, v in r.headers.items() if k.lower() not in skip}
    return Template(r.method, str(r.url), headers, r.content, cid)


def raw_httpx(t: Template, client: httpx.AsyncClient) -> PlaceFn:
    async def place(cid: str) -> bool:
        resp = await client.request(t.method, t.url, headers=t.headers, content=t.body_for(cid))
        return resp.status_code < 400

    return place


def raw_aiohttp(t: Template, session: aiohttp.ClientSession) -> PlaceFn:
    async def place(cid: str) -> bool:
        async with session.request(t.method, t.url, headers=t.headers, data=t.body_for(cid)) as resp:
            await resp.read()
            return resp.status < 400

    return place


# --- simulators with N connected adapters ---------------------------------------------------------------


Setup = contextlib.AbstractAsyncContextManager[list[Broker]]


def _clock() -> VirtualClock:
    return VirtualClock(START)


@contextlib.asynccontextmanager
async def blitz_brokers(n: int, transport: str | None) -> AsyncIterator[list[Broker]]:
    from runner.brokers.blitz.sim import bench

    async with bench(n, transport=transport, clock=_clock()) as (_sim, brokers):
        yield list(brokers)


@contextlib.asynccontextmanager
async def kotak_brokers(n: int, transport: str | None) -> AsyncIterator[list[Broker]]:
    from runner.brokers.kotak_neo.sim import bench_brokers, default_master, start

    clock = _clock()
    async with start(clock=clock, master=default_master()) as sim:
        brokers: list[Broker] = await bench_brokers(sim, n, clock=clock, transport=transport)
        try:
            yield brokers
        finally:
            for b in brokers:
                await b.close()


@contextlib.asynccontextmanager
async def odin_brokers(n: int, transport: str | None) -> AsyncIterator[list[Broker]]:
    from runner.brokers.odin.sim_bench import connected

    async with connected(n, transport=transport, clock=_clock()) as (_sim, brokers):
        yield list(brokers)


@contextlib.asynccontextmanager
async def alphapoint_brokers(n: int, transport: str | None) -> AsyncIterator[list[Broker]]:
    from runner.brokers.alphapoint.sim import bench_setup

    async with bench_setup(n, clock=_clock().now) as (sim, brokers):
        _AP_SIMS[id(brokers[0])] = sim
        try:
            yield list(brokers)
        finally:
            _AP_SIMS.pop(id(brokers[0]), None)


_AP_SIMS: dict[int, Any] = {}
SETUPS: dict[str, Callable[[int, str | None], Setup]] = {
    "blitz": blitz_brokers,
    "kotak_neo": kotak_brokers,
    "odin": odin_brokers,
    "alphapoint": alphapoint_brokers,
}


# --- AlphaPoint: bare websockets client replaying the adapter's frames ------------------------------------


async def ap_templates(sim: Any, broker: Broker) -> tuple[dict[str, Any], dict[str, Any]]:
    """The AuthenticateUser frame the adapter sent for this account and one SendOrder frame (warm-up)."""
    before = len(sim.raw_frames)
    cid = new_cid("w")
    await broker.place(request(cid))
    sends = [f for f in sim.raw_frames[before:] if f.get("n") == "SendOrder"]
    send = sends[-1]
    account_id = json.loads(send["o"])["AccountId"]
    user = sim.user_for_account(account_id)
    auths = [f for f in sim.raw_frames if f.get("n") == "AuthenticateUser"
             and json.loads(f["o"]).get("UserName") == user.user_name]
    return auths[-1], send


async def raw_ws(url: str, auth: dict[str, Any], send: dict[str, Any], conns: list[Any]) -> PlaceFn:
    """A logged-in bare connection (connect and login happen before timing starts)."""
    from websockets.asyncio.client import connect

    seq = itertools.count(2, 2)
    ws = await connect(url, compression=None)
    conns.append(ws)

    async def call(frame: dict[str, Any]) -> dict[str, Any]:
        await ws.send(json.dumps(frame))
        while True:
            reply: dict[str, Any] = json.loads(await ws.recv())
            if reply.get("m") in (1, 5) and reply.get("i") == frame["i"]:
                return reply

    await call({**auth, "i": next(seq)})

    async def place(cid: str) -> bool:
        payload = json.loads(send["o"])
        payload["ClientOrderId"] = numeric_id(cid)
        reply = await call({**send, "i": next(seq), "o": json.dumps(payload)})
        return reply.get("m") == 1 and json.loads(reply["o"]).get("status") == "Accepted"

    return place


# --- one table cell at a time -----------------------------------------------------------------------------


async def cell(broker: str, n: int, orders: int, round_no: int) -> list[Stats]:
    """One (broker, accounts) cell: the adapter per transport, each on a fresh simulator, and the bare
    clients against the first one. Odd rounds run the transports in reverse order (ABBA over rounds), so
    drift in machine load does not favour either."""
    per = max(2, math.ceil(orders / n))
    out: list[Stats] = []
    transports: list[str | None] = ["httpx", "aiohttp"] if broker in REST else [None]
    if round_no % 2:
        transports.reverse()
    for transport in transports:
        async with SETUPS[broker](n, transport) as brokers:
            if broker in REST:
                templates = [await capture_rest(b) for b in brokers]  # also the warm-up
            else:
                sim = _AP_SIMS[id(brokers[0])]
                frames = [await ap_templates(sim, b) for b in brokers]
            label = f"adapter ({transport})" if transport else "adapter"
            out.append(await measure(Stats(broker, label, n), [adapter_place(b) for b in brokers], per, "a"))
            if transport == "httpx":  # the bare clients against the same simulator
                out += await bare_http(broker, n, templates, per)
                await check_visible(brokers[0], ("h", "o"), per)
            elif transport is None:
                out.append(await bare_ws(broker, n, sim, frames, per))
    return out


async def bare_http(broker: str, n: int, templates: list[Template], per: int) -> list[Stats]:
    from runner.brokers.http import default_ssl_context

    out: list[Stats] = []
    clients = [httpx.AsyncClient(trust_env=False, verify=default_ssl_context()) for _ in templates]
    try:
        workers = [raw_httpx(t, c) for t, c in zip(templates, clients, strict=True)]
        out.append(await measure(Stats(broker, "bare httpx", n), workers, per, "h"))
    finally:
        for c in clients:
            await c.aclose()
    sessions = [aiohttp.ClientSession() for _ in templates]
    try:
        workers = [raw_aiohttp(t, s) for t, s in zip(templates, sessions, strict=True)]
        out.append(await measure(Stats(broker, "bare aiohttp", n), workers, per, "o"))
    finally:
        for s in sessions:
            await s.close()
    return out


async def bare_ws(broker: str, n: int, sim: Any, frames: list[tuple[dict[str, Any], dict[str, Any]]],
                  per: int) -> Stats:
    conns: list[Any] = []
    try:
        workers = [await raw_ws(sim.url, a, s, conns) for a, s in frames]
        first = len(ISSUED["o"])
        stats = await measure(Stats(broker, "bare websockets", n), workers, per, "o")
    finally:
        for ws in conns:
            await ws.close()
    # The replayed orders really were placed, once each (the adapter cannot name ids it did not send).
    placed = Counter(m.client_numeric for oid, m in sim.exchange.meta.items() if m.orig_order_id == oid)
    ours = [numeric_id(c) for c in ISSUED["o"][first:]]
    if any(placed[x] != 1 for x in ours):
        print(f"warning: {broker}: bare-client orders missing or duplicated in the OMS", file=sys.stderr)
    return stats


async def check_visible(broker: Broker, tags: Sequence[str], per: int) -> None:
    """The replayed orders really were placed: the adapter reads them back from its account."""
    cids = {o.client_order_id for o in await broker.orders()}
    for tag in tags:
        got = sum(1 for c in ISSUED[tag] if c in cids)  # account 0 placed ``per`` of them on this sim
        if got != per:
            print(f"warning: {broker.name}: {got} of {per} bare-client orders ({tag}) are in the book",
                  file=sys.stderr)


def merge(rows: list[Stats]) -> list[Stats]:
    """Rounds of one cell into one row per client (latencies pooled, wall times added)."""
    out: dict[tuple[str, str, int], Stats] = {}
    for s in rows:
        m = out.setdefault((s.broker, s.client, s.accounts), Stats(s.broker, s.client, s.accounts))
        m.latencies += s.latencies
        m.errors += s.errors
        m.wall += s.wall
    return list(out.values())


# --- report -----------------------------------------------------------------------------------------------


def table(rows: list[Stats]) -> str:
    base = {(s.broker, s.accounts): s.rate for s in rows if s.client.startswith("bare aiohttp")
            or s.client == "bare websockets"}
    lines = ["| broker | client | accounts | orders | orders/s | p50 ms | p99 ms | errors | vs bare |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in rows:
        ref = base.get((s.broker, s.accounts))
        ratio = f"{s.rate / ref:.2f}x" if ref else "-"
        lines.append(f"| {s.broker} | {s.client} | {s.accounts} | {s.orders} | {s.rate:,.0f} "
                     f"| {s.pct(0.5):.2f} | {s.pct(0.99):.2f} | {s.errors} | {ratio} |")
    return "\n".join(lines)


def transport_summary(rows: list[Stats]) -> str:
    by = {(s.broker, s.client, s.accounts): s for s in rows}
    lines = ["| broker | accounts | aiohttp/httpx orders/s | httpx p99 ms | aiohttp p99 ms |",
             "|---|---:|---:|---:|---:|"]
    wins: list[float] = []
    for (broker, client, n), s in by.items():
        if client != "adapter (httpx)":
            continue
        a = by.get((broker, "adapter (aiohttp)", n))
        if a is None or not s.rate:
            continue
        wins.append(a.rate / s.rate)
        lines.append(f"| {broker} | {n} | {a.rate / s.rate:.2f}x | {s.pct(0.99):.2f} | {a.pct(0.99):.2f} |")
    if wins:
        geo = math.exp(sum(map(math.log, wins)) / len(wins))
        lines.append(f"\ngeometric mean aiohttp/httpx throughput: {geo:.2f}x "
                     f"({'httpx-aiohttp' if geo > 1 else 'httpx default'} transport faster)")
    return "\n".join(lines)


async def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--orders", type=int, default=100, help="orders per client and round, split across "
                   "accounts (at least 2 per account)")
    p.add_argument("--rounds", type=int, default=2, help="rounds per cell; odd rounds reverse the transports")
    p.add_argument("--concurrency", default="1,10,100", help="account counts, comma separated")
    p.add_argument("--brokers", default=",".join(ALL))
    args = p.parse_args(argv)
    logging.disable(logging.WARNING)  # adapters log per order at INFO; keep the bench quiet
    rows: list[Stats] = []
    t0 = time.perf_counter()
    for broker in args.brokers.split(","):
        for n in (int(x) for x in args.concurrency.split(",")):
            t1 = time.perf_counter()
            runs: list[Stats] = []
            for r in range(args.rounds):
                runs += await cell(broker, n, args.orders, r)
            rows += merge(runs)
            print(f"{broker} x{n}: {time.perf_counter() - t1:.1f}s", file=sys.stderr)
    print(table(rows))
    print()
    print(transport_summary(rows))
    print(f"\n{sum(s.orders for s in rows)} orders in {time.perf_counter() - t0:.1f}s "
          f"(python {sys.version.split()[0]}, httpx {httpx.__version__}, aiohttp {aiohttp.__version__})")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
