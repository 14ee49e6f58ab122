"""Engine figures, each next to a baseline measured in the same process.

1. Runner overhead per order: ``Gateway.place`` (risk check, intent committed before the request,
   ``order_send`` log line, broker call journaled with secrets redacted, status transition recorded, all
   in two commits) vs a bare ``PaperBroker.place``. Target: p50 added <= 0.5 ms. Durability: SQLite WAL
   with synchronous=NORMAL, so a commit survives a killed process, not a power loss.
2. Square-off of 1,000 positions spread over 100 paper accounts (10 each), all accounts concurrently,
   vs the bare paper calls for the same closes.
3. Optional: ``--crash N`` runs N more SIGKILL/restart iterations of tests/helpers/crash.py.

Usage: python bench/engine.py [--orders 2000] [--accounts 100] [--crash 0]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import statistics
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from runner import logs
from runner.brokers.paper.broker import PaperBroker
from runner.brokers.paper.price_paths import StepPath
from runner.clock import VirtualClock
from runner.engine.core import RunOptions, execute
from runner.engine.gateway import Gateway
from runner.engine.risk import RiskChecker
from runner.journal.db import make_engine
from runner.journal.store import Journal
from runner.model import Instrument, OrderRequest, OrderType, Side
from runner.playbook.models import Playbook
from runner.playbook.yamlload import load_yaml

IST = ZoneInfo("Asia/Kolkata")
START = dt.datetime(2026, 3, 2, 9, 20, tzinfo=IST)
SYMBOLS = [Instrument("NSE", f"SYM{i}") for i in range(10)]


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def prices() -> StepPath:
    path = StepPath()
    for ins in SYMBOLS:
        path.set(ins, Decimal(1000), START - dt.timedelta(hours=1))
    return path


async def per_order(tmp: str, n: int) -> None:
    engine = make_engine(f"sqlite:///{tmp}/orders.db")
    clock = VirtualClock(START)
    bare = PaperBroker("bare", engine=engine, clock=clock, prices=prices())
    ran = PaperBroker("ran", engine=engine, clock=clock, prices=prices())
    journal = Journal(engine=engine)
    journal.start_run("bench", playbook="bench", account="ran", scheduled_for=START, mode="bench", now=START)
    pb = Playbook.model_validate(
        load_yaml("version: 1\nname: bench\ntimezone: Asia/Kolkata\nsteps:\n  - {kind: wait, id: w}\n").value
    )
    gw = Gateway(
        broker=ran,
        journal=journal,
        clock=clock,
        run_id="bench",
        account="ran",
        risk=RiskChecker(pb),
        step_id="p",
        log=logs.get_logger(run="bench", playbook="bench", account="ran").bind(step="p"),  # as the engine
    )
    await bare.connect()
    await ran.connect()

    # LIMIT orders resting below the market: the same book work in both paths, no fills to skew it.
    def req(i: int, prefix: str) -> OrderRequest:
        return OrderRequest(f"{prefix}{i}", SYMBOLS[i % 10], Side.BUY, 1, OrderType.LIMIT, price=Decimal(900))

    for i in range(50):  # warm both paths
        await bare.place(req(i, "w"))
        await gw.place(req(i, "-"), slot="warm", leg=i)
    base, full = [], []
    for i in range(n):  # interleaved so machine noise hits both alike
        t0 = time.perf_counter()
        await bare.place(req(i, "b"))
        t1 = time.perf_counter()
        await gw.place(req(i, "-"), slot="s", leg=i)
        t2 = time.perf_counter()
        base.append((t1 - t0) * 1e3)
        full.append((t2 - t1) * 1e3)
    b50, f50 = statistics.median(base), statistics.median(full)
    print(f"per order ({n} orders, sqlite file, WAL, synchronous=NORMAL):")
    print(f"  bare paper place      p50 {b50:.3f} ms  p99 {pct(base, 99):.3f} ms")
    print(f"  runner Gateway.place  p50 {f50:.3f} ms  p99 {pct(full, 99):.3f} ms")
    print(f"  added by the runner   p50 {f50 - b50:.3f} ms  (target <= 0.5 ms)  ratio {f50 / b50:.2f}x")


SQUARE_OFF = """version: 1
name: eod
timezone: Asia/Kolkata
steps:
  - {kind: square_off, id: sq, cancel_open_orders: false}
"""


async def square_off(tmp: str, accounts: int) -> None:
    engine = make_engine(f"sqlite:///{tmp}/squareoff.db")
    clock = VirtualClock(START)
    names = [f"acct{i:03d}" for i in range(accounts)]
    books = {name: PaperBroker(name, engine=engine, clock=clock, prices=prices()) for name in names}
    for name, book in books.items():
        await book.connect()
        for ins in SYMBOLS:
            await book.place(OrderRequest(f"{name}-{ins.symbol}", ins, Side.BUY, 10))
    clock.advance(1)
    for book in books.values():
        await book.positions()
    positions = 0
    for b in books.values():
        positions += sum(1 for p in await b.positions() if p.quantity)
    # Baseline: the bare calls a square-off needs (positions, one market order per position).
    base_books = {name: PaperBroker(name, engine=engine, clock=clock, prices=prices()) for name in names}
    pb = Playbook.model_validate(load_yaml(SQUARE_OFF).value)
    journal = Journal(engine=engine)

    async def bare_close(name: str) -> None:
        b = base_books[name]
        for p in await b.positions():
            if p.quantity:
                await b.place(
                    OrderRequest(f"bare-{name}-{p.instrument.symbol}", p.instrument, Side.SELL, p.quantity)
                )
                await b.place(
                    OrderRequest(f"bare-re-{name}-{p.instrument.symbol}", p.instrument, Side.BUY, p.quantity)
                )  # re-open so the runner has the same work

    t0 = time.perf_counter()
    await asyncio.gather(*(bare_close(n) for n in names))
    bare_s = time.perf_counter() - t0
    clock.advance(1)

    async def run_one(name: str) -> str:
        report = await execute(
            pb,
            books[name],
            journal,
            clock,
            account=name,
            options=RunOptions(scheduled_for=START, run_key=f"eod-{name}"),
        )
        return report.status.value

    t0 = time.perf_counter()
    statuses = await asyncio.gather(*(run_one(n) for n in names))
    runner_s = time.perf_counter() - t0
    left = 0
    for b in books.values():
        left += sum(1 for p in await b.positions() if p.quantity)
    print(f"square-off of {positions} positions over {accounts} accounts (concurrent, one sqlite file):")
    print(f"  bare paper calls      {bare_s * 1e3:8.1f} ms")
    print(
        f"  runner square_off     {runner_s * 1e3:8.1f} ms  ratio {runner_s / bare_s:.2f}x  "
        f"(cancel, close, verify flat; {statuses.count('succeeded')}/{accounts} succeeded, {left} left open)"
    )


def crash(n: int, tmp: str) -> None:
    """Both broker modes of tests/helpers/crash.py (PLAIN: no idempotent client ids, lagging lookups)."""
    import random
    from collections import Counter

    from helpers.crash import Harness, Mode

    for mode in Mode:
        h = Harness(tmp, mode)
        rng = random.Random(7)
        t0 = time.perf_counter()
        kills = bad = 0
        tally: Counter[str] = Counter()
        for _ in range(n):
            check, k = h.iteration(rng)
            kills += k
            bad += bool(check.problems)
            tally += check.tally
        print(
            f"crash {mode.value}: {n} iterations, {kills} SIGKILLs, {bad} with problems, "
            f"{(time.perf_counter() - t0) / n * 1e3:.0f} ms per iteration "
            f"(full run {h.full_run * 1e3:.0f} ms); {dict(tally)}"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--orders", type=int, default=2000)
    ap.add_argument("--accounts", type=int, default=100)
    ap.add_argument("--crash", type=int, default=0)
    args = ap.parse_args()
    logs.configure(json=True, stream=io.StringIO(), force=True)
    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        asyncio.run(per_order(tmp, args.orders))
        asyncio.run(square_off(tmp, args.accounts))
        if args.crash:
            crash(args.crash, tmp)


if __name__ == "__main__":
    main()
