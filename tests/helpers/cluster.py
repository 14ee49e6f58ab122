"""Real `runner serve` processes on one PostgreSQL journal, sending through `runner sim kotak_neo` over HTTP
(issue 16): start, kill -9, freeze, count what reached the broker by client order id. Used by
tests/pg/test_pg_scaleout_serve.py and bench/scaleout.py.

The Kotak Neo simulator keeps an order whose client id it has seen before as a separate order (as the
real broker does), so a fire sent twice shows up twice in its order book.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def environ(values: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` set for the block, restored after (unset ones unset again)."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def burst_instant(lead: float, fires: int) -> tuple[dt.datetime, float]:
    """An instant for ``fires`` playbooks written now and due together, and the daemons' wake lead for
    it (:func:`runner.daemon.arming.wake_lead` with serve's defaults): far enough ahead that every
    daemon loads them before it wakes."""
    from runner.daemon.arming import wake_lead
    from runner.daemon.scheduler import DaemonOptions

    wake = wake_lead(lead, DaemonOptions.lead_per_fire, fires)
    ahead = dt.timedelta(seconds=wake + 6 + fires / 50)
    return (dt.datetime.now(dt.UTC) + ahead).replace(microsecond=0), wake

def playbook(name: str, when: dt.datetime, account: str = "sim") -> str:
    """A playbook due once at ``when``: one market order (its client id is derived from the run id)."""
    return (
        f"version: 1\nname: {name}\ntimezone: Asia/Kolkata\naccount: {account}\n"
        f'schedule:\n  once: "{when.isoformat()}"\n  late: run-within 10s\nsteps:\n'
        "  - {kind: place, id: entry, instrument: {exchange: NSE, symbol: RELIANCE}, side: BUY, quantity: 1,"
        " product: MIS}\n"
    )


class Sim:
    """`runner sim BROKER` (kotak_neo unless told) in a process of its own; ``accounts`` names ``n_accounts``
    accounts on it. Only kotak_neo's :meth:`client_ids` reads the book; every simulator served through
    runner.brokers.sim_front answers ``GET {url}/_sim/arrivals``."""

    def __init__(self, tmp: Path, n_accounts: int = 1, broker: str = "kotak_neo") -> None:
        cmd = [sys.executable, "-m", "runner", "sim", broker, "--master-out", str(tmp / "sim" / "m.csv")]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=tmp
        )
        assert self.proc.stdout is not None
        line = json.loads(self.proc.stdout.readline())
        self.broker = broker
        self.url: str = line["url"]
        self.env: dict[str, str] = line["env"]
        base = line["account"]
        base["rate_limit"] = {"orders_per_second": 1000, "burst": 1000, "reads_per_second": 1000}
        self.names = ["sim"] + [f"sim{i}" for i in range(1, n_accounts)]
        self.accounts: dict[str, Any] = {}
        for name in self.names:  # accounts of their own to the runner, one user (book) at the simulator
            self.accounts[name] = json.loads(json.dumps(base))
        self.file = tmp / "accounts.yaml"
        self.file.write_text(json.dumps({"version": 1, "accounts": self.accounts}))  # JSON is YAML

    def client_ids(self) -> Counter[str]:
        """Every order in the simulator's book, counted by client order id (all accounts)."""
        return asyncio.run(self._client_ids())

    async def _client_ids(self) -> Counter[str]:
        from runner.accounts import load_accounts
        from runner.brokers.kotak_neo.wire import PATH_ORDERS, rows_of
        from runner.brokers.registry import create_broker

        seen: Counter[str] = Counter()
        with environ(self.env):
            for name in self.names[:1]:  # one book behind them all
                broker = create_broker(load_accounts(self.file)[name])
                await broker.connect()
                try:  # the raw book rows: every order, whether or not this adapter would parse it
                    payload = await broker._read("GET", PATH_ORDERS)  # type: ignore[attr-defined]
                    seen.update(str(row.get("GuiOrdId")) for row in rows_of(payload))
                finally:
                    await broker.close()
        return seen

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def prepare_schema(engine: Any) -> None:
    """Every table once, as an installer would: three daemons starting together race for the claim, not
    for DDL."""
    from runner.engine.killswitch import ControlStore
    from runner.journal.fires import FireStore
    from runner.journal.store import Journal

    Journal(engine=engine)
    FireStore(engine, "setup")
    ControlStore(engine)


class Cluster:
    """`runner serve` processes on ``url`` over ``tmp/pb``, logs in ``tmp/serve-<i>.log``."""

    def __init__(self, tmp: Path, url: str, sim: Sim) -> None:
        self.tmp = tmp
        self.url = url
        self.sim = sim
        self.pbdir = tmp / "pb"
        self.pbdir.mkdir(exist_ok=True)
        self.procs: list[subprocess.Popen[bytes]] = []
        from runner.journal.db import make_engine

        self.engine = make_engine(url)
        prepare_schema(self.engine)

    def start(
        self, n: int = 1, skews: Sequence[float] = (), lead: float = 3.0, wrap: Sequence[str] = ()
    ) -> list[subprocess.Popen[bytes]]:
        """``n`` daemons; ``lead`` seconds of wake-up lead (this shared 2-core box prepares slowly).
        ``wrap``: a command the first daemon runs under (a profiler, for the benches)."""
        started = []
        for i in range(n):
            env = {k: v for k, v in os.environ.items() if k not in ("RUNNER_ACCOUNTS", "RUNNER_LEASE_SKEW")}
            env.update(self.sim.env)
            if i < len(skews):
                env["RUNNER_LEASE_SKEW"] = str(skews[i])
            cmd = [*(wrap if i == 0 else ()), sys.executable, "-m", "runner", "serve", str(self.pbdir)]
            cmd += ["--db", self.url]
            cmd += ["--accounts", str(self.sim.file), "--lead", str(lead)]
            log = self.tmp / f"serve-{len(self.procs)}.log"
            with log.open("ab") as sink:
                proc = subprocess.Popen(cmd, stdout=sink, stderr=sink, env=env, cwd=self.tmp)
            self.procs.append(proc)
            started.append(proc)
        return started

    def members(self) -> dict[str, int]:
        """daemon id -> pid of the daemons registered and not stopped."""
        from runner.journal.fires import daemons

        with self.engine.connect() as c:
            rows = c.execute(
                sa.select(daemons.c.daemon_id, daemons.c.pid).where(daemons.c.stopped_at.is_(None))
            )
            return {r.daemon_id: r.pid for r in rows}

    def wait_members(self, n: int, timeout: float = 60.0) -> dict[str, int]:
        """Until ``n`` daemons are live members on the database's clock (each has seen the others by the
        next membership read, within a second)."""
        from runner.daemon.membership import read_members
        from runner.journal.db import make_engine

        engine = make_engine(self.url)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                live = [p for p in self.procs if p.poll() is None]
                if len(read_members(engine)) >= n and len(live) >= n:
                    return self.members()
                time.sleep(0.1)
        finally:
            engine.dispose()
        raise AssertionError(f"{n} members not live within {timeout}s: {self.logs()}")

    def wait_views(self, members: Iterable[str], timeout: float = 60.0) -> None:
        """Until every running daemon's latest ``members now`` log line names exactly ``members``: each
        has read the membership (a fixed sleep raced daemons slow to start on a loaded machine)."""
        want = sorted(members)

        def seen() -> bool:
            for i, p in enumerate(self.procs):
                if p.poll() is not None:
                    continue
                lines = (self.tmp / f"serve-{i}.log").read_text(errors="replace").splitlines()
                views = [json.loads(x)["event"] for x in lines if '"members now ' in x and x.startswith("{")]
                if not views or sorted(views[-1].removeprefix("members now ").split(", ")) != want:
                    return False
            return True

        self.wait(seen, timeout, f"every daemon sees members {want}")

    def loaded(self) -> dict[str, int]:
        """daemon id -> playbooks its status row lists (every playbook it loaded, owned or not)."""
        from runner.journal.fires import daemons

        q = sa.select(daemons.c.daemon_id, daemons.c.status).where(daemons.c.stopped_at.is_(None))
        with self.engine.connect() as c:
            return {r.daemon_id: len(json.loads(r.status or "{}").get("playbooks", {})) for r in c.execute(q)}

    def wait_loaded(self, daemons: int, playbooks: int, timeout: float = 600.0) -> None:
        """Until ``daemons`` daemons each list at least ``playbooks`` playbooks."""

        def done() -> bool:
            counts = self.loaded()
            return len(counts) >= daemons and min(counts.values()) >= playbooks

        self.wait(done, timeout, f"{daemons} daemons loaded {playbooks} playbooks")

    def fires(self) -> list[Any]:
        from runner.journal.fires import fires

        with self.engine.connect() as c:
            return list(c.execute(sa.select(fires)).all())

    def holders(self, instant: dt.datetime) -> Counter[str]:
        return Counter(r.claimed_by for r in self.fires() if r.scheduled_for == instant)

    def settled(self, instant: dt.datetime, fires: int, timeout: float) -> list[Any]:
        """Wait until ``fires`` fires of ``instant`` finished (neither CLAIMED nor RUNNING); their rows."""
        from runner.journal.fires import FireState

        unfinished = (FireState.CLAIMED, FireState.RUNNING)

        def rows() -> list[Any]:
            return [r for r in self.fires() if r.scheduled_for == instant]

        self.wait(lambda: sum(1 for r in rows() if r.state not in unfinished) >= fires, timeout,
                  "every fire finished")  # fmt: skip
        return rows()

    def wait(self, pred: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if pred():
                return
            time.sleep(0.05)
        rows = "\n".join(
            f"  {r.playbook} {r.state.value} by {r.claimed_by} from {r.taken_from}: {r.outcome}"
            for r in self.fires()
        )
        raise AssertionError(f"not within {timeout}s: {what}\n{rows}\n{self.logs()}")

    def signal(self, pid: int, sig: signal.Signals) -> None:
        os.kill(pid, sig)

    def logs(self, tail: int = 4000) -> str:
        out = []
        for p in sorted(self.tmp.glob("serve-*.log")):
            out.append(f"--- {p.name}\n{p.read_text(errors='replace')[-tail:]}")
        return "\n".join(out)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.engine.dispose()


def write_playbooks(pbdir: Path, names: Iterable[str], when: dt.datetime, accounts: Sequence[str]) -> None:
    for i, name in enumerate(names):
        (pbdir / f"{name}.yaml").write_text(playbook(name, when, accounts[i % len(accounts)]))
