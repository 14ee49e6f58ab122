"""Paper broker cost per order, against the bare matching engine measured in the same process.

    python bench/paper.py [N]

Prints CPU microseconds per market place (each place also fills the previous order on its matching
pass, so a fill, a position update and the version bump are included) for the in-memory matching engine
(baseline), the paper broker on in-memory SQLite, and on a SQLite file; then a square-off of 1,000
positions over 100 paper accounts on one file.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

from runner.brokers.paper.broker import PaperBroker
from runner.brokers.paper.matching import MatchingEngine
from runner.clock import VirtualClock
from runner.model import Instrument, OrderRequest, Side

START = dt.datetime(2026, 3, 2, 4, 0, tzinfo=dt.UTC)
REL = Instrument("NSE", "RELIANCE")


def bare(n: int) -> float:
    eng, clock = MatchingEngine(), VirtualClock(START)
    t = time.process_time()
    for i in range(n):
        eng.place("A", OrderRequest(f"b{i}", REL, Side.BUY if i % 2 else Side.SELL, 1), clock.now())
        clock.advance(0.01)
    return (time.process_time() - t) / n * 1e6


async def paper(n: int, url: str) -> float:
    clock = VirtualClock(START)
    b = PaperBroker("bench", db_url=url, clock=clock)
    await b.connect()
    t = time.process_time()
    for i in range(n):
        await b.place(OrderRequest(f"p{i}", REL, Side.BUY if i % 2 else Side.SELL, 1))
        clock.advance(0.01)
    return (time.process_time() - t) / n * 1e6


async def square_off(url: str, accounts: int = 100, per_account: int = 10) -> tuple[float, float]:
    clock = VirtualClock(START)
    brokers = [PaperBroker(f"acct{a}", db_url=url, clock=clock) for a in range(accounts)]
    insts = [Instrument("NSE", f"SYM{k}") for k in range(per_account)]
    for b in brokers:
        for k, inst in enumerate(insts):
            await b.place(OrderRequest(f"in{k}", inst, Side.BUY, 1 + k))
    clock.advance(1)
    t0, c0 = time.perf_counter(), time.process_time()
    for b in brokers:  # cancel nothing open; close every net position, then verify flat
        for p in await b.positions():
            if p.quantity:
                side = Side.SELL if p.quantity > 0 else Side.BUY
                await b.place(OrderRequest(f"out-{p.instrument.key}", p.instrument, side, abs(p.quantity)))
    for b in brokers:
        assert all(p.quantity == 0 for p in await b.positions())
    return time.perf_counter() - t0, time.process_time() - c0


async def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    base = bare(n)
    mem = await paper(n, "sqlite://")
    with tempfile.TemporaryDirectory() as tmp:
        disk = await paper(n, f"sqlite:///{Path(tmp) / 'bench.db'}")
        wall, cpu = await square_off(f"sqlite:///{Path(tmp) / 'sq.db'}")
    print(f"matching engine place (baseline): {base:8.1f} us CPU")
    print(f"paper place, in-memory sqlite:    {mem:8.1f} us CPU  ({mem / base:.1f}x baseline)")
    print(f"paper place, sqlite file (WAL):   {disk:8.1f} us CPU  ({disk / base:.1f}x baseline)")
    print(f"square-off 1,000 positions / 100 accounts (sqlite file): {wall * 1000:.0f} ms wall, "
          f"{cpu * 1000:.0f} ms CPU")


if __name__ == "__main__":
    asyncio.run(main())
