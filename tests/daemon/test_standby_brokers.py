"""Issue 16: standby brokers. Every member computes which accounts it would inherit if any one peer left
(account-affine ownership) and opens those brokers ahead (built, logged in, no orders), only those; a
standby no longer inheritable is closed, unless this daemon owns or uses its account now."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

from runner.accounts import Account
from runner.brokers.closing import close_brokers
from runner.clock import VirtualClock
from runner.daemon.account_use import AccountUse
from runner.daemon.executor import BrokerPool
from runner.daemon.membership import Membership, assignment
from runner.daemon.standby import StandbyBrokers
from runner.journal.db import make_engine

PLAYBOOKS = {f"pb{i}": f"acct{i % 24}" for i in range(240)}


class Broker:
    def __init__(self, name: str, pool: Pool) -> None:
        self.name, self.pool = name, pool

    async def connect(self) -> None:
        self.pool.connected.append(self.name)

    async def close(self) -> None:
        self.pool.closed.append(self.name)


class Pool(dict[str, Any]):
    def __init__(self) -> None:
        super().__init__()
        self.connected: list[str] = []
        self.closed: list[str] = []
        self.parsed: list[str] = []

    def preload_masters(self, accounts: list[str]) -> None:
        self.parsed += accounts

    def get_broker(self, account: str) -> Broker:
        if account not in self:
            self[account] = Broker(account, self)
        return self[account]


def _member(me: str, members: list[str]) -> Membership:
    m = Membership(me, partitioned=True)
    m.update(members)
    m.set_playbooks(PLAYBOOKS)
    return m


def _accounts_of(me: str, members: list[str]) -> set[str]:
    return {PLAYBOOKS[p] for p, m in assignment(PLAYBOOKS, members).items() if m == me}


async def _quiet() -> None:
    return None


def test_the_inheritable_accounts_are_those_gained_if_any_one_peer_left() -> None:
    members = ["a", "b", "c", "d"]
    got = _member("a", members).inheritable()
    owned = _accounts_of("a", members)
    expected = set().union(*(_accounts_of("a", [m for m in members if m != gone]) for gone in "bcd")) - owned
    assert got == expected
    assert got and not got & owned and got != set(PLAYBOOKS.values()) - owned  # some, not every account


def test_no_standby_alone_or_unpartitioned() -> None:
    assert _member("a", ["a"]).inheritable() == set()
    single = Membership("a", partitioned=False)
    single.set_playbooks(PLAYBOOKS)
    assert single.inheritable() == set()


async def test_standby_brokers_are_opened_for_the_inheritable_accounts_only() -> None:
    membership = _member("a", ["a", "b", "c", "d"])
    pool = Pool()
    standby = StandbyBrokers(pool, membership, _quiet, lambda account: False, settle=0, pace=0)
    await standby.refresh()
    wanted = membership.inheritable()
    assert set(pool) == wanted == standby.opened
    assert sorted(pool.connected) == sorted(wanted) and sorted(pool.parsed) == sorted(wanted)
    await standby.refresh()  # nothing new: nothing opened twice
    assert sorted(pool.connected) == sorted(wanted)


async def test_a_standby_no_longer_inheritable_is_closed_unless_in_use() -> None:
    membership = _member("a", ["a", "b", "c", "d"])
    pool = Pool()
    in_use: set[str] = set()
    standby = StandbyBrokers(pool, membership, _quiet, in_use.__contains__, settle=0, pace=0)
    await standby.refresh()
    before = set(standby.opened)
    membership.update(["a", "b", "c", "d", "e"])  # e joined: a peer leaving now gives a less
    after, owned = membership.inheritable(), membership.accounts_owned()
    gone = before - after - owned
    assert len(gone) >= 2
    busy = sorted(gone)[0]
    in_use.add(busy)  # a fire of it is being released here: its broker stays
    await standby.refresh()
    assert set(pool.closed) == gone - {busy}
    assert busy in pool and after <= set(pool) and not set(pool.closed) & set(pool)


async def test_a_standby_of_an_account_gained_stays_open() -> None:
    membership = _member("a", ["a", "b", "c", "d"])
    pool = Pool()
    standby = StandbyBrokers(pool, membership, _quiet, lambda account: False, settle=0, pace=0)
    await standby.refresh()
    before = set(standby.opened)
    membership.update(["a", "b", "c"])  # d left: a owns some of its accounts now
    gained = before & membership.accounts_owned()
    assert gained
    await standby.refresh()
    assert pool.closed == [] and gained <= set(pool) and not gained & standby.opened


async def test_a_refresh_superseded_while_it_settles_opens_nothing() -> None:
    membership = _member("a", ["a", "b", "c", "d"])
    pool = Pool()
    standby = StandbyBrokers(pool, membership, _quiet, lambda account: False, settle=0, pace=0)
    first = asyncio.ensure_future(standby.refresh())
    await asyncio.sleep(0)
    membership.update(["a", "b", "c", "d", "e"])  # changed again before the first settled
    await asyncio.gather(first, standby.refresh())
    assert set(pool) == membership.inheritable() and sorted(pool.connected) == sorted(pool)
    assert pool.closed == []  # nothing of the superseded view was opened (and closed again)


async def test_a_rebalance_leaves_the_standby_brokers_open_and_one_closed_meanwhile_is_opened_again(
    tmp_path: Path,
) -> None:
    """The member's closing of brokers of accounts it does not own (runner.daemon.account_use) spares the
    standbys, which close their own; and a standby closed by any hand is opened again by the next
    refresh (before, it stayed listed as opened and was never reopened)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'j.db'}")
    clock = VirtualClock(dt.datetime(2026, 3, 2, 3, 45, tzinfo=dt.UTC))
    names = sorted(set(PLAYBOOKS.values()))
    pool = BrokerPool({a: Account(name=a, broker="paper") for a in names}, None, clock=clock, engine=engine)
    membership = _member("a", ["a", "b", "c"])
    standby = StandbyBrokers(pool, membership, _quiet, lambda account: False, settle=0, pace=0)
    use = AccountUse(pool)
    use.kept = lambda: standby.opened
    await standby.refresh()
    spares = membership.inheritable()
    assert spares and spares <= set(pool)

    assert use.rebalanced(membership.accounts_owned()) == []
    await use.drained()
    assert spares <= set(pool)

    again = sorted(spares)[0]
    await close_brokers([pool.pop(again)])
    await standby.refresh()
    assert again in pool
