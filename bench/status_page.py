"""Status page benchmark (issue 14): server time of the page and of ``/metrics`` over a journal holding
1,000 playbooks and 10,000 runs (each with a step, an order and its fill, and its fire), next to the bare
queries they cannot beat, measured in the same process.

* page: the snapshot built from the journal (``runner status --json``'s builder) and rendered as HTML,
  what ``GET /`` does in its worker thread (targets <= 200 ms);
* /metrics: the journal collector and the exposition text (target <= 50 ms);
* baselines: the single query of the last 50 runs and the queries ``runner status`` made before the page
  (daemons + last outcome per playbook) for the page; fires counted by state for /metrics.

    python bench/status_page.py [--playbooks 1000] [--runs 10000] [--repeat 15]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from runner.engine.killswitch import ControlStore
from runner.journal.db import make_engine
from runner.journal.fires import FireStore, daemons, fires, read_daemons
from runner.journal.store import Journal
from runner.journal.tables import fills, order_intents, runs, steps
from runner.observability.metrics import Metrics
from runner.web.pages import render_status
from runner.web.snapshot import build_status

PRICE = Decimal("1400.05")
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


def seed(engine: sa.Engine, playbooks: int, total_runs: int) -> None:
    Journal(engine=engine)  # creates the journal's tables
    FireStore(engine, "bench")
    ControlStore(engine)
    run_rows, step_rows, intent_rows, fill_rows, fire_rows = [], [], [], [], []
    for i in range(total_runs):
        name = f"pb-{i % playbooks:04d}"
        when = NOW - dt.timedelta(minutes=15 * (i // playbooks) + (i % playbooks) / 100)
        run_id = f"run-{i:06d}"
        cid = f"cid{i:012d}"
        status = "failed" if i % 97 == 0 else "succeeded"
        run_rows.append(
            {
                "run_id": run_id,
                "playbook": name,
                "account": f"acct-{i % 5}",
                "mode": "live",
                "scheduled_for": when,
                "started_at": when,
                "updated_at": when,
                "finished_at": when,
                "starts": 1,
                "status": status,
                "message": None,
                "owner": None,
                "timezone": "Asia/Kolkata",
            }
        )
        step_rows.append(
            {
                "run_id": run_id,
                "step_id": "buy",
                "position": 0,
                "kind": "place",
                "outcome": status,
                "message": "BUY 1 NSE RELIANCE",
                "started_at": when,
                "finished_at": when,
            }
        )
        live = i % 500 == 0
        intent_rows.append(
            {
                "client_order_id": cid,
                "run_id": run_id,
                "account": f"acct-{i % 5}",
                "step_id": "buy",
                "slot": "buy",
                "leg": 0,
                "attempt": 0,
                "purpose": "entry",
                "group_id": None,
                "instrument": json.dumps({"exchange": "NSE", "symbol": "RELIANCE"}),
                "instrument_key": "NSE RELIANCE",
                "side": "BUY",
                "quantity": 1,
                "order_type": "LIMIT",
                "product": "MIS",
                "validity": "DAY",
                "price": PRICE,
                "trigger_price": None,
                "disclosed_quantity": 0,
                "tag": None,
                "resolution": "pending" if live else "confirmed",
                "status": "open" if live else "filled",
                "broker_order_id": f"b{i}",
                "filled_quantity": 0 if live else 1,
                "average_price": None if live else PRICE,
                "current_price": None,
                "current_type": None,
                "created_at": when,
                "updated_at": when,
                "sent_at": when,
            }
        )
        if not live:
            fill_rows.append(
                {
                    "client_order_id": cid,
                    "run_id": run_id,
                    "quantity": 1,
                    "price": PRICE,
                    "cumulative_quantity": 1,
                    "at": when,
                }
            )
        fire_rows.append(
            {
                "fire_id": f"f{i:08d}",
                "playbook": name,
                "version": "v1",
                "scheduled_for": when,
                "run_id": run_id,
                "claimed_by": "bench",
                "claimed_at": when,
                "state": status,
                "outcome": status,
                "updated_at": when,
            }
        )
    status_payload = {
        "playbooks": {
            f"pb-{p:04d}": {
                "file": f"pb-{p:04d}.yaml",
                "version": "v1",
                "timezone": "Asia/Kolkata" if p % 2 else "America/New_York",
                "calendar": "NSE" if p % 2 else None,
                "next_fire": (NOW + dt.timedelta(minutes=p % 60 + 1)).isoformat(),
            }
            for p in range(playbooks)
        },
        "running": [],
        "invalid": {},
    }
    with engine.begin() as conn:
        conn.execute(runs.insert(), run_rows)
        conn.execute(steps.insert(), step_rows)
        conn.execute(order_intents.insert(), intent_rows)
        conn.execute(fills.insert(), fill_rows)
        conn.execute(fires.insert(), fire_rows)
        conn.execute(
            daemons.insert().values(
                daemon_id="bench-daemon",
                host="bench",
                pid=1,
                playbook_dir="/pb",
                started_at=NOW,
                heartbeat_at=NOW,
                stopped_at=None,
                status=json.dumps(status_payload),
            )
        )


def timed(fn: Callable[[], Any], repeat: int) -> float:
    """Median milliseconds of ``repeat`` calls (after one warm-up call)."""
    fn()
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


async def loop_lag(engine: sa.Engine, db_url: str, now: dt.datetime, pages: int) -> dict[str, float]:
    """p99 lateness (ms) of a 5 ms timer on the event loop (what a due fire waits on): idle; while
    ``pages`` page requests are served over loopback with the page built in a worker thread; and with
    it built in the page worker process (what ``runner serve --http`` does)."""
    import asyncio

    import aiohttp

    from runner.web.server import build_app, start
    from runner.web.worker import PageWorker

    async def lateness(stop: asyncio.Event) -> list[float]:
        loop = asyncio.get_running_loop()
        late: list[float] = []
        while not stop.is_set():
            due = loop.time() + 0.005
            await asyncio.sleep(0.005)
            late.append((loop.time() - due) * 1000)
        return late

    def p99(values: list[float]) -> float:
        return sorted(values)[int(len(values) * 0.99)]

    stop = asyncio.Event()
    idle = asyncio.create_task(lateness(stop))
    await asyncio.sleep(1.0)
    stop.set()
    out = {"idle": p99(await idle)}
    for mode in ("thread", "process"):
        worker = PageWorker(db_url) if mode == "process" else None
        runner, port = await start(
            build_app(engine, daemon="bench", now=lambda: now, worker=worker), "127.0.0.1", 0
        )
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/") as r:  # warm-up (starts the worker process)
                await r.read()
            stop = asyncio.Event()
            busy = asyncio.create_task(lateness(stop))
            for _ in range(pages):
                async with http.get(f"http://127.0.0.1:{port}/") as r:
                    await r.read()
            stop.set()
        out[mode] = p99(await busy)
        await runner.cleanup()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--playbooks", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'journal.db'}")
        seed(engine, args.playbooks, args.runs)
        now = NOW + dt.timedelta(seconds=1)

        def page() -> None:
            render_status(build_status(engine, now), "bench-daemon")

        metrics = Metrics(engine, "bench-daemon", {f"acct-{i}": "paper" for i in range(5)}, clock=lambda: now)

        def bare_page() -> None:
            with engine.connect() as conn:
                conn.execute(sa.select(runs).order_by(runs.c.started_at.desc()).limit(50)).all()

        def status_before() -> None:  # what `runner status --json` read before the page existed
            read_daemons(engine)
            FireStore(engine, "bench").last_outcomes()

        def bare_metrics() -> None:
            with engine.connect() as conn:
                conn.execute(sa.select(fires.c.state, sa.func.count()).group_by(fires.c.state)).all()

        page_ms, base_page = timed(page, args.repeat), timed(bare_page, args.repeat)
        before_ms = timed(status_before, args.repeat)
        metrics_ms, base_metrics = timed(metrics.render, args.repeat), timed(bare_metrics, args.repeat)
        size = len(render_status(build_status(engine, now), "bench-daemon"))
        import asyncio

        lag = asyncio.run(loop_lag(engine, str(engine.url), now, 10))
        metrics.close()
    print(f"journal: {args.playbooks} playbooks, {args.runs} runs (SQLite file)")
    print(
        f"status page (build + render, {size // 1024} KiB): {page_ms:.1f} ms median (target <= 200); "
        f"bare last-50-runs query {base_page:.2f} ms; ratio {page_ms / base_page:.1f}x; "
        f"old status queries (daemons, last outcomes) {before_ms:.1f} ms; ratio {page_ms / before_ms:.1f}x"
    )
    print(
        f"event loop timer lateness p99 while 10 pages are served: {lag['process']:.2f} ms with the page "
        f"worker process (runner serve), {lag['thread']:.2f} ms built in a thread, {lag['idle']:.2f} ms idle"
    )
    print(
        f"/metrics: {metrics_ms:.1f} ms median (target <= 50); "
        f"bare fires-by-state query {base_metrics:.2f} ms; "
        f"ratio {metrics_ms / base_metrics:.1f}x"
    )


if __name__ == "__main__":
    main()
