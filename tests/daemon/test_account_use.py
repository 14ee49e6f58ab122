"""A member's brokers of accounts it lost in a rebalance are closed (issue 16): not left logged in, with
their connections and warm pool, until shutdown. A fire of a lost account still in flight keeps its
broker open until it finishes; then it is closed too."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

from helpers.sched import RecordingExecutor, make_daemon

from runner.accounts import Account
from runner.clock import VirtualClock
from runner.daemon.membership import assignment
from runner.daemon.scheduler import BrokerPool
from runner.journal.db import make_engine

MEMBERS = ["m-a", "m-b", "m-c"]
PLAYBOOK = """\
version: 1
name: {name}
timezone: Asia/Kolkata
account: {account}
schedule: {{daily: '09:15'}}
steps:
  - {{kind: place, id: bid, instrument: {{exchange: NSE, symbol: RELIANCE}}, side: BUY, quantity: 1}}
"""


async def test_brokers_of_accounts_lost_in_a_rebalance_close_once_no_fire_of_them_is_in_flight(
    tmp_path: Path,
) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'j.db'}")
    due = dt.datetime(2026, 3, 2, 3, 45, tzinfo=dt.UTC)  # 09:15 IST, a Monday
    clock = VirtualClock(due)
    pbdir = tmp_path / "pb"
    pbdir.mkdir()
    names = [f"acct{k}" for k in range(6)]
    loaded = {f"pb{i:02d}": names[i % 6] for i in range(12)}
    for name, account in loaded.items():
        (pbdir / f"{name}.yaml").write_text(PLAYBOOK.format(name=name, account=account))
    pool = BrokerPool({a: Account(name=a, broker="paper") for a in names}, None, clock=clock, engine=engine)
    ex = RecordingExecutor(clock, block=True)
    daemon = make_daemon(pbdir, engine, clock, ex, MEMBERS[0], brokers=pool)
    pool.view = daemon.watcher
    daemon.membership.partitioned = True
    await daemon.prepare()  # alone: it owns every account
    assert daemon.open_brokers() == [] and set(pool) == set(names)
    closed: list[str] = []

    def spy(account: str, broker: Any) -> None:
        async def close() -> None:
            closed.append(account)

        broker.close = close

    for account, broker in pool.items():
        spy(account, broker)
    owner = assignment(loaded, MEMBERS)
    mine = {loaded[n] for n, m in owner.items() if m == MEMBERS[0]}
    lost = sorted(set(names) - mine)
    assert mine and lost
    busy = next(n for n in sorted(loaded) if loaded[n] == lost[0])
    fire = asyncio.ensure_future(daemon.fire(daemon.entries[busy], due))  # in flight across the rebalance
    await ex.started.wait()

    daemon.membership.update(MEMBERS)  # two members joined: most accounts move to them
    daemon._members_changed()
    await daemon.accounts_in_use.drained()
    assert set(pool) == mine | {lost[0]}  # the busy one's broker kept for its fire
    assert sorted(closed) == lost[1:]

    ex.release.set()
    await fire
    await daemon.accounts_in_use.drained()
    assert set(pool) == mine and sorted(closed) == lost
    for task in daemon._tasks:
        task.cancel()
    await asyncio.gather(*daemon._tasks, return_exceptions=True)
