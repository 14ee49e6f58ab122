"""Square-off of 1,000 positions over 100 accounts through the Kotak Neo simulator (in this process, over
loopback sockets), at the accounts' configured order rate, against the floor that rate sets.

    python bench/square_off_fleet.py [--accounts 100] [--positions 10] [--open 2]

Each account (its own Kotak user and adapter, ``rate_limit`` = the default 8 orders/s, burst 1) holds
``--positions`` MIS positions in distinct NSE equities and ``--open`` resting LIMIT buys far below the
market. All accounts then run the same playbook concurrently through the engine (``runner.engine.core.
execute``, one SQLite journal): a ``square_off`` step that cancels the open orders, closes every position
at MARKET and verifies the account flat.

Cancels take a token from the same bucket as orders (``KotakNeoBroker._write``: place, modify and cancel
all acquire ``limiter`` with the key (account, segment)), so an account sends ``open + positions`` rate-
limited requests, and the rate sets a floor of (requests per account - burst) / rate seconds. Every
position here is on NSE, so one bucket per account (``per_segment``: NFO would be a bucket of its own).
Target: <= 1.3x that floor. Setup orders go through a wide-open limiter and are not timed.

The simulator runs in its own process(es) (``--sims N``; ``--in-process`` to share this one), and the same
cancels and closes are first sent straight through the adapters (same limiter, no engine, no journal) as
the baseline: with the CPU this process spent in each phase, that separates the engine's cost from the
simulator's (on 2 shared cores the simulator, not the engine, is what stretches 100 accounts).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import datetime as dt
import io
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runner import logs
from runner.accounts import RateLimit
from runner.brokers.instruments import InstrumentMaster, MasterRow
from runner.brokers.kotak_neo.client import create
from runner.brokers.kotak_neo.sim import account_for, bench_brokers, start
from runner.brokers.ratelimit import RateLimiter
from runner.clock import VirtualClock
from runner.engine.core import RunOptions, execute
from runner.journal.db import make_engine
from runner.journal.store import Journal
from runner.model import Instrument, OrderRequest, OrderType, Product, Side
from runner.playbook.models import Playbook
from runner.playbook.yamlload import load_yaml

START = dt.datetime(2026, 3, 2, 10, 0, tzinfo=dt.timezone(dt.timedelta(hours=5, minutes=30)))
TICK = Decimal("0.05")
SQUARE_OFF = """version: 1
name: eod-fleet
timezone: Asia/Kolkata
steps:
  - {kind: square_off, id: sq, cancel_open_orders: true, filter: {product: [MIS]}, verify_timeout: 60s}
"""


def master(n: int) -> InstrumentMaster:
    """``n`` NSE equities in Kotak's spelling (the simulator prices any symbol it does not know)."""
    rows = [MasterRow(Instrument("NSE", f"FLEET{i:02d}", lot_size=1, tick_size=TICK),
                      str(50000 + i), f"FLEET{i:02d}-EQ") for i in range(n)]
    return InstrumentMaster(rows, broker="kotak_neo")


def sim_process(conn: Connection, names: list[str], positions: int, rate: float, burst: int) -> None:
    """The simulator in a process of its own, as a broker is: its CPU is not the runner's. Registers one
    user per account and sends back (account, env) pairs; serves until the parent says stop."""
    async def serve() -> None:
        async with start(clock=VirtualClock(START), master=master(positions)) as sim:
            conn.send([account_for(sim, name, orders_per_second=rate, burst=burst) for name in names])
            await asyncio.get_running_loop().run_in_executor(None, conn.recv)

    asyncio.run(serve())


@contextlib.asynccontextmanager
async def connected(args: argparse.Namespace, configured: RateLimit,
                    clock: VirtualClock) -> AsyncIterator[list[Any]]:
    """``args.accounts`` connected Kotak adapters at the configured rate, the simulator in-process
    (``--in-process``) or in a child process (default)."""
    rate, burst = configured.orders_per_second, configured.burst
    if args.in_process:
        async with start(clock=clock, master=master(args.positions)) as sim:
            brokers = await bench_brokers(sim, args.accounts, clock=clock, orders_per_second=rate,
                                          burst=burst)
            try:
                yield brokers
            finally:
                for b in brokers:
                    await b.close()
        return
    ctx = multiprocessing.get_context("spawn")
    sims = []  # account i is served by simulator i % --sims (a real broker is not one Python process)
    for k in range(args.sims):
        parent, child = ctx.Pipe()
        names = [f"fleet{i:03d}" for i in range(k, args.accounts, args.sims)]
        proc = ctx.Process(target=sim_process, args=(child, names, args.positions, rate, burst), daemon=True)
        proc.start()
        sims.append((parent, proc))
    brokers = []
    try:
        for parent, _ in sims:
            for account, env in await asyncio.get_running_loop().run_in_executor(None, parent.recv):
                os.environ.update(env)  # bench only: the credentials the accounts file would reference
                broker = create(account, master=master(args.positions), clock=clock)
                await broker.connect()
                brokers.append(broker)
        yield brokers
    finally:
        for b in brokers:
            await b.close()
        for parent, proc in sims:
            parent.send("stop")
            proc.join(10)


async def open_positions(brokers: list[Any]) -> int:
    n = 0
    for b in brokers:
        n += sum(1 for p in await b.positions() if p.quantity)
    return n


async def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accounts", type=int, default=100)
    ap.add_argument("--positions", type=int, default=10, help="positions per account")
    ap.add_argument("--open", type=int, default=2, help="resting orders per account (cancelled first)")
    ap.add_argument("--in-process", action="store_true",
                    help="run the simulator in this process (its CPU then counts against the runner)")
    ap.add_argument("--sims", type=int, default=1, help="simulator processes the accounts are spread over")
    ap.add_argument("--profile", metavar="PATH", help="write a cProfile of the timed square-off here")
    args = ap.parse_args(argv)
    logs.configure(json=True, stream=io.StringIO(), force=True)  # as bench/engine.py: logs cost, not shown
    configured = RateLimit()  # the accounts' default: what a user gets without a rate_limit entry
    clock = VirtualClock(START)
    books = master(args.positions)
    instruments = [r.instrument for r in books]
    async with connected(args, configured, clock) as brokers:
        # Setup (untimed): positions and resting orders through a wide-open limiter.
        async def setup(i: int, b: Any, tag: str) -> None:
            limiter = b.limiter
            b.limiter = RateLimiter(1e6, 10**6)
            for k, ins in enumerate(instruments):
                await b.place(OrderRequest(f"{tag}p{i:03d}x{k:03d}", ins, Side.BUY, 10, OrderType.MARKET,
                                           product=Product.MIS))
            for k in range(args.open):
                ins = instruments[k % len(instruments)]
                price = (await b.ltp(ins) * Decimal("0.9") / TICK).to_integral_value() * TICK
                await b.place(OrderRequest(f"{tag}o{i:03d}x{k:03d}", ins, Side.BUY, 1, OrderType.LIMIT,
                                           price=price, product=Product.MIS))
            b.limiter = limiter

        async def fresh_book(tag: str) -> tuple[int, int]:
            await asyncio.gather(*(setup(i, b, tag) for i, b in enumerate(brokers)))
            for b in brokers:  # each run starts with a full bucket, as an account idle before the close
                b.limiter = RateLimiter(configured.orders_per_second, configured.burst)
            resting = 0
            for b in brokers:
                resting += sum(1 for o in await b.orders() if not o.status.is_terminal)
            return await open_positions(brokers), resting

        # Baseline: the same requests straight through the adapters (same limiter), no engine/journal.
        async def bare(i: int, b: Any) -> None:
            for o in [o for o in await b.orders() if not o.status.is_terminal]:
                await b.cancel(o)
            for k, p in enumerate([p for p in await b.positions() if p.quantity]):
                await b.place(OrderRequest(f"bc{i:03d}x{k:03d}", p.instrument, Side.SELL, p.quantity,
                                           OrderType.MARKET, product=Product.MIS))

        await fresh_book("b")
        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(bare(i, b) for i, b in enumerate(brokers)))
        bare_wall, bare_cpu = time.perf_counter() - t0, time.process_time() - cpu0
        bare_left = await open_positions(brokers)

        held, resting = await fresh_book("r")
        with tempfile.TemporaryDirectory() as tmp:
            journal = Journal(engine=make_engine(f"sqlite:///{tmp}/fleet.db"))
            pb = Playbook.model_validate(load_yaml(SQUARE_OFF).value)

            async def run_one(b: Any) -> str:
                report = await execute(pb, b, journal, clock, account=b.account.name,
                                       options=RunOptions(scheduled_for=START, run_key=f"fleet-{id(b)}"))
                return str(report.status.value)

            prof = cProfile.Profile() if args.profile else None
            if prof:
                prof.enable()
            cpu0, t0 = time.process_time(), time.perf_counter()
            statuses = await asyncio.gather(*(run_one(b) for b in brokers))
            wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
            if prof:
                prof.disable()
                prof.dump_stats(args.profile)
        left = await open_positions(brokers)
    per_account = args.positions + args.open
    floor = (per_account - configured.burst) / configured.orders_per_second
    print(f"square-off of {held} positions + {resting} resting orders over {args.accounts} Kotak accounts "
          f"(simulator, {configured.orders_per_second:g} orders/s burst {configured.burst}, cancels share "
          f"the bucket):")
    print(f"  {statuses.count('succeeded')}/{args.accounts} succeeded, {left} positions left open")
    print(f"  floor ({per_account} requests/account - burst) / rate = {floor:.3f} s")
    print(f"  bare adapter calls  {bare_wall:7.3f} s  ratio to floor {bare_wall / floor:5.2f}x  "
          f"(cpu {bare_cpu:.2f} s in this process; {bare_left} left open)")
    print(f"  runner square_off   {wall:7.3f} s  ratio to floor {wall / floor:5.2f}x  (cpu {cpu:.2f} s; "
          f"target <= 1.3x)  vs bare {wall / bare_wall:.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
