"""Scheduler benchmark: fire lateness and daemon memory, next to a bare asyncio timer in the same run.

Lateness = wall time of the first broker request - the scheduled instant, measured with a recording
broker (no network). Three paths, each against ``loop.call_at`` on the same loop:

* single fires, scheduler only (the executor calls ``broker.place`` at once);
* single fires through the real engine: prepared ``lead`` early (connect, reconcile, first order built
  and risk-checked, run/step/intent rows committed: "armed"), then at the instant only the place;
* 1,000 playbooks due in the same second through the engine (target: every intent journaled <= 100 ms
  after the tick; armed runs have theirs journaled before it);

and the RSS of ``runner serve`` with 1,000 playbooks scheduled vs. with none (target <= 100 MB).

    python bench/scheduler.py [--single 20] [--mass 1000] [--verbose]

Quiet by default: engine logs (structlog) and stdlib logging go to a null sink at WARNING, so rendering
log lines to stderr does not distort the figures; ``--verbose`` keeps them.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import io
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from decimal import Decimal
from pathlib import Path

from runner.brokers.base import Capability
from runner.clock import SystemClock
from runner.daemon.scheduler import Daemon, DaemonOptions, EngineExecutor, Fire, FireResult
from runner.engine.killswitch import ControlStore, GuardedBroker
from runner.journal.db import make_engine
from runner.journal.fires import FireState, FireStore
from runner.journal.store import Journal
from runner.model import Modification, Order, OrderRequest, OrderStatus, OrderType, Position, Side

UTC = dt.UTC
NOTES: list[str] = []  # lines a daemon run leaves for after its row's label


class RecordingBroker:
    """Fills every order at once; records the wall time of each place() per instrument symbol."""

    name = "recording"
    capabilities = frozenset({Capability.MARKET_ORDERS, Capability.LOOKUP_BY_CLIENT_ID})

    def __init__(self) -> None:
        self.first_place: dict[str, float] = {}
        self.orders: dict[str, Order] = {}

    async def connect(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def place(self, request: OrderRequest) -> Order:
        self.first_place.setdefault(request.instrument.symbol, time.time())
        order = Order(
            request.client_order_id,
            f"B{len(self.orders)}",
            request.instrument,
            request.side,
            request.quantity,
            request.order_type,
            request.product,
            OrderStatus.FILLED,
            filled_quantity=request.quantity,
            average_price=Decimal("100"),
        )
        self.orders[request.client_order_id] = order
        return order

    async def modify(self, order: Order, change: Modification) -> Order:
        return order

    async def cancel(self, order: Order) -> Order:
        return order

    async def get_order(self, client_order_id: str) -> Order | None:
        return self.orders.get(client_order_id)

    async def get_order_by_broker_id(self, broker_order_id: str) -> Order:
        return next(o for o in self.orders.values() if o.broker_order_id == broker_order_id)

    async def orders_list(self) -> Sequence[Order]:
        return list(self.orders.values())

    orders_ = orders_list

    async def open_orders(self) -> Sequence[Order]:
        return []

    async def positions(self) -> Sequence[Position]:
        return []


# Broker.orders() clashes with the attribute name above; bind the protocol method explicitly.
RecordingBroker.orders = RecordingBroker.orders_list  # type: ignore[assignment]


class DirectExecutor:
    """Scheduler-only path: the first broker request goes out as soon as the daemon hands over."""

    def __init__(self, broker: RecordingBroker) -> None:
        self.broker = broker

    async def __call__(self, fire: Fire) -> FireResult:
        from runner.model import Instrument

        await self.broker.place(
            OrderRequest(
                fire.run_id[:18], Instrument("NSE", fire.playbook.name), Side.BUY, 1, OrderType.MARKET
            )
        )
        return FireResult(FireState.SUCCEEDED)


class Pool(dict[str, object]):
    def get_broker(self, account: str) -> object:
        return self["paper"]


def playbook(name: str, when: dt.datetime) -> str:
    return (
        f'version: 1\nname: {name}\ntimezone: Asia/Kolkata\nschedule:\n  once: "{when.isoformat()}"\n'
        f"steps:\n  - kind: place\n    id: buy\n    instrument: {{exchange: NSE, symbol: {name}}}\n"
        f"    side: BUY\n    quantity: 1\n"
    )


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(p / 100 * (len(values) - 1)))]


def fmt(ms: list[float]) -> str:
    return f"p50 {pct(ms, 50):7.3f} ms  p99 {pct(ms, 99):7.3f} ms  max {max(ms):7.3f} ms"


async def baseline(instants: list[float]) -> list[float]:
    """Bare asyncio timers: ``loop.call_at`` for the same wall instants; lateness of each callback."""
    loop = asyncio.get_running_loop()
    late: list[float] = []
    done = asyncio.Event()

    def hit(target: float) -> None:
        late.append((time.time() - target) * 1000)
        if len(late) == len(instants):
            done.set()

    offset = loop.time() - time.time()
    for t in instants:
        loop.call_at(t + offset, hit, t)
    await done.wait()
    return late


# What runs beside the daemon while it fires (bench/scheduler_ops.py: alerts, the status page):
# (daemon, journal URL) -> entered before the daemon starts, left after it stopped.
Beside = Callable[[Daemon, str], AbstractAsyncContextManager[object]]


async def daemon_run(
    tmp: Path,
    names: list[str],
    instants: list[float],
    engine_path: bool,
    broker: RecordingBroker | None = None,
    beside: Beside | None = None,
    tag: str = "",
) -> list[float]:
    pbdir = tmp / f"pb-{len(names)}-{engine_path}{tag}"
    pbdir.mkdir()
    for name, t in zip(names, instants, strict=True):
        (pbdir / f"{name}.yaml").write_text(playbook(name, dt.datetime.fromtimestamp(t, UTC)))
    db_url = f"sqlite:///{pbdir}.db"
    db = make_engine(db_url)
    clock = SystemClock()
    broker = broker or RecordingBroker()
    control = ControlStore(db)
    pool = Pool()
    executor = EngineExecutor(pool, Journal(engine=db), clock) if engine_path else DirectExecutor(broker)  # type: ignore[arg-type]
    daemon = Daemon(
        pbdir,
        fires=FireStore(db, "bench"),
        control=control,
        executor=executor,
        clock=clock,
        options=DaemonOptions(),
    )
    pool["paper"] = GuardedBroker(broker, daemon.watcher)  # type: ignore[arg-type]
    async with beside(daemon, db_url) if beside is not None else nullcontext():
        await daemon.start()
        if len(daemon.entries) != len(names):
            raise SystemExit(
                f"only {len(daemon.entries)} of {len(names)} playbooks loaded: {daemon.reload_errors}"
            )
        while len(broker.first_place) < len(names):
            await asyncio.sleep(0.05)
        while daemon.running:
            await asyncio.sleep(0.05)
        daemon.request_stop()
        await daemon.wait_stopped()
    if isinstance(executor, EngineExecutor):
        gc = executor.commit
        batches = list(zip(gc.batches, gc.committed_at, strict=False))
        if len(set(instants)) == 1 and batches:
            size, _ = max(batches, key=lambda b: b[0])
            last = max(a for _, a in batches)
            NOTES.append(
                f"  armed (run, step, intent rows committed) in {len(batches)} group commit(s), largest "
                f"{size} runs; the last committed {(instants[0] - last) * 1000:.0f} ms before the instant"
            )
        gc.batches.clear()
        gc.committed_at.clear()
    return [(broker.first_place[n] - t) * 1000 for n, t in zip(names, instants, strict=True)]


def rss_of_serve(tmp: Path, count: int) -> float:
    pbdir = tmp / f"rss-{count}"
    pbdir.mkdir()
    far = dt.datetime(2030, 1, 1, 9, 15, tzinfo=UTC)
    for i in range(count):
        (pbdir / f"p{i}.yaml").write_text(playbook(f"p{i}", far + dt.timedelta(seconds=i)))
    env = {k: v for k, v in os.environ.items() if k != "RUNNER_ACCOUNTS"}
    out = tmp / f"rss-{count}.out"
    with out.open("w") as sink:  # a file, not a pipe: 1,000 startup lines must not block the daemon
        proc = subprocess.Popen(
            [sys.executable, "-m", "runner", "serve", str(pbdir), "--db", f"sqlite:///{pbdir}.db"],
            stdout=sink,
            stderr=subprocess.DEVNULL,
            env=env,
        )
    try:
        deadline = time.monotonic() + 120
        while "playbooks scheduled" not in out.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.5)  # a few heartbeats and reload scans
        status = Path(f"/proc/{proc.pid}/status").read_text()
        kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    return kb / 1024


def quiet_logs() -> None:
    """Logs to a null sink at WARNING (the send path defers its log lines, but the rest still renders)."""
    from runner.logs import configure

    configure(json=True, stream=_Null(), level=logging.WARNING, force=True)
    logging.basicConfig(handlers=[logging.NullHandler()], level=logging.WARNING, force=True)


class _Null(io.StringIO):
    def write(self, s: str) -> int:
        return len(s)

    def isatty(self) -> bool:
        return False


async def main(single: int, mass: int) -> None:
    load = os.getloadavg()
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start"
    )
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for engine_path in (False, True):
            start = time.time() + 3
            instants = [float(int(start)) + 1 + i for i in range(single)]  # schema: whole seconds
            names = [f"s{i}" for i in range(single)]
            got = await daemon_run(tmp, names, instants, engine_path)
            base = await baseline([time.time() + 0.2 + i * 0.05 for i in range(single)])
            label = "engine   " if engine_path else "scheduler"
            print(f"single fires, {label} ({single}): {fmt(got)}")
            print(
                f"  asyncio call_at baseline:       {fmt(base)}   "
                f"ratio p50 {pct(got, 50) / pct(base, 50):.2f}"
            )

        # Loading and validating 1,000 files takes a while: due time well after start-up.
        t0 = time.perf_counter()
        from runner.daemon.scheduler import load_playbook_file

        probe = tmp / "probe.yaml"
        probe.write_text(playbook("probe", dt.datetime(2030, 1, 1, tzinfo=UTC)))
        for _ in range(20):
            load_playbook_file(probe)
        per_file = (time.perf_counter() - t0) / 20
        for engine_path in (False, True):
            due = float(int(time.time() + 3 + per_file * mass * 2.5))
            names = [f"m{i}" if engine_path else f"n{i}" for i in range(mass)]
            got = await daemon_run(tmp, names, [due] * mass, engine_path)
            label = "engine" if engine_path else "scheduler only"
            print(f"{mass} playbooks due in the same second, {label}: {fmt(got)}")
            print(f"  last first-request at +{max(got):.1f} ms (target: all intents journaled <= 100 ms)")
            for line in NOTES:
                print(line)
            NOTES.clear()
        base = await baseline([float(int(time.time()) + 2)] * mass)
        print(f"  asyncio call_at baseline ({mass} timers at one instant): {fmt(base)}")

        idle = rss_of_serve(tmp, 0)
        full = rss_of_serve(tmp, mass)
        print(
            f"runner serve RSS: {full:.1f} MB with {mass} playbooks scheduled, {idle:.1f} MB with none "
            f"(+{full - idle:.1f} MB, ratio {full / idle:.2f}; target <= 100 MB)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--single", type=int, default=20)
    parser.add_argument("--mass", type=int, default=1000)
    parser.add_argument("--verbose", action="store_true", help="keep log output (stderr)")
    a = parser.parse_args()
    if not a.verbose:
        quiet_logs()
    asyncio.run(main(a.single, a.mass))
    print(f"load average {os.getloadavg()[0]:.2f} at end")
