"""Account leases: two runs on one account never trade the same position twice."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
import threading
from typing import Any

from helpers.engine import RELIANCE, at, make_env, playbook

from runner.engine.leases import AccountLeases, Lease, LeaseMode, account_leases, leases_for
from runner.journal.db import make_engine
from runner.journal.records import Intent
from runner.journal.store import Journal
from runner.journal.tables import Purpose, RunStatus
from runner.liveness import STALE_AFTER, ProcessIdentity, ProcessRegistry, host_id, processes
from runner.model import OrderRequest, Product, Side

SQUARE_OFF = """
steps:
  - {kind: square_off, id: sq, filter: {}}
"""


class Interleaved:
    """The paper broker, yielding to the event loop before every order leaves: two runs started
    together both read the position before either closes it (the user's race, made deterministic)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def place(self, request: OrderRequest) -> Any:
        for _ in range(20):
            await asyncio.sleep(0)
        return await self._inner.place(request)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


async def _long_reliance(env: Any, qty: int = 10) -> None:
    book = env.broker()
    await book.place(OrderRequest("seed", RELIANCE, Side.BUY, qty, product=Product.MIS))
    env.clock.advance(1)
    await book.positions()


async def test_two_square_offs_on_one_account_close_the_position_once(tmp_path):
    env = make_env(tmp_path)
    await _long_reliance(env)
    daemon = playbook(SQUARE_OFF, name="rule-1515")
    operator = playbook(SQUARE_OFF, name="operator")
    reports = await asyncio.gather(
        env.run(daemon, broker=Interleaved(env.broker()), slot=at(15, 15)),
        env.run(operator, broker=Interleaved(env.broker()), slot=at(15, 15, 1)),
    )
    held = {p.instrument.key: p.quantity for p in await env.broker().positions()}
    assert held[RELIANCE.key] == 0, [r.steps for r in reports]
    exits = [o for o in await env.broker().orders() if o.client_order_id != "seed"]
    assert sum(o.quantity for o in exits) == 10
    # The second waited for the first's exclusive lease, then found nothing left to close.
    messages = sorted(r.steps[0].message for r in reports)
    assert messages[0].startswith("flat: 1 position(s) closed"), messages
    assert messages[1] == "nothing to square off", messages


# --- a square-off waits for other live runs' orders in flight -----------------------------------------

ENTRY_CID = "other-entry-0"


def _in_flight_entry(env: Any, qty: int = 5, owner: str | None = None) -> OrderRequest:
    """Another live run (RUNNING) has journaled an entry whose request has not left yet."""
    run = "20260302-091500-otherrun"
    env.journal.start_run(
        run,
        playbook="entry",
        account=env.account,
        scheduled_for=at(9, 15),
        mode="run",
        now=env.clock.now(),
        owner=owner or ProcessIdentity.current().token,  # a live owner: its intents are its to settle
    )
    request = OrderRequest(ENTRY_CID, RELIANCE, Side.BUY, qty, product=Product.MIS)
    env.journal.add_intent(
        Intent(ENTRY_CID, run, env.account, "e", "e", 0, 0, Purpose.ENTRY, request, env.clock.now())
    )
    return request


async def test_square_off_waits_for_another_live_runs_order_in_flight(tmp_path):
    env = make_env(tmp_path)
    await _long_reliance(env)
    request = _in_flight_entry(env)

    async def owner() -> None:  # the entry's own run: its request lands a moment later, and it journals it
        for _ in range(10):
            await asyncio.sleep(0)
        order = await env.broker().place(request)
        env.journal.record_order(order, env.clock.now())

    report, _ = await asyncio.gather(env.run(playbook(SQUARE_OFF, name="sq")), owner())
    assert env.steps(report) == {"sq": "succeeded"}, report.steps[0].message
    held = {p.instrument.key: p.quantity for p in await env.broker().positions()}
    assert held[RELIANCE.key] == 0  # the late entry's 5 were closed too, not left open


async def test_square_off_refuses_while_another_runs_order_stays_in_flight(tmp_path):
    env = make_env(tmp_path)
    await _long_reliance(env)
    _in_flight_entry(env)
    report = await env.run(playbook(SQUARE_OFF, name="sq"), busy_wait=2.0)
    assert report.status is RunStatus.REFUSED
    message = report.steps[0].message
    assert "20260302-091500-otherrun" in message and ENTRY_CID in message and "nothing sent" in message
    held = {p.instrument.key: p.quantity for p in await env.broker().positions()}
    assert held[RELIANCE.key] == 10
    assert [o.client_order_id for o in await env.broker().orders()] == ["seed"]


async def test_square_off_stops_waiting_once_the_in_flight_orders_owner_dies(tmp_path, monkeypatch):
    """The other run's process dies while the square-off waits for its order: nobody will ever settle
    it, so the run is closed (interrupted) and its order reconciled, not waited for until refused."""
    env = make_env(tmp_path)
    await _long_reliance(env)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    gone = ProcessIdentity(host_id(), child.pid, "1").token
    from runner.journal.store import Journal as J

    real = J.close_dead_runs
    calls: list[int] = []

    def dies_after_prepare(self, *a, **kw):  # prepare's sweep still sees it alive; then it dies
        calls.append(1)
        return [] if len(calls) == 1 else real(self, *a, **kw)

    monkeypatch.setattr(J, "close_dead_runs", dies_after_prepare)
    _in_flight_entry(env, owner=gone)
    env.clock.advance(120)  # past absent_after: the lookup proves it never arrived
    report = await env.run(playbook(SQUARE_OFF, name="sq"), busy_wait=30.0)
    assert env.steps(report) == {"sq": "succeeded"}, report.steps[0].message
    assert env.journal.get_run("20260302-091500-otherrun").status is RunStatus.INTERRUPTED
    assert len(calls) == 2  # closed at the first poll, not after 30 s of waiting


async def test_a_finished_runs_order_is_reconciled_not_waited_for(tmp_path):
    env = make_env(tmp_path)
    await _long_reliance(env)
    _in_flight_entry(env)
    env.journal.finish_run("20260302-091500-otherrun", RunStatus.FAILED, env.clock.now(), "crashed")
    env.clock.advance(120)  # past absent_after: the lookup proves it never arrived
    report = await env.run(playbook(SQUARE_OFF, name="sq"), busy_wait=0.0)
    assert env.steps(report) == {"sq": "succeeded"}, report.steps[0].message


# --- busy accounts, holders, takeover ----------------------------------------------------------------

PEER = ProcessIdentity("elsewhere/abcd1234", 77, "123")  # a daemon on another host


def _hold(env: Any, holder: ProcessIdentity, run_id: str, mode: LeaseMode) -> None:
    got = leases_for(env.engine).try_acquire(env.account, run_id, mode, "sq", holder=holder.token)
    assert isinstance(got, Lease)


PLACE = """
steps:
  - {kind: place, id: e, instrument: rel, side: BUY, quantity: 5, product: MIS}
"""


async def test_a_place_is_refused_while_another_host_holds_a_square_off_and_names_it(tmp_path):
    env = make_env(tmp_path)
    ProcessRegistry(env.engine).register(PEER, "serve")
    _hold(env, PEER, "20260302-094500-peerrun1", LeaseMode.EXCLUSIVE)
    report = await env.run(playbook(PLACE), busy_wait=3.0)
    assert report.status is RunStatus.REFUSED  # runner run exits 4
    message = report.steps[0].message
    assert "busy after waiting 3s" in message, message
    assert "run 20260302-094500-peerrun1 step sq (pid 77 on elsewhere, exclusive)" in message
    assert await env.broker().orders() == []


async def test_a_dead_holder_on_another_host_is_taken_over(tmp_path):
    env = make_env(tmp_path)
    registry = ProcessRegistry(env.engine)
    registry.register(PEER, "serve")
    _hold(env, PEER, "20260302-094500-peerrun1", LeaseMode.EXCLUSIVE)
    stale = registry.db_now() - dt.timedelta(seconds=STALE_AFTER + 1)
    with env.engine.begin() as conn:
        conn.execute(processes.update().values(heartbeat_at=stale))  # its heartbeat stood still
    report = await env.run(playbook(PLACE), busy_wait=0.0)
    assert env.steps(report) == {"e": "succeeded"}, report.steps[0].message
    assert leases_for(env.engine).holders(env.account) == []  # released after the step


async def test_a_dead_process_on_this_host_is_taken_over_at_once(tmp_path):
    env = make_env(tmp_path)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    _hold(env, ProcessIdentity(host_id(), child.pid, "1"), "20260302-094500-deadrun1", LeaseMode.EXCLUSIVE)
    report = await env.run(playbook(PLACE), busy_wait=0.0)
    assert env.steps(report) == {"e": "succeeded"}, report.steps[0].message


async def test_a_live_process_holding_a_finished_run_does_not_block(tmp_path):
    env = make_env(tmp_path)
    run = "20260302-094500-finished"
    env.journal.start_run(
        run,
        playbook="x",
        account=env.account,
        scheduled_for=at(9, 0),
        mode="run",
        now=at(9, 0),
        owner=ProcessIdentity.current().token,
    )
    _hold(env, ProcessIdentity.current(), run, LeaseMode.EXCLUSIVE)
    report = await env.run(playbook(PLACE), busy_wait=0.0)
    assert report.status is RunStatus.REFUSED  # same process, run still RUNNING: a live holder
    env.journal.finish_run(run, RunStatus.SUCCEEDED, at(9, 1))
    report = await env.run(playbook(PLACE, name="again"), busy_wait=0.0)
    assert report.status is RunStatus.SUCCEEDED, report.steps[0].message


async def test_shared_holders_do_not_block_each_other_but_block_a_square_off(tmp_path):
    env = make_env(tmp_path)
    leases = leases_for(env.engine)
    ProcessRegistry(env.engine).register(PEER, "serve")
    _hold(env, PEER, "20260302-094500-entry001", LeaseMode.SHARED)
    report = await env.run(playbook(PLACE), busy_wait=0.0)
    assert report.status is RunStatus.SUCCEEDED, report.steps[0].message
    got = leases.try_acquire(env.account, "sq-run", LeaseMode.EXCLUSIVE, "sq")
    assert [str(h) for h in got] == ["run 20260302-094500-entry001 step sq (pid 77 on elsewhere, shared)"]  # type: ignore[union-attr]


async def test_a_waiting_run_gets_the_lease_once_the_holder_releases(tmp_path):
    env = make_env(tmp_path)
    leases = leases_for(env.engine)
    ProcessRegistry(env.engine).register(PEER, "serve")
    lease = leases.try_acquire(env.account, "peer-sq", LeaseMode.EXCLUSIVE, "sq", holder=PEER.token)
    assert isinstance(lease, Lease)

    async def holder_finishes() -> None:
        for _ in range(10):
            await asyncio.sleep(0)
        leases.release(lease)

    report, _ = await asyncio.gather(env.run(playbook(PLACE), busy_wait=60.0), holder_finishes())
    assert env.steps(report) == {"e": "succeeded"}, report.steps[0].message


def _grab(leases: AccountLeases, n: int, barrier: threading.Barrier, wins: list[str]) -> None:
    barrier.wait()
    got = leases.try_acquire(
        "acct", f"run{n}", LeaseMode.EXCLUSIVE, "sq", holder=ProcessIdentity.current().token
    )
    if isinstance(got, Lease):
        wins.append(got.run_id)


def _race(url: str) -> None:
    """Eight threads, eight holders, one exclusive lease: exactly one winner, every round."""
    engine = make_engine(url)
    Journal(engine=engine)  # its runs table: a holder whose run is finished is dead
    leases = AccountLeases(engine)
    for round_ in range(5):
        barrier = threading.Barrier(8)
        wins: list[str] = []
        threads = [threading.Thread(target=_grab, args=(leases, n, barrier, wins)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(wins) == 1, (round_, wins)
        with engine.begin() as conn:
            conn.execute(account_leases.delete())
    engine.dispose()


def test_concurrent_acquirers_never_both_win_sqlite(tmp_path):
    _race(f"sqlite:///{tmp_path / 'j.db'}")


def test_concurrent_acquirers_never_both_win_postgresql(pg_db_url):
    _race(pg_db_url)


def test_runner_run_refuses_a_busy_account_with_exit_4_naming_the_holder(tmp_path, capsys, monkeypatch):
    import json

    from runner.cli import main

    monkeypatch.chdir(tmp_path)
    pb = tmp_path / "entry.yaml"
    pb.write_text(
        "version: 1\nname: entry\ntimezone: Asia/Kolkata\n"
        "instruments:\n  rel: {exchange: NSE, symbol: RELIANCE}\n"
        "steps:\n  - {kind: place, id: e, instrument: rel, side: BUY, quantity: 1, product: MIS}\n"
    )
    db = f"sqlite:///{tmp_path / 'j.db'}"
    engine = make_engine(db)
    Journal(engine=engine)
    ProcessRegistry(engine).register(PEER, "serve")
    got = AccountLeases(engine).try_acquire(
        "paper", "20260302-094500-peerrun1", LeaseMode.EXCLUSIVE, "sq", holder=PEER.token
    )
    assert isinstance(got, Lease)
    assert main(["run", str(pb), "--now", "--busy-wait", "0s", "--db", db, "--json"]) == 4
    (step,) = json.loads(capsys.readouterr().out)["steps"]
    assert step["outcome"] == "refused"
    assert "held by run 20260302-094500-peerrun1 step sq (pid 77 on elsewhere, exclusive)" in step["message"]
    engine.dispose()


async def test_the_first_steps_lease_is_taken_while_preparing_not_at_the_instant(tmp_path):
    from runner.engine.core import Engine, RunOptions

    env = make_env(tmp_path, start=at(9, 14, 58))
    pb = playbook("""
steps:
  - {kind: place, id: e, instrument: rel, side: BUY, quantity: 5, product: MIS, at: "09:15"}
  - {kind: place, id: later, instrument: rel, side: BUY, quantity: 5, product: MIS, at: "10:00"}
""")
    engine = Engine(
        pb, env.broker(), env.journal, env.clock, account=env.account, options=RunOptions(at(0, 0))
    )
    await engine.prepare()
    (held,) = leases_for(env.engine).holders(env.account)
    assert (held.run_id, held.step_id, held.mode) == (engine.run_id, "e", LeaseMode.SHARED)
    # Between its steps (the next is due at 10:00) the run holds nothing: a square-off is not blocked.
    seen: list[list[Any]] = []
    env.clock.sleep_until = _spy(
        env.clock.sleep_until, lambda: seen.append(leases_for(env.engine).holders("paper"))
    )  # type: ignore[method-assign]
    report = await engine.execute()
    assert report.status is RunStatus.SUCCEEDED
    assert [] in seen
    assert leases_for(env.engine).holders(env.account) == []


def _spy(inner: Any, before: Any) -> Any:
    async def call(*args: Any) -> None:
        before()
        await inner(*args)

    return call
