"""The halt cancel pass shared out over real `runner serve` members on the real PostgreSQL (issue 16):
each account is cancelled on once per halt, by the member owning it, not by every member; an account
whose owner was killed still gets its pass from a survivor."""

from __future__ import annotations

import datetime as dt
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers.cluster import Cluster, Sim, write_playbooks

from runner.daemon.membership import assignment
from runner.engine.killswitch import ControlStore, Mode, halt_passes

pytestmark = pytest.mark.scaleout

UTC = dt.UTC
ACCOUNTS = 6
NAMES = [f"pb{i:02d}" for i in range(2 * ACCOUNTS)]


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Sim]:
    s = Sim(tmp_path, n_accounts=ACCOUNTS)
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def cluster(tmp_path: Path, pg_db_url: str, sim: Sim) -> Iterator[Cluster]:
    c = Cluster(tmp_path, pg_db_url, sim)
    try:
        yield c
    finally:
        c.stop()


def _serving(cluster: Cluster, sim: Sim) -> tuple[list[str], dict[str, str]]:
    """3 members serving 12 playbooks (2 per account) due in an hour; the members and playbook -> account."""
    cluster.start(3)
    members = sorted(cluster.wait_members(3))
    time.sleep(1.2)  # every member's membership read has seen all three
    later = (dt.datetime.now(UTC) + dt.timedelta(hours=1)).replace(microsecond=0)
    write_playbooks(cluster.pbdir, NAMES, later, sim.names)
    cluster.wait_loaded(3, len(NAMES), timeout=60)
    accounts = {n: sim.names[i % len(sim.names)] for i, n in enumerate(NAMES)}  # as write_playbooks
    return members, accounts


def _halt(cluster: Cluster) -> dt.datetime:
    return ControlStore(cluster.engine).set(Mode.HALT, "test", "tester", dt.datetime.now(UTC)).since or (
        dt.datetime.now(UTC)
    )


def _passes(cluster: Cluster, since: dt.datetime) -> list[sa.Row[tuple[str, str, dt.datetime | None]]]:
    """The passes recorded since the halt (one host: one clock), whichever halt they say they answer."""
    cols = (halt_passes.c.account, halt_passes.c.by, halt_passes.c.halt_since)
    q = sa.select(*cols).where(halt_passes.c.at >= since)
    with cluster.engine.connect() as c:
        return list(c.execute(q).all())


def _by_owner(accounts: dict[str, str], members: list[str]) -> dict[str, str]:
    """account -> the member owning its first playbook (who cancels on it)."""
    owner = assignment(accounts, members)
    first = {}
    for name in sorted(accounts):
        first.setdefault(accounts[name], owner[name])
    return first


def test_each_account_is_cancelled_on_once_by_its_owner(cluster: Cluster, sim: Sim) -> None:
    members, accounts = _serving(cluster, sim)
    since = _halt(cluster)
    cluster.wait(lambda: {r.account for r in _passes(cluster, since)} == set(sim.names), 60, "every account")
    time.sleep(2.0)  # a second member's pass on an account would have landed by now
    rows = _passes(cluster, since)
    counts = Counter(r.account for r in rows)
    assert counts == Counter(sim.names), f"passes per account: {counts}\n{cluster.logs()}"
    assert {r.account: r.by for r in rows} == _by_owner(accounts, members)
    assert all(r.halt_since == since for r in rows)
    assert len({r.by for r in rows}) > 1  # shared out, not one member doing it all
    last = ControlStore(cluster.engine).last_passes()  # `runner status`: one result per account
    assert sorted(p.account for p in last) == sorted(sim.names)


def test_a_killed_owners_accounts_are_still_cancelled_on_by_a_survivor(cluster: Cluster, sim: Sim) -> None:
    members, accounts = _serving(cluster, sim)
    owners = _by_owner(accounts, members)
    victim = Counter(owners.values()).most_common(1)[0][0]
    cluster.signal(cluster.members()[victim], signal.SIGKILL)
    since = _halt(cluster)  # the victim still looks a member for a few seconds
    cluster.wait(lambda: {r.account for r in _passes(cluster, since)} == set(sim.names), 60, "every account")
    rows = _passes(cluster, since)
    theirs = {a for a, m in owners.items() if m == victim}
    assert theirs and all(r.by != victim for r in rows)
    assert {r.account for r in rows if r.account in theirs} == theirs
