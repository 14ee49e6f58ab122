"""Paper broker on PostgreSQL: N fires (one market order each) due at one instant, one daemon, one process.

Each playbook's single ``place`` goes through the real daemon, engine (prepared ahead, armed) and paper
broker, journaled in PostgreSQL. Lateness = wall time ``PaperBroker.place`` was called (the first broker
request) - the instant; "acked" = when it returned (the order durable in the paper book). The same run on a
SQLite file is the baseline, and the paper broker's synchronous path (one commit per call on the event
loop, as before group commit) on the same PostgreSQL database, all in the same process.

    python bench/paper_pg.py [--fires 1000] [--pg-url URL]

Without ``--pg-url`` a throwaway PostgreSQL cluster is started (initdb/pg_ctl from PATH or
/usr/lib/postgresql/*/bin; fsync off like the tests' cluster) and removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from scheduler import Pool, pct, playbook  # bench/scheduler.py: the same fixtures as its mass path

from runner.brokers.paper.broker import PaperBroker
from runner.clock import SystemClock
from runner.daemon.scheduler import Daemon, DaemonOptions, EngineExecutor
from runner.engine.killswitch import ControlStore, GuardedBroker
from runner.journal.db import make_engine
from runner.journal.fires import FireStore
from runner.journal.store import Journal
from runner.model import Order, OrderRequest

UTC = dt.UTC


class TimedPaper(PaperBroker):
    """The paper broker, recording when each place() was called and when it returned, per symbol."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.called: dict[str, float] = {}
        self.acked: dict[str, float] = {}

    async def place(self, request: OrderRequest) -> Order:
        self.called.setdefault(request.instrument.symbol, time.time())
        order = await super().place(request)
        self.acked.setdefault(request.instrument.symbol, time.time())
        return order


async def fires_at_one_instant(
    tmp: Path, url: str, count: int, label: str, batched: bool = True
) -> dict[str, float]:
    pbdir = tmp / f"pb-{label}"
    pbdir.mkdir()
    names = [f"{label}{i}" for i in range(count)]
    # Loading and validating the files takes a while: the instant well after start-up.
    due = float(int(time.time() + 6 + count * 0.012))
    for name in names:
        (pbdir / f"{name}.yaml").write_text(playbook(name, dt.datetime.fromtimestamp(due, UTC)))
    db = make_engine(url)
    clock = SystemClock()
    broker = TimedPaper("paper", engine=db, clock=clock)
    if not batched:  # the synchronous path (every call its own commit on the loop): the "before"
        broker._batcher = None
    await broker.connect()
    pool = Pool()
    daemon = Daemon(
        pbdir,
        fires=FireStore(db, f"bench-{label}"),
        control=ControlStore(db),
        executor=EngineExecutor(pool, Journal(engine=db), clock),  # type: ignore[arg-type]
        clock=clock,
        options=DaemonOptions(),
    )
    pool["paper"] = GuardedBroker(broker, daemon.watcher)  # type: ignore[arg-type]
    await daemon.start()
    if len(daemon.entries) != count:
        raise SystemExit(f"only {len(daemon.entries)} of {count} playbooks loaded: {daemon.reload_errors}")
    if time.time() > due:
        raise SystemExit("start-up took past the instant: run with fewer fires")
    while len(broker.acked) < count:
        await asyncio.sleep(0.05)
    while daemon.running:
        await asyncio.sleep(0.05)
    daemon.request_stop()
    await daemon.wait_stopped()
    gc = daemon.executor.commit if isinstance(daemon.executor, EngineExecutor) else None
    armed = sum(n for n, at in zip(gc.batches, gc.committed_at, strict=False) if at < due) if gc else 0
    db.dispose()
    late = [(broker.called[n] - due) * 1000 for n in names]
    acked = [(broker.acked[n] - due) * 1000 for n in names]
    return {"armed": armed, "p50": pct(late, 50), "p99": pct(late, 99), "ack_p99": pct(acked, 99),
            "wall": max(acked)}


def _bindir() -> Path:
    found = shutil.which("initdb")
    candidates = [Path(found).resolve().parent] if found else []
    candidates += sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: tuple(int(x) for x in re.findall(r"\d+", p.parent.name)),
        reverse=True,
    )
    for d in candidates:
        if (d / "initdb").is_file() and (d / "pg_ctl").is_file():
            return d
    raise SystemExit("initdb/pg_ctl not found: pass --pg-url")


@contextmanager
def throwaway_cluster() -> Iterator[str]:
    """A private PostgreSQL cluster on a unix socket (as the test fixture starts one)."""
    bindir = _bindir()
    root = Path(tempfile.mkdtemp(prefix="runner-bench-pg-", dir="/tmp"))
    extra: dict[str, Any] = {}
    if os.geteuid() == 0:  # initdb refuses root
        import pwd

        pw = pwd.getpwnam("nobody")
        os.chown(root, pw.pw_uid, pw.pw_gid)
        extra = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}

    def run(*args: str) -> None:
        subprocess.run([str(bindir / args[0]), *args[1:]], check=True, capture_output=True, cwd=root,
                       env={**os.environ, "LC_ALL": "C"}, timeout=60, **extra)

    data = root / "data"
    try:
        run("initdb", "-D", str(data), "-U", "runner", "--auth=trust", "--no-sync", "-E", "UTF8",
            "--locale=C")
        run("pg_ctl", "start", "-D", str(data), "-w", "-s", "-l", str(root / "log"),
            "-o", f"-k {root} -c listen_addresses= -c fsync=off -c synchronous_commit=off")
        yield f"postgresql+psycopg://runner@/postgres?host={root}"
    finally:
        if (data / "postmaster.pid").exists():
            run("pg_ctl", "stop", "-D", str(data), "-m", "immediate", "-w", "-s")
        shutil.rmtree(root, ignore_errors=True)


def show(label: str, r: dict[str, float]) -> str:
    return (f"{label}: first request p50 {r['p50']:8.1f} ms  p99 {r['p99']:8.1f} ms;  "
            f"acked p99 {r['ack_p99']:8.1f} ms;  last acked (wall) +{r['wall']:8.1f} ms;  "
            f"{r['armed']:.0f} armed before the instant")


async def main(count: int, pg_url: str | None) -> None:
    load = os.getloadavg()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, load average {load[0]:.2f} at start")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        base = await fires_at_one_instant(tmp, f"sqlite:///{tmp / 'base.db'}", count, "s")
        if pg_url is None:
            with throwaway_cluster() as url:
                sync = await fires_at_one_instant(tmp, url, count, "q", batched=False)
                pg = await fires_at_one_instant(tmp, url, count, "p")
        else:
            sync = await fires_at_one_instant(tmp, pg_url, count, "q", batched=False)
            pg = await fires_at_one_instant(tmp, pg_url, count, "p")
    print(f"{count} paper fires due at one instant, one daemon:")
    print(show("  sqlite (baseline)              ", base))
    print(show("  postgresql, synchronous commits", sync))
    print(show("  postgresql, group commit       ", pg))
    print(f"  ratio group commit / synchronous on postgresql: p99 {pg['p99'] / sync['p99']:.3f}, "
          f"wall {pg['wall'] / sync['wall']:.3f}; group commit / sqlite: p99 {pg['p99'] / base['p99']:.2f}"
          f"  (target: p99 <= 100 ms on postgresql)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fires", type=int, default=1000)
    parser.add_argument("--pg-url", help="an existing PostgreSQL database (default: a throwaway cluster)")
    parser.add_argument("--verbose", action="store_true", help="keep log output (stderr)")
    a = parser.parse_args()
    if not a.verbose:
        import logging

        from runner.logs import configure

        configure(json=True, stream=open(os.devnull, "w"), level=logging.WARNING, force=True)  # noqa: SIM115
        logging.basicConfig(handlers=[logging.NullHandler()], level=logging.WARNING, force=True)
    asyncio.run(main(a.fires, a.pg_url))
