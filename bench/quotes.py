"""Quote latency through each adapter to its simulator (in this process, over loopback sockets): p50/p99 of
``quotes([one])`` and of a batch (up to 50 distinct instruments), next to a bare client sending the very
same request on the same path in the same run.

    python bench/quotes.py [--calls 200] [--brokers kotak_neo,blitz,alphapoint,odin]

* kotak_neo, blitz (REST): the adapter's own quote request is captured (httpx event hook) and replayed by a
  bare ``httpx.AsyncClient`` (the ratio's baseline) and a bare ``aiohttp.ClientSession`` (for reference: the
  adapters' httpx runs on the httpx-aiohttp transport by default, runner/brokers/http.py). Kotak's simulator
  gets a 50-row NIFTY option master, so its batch is one 50-symbol call; the
  other simulators' masters hold fewer rows: their batch is every row they hold (the table says how many).
* alphapoint (WebSocket, one GetLevel1 per instrument): a bare ``websockets`` client replays the adapter's
  AuthenticateUser frame, then the GetLevel1 frames (a batch: all in flight at once, like the adapter).
* odin: quotes come from the market feed (a stream): the adapter subscribes on the first call and answers
  later calls from the last tick, so there is no request to replay; its row has no bare baseline.

The adapters' read limiters are opened wide for the run: this measures latency, not the configured read
rate (which would otherwise dominate: e.g. Kotak's default 15 reads/s is 67 ms between calls).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from adapters import _AP_SIMS, SETUPS, _clock, http_client_of

from runner.brokers.base import Broker
from runner.brokers.instruments import InstrumentMaster, MasterRow
from runner.brokers.ratelimit import RateLimiter
from runner.model import Instrument, OptionType

BATCH = 50
ALL = ("kotak_neo", "blitz", "alphapoint", "odin")


@dataclass
class Row:
    broker: str
    client: str
    size: int
    latencies: list[float] = field(default_factory=list)

    def pct(self, q: float) -> float:
        if not self.latencies:
            return math.nan
        xs = sorted(self.latencies)
        return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))] * 1000


Timed = tuple[Row, Callable[[], Awaitable[object]]]


async def timed(calls: int, *pairs: Timed) -> list[Row]:
    """Calls of every pair interleaved (A B A B ...), so drift in machine load favours none."""
    for _, fn in pairs:
        await fn()  # warm-up (login, subscribe, connection pool)
    for _ in range(calls):
        for row, fn in pairs:
            t0 = time.perf_counter()
            await fn()
            row.latencies.append(time.perf_counter() - t0)
    return [row for row, _ in pairs]


def kotak_master() -> InstrumentMaster:
    """50 NIFTY calls (strikes 23300..25750) in Kotak's spelling: one full quotes batch."""
    rows = [
        MasterRow(Instrument("NFO", "NIFTY", dt.date(2026, 12, 29), Decimal(23300 + 50 * i), OptionType.CE,
                             lot_size=75, tick_size=Decimal("0.05")),
                  str(40000 + i), f"NIFTY26DEC{23300 + 50 * i}CE")
        for i in range(BATCH)
    ]
    return InstrumentMaster(rows, broker="kotak_neo")


@contextlib.asynccontextmanager
async def kotak_50() -> AsyncIterator[list[Broker]]:
    from runner.brokers.kotak_neo.sim import bench_brokers, start

    clock = _clock()
    async with start(clock=clock, master=kotak_master()) as sim:
        brokers: list[Broker] = await bench_brokers(sim, 1, clock=clock)
        try:
            yield brokers
        finally:
            for b in brokers:
                await b.close()


def setup(broker: str) -> contextlib.AbstractAsyncContextManager[list[Broker]]:
    return kotak_50() if broker == "kotak_neo" else SETUPS[broker](1, None)


async def rest_capture(broker: Broker, instruments: list[Instrument]) -> httpx.Request:
    client = http_client_of(broker)
    seen: list[httpx.Request] = []

    async def hook(req: httpx.Request) -> None:
        await req.aread()
        seen.append(req)

    hooks = client.event_hooks
    client.event_hooks = {**hooks, "request": [*hooks.get("request", []), hook]}
    try:
        got = await broker.quotes(instruments)  # type: ignore[attr-defined]
    finally:
        client.event_hooks = hooks
    if len(got) != len(instruments) or len(seen) != 1:
        raise SystemExit(f"{broker.name}: {len(got)} of {len(instruments)} quoted in {len(seen)} requests")
    return seen[-1]


async def bare_rest(req: httpx.Request) -> Callable[[], Awaitable[object]]:
    skip = {"host", "content-length", "transfer-encoding", "connection"}
    headers = {k: v for k, v in req.headers.items() if k.lower() not in skip}
    client = httpx.AsyncClient(trust_env=False)

    async def call() -> object:
        resp = await client.request(req.method, str(req.url), headers=headers, content=req.content)
        resp.raise_for_status()
        return resp.content

    call.client = client  # type: ignore[attr-defined]
    return call


def bare_aiohttp(req: httpx.Request, session: aiohttp.ClientSession) -> Callable[[], Awaitable[object]]:
    skip = {"host", "content-length", "transfer-encoding", "connection"}
    headers = {k: v for k, v in req.headers.items() if k.lower() not in skip}

    async def call() -> object:
        async with session.request(req.method, str(req.url), headers=headers, data=req.content) as resp:
            resp.raise_for_status()
            return await resp.read()

    return call


async def bare_ap(sim: Any, instruments: int) -> tuple[Callable[[], Awaitable[object]], Any]:
    from websockets.asyncio.client import connect

    auth = [f for f in sim.raw_frames if f.get("n") == "AuthenticateUser"][-1]
    level1 = [f for f in sim.raw_frames if f.get("n") == "GetLevel1"][-instruments:]
    ws = await connect(sim.url, compression=None)
    seq = iter(range(2, 10**9, 2))

    async def send_all(frames: list[dict[str, Any]]) -> None:
        ids = set()
        for f in frames:
            i = next(seq)
            ids.add(i)
            await ws.send(json.dumps({**f, "i": i}))
        while ids:
            reply = json.loads(await ws.recv())
            if reply.get("m") in (1, 5):
                ids.discard(reply.get("i"))

    await send_all([auth])

    async def call() -> object:
        await send_all(level1)
        return None

    return call, ws


async def bench_broker(name: str, calls: int) -> list[Row]:
    rows: list[Row] = []
    async with setup(name) as brokers:
        broker = brokers[0]
        broker.read_limiter = RateLimiter(1e6, 10**6)  # type: ignore[attr-defined]
        master: InstrumentMaster = broker.master  # type: ignore[attr-defined]
        instruments = [r.instrument for r in master][:BATCH]
        quotes = broker.quotes  # type: ignore[attr-defined]
        for size in (1, len(instruments)):
            batch = instruments[:size]
            adapter: Timed = (Row(name, "adapter", size), lambda b=batch: quotes(b))
            if name in ("kotak_neo", "blitz"):
                req = await rest_capture(broker, batch)
                call = await bare_rest(req)
                session = aiohttp.ClientSession()
                try:
                    rows += await timed(calls, adapter, (Row(name, "bare httpx", size), call),
                                        (Row(name, "bare aiohttp", size), bare_aiohttp(req, session)))
                finally:
                    await call.client.aclose()  # type: ignore[attr-defined]
                    await session.close()
            elif name == "alphapoint":
                await quotes(batch)  # the frames to replay are the last ones it sent
                call, ws = await bare_ap(_AP_SIMS[id(brokers[0])], size)
                try:
                    rows += await timed(calls, adapter, (Row(name, "bare websockets", size), call))
                finally:
                    await ws.close()
            else:
                rows += await timed(calls, adapter)
    return rows


def table(rows: list[Row]) -> str:
    base = {(r.broker, r.size): r for r in rows if r.client in ("bare httpx", "bare websockets")}
    out = ["| broker | client | instruments | calls | p50 ms | p99 ms | p50 vs bare | p99 vs bare |",
           "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        b = base.get((r.broker, r.size))
        r50 = f"{r.pct(0.5) / b.pct(0.5):.2f}x" if b and r is not b else "-"
        r99 = f"{r.pct(0.99) / b.pct(0.99):.2f}x" if b and r is not b else "-"
        out.append(f"| {r.broker} | {r.client} | {r.size} | {len(r.latencies)} | {r.pct(0.5):.2f} "
                   f"| {r.pct(0.99):.2f} | {r50} | {r99} |")
    return "\n".join(out)


async def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=200, help="timed calls per row (after one warm-up)")
    p.add_argument("--brokers", default=",".join(ALL))
    args = p.parse_args(argv)
    rows: list[Row] = []
    for name in args.brokers.split(","):
        rows += await bench_broker(name, args.calls)
    print(table(rows))


if __name__ == "__main__":
    asyncio.run(main())
