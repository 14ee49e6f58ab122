"""Fire lateness with alerts and the status page on (issue 14: "unchanged"), next to the same fires
without them and a bare asyncio timer, all in the same run.

Every order is rejected by the recording broker in both variants, so each fire fails its step: with
``--alerts`` that is the worst case, a step-failed, an order-rejected and a fire-failed alert per fire, each
delivered by a real :class:`~runner.alerts.delivery.Dispatcher` (apprise ``json://``, outbox in the journal)
to a loopback capture server, rate limit lifted so every message is a real HTTP post. With ``--page`` the
status page server (page worker process, ``/metrics``) runs on the daemon's loop and a client thread fetches
``/`` and ``/metrics`` back to back for the whole run. Lateness = the broker's place() - the instant.

    python bench/scheduler_ops.py [--single 20] [--mass 1000] [--rounds 1] [--alerts] [--page]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.helpers: the capture server

from scheduler import RecordingBroker, baseline, daemon_run, fmt, pct, playbook, quiet_logs

from runner.daemon.scheduler import Daemon, load_playbook_file
from runner.model import Order, OrderRequest, OrderStatus
from tests.helpers.alerts_capture import Capture

UTC = dt.UTC
HOLD = True  # --no-hold: the dispatcher works through fire instants (before the fix), for comparison


class RejectingBroker(RecordingBroker):
    """Records place() like its parent, then rejects: the step fails, the fire fails."""

    async def place(self, request: OrderRequest) -> Order:
        self.first_place.setdefault(request.instrument.symbol, time.time())
        order = Order(
            request.client_order_id,
            None,
            request.instrument,
            request.side,
            request.quantity,
            request.order_type,
            request.product,
            OrderStatus.REJECTED,
            average_price=Decimal("0"),
            reject_reason="bench: margin shortfall",
        )
        self.orders[request.client_order_id] = order
        return order


@dataclass
class Load:
    """What ran beside the daemon: alerts delivered, page and metrics answers fetched."""

    alerts: int = 0
    published: int = 0
    pages: int = 0
    metrics: int = 0
    errors: list[str] = field(default_factory=list)


def ops(alerts: bool, page: bool, load: Load):  # type: ignore[no-untyped-def]
    @asynccontextmanager
    async def beside(daemon: Daemon, db_url: str) -> AsyncIterator[None]:
        from runner.alerts.config import AlertsConfig
        from runner.alerts.delivery import Dispatcher
        from runner.alerts.outbox import Outbox
        from runner.alerts.publish import install
        from runner.journal.db import make_engine

        engine = make_engine(db_url)
        capture = dispatcher = web = client = None
        stop = threading.Event()
        if alerts:
            capture = Capture()
            config = AlertsConfig(targets={"team": capture.url}, per_minute=1_000_000)
            dispatcher = Dispatcher(config, outbox=Outbox(engine)).start()
            if HOLD:  # as `runner serve` wires it
                dispatcher.hold_while(daemon.quiet.remaining)
            install(dispatcher)
        if page:
            from runner.web.server import build_app, start
            from runner.web.worker import PageWorker

            app = build_app(engine, daemon=daemon.owner, quiet=daemon.quiet.wait, worker=PageWorker(db_url))
            web, port = await start(app, "127.0.0.1", 0)

            def fetch() -> None:
                while not stop.is_set():
                    for path in ("/", "/metrics"):
                        try:
                            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=30) as r:
                                r.read()
                        except OSError as exc:
                            load.errors.append(f"{path}: {exc}")
                            continue
                        if path == "/":
                            load.pages += 1
                        else:
                            load.metrics += 1

            client = threading.Thread(target=fetch, name="page-client", daemon=True)
            client.start()
        try:
            yield None
        finally:
            stop.set()
            if client is not None:
                await asyncio.to_thread(client.join, 60)
            if web is not None:
                await web.cleanup()
            if dispatcher is not None and capture is not None:
                install(None)
                await asyncio.to_thread(dispatcher.close, 60.0)
                load.alerts += len(capture.posts)
                load.published += dispatcher.counters.published
                capture.close()
            engine.dispose()

    return beside


def ratio(a: list[float], b: list[float], p: float) -> str:
    return f"{pct(a, p) / pct(b, p):.2f}" if pct(b, p) > 0 else "n/a"


async def main(single: int, mass: int, rounds: int, alerts: bool, page: bool) -> None:
    load_avg = os.getloadavg()
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, "
        f"load average {load_avg[0]:.2f} {load_avg[1]:.2f} {load_avg[2]:.2f} at start; "
        f"beside the daemon: {'alerts ' if alerts else ''}{'page' if page else ''}"
    )
    probe_t = time.perf_counter()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        probe = tmp / "probe.yaml"
        probe.write_text(playbook("probe", dt.datetime(2030, 1, 1, tzinfo=UTC)))
        for _ in range(20):
            load_playbook_file(probe)
        per_file = (time.perf_counter() - probe_t) / 20
        got: dict[tuple[str, bool], list[float]] = {}
        loads = {False: Load(), True: Load()}
        for r in range(rounds):
            for with_ops in (False, True):  # interleaved: a load swing hits both variants alike
                beside = ops(alerts, page, loads[True]) if with_ops else None
                tag = f"-{r}-{'ops' if with_ops else 'plain'}"
                start = time.time() + 3
                instants = [float(int(start)) + 1 + i for i in range(single)]
                names = [f"s{i}" for i in range(single)]
                late = await daemon_run(tmp, names, instants, True, RejectingBroker(), beside, tag + "-s")
                got.setdefault(("single", with_ops), []).extend(late)
                due = float(int(time.time() + 3 + per_file * mass * 2.5))
                names = [f"m{i}" for i in range(mass)]
                late = await daemon_run(tmp, names, [due] * mass, True, RejectingBroker(), beside, tag + "-m")
                got.setdefault(("mass", with_ops), []).extend(late)
        base = await baseline([time.time() + 0.2 + i * 0.05 for i in range(single)])
        for kind, label in (("single", f"single fires through the engine ({single} x {rounds})"),
                            ("mass", f"{mass} due in the same second ({rounds} round(s))")):  # fmt: skip
            plain, on = got[(kind, False)], got[(kind, True)]
            print(f"{label}:")
            print(f"  without alerts/page: {fmt(plain)}")
            print(f"  with alerts/page:    {fmt(on)}")
            print(f"  ratio with/without: p50 {ratio(on, plain, 50)}  p99 {ratio(on, plain, 99)}")
        print(f"  asyncio call_at baseline ({single} timers): {fmt(base)}")
        lo = loads[True]
        print(
            f"beside the fires: {lo.published} alerts published, {lo.alerts} delivered to the capture "
            f"server; {lo.pages} pages and {lo.metrics} /metrics fetched ({len(lo.errors)} errors)"
        )
        for e in lo.errors[:5]:
            print(f"  {e}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--single", type=int, default=20)
    parser.add_argument("--mass", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=1, help="interleaved plain/ops rounds, pooled")
    parser.add_argument("--alerts", action="store_true", help="alert dispatcher on (neither flag: both)")
    parser.add_argument("--page", action="store_true", help="status page and its client (neither: both)")
    parser.add_argument("--no-hold", action="store_true", help="alerts sent through fire instants")
    parser.add_argument("--verbose", action="store_true", help="keep log output (stderr)")
    a = parser.parse_args()
    if not a.verbose:
        quiet_logs()
    HOLD = not a.no_hold
    both = not (a.alerts or a.page)
    asyncio.run(main(a.single, a.mass, a.rounds, a.alerts or both, a.page or both))
    print(f"load average {os.getloadavg()[0]:.2f} at end")
