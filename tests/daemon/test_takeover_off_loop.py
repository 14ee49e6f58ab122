"""Issue 16: a fire taken over is prepared at its instant, not seconds ahead like the daemon's own, so its
journal round trips (run lookup, dead runs closed, reconcile, the account lease, its steps) must not run
on the event loop, where they hold up every other fire: asserted by the thread each statement runs on."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from helpers.engine import make_env, playbook

from runner.brokers.paper.broker import PaperBroker
from runner.daemon.executor import EngineExecutor
from runner.daemon.release import Fire, FireResult
from runner.engine.leases import AccountLeases
from runner.journal.db import make_engine

PLACE = """
steps:
  - {kind: place, id: bid, instrument: fut, side: BUY, quantity: 75, type: LIMIT, price: 24000}
"""


class OnePool(dict[str, object]):
    def get_broker(self, account: str) -> object:
        return self["paper"]


def _traced(engine: sa.Engine, thread: int) -> list[str]:
    """Every statement the journal's connections run on ``thread`` (SQLite's trace hook runs on the
    executing thread), from fresh connections on."""
    seen: list[str] = []

    def trace(dbapi_conn: object, record: object) -> None:
        dbapi_conn.set_trace_callback(  # type: ignore[attr-defined]
            lambda sql: seen.append(sql) if threading.get_ident() == thread else None
        )

    sa.event.listen(engine, "connect", trace)
    engine.dispose()
    return seen


async def _prepared(
    tmp_path: Path, *, taken: bool, opened: list[int] | None = None
) -> tuple[list[str], FireResult]:
    env = make_env(tmp_path)
    paper_db = make_engine(f"sqlite:///{tmp_path / 'paper.db'}")  # the broker's rows: not the journal's
    paper = PaperBroker("paper", engine=paper_db, clock=env.clock, prices=env.prices, config=env.config)
    executor = EngineExecutor(OnePool(paper=paper), env.journal, env.clock)  # type: ignore[arg-type]
    pb = playbook(PLACE, name="p1")
    fire = Fire(pb, Path("p1.yaml"), "v1", env.clock.now(), "run-p1", "fire-p1", taken=taken)
    on_loop = _traced(env.engine, threading.get_ident())
    prepared = await executor.prepare(fire)
    seen = list(on_loop)
    if opened is not None:  # connections warmed or requests primed for it meanwhile
        opened.append(len(executor._warming))
    report = await prepared.run()
    return seen, report


async def test_a_taken_fires_prepare_runs_no_journal_statement_on_the_loop_thread(tmp_path: Path) -> None:
    seen, result = await _prepared(tmp_path, taken=True)
    assert seen == []
    assert "bid=succeeded" in (result.outcome or "")  # prepared off the loop, then sent as ever


async def test_the_probe_sees_statements_on_the_loop_thread(tmp_path: Path) -> None:
    """The probe can fail: the daemon's own fire, prepared seconds ahead, still reads on the loop."""
    seen, _ = await _prepared(tmp_path, taken=False)
    assert seen


async def test_a_taken_fire_opens_no_connection_ahead_of_its_send(tmp_path: Path) -> None:
    """Prepared after its instant, it sends at once: a warm-up or primed request would race its send."""
    opened: list[int] = []
    await _prepared(tmp_path / "taken", taken=True, opened=opened)
    await _prepared(tmp_path / "own", taken=False, opened=opened)
    assert opened == [0, 1]


class SlowLogin:
    """The paper broker behind a login that waits until released (a takeover's lead connecting)."""

    def __init__(self, inner: PaperBroker) -> None:
        self.inner = inner
        self.go = asyncio.Event()

    async def connect(self) -> None:
        await self.go.wait()
        await self.inner.connect()

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


async def test_a_taken_fire_is_built_and_looked_up_while_its_accounts_lead_connects(tmp_path: Path) -> None:
    """The second taken fire of an account does not wait for the first one's connect and reconcile to
    build its engine and look its run up (before, all of it came after: ~0.7 s for 200 fires)."""
    env = make_env(tmp_path)
    paper_db = make_engine(f"sqlite:///{tmp_path / 'paper.db'}")
    paper = PaperBroker("paper", engine=paper_db, clock=env.clock, prices=env.prices, config=env.config)
    slow = SlowLogin(paper)
    executor = EngineExecutor(OnePool(paper=slow), env.journal, env.clock)  # type: ignore[arg-type]
    looked: list[str] = []
    get_run = env.journal.get_run
    env.journal.get_run = lambda run_id: (looked.append(run_id), get_run(run_id))[1]  # type: ignore[method-assign]
    now = env.clock.now()
    fires = [
        Fire(playbook(PLACE, name=n), Path(f"{n}.yaml"), "v1", now, f"run-{n}", f"fire-{n}", taken=True)
        for n in ("p1", "p2")
    ]
    lead = asyncio.ensure_future(executor.prepare(fires[0]))
    other = asyncio.ensure_future(executor.prepare(fires[1]))
    for _ in range(200):  # until both lookups ran (worker threads) while the lead is still logging in
        if "run-p2" in looked:
            break
        await asyncio.sleep(0.01)
    assert "run-p2" in looked and not lead.done()
    slow.go.set()
    for prepared in await asyncio.gather(lead, other):
        assert "bid=succeeded" in ((await prepared.run()).outcome or "")


async def test_an_accounts_other_taken_fires_are_armed_without_waiting_for_the_leads_lease_and_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the lead connected and reconciled, the account's other taken fires take their lease and arm
    without waiting for the lead's own lease and armed commit (before: one more chain of journal hops
    per account, each waiting its turn on a busy loop)."""
    env = make_env(tmp_path)
    paper_db = make_engine(f"sqlite:///{tmp_path / 'paper.db'}")
    paper = PaperBroker("paper", engine=paper_db, clock=env.clock, prices=env.prices, config=env.config)
    executor = EngineExecutor(OnePool(paper=paper), env.journal, env.clock)  # type: ignore[arg-type]
    held = asyncio.Event()
    acquire = AccountLeases.acquire

    async def lead_held(self: AccountLeases, account: str, run_id: str, *args: Any, **kw: Any) -> Any:
        if run_id == "run-p1":  # the lead's own lease: held until the other fire is prepared
            await held.wait()
        return await acquire(self, account, run_id, *args, **kw)

    monkeypatch.setattr(AccountLeases, "acquire", lead_held)
    now = env.clock.now()
    fires = [
        Fire(playbook(PLACE, name=n), Path(f"{n}.yaml"), "v1", now, f"run-{n}", f"fire-{n}", taken=True)
        for n in ("p1", "p2")
    ]
    lead = asyncio.ensure_future(executor.prepare(fires[0]))
    other = await asyncio.wait_for(executor.prepare(fires[1]), 10)  # while the lead still waits
    assert not lead.done() and other.engine.armed_request is not None
    held.set()
    for prepared in (await lead, other):
        assert "bid=succeeded" in ((await prepared.run()).outcome or "")
